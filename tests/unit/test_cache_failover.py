"""``handlers.cache.failover.FailoverSteps`` over two embedded caches, each behind a switch.

Each side is a ``SqliteCache`` file behind ``Side``, which raises ``ServiceUnavailable`` while
it is down (or per call, from a plan of failures). The gate (``handlers.gate.Gate``) drives the
pair as the engine does. What must hold:

* every admission tries the primary first; the moment it answers again, admissions are on it;
* a lease taken on the secondary is renewed and released on the secondary;
* marks written on either side are seen by an admission on the other;
* an admission whose other side cannot be read is either done or of no knowledge (the gate
  then asks the log), never "known and not done";
* both sides down raises ``ServiceUnavailable`` naming both.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog.errors import BackendError, ServiceUnavailable
from handlers.cache.failover import FailoverSteps
from handlers.cache.sqlite import SqliteCache
from handlers.cache.steps import (
    DONE,
    TRIED,
    Ending,
    StepKey,
    StepView,
    completed_ordinal,
    ordinal,
    token_floor,
)
from handlers.gate import Gate

HOLD = 600.0  # a lease that never runs out during a test
DEDUPE = 3600.0


class Side:
    """A ``StepCache`` that raises ``ServiceUnavailable`` while ``down``, or per call from ``plan``
    (``True``: that call fails; once the plan is used up, ``down`` decides). Every call is logged as
    ``(method, failed, releases)``, ``releases`` telling an end that gives leases back from a copy
    of marks."""

    def __init__(self, cache: SqliteCache, label: str) -> None:
        self.cache = cache
        self.label = label
        self.name = f"{label}-{Path(cache.name).name}"
        self.down = False
        self.plan: list[bool] = []
        self.calls: list[tuple[str, bool, bool]] = []

    def _enter(self, method: str, releases: bool = False) -> None:
        failing = self.plan.pop(0) if self.plan else self.down
        self.calls.append((method, failing, releases))
        if failing:
            raise ServiceUnavailable(f"{self.name} is down ({method})")

    def count(self, method: str, *, failed: bool | None = None) -> int:
        return sum(1 for m, f, _ in self.calls if m == method and (failed is None or f == failed))

    def begin_steps(self, items, owner, ttl_s):
        self._enter("begin_steps")
        return self.cache.begin_steps(items, owner, ttl_s)

    def end_steps(self, items, owner, dedupe_s):
        self._enter("end_steps", any(e.token is not None for e in items))
        return self.cache.end_steps(items, owner, dedupe_s)

    def renew_leases(self, items, owner, ttl_s):
        self._enter("renew_leases")
        return self.cache.renew_leases(items, owner, ttl_s)

    def peek_steps(self, items):
        self._enter("peek_steps")
        return self.cache.peek_steps(items)

    def abort_machine(self, cid, dedupe_s):
        self._enter("abort_machine")
        return self.cache.abort_machine(cid, dedupe_s)

    def close(self) -> None:
        self.cache.close()


def _no_sleep(_s: float) -> None:
    pass


def _pair(primary: Side, secondary: Side, **options) -> FailoverSteps:
    """The pair as the tests need it: leases move at the first failure of the primary, no sleeping
    between tries."""
    options.setdefault("failover_after_s", 0.0)
    options.setdefault("sleep", _no_sleep)
    return FailoverSteps(primary, secondary, **options)


def _cid() -> str:
    return f"m-{uuid.uuid4().hex[:12]}"


def _holder(side: Side, cid: str) -> tuple[str, int] | None:
    return side.cache.holder(f"lease:{cid}")


def _mark(side: Side, cid: str) -> int | None:
    return side.cache.peek_steps([StepKey(cid, 0, 0)])[0].mark


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    return f"sqlite:///{tmp_path / 'primary.db'}", f"sqlite:///{tmp_path / 'secondary.db'}"


@pytest.fixture
def sides(files: tuple[str, str]) -> Iterator[tuple[Side, Side]]:
    p, s = Side(SqliteCache(files[0]), "primary"), Side(SqliteCache(files[1]), "secondary")
    yield p, s
    p.close()
    s.close()


def _worker(files: tuple[str, str]) -> tuple[Side, Side]:
    """Another worker's own connections to the same two caches (and its own switches)."""
    return Side(SqliteCache(files[0]), "primary"), Side(SqliteCache(files[1]), "secondary")


