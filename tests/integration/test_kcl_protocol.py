"""The replay KCL processor over real pipes, speaking the MultiLangDaemon's JSON-lines protocol.

The test plays the daemon: it starts ``python -m replay.kcl_processor`` (which
runs amazon-kclpy's own ``KCLProcess``), writes the daemon's messages to its
stdin and reads its stdout, where only protocol lines may appear.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from eventlog.codec import encode
from eventlog.event import COMPLETED, START, STEP, Event
from projections.fold import fold_all
from replay.scan import ProjectionFile

pytest.importorskip("amazon_kclpy")

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHARD = "shardId-000000000007"
READ_TIMEOUT_S = 60.0


def seq(n: int) -> str:
    return f"4958{n:052d}"


class Daemon:
    """The daemon's side of the pipes; every stdout line is kept for the final check."""

    def __init__(self, state: Path, *extra: str):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "replay.kcl_processor", "--state", str(state), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env,
            text=True, bufsize=1,
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.strip():
                self._q.put(line)
        self._q.put(None)

    def _pump_err(self) -> None:
        for line in self.proc.stderr:
            self._err.append(line)

    def send(self, message: dict) -> None:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict:
        try:
            line = self._q.get(timeout=READ_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"no reply from the processor; stderr:\n{self.stderr}") from None
        assert line is not None, f"processor closed stdout; stderr:\n{self.stderr}"
        return json.loads(line)

    def expect_status(self, action: str) -> None:
        assert self.receive() == {"action": "status", "responseFor": action}

    def expect_checkpoint(self, sequence: str | None, sub: int | None) -> None:
        assert self.receive() == {"action": "checkpoint", "sequenceNumber": sequence, "subSequenceNumber": sub}

    def reply_checkpoint(self, sequence: str | None, sub: int | None, error: str | None = None) -> None:
        msg = {"action": "checkpoint", "sequenceNumber": sequence, "subSequenceNumber": sub}
        if error:
            msg["error"] = error
        self.send(msg)

    def finish(self) -> int:
        self.proc.stdin.close()
        code = self.proc.wait(timeout=READ_TIMEOUT_S)
        return code

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def assert_only_protocol_on_stdout(self) -> None:
        for line in self.lines:
            if not line.strip():
                continue  # kclpy frames each message with newlines
            msg = json.loads(line)
            assert msg["action"] in ("status", "checkpoint"), line
            assert set(msg) <= {"action", "responseFor", "sequenceNumber", "subSequenceNumber"}, line


def events_for(cid: str, n_steps: int, *, complete: bool, t0: float = 1_700_000_000.0) -> list[Event]:
    out = [Event.create(START, cid, "order", "h1", 0, 0, "received", None, t0, {"n": 0})]
    for i in range(1, n_steps + 1):
        out.append(Event.create(STEP, cid, "order", "h1", i, 0, "working", "next", t0 + i, {"n": i}))
    if complete:
        out.append(Event.create(COMPLETED, cid, "order", "h1", n_steps + 1, 0, "done", None, t0 + n_steps + 1))
    return out


def kcl_records(items: list[tuple[bytes, str]], first: int) -> list[dict]:
    return [
        {"action": "record", "data": base64.b64encode(data).decode(), "partitionKey": key,
         "sequenceNumber": seq(first + i), "subSequenceNumber": 0,
         "approximateArrivalTimestamp": 1_700_000_000_000 + i}
        for i, (data, key) in enumerate(items)
    ]


def process(daemon: Daemon, records: list[dict]) -> None:
    daemon.send({"action": "processRecords", "millisBehindLatest": 0, "records": records})


def initialize(daemon: Daemon) -> None:
    daemon.send({"action": "initialize", "shardId": SHARD, "sequenceNumber": "TRIM_HORIZON",
                 "subSequenceNumber": 0})
    daemon.expect_status("initialize")


