"""Failover soak, black box: several worker processes of the CLI, a secondary for every source, the primary
failing a share of every process's calls; every machine must end, one holder at a time, steps in order,
fence tokens rising (docs/GUARANTEES.md, "How it is proven").

Everything goes through the ``fsmlog`` command line as subprocesses, configured by one settings file
(``FSMLOG_SETTINGS``):

(1) embedded: ``PRIMARY_<KIND>_SOURCE`` one SQLite file and ``SECONDARY_<KIND>_SOURCE`` another, for every
    kind; ``AWS_CHAOS`` names the primary's URL, so the primary fails 25% of the calls of every process
    (each process draws from its own OS-seeded RNG) and the secondary never fails on purpose;
    machines are started with ``fsmlog start`` and run by three ``fsmlog worker`` processes;
(2) AWS over moto's server: Kinesis streams and DynamoDB tables (and CloudWatch) on both sides, resources
    made by ``fsmlog resources create``, three ``fsmlog dev`` processes (the Lambda-shaped loop: it polls
    every shard of both streams and runs the retry timer);
(3) Redis: as (1), but the primary cache is a real ``redis-server`` (no persistence) with the secondary's
    SQLite file behind it; the server is killed and started again on the same port mid-run.

The action (failover_soak_actions.py) journals every execution: start and end time, pid, machine, step and
the fence token it was handed. With the log as the only authority (the fold over the union of both streams)
and the journal, the soak asserts:

- every machine completed, and each of its steps ran to the end at least once;
- no two executions of one machine overlap in time (the only overlap the guarantees allow is under a
  partition between the two sides of the cache; every worker here reaches both sides, so none is allowed);
- no execution of step k starts after an execution of a later step of its machine began;
- per machine, the fence tokens of successive executions (by start time) strictly rise.

Beside those, a few machines of every kind of wait (``failover_soak_waits``: a transition's ``delay``, an
action's ``additional_delay_seconds``, a ``wait: true`` state's ``timeout``/``on_timeout`` with nothing sent, and a
``wait: true`` state that the soak sends ``approve`` to, twice with one event_id: ``fsmlog.client`` then
``fsmlog send``, or the other way round, under the same faults; started in one
``fsmlog.client.start_state_machines``) run to the same checks, and:

- no step after a timer starts before the time of the log record that set it plus its delay (the record's
  ``due`` must be exactly that); the step each timer runs commits one outcome (copies of a record, such as the
  timer's own, have the record's time; a second commit has another);
- the timeout fired exactly once and the sent event was applied exactly once: every execution of the step after
  it shows the same one of the two sends, the step commits one outcome, and the final context's trail holds each
  action once with the event's data once;
- no record of these machines is parked as a dead letter (the second send of an applied event_id is not a late
  event).

And a few parents (``failover_soak_children``) that start three children each from an action and wait for them
(``wait: children``): every parent has its three children, each child is held to the checks above, and the
parent joins exactly once (one commit of the step on ``children_done``, never begun before every child's last
execution ended, handed each child's id, status, state and final context).

Re-executions of a step whose outcome was not recorded are expected (at least once) and reported, not failed.
Figures are printed as one ``SOAK {...}`` line (``pytest -s`` shows it) and recorded as a property, also when
the soak fails; the failure message names the offending machines with their journal lines.

Timing: the only timed assertion is the overall deadline. Each variant is bounded by it plus a few seconds of
setup and teardown; workers are stopped (SIGTERM, then SIGKILL) in a ``finally``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from eventlog.event import RETRY, START, STEP
from eventlog.settings import DEFAULTS, SOURCES, load_settings
from projections.fold import fold_records
from tests.fixtures.servers import ACCOUNT, REGION

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

FSM = Path(__file__).with_name("failover_soak_fsm.yaml")
MACHINE = "failover_soak"
STEPS = 5  # executions per machine: s0 .. s4 (failover_soak_fsm.yaml)
WAIT_MACHINE = "failover_soak_waits"
WAIT_STEPS = 5  # w0, w1 (after a 1 s delay), w2 (enters the timed wait), expire (its timeout), w4 (the event)
WAIT_DELAYS = {1: 1.0, 2: 0.5, 3: 1.0}  # step -> seconds its record waits: delay: 1, additional 0.5, timeout 1s
WAIT_EVENT_STEP = 4  # the step that applies the sent event (w3 --approve--> w4)
WAIT_TRAIL = ["w0", "w1", "w2", "expire", "w4"]  # context["trail"] at the end: each action once
FAN_MACHINE = "failover_soak_children"
FAN_STEPS = 3  # p0 (starts the children), p1 (enters `wait: children`), p2 (on children_done)
CHILD_STEPS = 2  # c0, c1 of failover_soak_child
CHILDREN = 3  # per parent (failover_soak_actions.CHILDREN)
JOIN_OVERDUE_S = 2.0  # a parent still in p1 this long after its last child ended gets what an operator does
CLOCK_SLACK_S = 0.002  # one host, one clock (time.time); the slack is float rounding, not drift
SENDERS = 3  # `fsmlog send` processes at once
SEND_ATTEMPTS = 10  # per send, when the CLI fails (the send retried is one more send of the same event_id):
# `fsmlog send` reads the machine from every side of the log first, and fails (exit 1) when a side does
WORKERS = 3
FAULT_P = 0.25  # share of the primary's calls that fail, in each process
FSMLOG = Path(sys.executable).with_name("fsmlog")
JOURNAL_ENV = "FAILOVER_SOAK_JOURNAL"

TUNING: dict[str, Any] = {
    "LEASE_SECONDS": 5.0,  # > the slowest action (0.3 s) by far; a stalled holder costs at most this
    "LEASE_WAIT_SECONDS": 1.0,
    "RETRY_BASE_SECONDS": 0.05,
    "RETRY_CAP_SECONDS": 0.5,
    "SNAPSHOT_EVERY": 2,
    "FAILOVER_COOLDOWN_SECONDS": 0.5,  # the primary is tried again soon: traffic keeps moving between sides
    "DEDUPE_SECONDS": 3600.0,
}

SETTLE_S = 2.0  # workers keep running this long after the last machine completed: late re-runs show up
STOP_WAIT_S = 10.0  # after SIGTERM, before SIGKILL
STARTERS = 3  # `fsmlog start` processes at once
MAX_MESSAGE_CHARS = 14_000


# --------------------------------------------------------------------------------------- the soak's run


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment less any fsmlog setting (the settings file must be all there is)."""
    env = {k: v for k, v in os.environ.items()
           if k not in DEFAULTS and not k.startswith("FSMLOG_") and k not in ("AWS_CHAOS", "AWS_ENDPOINT_URL")}
    env.update(extra)
    return env


