"""End to end with the real KCL MultiLangDaemon (Java) against moto served over h2c by Hypercorn.

The daemon's Kinesis client speaks HTTP/2 only, so the emulator is moto's
server app behind Hypercorn (tests.fixtures.h2c_moto); CBOR is off, retrieval
is POLLING and metrics are off. Lease setup takes the daemon 10 to 60 s before
the first records arrive, so the wait is bounded generously.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from eventlog.codec import encode
from eventlog.event import COMPLETED, START, STEP, Event
from eventlog.log import OutRecord
from eventlog.settings import load_settings
from replay.kcl_properties import launch_command, write_properties_for
from replay.scan import ProjectionFile, scan_projections
from tests.fixtures.h2c_moto import running

pytest.importorskip("amazon_kclpy")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.kcl,
    pytest.mark.skipif(shutil.which("java") is None, reason="the KCL MultiLangDaemon needs java on PATH"),
]

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"
WAIT_S = 180.0
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def h2c_endpoint(tmp_path_factory):
    with running(log_path=tmp_path_factory.mktemp("h2c") / "moto.log") as url:
        yield url


def _tail(path: Path, lines: int = 60) -> str:
    """The end of the daemon's log, after what the Python processors wrote to stderr (the daemon
    relays it), so a processor's traceback is never cut off by the JVM's own lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no daemon log: {exc})"
    ours = [line for line in text if "Traceback" in line or "Error:" in line or "replay." in line]
    return "\n".join(["-- processor lines --", *ours[-40:], "-- log tail --", *text[-lines:]])


def _machines() -> tuple[list[Event], set[str], set[str]]:
    """Completed, stalled (old, running) and recent (running, fine) machines."""
    events: list[Event] = []
    stalled: set[str] = set()
    completed: set[str] = set()
    for i in range(6):
        cid = f"done-{i}"
        t = NOW - 7200 - i
        events += [
            Event.create(START, cid, "order", "h1", 0, 0, "received", None, t, {"i": i}),
            Event.create(STEP, cid, "order", "h1", 1, 0, "charged", "ok", t + 1, {"i": i}),
            Event.create(COMPLETED, cid, "order", "h1", 2, 0, "shipped", None, t + 2, {"i": i}),
        ]
        completed.add(cid)
    for i in range(4):
        cid = f"stuck-{i}"
        t = NOW - 3600 - 60 * i  # an hour and more without progress
        events += [
            Event.create(START, cid, "order", "h1", 0, 0, "received", None, t, {"i": i}),
            Event.create(STEP, cid, "order", "h1", 1, 0, "charged", "ok", t + 1, {"i": i}),
        ]
        stalled.add(cid)
    for i in range(2):
        cid = f"busy-{i}"
        events.append(Event.create(START, cid, "order", "h1", 0, 0, "received", None, NOW - 5, {"i": i}))
    return events, stalled, completed


def test_daemon_folds_the_stream_and_scan_lists_the_stalled_machines(tmp_path, h2c_endpoint, monkeypatch):
    from eventlog import aws
    from eventlog.backends.kinesis import KinesisLog

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(name, value)
    aws.clear_clients()
    stream = f"replay-kcl-{os.getpid()}"
    arn = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{stream}"
    settings = load_settings(environ={}, ENDPOINTS={arn: h2c_endpoint}, AWS_REGION=REGION)
    log = KinesisLog.create(arn, settings, shards=2)

    events, stalled, completed = _machines()
    log.append([OutRecord(e.correlation_id, encode(e)) for e in events])
    log.append([OutRecord("junk", b"\xc1 not an fsmlog record")])
    total = len(events) + 1

    state = tmp_path / "projections.db"
    props = tmp_path / "replay.properties"
    text = write_properties_for(settings.replace(PRIMARY_STREAM_SOURCE=arn), props,
                                application_name=f"{stream}-app", state_path=state)
    for line in (f"streamName = {stream}", f"regionName = {REGION}", f"kinesisEndpoint = {h2c_endpoint}",
                 f"dynamoDBEndpoint = {h2c_endpoint}", "retrievalMode = POLLING", "metricsLevel = NONE",
                 "initialPositionInStream = TRIM_HORIZON"):
        assert line in text.splitlines()
    daemon_log = tmp_path / "daemon.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(daemon_log, "wb") as out:
        daemon = subprocess.Popen(launch_command(props), cwd=tmp_path, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    seen = (0, 0)
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                pytest.fail(f"the MultiLangDaemon exited with {daemon.returncode}:\n{_tail(daemon_log)}")
            if state.exists():
                pf = ProjectionFile(state)
                try:
                    seen = pf.totals()
                finally:
                    pf.close()
                if seen[0] >= total:
                    break
            time.sleep(1.0)
        else:
            pytest.fail(f"after {WAIT_S:.0f} s the projections hold {seen[0]} of {total} records; "
                        f"daemon log tail:\n{_tail(daemon_log)}")
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)  # graceful: shutdownRequested to every processor
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()

    assert seen == (total, 1)  # every record once, the junk one counted as bad
    result = scan_projections(state, now=NOW, stalled_after_s=15 * 60)
    assert {s.correlation_id for s in result.stalled} == stalled
    assert {cid for cid, s in result.states.items() if s.status == "completed"} == completed
    assert len(result.states) == 12
    last_time = {e.correlation_id: e.time for e in events if e.correlation_id in stalled and e.steps == 1}
    for s in result.stalled:
        assert s.state.steps == 1 and s.state.retries == 0 and s.state.event == "ok"
        assert s.stuck_s == NOW - last_time[s.correlation_id]
