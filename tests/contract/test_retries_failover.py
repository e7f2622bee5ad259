"""The RetryStore contract, run again over ``FailoverRetries`` (two embedded files): with both sides
up, with the primary down (everything lives on the secondary), and with the secondary down."""

from __future__ import annotations

import pytest

from eventlog.errors import ServiceUnavailable
from handlers.retries.failover import FailoverRetries
from handlers.retries.sqlite import SqliteRetries
from tests.contract.test_retries import (  # noqa: F401 - collected here again, over the fixture below
    test_a_claimed_retry_is_not_returned_again_and_done_removes_it,
    test_done_of_nothing_removes_nothing,
    test_due_after_its_time,
    test_due_honours_limit,
    test_is_a_retry_store,
    test_not_due_before_its_time,
    test_stores_that_cannot_delay_return_nothing_from_due,
)


class _Down:
    """A side that is unreachable."""

    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name

    def _down(self, *args):
        raise ServiceUnavailable(f"{self.name} is down")

    schedule = due = done = _down

    def close(self):
        self.backend.close()


@pytest.fixture(params=["both-up", "primary-down", "secondary-down"])
def retries(request, tmp_path):
    primary = SqliteRetries(f"sqlite:///{tmp_path}/primary.db")
    secondary = SqliteRetries(f"sqlite:///{tmp_path}/secondary.db")
    if request.param == "primary-down":
        primary = _Down(primary)
    elif request.param == "secondary-down":
        secondary = _Down(secondary)
    store = FailoverRetries(primary, secondary)
    yield store
    store.close()
