"""Each fault metric is counted, on the embedded sink, in the scenario that produces it.

Failovers and PrimaryRecovered (a stream whose primary fails, then answers again), LeaseLost (a
holder whose lease expired and was taken), LeaseRenewals, StepsSkippedAsDone (a completed step
delivered again), DuplicateDeliveries (one attempt twice in a batch), PoisonRecords and
OldestRecordAgeMs; and the failover log line, rate-limited per source.
"""

from __future__ import annotations

import json
import logging

import pytest

from eventlog.errors import ServiceUnavailable
from eventlog.failover import FAILOVER, RECOVERED, FailoverLog, FailoverProxy
from handlers.engine import Inbound
from handlers.metrics import Datum, MetricBuffer
from handlers.metrics.failovers import watch

HERE = __name__
ACTS: dict = {}


def quick(context, obj):
    return "ok"


def outlasts_lease(context, obj):
    """Runs past its lease; meanwhile another worker takes the machine."""
    ACTS["clock"].t += ACTS["lease_s"] + 1
    ACTS["rival"].gate.begin(context.correlation_id, context.steps)
    return "ok"


def half_a_lease(context, obj):
    ACTS["clock"].t += ACTS["lease_s"] / 2
    return "ok"


def one_step(name: str, action: str) -> dict:
    return {"name": name, "states": [
        {"name": "a", "initial": True, "do_action": f"{HERE}.{action}", "transitions": [{"event": "ok", "target": "b"}]},
        {"name": "b", "final": True}]}


def totals(rig, name: str) -> dict:
    """Every dimension set of ``name`` on the embedded sink, as {dimensions: value}."""
    return {dims: v for (n, dims), v in rig.services.metrics.read().items() if n == name}