# ---------------------------------------------------------------- where leases are taken


def test_admissions_are_on_the_primary_while_it_answers(sides):
    p, s = sides
    pair = _pair(p, s)
    gate = Gate(pair, "w", HOLD, DEDUPE)
    cid = _cid()
    adm = gate.begin(cid, 1)
    assert adm.token is not None and adm.side == "primary" and adm.token >= token_floor(1, 0)
    assert _holder(p, cid) == ("w", adm.token) and _holder(s, cid) is None
    assert s.count("begin_steps") == 0 and s.count("peek_steps") == 1  # the secondary is only read
    gate.end(cid, 1, adm.token, True)
    assert _holder(p, cid) is None
    assert _mark(p, cid) == _mark(s, cid) == completed_ordinal(1)  # the mark is copied over
    assert (pair.failovers, pair.split, pair.unverified) == (0, 0, 0)


def test_every_admission_tries_the_primary_first_and_is_back_on_it_the_moment_it_answers(sides):
    p, s = sides
    pair = _pair(p, s)
    gate = Gate(pair, "w", HOLD, DEDUPE)
    p.down = True
    on_secondary = [gate.begin(_cid(), 1) for _ in range(3)]
    assert all(a.token is not None and a.side == "secondary" for a in on_secondary)
    assert p.count("begin_steps", failed=True) >= 3  # each admission asked the primary first
    assert (pair.failovers, pair.split) == (3, 3)
    assert isinstance(pair.last_error, ServiceUnavailable)
    p.down = False  # recovered: no cool-down, the very next admission is on the primary
    cid = _cid()
    back = gate.begin(cid, 1)
    assert back.side == "primary" and _holder(p, cid) == ("w", back.token) and _holder(s, cid) is None
    assert (pair.failovers, pair.split) == (3, 3)
    p.down = True  # and down again: the next one is on the secondary again
    assert gate.begin(_cid(), 1).side == "secondary"
    assert pair.failovers == 4


def test_a_lease_taken_on_the_secondary_is_renewed_and_released_there(sides):
    p, s = sides
    pair = _pair(p, s)
    gate = Gate(pair, "w", HOLD, DEDUPE)
    cid = _cid()
    p.down = True
    adm = gate.begin(cid, 2)
    assert adm.side == "secondary" and _holder(s, cid) == ("w", adm.token) and _holder(p, cid) is None
    p.down = False  # the primary recovers while the lease is held on the secondary
    renewals = p.count("renew_leases")
    assert gate.renew([(cid, adm.token)]) == [True]
    assert p.count("renew_leases") == renewals  # never asked of the primary, which knows nothing of it
    assert _holder(s, cid) == ("w", adm.token)
    gate.end(cid, 2, adm.token, True)
    assert _holder(s, cid) is None  # released where it was taken
    assert [r for m, _, r in p.calls if m == "end_steps"] == [False]  # the primary only got the mark
    assert _mark(s, cid) == _mark(p, cid) == completed_ordinal(2)
    nxt = Gate(pair, "other", HOLD, DEDUPE).begin(cid, 3)
    assert nxt.side == "primary" and nxt.known and not nxt.done


