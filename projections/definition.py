"""Machine definitions: fsm.yaml in, frozen lookup tables out.

The format is docs/CONTRACT.md §1: a top-level ``machines:`` list whose items are machines or
``{import: path}`` (the machines of another file, the path relative to the importing file).
YAML is read with ``yaml.safe_load`` only: tags such as ``!!python/object`` are refused.

Loading validates everything and collects every problem before raising one
``DefinitionError(problems)``; each problem names the file, machine and state. Rules:

- exactly one initial state per machine; state names unique; events unique per state;
- every transition targets a state of the same machine;
- every state is reachable from the initial state;
- a non-final state has at least one transition (a way out);
- a final state has no transitions: reaching it ends the machine, so they could never fire;
- ``max_retries`` is absent, null or a non-negative integer;
- a ``wait: true`` state has no do action and is not final; ``timeout`` and ``on_timeout`` go
  together, on wait states only, and ``on_timeout`` names a transition of the state; a
  ``wait: children`` state has a transition on ``children_done``;
- ``delay`` (transitions) and ``timeout`` are durations (``projections.durations``); a delayed
  transition is not ``local``;
- every action path imports (``projections.actions.resolve``) unless ``check_actions=False``;
- a machine name is defined once across the root file and everything it imports. A file
  imported twice (diamond imports) is read once; an import cycle is reported with its chain.

Each machine gets a content hash (``MachineDef.hash``): the first 16 hex digits of the sha256 of
a canonical JSON of its semantic content (name, max_retries, states in order with every field,
their transitions in order; defaults made explicit; the wait keys only where set, so a machine
without them keeps the hash it had before they existed). YAML formatting, comments, key order,
quoting and the file's location do not change it; anything the engine would act on does.
Records carry the hash, so the engine can tell an in-flight machine written under another
definition (``MachineDef.check_record``).

Definitions are loaded once per process; ``Definitions.machine``, ``MachineDef.state`` and
``StateDef.transition`` are dict lookups.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from .actions import ActionImportError, is_dotted_path, resolve
from .durations import parse_duration
from .errors import DefinitionError, IncompatibleHistory, UnknownMachine

HASH_VERSION = 1

TOP_KEYS = ("machines",)
IMPORT_KEYS = ("import",)
MACHINE_KEYS = ("name", "max_retries", "states")
STATE_KEYS = ("name", "initial", "final", "entry_action", "do_action", "exit_action", "transitions", "wait",
              "timeout", "on_timeout")
TRANSITION_KEYS = ("event", "target", "action", "local", "delay")
STATE_ACTION_KEYS = ("entry_action", "do_action", "exit_action")
CHILDREN_DONE = "children_done"  # the event a ``wait: children`` state receives


@dataclass(frozen=True, slots=True)
class Transition:
    """On ``event``, go to ``target`` running ``action`` between the exit and entry actions.
    ``local``: run the next step in the same invocation, without a log round trip."""

    event: str
    target: str
    action: str | None = None
    local: bool = False
    delay: float | None = None  # seconds the step it fires waits (a durable timer) before it runs


@dataclass(frozen=True, slots=True)
class StateDef:
    """One state with its actions and outgoing transitions (looked up by event in O(1))."""

    name: str
    initial: bool = False
    final: bool = False
    entry_action: str | None = None
    do_action: str | None = None
    exit_action: str | None = None
    transitions: tuple[Transition, ...] = ()
    wait: bool = False  # runs no do action: waits for an event sent from outside
    timeout: float | None = None  # seconds a wait state waits before firing ``on_timeout``
    on_timeout: str | None = None
    children: bool = False  # ``wait: children``: waits for the machines it started, then ``children_done``
    _by_event: Mapping[str, Transition] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        transitions = tuple(self.transitions)
        by_event: dict[str, Transition] = {}
        for t in transitions:
            by_event.setdefault(t.event, t)
        object.__setattr__(self, "transitions", transitions)
        object.__setattr__(self, "_by_event", by_event)

    def transition(self, event: str) -> Transition | None:
        """The transition fired by ``event`` from this state, or None."""
        return self._by_event.get(event)

    def events(self) -> frozenset[str]:
        return frozenset(self._by_event)


@dataclass(frozen=True, slots=True)
class MachineDef:
    """A validated machine. ``hash`` is computed from the content when left empty; ``source`` is
    the file it was defined in."""

    name: str
    max_retries: int | None
    states: tuple[StateDef, ...]
    hash: str = ""
    source: str = "<dict>"
    _by_name: Mapping[str, StateDef] = field(init=False, repr=False, compare=False, hash=False)
    _initial: StateDef | None = field(init=False, repr=False, compare=False, hash=False)
    _events: frozenset[str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        states = tuple(self.states)
        by_name: dict[str, StateDef] = {}
        for s in states:
            by_name.setdefault(s.name, s)
        object.__setattr__(self, "states", states)
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_initial", next((s for s in states if s.initial), None))
        object.__setattr__(self, "_events", frozenset(t.event for s in states for t in s.transitions))
        if not self.hash:
            object.__setattr__(self, "hash", definition_hash(self.canonical()))

    @property
    def initial(self) -> StateDef:
        if self._initial is None:
            raise DefinitionError([f"{self.source}: machine {self.name!r}: no initial state"])
        return self._initial

    def state(self, name: str) -> StateDef | None:
        return self._by_name.get(name)

    def events(self) -> set[str]:
        """Every event some transition of this machine fires on."""
        return set(self._events)

    def accepts(self, state: str, event: str | None) -> bool:
        """True if a record in ``state`` firing ``event`` (None: start / terminal) can run here."""
        s = self._by_name.get(state)
        return s is not None and (event is None or event in s._by_event)

    def check_record(self, state: str, event: str | None, record_hash: str) -> None:
        """Refuse a record this definition cannot continue.

        A record written under another hash whose state (and event) still exist is accepted:
        the engine continues it and records the upgrade. Otherwise raises ``IncompatibleHistory``.
        """
        if self.accepts(state, event):
            return
        if state not in self._by_name:
            why = f"state {state!r} no longer exists"
        else:
            why = f"state {state!r} has no transition on event {event!r}"
        raise IncompatibleHistory(
            f"machine {self.name!r}: record written under definition {record_hash} is in state "
            f"{state!r} firing event {event!r}, but in the loaded definition {self.hash} "
            f"({self.source}) {why}"
        )

    def canonical(self) -> dict[str, Any]:
        """The semantic content the hash is computed over (defaults explicit, order kept)."""
        return {
            "v": HASH_VERSION,
            "name": self.name,
            "max_retries": self.max_retries,
            "states": [
                {
                    "name": s.name,
                    "initial": s.initial,
                    "final": s.final,
                    "entry_action": s.entry_action,
                    "do_action": s.do_action,
                    "exit_action": s.exit_action,
                    "transitions": [
                        {"event": t.event, "target": t.target, "action": t.action, "local": t.local,
                         **({"delay": t.delay} if t.delay is not None else {})}
                        for t in s.transitions
                    ],
                    **_waits(s),
                }
                for s in self.states
            ],
        }


def _waits(s: StateDef) -> dict[str, Any]:
    """A state's wait keys for the hash, only where set: machines without them keep their hash."""
    out: dict[str, Any] = {}
    if s.wait:
        out["wait"] = "children" if s.children else True
    if s.timeout is not None:
        out["timeout"] = s.timeout
    if s.on_timeout is not None:
        out["on_timeout"] = s.on_timeout
    return out


