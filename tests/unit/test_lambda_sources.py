"""On Lambda an unset source is an error naming the setting (issue 9, item 6).

Before, an unset CACHE, RETRY or CHECKPOINT source on Lambda became a SQLite file in the
container's /tmp: leases and marks stopped working across containers and retries vanished
with the container. Lambda is told by ``AWS_LAMBDA_FUNCTION_NAME`` in the environment the
settings are loaded from.
"""

from __future__ import annotations

import pytest

from eventlog.errors import SettingsError
from eventlog.settings import DEFAULT_SQLITE, SOURCES, load_settings
from handlers.metrics.emf import EmfMetrics
from handlers.triggers import runtime
from handlers.wiring import open_services
from projections.definition import from_dict

LAMBDA = {"AWS_LAMBDA_FUNCTION_NAME": "orders-worker"}
STATEFUL = ("STREAM", "CHECKPOINT", "RETRY", "CACHE", "ENVIRONMENT", "DEAD_LETTER")


def _all_but(url: str, *unset: str) -> dict[str, str]:
    return {f"PRIMARY_{k}_SOURCE": url for k in SOURCES if k not in unset}


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/explicit.db"


def test_unset_cache_source_on_lambda_is_an_error_naming_the_setting(url):
    settings = load_settings(environ={**LAMBDA, **_all_but(url, "CACHE")})
    with pytest.raises(SettingsError) as err:
        open_services(settings)
    message = str(err.value)
    assert "PRIMARY_CACHE_SOURCE" in message and "orders-worker" in message
    assert "/tmp" in message and "Elasticache" in message and "DynamoDB" in message  # the harm and the fix
    for other in ("STREAM", "RETRY", "CHECKPOINT"):
        assert f"PRIMARY_{other}_SOURCE" not in message


@pytest.mark.parametrize("kind", STATEFUL)
def test_every_stateful_source_left_unset_on_lambda_is_refused(url, kind):
    settings = load_settings(environ={**LAMBDA, **_all_but(url, kind)})
    with pytest.raises(SettingsError, match=f"PRIMARY_{kind}_SOURCE"):
        open_services(settings)
    with pytest.raises(SettingsError, match=f"PRIMARY_{kind}_SOURCE"):
        settings.source(kind)  # however the source is opened


def test_all_unset_on_lambda_names_every_setting_at_once():
    with pytest.raises(SettingsError) as err:
        open_services(load_settings(environ=dict(LAMBDA)))
    for kind in STATEFUL:
        assert f"PRIMARY_{kind}_SOURCE" in str(err.value)
    assert "PRIMARY_METRICS_SOURCE" not in str(err.value)


def test_metrics_default_to_emf_on_lambda_and_explicit_sqlite_is_taken_as_meant(url):
    settings = load_settings(environ={**LAMBDA, **_all_but(url, "METRICS")})
    assert settings.source("METRICS") == "emf:"
    services = open_services(settings)
    try:
        assert isinstance(services.metrics, EmfMetrics)
        assert services.retries.name == url  # an explicit sqlite: value on Lambda is a choice, not a default
    finally:
        services.close()


def test_a_missing_secondary_on_lambda_is_still_no_failover(url):
    settings = load_settings(environ={**LAMBDA, **_all_but(url)})
    assert settings.source("RETRY", "SECONDARY") is None


def test_replace_keeps_the_lambda_check(url):
    settings = load_settings(environ={**LAMBDA, **_all_but(url, "RETRY")}).replace(DEBUG=True)
    with pytest.raises(SettingsError, match="PRIMARY_RETRY_SOURCE"):
        settings.source("RETRY")
    assert settings.replace(PRIMARY_RETRY_SOURCE=url).source("RETRY") == url


def test_outside_lambda_the_embedded_default_still_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={"LAMBDA_TASK_ROOT": str(tmp_path)})  # not a function: no name
    assert settings.lambda_function is None
    assert all(settings.source(k) == DEFAULT_SQLITE for k in SOURCES)
    services = open_services(settings)
    try:
        assert services.retries.name == DEFAULT_SQLITE
    finally:
        services.close()
    assert (tmp_path / ".fsmlog" / "local.db").exists()


def test_the_lambda_runtime_no_longer_fills_in_tmp(monkeypatch, url):
    for kind in SOURCES:
        for side in ("PRIMARY", "SECONDARY"):
            monkeypatch.delenv(f"{side}_{kind}_SOURCE", raising=False)
            monkeypatch.delenv(f"FSMLOG_{side}_{kind}_SOURCE", raising=False)
    monkeypatch.delenv("FSMLOG_SETTINGS", raising=False)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders-worker")
    for kind, value in _all_but(url, "CACHE").items():
        monkeypatch.setenv(kind, value)
    settings = runtime.runtime_settings()
    assert settings.get("PRIMARY_CACHE_SOURCE") is None  # not sqlite:////tmp/...
    definitions = from_dict({"machines": [{"name": "m", "states": [{"name": "s", "initial": True, "final": True}]}]})
    with pytest.raises(SettingsError, match="PRIMARY_CACHE_SOURCE"):
        runtime.build_engine(definitions=definitions)
