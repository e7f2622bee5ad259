"""Definition validation against generated machines: valid ones load as written, each kind of
breakage is refused with a problem naming the machine and the state."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.definition import from_dict
from projections.errors import DefinitionError
from tests.strategies import Table, definition_docs, machine_runs

SOURCE = "gen.yaml"


def load(doc: dict[str, Any]):
    return from_dict(doc, source=SOURCE, check_actions=False)


@given(definition_docs())
def test_every_generated_definition_loads_as_written(doc):
    defs = load(copy.deepcopy(doc))
    assert sorted(defs) == sorted(m["name"] for m in doc["machines"])
    for m in doc["machines"]:
        table = Table.of(m)
        mdef = defs.machine(m["name"])
        assert mdef.initial.name == table.initial
        assert [s.name for s in mdef.states] == [s["name"] for s in m["states"]]
        assert {s.name for s in mdef.states if s.final} == table.finals
        assert mdef.max_retries == m.get("max_retries")
        assert isinstance(mdef.hash, str) and mdef.hash
        for state, moves in table.moves.items():
            sdef = mdef.state(state)
            assert sdef is not None and sdef.events() == frozenset(moves)
            for event, (target, local) in moves.items():
                t = sdef.transition(event)
                assert (t.target, t.local) == (target, local)
            assert sdef.transition("no such event") is None


@given(definition_docs())
def test_the_hash_ignores_spelling_out_defaults(doc):
    """Writing ``initial: false`` / ``local: false`` or leaving them out is the same machine."""
    bare = copy.deepcopy(doc)
    for m in bare["machines"]:
        for s in m["states"]:
            for flag in ("initial", "final"):
                if s.get(flag) is False:
                    del s[flag]
            for t in s.get("transitions", ()):
                if t.get("local") is False:
                    del t["local"]
    a, b = load(doc), load(bare)
    assert {n: a.machine(n).hash for n in a} == {n: b.machine(n).hash for n in b}


@given(definition_docs(), st.data())
def test_generated_runs_only_use_what_the_loaded_definition_accepts(doc, data):
    defs = load(doc)
    machine = data.draw(st.sampled_from(doc["machines"]))
    run = data.draw(machine_runs(machine, "cid-1"))
    mdef = defs.machine(machine["name"])
    for e in run.events:
        assert mdef.accepts(e.state, e.event if e.kind in ("start", "step", "retry") else None), e.describe()


# ---------------------------------------------------------------- mutations that must be refused


def _states(doc: dict[str, Any], mi: int) -> list[dict[str, Any]]:
    return doc["machines"][mi]["states"]


def _pick(draw: Any, items: list[Any]) -> Any:
    return items[draw(st.integers(0, len(items) - 1))]


def _fresh_name(states: list[dict[str, Any]], base: str) -> str:
    names = {s["name"] for s in states}
    name = base
    while name in names:
        name += "x"
    return name


def remove_initial(draw, doc, mi):
    s = next(s for s in _states(doc, mi) if s.get("initial"))
    if draw(st.booleans()):
        del s["initial"]
    else:
        s["initial"] = False
    return None, "no initial state"


def second_initial(draw, doc, mi):
    s = _pick(draw, [s for s in _states(doc, mi) if not s.get("initial")])
    s["initial"] = True
    return s["name"], "initial states"


def unknown_target(draw, doc, mi):
    states = _states(doc, mi)
    s = _pick(draw, [s for s in states if s.get("transitions")])
    t = _pick(draw, s["transitions"])
    t["target"] = _fresh_name(states, "nowhere")
    return s["name"], "unknown state"


def duplicate_state(draw, doc, mi):
    states = _states(doc, mi)
    twin = copy.deepcopy(_pick(draw, states))
    twin.pop("initial", None)
    states.insert(draw(st.integers(0, len(states))), twin)
    return twin["name"], "defined twice"


def duplicate_event(draw, doc, mi):
    states = _states(doc, mi)
    s = _pick(draw, [s for s in states if s.get("transitions")])
    t = copy.deepcopy(_pick(draw, s["transitions"]))
    t["target"] = _pick(draw, states)["name"]
    s["transitions"].insert(draw(st.integers(0, len(s["transitions"]))), t)
    return s["name"], "more than one transition"


def unreachable_state(draw, doc, mi):
    states = _states(doc, mi)
    lonely: dict[str, Any] = {"name": _fresh_name(states, "island")}
    if draw(st.booleans()):
        lonely["final"] = True
    else:
        lonely["transitions"] = [{"event": "leave", "target": _pick(draw, states)["name"]}]
    states.insert(draw(st.integers(0, len(states))), lonely)
    return lonely["name"], "unreachable"


def no_way_out(draw, doc, mi):
    s = _pick(draw, [s for s in _states(doc, mi) if not s.get("final")])
    if draw(st.booleans()):
        del s["transitions"]
    else:
        s["transitions"] = []
    return s["name"], "no transitions"


MUTATIONS = [remove_initial, second_initial, unknown_target, duplicate_state, duplicate_event,
             unreachable_state, no_way_out]


@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda f: f.__name__)
@given(doc=definition_docs(), data=st.data())
def test_each_breakage_is_refused_naming_machine_and_state(mutate, doc, data):
    broken = copy.deepcopy(doc)
    mi = data.draw(st.integers(0, len(broken["machines"]) - 1))
    machine = broken["machines"][mi]["name"]
    state, what = mutate(data.draw, broken, mi)
    with pytest.raises(DefinitionError) as err:
        load(broken)
    problems = err.value.problems
    assert problems, "a DefinitionError must list its problems"
    naming = [p for p in problems if repr(machine) in p and (state is None or repr(state) in p)]
    assert any(what in p for p in naming), f"no problem about {what!r} naming {machine!r}/{state!r}: {problems}"
    assert all(SOURCE in p for p in problems)
    # the machines left intact are not blamed
    for other in doc["machines"]:
        if other["name"] != machine:
            assert not any(f"machine {other['name']!r}" in p for p in problems), problems