def definition_hash(canonical: Mapping[str, Any]) -> str:
    """First 16 hex digits of the sha256 of ``canonical`` as sorted, compact JSON."""
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Definitions:
    """Every loaded machine by name, and the files they came from (root first)."""

    machines: Mapping[str, MachineDef]
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "machines", MappingProxyType(dict(self.machines)))
        object.__setattr__(self, "sources", tuple(self.sources))

    def machine(self, name: str) -> MachineDef:
        try:
            return self.machines[name]
        except (KeyError, TypeError):
            known = ", ".join(repr(n) for n in sorted(self.machines)) or "(none)"
            raise UnknownMachine(f"unknown machine {name!r}; known machines: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.machines

    def __iter__(self) -> Iterator[str]:
        """Machine names, in load order (like a mapping)."""
        return iter(self.machines)

    def __len__(self) -> int:
        return len(self.machines)


def load(path: str | os.PathLike[str], *, check_actions: bool = True) -> Definitions:
    """Load an fsm.yaml and everything it imports. Raises ``DefinitionError``."""
    loader = _Loader(check_actions)
    display = os.fspath(path)
    loader.load_file(Path(display), display, None, None)
    return loader.finish()


def load_text(
    text: str,
    source: str = "<string>",
    base_dir: str | os.PathLike[str] | None = None,
    check_actions: bool = True,
) -> Definitions:
    """Load definitions from YAML text. Imports are relative to ``base_dir``; by default the
    directory of ``source`` when it is a file name, else the current directory."""
    loader = _Loader(check_actions)
    base, display_dir, identity = _text_origin(source, base_dir)
    if identity is not None:
        loader.stack.append((identity, source))
        loader.loaded.add(identity)
    loader.load_text(text, source, base, display_dir)
    return loader.finish()


def from_dict(
    doc: Any,
    source: str = "<dict>",
    base_dir: str | os.PathLike[str] | None = None,
    check_actions: bool = True,
) -> Definitions:
    """Load definitions from an already parsed document (same shape as fsm.yaml)."""
    loader = _Loader(check_actions)
    base, display_dir, identity = _text_origin(source, base_dir)
    if identity is not None:
        loader.stack.append((identity, source))
        loader.loaded.add(identity)
    loader.sources.append(source)
    loader.load_doc(doc, source, base, display_dir)
    return loader.finish()


def _text_origin(source: str, base_dir: str | os.PathLike[str] | None) -> tuple[Path, str, Path | None]:
    """(directory imports resolve against, how to display it, the file's identity for cycles)."""
    is_file = not source.startswith("<")
    identity = Path(source).resolve() if is_file else None
    if base_dir is not None:
        return Path(base_dir), os.fspath(base_dir), identity
    if is_file:
        return Path(source).parent, os.path.dirname(source), identity
    return Path.cwd(), "", None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value!r})"
    if isinstance(value, int):
        return f"an integer ({value!r})"
    if isinstance(value, float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__} ({value!r})"