def test_the_side_of_a_lease_is_remembered_even_when_both_sides_issue_the_same_token(sides):
    """A record admitted on the secondary, then a copy of it on the primary once it is back: each lease
    is renewed and released on the side that took it.

    Both sides issue the record's floor as its first token, so the two leases would carry the same
    token: the side could not be told by ``(cid, token)`` alone, and the secondary's lease would be
    renewed on the primary (its keeper believing it held while it runs out, and another worker cut off
    from the primary taking it: two holders on the secondary) and its release would free the primary's
    lease. The pair takes the clashing lease once more, so each lease has its own token."""
    p, s = sides
    pair = _pair(p, s)
    gate = Gate(pair, "w", HOLD, DEDUPE)
    cid = _cid()
    p.down = True
    old = gate.begin(cid, 1)
    p.down = False
    new = gate.begin(cid, 1)
    assert (old.side, new.side) == ("secondary", "primary")
    assert old.token == token_floor(1, 0)  # both sides would issue the floor: the pair takes the primary's
    assert new.token > old.token  # lease once more, so (cid, token) names one lease on one side
    gate.renew([(cid, old.token)])
    assert s.count("renew_leases") == 1, "the secondary's lease was renewed on the primary"
    gate.release(cid, old.token)
    assert _holder(s, cid) is None and _holder(p, cid) == ("w", new.token)
    gate.release(cid, new.token)
    assert _holder(p, cid) is None


def test_a_lease_renewed_as_held_is_never_taken_by_another_worker_on_its_side(tmp_path):
    """The consequence of telling sides by ``(cid, token)``: a's lease on the secondary and a copy's
    lease on the primary carry the same token; once the copy ends, a's keeper renews on the primary
    (which says yes), the secondary's lease runs out, and b, cut off from the primary, takes it."""
    now = [1000.0]

    def side(name: str, label: str) -> Side:
        return Side(SqliteCache(f"sqlite:///{tmp_path / name}.db", clock=lambda: now[0]), label)

    p, s = side("p", "primary"), side("s", "secondary")
    a = Gate(_pair(p, s), "a", 10.0, DEDUPE)
    p.down = True
    first = a.begin("m", 1)  # a runs the record with its lease on the secondary
    p.down = False
    copy = a.begin("m", 1)  # a redelivered copy, admitted on the primary
    assert (first.side, copy.side) == ("secondary", "primary")
    a.end("m", 1, copy.token, False)  # the copy gives its lease back; a still runs the first
    for _ in range(3):
        now[0] += 6.0
        if a.renew([("m", first.token)]) != [True]:
            return  # the keeper learns the lease is lost: a stops, no two holders
    q, r = side("p", "primary"), side("s", "secondary")
    q.down = True
    b = Gate(_pair(q, r), "b", 10.0, DEDUPE).begin("m", 1)
    assert b.token is None, f"a's lease on the secondary was renewed as held, yet b took it there ({b})"


def test_a_partition_splits_the_lease_and_counts_it(files, sides):
    """The bounded overlap: a worker that cannot reach the primary takes the lease on the secondary while
    one that reaches it holds it there. Both tokens are above the record's floor."""
    p, s = sides
    cut_off = _pair(p, s)
    p.down = True
    q, r = _worker(files)
    reaching = _pair(q, r)
    cid = _cid()
    a = Gate(cut_off, "a", HOLD, DEDUPE).begin(cid, 4)
    b = Gate(reaching, "b", HOLD, DEDUPE).begin(cid, 4)
    assert (a.side, b.side) == ("secondary", "primary")
    assert a.token >= token_floor(4, 0) and b.token >= token_floor(4, 0)
    assert (cut_off.split, reaching.split) == (1, 0)
    # on each side one holder at a time
    assert Gate(reaching, "c", HOLD, DEDUPE).begin(cid, 4).token is None
    assert Gate(cut_off, "c", HOLD, DEDUPE).begin(cid, 4).token is None


# ---------------------------------------------------------------- marks from both sides


