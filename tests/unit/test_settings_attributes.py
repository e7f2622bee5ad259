"""Settings are typed attributes: every known setting is a field of the frozen dataclass, loaded
values arrive coerced to the field's type, and a misspelt name fails where it is read."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from eventlog.errors import SettingsError
from eventlog.settings import DEFAULTS, SOURCE_SETTINGS, Settings, load_settings

HINTS = typing.get_type_hints(Settings)
SCALARS = {int: "3", float: "2.5", bool: "yes"}


def test_every_setting_is_a_typed_field_with_its_default() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert set(DEFAULTS) == {name for name in fields if name.isupper()}
    assert set(SOURCE_SETTINGS) <= set(DEFAULTS)
    bare = Settings()
    for name, default in DEFAULTS.items():
        assert name in HINTS
        assert getattr(bare, name) == default
    assert bare.LEASE_SECONDS == 60.0
    assert bare.SNAPSHOT_EVERY == 10
    assert bare.METRICS_NAMESPACE == "fsmlog"


@pytest.mark.parametrize("name", sorted(n for n in DEFAULTS if HINTS[n] in SCALARS))
def test_environment_values_arrive_as_the_fields_type(name: str) -> None:
    kind = HINTS[name]
    settings = load_settings({name: SCALARS[kind]})
    value = getattr(settings, name)
    assert type(value) is kind
    assert value == kind(2.5 if kind is float else 3 if kind is int else True)
    assert settings.get(name) == value
    assert settings.values[name] == value


def test_invalid_value_is_a_settings_error_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match="setting LEASE_SECONDS from environment variable FSMLOG_LEASE_SECONDS") as err:
        load_settings({"FSMLOG_LEASE_SECONDS": "soon"})
    assert err.value.setting == "LEASE_SECONDS"
    with pytest.raises(SettingsError, match="setting ENDPOINTS from override") as err:
        Settings().replace(ENDPOINTS="[1]")
    assert err.value.setting == "ENDPOINTS"
    with pytest.raises(SettingsError, match="must be a string") as err:
        load_settings({}, PRIMARY_STREAM_SOURCE=3)
    assert err.value.setting == "PRIMARY_STREAM_SOURCE"
    with pytest.raises(SettingsError, match="does not exist") as err:
        load_settings({"FSMLOG_SETTINGS": "/nonexistent/settings.yaml"})
    assert err.value.setting == "FSMLOG_SETTINGS"
    lam = load_settings({"AWS_LAMBDA_FUNCTION_NAME": "orders"})
    with pytest.raises(SettingsError, match="PRIMARY_CACHE_SOURCE is not set") as err:
        lam.source("CACHE")
    assert err.value.setting == "PRIMARY_CACHE_SOURCE"
    with pytest.raises(SettingsError) as err:
        lam.check_sources(("STREAM", "CACHE"))
    assert err.value.setting == "PRIMARY_STREAM_SOURCE"


def test_replace_coerces_and_keeps_where_settings_came_from() -> None:
    settings = load_settings({"AWS_LAMBDA_FUNCTION_NAME": "orders"}, PRIMARY_STREAM_SOURCE="sqlite:///a.db")
    changed = settings.replace(MAX_RETRIES="7", DEBUG="off")
    assert (changed.MAX_RETRIES, changed.DEBUG) == (7, False)
    assert changed.PRIMARY_STREAM_SOURCE == "sqlite:///a.db"
    assert (changed.origin, changed.lambda_function) == ("defaults", "orders")


def test_unknown_names_are_refused_and_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.LEASE_SECOND  # type: ignore[attr-defined]  # noqa: B018  (the misspelling is the test)
    assert settings.get("LEASE_SECOND", "fallback") == "fallback"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.DEBUG = True  # type: ignore[misc]
