"""Settings in, services out: which backend class serves each configured value.

Each backend class has ``from_target(target, settings)``. Modules are imported
only when a setting names them, so a Lambda on Kinesis never imports redis and
the embedded default never imports boto3.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from eventlog.errors import SettingsError
from eventlog.settings import Settings

from .services import Services

log = logging.getLogger("fsmlog.wiring")

# (setting kind, service) -> "module:Class"
BACKENDS: dict[tuple[str, str], str] = {
    ("STREAM", "sqlite"): "eventlog.backends.sqlite:SqliteLog",
    ("STREAM", "kinesis"): "eventlog.backends.kinesis:KinesisLog",
    ("STREAM", "dynamodb"): "eventlog.backends.dynamodb:DynamoDBLog",
    ("STREAM", "sns"): "eventlog.backends.sns:SnsLog",
    ("STREAM", "sqs"): "eventlog.backends.sqs:SqsLog",
    ("CHECKPOINT", "sqlite"): "projections.checkpoints.sqlite:SqliteCheckpoints",
    ("CHECKPOINT", "dynamodb"): "projections.checkpoints.dynamodb:DynamoDBCheckpoints",
    ("RETRY", "sqlite"): "handlers.retries.sqlite:SqliteRetries",
    ("RETRY", "dynamodb"): "handlers.retries.dynamodb:DynamoDBRetries",
    ("RETRY", "sqs"): "handlers.retries.sqs:SqsRetries",
    ("RETRY", "kinesis"): "handlers.retries.stream:StreamRetries",
    ("RETRY", "sns"): "handlers.retries.stream:StreamRetries",
    ("CACHE", "sqlite"): "handlers.cache.sqlite:SqliteCache",
    ("CACHE", "redis"): "handlers.cache.redis:RedisCache",
    ("CACHE", "memcached"): "handlers.cache.memcached:MemcachedCache",
    ("CACHE", "dynamodb"): "handlers.cache.dynamodb:DynamoDBCache",
    ("ENVIRONMENT", "sqlite"): "handlers.environment.sqlite:SqliteEnvironment",
    ("ENVIRONMENT", "dynamodb"): "handlers.environment.dynamodb:DynamoDBEnvironment",
    ("METRICS", "sqlite"): "handlers.metrics.sqlite:SqliteMetrics",
    ("METRICS", "cloudwatch"): "handlers.metrics.cloudwatch:CloudWatchMetrics",
    ("METRICS", "emf"): "handlers.metrics.emf:EmfMetrics",
    ("DEAD_LETTER", "sqlite"): "handlers.deadletters.sqlite:SqliteDeadLetters",
    ("DEAD_LETTER", "dynamodb"): "handlers.deadletters.dynamodb:DynamoDBDeadLetters",
}

VALID = {
    "STREAM": "Kinesis (preferred), DynamoDB, SNS, SQS or sqlite:",
    "CHECKPOINT": "DynamoDB or sqlite:",
    "RETRY": "DynamoDB, SQS, Kinesis, SNS or sqlite:",
    "CACHE": "Elasticache (Redis or Memcached), DynamoDB or sqlite:",
    "ENVIRONMENT": "DynamoDB or sqlite:",
    "METRICS": "CloudWatch, emf: or sqlite:",
    "DEAD_LETTER": "DynamoDB or sqlite:",
}


def service_of(target: str, settings: Settings) -> str:
    """The service a setting value names: ``sqlite``, ``emf`` or the ARN's service
    (Elasticache resolves to ``redis`` or ``memcached`` by its endpoint or ARN)."""
    if target.startswith("sqlite:"):
        return "sqlite"
    if target.startswith("emf:"):
        return "emf"
    if target.startswith(("redis://", "rediss://")):
        return "redis"
    if target.startswith("memcached://"):
        return "memcached"
    parts = target.split(":")
    if len(parts) >= 6 and parts[0] == "arn":
        service = parts[2]
        if service == "elasticache":
            endpoint = str((settings.ENDPOINTS or {}).get(target, ""))
            if endpoint.startswith("memcached://") or "memcached" in target.lower():
                return "memcached"
            return "redis"
        return service
    return "?"


def _load(path: str) -> Any:
    module, _, cls = path.partition(":")
    return getattr(importlib.import_module(module), cls)


def open_backend(kind: str, target: str, settings: Settings, side: str = "PRIMARY") -> Any:
    service = service_of(target, settings)
    path = BACKENDS.get((kind, service))
    if path is None:
        raise SettingsError(
            f"setting {side}_{kind}_SOURCE value {target!r} names service {service!r}, which cannot serve as "
            f"{kind.lower()} source; valid values: {VALID[kind]}"
        )
    backend = _load(path).from_target(target, settings)
    if kind == "CACHE":
        from .cache.policy import check_cache

        warning = check_cache(backend, f"{side}_{kind}_SOURCE", settings)
        if warning:
            log.warning("%s", warning)
    return backend


def open_source(kind: str, settings: Settings) -> Any:
    """The primary for ``kind``, wrapped with chaos, and with failover when a secondary is set.

    Retries fail over with ``handlers.retries.failover.FailoverRetries`` (the timer polls both
    sides and each handle is deleted on its own side); the other kinds with
    ``eventlog.failover.with_failover``. On Lambda an unset primary raises ``SettingsError``
    naming the setting (``Settings.source``) instead of opening a file in the container's /tmp.
    """
    from eventlog.chaos import with_chaos
    from eventlog.failover import with_failover

    primary_target = settings.source(kind, "PRIMARY")
    primary = with_chaos(open_backend(kind, primary_target, settings), primary_target, settings, kind=kind)
    secondary_target = settings.source(kind, "SECONDARY")
    if not secondary_target or secondary_target == primary_target:
        return primary
    secondary = with_chaos(open_backend(kind, secondary_target, settings, "SECONDARY"), secondary_target, settings,
                           kind=kind)
    if kind == "CACHE":
        from .cache.failover import FailoverSteps
        from .cache.steps import as_steps

        return FailoverSteps(as_steps(primary), as_steps(secondary),
                             failover_after_s=float(settings.CACHE_FAILOVER_SECONDS))
    if kind == "RETRY":
        from .retries.failover import with_retry_failover

        return with_retry_failover(primary, secondary, settings)
    return with_failover(kind, primary, secondary, settings)


def open_services(settings: Settings) -> Services:
    settings.check_sources()  # on Lambda: every unset source named at once, before anything opens
    return Services(
        log=open_source("STREAM", settings),
        checkpoints=open_source("CHECKPOINT", settings),
        retries=open_source("RETRY", settings),
        cache=open_source("CACHE", settings),
        environment=open_source("ENVIRONMENT", settings),
        metrics=open_source("METRICS", settings),
        dead_letters=open_source("DEAD_LETTER", settings),
    )
