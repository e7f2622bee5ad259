"""Properties of the document pipeline under redelivery, written with fsmlog.testing."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fsmlog.testing import cases

FSM = Path(__file__).with_name("fsm.yaml")
WORDS = st.sampled_from(["the", "log", "worker", "TODO", "ships", "first", "Then", "it", "follows", "."])
DRAFTS = st.fixed_dictionaries({
    "text": st.lists(WORDS, min_size=0, max_size=40).map(lambda w: "# Plan\n\n" + " ".join(w)),
    "max_rounds": st.integers(0, 4),
})


@settings(max_examples=25, deadline=None)
@given(case=cases("document", DRAFTS, machines=st.integers(1, 2)))
def test_every_draft_ends_published_or_rejected_within_its_rounds(fsmlog_kit, case):
    run = fsmlog_kit(FSM).run(case)
    for m in run.machines:
        if m.aborted:
            continue
        assert (m.status, m.final.state) in {("completed", "published"), ("completed", "rejected")}
        revisions = [i for i in run.invocations_of(m.correlation_id)
                     if i.action.endswith("Revise") and i.error is None]
        assert len({i.steps for i in revisions}) <= m.context["max_rounds"]


def test_the_built_in_properties_hold(fsmlog_kit):
    fsmlog_kit(FSM).check("document", DRAFTS, examples=25, seed=11).assert_ok()
