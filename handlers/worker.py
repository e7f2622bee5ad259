"""The local worker: plays AWS Lambda's Kinesis trigger (and its retry timer) over the embedded log.

A Lambda receives batches of Kinesis records and returns ``batchItemFailures``;
Lambda then redelivers from the first failed record on. Locally, batches come
from ``SqliteLog.claim_batch``: each worker process claims a contiguous range
of the log, hands it to the engine shaped exactly like a Lambda Kinesis event,
and completes the claim only once every record of it was handled. When some
record fails (a lease held elsewhere, a service error), the records from the
first failed one on are handed over again, with backoff, while the claim is
still ours; if they still fail, the claim is left incomplete, so once its TTL
runs out another worker (or this one) re-claims the whole range. Records
handled in the meantime are skipped by the engine's idempotency flags.

Several worker processes on one file cooperate through the claims (who reads
what) and the engine's leases (who runs which machine). Killing a worker
(even ``kill -9``) loses nothing: its claim expires and is handed out again.

Both sides of the stream: when the stream source has a secondary (records
appended while the primary failed over), the worker claims from every side
that offers claims, in turn, as Lambda has one trigger per stream. Each claim
stays on its side: its records are delivered with that side's own name as
``eventSourceARN`` and their raw positions, and the claim is completed there.
The worker only idles (or, with ``--once``, stops) when no side has anything
claimable. A side that fails to claim does not hold up the other.
"""

from __future__ import annotations

import base64
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventlog.errors import BackendError, ServiceUnavailable, SettingsError
from eventlog.log import EventLog, LogRecord
from eventlog.sides import sides

from .engine import BatchResult, Engine, Inbound
from .triggers.kinesis import handle_kinesis_event

logger = logging.getLogger("fsmlog.worker")

# stop retrying the failed tail of a claim once this share of its TTL is used up,
# so the claim is never handled by two workers because we overran it
CLAIM_BUDGET = 0.8
MAX_IDLE_BACKOFF_S = 5.0
SIDE_WARNING_EVERY_S = 30.0  # a side that cannot be claimed from is warned about at most this often


@dataclass
class WorkerStats:
    """Running totals, for the CLI's live counter and for tests."""

    batches: int = 0
    handled: int = 0
    parked: int = 0
    skipped: int = 0
    failed: int = 0  # records handed back (their claim re-delivers them)
    redelivered: int = 0  # records handed to the engine again after a failure in their batch
    retries_moved: int = 0  # retry records moved from the retry source into the log
    abandoned_claims: int = 0  # claims left to expire because their tail kept failing
    by_side: dict[str, int] = field(default_factory=dict)  # batches claimed per side of the stream


def kinesis_record(rec: LogRecord, source: str, now: float, region: str = "local") -> dict[str, Any]:
    """One log record as Lambda's Kinesis trigger delivers it."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": rec.key,
            "sequenceNumber": rec.position,
            "data": base64.b64encode(rec.data).decode("ascii"),
            "approximateArrivalTimestamp": now,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000000:{rec.position}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "local",
        "awsRegion": region,
        "eventSourceARN": source,
    }


class _Recorder:
    """The engine as the trigger sees it, keeping each ``handle`` result for the worker's counters."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self.results: list[BatchResult] = []

    def handle(self, records: Sequence[Inbound], deadline: float | None = None) -> BatchResult:
        result = self._engine.handle(records, deadline=deadline)
        self.results.append(result)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def claimable_sides(log: EventLog) -> list[tuple[str, Any]]:
    """The sides of the stream the local worker can claim batches from (the embedded log's)."""
    return [(name, backend) for name, backend in sides(log) if callable(getattr(backend, "claim_batch", None))]


