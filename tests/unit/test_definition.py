"""Machine definitions: loading, imports, validation, content hash (projections.definition)."""

from __future__ import annotations

import re
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from projections.actions import clear_cache
from projections.definition import (
    Definitions,
    MachineDef,
    StateDef,
    Transition,
    definition_hash,
    from_dict,
    load,
    load_text,
)
from projections.errors import DefinitionError, IncompatibleHistory, UnknownMachine

DEFS = Path(__file__).parent / "definitions"
TEST_MODULES = ("shop", "shop.actions", "fsmtest_actions")


@pytest.fixture(autouse=True)
def action_modules(monkeypatch):
    """Action modules of the fixtures importable as ``shop.actions`` etc., fresh for every test."""
    for name in TEST_MODULES:
        sys.modules.pop(name, None)
    clear_cache()
    monkeypatch.syspath_prepend(str(DEFS))
    yield
    clear_cache()
    for name in TEST_MODULES:
        sys.modules.pop(name, None)


def problems_of(text: str, *, source: str = "fsm.yaml", check_actions: bool = False, **kw) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        load_text(textwrap.dedent(text), source=source, check_actions=check_actions, **kw)
    assert str(info.value).startswith(f"{len(info.value.problems)} problem(s)")
    return info.value.problems


def only_problem(text: str, **kw) -> str:
    found = problems_of(text, **kw)
    assert len(found) == 1, found
    return found[0]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


ONE_STATE = """\
machines:
- name: m
  states:
  - {name: s, initial: true, final: true}
"""

# -- the contract's example -------------------------------------------------------------------


def test_contract_example_loads():
    path = DEFS / "contract" / "fsm.yaml"
    defs = load(path)
    assert list(defs) == ["refund", "order"]
    assert "order" in defs and "nope" not in defs
    assert len(defs) == 2
    assert defs.sources == (str(path), str(DEFS / "contract" / "path" / "to" / "other" / "fsm.yaml"))

    order = defs.machine("order")
    assert order.source == str(path)
    assert order.max_retries == 5
    assert order.initial.name == "received"
    assert [s.name for s in order.states] == ["received", "charged", "rejected"]
    received = order.state("received")
    assert received.entry_action == "shop.actions.Log"
    assert received.do_action == "shop.actions.Validate"
    assert received.exit_action == "shop.actions.Log"
    assert received.transition("ok") == Transition("ok", "charged", "shop.actions.Audit", True)
    assert received.transition("reject") == Transition("reject", "rejected", None, False)
    assert received.transition("nope") is None
    assert order.state("charged").final and not order.state("charged").transitions
    assert order.state("missing") is None
    assert order.events() == {"ok", "reject"}
    assert re.fullmatch(r"[0-9a-f]{16}", order.hash)

    refund = defs.machine("refund")
    assert refund.max_retries is None
    assert refund.source.endswith("fsm.yaml") and "other" in refund.source
    assert refund.state("requested").do_action == "shop.actions.refund"


def test_contract_snippet_verbatim_reports_the_state_it_leaves_out():
    snippet = (DEFS / "contract" / "fsm.yaml").read_text()
    snippet = snippet.replace("  - name: rejected\n    final: true\n", "")
    problem = only_problem(snippet, base_dir=DEFS / "contract", check_actions=True)
    assert problem == ("fsm.yaml: machine 'order', state 'received': transition on event 'reject' "
                       "targets unknown state 'rejected'")


def test_definitions_machine_unknown_names_known_ones():
    defs = load(DEFS / "contract" / "fsm.yaml")
    with pytest.raises(UnknownMachine, match=r"unknown machine 'ordr'; known machines: 'order', 'refund'"):
        defs.machine("ordr")


def test_root_file_not_found(tmp_path):
    with pytest.raises(DefinitionError) as info:
        load(tmp_path / "absent.yaml")
    assert info.value.problems == [f"{tmp_path / 'absent.yaml'}: file not found (looked at {tmp_path / 'absent.yaml'})"]


