"""Settings: the seed's names, read from a settings module or file and overridden by the environment.

``FSMLOG_SETTINGS`` names either an importable Python module (``myapp.settings``)
or a ``.py``, ``.yaml``/``.yml`` or ``.json`` file. Every setting may also be
given as an environment variable of the same name (``FSMLOG_`` prefix
accepted too); JSON values are parsed for the dict-valued ones. Nothing set:
everything runs on the embedded SQLite file ``.fsmlog/local.db``.

Except on AWS Lambda (``AWS_LAMBDA_FUNCTION_NAME`` in the environment settings are
loaded from): there the embedded file would sit in one container's ``/tmp``, so
leases and marks would stop working across containers and retries, parked
records and snapshots would vanish with the container. An unset primary source
is then a ``SettingsError`` naming the setting and the fix, raised when the source
is opened. Only metrics have a default there: ``emf:`` (CloudWatch Embedded Metric
Format lines, no file). An explicit ``sqlite:`` value is taken as meant.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import yaml

from .errors import SettingsError

DEFAULT_SQLITE = "sqlite:///.fsmlog/local.db"
ENV = "FSMLOG_SETTINGS"  # names the settings module or file
LAMBDA_ENV = "AWS_LAMBDA_FUNCTION_NAME"  # set by the Lambda runtime in every function's environment
LAMBDA_DEFAULTS = {"METRICS": "emf:"}  # the only unset source Lambda may fill in: it keeps no state

# per kind: what an unset source on Lambda would lose, and what to set instead
_LAMBDA_UNSET: dict[str, tuple[str, str]] = {
    "STREAM": ("the log itself would live and die with one container",
               "a Kinesis stream ARN (preferred), or a DynamoDB table, SNS topic or SQS queue ARN"),
    "CHECKPOINT": ("snapshots and positions would be kept per container and lost with it", "a DynamoDB table ARN"),
    "RETRY": ("retries would wait in one container and vanish with it",
              "a DynamoDB table or SQS queue ARN (or a Kinesis stream / SNS topic ARN)"),
    "CACHE": ("leases and step marks would stop working across containers",
              "an Elasticache (Redis or Memcached) ARN or a DynamoDB table ARN"),
    "ENVIRONMENT": ("stored values would be kept per container and lost with it", "a DynamoDB table ARN"),
    "DEAD_LETTER": ("parked records would vanish with the container", "a DynamoDB table ARN"),
    "METRICS": ("metrics would be kept per container", "emf: or a CloudWatch ARN"),
}

SOURCES = ("STREAM", "CHECKPOINT", "RETRY", "ENVIRONMENT", "CACHE", "METRICS", "DEAD_LETTER")
SOURCE_SETTINGS = tuple(f"{side}_{s}_SOURCE" for s in SOURCES for side in ("PRIMARY", "SECONDARY"))

@dataclass(frozen=True)
class Settings:
    """Every known setting as a typed attribute (the names are the environment variables'), plus
    where they were loaded from. ``load_settings`` builds it; an unknown name is an AttributeError,
    so a misspelt setting fails where it is read instead of reading as None."""

    PRIMARY_STREAM_SOURCE: str | None = None
    SECONDARY_STREAM_SOURCE: str | None = None
    PRIMARY_CHECKPOINT_SOURCE: str | None = None
    SECONDARY_CHECKPOINT_SOURCE: str | None = None
    PRIMARY_RETRY_SOURCE: str | None = None
    SECONDARY_RETRY_SOURCE: str | None = None
    PRIMARY_ENVIRONMENT_SOURCE: str | None = None
    SECONDARY_ENVIRONMENT_SOURCE: str | None = None
    PRIMARY_CACHE_SOURCE: str | None = None
    SECONDARY_CACHE_SOURCE: str | None = None
    PRIMARY_METRICS_SOURCE: str | None = None
    SECONDARY_METRICS_SOURCE: str | None = None
    PRIMARY_DEAD_LETTER_SOURCE: str | None = None
    SECONDARY_DEAD_LETTER_SOURCE: str | None = None
    AWS_CHAOS: dict[str, Any] = field(default_factory=dict)  # target or service -> fault rates (tests)
    ENDPOINTS: dict[str, str] = field(default_factory=dict)  # target or service -> endpoint URL
    AWS_REGION: str | None = None
    SNAPSHOT_EVERY: int = 10  # steps between snapshots (terminal states are always snapshotted)
    MAX_RETRIES: int = 5  # default per-machine retry budget
    RETRY_BASE_SECONDS: float = 1.0  # full-jitter exponential backoff: base ...
    RETRY_CAP_SECONDS: float = 300.0  # ... and cap
    LEASE_SECONDS: float = 60.0  # a lease outlives a crashed holder by at most this
    LEASE_WAIT_SECONDS: float = 30.0  # how long a step waits for another worker's lease
    DEDUPE_SECONDS: float = 7 * 24 * 3600.0  # how long idempotency flags are kept
    METRICS_NAMESPACE: str | None = "fsmlog"  # None when set to an empty string
    METRICS_EMF: bool = False  # also print CloudWatch Embedded Metric Format lines (zero API calls)
    FAILOVER_COOLDOWN_SECONDS: float = 30.0  # after a failover, how long new machines stay off the primary
    CACHE_FAILOVER_SECONDS: float = 1.0  # how long the primary cache must fail without a success before leases move
    CACHE_ALLOW_EVICTION: bool = False  # accept a Redis cache whose maxmemory-policy can evict leases
    DEBUG: bool = False  # log user context values and show tracebacks
    origin: str = "defaults"  # the settings module or file, or "defaults"
    lambda_function: str | None = None  # the Lambda function these settings were loaded in, if any

    @property
    def values(self) -> dict[str, Any]:
        """Every setting by name (not ``origin`` or ``lambda_function``)."""
        return {name: getattr(self, name) for name in DEFAULTS}

    def get(self, name: str, default: Any = None) -> Any:
        """A setting whose name is computed (``f"{side}_{kind}_SOURCE"``); ``default`` for an unknown name.
        Code that knows the name reads the typed attribute instead."""
        return getattr(self, name) if name in DEFAULTS else default

    @overload
    def source(self, kind: str, side: Literal["PRIMARY"] = "PRIMARY") -> str: ...

    @overload
    def source(self, kind: str, side: str) -> str | None: ...

    def source(self, kind: str, side: str = "PRIMARY") -> str | None:
        """The configured value of ``{side}_{kind}_SOURCE``: the primary falls back to the embedded
        file (on Lambda: an error naming the setting, see the module docstring); a missing secondary
        means no failover."""
        value: str | None = self.get(f"{side}_{kind}_SOURCE")
        if value is None and side == "PRIMARY":
            if self.lambda_function:
                if kind in LAMBDA_DEFAULTS:
                    return LAMBDA_DEFAULTS[kind]
                raise SettingsError(unset_on_lambda(kind, self.lambda_function), setting=f"PRIMARY_{kind}_SOURCE")
            return DEFAULT_SQLITE
        return value

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **_coerce_all(changes, "override"))

    def check_sources(self, kinds: tuple[str, ...] = SOURCES) -> None:
        """On Lambda, one ``SettingsError`` naming every primary source of ``kinds`` left unset
        (each with its fix); elsewhere nothing: unset sources use the embedded file."""
        if not self.lambda_function:
            return
        unset = [k for k in kinds if k not in LAMBDA_DEFAULTS and self.get(f"PRIMARY_{k}_SOURCE") is None]
        if len(unset) == 1:
            raise SettingsError(unset_on_lambda(unset[0], self.lambda_function), setting=f"PRIMARY_{unset[0]}_SOURCE")
        if unset:
            names = ", ".join(f"PRIMARY_{k}_SOURCE" for k in unset)
            raise SettingsError(
                f"settings {names} are not set, and this runs on AWS Lambda (function {self.lambda_function}), "
                f"where no source defaults to a file in the container's /tmp:\n"
                + "\n".join(f"- {unset_on_lambda(k, self.lambda_function)}" for k in unset),
                setting=f"PRIMARY_{unset[0]}_SOURCE",
            )


# every setting's name and default, read off the class (a new setting is a new typed attribute there)
_BARE = Settings()
DEFAULTS: dict[str, Any] = {f.name: getattr(_BARE, f.name) for f in dataclasses.fields(Settings) if f.name.isupper()}

_JSON = {"AWS_CHAOS", "ENDPOINTS"}
_FLOAT = {"FAILOVER_COOLDOWN_SECONDS", "CACHE_FAILOVER_SECONDS", "RETRY_BASE_SECONDS", "RETRY_CAP_SECONDS", "LEASE_SECONDS", "LEASE_WAIT_SECONDS", "DEDUPE_SECONDS"}
_INT = {"SNAPSHOT_EVERY", "MAX_RETRIES"}
_BOOL = {"DEBUG", "METRICS_EMF", "CACHE_ALLOW_EVICTION"}


def unset_on_lambda(kind: str, function: str) -> str:
    """The message for a primary source of ``kind`` left unset on Lambda: the setting, the harm, the fix."""
    harm, valid = _LAMBDA_UNSET.get(kind, ("its state would be kept per container", "a service ARN"))
    name = f"PRIMARY_{kind}_SOURCE"
    return (
        f"setting {name} is not set, and this runs on AWS Lambda (function {function}): the embedded default "
        f"would be a SQLite file in this container's /tmp, so {harm}. Set {name} (an environment variable of "
        f"the function, or FSMLOG_SETTINGS) to {valid}; to keep per-container state on purpose, set it to an "
        f"explicit sqlite:////tmp/... URL"
    )


def _coerce(name: str, value: Any, where: str) -> Any:
    try:
        if name in _JSON:
            if isinstance(value, str):
                value = json.loads(value) if value.strip() else {}
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return value
        if name in _INT:
            return int(value)
        if name in _FLOAT:
            return float(value)
        if name in _BOOL:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"setting {name} from {where} has an invalid value {value!r}: {exc}",
                            setting=name) from None
    if value is not None and not isinstance(value, str):
        raise SettingsError(f"setting {name} from {where} must be a string (an ARN or sqlite: URL)", setting=name)
    return value or None


def _coerce_all(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    return {k: _coerce(k, v, where) for k, v in values.items() if k in DEFAULTS}


def _from_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise SettingsError(f"FSMLOG_SETTINGS names {path}, which does not exist", setting=ENV)
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".py":
            spec = importlib.util.spec_from_file_location("fsmlog_user_settings", path)
            if spec is None or spec.loader is None:
                raise SettingsError(f"FSMLOG_SETTINGS file {path} cannot be loaded as a Python module", setting=ENV)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)  # the user's own settings module, like Django's
            data = {k: getattr(module, k) for k in dir(module) if k.isupper()}
        else:
            raise SettingsError(f"FSMLOG_SETTINGS file {path} must end in .py, .yaml, .yml or .json", setting=ENV)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise SettingsError(f"settings file {path} cannot be parsed: {exc}", setting=ENV) from None
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a mapping of setting names to values", setting=ENV)
    return data


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    env = os.environ if environ is None else environ
    values = dict(DEFAULTS)
    origin = "defaults"
    ref = env.get(ENV)
    if ref:
        if any(ref.endswith(s) for s in (".py", ".yaml", ".yml", ".json")) or os.sep in ref:
            raw = _from_file(Path(ref))
        else:
            try:
                module = importlib.import_module(ref)
            except ImportError as exc:
                raise SettingsError(f"FSMLOG_SETTINGS names module {ref!r}, which cannot be imported: {exc}",
                                    setting=ENV) from None
            raw = {k: getattr(module, k) for k in dir(module) if k.isupper()}
        unknown = sorted(k for k in raw if k not in DEFAULTS and k.endswith("_SOURCE"))
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)} in {ref}; known: {', '.join(SOURCE_SETTINGS)}",
                                setting=unknown[0])
        values.update(_coerce_all(raw, ref))
        origin = ref
    for name in DEFAULTS:
        for var in (name, f"FSMLOG_{name}"):
            if var in env:
                values[name] = _coerce(name, env[var], f"environment variable {var}")
    if env.get("AWS_DEFAULT_REGION") and not values["AWS_REGION"]:
        values["AWS_REGION"] = env["AWS_DEFAULT_REGION"]
    values.update(_coerce_all(overrides, "override"))
    return Settings(**values, origin=origin, lambda_function=env.get(LAMBDA_ENV) or None)
