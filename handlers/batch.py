"""One invocation's batch of records: admitted together, run in order, committed together.

Each rule of the batch is one method. In order, for each record:

* a machine that failed earlier in the batch keeps its order: its later records are handed back;
* a copy of an attempt this batch already handled is skipped (the store cannot know yet);
* a lease held elsewhere is waited for, within the time left;
* an attempt the gate (or the log, where the store forgot) says was handled runs nothing;
* a machine flagged aborted runs nothing more: its abort record is appended with the batch;
* an attempt the store knew nothing of and the log could not be asked about is handed back;
* anything else runs.

Then the commit: leases the keeper found lost are not appended (their records are handed back
for whoever holds the machine now), the rest is appended in one call, retries are scheduled,
and the attempts are marked handled before their leases are released.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from eventlog.errors import BackendError

from .errors import LeaseBusy
from .gate import Admission, Ending, ordinal
from .leases import LeaseKeeper

if TYPE_CHECKING:
    from eventlog.event import Event
    from projections.definition import MachineDef

    from .engine import BatchResult, Engine, Inbound, Parsed, _Step

log = logging.getLogger("fsmlog.engine")


class Batch:
    def __init__(self, engine: Engine, result: BatchResult, deadline: float | None) -> None:
        self.engine = engine
        self.result = result
        self.deadline = deadline
        self.steps: list[_Step] = []
        self.ends: list[Ending] = []  # leases to give back with no mark (nothing ran), or the log's mark
        self.failed_cids: set[str] = set()
        self.handled: dict[str, int] = {}  # per machine, the ordinal handled by this batch, not yet committed
        self.keeper = LeaseKeeper(engine.gate, engine.clock, thread=engine.keep_leases_in_thread)

    def run(self, records: Sequence[Inbound]) -> None:
        todo = self.engine._parse_batch(records, self.result)
        if not todo:
            return
        try:
            admissions = self.engine.gate.begin_many([self.engine._step_key(r) for _, r, _, _ in todo])
        except BackendError as exc:  # no lease, no verdict: hand the batch back
            for inbound, record, _, _ in todo:
                self.fail(inbound.item_id, record, exc)
            return
        now = self.engine.clock()
        for adm, (_, record, _, _) in zip(admissions, todo):
            if adm.token is not None:
                self.keeper.hold(record.correlation_id, adm.token, now)
                self.engine._count_admission(record, adm)
        with self.keeper:
            for i, (item, adm) in enumerate(zip(todo, admissions)):
                if self.out_of_time(todo[i:], admissions[i:]):
                    break
                self.keeper.tick()
                self.one(*item, adm)
            self.commit()
        machine_of = {record.correlation_id: record.machine for _, record, _, _ in todo}
        for cid, n in self.keeper.renewed().items():
            self.engine.metrics.count("LeaseRenewals", n, {"machine": machine_of.get(cid, "?")})

    # ---------------------------------------------------------------- the rules

    def out_of_time(self, left: list[Parsed], admissions: list[Admission]) -> bool:
        """Records not started by the deadline are handed back, to be delivered again."""
        if self.deadline is None or self.engine.clock() < self.deadline:
            return False
        self.result.failed_item_ids.extend(x[0].item_id for x in left)
        self.ends.extend(Ending(x[1].correlation_id, x[1].steps, x[1].retries, a.token, None)
                         for x, a in zip(left, admissions) if a.token is not None)
        self.engine.metrics.count("BatchesCutShort")
        log.warning("time budget spent: %d record(s) left for redelivery", len(left))
        return True

    def one(self, inbound: Inbound, record: Event, mdef: MachineDef, ctx: dict[str, Any], adm: Admission) -> None:
        cid = record.correlation_id
        if cid in self.failed_cids:  # keep per-machine order: a later record waits for the failed one
            self.give_back(record, adm)
            self.result.failed_item_ids.append(inbound.item_id)
            return
        if ordinal(record.steps, record.retries) <= self.handled.get(cid, -1):
            self.give_back(record, adm)  # a copy of an attempt this batch handled, not yet committed
            self.engine.metrics.count("DuplicateDeliveries", 1, {"machine": record.machine})
            ran = next((st.record for st in self.steps if st.record.correlation_id == cid
                        and st.record.steps == record.steps), None)
            if not self.engine.late_event(inbound, record, self.result, ran):
                self.result.skipped += 1
            return
        if adm.token is not None and self.keeper.lost(cid, adm.token):
            self.engine.metrics.count("LeaseLost", 1, {"machine": record.machine, "side": adm.side})
            adm = adm._replace(token=None)  # taken over while earlier records ran: take it afresh
        elif adm.token is not None and cid in self.handled:
            adm = adm._replace(token=None)  # a further attempt of a machine that ran here: a new, larger token
        if adm.token is None:
            try:
                adm = self.wait_for_lease(record)
            except (LeaseBusy, BackendError) as exc:
                self.fail(inbound.item_id, record, exc)
                return
        if adm.done:
            self.skip(record, mdef, adm)
            if record.event_id is not None:
                self.judge_sent(inbound, record)
            return
        if adm.aborted:
            self.aborted(inbound, record, mdef, adm)
            return
        if adm.side != "primary":  # a split lease: the log, not the cache, says whether it still runs
            superseded = self.engine.gate.superseded(cid, record.steps, record.retries)
            if superseded:
                self.skip(record, mdef, adm._replace(done=True))
                return
            if superseded is None:
                adm = adm._replace(known=False)
        if not adm.known:  # the cache knew nothing of the machine and the log could not be read
            self.give_back(record, adm)
            self.fail(inbound.item_id, record, BackendError(
                f"machine {cid}: the cache has no record of it and its log could not be read; handed back"))
            return
        token = adm.token
        assert token is not None  # every path above took the lease

        def still_held() -> bool:
            self.keeper.tick()
            return not self.keeper.lost(cid, token)

        step = self.engine._run(inbound, record, mdef, ctx, adm, still_held)
        self.steps.append(step)
        self.handled[cid] = max(self.handled.get(cid, -1), self.engine._ending(step, step.mark).handled_upto())

    def wait_for_lease(self, record: Event) -> Admission:
        adm = self.engine._admit(record, self.deadline, on_wait=self.keeper.tick)
        assert adm.token is not None  # _admit returns only an admission that took the lease
        self.keeper.hold(record.correlation_id, adm.token)
        self.engine._count_admission(record, adm)
        return adm

    def aborted(self, inbound: Inbound, record: Event, mdef: MachineDef, adm: Admission) -> None:
        """A machine flagged aborted runs nothing more. Where the log does not show it ended yet (the
        operator's abort could not wait for the lease), its abort is recorded here, under the lease."""
        self.engine.metrics.count("AbortedSteps", 1, {"machine": mdef.name})
        ended = self.engine.gate.superseded(record.correlation_id, record.steps, record.retries)
        if ended is None:
            self.give_back(record, adm)
            self.fail(inbound.item_id, record, BackendError(f"machine {record.correlation_id} is flagged aborted "
                                                           f"and its log could not be read; handed back"))
        elif ended:
            self.give_back(record, adm)
            self.result.skipped += 1
        else:
            self.steps.append(self.engine._aborted(inbound, record, adm))
            self.handled[record.correlation_id] = max(self.handled.get(record.correlation_id, -1),
                                                      ordinal(record.steps, record.retries))

    def skip(self, record: Event, mdef: MachineDef, adm: Admission) -> None:
        """Nothing to run: the attempt was handled (the log's verdict is marked where the store forgot)."""
        self.engine.metrics.count("StepsSkippedAsDone", 1, {"machine": mdef.name})
        self.ends.append(adm.upto or Ending(record.correlation_id, record.steps, record.retries, adm.token, None))
        self.result.skipped += 1

    def judge_sent(self, inbound: Inbound, record: Event) -> None:
        """An event sent from outside found its step handled: a redelivery of the event that ran is
        dropped; one that lost to another event or the timeout is parked (the log says which)."""
        try:
            applied = self.engine.authority.last_records([record.correlation_id]).get(record.correlation_id)
        except BackendError as exc:
            log.warning("%s: cannot tell whether its event ran (%s); dropped as a duplicate", record.describe(), exc)
            return
        if applied is not None and _wait_redelivered(record, applied):
            self.reissue(inbound, record, applied)
            return
        if self.engine.late_event(inbound, record, self.result, applied):
            self.result.skipped -= 1  # parked, not skipped

    def reissue(self, inbound: Inbound, record: Event, applied: Event) -> None:
        """The wait this event answers was delivered again as a later attempt (``replay machine
        --redispatch``) after the event was sent: the event did not lose, it is sent again at that
        attempt. (Its event id keeps it to one application whatever copies there are.)"""
        from eventlog.codec import encode
        from eventlog.log import OutRecord

        again = record.evolve(retries=applied.retries)
        try:
            self.engine.services.log.append([OutRecord(record.correlation_id, encode(again))])
        except BackendError as exc:  # handed back: judged again when it is delivered again
            log.warning("%s: could not send it again after its wait was redispatched: %s", record.describe(), exc)
            self.result.failed_item_ids.append(inbound.item_id)
            return
        self.engine.metrics.count("EventsReissued", 1, {"machine": record.machine})

    def give_back(self, record: Event, adm: Admission) -> None:
        if adm.token is not None:
            self.ends.append(Ending(record.correlation_id, record.steps, record.retries, adm.token, None))

    def fail(self, item_id: str, record: Event, exc: Exception) -> None:
        log.warning("%s: %s", record.describe(), exc)
        self.engine.metrics.count("LeaseBusy" if isinstance(exc, LeaseBusy) else "ServiceErrors")
        self.failed_cids.add(record.correlation_id)
        self.result.failed_item_ids.append(item_id)

    # ---------------------------------------------------------------- the commit

    def commit(self) -> None:
        """Append only what was run under a lease still held; hand the rest back."""
        lost = self.keeper.confirm([(s.record.correlation_id, s.token) for s in self.steps])
        kept = []
        for s in self.steps:
            if s.side != "primary" and self.engine.gate.superseded(s.record.correlation_id, s.record.steps,
                                                                   s.record.retries) is not False:
                lost.add((s.record.correlation_id, s.token))  # another holder appended first (or cannot tell)
            if (s.record.correlation_id, s.token) in lost:
                self.engine._lease_lost(s, self.result)
                self.ends.append(Ending(s.record.correlation_id, s.record.steps, s.record.retries, s.token, None))
            else:
                kept.append(s)
        self.engine._commit(kept, self.ends, self.result)


def _wait_redelivered(record: Event, latest: Event) -> bool:
    """Whether the log's latest record of the machine is the wait ``record`` answers, delivered again at
    a later attempt (what a redispatch of a wait appends): same step, not ended, no event sent to it,
    and no event of its own but its timeout's (which carries a due time)."""
    waits = latest.event_id is None and (latest.event is None or latest.due is not None)
    return (record.event_id is not None and waits and not latest.terminal
            and latest.steps == record.steps and latest.retries > record.retries)
