"""A two-sided rig for the engine under faults: every source has a primary and a secondary SQLite file.

Each worker made here has its own services: for every source kind, its own side backends wrapped in
``Reach`` (a switch per worker, kind and side: while it is off, every call raises
``ServiceUnavailable``, as a network partition between that worker and that side would) and its own
failover proxy over them (so each worker keeps its own failover state, as separate processes do).
All workers share the two files and one injected clock, so lease expiry, backoff and cool-downs are
exact and nothing waits.

The rig also reads and damages the files directly, as an outside observer: the union of both logs
(what the fold of "both streams" means), and "stores that forget" (the cache side's tables emptied,
one machine's rows evicted, checkpoints dropped).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from eventlog.codec import decode
from eventlog.errors import ServiceUnavailable
from eventlog.event import Event
from eventlog.log import LogRecord
from eventlog.proxy import declaring
from eventlog.settings import SOURCES, load_settings
from handlers import wiring
from handlers.engine import BatchResult, Engine, Inbound
from handlers.services import Services
from projections.definition import from_dict
from projections.fold import fold
from projections.state import MachineState
from tests.plain_cache import PlainCache
from tests.unit.engine_rig import Clock

PRIMARY, SECONDARY = "primary", "secondary"
SIDES = (PRIMARY, SECONDARY)
SIDE_SETTING = {PRIMARY: "PRIMARY", SECONDARY: "SECONDARY"}
SERVICE_FIELDS = {"STREAM": "log", "CHECKPOINT": "checkpoints", "RETRY": "retries", "CACHE": "cache",
                  "ENVIRONMENT": "environment", "METRICS": "metrics", "DEAD_LETTER": "dead_letters"}
# tables of the embedded file that are not the cache's: everything else in it is cache state
NOT_CACHE = frozenset({"log", "consumers", "claims", "checkpoints", "retries", "environment", "metrics",
                       "dead_letters", "sqlite_sequence"})
ALWAYS_PASS = frozenset({"close"})


class Reach:
    """One side backend as one worker sees it: every call fails while ``up()`` says the side is cut off.

    Like ``eventlog.chaos.ChaosProxy`` it names the backend it wraps (``wrapped``), for the tools
    that look behind wrappers (e.g. to list snapshots), and declares the backend's methods
    (``eventlog.proxy``): the engine takes the same paths through it on every Python."""

    def __new__(cls, backend: Any, up: Callable[[], bool], label: str) -> Reach:
        return object.__new__(declaring(cls, backend))

    def __init__(self, backend: Any, up: Callable[[], bool], label: str) -> None:
        self.__dict__["wrapped"] = backend
        self.__dict__["_backend"] = backend
        self.__dict__["_up"] = up
        self.__dict__["_label"] = label

    def __getattr__(self, name: str) -> Any:
        if name in ("_backend", "_up", "_label"):  # not set yet (e.g. while copying)
            raise AttributeError(name)
        attr = getattr(self._backend, name)
        if name.startswith("_") or name in ALWAYS_PASS or not callable(attr):
            return attr
        up, label = self._up, self._label

        def reached(*args: Any, **kwargs: Any) -> Any:
            if not up():
                raise ServiceUnavailable(f"{label} is unreachable from this worker (test partition)")
            return attr(*args, **kwargs)

        reached.__name__ = name
        return reached

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._backend, name, value)

    def __repr__(self) -> str:
        return f"Reach({self._label})"


class Worker:
    """An engine with its own services (own failover proxies) and its own reach of every side."""

    def __init__(self, rig: FaultRig, name: str, seed: int) -> None:
        self.rig = rig
        self.name = name
        self.up: dict[tuple[str, str], bool] = {(kind, side): True for kind in SOURCES for side in SIDES}
        self.services = rig.open_services(self.up, name)
        self.engine = Engine(rig.definitions, self.services, rig.settings, clock=rig.clock, sleep=rig.clock.sleep,
                             rng=random.Random(seed), worker_id=name)

    def reaches(self, kind: str, side: str) -> bool:
        return self.up[(kind, side)]

    def cut(self, kind: str, side: str) -> None:
        self.up[(kind, side)] = False

    def restore(self, kind: str | None = None, side: str | None = None) -> None:
        for k, s in self.up:
            if (kind is None or k == kind) and (side is None or s == side):
                self.up[(k, s)] = True

    def handle(self, records: Iterable[tuple[str, LogRecord]]) -> BatchResult:
        """Deliver records read from the logs, each as its own side's trigger would."""
        return self.engine.handle([self.rig.inbound(side, rec) for side, rec in records])

    def close(self) -> None:
        self.services.close()


