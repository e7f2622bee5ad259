"""What holds during a cache partition: 3 ``fsmlog worker`` processes on the embedded backend.

Every source has a primary and a secondary SQLite file (the primary cache in a file of its
own, so that a fault can target it alone). Machines are started with ``fsmlog start`` and
run by three ``fsmlog worker`` processes; the machine and its action are the failover
soak's (``tests/integration/failover_soak_fsm.yaml`` and ``failover_soak_actions.py``:
five steps, each sleeping 0-0.3 s and journaling start, end, pid and fence token).

Scenarios:

- ``partition``: ONE worker cannot reach the primary cache at all for the whole run (its
  own ``AWS_CHAOS`` environment variable fails 100% of the calls to the primary cache's
  URL); the other two reach everything. No single store can decide: the cut-off worker
  takes its leases on the secondary once the primary has failed for
  ``CACHE_FAILOVER_SECONDS``, while the others hold theirs on the primary.
- ``flapping``: every process fails 25% of the primary's calls, for every source (like
  the failover soak).
- ``clean``: no faults, the baseline.

Per scenario, from the journal, the union fold of both streams, both sides' embedded
metrics tables and the workers' logs: machines completed, wall seconds, executions,
re-executions, overlapping executions of one machine (pairs of intersecting
[start, end] intervals) with their total and longest overlap, whether overlapping
executions share the idempotency key (``<cid>:<steps>``, handlers/engine.py: the
same step twice is what the key protects; two different steps at once is not),
split leases (``SplitLeases``) and ``LeaseLost`` (metrics, and the warnings logged),
executions out of order, machines whose fence tokens do not rise (in start order), outcome
records the log holds twice for one attempt.

On the embedded backend each record is claimed by exactly one worker, so without a second
delivery of a record the cut-off worker never meets another holder of the same step: split
leases are counted but nothing overlaps. ``--redispatch-every S`` adds that contention: an
``fsmlog replay scan --stalled-after 0s --redispatch`` every S seconds appends a copy of every
running machine's pending record (what an operator's redispatch, or any redelivery, does).

Prints ONE JSON object on stdout (progress on stderr). Not a test: nothing is asserted.

    .venv/bin/python bench/faults.py [--machines 24] [--scenario partition|flapping|clean|all ...]
                                     [--timeout 60] [--redispatch-every S] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eventlog.settings import SOURCES, load_settings  # noqa: E402
from tests.integration.test_failover_soak import (  # noqa: E402  the soak's harness, reused as is
    FSM,
    FSMLOG,
    STEPS,
    TUNING,
    Execution,
    Soak,
    UnionLog,
    parse_journal,
)

WORKERS = 3
FLAP_P = 0.25
POLL_S = 0.25
SETTLE_S = 2.0  # workers keep running this long after the last machine ended: late re-runs show up
SCENARIOS = ("partition", "flapping", "clean")
GAUGES = frozenset({"OldestRecordAgeMs"})  # kept at their greatest by the sink (handlers/metrics), never summed

LOG_MARKS = {  # what the engine and the worker log, counted in the workers' output
    "split_leases": "lease taken on the secondary cache",  # engine, one warning per lease (handlers/engine.py)
    "lease_lost": "lost before the commit",
    "handed_back": "leases move to the secondary only once",  # FailoverSteps: primary failed, not for long enough
    "abandoned_claims": "left for redelivery",
    "tracebacks": "Traceback (most recent call last)",
}


def progress(msg: str) -> None:
    print(f"[faults] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------- setup


def sources(tmp: Path) -> tuple[dict[str, str], str, str]:
    """Every kind on ``primary.db`` / ``secondary.db``, except the primary cache: ``primary-cache.db``."""
    primary, cache, secondary = (f"sqlite:///{tmp / name}" for name in ("primary.db", "primary-cache.db",
                                                                         "secondary.db"))
    out = {}
    for kind in SOURCES:
        out[f"PRIMARY_{kind}_SOURCE"] = cache if kind == "CACHE" else primary
        out[f"SECONDARY_{kind}_SOURCE"] = secondary
    return out, primary, cache


def scenario_setup(name: str, tmp: Path) -> tuple[dict[str, Any], list[dict[str, str]], str]:
    """Settings file contents, the extra environment of each worker, and a description of the faults."""
    srcs, primary, cache = sources(tmp)
    settings: dict[str, Any] = {**srcs, **TUNING}
    extra: list[dict[str, str]] = [{} for _ in range(WORKERS)]
    if name == "partition":
        # worker 0 alone: AWS_CHAOS from its environment overrides the (empty) one of the settings file
        extra[0] = {"AWS_CHAOS": json.dumps({cache: {"ServiceUnavailable": 1.0}})}
        faults = f"worker 0: 100% of calls to the primary cache ({Path(cache[10:]).name}) fail; workers 1-2: none"
    elif name == "flapping":
        settings["AWS_CHAOS"] = {url: {"ServiceUnavailable": FLAP_P} for url in (primary, cache)}
        faults = f"every process: {FLAP_P:.0%} of calls to every primary source fail"
    elif name == "clean":
        faults = "none"
    else:
        raise ValueError(name)
    return settings, extra, faults


def spawn(soak: Soak, argv: list[str], extra_env: dict[str, str]) -> None:
    """One worker, as ``Soak.spawn`` does (under coreutils' ``timeout`` when there is one, so it ends even if
    this process dies before its ``finally``), but with an environment of its own."""
    n = len(soak.workers)
    out = soak.tmp / f"worker-{n}.log"
    soak.logs.append(out)
    guard = shutil.which("timeout")
    soak.guarded = guard is not None
    prefix = [guard, "-k", "10", str(int(soak.deadline_s + 30))] if guard else []
    with open(out, "wb") as fh:
        soak.workers.append(subprocess.Popen([*prefix, str(FSMLOG), *argv], env={**soak.env, **extra_env},
                                             cwd=soak.tmp, stdout=fh, stderr=subprocess.STDOUT))


def worker_pid(proc: subprocess.Popen, guarded: bool) -> int | None:
    """The fsmlog process's pid (the journal's ``pid``): under ``timeout`` it is that process's child."""
    if not guarded:
        return proc.pid
    for _ in range(40):
        try:
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            return None
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    return None