@dataclass
class Soak:
    """One soak run: its files, its processes, what it saw."""

    name: str
    tmp: Path
    machines: int
    deadline_s: float
    settings: dict[str, Any]
    poll_s: float = 1.0
    wait_machines: int = 0  # machines of WAIT_MACHINE, beside ``machines`` of MACHINE
    fan_machines: int = 0  # parents of FAN_MACHINE, each starting CHILDREN children
    journal: Path = field(init=False)
    settings_path: Path = field(init=False)
    env: dict[str, str] = field(init=False)
    workers: list[subprocess.Popen] = field(default_factory=list)
    guarded: bool = False  # workers run under coreutils' timeout, each in a process group of its own
    logs: list[Path] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # every machine started, both kinds
    wait_ids: list[str] = field(default_factory=list)
    fan_ids: list[str] = field(default_factory=list)
    child_ids: list[str] = field(default_factory=list)  # every machine whose records name a parent here
    sends: dict[str, list[str]] = field(default_factory=dict)  # wait machine -> what each send answered
    wait_records: dict[str, list[Any]] = field(default_factory=dict)  # waiting/fan/child machine -> its records
    dead_letters: list[tuple[str, str]] = field(default_factory=list)  # (machine id, reason), both sides
    events: list[str] = field(default_factory=list)  # what the test did when (restarts ...)
    record_counts: dict[str, int] = field(default_factory=dict)  # records on each side's stream at the end
    exited_early: dict[str, int] = field(default_factory=dict)  # worker log -> exit code, for workers that died
    started: float = 0.0
    workers_at: float = 0.0  # elapsed() when the workers were started
    _senders: Any = None  # the pool the events are sent from (ThreadPoolExecutor), made on the first send
    _sending: list[Any] = field(default_factory=list)  # its futures
    _client_after: dict[str, Any] = field(default_factory=dict)  # cid -> the CLI send the client's waits for
    _client: Any = None  # fsmlog.client.Client on this soak's settings, opened on its first send
    _operating: Any = None  # the operator's CLI calls under way for an overdue join (a Future)
    overdue: dict[str, dict[str, Any]] = field(default_factory=dict)  # parent -> scan found it, redispatches
    client_env: dict[str, str] = field(default_factory=dict)  # beside FSMLOG_SETTINGS, for the client

    def __post_init__(self) -> None:
        self.journal = self.tmp / "journal.jsonl"
        self.settings_path = self.tmp / "settings.json"
        self.settings_path.write_text(json.dumps(self.settings, indent=1))
        self.env = clean_environ(FSMLOG_SETTINGS=str(self.settings_path), COLUMNS="200",  # rich: unwrapped logs
                                 **{JOURNAL_ENV: str(self.journal)})
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def note(self, what: str) -> None:
        self.events.append(f"{self.elapsed():.1f}s {what}")

    def cli(self, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(FSMLOG), *args], env=env or self.env, cwd=self.tmp, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"`fsmlog {' '.join(args)}` exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        return proc

    def start_machines(self) -> None:
        """``fsmlog start`` per machine, a few at a time (under the same chaos as the workers: it fails over too)."""
        from concurrent.futures import ThreadPoolExecutor

        def start_one(cid: str) -> str:
            machine = WAIT_MACHINE if cid.startswith("fw") else MACHINE
            for attempt in range(3):  # the secondary never fails on purpose; a refusal is still retried
                if self.elapsed() > self.deadline_s:
                    raise AssertionError(f"starting machines used up the deadline: {'; '.join(self.events[-3:])}")
                proc = self.cli("start", str(FSM), "--machine", machine, "--id", cid, check=False)
                if proc.returncode == 0:
                    assert proc.stdout.strip() == cid, proc.stdout
                    return cid
                self.note(f"fsmlog start {cid} attempt {attempt + 1} exited {proc.returncode}: "
                          f"{proc.stderr.strip()[-300:]}")
            raise AssertionError(f"`fsmlog start` kept failing for {cid}:\n" + "\n".join(self.events[-3:]))

        waits = [f"fw{n:03d}-{uuid.uuid4().hex[:10]}" for n in range(self.wait_machines)]
        if waits:
            self.wait_ids = self.start_by_client(WAIT_MACHINE, waits)
        fans = [f"fc{n:03d}-{uuid.uuid4().hex[:10]}" for n in range(self.fan_machines)]
        if fans:
            self.fan_ids = self.start_by_client(FAN_MACHINE, fans)
        cids = [f"fo{n:03d}-{uuid.uuid4().hex[:10]}" for n in range(self.machines)]
        with ThreadPoolExecutor(max_workers=STARTERS) as pool:
            self.ids.extend(pool.map(start_one, cids))
        self.note(f"started {len(self.ids)} machines ({len(waits)} of {WAIT_MACHINE}, {len(fans)} of {FAN_MACHINE})")

    def client(self) -> Any:
        """``fsmlog.client.Client`` on this soak's settings (chaos included), used from this thread only."""
        if self._client is None:
            from fsmlog.client import Client

            env = {"FSMLOG_SETTINGS": str(self.settings_path), **self.client_env}
            self._client = Client(str(FSM), load_settings(environ=env))
        return self._client

    def start_by_client(self, machine: str, cids: list[str]) -> list[str]:
        """Machines in one ``fsmlog.client.start_state_machines`` (again with the same ids if the primary's
        faults fail it: a start appended twice is run once)."""
        from eventlog.errors import FsmlogError

        for attempt in range(SEND_ATTEMPTS):
            try:
                started = self.client().start_state_machines(machine, [{} for _ in cids], correlation_ids=cids)
            except FsmlogError as exc:
                self.note(f"client start attempt {attempt + 1} failed: {exc}"[:400])
                time.sleep(0.2)
                continue
            assert started == cids, started
            self.ids.extend(cids)
            return list(cids)
        raise AssertionError("fsmlog.client.start_state_machines kept failing:\n" + "\n".join(self.events[-3:]))

    def send_waiting(self, states: dict[str, Any]) -> None:
        """Send ``approve`` to every waiting machine the fold shows idle in w3, twice with one event_id and
        data that differs only in which send it is: for even machines through ``fsmlog.client`` here first,
        then ``fsmlog send`` in the background; for odd ones ``fsmlog send`` first, then the client once
        that returned. The second must be answered as applied already (or, had it raced the first into
        the log, be dropped by the step gate)."""
        from concurrent.futures import ThreadPoolExecutor

        for n, cid in enumerate(self.wait_ids):
            s = states.get(cid)
            if cid in self.sends or s is None or s.terminal:
                continue
            last = s.last
            if last.kind != STEP or last.state != "w3" or last.event is not None:
                continue
            if self._senders is None:
                self._senders = ThreadPoolExecutor(max_workers=SENDERS)
            self.sends[cid] = []
            first, second = ("cli", "client") if n % 2 else ("client", "cli")
            if first == "client":
                self.send_by_client(cid, n, "first")
            fut = self._senders.submit(self.send_by_cli, cid, n, "first" if first == "cli" else "second")
            self._sending.append(fut)
            if first == "cli":
                self._client_after[cid] = fut
        for cid, fut in list(self._client_after.items()):
            if fut.done():
                del self._client_after[cid]
                self.send_by_client(cid, self.wait_ids.index(cid), "second")

    def send_by_client(self, cid: str, n: int, tag: str) -> None:
        """``fsmlog.client``'s ``send_event``, in this thread (the client's sources were opened here)."""
        from eventlog.errors import FsmlogError
        from handlers.errors import EventRefused

        for attempt in range(SEND_ATTEMPTS):
            try:
                sent = self.client().send_event(cid, "approve", {"n": n, "send": tag}, f"approve-{cid}")
            except EventRefused as exc:  # never right here: the machine waits, or the event_id was applied
                self.sends[cid].append(f"client {tag} refused {exc.code}")
                self.note(f"client send {cid} ({tag}) refused: {exc}")
                return
            except FsmlogError as exc:  # the primary's injected faults: a read of either side failed
                self.sends[cid].append(f"client {tag} failed")
                self.note(f"client send {cid} ({tag}) attempt {attempt + 1} failed: {exc}"[:400])
                time.sleep(0.2)
                continue
            self.sends[cid].append(f"client {tag} {'duplicate' if sent.duplicate else 'sent'}")
            return

    def send_by_cli(self, cid: str, n: int, tag: str) -> None:
        data = json.dumps({"n": n, "send": tag})
        for attempt in range(SEND_ATTEMPTS):
            proc = self.cli("send", cid, "approve", "--data", data, "--event-id", f"approve-{cid}", "--fsm",
                            str(FSM), "--json", timeout=30.0, check=False)
            if proc.returncode == 0:  # one JSON document: branch on its field, not on the sentence
                said = "duplicate" if json.loads(proc.stdout)["duplicate"] else "sent"
                self.sends[cid].append(f"cli {tag} {said}")
                return
            self.sends[cid].append(f"cli {tag} failed")
            self.note(f"fsmlog send {cid} ({tag}) attempt {attempt + 1} exited {proc.returncode}: "
                      f"{proc.stderr.strip()[-300:]}")
            time.sleep(0.3)

    def join_overdue(self, states: dict[str, Any]) -> None:
        """What an operator does for a parent whose join did not come (its joiners could not read the log):
        ``fsmlog replay scan`` must list it, ``fsmlog replay machine ID --redispatch`` moves it on. One
        parent at a time, in the background, once it has waited JOIN_OVERDUE_S since its last child ended."""
        if self._operating is not None and not self._operating.done():
            return
        now = time.time()
        for parent in self.fan_ids:
            s = states.get(parent)
            if s is None or s.terminal or s.state != "p1" or s.last.event is not None:
                continue
            kids = [cs for cs in states.values() if cs.last.parent == parent]
            if len(kids) < CHILDREN or not all(k.terminal for k in kids):
                continue
            if now - max(k.last.time for k in kids) < JOIN_OVERDUE_S:
                continue
            seen = self.overdue.setdefault(parent, {"scan_listed": None, "redispatches": 0, "at": 0.0})
            if now - seen["at"] < JOIN_OVERDUE_S:
                continue
            seen["at"] = now
            if self._senders is None:
                from concurrent.futures import ThreadPoolExecutor

                self._senders = ThreadPoolExecutor(max_workers=SENDERS)
            self._operating = self._senders.submit(self.redispatch_join, parent)
            self._sending.append(self._operating)
            return

    def redispatch_join(self, parent: str) -> None:
        seen = self.overdue[parent]
        for attempt in range(SEND_ATTEMPTS):
            proc = self.cli("replay", "scan", "--stalled-after", f"{JOIN_OVERDUE_S:g}s", "--json", timeout=60.0,
                            check=False)
            if proc.returncode == 0:
                listed = {row.get("correlation_id") or row.get("id") for row in json.loads(proc.stdout)["stalled"]}
                seen["scan_listed"] = bool(seen["scan_listed"]) or parent in listed
                break
            self.note(f"replay scan attempt {attempt + 1} exited {proc.returncode}: {proc.stderr.strip()[-200:]}")
        for attempt in range(SEND_ATTEMPTS):
            proc = self.cli("replay", "machine", parent, "--redispatch", timeout=60.0, check=False)
            if proc.returncode == 0:
                seen["redispatches"] += 1
                self.note(f"join of {parent} overdue: redispatched (scan listed it: {seen['scan_listed']})")
                return
            self.note(f"replay machine {parent} --redispatch attempt {attempt + 1} exited {proc.returncode}: "
                      f"{proc.stderr.strip()[-200:]}")
            time.sleep(0.3)

    def finish_sends(self) -> None:
        """Wait for the CLI's sends under way (the ones not begun yet are dropped), then make the client's
        second sends that waited for them; close the client."""
        if self._senders is not None:
            self._senders.shutdown(wait=True, cancel_futures=True)
            for fut in self._sending:
                if not fut.cancelled() and fut.exception() is not None:
                    self.note(f"sending failed: {type(fut.exception()).__name__}: {fut.exception()}")
            self._sending.clear()
            self._senders = None
        for cid, fut in list(self._client_after.items()):
            del self._client_after[cid]
            if not fut.cancelled():
                self.send_by_client(cid, self.wait_ids.index(cid), "second")
        if self._client is not None:
            self._client.close()
            self._client = None

    def spawn(self, argv: list[str]) -> None:
        """One worker process. Under coreutils' ``timeout`` when there is one: should this test process die
        before its ``finally``, the worker still ends (SIGTERM passes through ``timeout`` to it)."""
        n = len(self.workers)
        out = self.tmp / f"worker-{n}.log"
        self.logs.append(out)
        guard = shutil.which("timeout")
        self.guarded = guard is not None
        prefix = [guard, "-k", "10", str(int(self.deadline_s + 120))] if guard else []
        with open(out, "wb") as fh:
            proc = subprocess.Popen([*prefix, str(FSMLOG), *argv], env=self.env, cwd=self.tmp, stdout=fh,
                                    stderr=subprocess.STDOUT)
        self.workers.append(proc)

    def stop_workers(self) -> list[int | None]:
        """SIGTERM every worker this soak started, then SIGKILL what is left (by pid, never by name)."""
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + STOP_WAIT_S
        for proc in self.workers:
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                if self.guarded:  # timeout made itself a group leader: its group is it and our worker
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                proc.kill()
                proc.wait(timeout=10)
        return [proc.returncode for proc in self.workers]

    def worker_tails(self, lines: int = 12) -> dict[str, str]:
        tails = {}
        for path in self.logs:
            text = path.read_text(errors="replace") if path.exists() else ""
            tails[path.name] = "\n".join(text.splitlines()[-lines:])[-1500:]
        return tails

    def journal_lines(self) -> list[str]:
        if not self.journal.exists():
            return []
        return self.journal.read_text(errors="replace").splitlines()