def test_a_mark_written_on_the_secondary_is_seen_by_an_admission_on_the_primary(sides):
    p, s = sides
    pair = _pair(p, s)
    gate = Gate(pair, "w", HOLD, DEDUPE)
    cid = _cid()
    p.down = True
    adm = gate.begin(cid, 1)
    gate.end(cid, 1, adm.token, True)  # ended on the secondary; the copy to the primary fails
    assert _mark(s, cid) == completed_ordinal(1) and _mark(p, cid) is None
    p.down = False
    copy = Gate(pair, "other", HOLD, DEDUPE).begin(cid, 1)
    assert copy.side == "primary" and copy.done and copy.known
    nxt = Gate(pair, "other", HOLD, DEDUPE).begin(cid, 2)
    # the other side proves attempts handled, but the primary itself has not followed the machine up to
    # step 2: the log decides (a stale mark elsewhere must not hide that the admitting side forgot)
    assert nxt.side == "primary" and not nxt.known and not nxt.done


def test_a_mark_written_on_the_primary_is_seen_by_an_admission_on_the_secondary(sides):
    p, s = sides
    pair = _pair(p, s)
    gate = Gate(pair, "w", HOLD, DEDUPE)
    cid = _cid()
    s.down = True
    adm = gate.begin(cid, 3, retries=1)
    gate.end(cid, 3, adm.token, False, retries=1, tried=True)  # the copy to the secondary fails
    assert _mark(p, cid) == ordinal(3, 1) and _mark(s, cid) is None
    s.down = False
    p.plan = [True, True, True]  # the primary fails every try of the admission, then answers the peek
    copy = Gate(pair, "other", HOLD, DEDUPE).begin(cid, 3, retries=1)
    assert copy.side == "secondary" and copy.done and copy.known
    p.plan = [True, True, True]
    retry = Gate(pair, "other", HOLD, DEDUPE).begin(cid, 3, retries=2)
    assert retry.side == "secondary" and not retry.known and not retry.done  # the secondary never followed it
    assert pair.unverified == 1  # only the admission while the secondary was down


def test_an_admission_whose_other_side_cannot_be_read_knows_nothing_unless_it_is_done(sides):
    p, s = sides
    pair = _pair(p, s)
    cid = _cid()
    s.cache.end_steps([Ending(cid, 2, 0, None, DONE)], "earlier", DEDUPE)  # step 2 ended on the secondary
    p.cache.end_steps([Ending(cid, 1, 0, None, DONE)], "earlier", DEDUPE)  # step 1 on the primary
    s.down = True
    gate = Gate(pair, "w", HOLD, DEDUPE)
    for steps in (2, 3):  # the primary has followed the machine up to step 2, but cannot vouch for more
        adm = gate.begin(cid, steps)
        assert adm.token is not None and adm.side == "primary"
        assert (adm.done, adm.known) == (False, False)
        gate.release(cid, adm.token)
    old = gate.begin(cid, 1)  # what the answering side knows handled stays handled
    assert (old.done, old.known) == (True, True)
    gate.release(cid, old.token)
    assert pair.unverified == 3
    s.down = False
    both = gate.begin(cid, 2)
    assert (both.done, both.known) == (True, True)


def test_the_gate_asks_the_log_when_the_other_side_cannot_be_read(sides):
    p, s = sides
    pair = _pair(p, s)
    asked: list[list[str]] = []

    def authority(cids):
        asked.append(list(cids))
        return dict.fromkeys(cids)  # the log knows nothing of it either: it runs

    cid = _cid()
    s.down = True
    gate = Gate(pair, "w", HOLD, DEDUPE, authority=authority)
    adm = gate.begin(cid, 5)
    assert asked == [[cid]] and gate.verified == 1
    assert adm.token is not None and adm.known and not adm.done