# -- imports ----------------------------------------------------------------------------------


def test_nested_imports_relative_to_the_importing_file_and_read_once():
    defs = load(DEFS / "imports" / "root.yaml")
    assert list(defs) == ["leaf_machine", "deep_machine", "mid_machine", "root_machine"]
    base = DEFS / "imports"
    assert defs.sources == tuple(str(p) for p in (base / "root.yaml", base / "sub" / "mid.yaml",
                                                    base / "leaf.yaml", base / "sub" / "deeper" / "deep.yaml"))
    assert defs.machine("deep_machine").source == str(base / "sub" / "deeper" / "deep.yaml")


def test_imports_work_from_another_working_directory(tmp_path, monkeypatch):
    shutil.copytree(DEFS / "imports", tmp_path / "copy")
    monkeypatch.chdir(DEFS)
    defs = load(tmp_path / "copy" / "root.yaml")
    assert "deep_machine" in defs


def test_import_cycle_shows_the_chain():
    with pytest.raises(DefinitionError) as info:
        load(DEFS / "cycle" / "a.yaml")
    c = DEFS / "cycle"
    assert info.value.problems == [
        f"{c / 'c.yaml'}: machines[0]: import cycle: {c / 'a.yaml'} -> {c / 'b.yaml'} -> {c / 'c.yaml'} -> {c / 'a.yaml'}"
    ]


def test_self_import_is_a_cycle(tmp_path):
    write(tmp_path / "fsm.yaml", "machines:\n- import: ./fsm.yaml\n" + ONE_STATE.split("\n", 1)[1])
    with pytest.raises(DefinitionError, match=r"machines\[0\]: import cycle: .*fsm.yaml -> .*fsm.yaml"):
        load(tmp_path / "fsm.yaml")


def test_missing_import_names_importing_file_and_path(tmp_path):
    root = write(tmp_path / "fsm.yaml", "machines:\n- import: nothere/x.yaml\n")
    with pytest.raises(DefinitionError) as info:
        load(root)
    [problem] = info.value.problems
    assert problem.startswith(f"{root}: machines[0]: import 'nothere/x.yaml': file ")
    assert f"not found (looked at {tmp_path.resolve() / 'nothere' / 'x.yaml'})" in problem


def test_import_item_shape(tmp_path):
    found = problems_of("""\
        machines:
        - import: 5
        - {import: other.yaml, name: x}
        """, base_dir=tmp_path)
    assert found[0] == "fsm.yaml: machines[0]: 'import' must be a file path, got an integer (5)"
    assert found[1] == "fsm.yaml: machines[1]: an import item takes only 'import', found also 'name'"
    assert "fsm.yaml: machines[1]: import 'other.yaml': file" in found[2]


def test_machine_defined_twice_across_imports(tmp_path):
    write(tmp_path / "lib" / "other.yaml", ONE_STATE)
    root = write(tmp_path / "fsm.yaml", "machines:\n- import: lib/other.yaml\n" + ONE_STATE.split("\n", 1)[1])
    with pytest.raises(DefinitionError) as info:
        load(root)
    assert info.value.problems == [
        f"{root}: machine 'm': defined more than once (also at {tmp_path / 'lib' / 'other.yaml'}, machines[0])"
    ]


def test_machine_defined_twice_in_one_file():
    problem = only_problem(ONE_STATE + ONE_STATE.split("\n", 1)[1])
    assert problem == "fsm.yaml: machine 'm': defined more than once (also at fsm.yaml, machines[0])"


def test_load_text_imports_relative_to_base_dir_or_source():
    text = "machines:\n- import: path/to/other/fsm.yaml\n"
    defs = load_text(text, base_dir=DEFS / "contract")
    assert list(defs) == ["refund"]
    defs = load_text(text, source=str(DEFS / "contract" / "fsm.yaml"))
    assert list(defs) == ["refund"]
    assert defs.machine("refund").source == str(DEFS / "contract" / "path" / "to" / "other" / "fsm.yaml")


