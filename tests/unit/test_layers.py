"""The package dependency direction is part of the design: eventlog <- projections <- handlers <- replay."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _checker():
    spec = importlib.util.spec_from_file_location("layers", ROOT / ".ci" / "layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_imports_point_one_way():
    assert _checker().violations(ROOT) == []


def test_checker_reports_an_upward_import(tmp_path):
    (tmp_path / "eventlog").mkdir()
    (tmp_path / "eventlog" / "bad.py").write_text("from handlers.engine import Engine\n")
    for pkg in ("projections", "handlers", "replay", "fsmlog"):
        (tmp_path / pkg).mkdir()
    found = _checker().violations(tmp_path)
    assert len(found) == 1 and "eventlog must not import handlers.engine" in found[0]