def test_a_failing_log_read_leaves_only_its_own_machine_unknown(sides):
    """After a cache forgot every machine, a batch asks the log of each; a read that fails must not
    cost the other machines their verdict (with every record handed back, a batch of machines the
    cache forgot would rarely get through a flapping primary)."""
    p, s = sides
    pair = _pair(p, s)
    ok1, bad, ok2 = _cid(), _cid(), _cid()
    asked: list[list[str]] = []

    def authority(cids):
        asked.append(list(cids))
        if bad in cids:
            raise ServiceUnavailable("the log's primary failed this read")
        return dict.fromkeys(cids)

    s.down = True
    gate = Gate(pair, "w", HOLD, DEDUPE, authority=authority)
    a1, b, a2 = gate.begin_many([(ok1, 3, 0), (bad, 3, 0), (ok2, 3, 0)])
    assert sorted(asked) == sorted([[ok1], [bad], [ok2]]) and gate.verified == 2
    assert (a1.known, a1.done, a2.known, a2.done) == (True, False, True, False)
    assert b.token is not None and (b.known, b.done) == (False, False)  # handed back, never run blind


def test_peek_reads_both_sides_and_takes_no_lease(sides):
    p, s = sides
    pair = _pair(p, s)
    hi, lo, gone = _cid(), _cid(), _cid()
    p.cache.end_steps([Ending(hi, 1, 0, None, DONE), Ending(lo, 4, 0, None, DONE)], "x", DEDUPE)
    s.cache.end_steps([Ending(hi, 3, 0, None, DONE), Ending(lo, 2, 0, None, DONE)], "x", DEDUPE)
    s.cache.abort_machine(lo, DEDUPE)
    views = pair.peek_steps([StepKey(c, 0, 0) for c in (hi, lo, gone)])
    assert [(v.token, v.mark, v.aborted) for v in views] == [
        (None, completed_ordinal(3), False), (None, completed_ordinal(4), True), (None, None, False)]
    assert all(_holder(side, c) is None for side in (p, s) for c in (hi, lo, gone))
    s.down = True  # one side unreadable: the other's answer
    assert pair.peek_steps([StepKey(hi, 0, 0)])[0].mark == completed_ordinal(1)


def test_abort_reaches_every_side_that_answers(sides):
    p, s = sides
    pair = _pair(p, s)
    cid = _cid()
    p.down = True
    Gate(pair, "operator", HOLD, DEDUPE).abort(cid)
    p.down = False
    adm = Gate(pair, "w", HOLD, DEDUPE).begin(cid, 2)
    assert adm.side == "primary" and adm.aborted  # flagged on the secondary, seen through the peek


# ---------------------------------------------------------------- both sides down


def test_both_sides_down_raises_naming_both(sides):
    p, s = sides
    pair = _pair(p, s)
    gate = Gate(pair, "w", HOLD, DEDUPE)
    cid = _cid()
    adm = gate.begin(cid, 1)
    p.down = s.down = True
    for call in (lambda: gate.begin(_cid(), 1), lambda: gate.end(cid, 1, adm.token, True),
                 lambda: gate.abort(cid)):
        with pytest.raises(ServiceUnavailable) as info:
            call()
        message = str(info.value)
        assert "both sides" in message and p.name in message and s.name in message
    with pytest.raises(BackendError):  # a lease that cannot be asked about is not reported lost
        gate.renew([(cid, adm.token)])


def test_an_end_whose_side_is_down_leaves_the_marks_on_the_other(sides):
    p, s = sides
    pair = _pair(p, s)
    gate = Gate(pair, "w", HOLD, DEDUPE)
    cid = _cid()
    adm = gate.begin(cid, 1)
    p.down = True
    gate.end(cid, 1, adm.token, True)
    assert _mark(s, cid) == completed_ordinal(1)
    assert _holder(p, cid) == ("w", adm.token)  # not released: it expires by itself
    p.down = False
    assert Gate(pair, "other", HOLD, DEDUPE).begin(cid, 1).token is None


# ---------------------------------------------------------------- a primary that flickers