class UnionLog:
    """The authority: every record of both sides' streams, folded (raw backends: no chaos, no failover)."""

    def __init__(self, settings_path: Path, environ: dict[str, str] | None = None) -> None:
        from handlers.wiring import open_backend

        env = {"FSMLOG_SETTINGS": str(settings_path), **(environ or {})}
        settings = load_settings(environ=env).replace(AWS_CHAOS={})
        self.settings = settings
        self.sides = {side: open_backend("STREAM", settings.source("STREAM", side), settings, side)
                      for side in ("PRIMARY", "SECONDARY")}
        self.counts: dict[str, int] = {}

    def fold(self, page: int = 5000) -> dict[str, Any]:
        states: dict[str, Any] = {}
        for side, log in self.sides.items():
            n = 0
            after = None
            while records := log.read(after, page):
                states = fold_records(states, [r.data for r in records])
                n += len(records)
                after = records[-1].position
            self.counts[side] = n
        return states

    def records(self, cids: set[str], page: int = 5000) -> dict[str, list[Any]]:
        """The decoded records of these machines and of their children on both sides, in each side's order."""
        from eventlog.codec import decode

        out: dict[str, list[Any]] = defaultdict(list)
        for log in self.sides.values():
            after = None
            while records := log.read(after, page):
                for r in records:
                    e = decode(r.data)
                    if e.correlation_id in cids or e.parent in cids:
                        out[e.correlation_id].append(e)
                after = records[-1].position
        return dict(out)

    def dead_letters(self) -> list[tuple[str, str]]:
        """(machine id, reason) of every record parked on either side."""
        from eventlog.codec import decode
        from handlers.wiring import open_backend

        out = []
        for side in ("PRIMARY", "SECONDARY"):
            store = open_backend("DEAD_LETTER", self.settings.source("DEAD_LETTER", side), self.settings, side)
            try:
                for letter in store.list(10_000):
                    try:
                        cid = decode(letter.data).correlation_id
                    except Exception:  # a letter may be undecodable: that is why some are parked
                        cid = "?"
                    out.append((cid, letter.reason))
            finally:
                close = getattr(store, "close", None)
                if close is not None:
                    close()
        return out

    def close(self) -> None:
        for log in self.sides.values():
            close = getattr(log, "close", None)
            if close is not None:
                close()


