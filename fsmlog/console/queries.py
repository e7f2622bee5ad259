"""What the console reads, each through the function the CLI command uses for the same thing.

Machines list: ``replay.scan.scan`` (``fsmlog replay scan``: the log on every
readable side plus the snapshots), cached for a few seconds so paging and
auto-refresh do not read the log again. One machine: ``fsmlog status ID``'s
snapshot + tail, ``fsmlog history ID`` and ``fsmlog replay machine ID``'s
rebuild. Dead letters: ``fsmlog dead-letters``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from eventlog.codec import decode_fields
from eventlog.errors import DecodeError, FsmlogError
from eventlog.event import COMPLETED, FAILED, RETRY, STEP
from fsmlog.cli import one_line
from fsmlog.cli import output as out
from fsmlog.cli.deadletters import HEX_LIMIT, decode_attempt, hexdump, letter_dict
from fsmlog.cli.ids import short_ids
from fsmlog.cli.machines import TAIL_RECORDS, _one_machine, history_document, history_rows, status_document
from fsmlog.cli.replay import human_duration, machine_document, rebuild_machine

if TYPE_CHECKING:
    from eventlog.event import Event
    from fsmlog.cli import Runtime
    from handlers.deadletters import DeadLetter
    from projections.definition import Definitions, MachineDef

STATUSES = ("running", "stalled", "completed", "failed", "aborted")
PAGE = 50
MAX_PAGE = 500
SCAN_TTL_S = 3.0
READ_PAGE = 5000
# the overview's series each record kind counts in
SERIES_OF_KIND = {STEP: ("transitions",), COMPLETED: ("transitions",), FAILED: ("transitions", "failures"),
                  RETRY: ("retries",)}


@runtime_checkable
class TotalledMetrics(Protocol):
    """A metrics sink that keeps every counter's total (the embedded one): the overview shows them."""

    name: str

    def read(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]: ...


class NotFound(FsmlogError):
    """No machine (or dead letter) with this id: the API answers 404."""

    def __init__(self, message: str, *, machine: str | None = None, letter: str | None = None) -> None:
        super().__init__(message)
        self.machine = machine
        self.letter = letter


@dataclass(frozen=True)
class Listing:
    """A scan's machines, each with its console status (``stalled`` for running ones stuck too long)."""

    rows: list[dict[str, Any]]  # newest first
    counts: dict[str, int]
    log: str
    notes: list[str]
    summary: list[dict[str, Any]]
    when: float