def test_a_primary_that_fails_briefly_hands_the_batch_back(sides):
    """Leases move only once the primary has failed for ``failover_after_s`` with no success since."""
    p, s = sides
    now = [100.0]
    pair = _pair(p, s, failover_after_s=1.0, clock=lambda: now[0])
    gate = Gate(pair, "w", HOLD, DEDUPE)
    p.down = True
    with pytest.raises(ServiceUnavailable, match="CACHE_FAILOVER_SECONDS"):
        gate.begin(_cid(), 1)
    assert pair.handed_back == 1 and s.count("begin_steps") == 0
    now[0] += 0.5
    with pytest.raises(ServiceUnavailable):
        gate.begin(_cid(), 1)
    now[0] += 0.5  # failing for a second now: leases move
    assert gate.begin(_cid(), 1).side == "secondary"
    p.down = False
    assert gate.begin(_cid(), 1).side == "primary"  # a success ends the run of failures ...
    p.down = True
    with pytest.raises(ServiceUnavailable):  # ... so the next failure starts a new one
        gate.begin(_cid(), 1)
    assert pair.handed_back == 3


def test_a_failure_that_a_retry_gets_past_stays_on_the_primary(sides):
    p, s = sides
    pair = _pair(p, s, failover_after_s=1.0, clock=lambda: 0.0)
    p.plan = [True, True]  # two tries fail, the third answers
    adm = Gate(pair, "w", HOLD, DEDUPE).begin(_cid(), 1)
    assert adm.side == "primary" and pair.failovers == 0 and pair.handed_back == 0


# ---------------------------------------------------------------- worker processes


def test_the_pair_survives_pickling_with_the_sides_of_its_leases(sides):
    p, s = sides
    pair = _pair(p, s)
    cid = _cid()
    p.down = True
    adm = Gate(pair, "w", HOLD, DEDUPE).begin(cid, 1)
    copy: FailoverSteps = pickle.loads(pickle.dumps(pair))
    assert (copy.failovers, copy.split) == (1, 1) and copy.name == pair.name
    copy.primary.down = False
    gate = Gate(copy, "w", HOLD, DEDUPE)
    assert gate.renew([(cid, adm.token)]) == [True]
    gate.end(cid, 1, adm.token, True)
    assert _holder(s, cid) is None  # released on the secondary, where the original took it
    assert Gate(copy, "w", HOLD, DEDUPE).begin(_cid(), 1).side == "primary"
    copy.close()


# ---------------------------------------------------------------- flapping sides, two workers

OWNERS = ("w0", "w1")
MACHINES = 1

# a side's answers to one call sequence (True: that call fails): up, down throughout, or flapping
_answers = st.one_of(st.just([]), st.just([True] * 12), st.lists(st.booleans(), min_size=1, max_size=6))

_op = st.tuples(
    st.integers(0, len(OWNERS) - 1),  # who acts
    st.integers(0, MACHINES - 1),  # which machine
    st.integers(0, 2),  # steps of the record admitted
    st.integers(0, 1),  # its retries
    _answers, _answers,  # the primary's and the secondary's answers to the admission (to this worker)
    st.sampled_from(["done", "done", "tried", "release", "keep", "renew"]),  # then
    _answers, _answers,  # the primary's and the secondary's answers to that
)


@pytest.fixture(scope="module")
def shared_files(tmp_path_factory) -> tuple[str, str]:
    base = tmp_path_factory.mktemp("failover")
    return f"sqlite:///{base / 'primary.db'}", f"sqlite:///{base / 'secondary.db'}"


