"""Check that no parameter or attribute named for settings, an engine or a log is typed ``Any``,
and that no setting is read by a constant name (``settings.get("LEASE_SECONDS")``).

mypy checks calls against annotations, so an ``Any`` there switches the check off for the
objects every module passes around; ``Settings.get`` returns ``Any`` and a default for a
misspelt name, where the attribute ``settings.LEASE_SECONDS`` is typed and checked. A name
counts when its last ``_`` word is ``settings``, ``engine`` or ``log`` (``settings``,
``_step_engine``, ``primary_log``). Reads the source with ``ast`` (nothing is executed) and
prints each offender; exit status 1 if any.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PACKAGES = ("eventlog", "projections", "handlers", "replay", "fsmlog")
WATCHED = {"settings", "engine", "log"}
SETTING_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def watched(name: str) -> bool:
    return name.split("_")[-1] in WATCHED


def mentions_any(annotation: ast.expr | None) -> bool:
    """True if ``Any`` appears anywhere in the annotation (``Any``, ``Any | None``, ``typing.Any``, quoted)."""
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return False
    return any(
        (isinstance(n, ast.Name) and n.id == "Any") or (isinstance(n, ast.Attribute) and n.attr == "Any")
        for n in ast.walk(annotation)
    )


def constant_setting(call: ast.Call) -> str | None:
    """``NAME`` of a ``<...>settings.get("NAME", ...)`` call with a literal setting name, else None."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr == "get" and call.args):
        return None
    owner = func.value
    name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
    first = call.args[0]
    if name.split("_")[-1] != "settings" or not isinstance(first, ast.Constant) or not isinstance(first.value, str):
        return None
    return first.value if SETTING_NAME.fullmatch(first.value) else None


def offenders(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs]  # not **settings: Any, setting values by name
            found += [f"{filename}:{p.lineno}: parameter {p.arg!r} of {node.name}() is typed Any"
                      for p in params if watched(p.arg) and mentions_any(p.annotation)]
        elif isinstance(node, ast.Call) and (name := constant_setting(node)) is not None:
            found.append(f"{filename}:{node.lineno}: settings.get({name!r}) reads a setting by a constant "
                         f"name; read the typed attribute settings.{name}")
        elif isinstance(node, ast.AnnAssign) and mentions_any(node.annotation):
            target = node.target
            name = target.id if isinstance(target, ast.Name) else target.attr if isinstance(target, ast.Attribute) else ""
            if watched(name):
                found.append(f"{filename}:{node.lineno}: {name!r} is typed Any")
    return found


def check(root: Path) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            found += offenders(path.read_text(), str(path.relative_to(root)))
    return found


if __name__ == "__main__":
    problems = check(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    for p in problems:
        print(p)
    print(f"typed params: {'ok' if not problems else f'{len(problems)} problem(s)'}"
          + ("" if not problems else " (give settings/engine/log the real type: Settings, Engine, EventLog or a "
                                     "Protocol; read settings by attribute)"))
    sys.exit(1 if problems else 0)
