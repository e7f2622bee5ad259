"""The dispatch engine: one step of a machine per record, written against the service interfaces only.

For each record of a batch: decode it (a poison record is parked and the
batch goes on), take the machine's lease (its fence token goes to the
actions), skip it if the step already ran, run exit -> transition action ->
entry -> do, follow ``local`` transitions in the same invocation, and buffer
the next record. At the end of the batch every next record goes out in one
``append``; only then are the steps marked done, snapshots written on the
configured cadence, and the leases released. A crash anywhere before the
mark means the step runs again (at-least-once, nothing lost); a step that was
marked never runs again.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time as _time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventlog.codec import MAX_SEEN, decode, encode
from eventlog.errors import BackendError, ContextValueError, DecodeError, RecordTooLarge
from eventlog.event import ABORTED, COMPLETED, FAILED, RETRY, START, STEP, Event
from eventlog.log import OutRecord
from eventlog.settings import Settings
from projections.actions import ActionCallable, resolve
from projections.checkpoints import BatchCheckpoints
from projections.definition import Definitions, MachineDef
from projections.errors import ProjectionError
from projections.state import MachineState, Snapshot, decode_snapshot, encode_snapshot

from .authority import LogAuthority
from .backoff import full_jitter
from .batch import Batch
from .children import Children, join_record
from .context import ActionContext
from .environment import Environment
from .errors import HandlerError, LeaseBusy, NoTransition, PoisonRecord
from .gate import DONE, TRIED, Admission, Ending, Gate
from .metrics import MetricBuffer
from .metrics.failovers import watch as watch_failovers
from .retries import ScheduledRetry
from .sending import Sent, sent_event
from .services import Services

step_log = logging.getLogger("fsmlog.step")
log = logging.getLogger("fsmlog.engine")

LOCAL_CHAIN_LIMIT = 100  # local transitions followed in one invocation before going through the log
JOIN_ATTEMPTS = 6  # tries of a join against failing sources (backoff 0.05 s doubling, at most 1 s apart)

# (dotted path, resolved action) -> the callable the engine runs in its place; see Engine
ActionWrapper = Callable[[str, ActionCallable], ActionCallable]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One record of a batch as a trigger received it."""

    position: str  # where it sits in its source (sequence number, offset, message id)
    data: bytes
    source: str  # the source's name (ARN or sqlite: URL)
    item_id: str  # what Lambda's batchItemFailures names (sequence number or message id)


@dataclass
class BatchResult:
    handled: int = 0
    parked: int = 0
    skipped: int = 0
    failed_item_ids: list[str] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Step:
    """A step that ran; its output waits for the batch's append."""

    inbound: Inbound
    record: Event
    token: int
    out: Event | None = None  # the next record for the log
    out_data: bytes = b""
    retry: Event | None = None  # or a retry record for the retry source
    retry_data: bytes = b""
    retry_due: float = 0.0
    outcome: str = ""
    error: str | None = None
    started: float = 0.0
    local_steps: int = 0
    side: str = "primary"  # the cache side whose lease it ran under
    children_starter: Any = None  # obj["children"] of the step (handlers.children)
    children: list[bytes] = field(default_factory=list)  # child machines' start records, for the append

    @property
    def mark(self) -> str:
        """What the commit will mark: the step completed (``DONE``) or its retry was scheduled (``TRIED``)."""
        return DONE if self.out is not None else TRIED


def _seen(cur: Event) -> tuple[str, ...]:
    """The event ids a record passes on: its own (an event sent from outside) joins those before it."""
    if cur.event_id is None or cur.event_id in cur.seen:
        return cur.seen
    return (*cur.seen, cur.event_id)[-MAX_SEEN:]


# a record of a batch, parsed: (as delivered, decoded, its machine, its user context)
Parsed = tuple[Inbound, Event, MachineDef, dict[str, Any]]


class _ActionFailed(Exception):
    def __init__(self, at: Event, error: BaseException, action: str):
        self.at = at
        self.error = error
        self.action = action


