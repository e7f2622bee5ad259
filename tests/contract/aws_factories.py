"""AWS backends for the contract suite: each fixture yields a backend on fresh moto resources (over HTTP).

``AWS_FACTORIES`` maps each interface to ``(id, fixture name)`` pairs; the
contract conftest parametrises its interface fixtures over them. Cache and metrics
backends that need servers are in ``cache_factories.py``.
"""

from __future__ import annotations

import pytest

from tests.fixtures.servers import make_resources, settings_for

AWS_FACTORIES: dict[str, list[tuple[str, str]]] = {
    "log": [("kinesis", "kinesis_log"), ("dynamodb", "dynamodb_log"), ("sns", "sns_log"), ("sqs", "sqs_log")],
    "checkpoints": [("dynamodb", "dynamodb_checkpoints")],
    "retries": [("dynamodb", "dynamodb_retries"), ("sqs", "sqs_retries"), ("kinesis", "kinesis_retries")],
    "environment": [("dynamodb", "dynamodb_environment")],
    "dead_letters": [("dynamodb", "dynamodb_dead_letters")],
}


def _on_fresh(moto_server: str, kind: str, **options):
    arn = make_resources(moto_server, kind, **options)[kind]
    return arn, settings_for(moto_server, [arn])


@pytest.fixture
def kinesis_log(moto_server):
    from eventlog.backends.kinesis import KinesisLog

    arn, settings = _on_fresh(moto_server, "kinesis", shards=2)  # two shards: reads must cross them
    return KinesisLog.from_target(arn, settings)


@pytest.fixture
def dynamodb_log(moto_server):
    from eventlog.backends.dynamodb import DynamoDBLog

    return DynamoDBLog.from_target(*_on_fresh(moto_server, "dynamodb_log"))


@pytest.fixture
def sns_log(moto_server):
    from eventlog.backends.sns import SnsLog

    return SnsLog.from_target(*_on_fresh(moto_server, "sns"))


@pytest.fixture
def sqs_log(moto_server):
    from eventlog.backends.sqs import SqsLog

    return SqsLog.from_target(*_on_fresh(moto_server, "sqs"))


@pytest.fixture
def dynamodb_checkpoints(moto_server):
    from projections.checkpoints.dynamodb import DynamoDBCheckpoints

    return DynamoDBCheckpoints.from_target(*_on_fresh(moto_server, "checkpoints"))


@pytest.fixture
def dynamodb_retries(moto_server):
    from handlers.retries.dynamodb import DynamoDBRetries

    return DynamoDBRetries.from_target(*_on_fresh(moto_server, "retries"))


@pytest.fixture
def sqs_retries(moto_server):
    """max_delay=0: moto would hide a delayed message for real seconds; with no SQS-side delay, due-ness
    is decided by the ``fsmlog-due`` attribute against the caller's clock (the chaining path), which is
    what the contract checks."""
    from handlers.retries.sqs import SqsRetries

    arn, settings = _on_fresh(moto_server, "sqs_retries")
    return SqsRetries(arn, settings, max_delay=0)


@pytest.fixture
def kinesis_retries(moto_server):
    from handlers.retries.stream import StreamRetries

    return StreamRetries.from_target(*_on_fresh(moto_server, "kinesis"))


@pytest.fixture
def dynamodb_environment(moto_server):
    from handlers.environment.dynamodb import DynamoDBEnvironment

    return DynamoDBEnvironment.from_target(*_on_fresh(moto_server, "environment"))


@pytest.fixture
def dynamodb_dead_letters(moto_server):
    from handlers.deadletters.dynamodb import DynamoDBDeadLetters

    return DynamoDBDeadLetters.from_target(*_on_fresh(moto_server, "dead_letters"))