class _Model:
    """What the test knows of the two sides, from the calls that went through."""

    def __init__(self) -> None:
        self.holders: dict[tuple[str, str], dict[str, int]] = {}  # (side, cid) -> owner -> token held there
        self.held: dict[tuple[str, str], tuple[int, str, int, int]] = {}  # (owner, cid) -> token, side, record
        self.handled: dict[str, int] = {}  # cid -> the highest ordinal an end recorded on some side

    def admitted(self, owner: str, cid: str, steps: int, retries: int, adm, primary_begins: list[bool],
                 both_read: bool) -> None:
        assert adm.token >= token_floor(steps, retries)
        if adm.side == "secondary":
            assert primary_begins and all(primary_begins), "a lease moved though the primary answered"
        others = {o: t for o, t in self.holders.get((adm.side, cid), {}).items() if o != owner}
        assert not others, f"{owner} got {cid} on the {adm.side} while {others} hold it there"
        self.holders.setdefault((adm.side, cid), {})[owner] = adm.token
        self.held[(owner, cid)] = (adm.token, adm.side, steps, retries)
        mark = self.handled.get(cid, -1)
        if ordinal(steps, retries) <= mark:
            if both_read:
                assert adm.done, f"{cid} ({steps}, {retries}) admitted to run though handled up to {mark}"
            else:
                assert adm.done or not adm.known, f"{cid} ({steps}, {retries}) known and not done"

    def ended(self, owner: str, cid: str, ending: Ending | None, released: bool) -> None:
        token, side, _, _ = self.held.pop((owner, cid))
        if ending is not None and ending.mark is not None:
            self.handled[cid] = max(self.handled.get(cid, -1), ending.handled_upto())
        if released and self.holders.get((side, cid), {}).get(owner) == token:
            del self.holders[(side, cid)][owner]


@given(ops=st.lists(_op, min_size=4, max_size=40))
def test_flapping_sides_keep_one_holder_per_side_and_never_lose_a_handled_attempt(shared_files, ops):
    """Two workers, each with its own pair over the same two files and its own switches, flapping per call.

    * On each side, one holder of a machine at a time; a lease is taken on the secondary only by an
      admission whose primary failed. So while both workers reach the primary, every lease is taken
      there: never two holders.
    * A token is never below the record's floor.
    * An attempt ended DONE (or TRIED) on some side is reported done by every later admission that read
      both sides, and done or unknown (``known`` False: the gate asks the log) when one side could not
      be read.
    """
    run = uuid.uuid4().hex[:8]
    workers = []
    for owner in OWNERS:
        p, s = _worker(shared_files)
        pair = _pair(p, s)
        workers.append((owner, p, s, pair, Gate(pair, owner, HOLD, DEDUPE)))
    model = _Model()
    try:
        for who, m, steps, retries, p_begin, s_begin, then, p_then, s_then in ops:
            owner, p, s, pair, gate = workers[who]
            cid = f"{run}-{m}"
            p.plan, s.plan = list(p_begin), list(s_begin)
            since, unverified = len(p.calls), pair.unverified
            try:
                adm = gate.begin(cid, steps, retries)
            except ServiceUnavailable:
                adm = None
            if adm is not None and adm.token is not None:
                primary_begins = [f for m_, f, _ in p.calls[since:] if m_ == "begin_steps"]
                model.admitted(owner, cid, steps, retries, adm, primary_begins, pair.unverified == unverified)
            if (owner, cid) not in model.held or then == "keep":
                continue
            token, side, a_steps, a_retries = model.held[(owner, cid)]
            p.plan, s.plan = list(p_then), list(s_then)
            if then == "renew":
                try:
                    assert gate.renew([(cid, token)]) == [True]  # no lease runs out: nobody can have taken it
                except ServiceUnavailable:
                    pass
                continue
            ending = Ending(cid, a_steps, a_retries, token, {"done": DONE, "tried": TRIED}.get(then))
            calls = p if side == "primary" else s
            since = len(calls.calls)
            try:
                gate.store.end_steps([ending], owner, DEDUPE)
            except ServiceUnavailable:  # both sides down: the marks landed nowhere
                ending = None
            released = any(m_ == "end_steps" and not f and r for m_, f, r in calls.calls[since:])
            model.ended(owner, cid, ending, released)
    finally:
        for _, p, s, _, _ in workers:
            p.close()
            s.close()