class _Loader:
    """One load: walks the root file and its imports, collecting machines and problems."""

    def __init__(self, check_actions: bool):
        self.check_actions = check_actions
        self.problems: list[str] = []
        self.machines: dict[str, MachineDef] = {}
        self.defined_at: dict[str, str] = {}  # machine name -> "file, machines[i]"
        self.sources: list[str] = []
        self.loaded: set[Path] = set()
        self.stack: list[tuple[Path, str]] = []  # files being loaded: (identity, display)
        self.action_errors: dict[str, str | None] = {}
        self.broken = False  # a structural problem since the last reset (see load_machine)

    def report(self, problem: str) -> None:
        """Record a structural problem: one that may hide states or transitions."""
        self.problems.append(problem)
        self.broken = True

    def finish(self) -> Definitions:
        if self.problems:
            raise DefinitionError(self.problems)
        return Definitions(self.machines, tuple(self.sources))

    # -- files -------------------------------------------------------------------------------

    def load_file(self, path: Path, display: str, where: str | None, imported_as: str | None) -> None:
        identity = path.resolve()
        prefix = where or display
        for i, (ident, _) in enumerate(self.stack):
            if ident == identity:
                chain = [d for _, d in self.stack[i:]] + [display]
                self.problems.append(f"{prefix}: import cycle: {' -> '.join(chain)}")
                return
        if identity in self.loaded:
            return  # already merged through another import
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            what = f"import {imported_as!r}: file {display!r}" if imported_as is not None else "file"
            self.problems.append(f"{prefix}: {what} not found (looked at {identity})")
            return
        except UnicodeDecodeError as exc:
            self.problems.append(f"{display}: not UTF-8 text: {exc}")
            return
        except OSError as exc:
            self.problems.append(f"{prefix}: cannot read {display!r}: {exc.strerror or exc}")
            return
        self.loaded.add(identity)
        self.stack.append((identity, display))
        try:
            self.load_text(text, display, path.parent, os.path.dirname(display))
        finally:
            self.stack.pop()

    def load_text(self, text: str, source: str, base: Path, display_dir: str) -> None:
        self.sources.append(source)
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            self.problems.append(_yaml_problem(source, exc))
            return
        self.problems.extend(_duplicate_keys(text, source))
        self.load_doc(doc, source, base, display_dir)

    def load_doc(self, doc: Any, source: str, base: Path, display_dir: str) -> None:
        if doc is None:
            self.problems.append(f"{source}: empty; expected a mapping with a 'machines:' list")
            return
        if not isinstance(doc, dict):
            self.problems.append(
                f"{source}: the top level must be a mapping with a 'machines:' list, got {_kind(doc)}"
            )
            return
        self.unknown_keys(doc, TOP_KEYS, source)
        if "machines" not in doc:
            self.problems.append(f"{source}: no 'machines:' list")
            return
        items = doc["machines"]
        if items is None:
            return  # ``machines:`` with nothing under it: a file that defines nothing yet
        if not isinstance(items, list):
            self.problems.append(f"{source}: 'machines' must be a list, got {_kind(items)}")
            return
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                self.problems.append(
                    f"{source}: machines[{i}]: expected a machine or an import (a mapping), got {_kind(item)}"
                )
            elif "import" in item:
                self.load_import(item, i, source, base, display_dir)
            else:
                self.load_machine(item, i, source)

    def load_import(self, item: dict, i: int, source: str, base: Path, display_dir: str) -> None:
        where = f"{source}: machines[{i}]"
        extra = [k for k in item if k != "import"]
        if extra:
            self.problems.append(
                f"{where}: an import item takes only 'import', found also {', '.join(map(repr, extra))}"
            )
        target = item["import"]
        if not isinstance(target, str) or not target.strip():
            self.problems.append(f"{where}: 'import' must be a file path, got {_kind(target)}")
            return
        display = os.path.normpath(os.path.join(display_dir, target))
        self.load_file(base / target, display, where, target)

    # -- machines ----------------------------------------------------------------------------

    def unknown_keys(self, mapping: dict, allowed: tuple[str, ...], where: str,
                     suggest: tuple[str, ...] = ()) -> None:
        for key in mapping:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed + suggest, n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
            self.report(f"{where}: unknown key {key!r}{hint}")

    def string(self, mapping: dict, key: str, where: str, required: bool) -> str | None:
        """The string under ``key``, or None (absent/null, or a problem recorded)."""
        value = mapping.get(key)
        if value is None:
            if required:
                self.report(f"{where}: missing {key!r}")
            return None
        if isinstance(value, str) and value.strip():
            return value
        hint = " (YAML reads yes/no/on/off/true/false and numbers as non-strings: quote it)" \
            if isinstance(value, (bool, int, float)) else ""
        self.report(f"{where}: {key!r} must be a non-empty string, got {_kind(value)}{hint}")
        return None

    def flag(self, mapping: dict, key: str, where: str) -> bool:
        value = mapping.get(key)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        self.report(f"{where}: {key!r} must be true or false, got {_kind(value)}")
        return False

    def action(self, mapping: dict, key: str, where: str) -> str | None:
        dotted = self.string(mapping, key, where, required=False)
        if dotted is None:
            return None
        if not is_dotted_path(dotted):
            self.problems.append(
                f"{where}: {key} {dotted!r} is not a dotted path like 'package.module.Name'"
            )
            return None
        if self.check_actions:
            if dotted not in self.action_errors:
                try:
                    resolve(dotted)
                    self.action_errors[dotted] = None
                except ActionImportError as exc:
                    self.action_errors[dotted] = exc.reason
            reason = self.action_errors[dotted]
            if reason is not None:
                self.problems.append(f"{where}: {key} {dotted!r} does not import: {reason}")
        return dotted

    def load_machine(self, item: dict, i: int, source: str) -> None:
        before = len(self.problems)
        name = item.get("name")
        if isinstance(name, str) and name.strip():
            where = f"{source}: machine {name!r}"
        else:
            where = f"{source}: machines[{i}]"
            name = self.string(item, "name", where, required=True)
        self.unknown_keys(item, MACHINE_KEYS, where, suggest=IMPORT_KEYS)

        max_retries = item.get("max_retries")
        if max_retries is not None and (
            not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0
        ):
            self.problems.append(f"{where}: max_retries must be a non-negative integer, got {_kind(max_retries)}")
            max_retries = None

        raw_states = item.get("states")
        states: list[StateDef] = []
        complete = True  # every state parsed without structural problems
        if raw_states is None:
            self.problems.append(f"{where}: no 'states' list")
            complete = False
        elif not isinstance(raw_states, list):
            self.problems.append(f"{where}: 'states' must be a list, got {_kind(raw_states)}")
            complete = False
        elif not raw_states:
            self.problems.append(f"{where}: 'states' is empty; a machine needs at least an initial state")
            complete = False
        else:
            first_index: dict[str, int] = {}
            self.broken = False
            for j, raw in enumerate(raw_states):
                state = self.load_state(raw, j, where)
                if state is None:
                    continue
                if state.name in first_index:
                    self.problems.append(
                        f"{where}: state {state.name!r} defined twice "
                        f"(states[{first_index[state.name]}] and states[{j}])"
                    )
                    complete = False
                    continue
                first_index[state.name] = j
                states.append(state)
            complete = complete and not self.broken
            self.check_graph(states, where, complete)

        if name is not None:
            at = f"{source}, machines[{i}]"
            if name in self.defined_at:
                self.problems.append(
                    f"{where}: defined more than once (also at {self.defined_at[name]})"
                )
            else:
                self.defined_at[name] = at
        if len(self.problems) == before and name is not None:
            self.machines[name] = MachineDef(name, max_retries, tuple(states), source=source)

    def load_state(self, raw: Any, j: int, mwhere: str) -> StateDef | None:
        if not isinstance(raw, dict):
            self.report(f"{mwhere}, states[{j}]: expected a state (a mapping), got {_kind(raw)}")
            return None
        name = raw.get("name")
        if isinstance(name, str) and name.strip():
            where = f"{mwhere}, state {name!r}"
        else:
            where = f"{mwhere}, states[{j}]"
            self.string(raw, "name", where, required=True)
            name = None
        self.unknown_keys(raw, STATE_KEYS, where)
        initial = self.flag(raw, "initial", where)
        final = self.flag(raw, "final", where)
        actions = {key: self.action(raw, key, where) for key in STATE_ACTION_KEYS}

        transitions: list[Transition] = []
        raw_transitions = raw.get("transitions")
        if raw_transitions is not None and not isinstance(raw_transitions, list):
            self.report(f"{where}: 'transitions' must be a list, got {_kind(raw_transitions)}")
        elif raw_transitions:
            seen: dict[str, Transition] = {}
            for k, rt in enumerate(raw_transitions):
                t = self.load_transition(rt, k, where)
                if t is None:
                    continue
                if t.event in seen:
                    self.report(
                        f"{where}: event {t.event!r} has more than one transition "
                        f"(to {seen[t.event].target!r} and to {t.target!r}); events must be unique per state"
                    )
                    continue
                seen[t.event] = t
                transitions.append(t)
        children = raw.get("wait") == "children"
        wait = True if children else self.wait_flag(raw, where)
        timeout = self.duration(raw, "timeout", where)
        on_timeout = self.string(raw, "on_timeout", where, required=False)
        self.problems.extend(WaitKeys(where, raw, wait, children, final, actions["do_action"], on_timeout,
                                      tuple(t.event for t in transitions)).problems())
        if name is None:
            return None
        return StateDef(name, initial, final, actions["entry_action"], actions["do_action"],
                        actions["exit_action"], tuple(transitions), wait, timeout, on_timeout, children)

    def wait_flag(self, mapping: dict, where: str) -> bool:
        value = mapping.get("wait")
        if value is None or isinstance(value, bool):
            return bool(value)
        self.report(f"{where}: 'wait' must be true, false or children, got {_kind(value)}")
        return False

    def duration(self, mapping: dict, key: str, where: str) -> float | None:
        value = mapping.get(key)
        if value is None:
            return None
        seconds = parse_duration(value)
        if seconds is None:
            self.problems.append(f"{where}: {key} {value!r} is not a duration; write seconds (90) or "
                                 "a string like '15m', '2h', '1d' or '1h30m'")
        return seconds

    def load_transition(self, raw: Any, k: int, swhere: str) -> Transition | None:
        if not isinstance(raw, dict):
            self.report(f"{swhere}, transitions[{k}]: expected a transition (a mapping), got {_kind(raw)}")
            return None
        event = raw.get("event")
        where = f"{swhere}, transition on event {event!r}" if isinstance(event, str) and event.strip() \
            else f"{swhere}, transitions[{k}]"
        event = self.string(raw, "event", where, required=True)
        self.unknown_keys(raw, TRANSITION_KEYS, where)
        target = self.string(raw, "target", where, required=True)
        action = self.action(raw, "action", where)
        local = self.flag(raw, "local", where)
        delay = self.duration(raw, "delay", where)
        if local and raw.get("delay") is not None:
            self.problems.append(f"{where}: a 'delay' transition cannot be 'local' (it waits in the retry "
                                 "source, not in the invocation): drop one of them")
        if event is None or target is None:
            return None
        return Transition(event, target, action, local, delay)

    def check_graph(self, states: list[StateDef], where: str, complete: bool) -> None:
        """Initial state, targets, ways out, final states and reachability."""
        by_name = {s.name: s for s in states}
        initials = [s.name for s in states if s.initial]
        if not initials and complete:
            self.problems.append(f"{where}: no initial state; mark exactly one state 'initial: true'")
        elif len(initials) > 1:
            self.problems.append(
                f"{where}: {len(initials)} initial states ({', '.join(map(repr, initials))}); exactly one is allowed"
            )
        unknown_targets = False
        for s in states:
            swhere = f"{where}, state {s.name!r}"
            for t in s.transitions:
                if t.target not in by_name:
                    unknown_targets = True
                    close = difflib.get_close_matches(t.target, list(by_name), n=1, cutoff=0.75)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    self.problems.append(
                        f"{swhere}: transition on event {t.event!r} targets unknown state {t.target!r}{hint}"
                    )
            if s.final and s.transitions:
                events = ", ".join(repr(t.event) for t in s.transitions)
                self.problems.append(
                    f"{swhere}: final state has transitions (on {events}); a final state ends the machine, "
                    "so they could never fire: remove them or drop 'final: true'"
                )
        if not complete:
            return  # a broken state may hide a transition: reachability and ways out would mislead
        for s in states:
            if not s.final and not s.transitions:
                self.problems.append(
                    f"{where}, state {s.name!r}: not final and has no transitions, so no way out: "
                    "add transitions or mark it 'final: true'"
                )
        if len(initials) != 1 or unknown_targets:
            return  # a mistyped target probably meant a state that now looks unreachable
        seen = {initials[0]}
        todo = [initials[0]]
        while todo:
            for t in by_name[todo.pop()].transitions:
                if t.target in by_name and t.target not in seen:
                    seen.add(t.target)
                    todo.append(t.target)
        for s in states:
            if s.name not in seen:
                self.problems.append(
                    f"{where}, state {s.name!r}: unreachable from the initial state {initials[0]!r}"
                )