def test_records_fold_checkpoints_retry_and_shard_end(tmp_path):
    state = tmp_path / "projections.db"
    a = events_for("m-a", 2, complete=True)
    b = events_for("m-b", 3, complete=False)
    c = events_for("m-c", 0, complete=False)
    bad = (b"\xc1 this is not an fsmlog record", "m-x")
    batch1 = [(encode(a[0]), "m-a"), (encode(b[0]), "m-b"), bad, (encode(a[1]), "m-a")]
    batch2 = [(encode(b[1]), "m-b"), (encode(c[0]), "m-c")]
    batch3 = [(encode(a[2]), "m-a"), (encode(b[2]), "m-b"), (encode(a[3]), "m-a"), (encode(b[3]), "m-b"),
              (encode(b[1]), "m-b")]  # a redelivered record changes nothing

    d = Daemon(state, "--checkpoint-every", "3", "--checkpoint-seconds", "3600")
    initialize(d)

    # batch 1: four records (one bad) reach the checkpoint cadence; the first checkpoint is throttled
    process(d, kcl_records(batch1, 1))
    d.expect_checkpoint(seq(4), 0)
    d.reply_checkpoint(seq(4), 0, error="ThrottlingException")
    d.expect_checkpoint(seq(4), 0)
    d.reply_checkpoint(seq(4), 0)
    d.expect_status("processRecords")

    # batch 2: two records, under the cadence: no checkpoint
    process(d, kcl_records(batch2, 5))
    d.expect_status("processRecords")

    # batch 3: the cadence is reached again: checkpoint at its last record
    process(d, kcl_records(batch3, 7))
    d.expect_checkpoint(seq(11), 0)
    d.reply_checkpoint(seq(11), 0)
    d.expect_status("processRecords")

    # shard end: a checkpoint without a sequence number (the end of the shard) is required
    d.send({"action": "shardEnded"})
    d.expect_checkpoint(None, None)
    d.reply_checkpoint(None, None)
    d.expect_status("shardEnded")

    assert d.finish() == 0, d.stderr
    d.assert_only_protocol_on_stdout()
    assert "skipping bad record" in d.stderr

    pf = ProjectionFile(state)
    try:
        got = pf.load_all()
        progress = pf.progress()[SHARD]
    finally:
        pf.close()
    expected = fold_all({}, a + b + c)
    assert got == expected
    assert got["m-a"].status == "completed" and got["m-b"].steps == 3 and got["m-c"].status == "running"
    assert (progress.records, progress.bad_records, progress.sequence) == (11, 1, seq(11))
    assert progress.checkpointed == "SHARD_END"


def test_lease_lost_never_checkpoints(tmp_path):
    state = tmp_path / "projections.db"
    a = events_for("m-a", 1, complete=False)
    d = Daemon(state, "--checkpoint-every", "100")
    initialize(d)
    process(d, kcl_records([(encode(e), "m-a") for e in a], 1))
    d.expect_status("processRecords")
    d.send({"action": "leaseLost"})
    d.expect_status("leaseLost")
    assert d.finish() == 0, d.stderr
    d.assert_only_protocol_on_stdout()
    assert all(json.loads(x)["action"] == "status" for x in d.lines if x.strip())
    pf = ProjectionFile(state)
    try:
        assert pf.load_all() == fold_all({}, a)  # what was folded is kept
        assert pf.progress()[SHARD].checkpointed is None
    finally:
        pf.close()


def test_shutdown_requested_checkpoints_and_gives_up_on_shutdown_exception(tmp_path):
    state = tmp_path / "projections.db"
    a = events_for("m-a", 2, complete=False)
    d = Daemon(state, "--checkpoint-every", "100")
    initialize(d)
    process(d, kcl_records([(encode(e), "m-a") for e in a], 1))
    d.expect_status("processRecords")
    d.send({"action": "shutdownRequested"})
    d.expect_checkpoint(seq(3), 0)
    d.reply_checkpoint(seq(3), 0, error="ShutdownException")  # not retried: the processor gives up cleanly
    d.expect_status("shutdownRequested")
    assert d.finish() == 0, d.stderr
    d.assert_only_protocol_on_stdout()
    assert "ShutdownException" in d.stderr
    pf = ProjectionFile(state)
    try:
        assert pf.load_all() == fold_all({}, a)
    finally:
        pf.close()