# --------------------------------------------------------------------------------------- one scenario


class Redispatcher:
    """``fsmlog replay scan --stalled-after 0s --redispatch`` every ``every_s`` seconds, in a thread: a copy of
    every running machine's pending record is appended, so one step is delivered twice, possibly to two
    workers at once (the contention under which a split lease matters; without it each record is claimed
    by exactly one worker and the cut-off worker never meets another holder)."""

    def __init__(self, soak: Soak, every_s: float) -> None:
        self.soak, self.every_s = soak, every_s
        self.stop = threading.Event()
        self.runs = self.redispatched = self.failed = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                proc = self.soak.cli("replay", "scan", "--stalled-after", "0s", "--redispatch", "--json",
                                     timeout=max(5.0, self.every_s * 10), check=False)
                rows = (json.loads(proc.stdout).get("redispatched") or []) if proc.returncode == 0 else []
            except (subprocess.TimeoutExpired, ValueError, AttributeError):
                proc, rows = None, []
            self.runs += 1
            if proc is None or proc.returncode != 0:
                self.failed += 1
            self.redispatched += sum(1 for r in rows if r.get("result") == "redispatched")

    def figures(self) -> dict[str, Any]:
        return {"every_s": self.every_s, "scans": self.runs, "scans_failed": self.failed,
                "records_redispatched": self.redispatched}


