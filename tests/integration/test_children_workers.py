"""Child machines under real concurrency: two local workers (threads, each with its own services) on
one embedded file run 20 parents of 5 children each; every parent joins exactly once, with every
child's outcome, whichever worker ends its last child."""

from __future__ import annotations

import threading
import time

import pytest

from eventlog.settings import SOURCES, load_settings
from handlers.engine import Engine
from handlers.wiring import open_services
from handlers.worker import Worker
from projections.definition import from_dict
from tests.unit.test_children import JOINED, machines

pytestmark = pytest.mark.integration

PARENTS, CHILDREN = 20, 5


def test_twenty_parents_join_their_children_exactly_once_across_two_workers(tmp_path):
    JOINED.clear()
    url = f"sqlite:///{tmp_path}/kids.db"
    settings = load_settings(environ={}, RETRY_BASE_SECONDS=0.01, RETRY_CAP_SECONDS=0.05,
                             **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES})
    definitions = from_dict({"machines": machines()})
    services = [open_services(settings) for _ in range(2)]
    engines = [Engine(definitions, s, settings, worker_id=f"w{i}") for i, s in enumerate(services)]
    prices = [[p, p + 1, -1, 2, 3][:CHILDREN] for p in range(PARENTS)]
    ids = engines[0].start_many("basket", [{"prices": ps} for ps in prices])
    give_up = time.monotonic() + 120  # a guard against hanging, not a speed check

    def done() -> bool:
        return all(engines[0].status(i).terminal for i in ids) or time.monotonic() > give_up

    threads = [threading.Thread(target=Worker(e, s.log, poll_s=0.01, retry_every_s=0.01).run,
                                kwargs={"until": done}) for e, s in zip(engines, services)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for cid, ps in zip(ids, prices):
            state = engines[0].status(cid)
            assert (state.status, state.state) == ("completed", "summed"), cid
            assert JOINED[cid] == 1
            assert state.context["total"] == sum(p for p in ps if p >= 0)
            assert sorted(k["status"] for k in state.context["children"]) == \
                sorted("failed" if p < 0 else "completed" for p in ps)
    finally:
        for s in services:
            s.close()
