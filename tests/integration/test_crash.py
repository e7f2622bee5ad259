"""kill -9 at random moments: nothing is lost, and each step's effect is applied exactly once.

Two worker processes drive 200 machines on one embedded file while the test
SIGKILLs one of them at random moments (30 times) and starts a new one. Each
step's action writes to the test's own SQLite file: an ``attempts`` row per
execution, and an ``effects`` row keyed by ``obj["idempotency_key"]`` with
INSERT OR IGNORE, as an action with an external effect would. At the end every
machine has completed, the effects are exactly the expected (id, step) set,
and attempts minus effects is the number of re-executions the kills caused.

Run as a script, this file is the worker process: ``python test_crash.py DB EFFECTS``.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

from eventlog.backends.sqlite import SqliteLog  # noqa: E402
from eventlog.settings import SOURCES, load_settings  # noqa: E402
from projections.fold import fold_records  # noqa: E402

MODULE = "tests.integration.test_crash"
STEPS = 4
MACHINES = 200
WORKERS = 2
KILLS = 30
CLAIM_TTL_S = 1.5

DEFINITION = {
    "machines": [{
        "name": "crashy",
        "states": [
            *({"name": f"s{i}", "initial": i == 0, "do_action": f"{MODULE}.apply_effect",
               "transitions": [{"event": "next", "target": f"s{i + 1}"}]} for i in range(STEPS)),
            {"name": f"s{STEPS}", "final": True},
        ],
    }],
}

_conn: sqlite3.Connection | None = None


def _effects() -> sqlite3.Connection:
    global _conn
    if _conn is None:
        _conn = sqlite3.connect(os.environ["CRASH_TEST_EFFECTS"], timeout=30, isolation_level=None)
        _conn.execute("PRAGMA journal_mode=WAL")
    return _conn


def apply_effect(context, obj):
    key = obj["idempotency_key"]
    conn = _effects()
    conn.execute("INSERT INTO attempts (key) VALUES (?)", (key,))
    time.sleep(0.01)  # an external call: a window for a kill between the attempt and the effect
    conn.execute("INSERT OR IGNORE INTO effects (key) VALUES (?)", (key,))
    return "next"


def settings_for(db: str):
    url = f"sqlite:///{db}"
    return load_settings(environ={}, LEASE_SECONDS=1.0, LEASE_WAIT_SECONDS=3.0, RETRY_BASE_SECONDS=0.05,
                         **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES})


def worker_main(db: str, effects: str) -> None:
    from handlers.engine import Engine
    from handlers.wiring import open_services
    from handlers.worker import Worker
    from projections.definition import from_dict

    os.environ["CRASH_TEST_EFFECTS"] = effects
    settings = settings_for(db)
    services = open_services(settings)
    engine = Engine(from_dict(DEFINITION), services, settings)
    Worker(engine, services.log, batch_size=20, claim_ttl_s=CLAIM_TTL_S, poll_s=0.05).run()
    services.close()


def _states(log: SqliteLog) -> dict:
    states: dict = {}
    after = None
    while page := log.read(after, 5000):
        states = fold_records(states, (r.data for r in page))
        after = page[-1].position
    return states


def _spawn(db: str, effects: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, __file__, db, effects], env=env, cwd=str(ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkilled_workers_lose_nothing_and_apply_each_effect_once(tmp_path, capsys):
    from handlers.engine import Engine
    from handlers.wiring import open_services
    from projections.definition import from_dict

    db, effects = str(tmp_path / "crash.db"), str(tmp_path / "effects.db")
    with sqlite3.connect(effects) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE attempts (key TEXT NOT NULL)")
        conn.execute("CREATE TABLE effects (key TEXT PRIMARY KEY)")
    settings = settings_for(db)
    services = open_services(settings)
    ids = Engine(from_dict(DEFINITION), services, settings).start_many("crashy", [{} for _ in range(MACHINES)])

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    workers = [_spawn(db, effects) for _ in range(WORKERS)]
    kills = 0
    done = False
    try:
        give_up = time.monotonic() + 150  # a guard against hanging, not a speed check
        while kills < KILLS and time.monotonic() < give_up:
            time.sleep(rng.uniform(0.05, 0.3))
            victim = rng.randrange(WORKERS)
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            kills += 1
            workers[victim] = _spawn(db, effects)
        while time.monotonic() < give_up:
            states = _states(services.log)
            if len(states) == MACHINES and all(s.terminal for s in states.values()):
                done = True
                break
            time.sleep(0.2)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        errors = [w.communicate(timeout=30)[1].decode(errors="replace") for w in workers]
    assert done, f"seed {seed}: machines still running after the kills"
    assert [w.returncode for w in workers] == [0] * WORKERS, errors

    states = _states(services.log)
    assert {cid: (s.status, s.state) for cid, s in states.items()} == {
        cid: ("completed", f"s{STEPS}") for cid in ids}
    with sqlite3.connect(effects) as conn:
        applied = [k for (k,) in conn.execute("SELECT key FROM effects")]
        attempts = conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
    expected = {f"{cid}:{n}" for cid in ids for n in range(STEPS)}
    assert set(applied) == expected and len(applied) == len(expected)  # none missing, none extra
    reexecutions = attempts - len(expected)
    assert reexecutions >= 0
    assert kills == KILLS
    with capsys.disabled():
        print(f"\ncrash test (seed {seed}): {kills} SIGKILLs, {len(expected)} steps, {attempts} executions, "
              f"{reexecutions} re-executions caused by the kills")
    services.close()


if __name__ == "__main__":
    worker_main(sys.argv[1], sys.argv[2])