def test_from_dict():
    doc = {"machines": [{"name": "m", "max_retries": 0, "states": [
        {"name": "a", "initial": True, "do_action": "shop.actions.Validate",
         "transitions": [{"event": "ok", "target": "b"}]},
        {"name": "b", "final": True}]}]}
    defs = from_dict(doc)
    assert isinstance(defs, Definitions)
    m = defs.machine("m")
    assert m.source == "<dict>" and m.max_retries == 0
    assert m.state("a").transition("ok").target == "b"
    with pytest.raises(DefinitionError, match=r"<dict>: machine 'm', state 'a': transition on event 'ok' targets unknown state 'c'"):
        from_dict({"machines": [{"name": "m", "states": [
            {"name": "a", "initial": True, "transitions": [{"event": "ok", "target": "c"}]}]}]})


# -- YAML -------------------------------------------------------------------------------------


def test_broken_yaml_reports_line_and_column():
    problem = only_problem("""\
        machines:
        - name: m
          states: [
        """)
    assert re.fullmatch(r"fsm\.yaml: line \d+, column \d+: invalid YAML: .+", problem), problem


def test_broken_indentation_reports_its_line():
    problem = only_problem("machines:\n- name: m\n   states: []\n")
    assert problem.startswith("fsm.yaml: line 3, column 10: invalid YAML: mapping values are not allowed here")


def test_python_tags_are_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    problem = only_problem(f"""\
        machines:
        - name: !!python/object/apply:os.system ["touch {marker}"]
        """)
    assert not marker.exists()
    assert problem.startswith("fsm.yaml: line 2, column 9: could not determine a constructor for the tag")
    assert "python/object/apply:os.system" in problem
    assert "only plain YAML is allowed" in problem and "safe_load" in problem


def test_unhashable_key_is_invalid_yaml():
    problem = only_problem("machines:\n- name: m\n  ? [a, b]\n  : 1\n")
    assert problem.startswith("fsm.yaml: line ")
    assert "invalid YAML: found unhashable key" in problem


def test_repeated_keys_are_reported():
    problem = only_problem("""\
        machines:
        - name: m
          states:
          - name: s
            initial: true
            final: false
            final: true
        """)
    assert problem == ("fsm.yaml: line 7, column 5: key 'final' repeated in one mapping "
                       "(YAML would silently keep the last)")


# -- shape and types --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("", "fsm.yaml: empty; expected a mapping with a 'machines:' list"),
    ("- name: m\n", "fsm.yaml: the top level must be a mapping with a 'machines:' list, got a list"),
    ("states: []\n", "fsm.yaml: unknown key 'states' (allowed: machines)"),
    ("machines: {name: m}\n", "fsm.yaml: 'machines' must be a list, got a mapping"),
    ("machines:\n- just a string\n",
     "fsm.yaml: machines[0]: expected a machine or an import (a mapping), got a string ('just a string')"),
])
def test_top_level_shape(text, expected):
    assert problems_of(text)[0] == expected


def test_missing_machines_key():
    assert problems_of("machine: []\n") == [
        "fsm.yaml: unknown key 'machine' (did you mean 'machines'?)",
        "fsm.yaml: no 'machines:' list",
    ]


def test_unknown_keys_suggest_close_matches():
    found = problems_of("""\
        machines:
        - name: m
          max_retry: 3
          states:
          - name: a
            intial: true
            initial: true
            do_acton: x.y
            transitions:
            - event: go
              traget: b
              target: b
          - name: b
            final: true
            colour: red
        - imprt: other.yaml
        """)
    assert found == [
        "fsm.yaml: machine 'm': unknown key 'max_retry' (did you mean 'max_retries'?)",
        "fsm.yaml: machine 'm', state 'a': unknown key 'intial' (did you mean 'initial'?)",
        "fsm.yaml: machine 'm', state 'a': unknown key 'do_acton' (did you mean 'do_action'?)",
        "fsm.yaml: machine 'm', state 'a', transition on event 'go': unknown key 'traget' (did you mean 'target'?)",
        "fsm.yaml: machine 'm', state 'b': unknown key 'colour' "
        "(allowed: name, initial, final, entry_action, do_action, exit_action, transitions, wait, timeout, on_timeout)",
        "fsm.yaml: machines[1]: missing 'name'",
        "fsm.yaml: machines[1]: unknown key 'imprt' (did you mean 'import'?)",
        "fsm.yaml: machines[1]: no 'states' list",
    ]