@dataclass(frozen=True)
class WaitKeys:
    """A state's wait keys as written (``wait``, ``timeout``, ``on_timeout``), checked one rule per
    method so each mistake is its own one-line problem: a wait state's next event comes from outside
    (or from its children), so what would make it run on its own, or wait forever unseen, is refused."""

    where: str
    raw: dict
    wait: bool
    children: bool
    final: bool
    do_action: str | None
    on_timeout: str | None
    events: tuple[str, ...]

    def problems(self) -> list[str]:
        rules = (self.no_do_action, self.not_final, self.timeout_on_waits_only, self.timeout_in_pairs,
                 self.on_timeout_names_a_transition, self.children_done_handled)
        return [problem for rule in rules for problem in rule()]

    def no_do_action(self) -> list[str]:
        if self.wait and self.do_action is not None:
            return [f"{self.where}: a 'wait: true' state runs no do_action (its next event comes from "
                    "outside): move the action to entry_action or drop 'wait'"]
        return []

    def not_final(self) -> list[str]:
        return [f"{self.where}: a final state cannot wait: drop 'wait' or 'final'"] if self.wait and self.final else []

    def timeout_on_waits_only(self) -> list[str]:
        if self.wait:
            return []
        return [f"{self.where}: {key!r} belongs on a 'wait: true' state only"
                for key in ("timeout", "on_timeout") if self.raw.get(key) is not None]

    def timeout_in_pairs(self) -> list[str]:
        has_timeout, has_event = self.raw.get("timeout") is not None, self.raw.get("on_timeout") is not None
        if not self.wait or has_timeout == has_event:
            return []
        have, missing = ("timeout", "on_timeout") if has_timeout else ("on_timeout", "timeout")
        return [f"{self.where}: {have!r} needs {missing!r} too (the event fired when time is up)"]

    def on_timeout_names_a_transition(self) -> list[str]:
        if self.on_timeout is None or not self.events or self.on_timeout in self.events:
            return []
        return [f"{self.where}: on_timeout {self.on_timeout!r} names no transition of this state "
                f"(its events: {', '.join(self.events)})"]

    def children_done_handled(self) -> list[str]:
        if not self.children or CHILDREN_DONE in self.events:
            return []
        return [f"{self.where}: a 'wait: children' state needs a transition on event {CHILDREN_DONE!r} "
                "(fired once every child machine has ended)"]


