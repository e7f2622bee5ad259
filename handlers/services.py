"""The set of backing services one engine works against."""

from __future__ import annotations

from dataclasses import dataclass

from eventlog.log import EventLog
from projections.checkpoints import CheckpointStore

from .cache import Cache
from .deadletters import DeadLetterStore
from .environment import EnvironmentStore
from .metrics import Metrics
from .retries import RetryStore


@dataclass
class Services:
    log: EventLog
    checkpoints: CheckpointStore
    retries: RetryStore
    cache: Cache
    environment: EnvironmentStore
    metrics: Metrics
    dead_letters: DeadLetterStore

    def close(self) -> None:
        for svc in (self.log, self.checkpoints, self.retries, self.cache, self.environment, self.metrics,
                    self.dead_letters):
            close = getattr(svc, "close", None)
            if close is not None:
                close()