def run_soak(soak: Soak, worker_argv: list[str], *, on_tick: Callable[[Soak, int], None] | None = None,
             oracle_env: dict[str, str] | None = None) -> tuple[dict[str, Any], list[int | None], bool]:
    """Start the machines and the workers, wait for every machine to end (or the deadline), stop the workers.

    Returns the union fold's final states, the workers' exit codes and whether the deadline passed."""
    oracle = UnionLog(soak.settings_path, oracle_env)
    soak.client_env = dict(oracle_env or {})
    timed_out = False
    try:
        soak.start_machines()
        for _ in range(WORKERS):
            soak.spawn(worker_argv)
        soak.workers_at = soak.elapsed()
        soak.note(f"{WORKERS} workers running")
        deadline = soak.started + soak.deadline_s
        while True:
            states = oracle.fold()
            done = [cid for cid in soak.ids if cid in states and states[cid].terminal]
            if len(done) == len(soak.ids):
                soak.note("every machine ended")
                soak.finish_sends()  # a send still under way reaches the workers, which must not apply it
                time.sleep(SETTLE_S)
                break
            if soak.wait_ids:
                soak.send_waiting(states)
            if soak.fan_ids:
                soak.join_overdue(states)
            if time.monotonic() > deadline:
                timed_out = True
                soak.note(f"deadline: {len(done)} of {len(soak.ids)} machines ended")
                break
            if on_tick is not None:
                on_tick(soak, sum(1 for line in soak.journal_lines() if '"event":"end"' in line))
            dead = [p.pid for p in soak.workers if p.poll() is not None]
            if len(dead) == len(soak.workers):
                soak.note(f"every worker exited: {[p.returncode for p in soak.workers]}")
                break
            time.sleep(soak.poll_s)
    finally:
        soak.finish_sends()
        soak.exited_early = {path.name: proc.returncode for path, proc in zip(soak.logs, soak.workers)
                             if proc.poll() is not None}
        codes = soak.stop_workers()
    try:
        states = oracle.fold()
        soak.record_counts = dict(oracle.counts)
        if soak.wait_ids or soak.fan_ids:
            soak.wait_records = oracle.records({*soak.wait_ids, *soak.fan_ids})
            soak.dead_letters = oracle.dead_letters()
            fans = set(soak.fan_ids)
            soak.child_ids = sorted(cid for cid, s in states.items() if s.last.parent in fans)
    finally:
        oracle.close()
    return states, codes, timed_out


# --------------------------------------------------------------------------------------- the verdict


@dataclass
class Execution:
    eid: str
    cid: str
    steps: int
    retries: int
    pid: int
    token: Any
    start: float
    end: float | None = None
    lines: list[str] = field(default_factory=list)
    tag: str | None = None  # the waiting machine's action (w0, w1, w2, expire, w4)
    send: str | None = None  # at w4: which of the two sends of the event it applies
    extra: Any = None  # at p2: how many children it was handed


