"""``fsmlog status`` (no id) ends with the fault summary: failovers and lost leases in the last hour,
read back from the embedded metrics sink; a sink that cannot be read back says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from handlers.metrics import Datum
from handlers.metrics.sqlite import SqliteMetrics

ROOT = Path(__file__).resolve().parents[2]


def fsmlog(tmp_path: Path, *args: str, **env_values: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_") and not k.endswith("_SOURCE")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="80", **env_values)
    proc = subprocess.run([sys.executable, "-m", "fsmlog.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_status_ends_with_the_last_hour_of_failovers_and_lost_leases(tmp_path):
    db = tmp_path / "local.db"
    metrics = SqliteMetrics(f"sqlite:///{db}")
    metrics.put([Datum("Failovers", 2, (("source", "STREAM"),)),
                 Datum("LeaseLost", 1, (("machine", "order"), ("side", "primary")))])
    metrics.close()
    lines = [x for x in fsmlog(tmp_path, "--db", str(db), "status").stdout.splitlines() if x.strip()]
    assert lines[-1] == "health (last hour): 2 failover(s) (STREAM 2), 1 lease(s) lost"
    assert len(lines[-1]) <= 80
    doc = json.loads(fsmlog(tmp_path, "--db", str(db), "status", "--json").stdout)
    assert (doc["health"]["failovers"], doc["health"]["lease_lost"]) == (2, 1)


def test_a_sink_that_cannot_be_read_back_is_named_with_the_metrics_to_alarm_on(tmp_path):
    url = f"sqlite:///{tmp_path}/local.db"
    sources = {f"PRIMARY_{kind}_SOURCE": url for kind in ("STREAM", "CHECKPOINT", "RETRY", "ENVIRONMENT", "CACHE",
                                                          "DEAD_LETTER")}
    proc = fsmlog(tmp_path, "status", PRIMARY_METRICS_SOURCE="emf:", **sources)
    assert proc.stdout.strip().splitlines()[-1] == ("health: EMF is not readable here; alarm on Failovers and "
                                                    "LeaseLost")
    assert json.loads(fsmlog(tmp_path, "status", "--json", PRIMARY_METRICS_SOURCE="emf:", **sources).stdout)[
        "health"] is None
