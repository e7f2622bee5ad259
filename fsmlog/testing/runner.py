"""Run a user's machines in process, with the real engine, on an embedded file of their own.

``Kit`` loads an ``fsm.yaml`` (its directory importable, as ``fsmlog run``
does) and runs ``Case``s: each run gets a fresh directory holding its SQLite
file, and runs with that directory as the working directory, so whatever an
action keeps by relative path (a stand-in payment gateway, a ledger) starts
empty for every run. The clock is injected: backoff, lease expiry after a
simulated crash and retries cost no waiting.

The driver delivers the log's records the way a stream trigger would, in
batches, in the order the case picks, applying the case's faults to the
records they name (``fsmlog.testing.adversary``); every action call is
recorded (``fsmlog.testing.recording``).
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import sys
import tempfile
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from eventlog.codec import decode
from eventlog.embedded import EmbeddedBackend
from eventlog.event import Event
from eventlog.log import LogRecord, ReadableLog
from eventlog.proxy import declaring
from eventlog.settings import SOURCES, load_settings
from handlers.engine import Engine, Inbound
from handlers.errors import HandlerError
from handlers.wiring import open_services
from projections.definition import Definitions, MachineDef, load
from projections.fold import fold

from .adversary import Case
from .errors import TestingError
from .recording import AppliedFault, Invocation, MachineOutcome, Run, snapshot

START_TIME = 1_767_225_600.0  # 2026-01-01T00:00:00Z: runs do not depend on the wall clock
LEASE_SECONDS = 60.0
RETRY_CAP_SECONDS = 30.0
DEFAULT_MAX_STEPS = 1000
KEEP_RUNS = 4  # run directories kept (the latest); older ones are removed as new runs start

World = Callable[[Path], AbstractContextManager[Any]]


class SimulatedCrash(BaseException):
    """The worker died before its commit (a BaseException: the engine must not catch it as a failure)."""


class InjectedFault(Exception):
    """Raised by the adversary after an action returned: its effect happened, its answer was lost."""


class Clock:
    def __init__(self, t: float = START_TIME) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)


@contextmanager
def chdir_world(path: Path) -> Iterator[Path]:
    """The default world: the run's directory is the working directory while it runs."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(before)


class _Crashable:
    """A log or retry store whose next write can be made to fail as if the process died.

    It declares the store's methods (``eventlog.proxy``), so the engine sees the same optional
    interfaces through it on every Python."""

    def __new__(cls, backend: Any, write: str) -> _Crashable:
        return object.__new__(declaring(cls, backend))

    def __init__(self, backend: Any, write: str) -> None:
        self.wrapped = backend
        self._write = write
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.wrapped, name)
        if name != self._write:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            if self.armed:
                self.armed = False
                raise SimulatedCrash(f"simulated crash before {self._write}")
            return attr(*args, **kwargs)

        return write


