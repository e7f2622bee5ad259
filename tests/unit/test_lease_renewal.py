"""A lease lasts as long as its holder works: the renewer thread keeps it while a long action runs.

Real time here (the renewer thread sleeps on the wall clock): a lease of 0.6 s, an action of 1.5 s.
Nothing is timed; the test asserts who holds the lease and what reaches the log.
"""

from __future__ import annotations

import time

from eventlog.codec import decode
from eventlog.settings import SOURCES, load_settings
from handlers.engine import Engine, Inbound
from handlers.wiring import open_services
from projections.definition import from_dict

HERE = __name__
SEEN: dict[str, object] = {}


def slow(context, obj):
    """Outlasts its lease by far; meanwhile another worker tries to take the machine."""
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        time.sleep(0.1)
        rival = SEEN["rival"].gate.begin(context.correlation_id, context.steps)
        SEEN.setdefault("rival_tokens", []).append(rival.token)
    return "ok"


def test_a_lease_is_renewed_while_a_long_action_runs_and_its_outcome_stands(tmp_path):
    url = f"sqlite:///{tmp_path}/renew.db"
    settings = load_settings(environ={}, LEASE_SECONDS=0.6, LEASE_WAIT_SECONDS=0.1,
                             **{f"PRIMARY_{kind}_SOURCE": url for kind in SOURCES})
    services = open_services(settings)
    definitions = from_dict({"machines": [{
        "name": "long", "states": [
            {"name": "x", "initial": True, "do_action": f"{HERE}.slow", "transitions": [{"event": "ok", "target": "y"}]},
            {"name": "y", "final": True}]}]})
    try:
        holder = Engine(definitions, services, settings, worker_id="holder")
        SEEN.clear()
        SEEN["rival"] = Engine(definitions, services, settings, worker_id="rival")
        cid = holder.start("long")
        first = services.log.read(None, 10)
        result = holder.handle([Inbound(r.position, r.data, services.log.name, r.position) for r in first])
        assert result.failed_item_ids == [] and result.handled == 1
        assert len(SEEN["rival_tokens"]) >= 10 and set(SEEN["rival_tokens"]) == {None}  # never the rival's
        records = [decode(r.data) for r in services.log.read_key(cid)]
        assert [(r.kind, r.steps, r.state) for r in records] == [("start", 0, "x"), ("step", 1, "x")]
    finally:
        services.close()