def test_wrong_value_types():
    found = problems_of("""\
        machines:
        - name: m
          states:
          - name: a
            initial: "yes"
            final: 1
            entry_action: 3
            transitions:
            - event: yes
              target: b
              local: sometimes
            - {event: go, target: [b]}
            - just-a-string
          - name: 7
          - [not, a, state]
          - name: b
            transitions: {event: x, target: a}
        - name: n
          states: {name: a}
        """)
    assert found == [
        "fsm.yaml: machine 'm', state 'a': 'initial' must be true or false, got a string ('yes')",
        "fsm.yaml: machine 'm', state 'a': 'final' must be true or false, got an integer (1)",
        "fsm.yaml: machine 'm', state 'a': 'entry_action' must be a non-empty string, got an integer (3) "
        "(YAML reads yes/no/on/off/true/false and numbers as non-strings: quote it)",
        "fsm.yaml: machine 'm', state 'a', transitions[0]: 'event' must be a non-empty string, got a boolean (True) "
        "(YAML reads yes/no/on/off/true/false and numbers as non-strings: quote it)",
        "fsm.yaml: machine 'm', state 'a', transitions[0]: 'local' must be true or false, got a string ('sometimes')",
        "fsm.yaml: machine 'm', state 'a', transition on event 'go': 'target' must be a non-empty string, got a list",
        "fsm.yaml: machine 'm', state 'a', transitions[2]: expected a transition (a mapping), "
        "got a string ('just-a-string')",
        "fsm.yaml: machine 'm', states[1]: 'name' must be a non-empty string, got an integer (7) "
        "(YAML reads yes/no/on/off/true/false and numbers as non-strings: quote it)",
        "fsm.yaml: machine 'm', states[2]: expected a state (a mapping), got a list",
        "fsm.yaml: machine 'm', state 'b': 'transitions' must be a list, got a mapping",
        "fsm.yaml: machine 'n': 'states' must be a list, got a mapping",
    ]


def test_empty_states():
    problem = only_problem("machines:\n- name: m\n  states: []\n")
    assert problem == "fsm.yaml: machine 'm': 'states' is empty; a machine needs at least an initial state"


@pytest.mark.parametrize(("value", "shown"), [
    ("-1", "an integer (-1)"), ("'3'", "a string ('3')"), ("true", "a boolean (True)"), ("1.5", "a number (1.5)"),
])
def test_max_retries_must_be_a_non_negative_int(value, shown):
    problem = only_problem(ONE_STATE.replace("- name: m\n", f"- name: m\n  max_retries: {value}\n"))
    assert problem == f"fsm.yaml: machine 'm': max_retries must be a non-negative integer, got {shown}"


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("12", 12), ("null", None)])
def test_max_retries_valid(value, expected):
    defs = load_text(ONE_STATE.replace("- name: m\n", f"- name: m\n  max_retries: {value}\n"))
    assert defs.machine("m").max_retries == expected


# -- machine graph ----------------------------------------------------------------------------


def test_no_initial_state():
    problem = only_problem("""\
        machines:
        - name: m
          states:
          - {name: a, final: true}
        """)
    assert problem == "fsm.yaml: machine 'm': no initial state; mark exactly one state 'initial: true'"