class Recorder:
    """Wraps every action: records each call and raises where the case's ``raise`` faults say."""

    def __init__(self, definitions: Definitions) -> None:
        self.definitions = definitions
        self.invocations: list[Invocation] = []
        self.execution = 0
        self.raise_at: set[tuple[str, int]] = set()  # (cid, steps) whose do action raises on a first attempt
        self.raised: list[tuple[str, int]] = []

    def wrap(self, dotted: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def recorded(ctx: Any, obj: Any) -> Any:
            mdef = self.definitions.machine(ctx.machine_name)
            role = _role(mdef, dotted, ctx.current_state, ctx.current_event)
            base = dict(correlation_id=ctx.correlation_id, machine=ctx.machine_name, action=dotted, role=role,
                        state=ctx.current_state, event=ctx.current_event, steps=ctx.steps, retries=ctx.retries,
                        execution=self.execution, context_in=snapshot(ctx),
                        idempotency_key=str(obj.get("idempotency_key", "")))
            try:
                returned = fn(ctx, obj)
            except Exception as exc:
                self.invocations.append(Invocation(**base, context_out=None, error=f"{type(exc).__name__}: {exc}"))
                raise
            key = (ctx.correlation_id, ctx.steps)
            inject = (role == "do" and ctx.retries == 0 and ctx.max_retries >= 1 and key in self.raise_at)
            self.invocations.append(Invocation(**base, context_out=snapshot(ctx), returned=returned,
                                               error="InjectedFault: answer lost" if inject else None,
                                               injected=inject))
            if inject:
                self.raised.append(key)
                raise InjectedFault(f"injected: {dotted} ran, then its answer was lost")
            return returned

        return recorded


def _role(mdef: MachineDef, dotted: str, state: str, event: str | None) -> str:
    st = mdef.state(state)
    if st is None:
        return "action"
    if dotted == st.do_action:
        return "do"
    if dotted == st.entry_action:
        return "entry"
    if dotted == st.exit_action:
        return "exit"
    return "transition"


def _fast_tmp() -> str | None:
    """A memory-backed temporary directory where there is one (Linux's /dev/shm): runs write small SQLite
    files whose fsyncs would otherwise dominate; elsewhere the system's temporary directory."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def load_machines(fsm: str | os.PathLike[str]) -> Definitions:
    """Load an fsm.yaml with its directory importable (where its action modules live)."""
    folder = str(Path(fsm).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return load(fsm)


class Kit:
    """A user's machines, ready to run generated cases: ``Kit("fsm.yaml").run(case) -> Run``."""

    def __init__(self, fsm: str | os.PathLike[str] | Definitions, *, root: str | os.PathLike[str] | None = None,
                 world: World | None = None, max_steps: int = DEFAULT_MAX_STEPS, keep_runs: int = KEEP_RUNS,
                 **settings: Any) -> None:
        self.definitions = fsm if isinstance(fsm, Definitions) else load_machines(fsm)
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="fsmlog-test-", dir=_fast_tmp()))
        self.root.mkdir(parents=True, exist_ok=True)
        if self._own_root:  # removed when the kit is closed or collected, or at exit at the latest
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.root), True)
        self.world = world or chdir_world
        self.max_steps = max_steps
        self.keep_runs = max(2, keep_runs)
        self.settings = settings
        self._runs = itertools.count()
        self._dirs: list[Path] = []

    @property
    def machines(self) -> list[str]:
        return list(self.definitions.machines)

    def machine(self, name: str) -> MachineDef:
        try:
            return self.definitions.machine(name)
        except Exception:
            known = ", ".join(self.machines) or "none"
            raise TestingError(f"no machine {name!r} in the definitions (machines: {known})",
                               setting="--machine", machine=name) from None

    def close(self) -> None:
        if self._own_root:
            self._cleanup()

    def __enter__(self) -> Kit:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ runs

    def run(self, case: Case, *, faulty: bool = True, correlation_ids: list[str] | None = None) -> Run:
        """Run ``case`` (without its faults when ``faulty`` is False) in a fresh directory; return the Run."""
        self.machine(case.machine)
        for i, ctx in enumerate(case.contexts):
            if not isinstance(ctx, dict):
                raise TestingError(f"context #{i} of a case for {case.machine!r} is a {type(ctx).__name__}, not a "
                                   "dict; the contexts strategy must generate dicts", machine=case.machine)
        ids = correlation_ids or [uuid.uuid4().hex for _ in case.contexts]
        workdir = self.root / f"run-{next(self._runs):05d}"
        workdir.mkdir(parents=True)
        self._dirs.append(workdir)
        while len(self._dirs) > self.keep_runs:
            shutil.rmtree(self._dirs.pop(0), ignore_errors=True)
        with self.world(workdir):
            return _Driver(self, case if faulty else case.without_faults(), faulty, ids, workdir).run()

    def check(self, machine: str, contexts: Any = None, *, examples: int = 50, seed: int | None = None,
              keep: str | os.PathLike[str] | None = None, **options: Any) -> Any:
        """The built-in properties P1-P6 of ``machine`` over ``examples`` generated cases: a
        ``fsmlog.testing.properties.Report`` (``report.assert_ok()`` fails a test with it)."""
        from .properties import search

        return search(self, machine, contexts=contexts, examples=examples, seed=seed, keep=keep, **options)

    def run_pair(self, case: Case) -> tuple[Run, Run]:
        """The fault-free run and the faulty run of the same inputs, with the same correlation ids."""
        ids = [uuid.uuid4().hex for _ in case.contexts]
        reference = self.run(case, faulty=False, correlation_ids=ids)
        if reference.exceeded:
            return reference, reference
        return reference, self.run(case, faulty=True, correlation_ids=ids)