def run_scenario(name: str, tmp: Path, machines: int, deadline_s: float, redispatch_s: float = 0.0) -> dict[str, Any]:
    tmp.mkdir(parents=True)
    settings, extra, faults = scenario_setup(name, tmp)
    soak = Soak(name, tmp, machines, deadline_s, settings, poll_s=POLL_S)
    oracle = UnionLog(soak.settings_path)
    timed_out = False
    all_ended_s: float | None = None
    workers_at = 0.0
    pids: list[int | None] = []
    states: dict[str, Any] = {}
    stopped_at = time.time()
    codes: list[int | None] = []
    redispatcher = Redispatcher(soak, redispatch_s) if redispatch_s > 0 else None
    try:
        try:
            soak.start_machines()
            progress(f"{name}: {len(soak.ids)} machines started in {soak.elapsed():.1f}s")
            for env in extra:
                spawn(soak, ["worker", str(FSM), "--batch", "10"], env)
            workers_at = soak.elapsed()
            pids = [worker_pid(p, soak.guarded) for p in soak.workers]
            soak.note(f"{WORKERS} workers running, pids {pids}")
            if redispatcher is not None:
                redispatcher.thread.start()
            deadline = soak.started + soak.deadline_s
            last_report = 0.0
            while True:
                states = oracle.fold()
                done = sum(1 for cid in soak.ids if cid in states and states[cid].terminal)
                if done == len(soak.ids):
                    all_ended_s = soak.elapsed()
                    soak.note("every machine ended")
                    progress(f"{name}: every machine ended at {all_ended_s:.1f}s; settling {SETTLE_S:g}s")
                    time.sleep(SETTLE_S)
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    soak.note(f"deadline: {done} of {len(soak.ids)} machines ended")
                    progress(f"{name}: DEADLINE, {done} of {len(soak.ids)} machines ended")
                    break
                if all(p.poll() is not None for p in soak.workers):
                    soak.note(f"every worker exited: {[p.returncode for p in soak.workers]}")
                    break
                if soak.elapsed() - last_report >= 5.0:
                    last_report = soak.elapsed()
                    progress(f"{name}: {done}/{len(soak.ids)} ended at {soak.elapsed():.0f}s")
                time.sleep(POLL_S)
        finally:
            if redispatcher is not None:
                redispatcher.stop.set()
                if redispatcher.thread.is_alive():
                    redispatcher.thread.join(timeout=max(10.0, redispatch_s * 10 + 5))
            soak.exited_early = {path.name: proc.returncode for path, proc in zip(soak.logs, soak.workers)
                                 if proc.poll() is not None}
            stopped_at = time.time()
            codes = soak.stop_workers()
        states = oracle.fold()
        soak.record_counts = dict(oracle.counts)
    finally:
        oracle.close()
    figures = measure(soak, states, pids, stopped_at)
    figures["log_duplicate_outcomes"] = duplicate_outcomes(soak)
    if redispatcher is not None:
        figures["redispatch"] = redispatcher.figures()
    figures.update({
        "faults": faults,
        "timed_out": timed_out,
        "start_machines_s": round(workers_at, 1),  # the `fsmlog start` processes, before any worker
        "wall_s": round(all_ended_s - workers_at, 1) if all_ended_s is not None else None,  # workers' start to all ended
        "wall_s_with_settle_and_stop": round(soak.elapsed(), 1),
        "worker_pids": pids,
        "worker_exit_codes": codes,
        "workers_exited_early": soak.exited_early,
        "log_records": soak.record_counts,
        "events": soak.events,
    })
    logs = log_counts(soak)
    figures["logged"] = logs
    figures.update(metric_figures(soak))
    if figures["not_completed"]:
        figures["stuck"] = stuck_details(soak, states)
    return figures


# --------------------------------------------------------------------------------------- the figures


def token_str(token: Any) -> str:
    """A fence token with what its floor encodes (handlers/cache/steps.py ``token_floor``): the attempt
    (steps, retries) and the milliseconds since its record was written, when the token is its floor."""
    if not isinstance(token, int):
        return str(token)
    from handlers.cache.steps import ATTEMPT_BITS, TIME_BITS

    attempt = (token >> TIME_BITS) - 1
    steps, retries = attempt >> ATTEMPT_BITS, attempt & ((1 << ATTEMPT_BITS) - 1)
    return f"{token} (s{steps} r{retries} +{token & ((1 << TIME_BITS) - 1)}ms)"