class Flaky:
    """A backend that fails every call while ``down``."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.down = False

    def __getattr__(self, attr):
        target = getattr(self.inner, attr)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            if self.down:
                raise ServiceUnavailable(f"{self.name} is down (test)")
            return target(*args, **kwargs)

        return call


def test_a_failover_and_the_primary_recovering_are_counted_by_source_and_logged(rig_factory, tmp_path, caplog):
    rig = rig_factory([one_step("m", "quick")], SECONDARY_STREAM_SOURCE=f"sqlite:///{tmp_path}/second.db",
                      FAILOVER_COOLDOWN_SECONDS=30)
    pair = rig.services.log
    assert isinstance(pair, FailoverProxy)
    pair.primary = Flaky(pair.primary)
    pair._clock = rig.clock
    pair.primary.down = True
    with caplog.at_level(logging.WARNING, logger="fsmlog.failover"):
        rig.engine.start("m")  # the append goes to the secondary
        rig.engine.start("m")  # the primary is skipped for its cool-down: the secondary serves again
        assert totals(rig, "Failovers") == {(("source", "STREAM"),): 2.0}
        pair.primary.down = False
        rig.clock.t += 31  # past the cool-down: the primary is asked again, and answers
        rig.engine.start("m")
    assert totals(rig, "Failovers") == {(("source", "STREAM"),): 2.0}
    assert totals(rig, "PrimaryRecovered") == {(("source", "STREAM"),): 1.0}
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "fsmlog.failover"]
    assert [(x["event"], x["source"], x["side"]) for x in lines] == [
        ("failover", "STREAM", "secondary"), ("recovered", "STREAM", "primary")]
    assert "is down (test)" in lines[0]["error"] and lines[0]["name"] == pair.name


def test_failover_lines_are_rate_limited_per_source_with_a_suppressed_count(caplog):
    now = [0.0]
    flog = FailoverLog(every_s=10.0, clock=lambda: now[0])
    formatted = []

    def error():
        formatted.append(1)
        return "timeout\n  on redis://a"

    with caplog.at_level(logging.WARNING, logger="fsmlog.failover"):
        assert flog.note("CACHE", FAILOVER, "secondary", "redis://a", 1, error)
        assert not flog.note("CACHE", FAILOVER, "secondary", "redis://a", 2, error)
        assert not flog.note("CACHE", FAILOVER, "secondary", "redis://a", 3, error)
        assert flog.note("STREAM", FAILOVER, "secondary", "sqlite:///x", 1, lambda: "busy")  # another source
        assert flog.note("CACHE", RECOVERED, "primary", "redis://a", 1)  # another change
        now[0] = 10.0
        assert flog.note("CACHE", FAILOVER, "secondary", "redis://a", 4, error)
    lines = [json.loads(r.getMessage()) for r in caplog.records]
    assert [(x["source"], x["event"], x["suppressed"]) for x in lines] == [
        ("CACHE", "failover", 0), ("STREAM", "failover", 0), ("CACHE", "recovered", 0), ("CACHE", "failover", 2)]
    assert lines[0]["error"] == "timeout on redis://a" and "error" not in lines[2]
    assert len(formatted) == 2  # a line held back never formats its error


def test_a_pairs_counts_are_taken_once_however_many_engines_watch_it():
    class Side:
        name = "side"

    pair = FailoverProxy("CHECKPOINT", Side(), Side())
    first, second = watch([pair, object()]), watch([pair])
    assert first.pairs == second.pairs == (pair,)
    pair.failovers += 1  # as its routing counts a call the secondary served
    pair._note_failover("boom")
    pair._note_primary_ok()
    pair._note_primary_ok()  # no failover since: not a recovery
    buf = MetricBuffer()
    first.drain_into(buf)
    second.drain_into(buf)  # another engine's flush over the same services: nothing new
    assert sorted(buf.drain()) == [Datum("Failovers", 1.0, (("source", "CHECKPOINT"),)),
                                   Datum("PrimaryRecovered", 1.0, (("source", "CHECKPOINT"),))]
    assert pair.take_counts() == (0, 0)


def test_a_holder_whose_lease_expired_and_was_taken_counts_lease_lost(rig_factory):
    rig = rig_factory([one_step("slow", "outlasts_lease")])
    rig.engine.keep_leases_in_thread = False
    rig.services.cache.clock = rig.clock
    ACTS.update(clock=rig.clock, lease_s=rig.settings.LEASE_SECONDS, rival=rig.make_engine(worker_id="rival"))
    rig.engine.start("slow")
    batch = rig.next_batch()
    result = rig.engine.handle(batch)
    assert result.handled == 0 and result.failed_item_ids == [batch[0].item_id]
    assert totals(rig, "LeaseLost") == {(("machine", "slow"), ("side", "primary")): 1.0}


def test_leases_renewed_while_a_batch_runs_are_counted_per_machine(rig_factory):
    rig = rig_factory([one_step("long", "half_a_lease"), one_step("short", "quick")])
    rig.engine.keep_leases_in_thread = False  # renewed between records, on the injected clock
    ACTS.update(clock=rig.clock, lease_s=rig.settings.LEASE_SECONDS)
    rig.engine.start("long")
    rig.engine.start("short")
    result = rig.engine.handle(rig.next_batch())
    assert result.handled == 2
    assert totals(rig, "LeaseRenewals") == {(("machine", "long"),): 1.0, (("machine", "short"),): 1.0}


def test_a_completed_step_delivered_again_is_skipped_as_done_and_copies_in_a_batch_are_duplicates(rig_factory):
    rig = rig_factory([one_step("m", "quick")])
    rig.engine.start("m")
    batch = rig.next_batch()
    assert rig.engine.handle(batch + batch).handled == 1  # the same record twice in one batch
    assert totals(rig, "DuplicateDeliveries") == {(("machine", "m"),): 1.0}
    assert totals(rig, "StepsSkippedAsDone") == {}
    assert rig.engine.handle(batch).skipped == 1  # delivered again after its step completed
    assert totals(rig, "StepsSkippedAsDone") == {(("machine", "m"),): 1.0}


def test_the_oldest_record_a_batch_saw_is_a_gauge_from_the_records_time(rig_factory):
    rig = rig_factory([one_step("m", "quick")])
    rig.engine.start("m")
    rig.clock.t += 2.5
    rig.engine.start("m")
    rig.clock.t += 1.0
    batch = rig.next_batch()
    rig.engine.handle(batch)
    assert totals(rig, "OldestRecordAgeMs") == {(): 3500.0}
    # a later batch with younger records does not lower what the sink keeps (the greatest is kept)
    rig.engine.start("m")
    rig.clock.t += 1.0
    rig.engine.handle(rig.next_batch())
    assert totals(rig, "OldestRecordAgeMs") == {(): 3500.0}


def test_a_poison_record_is_counted(rig_factory):
    rig = rig_factory([one_step("m", "quick")])
    rig.engine.handle([Inbound("1", b"\x00not a record", rig.log.name, "1")])
    assert totals(rig, "PoisonRecords") == {(): 1.0}


def test_a_gauge_keeps_the_greatest_value_and_survives_a_failed_flush():
    class Down:
        name = "down"

        def put(self, data):
            raise ServiceUnavailable("metrics down")

    buf = MetricBuffer()
    buf.gauge("OldestRecordAgeMs", 40)
    buf.gauge("OldestRecordAgeMs", 900)
    buf.gauge("OldestRecordAgeMs", 10)
    with pytest.raises(ServiceUnavailable):
        buf.flush(Down())
    buf.gauge("OldestRecordAgeMs", 300)
    assert buf.drain() == [Datum("OldestRecordAgeMs", 900, (), "Milliseconds")]


def test_a_redriven_dead_letter_is_counted_by_machine(rig_factory):
    from eventlog.codec import encode
    from eventlog.event import START, Event
    from fsmlog.cli import Runtime
    from fsmlog.cli.deadletters import redrive

    rig = rig_factory([one_step("m", "quick")])
    stray = Event.create(START, "c1", "stray", "0" * 16, 0, 0, "a", None, rig.clock(), {})  # no such machine here
    assert rig.engine.handle([Inbound("p1", encode(stray), rig.log.name, "p1")]).parked == 1
    (letter,) = rig.services.dead_letters.list(10)
    assert redrive(Runtime(rig.settings, rig.services, rig.engine), letter) == "c1"
    assert totals(rig, "DeadLettersRedriven") == {(("machine", "stray"),): 1.0}
    assert rig.services.dead_letters.list(10) == []


def test_the_cache_pair_and_the_retry_pair_report_failovers_and_recoveries_by_source(tmp_path):
    from handlers.cache.failover import FailoverSteps
    from handlers.cache.sqlite import SqliteCache
    from handlers.gate import Gate
    from handlers.retries import ScheduledRetry
    from handlers.retries.failover import FailoverRetries
    from handlers.retries.sqlite import SqliteRetries

    caches = [Flaky(SqliteCache(f"sqlite:///{tmp_path}/{n}.db")) for n in ("c1", "c2")]
    cache = FailoverSteps(*caches, failover_after_s=0.0, sleep=lambda s: None)
    stores = [Flaky(SqliteRetries(f"sqlite:///{tmp_path}/{n}.db")) for n in ("r1", "r2")]
    retries = FailoverRetries(*stores, cooldown_s=0.0)
    counts = watch([cache, retries])
    gate = Gate(cache, "w", 600.0, 3600.0)
    caches[0].down = stores[0].down = True
    assert gate.begin("m1", 1).side == "secondary"
    retries.schedule([ScheduledRetry("m1", b"x", 0.0)])
    caches[0].down = stores[0].down = False
    assert gate.begin("m2", 1).side == "primary"
    retries.schedule([ScheduledRetry("m2", b"y", 0.0)])
    buf = MetricBuffer()
    counts.drain_into(buf)
    assert sorted(buf.drain()) == [
        Datum("Failovers", 1.0, (("source", "CACHE"),)), Datum("Failovers", 1.0, (("source", "RETRY"),)),
        Datum("PrimaryRecovered", 1.0, (("source", "CACHE"),)), Datum("PrimaryRecovered", 1.0, (("source", "RETRY"),))]
    for side in caches + stores:
        side.inner.close()


def test_emf_lines_go_to_stdout_unless_the_command_line_asks_for_stderr(capsys):
    from handlers.metrics import emf

    sink = emf.EmfMetrics("shop")
    sink.put([Datum("Failovers", 1, (("source", "STREAM"),))])
    was = emf.send_to_stderr()
    try:
        sink.put([Datum("LeaseLost", 1, (("machine", "m"), ("side", "primary")))])
    finally:
        emf.send_to_stderr(was)
    out, err = capsys.readouterr()
    assert [json.loads(x)["Failovers"] for x in out.splitlines()] == [1]  # on Lambda: stdout
    assert [json.loads(x)["LeaseLost"] for x in err.splitlines()] == [1]  # in the CLI: stderr
