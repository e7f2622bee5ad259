"""``fsmlog replay`` (scan, rebuild, redispatch) over both stream sides and the checkpoint store.

Issue 9, items 2 and 7: replay read only the primary stream, used a snapshot's
secondary position to read the primary, and saw only machines with records
still in the stream. Here the stream has a secondary embedded log (b.db) next
to the primary (a.db, which also holds every other source).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventlog.codec import encode
from eventlog.event import START, STEP, Event
from eventlog.log import OutRecord
from eventlog.settings import SOURCES, load_settings
from eventlog.sides import PRIMARY, SECONDARY, split_position, tag_position
from handlers.wiring import open_services
from projections.fold import fold
from projections.state import MachineState, Snapshot, encode_snapshot
from replay.rebuild import rebuild, redispatch_many
from replay.scan import list_snapshots, refresh_snapshots, scan

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


def settings_for(tmp_path: Path):
    a = f"sqlite:///{tmp_path / 'a.db'}"
    values = {f"PRIMARY_{k}_SOURCE": a for k in SOURCES}
    values["SECONDARY_STREAM_SOURCE"] = f"sqlite:///{tmp_path / 'b.db'}"
    return load_settings(environ={}, **values)


@pytest.fixture
def services(tmp_path):
    svc = open_services(settings_for(tmp_path))
    yield svc
    svc.close()


def events(cid: str, steps: int, *, t0: float = T0) -> list[Event]:
    out = [Event.create(START, cid, "order", "h1", 0, 0, "s0", None, t0, {"n": 0})]
    out += [Event.create(STEP, cid, "order", "h1", i, 0, f"s{i}", "go", t0 + i, {"n": i})
            for i in range(1, steps + 1)]
    return out


def put(log, evs: list[Event]) -> list[str]:
    return log.append([OutRecord(e.correlation_id, encode(e)) for e in evs])


def snapshot(services, evs: list[Event], position: str) -> None:
    state = fold(None, evs)
    assert services.checkpoints.save(state.correlation_id, state.version,
                                     encode_snapshot(Snapshot(state, position, state.definition_hash)))


def test_scan_folds_both_streams_and_finds_a_machine_whose_next_record_is_on_the_secondary(services):
    split = events("split", 2)  # started on the primary, its next records written while failed over
    put(services.log.primary, split[:1])
    put(services.log.secondary, split[1:])
    only_b = events("only-b", 1, t0=T0 + 50)
    put(services.log.secondary, only_b)

    result = scan(services.log, services.checkpoints, now=T0 + 3600, stalled_after_s=600)

    assert result.states["split"] == fold(None, split)
    assert result.states["only-b"] == fold(None, only_b)
    assert result.records == len(split) + len(only_b)
    assert {s.correlation_id for s in result.stalled} == {"split", "only-b"}
    assert split_position(result.positions["split"])[0] == PRIMARY  # it has primary records: theirs
    assert split_position(result.positions["only-b"])[0] == SECONDARY
    assert set(result.side_positions) == {PRIMARY, SECONDARY}


def test_a_snapshot_position_on_the_secondary_is_read_on_the_secondary(services):
    evs = events("m", 5)
    positions = put(services.log.secondary, evs[:3])  # steps 0-2 on the secondary
    put(services.log.primary, evs[3:])  # steps 3-5 on the primary, after it came back
    snapshot(services, evs[:2], tag_position(SECONDARY, positions[1]))

    rebuilt = rebuild("m", services)

    assert rebuilt.rebuilt_state == fold(None, evs)
    # after the snapshot: the secondary's third record, and every record of the primary
    assert sorted(e.steps for e in rebuilt.tail_events) == [2, 3, 4, 5]
    assert {split_position(r.position)[0] for r in rebuilt.records} == {PRIMARY, SECONDARY}


def test_a_primary_snapshot_still_sees_records_on_the_secondary(services):
    evs = events("m", 3)
    positions = put(services.log.primary, evs[:2])
    put(services.log.secondary, evs[2:])
    snapshot(services, evs[:2], positions[1])
    assert rebuild("m", services).rebuilt_state == fold(None, evs)


def test_a_running_machine_only_the_checkpoint_store_knows_is_scanned_and_redispatched(services):
    """Its records have left the stream (retention): only its snapshot says it is running."""
    gone = events("gone", 2)
    snapshot(services, gone, "41")  # a position whose records are no longer kept
    ended = events("ended", 1)
    ended_state = fold(None, ended).last.evolve(kind="completed", steps=2, state="done")
    assert services.checkpoints.save("ended", 3, encode_snapshot(
        Snapshot(MachineState(ended_state), "7", "h1")))
    put(services.log.primary, events("live", 1, t0=T0 + 3500))

    result = scan(services.log, services.checkpoints, now=T0 + 3600, stalled_after_s=600)

    assert result.from_checkpoints == ["gone"]  # not the ended one
    assert "gone" in result.states and "ended" not in result.states
    assert [s.correlation_id for s in result.stalled] == ["gone"]
    report = refresh_snapshots(result, services.checkpoints, now=T0 + 3600, max_age_s=0)
    assert "gone" not in report.written  # its snapshot is its latest state already

    ((rebuilt, retry),) = redispatch_many(["gone"], services, dry_run=False)
    assert retry is not None and retry.steps == 2 and retry.retries == 1
    again = scan(services.log, services.checkpoints, now=T0 + 3600, stalled_after_s=600)
    assert again.states["gone"].retries == 1 and "gone" not in again.from_checkpoints


class _Unlistable:
    """A checkpoint store with only the interface: it cannot list its snapshots."""

    name = "custom-checkpoints"

    def save(self, cid, version, data):
        return True

    def load(self, cid):
        return None


def test_a_checkpoint_store_that_cannot_list_is_named_not_skipped_silently(services):
    put(services.log.primary, events("m", 1))
    result = scan(services.log, _Unlistable(), now=T0, stalled_after_s=600)
    assert any("custom-checkpoints" in n and "cannot list" in n for n in result.notes), result.notes
    assert list_snapshots(_Unlistable()).complete is False


def test_refreshed_snapshots_of_secondary_only_machines_name_the_secondary(services):
    evs = events("b-only", 2)
    put(services.log.secondary, evs)
    result = scan(services.log, services.checkpoints, now=T0, stalled_after_s=600)
    report = refresh_snapshots(result, services.checkpoints, now=T0 + 10, max_age_s=0)
    assert report.written == ["b-only"]
    rebuilt = rebuild("b-only", services)
    assert split_position(rebuilt.snapshot.position)[0] == SECONDARY
    assert rebuilt.tail_events == () and rebuilt.rebuilt_state == fold(None, evs)


def test_fsmlog_replay_scan_and_machine_cover_both_streams_and_snapshots(tmp_path):
    settings = settings_for(tmp_path)
    services = open_services(settings)
    try:
        split = events("split", 2)
        put(services.log.primary, split[:1])
        put(services.log.secondary, split[1:])
        snapshot(services, events("gone", 1), "99")
    finally:
        services.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_") and not k.endswith("_SOURCE")}
    env.update({k: str(v) for k, v in settings.values.items() if k.endswith("_SOURCE") and v},
               PYTHONPATH=str(ROOT), COLUMNS="80")

    def fsmlog(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fsmlog.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=180)

    proc = fsmlog("replay", "scan", "--json", "--stalled-after", "1m")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["from_checkpoints"] == ["gone"]
    stalled = {row["correlation_id"]: row for row in doc["stalled"]}
    assert stalled["split"]["steps"] == 2 and stalled["gone"]["snapshot_only"] is True
    assert "b.db" in doc["log"]

    text = fsmlog("replay", "scan", "--stalled-after", "1m")
    assert text.returncode == 0, text.stderr
    assert "only from their snapshot" in text.stdout
    ours = [line for line in text.stdout.splitlines() if "snapshot" in line or "note:" in line]
    assert ours and max(len(line) for line in ours) <= 80, text.stdout

    one = fsmlog("replay", "machine", "split", "--json")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["machine"]["steps"] == 2


def test_the_kcl_application_can_read_the_secondary_stream_too(tmp_path):
    """One daemon per stream, its own lease table, both folding into one projection file; the secondary's
    shards are noted as such (both streams have a shardId-000000000000)."""
    pytest.importorskip("amazon_kclpy")
    from replay.kcl_processor import ReplayProcessor
    from replay.kcl_properties import write_properties_for
    from replay.scan import ProjectionFile

    settings = load_settings(environ={}, PRIMARY_STREAM_SOURCE="arn:aws:kinesis:us-east-1:123456789012:stream/a",
                             SECONDARY_STREAM_SOURCE="arn:aws:kinesis:us-west-2:123456789012:stream/b")
    text = write_properties_for(settings, tmp_path / "b.properties", application_name="replay-b",
                                state_path=tmp_path / "p.db", side="secondary")
    lines = set(text.splitlines())
    assert {"streamName = b", "regionName = us-west-2", "applicationName = replay-b"} <= lines
    assert any(line.startswith("executableName = ") and line.endswith("--side secondary") for line in lines)

    class Init:
        shard_id = "shardId-000000000000"
        sequence_number = None

    projections = ProjectionFile(tmp_path / "p.db")
    try:
        proc = ReplayProcessor(projections, side=SECONDARY)
        proc.initialize(Init())
        assert proc.shard_id == "secondary|shardId-000000000000"
    finally:
        projections.close()


def test_a_scan_of_the_kcl_projection_file_lists_checkpoint_only_machines_too(tmp_path):
    from replay.scan import ProjectionFile

    settings = settings_for(tmp_path)
    services = open_services(settings)
    try:
        snapshot(services, events("gone", 1), "99")
    finally:
        services.close()
    pf = ProjectionFile(tmp_path / "proj.db")
    try:
        pf.merge({"seen": fold(None, events("seen", 1))}, shard_id="shardId-000000000000", sequence="1", records=2)
    finally:
        pf.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_") and not k.endswith("_SOURCE")}
    env.update({k: str(v) for k, v in settings.values.items() if k.endswith("_SOURCE") and v},
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "fsmlog.cli", "replay", "scan", "--json", "--projections",
                           "proj.db"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["from_checkpoints"] == ["gone"]
    assert sorted(row["correlation_id"] for row in doc["stalled"]) == ["gone", "seen"]


def test_dynamodb_checkpoints_are_listed_for_the_scan(moto_server):
    from projections.checkpoints.dynamodb import DynamoDBCheckpoints
    from tests.fixtures.servers import make_resources
    from tests.fixtures.servers import settings_for as aws_settings

    table = make_resources(moto_server, "checkpoints")["checkpoints"]
    store = DynamoDBCheckpoints(table, aws_settings(moto_server, [table]))
    for cid in ("x", "y"):
        state = fold(None, events(cid, 2))
        assert store.save(cid, state.version, encode_snapshot(Snapshot(state, "5", state.definition_hash)))
    listing = list_snapshots(store)
    assert listing.complete and listing.notes == []
    assert sorted(listing.snapshots) == ["x", "y"] and listing.snapshots["x"].state.steps == 2