def parse_journal(lines: list[str]) -> tuple[dict[str, list[Execution]], dict[str, list[str]], int]:
    """Executions by machine (sorted by start), the raw lines by machine, and how many lines were unreadable."""
    execs: dict[str, Execution] = {}
    raw: dict[str, list[str]] = defaultdict(list)
    bad = 0
    for line in lines:
        try:
            e = json.loads(line)
            cid, eid = e["cid"], e["eid"]
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        raw[cid].append(line)
        if e["event"] == "start":
            execs[eid] = Execution(eid, cid, int(e["steps"]), int(e["retries"]), int(e["pid"]), e.get("token"),
                                   float(e["t"]), tag=e.get("tag"), send=e.get("send"),
                                   extra=e.get("children"))
        elif eid in execs:
            execs[eid].end = float(e["t"])
        else:
            bad += 1  # an end without its start
    by_cid: dict[str, list[Execution]] = defaultdict(list)
    for x in execs.values():
        by_cid[x.cid].append(x)
    for xs in by_cid.values():
        xs.sort(key=lambda x: (x.start, x.eid))
    return by_cid, raw, bad


def verdict(soak: Soak, states: dict[str, Any], timed_out: bool) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every problem, by kind then machine, and the figures."""
    by_cid, raw, bad_lines = parse_journal(soak.journal_lines())
    problems: dict[str, dict[str, Any]] = defaultdict(dict)

    expected_steps = {**{cid: WAIT_STEPS for cid in soak.wait_ids}, **{cid: FAN_STEPS for cid in soak.fan_ids},
                      **{cid: CHILD_STEPS for cid in soak.child_ids}}
    for cid in [*soak.ids, *soak.child_ids]:
        s = states.get(cid)
        expected = expected_steps.get(cid, STEPS)
        if s is None:
            problems["not_in_log"][cid] = "no record on either side"
        elif s.status != "completed" or s.steps != expected:
            problems["not_completed"][cid] = {"status": s.status, "state": s.state, "steps": s.steps,
                                              "retries": s.retries, "error": s.error}
        else:
            ended = {x.steps for x in by_cid.get(cid, []) if x.end is not None}
            missing = sorted(set(range(expected)) - ended)
            if missing:
                problems["completed_without_running"][cid] = {"steps_never_ended": missing}
    for name, code in soak.exited_early.items():  # a worker must never die of faults
        problems["worker_exited"][name] = {"exit_code": code, "tail": soak.worker_tails(6).get(name, "")}
    for cid in set(by_cid) - set(soak.ids) - set(soak.child_ids):
        problems["unknown_machine"][cid] = len(by_cid[cid])

    overlaps = 0
    for cid, xs in by_cid.items():
        bad: list[str] = []
        for i, a in enumerate(xs):
            a_end = a.end if a.end is not None else float("inf")  # an execution that never ended never let go
            for b in xs[i + 1:]:
                if b.start >= a_end:
                    continue
                overlaps += 1
                bad.append(f"step {a.steps} (pid {a.pid}, token {a.token}) [{a.start:.3f}, "
                           f"{'open' if a.end is None else f'{a.end:.3f}'}] overlaps step {b.steps} "
                           f"(pid {b.pid}, token {b.token}) from {b.start:.3f}")
        if bad:
            problems["overlapping_executions"][cid] = bad[:6] + ([f"... {len(bad) - 6} more"] if len(bad) > 6 else [])

        late: list[str] = []
        highest: Execution | None = None
        for x in xs:
            if highest is not None and x.steps < highest.steps:
                late.append(f"step {x.steps} (pid {x.pid}) started at {x.start:.3f}, after step {highest.steps} "
                            f"(pid {highest.pid}) began at {highest.start:.3f}")
            if highest is None or x.steps > highest.steps:
                highest = x
        if late:
            problems["step_after_a_later_step"][cid] = late[:6]

        falling = [f"token {b.token} (step {b.steps}, pid {b.pid}) after {a.token} (step {a.steps}, pid {a.pid})"
                   for a, b in zip(xs, xs[1:])
                   if not (isinstance(a.token, int) and isinstance(b.token, int) and b.token > a.token)]
        if falling:
            problems["tokens_not_rising"][cid] = falling[:6]

    wait_figures = wait_verdict(soak, states, by_cid, problems) if soak.wait_ids else {}
    fan_figures = fan_verdict(soak, states, by_cid, problems) if soak.fan_ids else {}
    never_ended = [x for xs in by_cid.values() for x in xs if x.end is None]
    per_step = Counter((x.cid, x.steps) for xs in by_cid.values() for x in xs)
    completed = sum(1 for cid in soak.ids if cid in states and states[cid].status == "completed")
    figures: dict[str, Any] = {
        "variant": soak.name,
        "machines": len(soak.ids),
        "steps": STEPS,
        "workers": WORKERS,
        "primary_fault_p": FAULT_P,
        "completed": completed,
        "not_completed": len(soak.ids) - completed,
        "statuses": dict(Counter(states[cid].status if cid in states else "missing" for cid in soak.ids)),
        "stuck_at_steps": dict(sorted(Counter(states[cid].steps for cid in soak.ids
                                              if cid in states and not states[cid].terminal).items())),
        "executions": sum(per_step.values()),
        "re_executions": sum(n - 1 for n in per_step.values()),
        "never_ended_executions": len(never_ended),
        "overlaps": overlaps,
        "machines_overlapping": len(problems.get("overlapping_executions", {})),
        "machines_out_of_order": len(problems.get("step_after_a_later_step", {})),
        "machines_tokens_not_rising": len(problems.get("tokens_not_rising", {})),
        "worker_pids_seen": len({x.pid for xs in by_cid.values() for x in xs}),
        "journal_unreadable_lines": bad_lines,
        "log_records": soak.record_counts,
        "timed_out": timed_out,
        "wall_s": round(soak.elapsed(), 1),
        **wait_figures,
        **fan_figures,
    }
    return problems, figures


def outcomes(records: list[Any], step: int) -> set[tuple]:
    """The distinct outcomes the log holds for one step of a machine: the records one step on, less the events
    sent from outside. A copy of a record (the timer's, one appended on both sides) has its time; a second
    commit of the step has another."""
    return {(r.kind, r.state, r.event, r.time) for r in records
            if r.steps == step + 1 and r.kind not in (START, RETRY) and r.event_id is None}


def fan_verdict(soak: Soak, states: dict[str, Any], by_cid: dict[str, list[Execution]],
                problems: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The parents' checks: CHILDREN children each, joined exactly once, after every child ended; figures."""
    once = twice = join_records = 0
    for parent in soak.fan_ids:
        s = states.get(parent)
        records = soak.wait_records.get(parent, [])
        kids = sorted(cid for cid in soak.child_ids if states[cid].last.parent == parent)
        if len(kids) != CHILDREN:
            problems["children_not_started_once"][parent] = kids
        joins = {r.time for r in records if r.event == "children_done" and r.event_id is not None}
        join_records += len(joins)
        runs = [x for x in by_cid.get(parent, []) if x.steps == FAN_STEPS - 1]
        kid_ends = [x.end for cid in kids for x in by_cid.get(cid, []) if x.end is not None]
        early = [f"p2 (pid {x.pid}) started at {x.start:.3f}, before a child's execution ended at {max(kid_ends):.3f}"
                 for x in runs if kid_ends and x.start < max(kid_ends)]
        if early:
            problems["joined_before_children_ended"][parent] = early
        if len(outcomes(records, FAN_STEPS - 1)) > 1:
            twice += 1
            problems["joined_twice"][parent] = sorted(outcomes(records, FAN_STEPS - 1))
        if s is None or s.status != "completed":
            continue  # not_completed says so
        context = s.context
        handed = context.get("children")
        expected = [{"id": cid, "status": states[cid].status, "state": states[cid].state,
                     "context": states[cid].context, "error": states[cid].error} for cid in kids]
        ok = (context.get("trail") == ["p0", "p1", "p2"] and isinstance(handed, list)
              and sorted(handed, key=lambda c: str(c.get("id"))) == expected
              and all(c["status"] == "completed" for c in expected)
              and {x.extra for x in runs} == {CHILDREN})
        if ok and parent not in problems.get("joined_twice", {}):
            once += 1
        elif not ok:
            problems["join_wrong"][parent] = {"trail": context.get("trail"), "children": handed, "expected": expected,
                                              "p2_saw_children": sorted({str(x.extra) for x in runs})}
    return {
        "fan_parents": len(soak.fan_ids),
        "children": len(soak.child_ids),
        "joins_once": once,
        "joined_twice": twice,
        "join_records_in_log": join_records,  # distinct children_done records: several joiners may send one
        # parents whose join had not come JOIN_OVERDUE_S after their last child ended (the engine's joins
        # failed on a read of the log and are not retried): listed by `replay scan`, then redispatched
        "joins_overdue": len(soak.overdue),
        "joins_overdue_listed_by_scan": sum(1 for o in soak.overdue.values() if o["scan_listed"]),
        "join_redispatches": sum(o["redispatches"] for o in soak.overdue.values()),
    }


def wait_verdict(soak: Soak, states: dict[str, Any], by_cid: dict[str, list[Execution]],
                 problems: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The waiting machines' checks (timers never early, each wait resolved once, nothing parked); figures."""
    waits = set(soak.wait_ids)
    early = checked = timeouts_once = applied_once = applied_twice = 0
    late: list[float] = []
    send_latency: list[float] = []  # from the record saying the machine waits in w3 to the first sent event
    event_records = 0
    for n, cid in enumerate(soak.wait_ids):
        records = soak.wait_records.get(cid, [])
        xs = by_cid.get(cid, [])
        s = states.get(cid)
        reached = s.steps if s is not None else 0
        for step, delay in WAIT_DELAYS.items():
            timed = [r for r in records if r.steps == step and r.kind in (START, STEP) and r.due is not None
                     and r.event_id is None]
            runs = [x for x in xs if x.steps == step]
            if not timed:
                if runs or reached > step:
                    problems["timer_missing"][cid] = f"step {step} ran with no record waiting {delay}s before it"
                continue
            wrong = [f"step {step}: due {r.due:.6f}, time {r.time:.6f} + {delay}s" for r in timed
                     if abs(r.due - (r.time + delay)) > 1e-6]
            if wrong:
                problems["timer_due_wrong"][cid] = wrong[:3]
            bound = min(r.time for r in timed) + delay
            if runs:
                checked += 1
                late.append(runs[0].start - bound)
            for x in runs:
                if x.start < bound - CLOCK_SLACK_S:
                    early += 1
                    problems["timer_early"].setdefault(cid, []).append(
                        f"step {step} (pid {x.pid}, token {x.token}) started at {x.start:.3f}, "
                        f"{bound - x.start:.3f}s before its record's time + {delay}s ({bound:.3f})")
            if len(outcomes(records, step)) > 1:
                problems["timer_fired_twice"][cid] = f"step {step}: {sorted(outcomes(records, step))}"
        if s is None or s.status != "completed":
            continue  # not_completed says so
        sent = {(r.time, r.context.get("event_data", {}).get("send")) for r in records
                if r.event_id == f"approve-{cid}"}
        event_records += len(sent)
        idle = [r.time for r in records if r.steps == WAIT_EVENT_STEP and r.state == "w3" and r.event is None]
        if idle and sent:
            send_latency.append(min(t for t, _ in sent) - min(idle))
        context = s.context
        trail = context.get("trail")
        if trail != WAIT_TRAIL:
            problems["wait_trail_wrong"][cid] = {"trail": trail, "expected": WAIT_TRAIL}
        if trail and trail.count("expire") == 1 and len(outcomes(records, 3)) == 1:
            timeouts_once += 1
        tags = sorted({str(x.send) for x in xs if x.steps == WAIT_EVENT_STEP})
        applied = context.get("applied")
        data = context.get("event_data")
        twice = len(tags) > 1 or len(outcomes(records, WAIT_EVENT_STEP)) > 1 or (
            isinstance(applied, list) and len(applied) > 1)
        once = (not twice and isinstance(applied, list) and applied == [data] and isinstance(data, dict)
                and data.get("n") == n and tags == [data.get("send")])
        applied_twice += twice
        applied_once += once
        if not once:
            problems["event_not_applied_once"][cid] = {
                "sends_applied_by_executions": tags, "applied": applied, "event_data": data,
                "outcomes": len(outcomes(records, WAIT_EVENT_STEP)), "event_records": sorted(sent, key=str),
                "sends": soak.sends.get(cid)}
    watched = {*waits, *soak.fan_ids, *soak.child_ids}
    parked = [(cid, reason) for cid, reason in soak.dead_letters if cid in watched]
    for cid, reason in parked:
        problems["dead_letters"].setdefault(cid, []).append(reason[:300])
    said = Counter(what for results in soak.sends.values() for what in results)
    for cid, results in soak.sends.items():
        refused = [what for what in results if " refused " in what]
        if refused:  # the machine waited in w3, or had applied this event_id: nothing to refuse
            problems["event_send_refused"][cid] = refused
    return {
        "wait_machines": len(soak.wait_ids),
        "timers_checked": checked,
        "timers_early": early,
        "timer_late_s": {"min": round(min(late), 3), "mean": round(sum(late) / len(late), 3),
                         "max": round(max(late), 3)} if late else None,
        "timers_fired_twice": len(problems.get("timer_fired_twice", {})),
        "timeouts_fired_once": timeouts_once,
        "events_applied_once": applied_once,
        "events_applied_twice": applied_twice,
        "event_sends": dict(sorted(said.items())),  # per call: which path, which send, what it answered
        "event_records_in_log": event_records,  # distinct sent-event records: 1, or 2 when both sends raced
        "event_sent_after_s": {"mean": round(sum(send_latency) / len(send_latency), 1),
                               "max": round(max(send_latency), 1)} if send_latency else None,
        "dead_letters": {"waiting_fan_child_machines": len(parked), "all": len(soak.dead_letters)},
    }


def report(soak: Soak, figures: dict[str, Any], record_property: Callable[[str, Any], None]) -> None:
    record_property("soak", json.dumps(figures))
    print(f"\nSOAK {json.dumps(figures, sort_keys=False)}")


def assert_clean(soak: Soak, problems: dict[str, dict[str, Any]], figures: dict[str, Any],
                 codes: list[int | None]) -> None:
    if not any(problems.values()):
        return
    offenders: list[str] = []
    for kind in ("overlapping_executions", "step_after_a_later_step", "tokens_not_rising", "timer_early",
                 "timer_fired_twice", "event_not_applied_once", "wait_trail_wrong", "timer_missing",
                 "timer_due_wrong", "dead_letters", "event_send_refused", "joined_twice", "join_wrong",
                 "joined_before_children_ended", "children_not_started_once", "completed_without_running", "not_completed", "not_in_log",
                 "unknown_machine"):
        offenders += [cid for cid in problems.get(kind, {}) if cid not in offenders]
    _, raw, _ = parse_journal(soak.journal_lines())
    parts = [f"failover soak {soak.name!r} broke the guarantees:",
             "problems: " + json.dumps({k: len(v) for k, v in problems.items() if v}),
             "figures: " + json.dumps(figures)]
    for kind, found in problems.items():
        if found:
            sample = dict(list(found.items())[:8])
            parts.append(f"{kind} ({len(found)} machines): " + json.dumps(sample, default=str)[:2500])
    parts.append("journal of the first offenders (oldest first):")
    for cid in offenders[:5]:
        lines = raw.get(cid, [])
        shown = lines[:24]
        parts.append(f"  {cid}: {len(lines)} line(s)")
        parts += [f"    {line[:220]}" for line in shown]
        if len(lines) > len(shown):
            parts.append(f"    ... {len(lines) - len(shown)} more")
    parts.append(f"what the test did: {soak.events}")
    parts.append(f"worker exit codes: {codes}")
    for name, tail in soak.worker_tails().items():
        parts.append(f"--- tail of {name}:\n{tail}")
    message = "\n".join(parts)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + f"\n... ({len(message) - MAX_MESSAGE_CHARS} chars cut)"
    raise AssertionError(message)


# --------------------------------------------------------------------------------------- settings


def embedded_sources(tmp: Path) -> tuple[dict[str, str], str]:
    primary = f"sqlite:///{tmp / 'primary.db'}"
    secondary = f"sqlite:///{tmp / 'secondary.db'}"
    sources = {}
    for kind in SOURCES:
        sources[f"PRIMARY_{kind}_SOURCE"] = primary
        sources[f"SECONDARY_{kind}_SOURCE"] = secondary
    return sources, primary


def metrics_by_side(soak: Soak) -> dict[str, dict[str, int]]:
    """The engine's counters as each side's embedded metrics store holds them (what got through)."""
    from handlers.wiring import open_backend

    settings = load_settings(environ={"FSMLOG_SETTINGS": str(soak.settings_path)}).replace(AWS_CHAOS={})
    out: dict[str, dict[str, int]] = {}
    for side in ("PRIMARY", "SECONDARY"):
        target = settings.source("METRICS", side)
        if not target or not target.startswith("sqlite:"):
            continue
        backend = open_backend("METRICS", target, settings, side)
        try:
            counters: Counter[str] = Counter()
            for (name, _), value in backend.read().items():
                counters[name] += int(value)
        finally:
            close = getattr(backend, "close", None)
            if close is not None:
                close()
        out[side.lower()] = dict(sorted(counters.items()))
    return out


def cli_status_by_side(soak: Soak) -> dict[str, Any]:
    """``fsmlog status --json`` on each side's file on its own (``--db``: no failover, no chaos)."""
    out: dict[str, Any] = {}
    env = clean_environ()
    for side, name in (("primary", "primary.db"), ("secondary", "secondary.db")):
        proc = soak.cli("--db", str(soak.tmp / name), "status", "--json", env=env, check=False)
        if proc.returncode != 0:
            out[side] = f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
            continue
        doc = json.loads(proc.stdout)
        out[side] = doc.get("counts")
    return out


def finish(soak: Soak, states: dict[str, Any], codes: list[int | None], timed_out: bool,
           record_property: Callable[[str, Any], None], extra: Callable[[], dict[str, Any]] | None = None) -> None:
    problems, figures = verdict(soak, states, timed_out)
    figures["worker_exit_codes"] = codes
    figures["faults_injected"] = None  # the chaos layer counts per process (ChaosProxy.injected); no CLI shows it
    abandoned = sum(path.read_text(errors="replace").count("left for redelivery")
                    for path in soak.logs if path.exists())
    figures["abandoned_claims_logged"] = abandoned
    if extra is not None:
        try:
            figures.update(extra())
        except Exception as exc:  # figures only: never hide the verdict behind them
            figures["extra_figures_error"] = f"{type(exc).__name__}: {exc}"
    figures["test_events"] = soak.events
    report(soak, figures, record_property)
    assert_clean(soak, problems, figures, codes)


# --------------------------------------------------------------------------------------- (1) embedded


EMBEDDED_MACHINES = 24
WAIT_MACHINES = 6  # of failover_soak_waits, beside the others (each waits about 2.5 s plus the send)
FAN_MACHINES = 3  # of failover_soak_children, each with CHILDREN children
EMBEDDED_DEADLINE_S = 120.0


@pytest.mark.parametrize("cooldown", ["flapping", "default-cooldown"])
def test_failover_soak_embedded(tmp_path: Path, record_property, cooldown: str) -> None:
    """``flapping``: the primary is tried again 0.5 s after a fault, so every process keeps moving between the
    sides and 25% of the primary's calls fail; ``default-cooldown``: FAILOVER_COOLDOWN_SECONDS left at its
    default (30 s), so a process leaves the primary at its first fault and stays on the secondary for most
    of the run, while the other processes leave it at other moments."""
    sources, primary = embedded_sources(tmp_path)
    tuning = dict(TUNING)
    if cooldown == "default-cooldown":
        del tuning["FAILOVER_COOLDOWN_SECONDS"]
    soak = Soak(f"embedded-{cooldown}", tmp_path, EMBEDDED_MACHINES, EMBEDDED_DEADLINE_S, {
        **sources,
        **tuning,
        "AWS_CHAOS": {primary: {"ServiceUnavailable": FAULT_P}},  # the primary's URL: the secondary is spared
    }, wait_machines=WAIT_MACHINES, fan_machines=FAN_MACHINES)
    states, codes, timed_out = run_soak(soak, ["worker", str(FSM), "--batch", "10"])

    def extra() -> dict[str, Any]:
        return {"metrics": metrics_by_side(soak), "cli_status": cli_status_by_side(soak)}

    finish(soak, states, codes, timed_out, record_property, extra)


# --------------------------------------------------------------------------------------- (2) AWS over moto


MOTO_MACHINES = 12
MOTO_WAIT_MACHINES = 2  # one sent to through the client first, one through the CLI first
MOTO_FAN_MACHINES = 1
MOTO_DEADLINE_S = 160.0  # 130 s before the waiting machines; starts alone took 40 s on a loaded 2-core host


def aws_sources(tag: str) -> tuple[dict[str, str], list[str]]:
    """Both sides of every source as AWS resources; returns the settings and the primary ARNs."""
    sources: dict[str, str] = {}
    primaries: list[str] = []
    for side, letter in (("PRIMARY", "p"), ("SECONDARY", "s")):
        name = f"fsmlog-fo-{tag}-{letter}"
        table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}-"
        side_sources = {
            "STREAM": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}",
            "CHECKPOINT": table + "checkpoints",
            "RETRY": table + "retries",
            "CACHE": table + "cache",
            "ENVIRONMENT": table + "environment",
            "DEAD_LETTER": table + "dead-letters",
            "METRICS": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:namespace/{name}",
        }
        for kind, arn in side_sources.items():
            sources[f"{side}_{kind}_SOURCE"] = arn
            if side == "PRIMARY":
                primaries.append(arn)
    return sources, primaries