class Engine:
    def __init__(
        self,
        definitions: Definitions,
        services: Services,
        settings: Settings,
        *,
        clock: Callable[[], float] = _time.time,
        sleep: Callable[[float], None] = _time.sleep,
        rng: random.Random | None = None,
        worker_id: str | None = None,
        on_step: Callable[[Event, Event | None, str], None] | None = None,
        action_wrapper: ActionWrapper | None = None,
        keep_leases_in_thread: bool = True,
    ):
        """``on_step(record, next_or_retry, outcome)`` is called after each step is committed.

        ``action_wrapper(dotted, action)`` returns what runs in place of each action: it is
        called once per dotted path, when the engine first resolves it, and the result is cached
        (a test harness records calls or injects faults through it; None costs nothing).
        ``keep_leases_in_thread`` renews leases from a background thread while actions run; with
        an injected ``clock`` turn it off, so leases are renewed between records on that clock.
        """
        self.definitions = definitions
        self.services = services
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.authority = LogAuthority(services.log, services.checkpoints)
        self.gate = Gate(services.cache, self.worker_id, settings.LEASE_SECONDS, settings.DEDUPE_SECONDS,
                         authority=self.authority.last_records)
        self.keep_leases_in_thread = keep_leases_in_thread  # read by each batch's LeaseKeeper
        self.metrics = MetricBuffer()
        # failovers and recoveries of every source pair, moved into ``metrics`` at each flush
        self.failovers = watch_failovers([services.log, services.checkpoints, services.retries, services.cache,
                                          services.environment, services.metrics, services.dead_letters])
        self.on_step = on_step
        self.debug = bool(settings.DEBUG)
        self.environment = Environment(services.environment)
        self._action_wrapper = action_wrapper
        self._actions: dict[str, ActionCallable] = {}
        self._warn_timers_without_due_times()

    def _warn_timers_without_due_times(self) -> None:
        """A retry source that cannot hold a due time (Kinesis, SNS) cannot keep a timer: say so at start."""
        if getattr(self.services.retries, "delays", True):
            return
        timed = sorted(m.name for m in self.definitions.machines.values()
                       if any(s.timeout is not None or any(t.delay for t in s.transitions) for s in m.states))
        if timed:
            log.warning("machines %s use delay/timeout, but the retry source %s cannot hold a due time: their "
                        "waits end only at `fsmlog replay scan --redispatch`; set PRIMARY_RETRY_SOURCE to "
                        "DynamoDB or SQS", ", ".join(timed), self.services.retries.name)

    # ---------------------------------------------------------------- starting and stopping machines

    def start(self, machine: str, context: dict[str, Any] | None = None, correlation_id: str | None = None) -> str:
        return self.start_many(machine, [context or {}], [correlation_id] if correlation_id else None)[0]

    def start_many(
        self, machine: str, contexts: Sequence[dict[str, Any]], correlation_ids: Sequence[str] | None = None,
        *, current_state: str | None = None, current_event: str | None = None, delay: float = 0.0,
    ) -> list[str]:
        """Append one start record per context, in one append call.

        ``current_state`` / ``current_event`` start the machines elsewhere than the initial state (the
        older framework's arguments): in that state, firing that event (None: its entry and do actions).
        ``delay`` seconds > 0 makes the start a durable timer: it waits in the retry source first."""
        mdef = self.definitions.machine(machine)
        state = mdef.initial.name if current_state is None else current_state
        if not mdef.accepts(state, current_event):
            known = ", ".join(s.name for s in mdef.states)
            raise HandlerError(f"machine {machine!r}: cannot start in state {state!r} firing event "
                               f"{current_event!r}: no such state or no such transition (states: {known})")
        now = self.clock()
        due = now + delay if delay > 0 else None
        ids = list(correlation_ids) if correlation_ids else [uuid.uuid4().hex for _ in contexts]
        if len(ids) != len(contexts):
            raise HandlerError(f"{len(contexts)} context(s) but {len(ids)} correlation id(s); give one id each")
        records = []
        for cid, ctx in zip(ids, contexts):
            ev = Event.create(START, cid, machine, mdef.hash, 0, 0, state, current_event, now, ctx, due=due)
            records.append(OutRecord(cid, encode(ev)))
        self._register(ids)
        if due is not None:  # the timer first: a waiting record in the log always has one
            self.services.retries.schedule([ScheduledRetry(r.key, r.data, due) for r in records])
        self.services.log.append(records)
        self.metrics.count("MachinesStarted", len(records), {"machine": machine})
        self.flush_metrics()
        return ids

    def _register(self, cids: Sequence[str]) -> None:
        """Tell the cache these machines are new, so their start records need no log read. Best effort:
        a worker that finds the cache knowing nothing reads the log instead."""
        try:
            self.gate.register(cids)
        except BackendError as exc:
            log.warning("could not register %d new machine(s) with the cache: %s", len(cids), exc)
            self.metrics.count("ServiceErrors")

    def send_event(self, correlation_id: str, event: str, data: Any = None, event_id: str | None = None) -> Sent:
        """Append an event sent from outside to a machine waiting in a ``wait: true`` state
        (``handlers.sending``). Raises ``EventRefused`` (naming the state and the event) when the machine
        cannot take it; the same ``event_id`` sent again appends nothing."""
        state = self.status(correlation_id)
        mdef = self.definitions.machines.get(state.machine) if state is not None else None
        if state is not None and mdef is None:
            self.definitions.machine(state.machine)  # UnknownMachine, naming the loaded ones
        sent = sent_event(state, mdef, correlation_id, event, data, event_id, now=self.clock())
        if sent.record is not None:
            self.services.log.append([OutRecord(correlation_id, encode(sent.record))])
            self.metrics.count("EventsSent", 1, {"machine": sent.record.machine})
            self.flush_metrics()
        return sent

    def status(self, correlation_id: str) -> MachineState | None:
        """Latest snapshot plus, where the log can be read back, the records after it on every side."""
        return self.authority.state(correlation_id)

    def load_snapshot(self, correlation_id: str) -> Snapshot | None:
        data = self.services.checkpoints.load(correlation_id)
        return decode_snapshot(data) if data else None

    def abort(self, correlation_id: str, reason: str = "") -> Event:
        """Stop a running machine: no further step is admitted, then, holding its lease (so no step
        is in flight), record the abort — unless the machine ended meanwhile."""
        state = self.status(correlation_id)
        if state is None:
            raise HandlerError(f"no machine with id {correlation_id!r} in {self.services.log.name}")
        if state.terminal:
            raise HandlerError(
                f"machine {state.machine!r} ({correlation_id}) already ended: {state.status} in state {state.state!r}"
            )
        self.gate.abort(correlation_id)  # from now on, every worker admits no step of it
        adm = self._admit(state.last)  # waits for a step in flight to commit (or raises LeaseBusy)
        token = adm.token
        assert token is not None  # _admit returns only an admission that took the lease
        try:
            state = self.status(correlation_id)
            assert state is not None  # it had records a moment ago; records are never removed
            if state.terminal:
                raise HandlerError(
                    f"machine {state.machine!r} ({correlation_id}) ended while being aborted: {state.status} "
                    f"in state {state.state!r}"
                )
            ev = state.last.evolve(
                kind=ABORTED, time=self.clock(), error_type="Aborted", error_message=reason or "aborted by an operator",
                upgraded_from=None,
            )
            positions = self.services.log.append([OutRecord(correlation_id, encode(ev))])
        finally:
            self.gate.release(correlation_id, token)
        self._save_snapshot(ev, positions[0])
        if ev.parent is not None:  # an aborted child has ended: its parent may be done waiting
            self._join(ev.parent)
        self.metrics.count("MachinesAborted", 1, {"machine": ev.machine})
        self.flush_metrics()
        return ev

    # ---------------------------------------------------------------- the batch

    def handle(self, records: Sequence[Inbound], deadline: float | None = None) -> BatchResult:
        """Handle a batch in order (``handlers.batch``). Never raises for a bad record: it is parked
        and the batch goes on.

        ``deadline`` (a ``clock()`` time, e.g. from Lambda's remaining time) stops the batch early:
        records not started by then are reported failed, so they are delivered again instead of
        being cut off by the function's timeout. Leases are held from admission to the commit and
        renewed meanwhile; a step whose lease was lost is not appended.
        """
        result = BatchResult()
        try:
            Batch(self, result, deadline).run(records)
        finally:
            self.flush_metrics()
        return result

    def _step_key(self, record: Event) -> tuple[str, int, int, int]:
        """What the gate admits: the attempt, and how long ago its record was written (its token floor)."""
        elapsed_ms = int(max(0.0, self.clock() - record.time) * 1000)
        return record.correlation_id, record.steps, record.retries, elapsed_ms

    def _count_admission(self, record: Event, adm: Admission) -> None:
        if adm.side != "primary":  # a lease the primary cannot order: bounded overlap, counted
            self.metrics.count("SplitLeases", 1, {"machine": record.machine, "side": adm.side})
            log.warning("%s: lease taken on the %s cache (token %s): the primary was unreachable",
                        record.describe(), adm.side, adm.token)

    def _lease_lost(self, step: _Step, result: BatchResult) -> None:
        """The step ran but its lease is gone: its outcome is not appended; the record goes back."""
        rec = step.record
        self.metrics.count("LeaseLost", 1, {"machine": rec.machine, "side": step.side})
        log.warning("%s: lease (token %d) lost before the commit; its outcome is dropped and the record "
                    "handed back", rec.describe(), step.token)
        result.failed_item_ids.append(step.inbound.item_id)

    def _parse_batch(self, records: Sequence[Inbound], result: BatchResult) -> list[Parsed]:
        """Decode and check every record; park the poison ones; drop terminal records and duplicates."""
        todo: list[Parsed] = []
        seen: set[tuple[str, int, int, str | None]] = set()
        oldest: float | None = None  # the time of the oldest record the batch has to handle
        for inbound in records:
            try:
                record, mdef, ctx = self._parse(inbound)
            except PoisonRecord as exc:
                try:
                    self._park(inbound, str(exc), result)
                except BackendError as park_exc:  # hand it back; the rest of the batch goes on
                    log.warning("could not park the record at %s %s: %s", inbound.source, inbound.position,
                                park_exc)
                    self.metrics.count("ServiceErrors")
                    result.failed_item_ids.append(inbound.item_id)
                continue
            key = (record.correlation_id, record.steps, record.retries, record.event_id)
            if record.terminal or mdef is None or ctx is None or key in seen:  # (only terminal ones lack mdef)
                if key in seen:  # the same attempt twice in one batch
                    self.metrics.count("DuplicateDeliveries", 1, {"machine": record.machine})
                result.skipped += 1
                continue
            if self._idle(record, mdef):  # waits: its timer's copy (or an event from outside) moves it on
                result.skipped += 1
                result.outcomes.append({"correlation_id": record.correlation_id, "outcome": "waiting",
                                        "steps": record.steps, "due": record.due})
                waiting_in = mdef.state(record.state)
                if record.event is None and waiting_in is not None and waiting_in.children:
                    self._join(record.correlation_id)  # delivered again (`replay scan --redispatch`): join now
                continue
            seen.add(key)  # another event sent for the same step goes on, to be judged in the batch
            todo.append((inbound, record, mdef, ctx))
            since = max(record.time, record.due or 0.0)  # a timer's record is late from its due time on
            oldest = since if oldest is None else min(oldest, since)
        if oldest is not None:  # how far behind the log the workers are (IteratorAge, from the records)
            self.metrics.gauge("OldestRecordAgeMs", round(max(0.0, self.clock() - oldest) * 1000))
        return todo

    def _idle(self, record: Event, mdef: MachineDef) -> bool:
        """Whether a record only says the machine waits: its due time lies ahead, or it sits in a wait
        state with no event to fire. Nothing runs for it and no lease is taken."""
        if record.waiting(self.clock()):
            return True
        if record.event is not None or record.steps == 0:  # (steps 0: a start, which runs the entry action)
            return False
        st = mdef.state(record.state)
        return st is not None and st.wait

    def late_event(self, inbound: Inbound, record: Event, result: BatchResult, applied: Event | None) -> bool:
        """An event sent from outside whose step already ran on something else (another event, the
        timeout) is parked with the reason, so it is seen not to have been applied. False when it was
        applied after all (a duplicate send or a redelivery), or nothing can tell."""
        if record.event_id is None or applied is None:
            return False
        if record.event_id in applied.seen or record.event_id == applied.event_id:
            return False
        moved = f"now {applied.kind} in state {applied.state!r} at step {applied.steps}"
        try:
            self._park(inbound, f"{record.describe()} (event id {record.event_id}): arrived after step "
                       f"{record.steps} had run on another event; machine {moved}", result)
        except BackendError as exc:
            log.warning("could not park the late event at %s %s: %s", inbound.source, inbound.position, exc)
            self.metrics.count("ServiceErrors")
            result.failed_item_ids.append(inbound.item_id)
        self.metrics.count("LateEvents", 1, {"machine": record.machine})
        return True

    def _parse(self, inbound: Inbound) -> tuple[Event, MachineDef | None, dict | None]:
        try:
            record = decode(inbound.data)
        except DecodeError as exc:
            raise PoisonRecord(f"undecodable record at {inbound.source} position {inbound.position}: {exc}") from None
        if record.terminal:
            return record, None, None
        try:
            mdef = self.definitions.machine(record.machine)
            if record.definition_hash != mdef.hash:
                mdef.check_record(record.state, record.event, record.definition_hash)
        except ProjectionError as exc:
            raise PoisonRecord(f"{record.describe()}: {exc}") from None
        st = mdef.state(record.state)
        if st is None:
            raise PoisonRecord(f"{record.describe()}: machine {mdef.name!r} has no state {record.state!r}")
        if record.event is not None and st.transition(record.event) is None:
            raise PoisonRecord(
                f"{record.describe()}: state {record.state!r} of machine {mdef.name!r} has no transition on "
                f"event {record.event!r}"
            )
        try:
            ctx = record.context
        except DecodeError as exc:
            raise PoisonRecord(f"{record.describe()}: {exc}") from None
        return record, mdef, ctx

    def _park(self, inbound: Inbound, reason: str, result: BatchResult) -> None:
        self.services.dead_letters.park(reason, inbound.source, inbound.position, inbound.data, self.clock())
        self.metrics.count("PoisonRecords")
        result.parked += 1
        result.outcomes.append({"position": inbound.position, "outcome": "parked", "reason": reason})
        log.warning("parked record at %s %s: %s", inbound.source, inbound.position, reason)

    # ---------------------------------------------------------------- one step

    def _admit(self, record: Event, budget: float | None = None,
               on_wait: Callable[[], None] | None = None) -> Admission:
        deadline = None
        cut = False  # the wait ends at ``budget``, before LEASE_WAIT_SECONDS
        delay = 0.02
        while True:
            if on_wait is not None:
                on_wait()
            adm = self.gate.begin(*self._step_key(record))
            if adm.token is not None:
                return adm
            now = self.clock()
            if deadline is None:
                deadline = now + self.settings.LEASE_WAIT_SECONDS
                if budget is not None and budget < deadline:
                    deadline, cut = budget, True
            if now >= deadline:
                raise LeaseBusy(
                    f"machine {record.machine!r} ({record.correlation_id}) is leased by another worker; "
                    f"step {record.steps} will be retried",
                    for_held_leases=cut,
                )
            self.sleep(min(delay, max(0.0, deadline - now)))
            delay = min(delay * 2, 0.5)

    def _run(self, inbound: Inbound, record: Event, mdef: MachineDef, ctx: dict, adm: Admission,
             still_held: Callable[[], bool] | None = None) -> _Step:
        """Run one admitted record's step (and any local steps after it, while ``still_held()``) for the
        commit."""
        cid = record.correlation_id
        assert adm.token is not None  # only a record admitted under a lease runs
        step = _Step(inbound, record, adm.token, started=self.clock(), side=adm.side)
        max_retries = mdef.max_retries if mdef.max_retries is not None else self.settings.MAX_RETRIES
        upgraded = record.definition_hash if record.definition_hash != mdef.hash else None
        obj = {
            "source": inbound.source,
            "position": inbound.position,
            "fence_token": adm.token,
            "lease_owner": self.worker_id,
            "idempotency_key": f"{cid}:{record.steps}",
            "environment": self.environment,
        }
        try:
            out = self._execute(mdef, record, ctx, obj, max_retries, step, still_held)
            if step.children_starter is not None and step.children_starter.starts:
                step.children = [encode(ev) for ev in step.children_starter.starts]
        except _ActionFailed as failure:
            self._on_failure(step, mdef, failure, max_retries)
        else:
            if upgraded:
                out = out.evolve(upgraded_from=upgraded)
                self.metrics.count("DefinitionUpgrades", 1, {"machine": mdef.name})
            self._set_out(step, out)
        return step

    def _aborted(self, inbound: Inbound, record: Event, adm: Admission) -> _Step:
        """The abort record of a machine flagged aborted, for the batch's append: whoever holds the lease
        records the abort, so an operator's abort that could not wait for the lease still ends it."""
        assert adm.token is not None  # recorded only under the lease
        step = _Step(inbound, record, adm.token, started=self.clock(), side=adm.side)
        self._set_out(step, record.evolve(kind=ABORTED, time=self.clock(), error_type="Aborted",
                                          error_message="aborted by an operator", upgraded_from=None))
        return step

    def _action(self, dotted: str) -> ActionCallable:
        fn = self._actions.get(dotted)
        if fn is None:
            fn = resolve(dotted)
            if self._action_wrapper is not None:
                fn = self._action_wrapper(dotted, fn)
            self._actions[dotted] = fn
        return fn

    def _call(self, dotted: str | None, ctx: ActionContext, obj: dict, at: Event) -> Any:
        if not dotted:
            return None
        try:
            return self._action(dotted)(ctx, obj)
        except Exception as exc:  # an action's failure is the machine's, never the batch's
            raise _ActionFailed(at, exc, dotted) from exc

    def _execute(
        self, mdef: MachineDef, record: Event, data: dict, obj: dict, max_retries: int, step: _Step,
        still_held: Callable[[], bool] | None = None,
    ) -> Event:
        """Run the record's step (and any local steps after it); return the record to append."""
        cur = record
        facts = {
            "correlation_id": record.correlation_id,
            "machine_name": mdef.name,
            "steps": record.steps,
            "retries": record.retries,
            "max_retries": max_retries,
            "current_state": record.state,
            "current_event": record.event,
        }
        ctx = ActionContext(data, facts)
        step.children_starter = obj["children"] = Children(self.definitions, record.correlation_id, obj, ctx,
                                                           self.clock)
        for _ in range(LOCAL_CHAIN_LIMIT):
            # _parse checked the record's state and event; loading checked every transition's target
            source = mdef.state(cur.state)
            assert source is not None
            if cur.event is None:  # start (or a retry of it): the initial state's entry and do
                target = source
                self._call(target.entry_action, ctx, obj, cur)
            else:
                tr = source.transition(cur.event)
                assert tr is not None
                entered = mdef.state(tr.target)
                assert entered is not None
                target = entered
                self._call(source.exit_action, ctx, obj, cur)
                self._call(tr.action, ctx, obj, cur)
                facts["current_state"] = target.name
                self._call(target.entry_action, ctx, obj, cur)
            facts["current_state"] = target.name
            if target.wait:  # no do action: wait for an event from outside (or the timeout)
                steps = cur.steps + 1
                now = self.clock()
                if target.timeout is None:
                    return self._record(STEP, cur, target.name, None, steps, now, ctx)
                return self._record(STEP, cur, target.name, target.on_timeout, steps, now, ctx,
                                    due=now + target.timeout)
            nxt_event = self._call(target.do_action, ctx, obj, cur)
            steps = cur.steps + 1
            now = self.clock()
            if target.final or nxt_event is None:
                return self._record(COMPLETED, cur, target.name, None, steps, now, ctx)
            if not isinstance(nxt_event, str):
                err = NoTransition(
                    f"machine {mdef.name!r}, state {target.name!r}: do_action {target.do_action} returned "
                    f"{nxt_event!r} ({type(nxt_event).__name__}); it must return an event name or None"
                )
                return self._failed(cur, target.name, None, steps, now, ctx, err)
            tr2 = target.transition(nxt_event)
            if tr2 is None:
                known = ", ".join(t.event for t in target.transitions) or "none"
                err = NoTransition(
                    f"machine {mdef.name!r}, state {target.name!r} has no transition on event {nxt_event!r} "
                    f"(returned by {target.do_action}); its events: {known}"
                )
                return self._failed(cur, target.name, nxt_event, steps, now, ctx, err)
            try:
                delay = (tr2.delay or 0.0) + ctx.take_delay()
            except ValueError as exc:
                return self._failed(cur, target.name, nxt_event, steps, now, ctx, NoTransition(
                    f"machine {mdef.name!r}, state {target.name!r}: {target.do_action} set {exc}"))
            if delay > 0:  # a durable timer: the step waits in the retry source's due-time store
                return self._record(STEP, cur, target.name, nxt_event, steps, now, ctx, due=now + delay)
            nxt = self._record(STEP, cur, target.name, nxt_event, steps, now, ctx)
            if nxt.kind != STEP or not tr2.local:
                return nxt
            if still_held is not None and not still_held():  # lost the lease: its new holder goes on
                return nxt
            # a local transition: run the next step here, no log round trip
            step.local_steps += 1
            cur = nxt
            facts.update(steps=steps, retries=0, current_state=target.name, current_event=nxt_event)
            obj["idempotency_key"] = f"{record.correlation_id}:{steps}"
        return cur

    def _record(self, kind: str, cur: Event, state: str, event: str | None, steps: int, now: float,
                ctx: ActionContext, due: float | None = None) -> Event:
        try:
            return Event.create(kind, cur.correlation_id, cur.machine, self.definitions.machine(cur.machine).hash,
                                steps, 0, state, event, now, ctx, due=due, seen=_seen(cur), parent=cur.parent)
        except ContextValueError as exc:  # refused at the step that put it there: fail, do not retry
            return self._failed(cur, state, event, steps, now, None, exc)

    def _failed(self, cur: Event, state: str, event: str | None, steps: int, now: float,
                ctx: ActionContext | None, exc: BaseException) -> Event:
        raw = cur.context_raw
        if ctx is not None:
            try:
                raw = Event.create(FAILED, cur.correlation_id, cur.machine, "", 0, 0, "", None, 0.0, ctx).context_raw
            except ContextValueError:
                pass
        return Event(FAILED, cur.correlation_id, cur.machine, self.definitions.machine(cur.machine).hash, steps,
                     0, state, event, now, raw,
                     type(exc).__name__, str(exc), seen=_seen(cur), parent=cur.parent)

    def _on_failure(self, step: _Step, mdef: MachineDef, failure: _ActionFailed, max_retries: int) -> None:
        at, exc = failure.at, failure.error
        now = self.clock()
        self.metrics.count("ActionErrors", 1, {"machine": mdef.name})
        step.error = f"{type(exc).__name__}: {exc}"
        if at.retries < max_retries:
            attempt = at.retries + 1
            delay = full_jitter(attempt, self.settings.RETRY_BASE_SECONDS, self.settings.RETRY_CAP_SECONDS, self.rng)
            retry = at.evolve(kind=RETRY, retries=attempt, time=now, error_type=type(exc).__name__,
                              error_message=f"{failure.action} failed: {exc}"[:2000])  # names the action
            if at.steps > step.record.steps:
                # behind a local transition: the retry goes to the log itself (at once, no backoff), so
                # the log records the steps the chain completed and never falls behind the marks
                self.metrics.count("LocalChainsCut", 1, {"machine": mdef.name})
                self._set_out(step, retry)
                step.outcome = "retry"
                return
            try:
                step.retry, step.retry_data, step.retry_due = retry, encode(retry), now + delay
            except RecordTooLarge as too_large:  # the context outgrew the log inside a local chain
                step.retry = None
                self._set_out(step, retry.evolve(kind=FAILED, error_type=type(too_large).__name__,
                                                 error_message=str(too_large)))
                return
            step.outcome = "retry"
            return
        failed = Event(FAILED, at.correlation_id, at.machine, at.definition_hash, at.steps, at.retries, at.state,
                       at.event, now, at.context_raw, type(exc).__name__,
                       f"{failure.action} failed after {at.retries} retries: {exc}"[:4000], seen=_seen(at),
                       parent=at.parent)
        self._set_out(step, failed)

    def _set_out(self, step: _Step, out: Event) -> None:
        try:
            data = encode(out)
        except RecordTooLarge as exc:
            out = Event(FAILED, out.correlation_id, out.machine, out.definition_hash, out.steps, out.retries,
                        out.state, out.event, out.time, step.record.context_raw, type(exc).__name__, str(exc),
                        parent=out.parent)
            data = encode(out)
        step.out, step.out_data = out, data
        step.outcome = out.kind

    # ---------------------------------------------------------------- end of batch

    def _commit(self, steps: list[_Step], ends: list[Ending], result: BatchResult) -> None:
        """Append the batch's next records in one call, schedule its retries, then mark the
        attempts handled and release every lease (one round trip where the cache can batch)."""
        steps, ends = self._start_timers(steps, ends, result)
        outs = [(s, s.out) for s in steps if s.out is not None]
        retries = [(s, s.retry) for s in steps if s.retry is not None]
        kids = [OutRecord(decode(d).correlation_id, d) for s, _ in outs for d in s.children]
        if kids:
            self._register([k.key for k in kids])
        try:
            positions = self.services.log.append([OutRecord(out.correlation_id, s.out_data) for s, out in outs]
                                                 + kids)[:len(outs)] if outs else []
        except BackendError as exc:
            log.error("could not append the batch's %d record(s): %s", len(outs), exc)
            self.metrics.count("ServiceErrors")
            result.failed_item_ids.extend(s.inbound.item_id for s in steps)
            self._end(ends + [self._ending(s, None) for s in steps])
            return
        scheduled = True
        if retries:
            try:
                self.services.retries.schedule(
                    [ScheduledRetry(retry.correlation_id, s.retry_data, s.retry_due) for s, retry in retries]
                )
            except BackendError as exc:  # those records are delivered again; the appended ones stand
                log.error("could not schedule %d retr(ies): %s", len(retries), exc)
                self.metrics.count("ServiceErrors")
                result.failed_item_ids.extend(s.inbound.item_id for s, _ in retries)
                scheduled = False
        self._end(ends + [self._ending(s, DONE if s.out is not None else (TRIED if scheduled else None))
                          for s in steps])
        self._joins([out for _, out in outs])
        pos_of = {id(s): p for (s, _), p in zip(outs, positions)}
        every = max(1, int(self.settings.SNAPSHOT_EVERY))
        self._save_snapshots([(out, pos_of[id(s)]) for s, out in outs
                              if out.terminal or out.steps // every != s.record.steps // every])
        for s in steps:
            out = s.out
            if out is None and not scheduled:
                continue
            self._account(s)
            result.handled += 1
            result.outcomes.append({"correlation_id": s.record.correlation_id, "outcome": s.outcome,
                                    "steps": out.steps if out else s.record.steps})

    def _start_timers(self, steps: list[_Step], ends: list[Ending], result: BatchResult
                      ) -> tuple[list[_Step], list[Ending]]:
        """Put every next record that waits (``delay``, ``timeout``) in the retry source's due-time store
        before it reaches the log, so a waiting record in the log always has its timer. Steps whose
        timers could not be stored are handed back (they run again), not appended."""
        timers = [(s, s.out, s.out.due) for s in steps
                  if s.out is not None and s.out.due is not None and not s.out.terminal]
        if not timers:
            return steps, ends
        try:
            self.services.retries.schedule([ScheduledRetry(out.correlation_id, s.out_data, due)
                                            for s, out, due in timers])
        except BackendError as exc:
            log.error("could not store %d timer(s): %s", len(timers), exc)
            self.metrics.count("ServiceErrors")
            result.failed_item_ids.extend(s.inbound.item_id for s, _, _ in timers)
            dropped = {id(s) for s, _, _ in timers}
            return [s for s in steps if id(s) not in dropped], ends + [self._ending(s, None) for s, _, _ in timers]
        for _, out, _ in timers:
            self.metrics.count("TimersStarted", 1, {"machine": out.machine})
        return steps, ends

    def _joins(self, outs: list[Event]) -> None:
        """After the append: a child that ended, or a parent that reached ``wait: children``, may complete
        a join (``handlers.children``); the parent is sent ``children_done`` when every child has ended."""
        parents = {out.parent for out in outs if out.terminal and out.parent is not None}
        for out in outs:
            if out.kind == STEP and (out.event is None or out.due is not None) and out.correlation_id not in parents:
                mdef = self.definitions.machines.get(out.machine)
                st = mdef.state(out.state) if mdef is not None else None
                if st is not None and st.children:
                    parents.add(out.correlation_id)
        for parent in sorted(parents):
            self._join(parent)

    def _join(self, parent: str) -> None:
        """Join ``parent``'s children, trying again on a failing source: the end of its last child is the
        only moment that joins by itself, so a join lost to one fault would wait for an operator.
        (Repeating is safe: a join appended twice has one event id, and the gate applies it once.)"""
        from eventlog.retrying import retrying

        try:
            retrying(sleep=self.sleep, attempts=JOIN_ATTEMPTS, retry_if=lambda e: isinstance(e, BackendError))(
                self._join_once, parent)
        except BackendError as exc:  # the parent waits; `replay scan` reports it, a later end joins it
            log.warning("could not join the children of %s after %d tries: %s", parent, JOIN_ATTEMPTS, exc)
            self.metrics.count("ServiceErrors")

    def _join_once(self, parent: str) -> None:
        rec = join_record(self.authority.state(parent), self.definitions, self.authority.state, self.clock())
        if rec is not None:
            self.services.log.append([OutRecord(parent, encode(rec))])
            self.metrics.count("ChildrenJoined", 1, {"machine": rec.machine})

    @staticmethod
    def _ending(s: _Step, mark: str | None) -> Ending:
        """The record's ending; with a mark, up to the furthest attempt its step (and local chain) handled."""
        rec = s.record
        if mark == DONE and s.out is not None and s.out.kind == RETRY and s.out.steps > rec.steps:
            # a failure behind a local transition, retried through the log: its attempt is handled
            return Ending(rec.correlation_id, rec.steps, rec.retries, s.token, TRIED, s.out.steps,
                          s.out.retries - 1)
        if mark == DONE and s.out is not None:  # completed up to the step before its next record
            last = s.out.steps if s.out.kind == FAILED else s.out.steps - 1
            return Ending(rec.correlation_id, rec.steps, rec.retries, s.token, mark, last)
        if mark == TRIED and s.retry is not None:  # the attempt that failed (possibly further down a local chain)
            return Ending(rec.correlation_id, rec.steps, rec.retries, s.token, mark, s.retry.steps,
                          s.retry.retries - 1)
        return Ending(rec.correlation_id, rec.steps, rec.retries, s.token, mark)

    def _end(self, items: list[Ending]) -> None:
        for exc in self.gate.end_many(items):
            log.warning("could not mark steps handled / release leases: %s", exc)
            self.metrics.count("ServiceErrors")

    def _save_snapshots(self, items: list[tuple[Event, str]]) -> None:
        """A batch's snapshots together where the store can (one round trip), else one by one."""
        store = self.services.checkpoints
        if len(items) <= 1 or not isinstance(store, BatchCheckpoints):
            for out, position in items:
                self._save_snapshot(out, position)
            return
        snaps = [Snapshot(MachineState(out), position, out.definition_hash) for out, position in items]
        try:
            store.save_many([(out.correlation_id, snap.version, encode_snapshot(snap))
                             for (out, _), snap in zip(items, snaps)])
        except BackendError as exc:  # snapshots only shorten rebuilds; the log has everything
            log.warning("%d snapshot(s) not saved: %s", len(items), exc)
            self.metrics.count("SnapshotErrors")

    def _save_snapshot(self, out: Event, position: str) -> None:
        snap = Snapshot(MachineState(out), position, out.definition_hash)
        try:
            self.services.checkpoints.save(out.correlation_id, snap.version, encode_snapshot(snap))
        except BackendError as exc:  # snapshots only shorten rebuilds; the log has everything
            log.warning("snapshot of %s not saved: %s", out.correlation_id, exc)
            self.metrics.count("SnapshotErrors")

    def _account(self, s: _Step) -> None:
        rec = s.record
        dims = {"machine": rec.machine}
        if s.out is not None:
            self.metrics.count("Transitions", 1 + s.local_steps, dims)
            if s.out.kind == COMPLETED:
                self.metrics.count("MachinesCompleted", 1, dims)
            elif s.out.kind == FAILED:
                self.metrics.count("MachinesFailed", 1, dims)
            elif s.out.kind == ABORTED:
                self.metrics.count("MachinesAborted", 1, dims)
        elif s.retry is not None:
            self.metrics.count("StepsRetried", 1, dims)
        if step_log.isEnabledFor(logging.INFO):
            line = {
                "correlation_id": rec.correlation_id,
                "machine": rec.machine,
                "state": rec.state,
                "event": rec.event,
                "steps": rec.steps,
                "retries": rec.retries,
                "duration_ms": round((self.clock() - s.started) * 1000, 3),
                "outcome": s.outcome,
            }
            if s.out is not None:
                line["next_state"] = s.out.state
                line["next_event"] = s.out.event
            if s.error:
                line["error"] = s.error
            nxt = s.out or s.retry
            if self.debug and nxt is not None:
                line["context"] = repr(nxt.context)
            step_log.info(json.dumps(line, default=str))
        if self.on_step is not None:
            self.on_step(rec, s.out or s.retry, s.outcome)

    def flush_metrics(self) -> None:
        """Send what was counted since the last flush (failovers of the sources too): one ``put``."""
        self.failovers.drain_into(self.metrics)
        try:
            self.metrics.flush(self.services.metrics)
        except BackendError as exc:
            log.warning("metrics not sent: %s", exc)

    # ---------------------------------------------------------------- the retry timer

    def run_due_retries(self, limit: int = 100) -> int:
        """Move retries whose backoff has passed from the retry source into the log."""
        due = self.services.retries.due(self.clock(), limit)
        if not due:
            return 0
        good, handles = [], []
        for item in due:
            try:
                rec = decode(item.data)
            except DecodeError as exc:
                self.services.dead_letters.park(f"undecodable retry record: {exc}", self.services.retries.name,
                                                item.handle, item.data, self.clock())
                self.metrics.count("PoisonRecords")
                handles.append(item.handle)
                continue
            good.append(OutRecord(rec.correlation_id, item.data))
            handles.append(item.handle)
        if good:
            self.services.log.append(good)
        self.services.retries.done(handles)
        self.flush_metrics()
        return len(good)

    def requeue(self, data_items: Iterable[bytes]) -> int:
        """Append retry records delivered by a retry queue's own trigger (SQS) to the log."""
        out = [OutRecord(decode(d).correlation_id, d) for d in data_items]
        if out:
            self.services.log.append(out)
        return len(out)
