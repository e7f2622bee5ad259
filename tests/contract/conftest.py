"""Fixtures of the backend contract suite: one fixture per interface, parametrised over every backend.

Each interface fixture (``log``, ``checkpoints``, ...) resolves, per parameter, a factory
fixture that yields a fresh backend instance. The SQLite factories are here; AWS ones come
from ``aws_factories.py`` (``AWS_FACTORIES``, needs a moto server) and ``cache_factories.py``
(``CACHE_FACTORIES``, needs redis-server / memcached / moto), each
``{interface: [(id, factory_fixture_name), ...]}``; those parameters are marked ``integration``.
"""

from __future__ import annotations

import pytest

from eventlog.backends.sqlite import SqliteLog
from handlers.cache.sqlite import SqliteCache
from handlers.deadletters.sqlite import SqliteDeadLetters
from handlers.environment.sqlite import SqliteEnvironment
from handlers.metrics.sqlite import SqliteMetrics
from handlers.retries.sqlite import SqliteRetries
from projections.checkpoints.sqlite import SqliteCheckpoints

try:
    from tests.contract import aws_factories as _aws
    from tests.contract.aws_factories import AWS_FACTORIES
except ImportError:
    _aws, AWS_FACTORIES = None, {}

try:  # Redis / Memcached / DynamoDB caches and CloudWatch metrics, which need servers
    from tests.contract import cache_factories as _caches
    from tests.contract.cache_factories import CACHE_FACTORIES
except ImportError:
    _caches, CACHE_FACTORIES = None, {}

FACTORIES: dict[str, list[tuple[str, str]]] = {}
for _module, _table in ((_aws, AWS_FACTORIES), (_caches, CACHE_FACTORIES)):
    for _iface, _pairs in _table.items():
        FACTORIES.setdefault(_iface, []).extend(_pairs)
        # make the factory fixtures visible to request.getfixturevalue from this directory
        for _ident, _fixture in _pairs:
            if hasattr(_module, _fixture):
                globals()[_fixture] = getattr(_module, _fixture)


def _params(iface: str) -> list:
    pairs = [("sqlite", f"sqlite_{iface}")] + FACTORIES.get(iface, [])
    return [
        pytest.param(fixture, id=ident, marks=() if ident == "sqlite" else (pytest.mark.integration,))
        for ident, fixture in pairs
    ]


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'contract' / 'fsmlog.db'}"


def _yield(backend):
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def sqlite_log(sqlite_url):
    yield from _yield(SqliteLog(sqlite_url))


@pytest.fixture
def sqlite_checkpoints(sqlite_url):
    yield from _yield(SqliteCheckpoints(sqlite_url))


@pytest.fixture
def sqlite_retries(sqlite_url):
    yield from _yield(SqliteRetries(sqlite_url))


@pytest.fixture
def sqlite_cache(sqlite_url):
    yield from _yield(SqliteCache(sqlite_url))


@pytest.fixture
def sqlite_environment(sqlite_url):
    yield from _yield(SqliteEnvironment(sqlite_url))


@pytest.fixture
def sqlite_metrics(sqlite_url):
    yield from _yield(SqliteMetrics(sqlite_url))


@pytest.fixture
def sqlite_dead_letters(sqlite_url):
    yield from _yield(SqliteDeadLetters(sqlite_url))


@pytest.fixture(params=_params("log"))
def log(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_params("checkpoints"))
def checkpoints(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_params("retries"))
def retries(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_params("cache"))
def cache(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_params("environment"))
def environment(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_params("metrics"))
def metrics(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_params("dead_letters"))
def dead_letters(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def expiry(request) -> tuple[float, float]:
    """``(ttl_s, wait_s)``: a TTL short enough to wait out and a sleep that surely outlasts it.

    The embedded store keeps exact times; services may count expiry in whole seconds
    (memcached) or lag a little, so they get a longer TTL and wait.
    """
    params = getattr(request.node, "callspec", None)
    chosen = params.params.get("cache", "") if params else ""
    if str(chosen).startswith("sqlite_"):
        return 0.2, 0.5
    return 1.0, 3.0