def test_failover_soak_moto(tmp_path: Path, moto_server: str, record_property) -> None:
    sources, primaries = aws_sources(uuid.uuid4().hex[:8])
    soak = Soak("moto", tmp_path, MOTO_MACHINES, MOTO_DEADLINE_S, {
        **sources,
        **TUNING,
        "AWS_REGION": REGION,
        "ENDPOINTS": {arn: moto_server for arn in sources.values()},
        "AWS_CHAOS": {arn: {"ServiceUnavailable": FAULT_P} for arn in primaries},
    }, poll_s=2.0, wait_machines=MOTO_WAIT_MACHINES, fan_machines=MOTO_FAN_MACHINES)
    soak.cli("resources", "create", "--shards", "1", timeout=120)
    soak.note("resources created")
    # `fsmlog dev` is the CLI's loop over AWS sources: Lambda's pollers (every shard of both streams, from
    # TRIM_HORIZON: each process sees every record, as three event source mappings would) and the retry timer
    states, codes, timed_out = run_soak(
        soak, ["dev", str(FSM), "--batch", "10", "--timer", "0.5", "--quiet"],
        oracle_env={"AWS_DEFAULT_REGION": REGION},
    )
    finish(soak, states, codes, timed_out, record_property)


# --------------------------------------------------------------------------------------- (3) Redis restarted