class Worker:
    """Claims batches of the embedded log (every side of it) and runs them through the engine until told to stop."""

    def __init__(
        self,
        engine: Engine,
        log: EventLog,
        *,
        consumer: str = "fsmlog-worker",
        batch_size: int = 100,
        claim_ttl_s: float = 60.0,
        poll_s: float = 0.2,
        retry_every_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.engine = engine
        self.log = log
        self.sides = claimable_sides(log)
        if not self.sides:
            raise SettingsError(
                f"the local worker needs the embedded log to claim batches from, but the stream source "
                f"{getattr(log, 'name', log)!r} offers none; use sqlite: stream sources (or deploy the Lambda)")
        claimable = {id(b) for _, b in self.sides}
        # sides the worker cannot claim from: their records reach the engine only through their trigger
        self.unclaimable = [(name, getattr(b, "name", repr(b))) for name, b in sides(log) if id(b) not in claimable]
        for name, target in self.unclaimable:
            logger.warning("worker: the %s stream %s cannot be claimed locally; its records are handled only "
                           "by its own trigger (the Lambda, or `fsmlog dev`)", name, target)
        self._next_side = 0
        self._side_warned: dict[str, float] = {}
        self.consumer = consumer
        self.batch_size = batch_size
        self.claim_ttl_s = float(claim_ttl_s)
        self.poll_s = float(poll_s)
        if retry_every_s is None:
            # poll the retry source about as often as the shortest backoff, within [0.05 s, 1 s]
            base = float(engine.settings.RETRY_BASE_SECONDS or 1.0)
            retry_every_s = min(1.0, max(0.05, base / 2))
        self.retry_every_s = float(retry_every_s)
        self.monotonic = monotonic
        self.sleep = sleep
        self.owner = engine.worker_id
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._last_retry_poll = float("-inf")

    # ---------------------------------------------------------------- one batch

    def _claim(self) -> tuple[str, Any, tuple[str, list[LogRecord]]] | None:
        """The next claim as ``(side, backend, (claim_id, records))``, trying every side in turn from the
        one after the side that served last; ``None`` when no side has anything claimable now.

        A side that fails is skipped (warned about at most every ``SIDE_WARNING_EVERY_S``) while
        another answers; when every side fails, the first side's error is raised."""
        errors: list[tuple[str, Any, BackendError]] = []
        n = len(self.sides)
        result = None
        for i in range(n):
            index = (self._next_side + i) % n
            name, backend = self.sides[index]
            try:
                claimed = backend.claim_batch(self.consumer, self.owner, self.batch_size, self.claim_ttl_s)
            except BackendError as exc:
                errors.append((name, backend, exc))
                continue
            if claimed is not None:
                self._next_side = (index + 1) % n
                result = (name, backend, claimed)
                break
        if errors and len(errors) == n:
            raise errors[0][2]
        for name, backend, err in errors:
            self._warn_side(name, backend, err)
        return result

    def _warn_side(self, name: str, backend: Any, exc: BaseException) -> None:
        now = self.monotonic()
        if now - self._side_warned.get(name, float("-inf")) < SIDE_WARNING_EVERY_S:
            return
        self._side_warned[name] = now
        logger.warning("worker %s: cannot claim from the %s stream %s (%s); serving the other side meanwhile",
                       self.owner, name, getattr(backend, "name", backend), exc)

    def run_once(self) -> BatchResult | None:
        """Claim one batch (from the next side that has one) and handle it; ``None`` when no side of the
        stream has anything claimable right now."""
        found = self._claim()
        if found is None:
            return None
        side, backend, (claim_id, records) = found
        self.stats.by_side[side] = self.stats.by_side.get(side, 0) + 1
        budget_end = self.monotonic() + self.claim_ttl_s * CLAIM_BUDGET
        total = BatchResult()
        pending: Sequence[LogRecord] = records
        delay = 0.05
        first_pass = True
        while True:
            result = self._deliver(pending, getattr(backend, "name", self.log.name))
            if not first_pass:
                self.stats.redelivered += len(pending)
            first_pass = False
            total.handled += result.handled
            total.parked += result.parked
            total.skipped += result.skipped
            total.outcomes.extend(result.outcomes)
            if not result.failed_item_ids:
                backend.complete_claim(claim_id)
                break
            failed = set(result.failed_item_ids)
            first = next(i for i, r in enumerate(pending) if r.position in failed)
            pending = pending[first:]  # Lambda's rule: redeliver from the first failed record on
            if self._stop.is_set() or self.monotonic() + delay > budget_end:
                # leave the claim incomplete: once its TTL runs out it is handed out again, whole
                total.failed_item_ids = [r.position for r in pending]
                self.stats.abandoned_claims += 1
                logger.warning("claim %s on the %s stream: %d record(s) from position %s left for redelivery",
                               claim_id, side, len(pending), pending[0].position)
                break
            self.sleep(delay)
            delay = min(delay * 2, 1.0)
        self.stats.batches += 1
        self.stats.handled += total.handled
        self.stats.parked += total.parked
        self.stats.skipped += total.skipped
        self.stats.failed += len(total.failed_item_ids)
        return total

    def _deliver(self, records: Sequence[LogRecord], source: str | None = None) -> BatchResult:
        """Hand records to the engine through the very function a Lambda's Kinesis trigger runs;
        ``source`` is the name of the side they were claimed from (its trigger's eventSourceARN)."""
        region = self.engine.settings.AWS_REGION or "local"
        now = time.time()
        name = source if source is not None else self.log.name
        event = {"Records": [kinesis_record(r, name, now, region) for r in records]}
        recorder = _Recorder(self.engine)
        response = handle_kinesis_event(event, recorder)
        outcome = BatchResult()
        for result in recorder.results:
            outcome.handled += result.handled
            outcome.parked += result.parked
            outcome.skipped += result.skipped
            outcome.outcomes.extend(result.outcomes)
        outcome.failed_item_ids = [f["itemIdentifier"] for f in response.get("batchItemFailures", [])]
        return outcome

    # ---------------------------------------------------------------- the retry timer

    def run_due_retries(self, force: bool = False) -> int:
        """What the scheduled timer does in AWS: move due retries into the log (every ``retry_every_s``)."""
        now = self.monotonic()
        if not force and now - self._last_retry_poll < self.retry_every_s:
            return 0
        self._last_retry_poll = now
        moved = 0
        while True:
            n = self.engine.run_due_retries(limit=self.batch_size)
            moved += n
            if n < self.batch_size:
                break
        self.stats.retries_moved += moved
        return moved

    # ---------------------------------------------------------------- the loop

    def stop(self) -> None:
        """Ask the loop to stop after the current batch (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(
        self,
        until: Callable[[], bool] | None = None,
        stop_event: threading.Event | None = None,
        on_idle: Callable[[], Any] | None = None,
        on_batch: Callable[[BatchResult], Any] | None = None,
    ) -> WorkerStats:
        """Claim and handle batches until ``until()`` is true, ``stop_event`` is set, ``stop()`` is
        called, or SIGTERM/SIGINT arrives (the batch in hand is finished first; a second signal
        interrupts at once). ``on_idle`` runs whenever nothing was claimable, ``on_batch`` after
        every handled batch."""
        restore = self._install_signals()
        idle_backoff = self.poll_s
        try:
            while not self._should_stop(stop_event):
                try:
                    moved = self.run_due_retries()
                    result = self.run_once()
                except ServiceUnavailable as exc:  # another process held the file too long: wait, go on
                    logger.warning("worker %s: %s; trying again in %.1fs", self.owner, exc, idle_backoff)
                    self._wait(idle_backoff, stop_event)
                    idle_backoff = min(idle_backoff * 2, MAX_IDLE_BACKOFF_S)
                    continue
                idle_backoff = self.poll_s
                if result is not None and on_batch is not None:
                    on_batch(result)
                if until is not None and until():
                    break
                if result is None and not moved:
                    if on_idle is not None:
                        on_idle()
                        if until is not None and until():
                            break
                    self._wait(self.poll_s, stop_event)
        finally:
            restore()
        return self.stats

    def run_until_drained(self) -> WorkerStats:
        """Handle batches until nothing is claimable and no retry is due (``fsmlog worker --once``)."""
        restore = self._install_signals()
        try:
            while not self._stop.is_set():
                moved = self.run_due_retries(force=True)
                if self.run_once() is None and not moved:
                    break
        finally:
            restore()
        return self.stats

    def _should_stop(self, stop_event: threading.Event | None) -> bool:
        return self._stop.is_set() or (stop_event is not None and stop_event.is_set())

    def _wait(self, seconds: float, stop_event: threading.Event | None) -> None:
        if stop_event is not None:
            stop_event.wait(seconds)
        else:
            self._stop.wait(seconds)

    def _install_signals(self) -> Callable[[], None]:
        """SIGTERM/SIGINT stop the loop after the current batch; a second one interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous: dict[int, Any] = {}

        def on_signal(signum: int, frame: Any) -> None:
            if self._stop.is_set():
                raise KeyboardInterrupt
            logger.info("worker %s: signal %d, stopping after the current batch", self.owner, signum)
            self._stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except (ValueError, OSError):
                pass

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