class FaultRig:
    """Two SQLite files (the primary and the secondary side of every source), one clock, many workers."""

    def __init__(self, tmp_path: Any, machines: list[dict], *, plain_cache: bool = False, **settings: Any) -> None:
        """``plain_cache``: every worker's cache sides offer only the basic calls (``PlainCache``)."""
        self.plain_cache = plain_cache
        self.urls = {PRIMARY: f"sqlite:///{tmp_path}/primary.db", SECONDARY: f"sqlite:///{tmp_path}/secondary.db"}
        values: dict[str, Any] = {}
        for kind in SOURCES:
            for side in SIDES:
                values[f"{SIDE_SETTING[side]}_{kind}_SOURCE"] = self.urls[side]
        values.update(RETRY_BASE_SECONDS=2.0, RETRY_CAP_SECONDS=60.0, LEASE_SECONDS=60.0, LEASE_WAIT_SECONDS=5.0)
        values.update(settings)
        self.settings = load_settings(environ={}, **values)
        self.clock = Clock()
        self.definitions = from_dict({"machines": machines})
        self._closing: list[Any] = []
        # the rig's own view of each side: read and damaged directly, never cut off
        self.raw = {side: {kind: self._open(kind, side) for kind in ("STREAM", "CHECKPOINT", "RETRY", "CACHE")}
                    for side in SIDES}
        self.workers: dict[str, Worker] = {}

    # ------------------------------------------------------------------ wiring

    def _open(self, kind: str, side: str) -> Any:
        backend = wiring.open_backend(kind, self.urls[side], self.settings, SIDE_SETTING[side])
        if hasattr(backend, "clock"):
            backend.clock = self.clock
        self._closing.append(backend)
        return backend

    def open_services(self, up: dict[tuple[str, str], bool], who: str) -> Services:
        """Services as ``handlers.wiring.open_services`` builds them (whatever failover it puts over
        the two sides of each kind), with every side backend behind this worker's ``Reach``."""
        real = wiring.open_backend

        def reached(kind: str, target: str, settings: Any, side: str = "PRIMARY") -> Any:
            name = PRIMARY if side == "PRIMARY" else SECONDARY
            backend = real(kind, target, settings, side)
            if hasattr(backend, "clock"):
                backend.clock = self.clock
            self._closing.append(backend)
            if kind == "CACHE" and self.plain_cache:
                backend = PlainCache(backend)
            return Reach(backend, lambda: up[(kind, name)], f"{who}'s {name} {kind}")

        wiring.open_backend = reached
        try:
            services = wiring.open_services(self.settings)
        finally:
            wiring.open_backend = real
        for kind in SOURCES:  # failover timing on the rig's clock too, where a proxy keeps one
            own = getattr(getattr(services, SERVICE_FIELDS[kind]), "__dict__", {})
            if "_clock" in own:
                own["_clock"] = self.clock
            if "_sleep" in own:
                own["_sleep"] = self.clock.sleep
        return services

    def worker(self, name: str, seed: int = 7) -> Worker:
        w = self.workers[name] = Worker(self, name, seed)
        return w

    # ------------------------------------------------------------------ the logs, from outside

    def log(self, side: str) -> Any:
        return self.raw[side]["STREAM"]

    def inbound(self, side: str, rec: LogRecord) -> Inbound:
        return Inbound(rec.position, rec.data, self.log(side).name, rec.position)

    def read(self, side: str, after: str | None = None, limit: int = 1_000_000) -> list[tuple[str, LogRecord]]:
        return [(side, r) for r in self.log(side).read(after, limit)]

    def all_records(self) -> list[tuple[str, LogRecord]]:
        return self.read(PRIMARY) + self.read(SECONDARY)

    def records_of(self, cid: str) -> list[tuple[str, LogRecord]]:
        return [(side, r) for side in SIDES for r in self.log(side).read_key(cid)]

    def events(self, cid: str) -> list[Event]:
        return [decode(r.data) for _, r in self.records_of(cid)]

    def fold(self, cid: str) -> MachineState | None:
        """The fold of the union of both logs."""
        return fold(None, self.events(cid))

    def pending_retries(self) -> int:
        return sum(self.raw[side]["RETRY"].pending() for side in SIDES)

    # ------------------------------------------------------------------ stores that forget

    def _tables(self, side: str) -> list[str]:
        db = self.raw[side]["CACHE"].db
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return sorted(r[0] for r in rows if r[0] not in NOT_CACHE)

    def known_only_on(self, side: str) -> set[str]:
        """Machines whose progress ``side`` knows and the other cache side does not: a higher
        high-water mark, or (a plain cache) a step's done or tried flag the other side lacks. Per-step
        flags carry no high-water mark, so a later step marked on the other side does not cover them."""
        other = SIDES[1] if side == SIDES[0] else SIDES[0]
        if not self.plain_cache:
            marks = {s: dict(self.raw[s]["CACHE"].db.execute("SELECT cid, done FROM progress")) for s in SIDES}
            return {cid for cid, done in marks[side].items() if done > marks[other].get(cid, -2)}
        flags = {s: {key for (key,) in self.raw[s]["CACHE"].db.execute("SELECT key FROM flags")
                     if key.startswith(("done:", "tried:"))} for s in SIDES}
        return {key.split(":")[1] for key in flags[side] - flags[other]}

    def forget_cache(self, side: str, cid: str | None = None) -> None:
        """Empty every cache table of ``side`` (a flush or a restart), or evict one machine's rows."""
        db = self.raw[side]["CACHE"].db
        with db.transaction() as conn:
            for table in self._tables(side):
                if cid is None:
                    conn.execute(f'DELETE FROM "{table}"')
                    continue
                columns = [c[1] for c in conn.execute(f'PRAGMA table_info("{table}")').fetchall()
                           if "CHAR" in (c[2] or "").upper() or "TEXT" in (c[2] or "").upper()]
                for col in columns:
                    conn.execute(f'DELETE FROM "{table}" WHERE "{col}" = ? OR "{col}" LIKE ? OR "{col}" LIKE ?',
                                 (cid, f"%:{cid}", f"%:{cid}:%"))

    def forget_checkpoints(self, side: str, cid: str | None = None) -> None:
        db = self.raw[side]["CHECKPOINT"].db
        if cid is None:
            db.execute("DELETE FROM checkpoints")
        else:
            db.execute("DELETE FROM checkpoints WHERE cid = ?", (cid,))

    def close(self) -> None:
        for w in self.workers.values():
            w.close()
        for backend in self._closing:
            backend.close()
