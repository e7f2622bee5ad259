"""`fsmlog dev` without moto installed: one line saying which extra brings it (handlers.devloop).

moto is what `fsmlog dev` emulates AWS with; it comes with the `dev` extra, not with
fsmlog itself, so a user who installed only fsmlog gets the command to run, not a traceback.
"""

from __future__ import annotations

import json
import sys

import pytest

from eventlog.settings import load_settings
from fsmlog.cli import main
from handlers.devloop import local_endpoints
from handlers.errors import HandlerError

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/fsmlog-dev"
FSM = """\
machines:
- name: m
  states:
  - {name: a, initial: true, transitions: [{event: go, target: b}]}
  - {name: b, final: true}
"""


@pytest.fixture
def no_moto(monkeypatch):
    """``import moto.server`` fails as it does where moto is not installed."""
    for name in [m for m in sys.modules if m == "moto" or m.startswith("moto.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "moto", None)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def test_fsmlog_dev_names_the_dev_extra_when_moto_is_missing(no_moto, tmp_path, monkeypatch, capsys):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"PRIMARY_STREAM_SOURCE": STREAM}))
    (tmp_path / "fsm.yaml").write_text(FSM)
    monkeypatch.setenv("FSMLOG_SETTINGS", str(settings))  # main() sets it; restored after the test
    code = main(["--settings", str(settings), "dev", str(tmp_path / "fsm.yaml"), "--start", "m", "--until-done"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == ("error: 1 AWS resource(s) have no endpoint and moto, the local emulator, is not installed: "
                   "pip install 'fsmlog[dev]' (or map them in ENDPOINTS, or set AWS_ENDPOINT_URL)\n")


def test_no_emulator_is_needed_when_every_resource_has_an_endpoint(no_moto):
    settings = load_settings({}, PRIMARY_STREAM_SOURCE=STREAM, ENDPOINTS={STREAM: "http://127.0.0.1:4566"})
    assert local_endpoints(settings, environ={}) == (settings, None)


def test_missing_moto_is_a_handler_error(no_moto):
    with pytest.raises(HandlerError, match=r"pip install 'fsmlog\[dev\]'"):
        local_endpoints(load_settings({}, PRIMARY_STREAM_SOURCE=STREAM), environ={})