def test_several_initial_states():
    problem = only_problem("""\
        machines:
        - name: m
          states:
          - {name: a, initial: true, transitions: [{event: go, target: b}]}
          - {name: b, initial: true, final: true}
        """)
    assert problem == "fsm.yaml: machine 'm': 2 initial states ('a', 'b'); exactly one is allowed"


def test_unknown_target_suggests_close_state():
    problem = only_problem("""\
        machines:
        - name: order
          states:
          - name: charged
            initial: true
            transitions:
            - {event: ok, target: shiped}
          - {name: shipped, final: true}
        """)
    assert problem == ("fsm.yaml: machine 'order', state 'charged': transition on event 'ok' "
                       "targets unknown state 'shiped' (did you mean 'shipped'?)")


def test_duplicate_state_names():
    problem = only_problem("""\
        machines:
        - name: m
          states:
          - {name: a, initial: true, transitions: [{event: go, target: b}]}
          - {name: b, final: true}
          - {name: a, final: true}
        """)
    assert problem == "fsm.yaml: machine 'm': state 'a' defined twice (states[0] and states[2])"


def test_duplicate_events_on_one_state():
    problem = only_problem("""\
        machines:
        - name: m
          states:
          - name: a
            initial: true
            transitions:
            - {event: go, target: b}
            - {event: go, target: c}
          - {name: b, final: true, transitions: []}
          - {name: c, final: true}
        """)
    assert problem == ("fsm.yaml: machine 'm', state 'a': event 'go' has more than one transition "
                       "(to 'b' and to 'c'); events must be unique per state")


def test_unreachable_states():
    found = problems_of("""\
        machines:
        - name: m
          states:
          - {name: a, initial: true, transitions: [{event: go, target: b}]}
          - {name: b, final: true}
          - {name: island, transitions: [{event: back, target: a}]}
          - {name: c, transitions: [{event: loop, target: c}]}
        """)
    assert found == [
        "fsm.yaml: machine 'm', state 'island': unreachable from the initial state 'a'",
        "fsm.yaml: machine 'm', state 'c': unreachable from the initial state 'a'",
    ]


def test_non_final_state_without_transitions_has_no_way_out():
    problem = only_problem("""\
        machines:
        - name: m
          states:
          - {name: a, initial: true, transitions: [{event: go, target: stuck}]}
          - {name: stuck, do_action: shop.actions.Log}
        """)
    assert problem == ("fsm.yaml: machine 'm', state 'stuck': not final and has no transitions, "
                       "so no way out: add transitions or mark it 'final: true'")


def test_final_state_with_transitions_is_reported():
    problem = only_problem("""\
        machines:
        - name: m
          states:
          - {name: a, initial: true, transitions: [{event: go, target: b}]}
          - {name: b, final: true, transitions: [{event: again, target: a}]}
        """)
    assert problem == ("fsm.yaml: machine 'm', state 'b': final state has transitions (on 'again'); a final state "
                       "ends the machine, so they could never fire: remove them or drop 'final: true'")


def test_single_state_both_initial_and_final_is_valid():
    m = load_text(ONE_STATE).machine("m")
    assert m.initial is m.state("s") and m.initial.final


def test_cycles_between_states_are_fine():
    m = load_text("""\
        machines:
        - name: m
          states:
          - {name: a, initial: true, transitions: [{event: go, target: b}]}
          - {name: b, transitions: [{event: back, target: a}, {event: stop, target: end}, {event: same, target: b}]}
          - {name: end, final: true}
        """.replace("        ", "")).machine("m")
    assert m.state("b").transition("same").target == "b"


# -- actions ----------------------------------------------------------------------------------


BAD_ACTIONS = """\
    machines:
    - name: m
      states:
      - name: a
        initial: true
        entry_action: shop.actions.Log
        do_action: shop.actions.Nope
        exit_action: fsmtest_nowhere.Thing
        transitions:
        - {event: go, target: b, action: fsmtest_actions.NotAnAction}
      - name: b
        final: true
        entry_action: shop.actions.Nope
    """


