"""Counts survive a metrics sink that fails: they wait for the next flush instead of being lost."""

import pytest

from eventlog.errors import ServiceUnavailable
from handlers.metrics import Datum, MetricBuffer


class Sink:
    name = "test"

    def __init__(self):
        self.down = False
        self.sent: list[Datum] = []

    def put(self, data):
        if self.down:
            raise ServiceUnavailable("metrics down")
        self.sent.extend(data)


def test_counts_are_aggregated_per_name_and_dimensions():
    buf, sink = MetricBuffer(), Sink()
    buf.count("Transitions", 1, {"machine": "order"})
    buf.count("Transitions", 2, {"machine": "order"})
    buf.count("Transitions", 1, {"machine": "doc"})
    buf.flush(sink)
    assert sorted(sink.sent) == [Datum("Transitions", 1.0, (("machine", "doc"),)),
                                 Datum("Transitions", 3.0, (("machine", "order"),))]
    buf.flush(sink)  # nothing new: no call
    assert len(sink.sent) == 2


def test_a_failed_flush_keeps_the_counts_for_the_next_one():
    buf, sink = MetricBuffer(), Sink()
    buf.count("Transitions", 5, {"machine": "order"})
    sink.down = True
    with pytest.raises(ServiceUnavailable):
        buf.flush(sink)
    buf.count("Transitions", 1, {"machine": "order"})
    sink.down = False
    buf.flush(sink)
    assert sink.sent == [Datum("Transitions", 6.0, (("machine", "order"),))]