def test_a_view_is_what_the_sides_answer():
    """The peek's merge: the higher mark, either abort flag (what ``peek_steps`` answers); and what the
    gate makes of an admission's own mark beside the other side's proof, per record."""
    from handlers.cache.failover import _merged
    from handlers.gate import _admission

    assert _merged(StepView(5, 10, False), StepView(None, 20, True), "secondary") == StepView(5, 20, True, "secondary")
    assert _merged(StepView(5, None, False), StepView(None, None, False), "primary").mark is None
    # one view per machine serves every record of it in a batch: the proof counts per record
    view = StepView(5, -1, False, "primary", proven=completed_ordinal(1))  # registered here, ran elsewhere
    start, later = _admission(StepKey("m", 0, 0), view), _admission(StepKey("m", 2, 0), view)
    assert start.done and start.known
    assert not later.done and not later.known  # the other side proves step 1 done; here nobody followed
    unread = StepView(5, completed_ordinal(0), False, "primary", peeked=False)
    assert _admission(StepKey("m", 0, 0), unread).done
    assert not _admission(StepKey("m", 1, 0), unread).known  # the other side may have moved it on


def test_each_record_of_a_batch_is_judged_against_the_other_sides_proof(sides):
    """The model's finding: a worker cut off from the primary ran a machine's start and local step 1 on
    the secondary; a worker on the primary (which only knows the machine was registered) then gets the
    start record and the next record in one batch. One lease serves both records, but each is judged on
    its own: the start is proven done by the secondary's mark; the next record is not known here."""
    p, s = sides
    pair = _pair(p, s)
    cid = _cid()
    gate = Gate(pair, "a", HOLD, DEDUPE)
    gate.register([cid])  # the primary knows the machine is new
    s.cache.end_steps([Ending(cid, 0, 0, None, DONE, 1)], "b", DEDUPE)  # b's start + local step 1, marked there
    start, nxt = gate.begin_many([(cid, 0, 0), (cid, 2, 0)])
    assert start.token == nxt.token and start.side == "primary"
    assert start.done  # never run again
    assert not nxt.done and not nxt.known  # the primary never followed the machine to step 2: the log decides


# ---------------------------------------------------------------- the other side's proof, per store kind


@pytest.mark.parametrize("composed", [False, True], ids=["high-water", "composed"])
def test_a_step_handled_only_on_the_secondary_is_proven_there_once_the_primary_answers(files, composed):
    """A worker cut off from the primary ran step 2 on the secondary; the primary knows only that step 1
    completed, so by its own flags record 2 looks new. The secondary's answer proves it handled, for a
    plain cache's per-step flags (``ComposedSteps``) as for a high-water mark. (The model test found
    the composed pair running the step again once the primary was back.)"""
    from handlers.cache.composed import ComposedSteps

    raw = [SqliteCache(files[0]), SqliteCache(files[1])]
    p, s = (Side(ComposedSteps(c) if composed else c, label) for c, label in zip(raw, ("primary", "secondary")))
    try:
        pair = _pair(p, s)
        cid = _cid()
        gate = Gate(pair, "w", HOLD, DEDUPE)
        first = gate.begin(cid, 1)  # both reach: steps 0 and 1 on the primary, copied to the secondary
        gate.end(cid, 1, first.token, True)
        p.down = True
        cut = gate.begin(cid, 2)  # the primary unreachable: step 2 runs on the secondary
        assert cut.side == "secondary" and not cut.done  # (unknown: the primary cannot be read, the log is asked)
        gate.end(cid, 2, cut.token, True)  # its mark is not copied: the primary is still down
        p.down = False
        again = Gate(pair, "other", HOLD, DEDUPE).begin(cid, 2)  # record 2 delivered again
        assert again.side == "primary" and again.token is not None
        assert again.done, "the secondary's mark proves step 2 completed"
        assert not Gate(pair, "other", HOLD, DEDUPE).begin(cid, 3).done  # the next step still runs
    finally:
        for cache in raw:
            cache.close()