def test_actions_that_do_not_import_are_reported():
    found = problems_of(BAD_ACTIONS, check_actions=True)
    assert found == [
        "fsm.yaml: machine 'm', state 'a': do_action 'shop.actions.Nope' does not import: "
        "module 'shop.actions' has no attribute 'Nope'",
        "fsm.yaml: machine 'm', state 'a': exit_action 'fsmtest_nowhere.Thing' does not import: "
        "module 'fsmtest_nowhere' not found (no module named 'fsmtest_nowhere'); is its directory on sys.path / PYTHONPATH?",
        "fsm.yaml: machine 'm', state 'a', transition on event 'go': action 'fsmtest_actions.NotAnAction' does not "
        "import: class NotAnAction does not subclass fsmlog.Action; subclass Action and implement "
        "execute(self, context, obj), or name a function (context, obj)",
        "fsm.yaml: machine 'm', state 'b': entry_action 'shop.actions.Nope' does not import: "
        "module 'shop.actions' has no attribute 'Nope'",
    ]


def test_actions_are_not_imported_when_check_actions_is_false():
    defs = load_text(textwrap.dedent(BAD_ACTIONS), check_actions=False)
    assert defs.machine("m").state("a").do_action == "shop.actions.Nope"
    assert "shop.actions" not in sys.modules and "fsmtest_actions" not in sys.modules


def test_action_path_syntax_is_checked_even_without_import():
    problem = only_problem(ONE_STATE.replace("final: true}", "final: true, do_action: 'shop actions'}"))
    assert problem == ("fsm.yaml: machine 'm', state 's': do_action 'shop actions' is not a dotted path "
                       "like 'package.module.Name'")


# -- many problems at once --------------------------------------------------------------------


def test_every_problem_is_reported_at_once(tmp_path):
    write(tmp_path / "other.yaml", """\
        machines:
        - name: billing
          max_retries: -2
          states:
          - {name: start, initial: true, transitions: [{event: go, target: nowhere}]}
        """)
    root = write(tmp_path / "fsm.yaml", """\
        machines:
        - import: other.yaml
        - name: order
          states:
          - {name: a, transitions: [{event: go, target: b}]}
          - {name: b, final: true, do_action: shop.actions.Missing}
        - name: billing
          states:
          - {name: x, initial: true, final: true}
        """)
    with pytest.raises(DefinitionError) as info:
        load(root)
    other = tmp_path / "other.yaml"
    assert info.value.problems == [
        f"{other}: machine 'billing': max_retries must be a non-negative integer, got an integer (-2)",
        f"{other}: machine 'billing', state 'start': transition on event 'go' targets unknown state 'nowhere'",
        f"{root}: machine 'order', state 'b': do_action 'shop.actions.Missing' does not import: "
        "module 'shop.actions' has no attribute 'Missing'",
        f"{root}: machine 'order': no initial state; mark exactly one state 'initial: true'",
        f"{root}: machine 'billing': defined more than once (also at {other}, machines[0])",
    ]
    message = str(info.value)
    assert message.startswith("5 problem(s) in machine definitions:")
    assert all(p in message for p in info.value.problems)


# -- content hash -----------------------------------------------------------------------------


ORDER = """\
machines:
- name: order
  max_retries: 5
  states:
  - name: received
    initial: true
    do_action: shop.actions.Validate
    transitions:
    - {event: ok, target: charged, action: shop.actions.Audit, local: true}
    - {event: reject, target: rejected}
  - {name: charged, final: true}
  - {name: rejected, final: true}
"""

ORDER_REFORMATTED = """\
# the same machine, written differently
machines:
  - states:
      - transitions:
          - target: "charged"      # quoted, keys reordered
            local: yes
            event: 'ok'
            action: shop.actions.Audit
          - event: reject
            target: rejected
            local: false           # explicit default
            action: null           # explicit default
        do_action: shop.actions.Validate
        initial: true
        final: false
        name: received
        entry_action: ~
      - name: charged
        final: true
        transitions: []
      - {final: true, name: rejected, initial: false}
    max_retries: 5
    name: order
"""


