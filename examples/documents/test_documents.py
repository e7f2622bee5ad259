"""The document pipeline: the review loop, its round limit, and the local extract -> normalize steps."""

from __future__ import annotations

import time
from pathlib import Path

import document_actions
import pytest

from eventlog.codec import decode
from eventlog.settings import SOURCES, load_settings
from handlers.engine import Engine
from handlers.wiring import open_services
from handlers.worker import Worker
from projections.definition import load

FSM = Path(__file__).with_name("fsm.yaml")

CLEAN = "# Quarterly report\n\nSales grew in every region. The new warehouse opened on time and under budget."
MESSY = ("quarterly report for the the board\n\n"
         "Sales grew in every region, the new warehouse opened on time and under budget, and the team hired "
         "six people for the support desk while also moving the office to a bigger floor downtown. "
         "TODO: add the numbers.")


@pytest.fixture
def pipeline(tmp_path):
    url = f"sqlite:///{tmp_path}/docs.db"
    settings = load_settings(environ={}, **{f"PRIMARY_{k}_SOURCE": url for k in SOURCES})
    services = open_services(settings)
    engine = Engine(load(FSM), services, settings)

    def run(*contexts: dict) -> list:
        ids = [engine.start("document", ctx) for ctx in contexts]
        worker = Worker(engine, services.log, poll_s=0.01)
        give_up = time.monotonic() + 60  # a guard against hanging, not a speed check
        worker.run(until=lambda: all(engine.status(i).terminal for i in ids) or time.monotonic() > give_up)
        return ids, [engine.status(i) for i in ids]

    yield run, services
    services.close()


def test_clean_document_is_published_after_one_review(pipeline):
    run, services = pipeline
    (cid,), (state,) = run({"text": CLEAN})
    assert state.state == "published"
    ctx = state.context
    assert ctx["title"] == "Quarterly report" and ctx["published"]["slug"] == "quarterly-report"
    assert ctx["published"]["version"] == 1 and "revisions" not in ctx
    # extract and normalize ran as local transitions: the start's next record is already in review
    records = [decode(r.data) for r in services.log.read_key(cid)]
    assert (records[1].state, records[1].steps, records[1].event) == ("reviewing", 3, "approved")


def test_messy_document_loops_through_revisions_until_approved(pipeline):
    run, _ = pipeline
    _, (state,) = run({"text": MESSY})
    assert state.state == "published"
    ctx = state.context
    assert ctx["revisions"] == len(ctx["changes"]) >= 3
    assert ctx["title"] == "Quarterly report for the board"
    assert "TODO" not in ctx["body"]
    assert document_actions.find_issues(ctx["title"], ctx["body"]) == []


def test_round_limit_rejects_and_unreadable_input_is_rejected(pipeline):
    run, _ = pipeline
    _, (limited, short, empty) = run({"text": MESSY, "max_rounds": 1}, {"text": "# Hi\n\nToo short."},
                                     {"text": "   "})
    assert limited.state == "rejected" and limited.context["revisions"] == 1
    assert limited.context["rejection"].startswith("still ")
    assert short.state == "rejected" and "too short" in short.context["rejection"]
    assert empty.state == "rejected" and empty.context["rejection"] == "no text to review"


def test_long_sentence_is_split_at_a_clause_break():
    long = " ".join(["word"] * 15) + ", and " + " ".join(["more"] * 15) + "."
    (title, body) = document_actions.revise("T", long, "sentence of 32 words")
    assert all(len(s.split()) <= document_actions.MAX_SENTENCE_WORDS for s in document_actions.sentences(body))