def _yaml_problem(source: str, exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = exc.problem or str(exc)
        if isinstance(exc, yaml.constructor.ConstructorError) and "constructor for the tag" in problem:
            return (f"{source}: {at}{problem}: only plain YAML is allowed (definitions are read with "
                    "yaml.safe_load: mappings, lists, strings, numbers, booleans, null)")
        context = f" ({exc.context})" if exc.context else ""
        return f"{source}: {at}invalid YAML: {problem}{context}"
    return f"{source}: invalid YAML: {exc}"


def _duplicate_keys(text: str, source: str) -> list[str]:
    """Keys repeated in one mapping, which ``safe_load`` silently resolves to the last value.

    Works on the composed node tree (no object is constructed), so it is as safe as safe_load.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        root = yaml.compose(text, Loader=loader)
    except yaml.YAMLError:
        return []  # safe_load already succeeded; nothing more to say
    found: list[tuple[int, int, str]] = []
    todo = [root] if root is not None else []
    visited: set[int] = set()
    while todo:
        node = todo.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in seen:
                        line, column = key.start_mark.line + 1, key.start_mark.column + 1
                        found.append((line, column, f"{source}: line {line}, column {column}: key "
                                      f"{key.value!r} repeated in one mapping (YAML would silently keep the last)"))
                    seen.add(key.value)
                todo.append(value)
        elif isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)
    return [problem for _, _, problem in sorted(found)]