def measure(soak: Soak, states: dict[str, Any], pids: list[int | None], stopped_at: float) -> dict[str, Any]:
    by_cid, _raw, bad_lines = parse_journal(soak.journal_lines())
    per_step = Counter((x.cid, x.steps) for xs in by_cid.values() for x in xs)
    completed = sum(1 for cid in soak.ids if cid in states and states[cid].status == "completed")

    pairs = same_key = 0
    total_ms = max_ms = 0.0
    machines_overlapping: set[str] = set()
    overlap_samples: list[str] = []
    with_cut_off = 0  # pairs one of whose executions ran in worker 0 (the one cut off in `partition`)
    pair_tokens_rising = 0  # pairs whose later start carries the higher fence token
    out_of_order = 0
    machines_out_of_order: set[str] = set()
    machines_tokens_not_rising: list[str] = []
    token_samples: list[str] = []
    cut_off = pids[0] if pids else None

    def end_of(x: Execution) -> float:
        return x.end if x.end is not None else stopped_at  # never ended: held until the workers stopped

    for cid, xs in by_cid.items():
        for i, a in enumerate(xs):
            for b in xs[i + 1:]:  # sorted by start: b.start >= a.start
                if b.start >= end_of(a):
                    continue
                ms = (min(end_of(a), end_of(b)) - b.start) * 1000
                pairs += 1
                total_ms += ms
                max_ms = max(max_ms, ms)
                machines_overlapping.add(cid)
                same_key += a.steps == b.steps  # idempotency key = f"{cid}:{steps}" (handlers/engine.py)
                with_cut_off += cut_off is not None and cut_off in (a.pid, b.pid)
                pair_tokens_rising += isinstance(a.token, int) and isinstance(b.token, int) and b.token > a.token
                if len(overlap_samples) < 6:
                    overlap_samples.append(
                        f"{cid} step {a.steps} pid {a.pid} token {token_str(a.token)} [{a.start:.3f},{end_of(a):.3f}] "
                        f"x step {b.steps} pid {b.pid} token {token_str(b.token)} [{b.start:.3f},{end_of(b):.3f}]: "
                        f"{ms:.0f} ms")
        highest: Execution | None = None
        for x in xs:
            if highest is not None and x.steps < highest.steps:
                out_of_order += 1
                machines_out_of_order.add(cid)
            if highest is None or x.steps > highest.steps:
                highest = x
        falling = [(a, b) for a, b in zip(xs, xs[1:])
                   if not (isinstance(a.token, int) and isinstance(b.token, int) and b.token > a.token)]
        if falling:
            machines_tokens_not_rising.append(cid)
            a, b = falling[0]
            if len(token_samples) < 6:
                token_samples.append(f"{cid}: token {token_str(b.token)} (step {b.steps}, pid {b.pid}, started "
                                     f"{b.start:.3f}) after {token_str(a.token)} (step {a.steps}, pid {a.pid}, "
                                     f"started {a.start:.3f})")

    executions = sum(per_step.values())
    by_pid = Counter(x.pid for xs in by_cid.values() for x in xs)
    out: dict[str, Any] = {
        "machines": len(soak.ids),
        "completed": completed,
        "not_completed": len(soak.ids) - completed,
        "statuses": dict(Counter(states[cid].status if cid in states else "missing" for cid in soak.ids)),
        "executions": executions,
        "re_executions": sum(n - 1 for n in per_step.values()),
        "steps_run_more_than_once": sum(1 for n in per_step.values() if n > 1),
        "max_runs_of_one_step": max(per_step.values(), default=0),
        "executions_by_worker": [by_pid.get(p, 0) for p in pids],
        "never_ended_executions": sum(1 for xs in by_cid.values() for x in xs if x.end is None),
        "overlapping_pairs": pairs,
        "machines_overlapping": len(machines_overlapping),
        "overlap_ms_total": round(total_ms, 1),
        "overlap_ms_max": round(max_ms, 1),
        "overlapping_pairs_same_idempotency_key": same_key,
        "overlapping_pairs_distinct_idempotency_keys": pairs - same_key,
        "overlaps_all_share_idempotency_key": pairs == same_key,
        "overlapping_pairs_involving_worker_0": with_cut_off,
        "overlapping_pairs_tokens_ordered": pair_tokens_rising,
        "out_of_order_executions": out_of_order,
        "machines_out_of_order": len(machines_out_of_order),
        "machines_tokens_not_rising": len(machines_tokens_not_rising),
        "journal_unreadable_lines": bad_lines,
    }
    if overlap_samples:
        out["overlap_samples"] = overlap_samples
    if token_samples:
        out["tokens_not_rising_samples"] = token_samples
    return out


def duplicate_outcomes(soak: Soak) -> int:
    """Outcome records (step, completed, failed) that the union of both streams holds more than once for one
    attempt: both holders of a split lease appended theirs (the fold takes any duplicates, guarantee 5)."""
    from eventlog.codec import decode

    oracle = UnionLog(soak.settings_path)
    seen: Counter[tuple] = Counter()
    try:
        for log in oracle.sides.values():
            after = None
            while records := log.read(after, 5000):
                for r in records:
                    e = decode(r.data)
                    if e.kind not in ("start", "retry"):
                        seen[(e.correlation_id, e.kind, e.steps, e.retries)] += 1
                after = records[-1].position
    finally:
        oracle.close()
    return sum(n - 1 for n in seen.values())


