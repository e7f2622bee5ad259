"""The pytest plugin (entry point ``pytest11``): once fsmlog is installed, tests get ``fsmlog_kit``.

``fsmlog_kit(path, **options)`` returns a ``fsmlog.testing.Kit`` for an
fsm.yaml, made once per session and path, its run directories removed at the
end. Session-scoped, so ``@given`` tests may use it without hypothesis's
function-scoped-fixture warning. Nothing is imported until a test asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def fsmlog_kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """``fsmlog_kit("fsm.yaml")``: a ``fsmlog.testing.Kit`` for those machines, one per session and path."""
    from fsmlog.testing.runner import Kit

    made: dict[tuple, Kit] = {}

    def kit(path: Any, **options: Any) -> Kit:
        key = (str(path), tuple(sorted((k, repr(v)) for k, v in options.items())))
        if key not in made:
            made[key] = Kit(path, **options)
        return made[key]

    yield kit
    for k in made.values():
        k.close()
