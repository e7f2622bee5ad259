"""Console speed: how long the console's pages and API take on an embedded file of many machines.

Prints one JSON object with, for 1k and 10k machines (3 records each, every 10th
still running), the median milliseconds of:
- ``list_cold_ms``: ``GET /api/machines`` right after the cache expired (a whole scan),
- ``list_cached_ms``: the same within the 3 s cache (paging, auto-refresh),
- ``machines_page_ms``: ``GET /`` (the HTML page, cached scan),
- ``machine_page_ms``: ``GET /machines/{id}`` (status, history, rebuild, graph),
- ``overview_ms``: ``GET /overview`` (the log counted for the last hour).

Run: ``.venv/bin/python bench/console.py [--quick]`` (needs the ``console`` extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eventlog.codec import encode  # noqa: E402
from eventlog.event import COMPLETED, START, STEP, Event  # noqa: E402
from eventlog.log import OutRecord  # noqa: E402

FSM = """\
machines:
- name: order
  states:
  - name: s0
    initial: true
    transitions:
    - event: go
      target: s1
  - name: s1
    transitions:
    - event: go
      target: s2
  - name: s2
    final: true
"""


def populate(db: Path, machines: int) -> str:
    from eventlog.settings import SOURCES, load_settings
    from handlers.wiring import open_services

    url = f"sqlite:///{db}"
    services = open_services(load_settings(environ={}, **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES}))
    now = time.time()
    try:
        batch = []
        for i in range(machines):
            cid = f"{i:08x}-bench"
            t = now - 3000 + i * 2000 / machines
            ctx = {"order": i, "items": ["a", "b"]}
            batch.append(Event.create(START, cid, "order", "bench", 0, 0, "s0", None, t, ctx))
            batch.append(Event.create(STEP, cid, "order", "bench", 1, 0, "s1", "go", t + 1, ctx))
            if i % 10:
                batch.append(Event.create(COMPLETED, cid, "order", "bench", 2, 0, "s2", None, t + 2, ctx))
            if len(batch) >= 5000:
                services.log.append([OutRecord(e.correlation_id, encode(e)) for e in batch])
                batch = []
        if batch:
            services.log.append([OutRecord(e.correlation_id, encode(e)) for e in batch])
    finally:
        services.close()
    return f"{machines // 2:08x}-bench"


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 1)


def measure(machines: int, runs: int) -> dict[str, float]:
    from starlette.testclient import TestClient

    from fsmlog.cli import load_definitions, open_runtime
    from fsmlog.console.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        (Path(tmp) / "fsm.yaml").write_text(FSM)
        one = populate(db, machines)
        definitions = load_definitions(str(Path(tmp) / "fsm.yaml"))
        runtime = open_runtime(SimpleNamespace(db=str(db), debug=False), definitions)
        app = create_app(runtime, token="bench", definitions=definitions)
        reader = app.state.reader
        try:
            with TestClient(app, base_url="http://127.0.0.1") as client:
                def get(url: str) -> None:
                    assert client.get(url).status_code == 200, url

                def cold() -> None:
                    reader.forget()
                    get("/api/machines")

                get("/api/machines")
                return {
                    "list_cold_ms": median_ms(cold, runs),
                    "list_cached_ms": median_ms(lambda: get("/api/machines?limit=50"), runs),
                    "machines_page_ms": median_ms(lambda: get("/"), runs),
                    "machine_page_ms": median_ms(lambda: get(f"/machines/{one}"), runs),
                    "overview_ms": median_ms(lambda: get("/overview"), runs),
                }
        finally:
            runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k machines only, fewer runs")
    args = parser.parse_args()
    sizes = (1000,) if args.quick else (1000, 10_000)
    runs = 3 if args.quick else 5
    print(json.dumps({"console_ms_by_machines": {str(n): measure(n, runs) for n in sizes}}, indent=2))


if __name__ == "__main__":
    main()
