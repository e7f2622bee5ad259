"""Replay speed: rebuild one machine (with and without a snapshot) and scan whole logs.

Prints one JSON object:
- ``rebuild_ms_by_history``: one machine with 1k / 10k / 100k records on the embedded
  SQLite log; ``with_snapshot`` reads only the tail after a snapshot taken on the
  engine's default cadence (every 10 steps), ``without`` folds the whole history.
  Median of several runs, in milliseconds.
- ``scan_events_per_s``: ``replay.scan`` over a whole log, SQLite and Kinesis (moto
  server in this process, over HTTP on 127.0.0.1), with the event counts used.

Run: ``.venv/bin/python bench/replay.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eventlog.codec import encode  # noqa: E402
from eventlog.event import RETRY, START, STEP, Event  # noqa: E402
from eventlog.log import OutRecord  # noqa: E402
from projections.fold import fold  # noqa: E402
from projections.state import Snapshot, encode_snapshot  # noqa: E402
from replay.rebuild import rebuild  # noqa: E402
from replay.scan import scan  # noqa: E402

SNAPSHOT_EVERY = 10
CHUNK = 5000


def machine_history(cid: str, n: int, t0: float = 1_700_000_000.0) -> list[Event]:
    """``n`` records of one machine: a start, then steps, every 7th step retried once."""
    ctx = {"order": cid, "amount": 12.5, "items": ["a", "b", "c"]}
    out = [Event.create(START, cid, "order", "bench", 0, 0, "s0", None, t0, ctx)]
    step = 0
    while len(out) < n:
        step += 1
        out.append(Event.create(STEP, cid, "order", "bench", step, 0, f"s{step % 5}", "go", t0 + len(out), ctx))
        if step % 7 == 0 and len(out) < n:
            out.append(Event.create(RETRY, cid, "order", "bench", step, 1, f"s{step % 5}", "go", t0 + len(out), ctx,
                                    error_type="Boom", error_message="flaky"))
    return out


def append_all(log, events: list[Event]) -> list[str]:
    positions: list[str] = []
    for i in range(0, len(events), CHUNK):
        positions += log.append([OutRecord(e.correlation_id, encode(e)) for e in events[i:i + CHUNK]])
    return positions


def timed_ms(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(samples), 3)


def bench_rebuild(workdir: Path, sizes: list[int]) -> dict[str, dict[str, float]]:
    from eventlog.backends.sqlite import SqliteLog
    from projections.checkpoints.sqlite import SqliteCheckpoints

    out: dict[str, dict[str, float]] = {}
    for n in sizes:
        url = f"sqlite:///{(workdir / f'rebuild-{n}.db').resolve()}"
        empty = f"sqlite:///{(workdir / f'nosnap-{n}.db').resolve()}"
        log, checkpoints, none = SqliteLog(url), SqliteCheckpoints(url), SqliteCheckpoints(empty)
        cid = f"bench-{n}"
        # other machines' records around it, as in a real log
        noise = [e for i in range(4) for e in machine_history(f"noise-{n}-{i}", n // 4)]
        append_all(log, noise[: len(noise) // 2])
        events = machine_history(cid, n)
        positions = append_all(log, events)
        append_all(log, noise[len(noise) // 2:])
        # a snapshot on the engine's cadence (steps a multiple of 10), the last one that leaves a tail to read
        last_snap = max(i for i, e in enumerate(events[:-1]) if e.steps % SNAPSHOT_EVERY == 0 and e.retries == 0)
        state = fold(None, events[: last_snap + 1])
        checkpoints.save(cid, state.version, encode_snapshot(Snapshot(state, positions[last_snap], "bench")))
        with_snap = SimpleNamespace(log=log, checkpoints=checkpoints)
        without = SimpleNamespace(log=log, checkpoints=none)
        full = fold(None, events)
        assert rebuild(cid, with_snap).rebuilt_state == full == rebuild(cid, without).rebuilt_state
        runs = 7 if n <= 10_000 else 3
        out[str(n)] = {
            "with_snapshot": timed_ms(lambda s=with_snap, c=cid: rebuild(c, s), runs),
            "without": timed_ms(lambda s=without, c=cid: rebuild(c, s), runs),
            "tail_records_with_snapshot": len(events) - last_snap - 1,
        }
        for backend in (log, checkpoints, none):
            backend.close()
    return out


def many_machines(total: int, machines: int) -> list[Event]:
    per = max(1, total // machines)
    histories = [machine_history(f"m-{i}", per, 1_700_000_000.0 + i) for i in range(machines)]
    out: list[Event] = []
    for i in range(per):  # interleaved, as machines run side by side
        for h in histories:
            if i < len(h):
                out.append(h[i])
    return out[:total]


def bench_scan_sqlite(workdir: Path, total: int) -> dict[str, float]:
    from eventlog.backends.sqlite import SqliteLog

    log = SqliteLog(f"sqlite:///{(workdir / 'scan.db').resolve()}")
    events = many_machines(total, 2000)
    append_all(log, events)
    t = time.perf_counter()
    result = scan(log, None, now=1_800_000_000.0, stalled_after_s=900)
    elapsed = time.perf_counter() - t
    assert result.records == len(events)
    log.close()
    return {"events": len(events), "machines": len(result.states), "seconds": round(elapsed, 3),
            "events_per_s": round(len(events) / elapsed)}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_scan_kinesis(total: int) -> dict[str, float]:
    from moto.server import ThreadedMotoServer

    from eventlog import aws
    from eventlog.backends.kinesis import KinesisLog
    from eventlog.settings import load_settings

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log lines
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        arn = "arn:aws:kinesis:us-east-1:123456789012:stream/replay-bench"
        settings = load_settings(environ={}, ENDPOINTS={arn: f"http://127.0.0.1:{port}"}, AWS_REGION="us-east-1")
        aws.clear_clients()
        log = KinesisLog.create(arn, settings, shards=2)
        events = many_machines(total, 200)
        append_all(log, events)
        t = time.perf_counter()
        result = scan(log, None, now=1_800_000_000.0, stalled_after_s=900)
        elapsed = time.perf_counter() - t
        assert result.records == len(events), (result.records, len(events))
    finally:
        server.stop()
    return {"events": len(events), "machines": len(result.states), "seconds": round(elapsed, 3),
            "events_per_s": round(len(events) / elapsed)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    sizes = [1000, 10_000] if args.quick else [1000, 10_000, 100_000]
    scan_total = 20_000 if args.quick else 200_000
    kinesis_total = 2_000 if args.quick else 20_000
    with tempfile.TemporaryDirectory(prefix="fsmlog-bench-replay-") as d:
        work = Path(d)
        rebuild_ms = bench_rebuild(work, sizes)
        sqlite_scan = bench_scan_sqlite(work, scan_total)
    kinesis_scan = bench_scan_kinesis(kinesis_total)
    print(json.dumps({
        "rebuild_ms_by_history": rebuild_ms,
        "scan_events_per_s": {"sqlite": sqlite_scan, "kinesis_moto": kinesis_scan},
        "python": sys.version.split()[0],
    }))


if __name__ == "__main__":
    main()