def metric_figures(soak: Soak) -> dict[str, Any]:
    """The engine's counters from both sides' embedded metrics tables (read raw: no chaos, no failover)."""
    from handlers.wiring import open_backend

    settings = load_settings(environ={"FSMLOG_SETTINGS": str(soak.settings_path)}).replace(AWS_CHAOS={})
    totals: Counter[str] = Counter()
    by_side: dict[str, dict[str, int]] = {}
    split_by_cache_side: Counter[str] = Counter()
    for side in ("PRIMARY", "SECONDARY"):
        backend = open_backend("METRICS", settings.source("METRICS", side), settings, side)
        try:
            side_totals: Counter[str] = Counter()
            for (name, dims), value in backend.read().items():
                if name in GAUGES:  # an age is not added up: the oldest any worker saw
                    side_totals[name] = max(side_totals[name], int(value))
                else:
                    side_totals[name] += int(value)
                if name == "SplitLeases":
                    split_by_cache_side[dict(dims).get("side", "?")] += int(value)
        finally:
            close = getattr(backend, "close", None)
            if close is not None:
                close()
        for name, value in side_totals.items():
            totals[name] = max(totals[name], value) if name in GAUGES else totals[name] + value
        by_side[side.lower()] = dict(sorted(side_totals.items()))
    return {
        "split_leases": totals.get("SplitLeases", 0),
        "split_leases_by_cache_side": dict(split_by_cache_side),
        "lease_lost": totals.get("LeaseLost", 0),
        "metrics": dict(sorted(totals.items())),
        "metrics_rows_by_metrics_side": {k: sum(n for name, n in v.items() if name not in GAUGES)
                                         for k, v in by_side.items()},
    }


def log_counts(soak: Soak) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # rich wraps long lines (COLUMNS=200): fold every run of whitespace, so a message split over lines still counts
    texts = [" ".join(p.read_text(errors="replace").split()) if p.exists() else "" for p in soak.logs]
    for key, mark in LOG_MARKS.items():
        per_worker = [t.count(mark) for t in texts]
        out[key] = sum(per_worker)
        out[f"{key}_by_worker"] = per_worker
    return out


def stuck_details(soak: Soak, states: dict[str, Any], limit: int = 5) -> dict[str, Any]:
    """For machines that never completed: their folded state and their journal lines."""
    _, raw, _ = parse_journal(soak.journal_lines())
    out: dict[str, Any] = {}
    stuck = [cid for cid in soak.ids if not (cid in states and states[cid].status == "completed")]
    out["count_by_steps"] = dict(Counter(states[cid].steps if cid in states else -1 for cid in stuck))
    out["machines"] = {}
    for cid in stuck[:limit]:
        s = states.get(cid)
        out["machines"][cid] = {
            "state": None if s is None else {"status": s.status, "state": s.state, "steps": s.steps,
                                             "retries": s.retries, "error": s.error},
            "journal": [line[:240] for line in raw.get(cid, [])[-8:]],
        }
    out["worker_log_tails"] = soak.worker_tails(8)
    return out


# --------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=24)
    parser.add_argument("--scenario", action="append", choices=[*SCENARIOS, "all"],
                        help="repeatable; default all")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="deadline per scenario, seconds from its first `fsmlog start` (default 60)")
    parser.add_argument("--redispatch-every", type=float, default=0.0, metavar="S",
                        help="also run `fsmlog replay scan --stalled-after 0s --redispatch` every S seconds during "
                             "each scenario: duplicate deliveries, so two workers can hold one step at once "
                             "(default 0: off)")
    parser.add_argument("--keep", metavar="DIR", help="keep each scenario's files (journal, logs, dbs) under DIR")
    args = parser.parse_args()
    chosen = args.scenario or ["all"]
    names = list(SCENARIOS) if "all" in chosen else [s for s in SCENARIOS if s in chosen]

    base = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="fsmlog-faults-"))
    base.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    began = time.monotonic()
    try:
        for name in names:
            progress(f"{name}: {args.machines} machines x {STEPS} steps, {WORKERS} workers, "
                     f"deadline {args.timeout:g}s")
            try:
                results[name] = run_scenario(name, base / f"{name}-{int(time.time())}", args.machines,
                                             args.timeout, args.redispatch_every)
            except Exception as exc:  # one scenario's harness failure must not hide the others' figures
                results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
            progress(f"{name}: done, {json.dumps({k: results[name].get(k) for k in ('completed', 'overlapping_pairs', 'split_leases', 'wall_s')})}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({
        "bench": "faults",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "config": {"machines": args.machines, "steps": STEPS, "workers": WORKERS, "batch": 10,
                   "deadline_s": args.timeout, "tuning": TUNING,
                   "redispatch_every_s": args.redispatch_every or None,
                   "cache_failover_s": load_settings(environ={}).CACHE_FAILOVER_SECONDS,
                   "action_pause_s": "0, 0.1, 0.2 or 0.3 by crc32(cid:steps) (failover_soak_actions.py)"},
        "total_s": round(time.monotonic() - began, 1),
        "scenarios": results,
    }))


if __name__ == "__main__":
    main()