class Reader:
    """The console's reads on one runtime (``fsmlog.cli.Runtime``), with the scan cached briefly."""

    def __init__(self, runtime: Runtime, definitions: Definitions | None = None, *, stalled_after_s: float = 900.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.rt = runtime
        self.definitions = definitions
        self.stalled_after_s = stalled_after_s
        self.clock = clock
        self._lock = threading.Lock()
        self._cache: dict[float, Listing] = {}

    def forget(self) -> None:
        """After an action: the next read scans again."""
        with self._lock:
            self._cache.clear()

    # ------------------------------------------------------------ machines

    def listing(self, stalled_after_s: float | None = None) -> Listing:
        from replay.scan import scan

        threshold = self.stalled_after_s if stalled_after_s is None else stalled_after_s
        now = self.clock()
        with self._lock:
            cached = self._cache.get(threshold)
            if cached is not None and now - cached.when < SCAN_TTL_S:
                return cached
            result = scan(self.rt.log, self.rt.services.checkpoints, now=now, stalled_after_s=threshold)
            stuck = {st.correlation_id: st.stuck_s for st in result.stalled}
            rows = []
            for s in sorted(result.states.values(), key=lambda s: (-s.time, s.correlation_id)):
                row = s.as_dict()
                row["stalled"] = s.correlation_id in stuck
                row["stuck_s"] = round(stuck[s.correlation_id], 3) if row["stalled"] else None
                row["shown_status"] = "stalled" if row["stalled"] else s.status
                rows.append(row)
            short = short_ids(r["correlation_id"] for r in rows)  # unique prefixes, as the CLI's tables show
            counts = {k: 0 for k in STATUSES}
            for row in rows:
                row["short_id"] = short[row["correlation_id"]]
                counts[row["shown_status"]] += 1
            listing = Listing(rows, counts, _stream_names(self.rt), result.notes, result.summary(), now)
            self._cache = {threshold: listing}
            return listing

    def machines(self, *, status: str | None = None, machine: str | None = None, q: str | None = None,
                 limit: int = PAGE, cursor: str | None = None, stalled_after_s: float | None = None
                 ) -> dict[str, Any]:
        """One page of machines, newest first, in ``fsmlog status --json``'s shape plus paging.

        ``status`` ``running`` means running and not stalled; ``q`` matches an id by prefix or part."""
        listing = self.listing(stalled_after_s)
        rows = listing.rows
        if status:
            rows = [r for r in rows if r["shown_status"] == status]
        if machine:
            rows = [r for r in rows if r["machine"] == machine]
        if q:
            needle = q.strip()
            rows = [r for r in rows if needle in r["correlation_id"]]
            rows.sort(key=lambda r: not r["correlation_id"].startswith(needle))  # prefixes first, stable
        start = int(cursor) if cursor and cursor.isdigit() else 0
        limit = max(1, min(limit, MAX_PAGE))
        page = rows[start:start + limit]
        return {
            "log": listing.log,
            "counts": listing.counts,
            "total": len(rows),
            "machines": page,
            "cursor": str(start + limit) if start + limit < len(rows) else None,
            "previous": str(max(0, start - limit)) if start else None,
            "offset": start,
            "names": sorted({r["machine"] for r in listing.rows}),
            "notes": listing.notes,
            "stalled_after_s": self.stalled_after_s if stalled_after_s is None else stalled_after_s,
        }

    def machine(self, cid: str) -> dict[str, Any]:
        """``fsmlog status ID --json``: state, context, snapshot and the tail after it."""
        state, snap, tail = _one_machine(self.rt, cid)
        if state is None:
            raise NotFound(f"no machine with id {cid!r} in {_stream_names(self.rt)}; GET /api/machines lists them",
                           machine=cid)
        return status_document(state, snap, tail[-TAIL_RECORDS:])

    def history(self, cid: str) -> list[dict[str, Any]]:
        """``fsmlog history ID --json``: every record with the state folded after it."""
        return history_document(self._rows(cid))

    def _rows(self, cid: str) -> list[tuple[str, Any, Any]]:
        from eventlog.sides import read_machine, readable_sides

        if readable_sides(self.rt.log) and not read_machine(self.rt.log, cid):
            raise NotFound(f"no records of machine {cid!r} in {_stream_names(self.rt)}; GET /api/machines "
                           "lists machines", machine=cid)
        return history_rows(self.rt, cid)

    def rebuild(self, cid: str, *, write: bool) -> dict[str, Any]:
        """``fsmlog replay machine ID [--redispatch] --json``: snapshot vs rebuilt, and the retry record."""
        from replay.errors import UnknownCorrelationId

        try:
            rebuilt, appended, pending = rebuild_machine(self.rt, cid, redispatch=write, now=self.clock())
        except UnknownCorrelationId:
            raise NotFound(f"no machine with id {cid!r} in {_stream_names(self.rt)}; GET /api/machines lists "
                           "them", machine=cid) from None
        if write:
            self.forget()
        return machine_document(rebuilt, appended, pending)

    def page(self, cid: str) -> dict[str, Any]:
        """Everything the machine page shows."""
        doc = self.machine(cid)
        try:
            rows = self._rows(cid)
        except NotFound:  # known only from its snapshot: its records have left the stream
            rows = []
        try:
            replayed = self.rebuild(cid, write=False)
        except FsmlogError as exc:  # e.g. a stream that cannot be read back: the page shows the rest
            replayed = {"error": one_line(exc)}
        name = doc["machine"]["machine"]
        graph = None
        if self.definitions is not None and name in self.definitions:
            from .diagram import render_svg

            mdef = self.definitions.machine(name)
            visited, taken = path_taken(mdef, [ev for _, ev, _ in rows])
            graph = render_svg(mdef, doc["machine"]["state"], visited, taken)
        now = self.clock()
        state = doc["machine"]
        stuck = now - state["time"] if state["status"] == "running" else 0.0
        return {"doc": doc, "timeline": timeline(rows), "replayed": replayed, "graph": graph, "now": now,
                "stalled_for": stuck if stuck > self.stalled_after_s else None}

    # ------------------------------------------------------------ dead letters

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """``fsmlog dead-letters list --json``."""
        return [letter_dict(x) for x in self.rt.services.dead_letters.list(limit)]

    def dead_letter(self, letter_id: str, full: bool = False) -> dict[str, Any]:
        """``fsmlog dead-letters show ID --json`` plus the hex dump as text."""
        letter = self.letter(letter_id)
        return {**letter_dict(letter), "data_hex": letter.data.hex(), "decoded": decode_attempt(letter.data),
                "hexdump": hexdump(letter.data, None if full else HEX_LIMIT)}

    def letter(self, letter_id: str) -> DeadLetter:
        store = self.rt.services.dead_letters
        letter = store.get(letter_id)
        if letter is None:
            raise NotFound(f"no dead letter {letter_id!r} in {store.name}; GET /api/dead-letters lists them",
                           letter=letter_id)
        return letter

    # ------------------------------------------------------------ overview

    def overview(self, minutes: int = 60) -> dict[str, Any]:
        """Per minute over the last hour: transitions, failures, retries and parked records, read back
        from CloudWatch when the metrics go there, else counted in the log (and the dead letters)."""
        from .readback import cloudwatch_series

        now = self.clock()
        start = (int(now // 60) - minutes + 1) * 60
        note = None
        try:
            series = cloudwatch_series(self.rt.services.metrics, self.rt.settings, start, minutes)
        except FsmlogError as exc:  # CloudWatch unreachable: count the log, and say why
            series, note = None, f"the metrics could not be read back: {one_line(exc)}"
        source, records = "metrics", None
        if series is None:
            source = "log"
            series, records = self._counted(start, minutes)
        totals = None
        sink = self.rt.services.metrics
        if isinstance(sink, TotalledMetrics):
            totals = [{"name": n, "dimensions": dict(d), "value": v} for (n, d), v in sink.read().items()]
        return {"start": start, "minutes": minutes, "series": series, "records": records, "source": source,
                "note": note, "metrics": totals, "metrics_source": sink.name,
                "log": _stream_names(self.rt)}

    def _counted(self, start: float, minutes: int) -> tuple[dict[str, list[int]], int]:
        """The series counted from the records of the log (every readable side) and the dead letters."""
        series = {k: [0] * minutes for k in ("transitions", "failures", "retries", "parked")}
        records = 0
        for kind, when in self._kinds_and_times():
            i = int((when - start) // 60)
            if 0 <= i < minutes:
                records += 1
                for key in SERIES_OF_KIND.get(kind, ()):
                    series[key][i] += 1
        for letter in self.rt.services.dead_letters.list(1_000_000):
            i = int((letter.time - start) // 60)
            if 0 <= i < minutes:
                series["parked"][i] += 1
        return series, records

    def _kinds_and_times(self) -> Iterator[tuple[str, float]]:
        """Each record's kind and time, from its fields (no Event built per record); undecodable ones skipped."""
        from eventlog.sides import readable_sides

        for _side, backend in readable_sides(self.rt.log):
            after = None
            while page := backend.read(after, READ_PAGE):
                after = page[-1].position
                for r in page:
                    try:
                        fields = decode_fields(r.data)
                    except DecodeError:
                        continue
                    yield fields[0], fields[8]  # Event's fields: kind first, time ninth


def _stream_names(rt: Runtime) -> str:
    from eventlog.sides import readable_sides

    return " + ".join(b.name for _, b in readable_sides(rt.log)) or rt.log.name


def timeline(rows: list[tuple[str, Any, Any]]) -> list[dict[str, Any]]:
    """One row per record: what it says, the time since the previous one, and its context diff."""
    out_rows = []
    prev_time = None
    prev_context: dict[str, Any] = {}
    for position, ev, folded in rows:
        try:
            context = ev.context
        except FsmlogError as exc:
            context, diff = {}, [("!", "context", one_line(exc))]
        else:
            diff = context_diff(prev_context, context)
        out_rows.append({
            "position": position, "kind": ev.kind, "state": ev.state, "event": ev.event, "steps": ev.steps,
            "retries": ev.retries, "time": ev.time, "clock": out.clock_time(ev.time),
            "since": None if prev_time is None else human_duration(ev.time - prev_time),
            "since_s": None if prev_time is None else round(ev.time - prev_time, 3),
            "error": f"{ev.error_type}: {ev.error_message}" if ev.error_type else None,
            "diff": diff, "folded": folded.status,
        })
        prev_time, prev_context = ev.time, context
    return out_rows


def context_diff(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(``+``/``-``/``~``, key, value as JSON) for each top-level key added, removed or changed."""
    diff = []
    for key in after:
        if key not in before:
            diff.append(("+", key, _json(after[key])))
        elif after[key] != before[key]:
            diff.append(("~", key, _json(after[key])))
    diff.extend(("-", key, _json(before[key])) for key in before if key not in after)
    return diff


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def path_taken(machine: MachineDef, events: list[Event]) -> tuple[set[str], set[tuple[str, str]]]:
    """States a machine was in and the (state, event) transitions it fired, from its records.

    Local steps leave no record: between two records the states in between are the shortest
    path in the definition, which is what a local chain took when there is only one way."""
    by_name = {s.name: s for s in machine.states}
    visited: set[str] = set()
    taken: set[tuple[str, str]] = set()
    steps = sorted({ev.steps: ev for ev in events}.values(), key=lambda e: e.steps)
    for a, b in zip(steps, steps[1:]):
        visited.update((a.state, b.state))
        here = a.state
        fired = by_name[a.state].transition(a.event) if a.event and a.state in by_name else None
        if fired is not None and a.event:
            taken.add((a.state, a.event))
            here = fired.target
        for s, e in _shortest(by_name, here, b.state):
            taken.add((s, e))
            visited.add(s)
    visited.update(ev.state for ev in events)
    return visited, taken


def _shortest(by_name: dict[str, Any], start: str, goal: str) -> list[tuple[str, str]]:
    if start == goal or start not in by_name:
        return []
    back: dict[str, tuple[str, str]] = {}
    queue = deque([start])
    while queue:
        name = queue.popleft()
        for t in by_name[name].transitions:
            if t.target not in back and t.target != start:
                back[t.target] = (name, t.event)
                if t.target == goal:
                    path = []
                    node = goal
                    while node != start:
                        path.append(back[node])
                        node = back[node][0]
                    return path[::-1]
                queue.append(t.target)
    return []