def _hash(text: str, **kw) -> str:
    return load_text(text, check_actions=False, **kw).machine("order").hash


def test_hash_is_stable_across_formatting_key_order_comments_and_location(tmp_path):
    h = _hash(ORDER)
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert _hash(ORDER_REFORMATTED) == h
    write(tmp_path / "deep" / "dir" / "fsm.yaml", ORDER)
    assert load(tmp_path / "deep" / "dir" / "fsm.yaml", check_actions=False).machine("order").hash == h
    assert _hash(ORDER, source="elsewhere.yaml") == h


@pytest.mark.parametrize(("old", "new"), [
    ("target: charged, action: shop.actions.Audit, local: true}\n    - {event: reject, target: rejected}",
     "target: rejected, action: shop.actions.Audit, local: true}\n    - {event: reject, target: charged}"),
    ("max_retries: 5", "max_retries: 6"),
    ("  max_retries: 5\n", ""),
    ("local: true", "local: false"),
    ("action: shop.actions.Audit, ", ""),
    ("do_action: shop.actions.Validate", "do_action: shop.actions.Other"),
    ("{event: reject, target: rejected}", "{event: refuse, target: rejected}"),
    ("{name: charged, final: true}", "{name: charged, final: true, entry_action: shop.actions.Log}"),
    ("- name: order", "- name: order2"),
])
def test_hash_changes_with_any_semantic_change(old, new):
    assert old in ORDER
    changed = ORDER.replace(old, new)
    name = "order2" if "order2" in new else "order"
    assert load_text(changed, check_actions=False).machine(name).hash != _hash(ORDER)


def test_hash_of_a_directly_built_machine_matches_the_loaded_one():
    loaded = load_text(ORDER, check_actions=False).machine("order")
    built = MachineDef("order", 5, (
        StateDef("received", initial=True, do_action="shop.actions.Validate", transitions=(
            Transition("ok", "charged", "shop.actions.Audit", True), Transition("reject", "rejected"))),
        StateDef("charged", final=True),
        StateDef("rejected", final=True),
    ))
    assert built.hash == loaded.hash
    assert built == MachineDef(**{**{f: getattr(loaded, f) for f in ("name", "max_retries", "states", "hash")},
                                  "source": "<dict>"})
    assert definition_hash(loaded.canonical()) == loaded.hash
    assert loaded.canonical()["states"][0]["transitions"][1] == {
        "event": "reject", "target": "rejected", "action": None, "local": False}


# -- records written under another definition ------------------------------------------------


def test_accepts():
    m = load_text(ORDER, check_actions=False).machine("order")
    assert m.accepts("received", None)
    assert m.accepts("received", "ok")
    assert m.accepts("charged", None)
    assert not m.accepts("received", "refund")
    assert not m.accepts("shipped", None)
    assert not m.accepts("charged", "ok")


def test_check_record_passes_compatible_records_under_an_older_hash():
    m = load_text(ORDER, check_actions=False).machine("order")
    m.check_record("received", "reject", "0123456789abcdef")
    m.check_record("received", None, m.hash)


def test_check_record_refuses_an_unknown_event():
    m = load_text(ORDER, check_actions=False).machine("order")
    with pytest.raises(IncompatibleHistory) as info:
        m.check_record("received", "refund", "0123456789abcdef")
    assert str(info.value) == (
        "machine 'order': record written under definition 0123456789abcdef is in state 'received' firing "
        f"event 'refund', but in the loaded definition {m.hash} (<string>) state 'received' has no "
        "transition on event 'refund'"
    )


def test_check_record_refuses_a_removed_state():
    m = load_text(ORDER, check_actions=False).machine("order")
    with pytest.raises(IncompatibleHistory, match=r"machine 'order': .* 00000000000000ff is in state 'packed' "
                       r"firing event None, .* state 'packed' no longer exists"):
        m.check_record("packed", None, "00000000000000ff")
