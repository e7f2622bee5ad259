"""A KCL (amazon-kclpy v3) application that folds the Kinesis log into a projection file.

The MultiLangDaemon (Java) owns leases and checkpoints and starts one of these
processes per shard, talking JSON lines over stdin/stdout. So stdout belongs to
the protocol: this module logs to stderr (or a file) and points ``sys.stdout``
at stderr before anything else can print.

Durability order: folded states are merged into the projection file *before*
the KCL checkpoint that covers them, so a crash between the two only means a
batch is folded twice, which the fold absorbs.

Run: ``python -m replay.kcl_processor --state PATH`` (the daemon's ``executableName``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from amazon_kclpy import kcl
from amazon_kclpy.checkpoint_error import CheckpointError
from amazon_kclpy.messages import (
    InitializeInput,
    LeaseLostInput,
    ProcessRecordsInput,
    ShardEndedInput,
    ShutdownRequestedInput,
)
from amazon_kclpy.v3 import processor

from eventlog.codec import decode
from eventlog.retrying import retrying
from eventlog.sides import PRIMARY, SECONDARY, tag_position
from projections.fold import fold_all
from projections.state import MachineState

from .scan import ProjectionFile

log = logging.getLogger("fsmlog.replay.kcl")

RETRYABLE = frozenset({"ThrottlingException", "KinesisClientLibDependencyException"})
GIVE_UP = frozenset({"ShutdownException", "InvalidStateException"})

STATE_ENV = "FSMLOG_REPLAY_STATE"


class ReplayProcessor(processor.RecordProcessorBase):
    """Folds one shard's records into per-machine projections and checkpoints through the KCL."""

    def __init__(
        self,
        projections: ProjectionFile,
        *,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
        checkpoint_retries: int = 5,
        backoff_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        side: str = PRIMARY,
    ):
        self.projections = projections
        self.side = side  # which stream this daemon reads: a secondary's shards are noted as "secondary|shardId-..."
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self.checkpoint_retries = checkpoint_retries
        self.backoff_s = backoff_s
        self.clock = clock
        self.sleep = sleep
        self.shard_id: str | None = None
        self.last_sequence: str | None = None
        self.last_sub_sequence: int | None = None
        self.records = 0
        self.bad_records = 0
        self._pending: dict[str, MachineState] = {}
        self._pending_records = 0
        self._pending_bad = 0
        self._since_checkpoint = 0
        self._last_checkpoint_at = clock()

    # -- the KCL callbacks ---------------------------------------------------------------------------

    def initialize(self, initialize_input: InitializeInput) -> None:
        self.shard_id = tag_position(self.side, initialize_input.shard_id)
        self.last_sequence = None
        self._last_checkpoint_at = self.clock()
        log.info("initialize shard %s at sequence %s", self.shard_id, initialize_input.sequence_number)

    def process_records(self, process_records_input: ProcessRecordsInput) -> None:
        events = []
        bad = 0
        last = None
        for record in process_records_input.records:
            last = record
            try:
                events.append(decode(record.binary_data))
            except Exception as exc:  # undecodable data: counted and skipped, never fatal
                bad += 1
                log.warning("shard %s: skipping bad record at sequence %s: %s", self.shard_id,
                            record.sequence_number, exc)
        if last is None:
            return
        self._pending = fold_all(self._pending, events)
        self._pending_records += len(process_records_input.records)
        self._pending_bad += bad
        self.records += len(process_records_input.records)
        self.bad_records += bad
        self.last_sequence = last.sequence_number
        self.last_sub_sequence = last.sub_sequence_number
        self._since_checkpoint += len(process_records_input.records)
        flushed = self._flush()
        due = (self._since_checkpoint >= self.checkpoint_every
               or self.clock() - self._last_checkpoint_at >= self.checkpoint_interval_s)
        if flushed and due:
            self._checkpoint(process_records_input.checkpointer, self.last_sequence, self.last_sub_sequence)

    def lease_lost(self, lease_lost_input: LeaseLostInput) -> None:
        # another worker owns the shard now: keep what was folded, never checkpoint
        self._flush()
        log.info("shard %s: lease lost after %d records", self.shard_id, self.records)

    def shard_ended(self, shard_ended_input: ShardEndedInput) -> None:
        # the KCL starts the child shards only after this checkpoint
        if self._flush():
            self._checkpoint(shard_ended_input.checkpointer, None, None, shard_end=True)
        log.info("shard %s: ended after %d records (%d bad)", self.shard_id, self.records, self.bad_records)

    def shutdown_requested(self, shutdown_requested_input: ShutdownRequestedInput) -> None:
        if self._flush():
            self._checkpoint(shutdown_requested_input.checkpointer, self.last_sequence, self.last_sub_sequence)
        log.info("shard %s: shutdown requested after %d records", self.shard_id, self.records)

    # -- internals -----------------------------------------------------------------------------------

    def _flush(self) -> bool:
        """Merge pending states into the projection file; False (and kept pending) if the file refused."""
        if not self._pending and not self._pending_records:
            return True
        try:
            self.projections.merge(self._pending, shard_id=self.shard_id, sequence=self.last_sequence,
                                   records=self._pending_records, bad_records=self._pending_bad)
        except Exception:
            log.exception("shard %s: projection file %s not written; will retry with the next batch",
                          self.shard_id, self.projections.path)
            return False
        self._pending = {}
        self._pending_records = 0
        self._pending_bad = 0
        return True

    def _checkpoint(self, checkpointer: kcl.Checkpointer, sequence: str | None, sub_sequence: int | None,
                    *, shard_end: bool = False) -> bool:
        """Checkpoint, retrying throttling by the one retry policy; give up quietly when the lease is gone."""

        def once() -> None:
            if shard_end:
                checkpointer.checkpoint()
            else:
                checkpointer.checkpoint(sequence, sub_sequence)

        def noted(state: Any) -> None:  # a tenacity RetryCallState
            log.warning("shard %s: checkpoint at %s refused with %s; retry %d in %.2f s", self.shard_id, sequence,
                        state.outcome.exception().value, state.attempt_number, state.next_action.sleep)

        policy = retrying(sleep=self.sleep, attempts=self.checkpoint_retries, base=self.backoff_s,
                          retry_if=lambda exc: isinstance(exc, CheckpointError) and exc.value in RETRYABLE,
                          before_sleep=noted)
        try:
            policy(once)
        except CheckpointError as err:
            if err.value in GIVE_UP:
                log.warning("shard %s: checkpoint not possible (%s); giving up on this checkpoint",
                            self.shard_id, err.value)
            else:
                log.error("shard %s: checkpoint at %s failed with %s after %d attempt(s)",
                          self.shard_id, sequence, err.value, policy.statistics.get("attempt_number", 1))
            return False
        self._since_checkpoint = 0
        self._last_checkpoint_at = self.clock()
        try:
            self.projections.mark_checkpointed(self.shard_id or "?", None if shard_end else sequence)
        except Exception:
            log.exception("shard %s: could not note the checkpoint in the projection file", self.shard_id)
        return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m replay.kcl_processor",
        description="fsmlog replay KCL record processor (started by the MultiLangDaemon)",
    )
    parser.add_argument("--state", default=os.environ.get(STATE_ENV, ".fsmlog/replay-projections.db"),
                        help=f"projection file (sqlite); default ${STATE_ENV} or .fsmlog/replay-projections.db")
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="records between checkpoints")
    parser.add_argument("--checkpoint-seconds", type=float, default=60.0, help="seconds between checkpoints")
    parser.add_argument("--side", choices=(PRIMARY, SECONDARY), default=PRIMARY,
                        help="which stream the daemon reads (both fold into one projection file)")
    parser.add_argument("--log-file", default=None, help="log here instead of stderr")
    parser.add_argument("--log-level", default="WARNING",
                        help="the daemon logs every stderr line of ours as ERROR, so INFO is opt-in")
    args = parser.parse_args(argv)

    protocol_out = sys.stdout
    sys.stdout = sys.stderr  # anything but protocol lines goes to stderr
    handler: logging.Handler = (logging.FileHandler(args.log_file) if args.log_file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(args.log_level.upper())

    projections = ProjectionFile(args.state)
    try:
        proc = ReplayProcessor(projections, checkpoint_every=args.checkpoint_every,
                               checkpoint_interval_s=args.checkpoint_seconds, side=args.side)
        kcl.KCLProcess(proc, input_file=sys.stdin, output_file=protocol_out, error_file=sys.stderr).run()
    finally:
        projections.close()


if __name__ == "__main__":
    main()