class _Driver:
    """One run: an engine on the run's own file, fed the log record by record like a trigger."""

    def __init__(self, kit: Kit, case: Case, faulty: bool, ids: list[str], workdir: Path) -> None:
        self.kit = kit
        self.case = case
        self.faulty = faulty
        self.ids = ids
        self.index = {cid: i for i, cid in enumerate(ids)}
        self.workdir = workdir
        self.db_path = workdir / "run.db"
        url = f"sqlite:///{self.db_path}"
        values: dict[str, Any] = {f"PRIMARY_{kind}_SOURCE": url for kind in SOURCES}
        values.update(RETRY_BASE_SECONDS=1.0, RETRY_CAP_SECONDS=RETRY_CAP_SECONDS, LEASE_SECONDS=LEASE_SECONDS,
                      LEASE_WAIT_SECONDS=1.0)
        values.update(kit.settings)
        self.settings = load_settings(environ={}, **values)
        self.clock = Clock()
        self.recorder = Recorder(kit.definitions)
        self.applied: list[AppliedFault] = []
        self.crashed: set[int] = set()
        self.aborted: set[str] = set()
        self.pending = {(f.kind, f.machine, f.step) for f in case.faults}
        self.workers = itertools.count()

    def _engine(self, services: Any) -> Engine:
        # the real engine, every action it resolves wrapped by the recorder; leases renewed on the run's clock
        return Engine(self.kit.definitions, services, self.settings, clock=self.clock, sleep=self.clock.sleep,
                      rng=random.Random(7), worker_id=f"kit-worker-{next(self.workers)}",
                      action_wrapper=self.recorder.wrap, keep_leases_in_thread=False)

    def run(self) -> Run:
        services = open_services(self.settings)
        try:
            for svc in (services.log, services.checkpoints, services.retries, services.cache,
                        services.environment, services.metrics, services.dead_letters):
                if isinstance(svc, EmbeddedBackend):  # the kit's own file: every backend on the run's clock
                    svc.clock = self.clock
            log = services.log
            if not isinstance(log, ReadableLog):  # the kit's sqlite: stream always reads back
                raise TestingError(f"the testing kit reads its stream back, and {log.name!r} cannot be read")
            services.log = _Crashable(log, "append")
            services.retries = _Crashable(services.retries, "schedule")
            crashables = (services.log, services.retries)
            self.recorder.raise_at = {(self.ids[f.machine], f.step) for f in self.case.faults
                                      if f.kind == "raise" and f.machine < len(self.ids)}
            engine = self._engine(services)
            engine.start_many(self.case.machine, list(self.case.contexts), self.ids)
            exceeded, deliveries = self._deliver(engine, services, log, crashables)
            return self._result(services, log, exceeded, deliveries)
        finally:
            services.close()

    def _deliver(self, engine: Engine, services: Any, log: ReadableLog, crashables: tuple) -> tuple[str | None, int]:
        """Feed the log to the engine batch by batch until nothing is left: the id of a machine past
        ``max_steps`` (or why delivery stopped) and the number of deliveries."""
        queue: list[LogRecord] = []
        after: str | None = None
        order = list(self.case.order)
        budget = (self.kit.max_steps + 10) * 4 * max(1, len(self.ids))  # a guard, far above any finite run
        deliveries = 0
        while deliveries < budget:
            fresh = log.read(after, 1000)
            if fresh:
                after = fresh[-1].position
                queue.extend(fresh)
            if not queue:
                self.clock.t += RETRY_CAP_SECONDS + 1  # past any backoff
                if engine.run_due_retries():
                    continue
                return None, deliveries
            batch = self._take(queue, order)
            deliveries += 1
            events = [decode(r.data) for r in batch]
            runaway = next((ev.correlation_id for ev in events
                            if not ev.terminal and ev.steps > self.kit.max_steps), None)
            if runaway is not None:
                return runaway, deliveries
            again, crash = self._faults_for(engine, batch, events)
            handed_back = self._handle(engine, batch, log, crashables, crash)
            if handed_back is None:  # the process died: a new one takes over, the stream delivers again
                engine = self._engine(services)
                queue[0:0] = batch
                continue
            queue.extend(handed_back)
            queue.extend(again)
        return "(delivery budget spent)", deliveries

    def _take(self, queue: list[LogRecord], order: list[int]) -> list[LogRecord]:
        """The next batch: up to the case's batch size, picked from the queue in the case's order."""
        batch: list[LogRecord] = []
        while queue and len(batch) < self.case.batch:
            pick = order.pop(0) if order else 0
            batch.append(queue.pop(pick % len(queue)))
        return batch

    def _handle(self, engine: Engine, batch: list[LogRecord], log: ReadableLog, crashables: tuple,
                crash: bool) -> list[LogRecord] | None:
        """One delivery: the records the engine handed back (a lease still held, a record not due
        yet), or None when a crash was armed and the simulated process died in it."""
        for c in crashables:
            c.armed = crash
        self.recorder.execution += 1
        inbound = [Inbound(r.position, r.data, log.name, r.position) for r in batch]
        try:
            result = engine.handle(inbound)
        except SimulatedCrash:
            self.crashed.add(self.recorder.execution)
            self.clock.t += LEASE_SECONDS + 1  # the dead worker's leases run out
            return None
        finally:
            for c in crashables:
                c.armed = False
        failed = set(result.failed_item_ids)
        if failed:  # delivered again, a bit later
            self.clock.t += 1.0
        return [r for r in batch if r.position in failed]

    def _faults_for(self, engine: Engine, batch: list[LogRecord],
                    events: list[Event]) -> tuple[list[LogRecord], bool]:
        """Apply the schedule's aborts, crashes and duplicates to the records about to be delivered
        (``raise`` faults are the recorder's, when the do action runs)."""
        again: list[LogRecord] = []
        crash = False
        for rec, ev in zip(batch, events):
            i = self.index.get(ev.correlation_id)
            if i is None or ev.terminal:
                continue
            for kind in ("abort", "crash", "duplicate"):
                if (kind, i, ev.steps) not in self.pending:
                    continue
                self.pending.discard((kind, i, ev.steps))
                if kind == "abort":
                    try:
                        engine.abort(ev.correlation_id, reason="aborted by the test adversary")
                    except HandlerError:
                        continue  # it ended meanwhile
                    self.aborted.add(ev.correlation_id)
                elif kind == "crash":
                    crash = True
                else:
                    again.append(rec)
                self._applied(kind, i, ev)
        return again, crash

    def _applied(self, kind: str, i: int, ev: Event) -> None:
        self.applied.append(AppliedFault(kind, i, ev.correlation_id, ev.steps, ev.retries, ev.state, ev.event))

    def _result(self, services: Any, log: ReadableLog, exceeded: str | None, deliveries: int) -> Run:
        records = [decode(r.data) for r in log.read(None, 1_000_000)]
        engine = self._engine(services)
        machines = []
        for i, (cid, ctx) in enumerate(zip(self.ids, self.case.contexts)):
            own = [e for e in records if e.correlation_id == cid]
            machines.append(MachineOutcome(i, cid, ctx, engine.status(cid), fold(None, own) if own else None,
                                           cid in self.aborted))
        for cid, steps in self.recorder.raised:  # raise faults that met their do action
            key = ("raise", self.index[cid], steps)
            if key in self.pending:
                self.pending.discard(key)
                ev = next((e for e in records if e.correlation_id == cid and e.steps == steps), None)
                if ev is not None:
                    self._applied("raise", self.index[cid], ev)
        return Run(self.case, self.faulty, tuple(machines), tuple(self.recorder.invocations), tuple(records),
                   tuple(self.applied), frozenset(self.crashed), exceeded, self.db_path, self.workdir, deliveries,
                   self.kit.definitions)