REDIS_MACHINES = 24
REDIS_DEADLINE_S = 120.0
REDIS_RESTART_SHARE = 1 / 3  # restart once this share of the steps ended ...
REDIS_RESTART_LATEST_S = 25.0  # ... or this long after the workers' start, whichever comes first
REDIS_DOWN_S = 1.0


@pytest.fixture
def own_redis() -> Iterator[Any]:
    """A redis-server of this test's own (the session's is shared with other tests): restarting it wipes
    nothing anyone else relies on."""
    from tests.fixtures.cache_servers import ServerProcess, _ensure_binary, _free_port

    binary = _ensure_binary("redis-server")
    port = _free_port()
    server = ServerProcess("redis-server", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                            "--appendonly", "no", "--maxmemory-policy", "noeviction"], port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_failover_soak_redis_restarted(tmp_path: Path, own_redis: Any, record_property) -> None:
    sources, primary = embedded_sources(tmp_path)
    sources["PRIMARY_CACHE_SOURCE"] = f"redis://127.0.0.1:{own_redis.port}/0"
    soak = Soak("redis", tmp_path, REDIS_MACHINES, REDIS_DEADLINE_S, {
        **sources,
        **TUNING,
        # the embedded primaries fail on purpose as in (1); Redis fails for real, by being restarted
        "AWS_CHAOS": {primary: {"ServiceUnavailable": FAULT_P}},
        # parents too: a join redispatched after the restart must still be taken though the cache forgot
        # the parent (tests/unit/test_redispatched_wait_cache_forgot.py)
    }, wait_machines=WAIT_MACHINES, fan_machines=FAN_MACHINES)
    restarted: list[float] = []

    def on_tick(s: Soak, ended_lines: int) -> None:
        if restarted:
            return
        if (ended_lines < REDIS_RESTART_SHARE * s.machines * STEPS
                and s.elapsed() - s.workers_at < REDIS_RESTART_LATEST_S):
            return
        s.note(f"redis-server killed after {ended_lines} ended executions")
        own_redis.stop()
        time.sleep(REDIS_DOWN_S)
        own_redis.start()
        restarted.append(s.elapsed())
        s.note("redis-server started again on the same port, empty")

    states, codes, timed_out = run_soak(soak, ["worker", str(FSM), "--batch", "10"], on_tick=on_tick)

    def extra() -> dict[str, Any]:
        return {"redis_restarts": len(restarted), "metrics": metrics_by_side(soak),
                "cli_status": cli_status_by_side(soak)}

    finish(soak, states, codes, timed_out, record_property, extra)
    assert restarted, "the machines ended before redis-server was restarted: raise REDIS_MACHINES"
