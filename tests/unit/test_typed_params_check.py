"""The lint check that keeps settings, engines and logs typed: it finds every way of writing ``Any``
for them and every setting read by a constant name, leaves other names, ``**settings`` and computed
setting names alone, and the packages pass it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("typed_params", ROOT / ".ci" / "typed_params.py")
assert _spec is not None and _spec.loader is not None
typed_params = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(typed_params)

SOURCE = '''
import typing
from typing import Any

def a(settings: Any, engine: Any | None = None, *, log: "Any") -> None: ...
def b(primary_log: typing.Optional[typing.Any], step_engine: list[Any]) -> None: ...
async def c(self, settings: Settings, log: EventLog, catalog: Any, **settings_kw: Any) -> None: ...
def d(**settings: Any) -> None: ...

class Runtime:
    engine: Any
    services: Any
    settings: Settings

_step_engine: Any = None

def e(settings: Settings, kind: str) -> None:
    settings.get("LEASE_SECONDS", 60.0)
    self.engine.settings.get("AWS_REGION")
    settings.get(f"PRIMARY_{kind}_SOURCE")
    config.get("LEASE_SECONDS")
    settings.get("lower")
'''


def test_every_spelling_of_any_and_constant_reads_are_found_and_nothing_else() -> None:
    found = typed_params.offenders(SOURCE, "x.py")
    assert sorted(found) == sorted([
        "x.py:5: parameter 'settings' of a() is typed Any",
        "x.py:5: parameter 'log' of a() is typed Any",
        "x.py:5: parameter 'engine' of a() is typed Any",
        "x.py:6: parameter 'primary_log' of b() is typed Any",
        "x.py:6: parameter 'step_engine' of b() is typed Any",
        "x.py:11: 'engine' is typed Any",
        "x.py:15: '_step_engine' is typed Any",
        "x.py:18: settings.get('LEASE_SECONDS') reads a setting by a constant name; read the typed attribute "
        "settings.LEASE_SECONDS",
        "x.py:19: settings.get('AWS_REGION') reads a setting by a constant name; read the typed attribute "
        "settings.AWS_REGION",
    ])


def test_the_packages_pass() -> None:
    assert typed_params.check(ROOT) == []
