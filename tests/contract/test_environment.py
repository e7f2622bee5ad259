"""Contract of EnvironmentStore: bytes by id."""

from __future__ import annotations

import os
import uuid

from handlers.environment import EnvironmentStore


def _id() -> str:
    return f"env-{uuid.uuid4().hex}"


def test_is_an_environment_store(environment):
    assert isinstance(environment, EnvironmentStore)


def test_get_missing_is_none(environment):
    assert environment.get(_id()) is None


def test_put_then_get_returns_the_same_bytes(environment):
    env_id = _id()
    data = b"\x00\x01msgpack\xff" + os.urandom(64)
    environment.put(env_id, data)
    assert environment.get(env_id) == data


def test_put_replaces(environment):
    env_id = _id()
    environment.put(env_id, b"old")
    environment.put(env_id, b"new")
    assert environment.get(env_id) == b"new"


def test_large_values_survive(environment):
    env_id = _id()
    data = os.urandom(100 * 1024)
    environment.put(env_id, data)
    assert environment.get(env_id) == data
