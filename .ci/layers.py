"""Check that imports point one way: eventlog <- projections <- handlers <- replay; fsmlog may use all.

Reads every module's import statements (ast, nothing is executed) and prints
each import that points the wrong way. Exit status 1 if any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ORDER = ["eventlog", "projections", "handlers", "replay", "fsmlog"]
ALLOWED = {
    "eventlog": {"eventlog"},
    "projections": {"eventlog", "projections"},
    "handlers": {"eventlog", "projections", "handlers"},
    "replay": {"eventlog", "projections", "handlers", "replay"},
    "fsmlog": set(ORDER),
}


def violations(root: Path) -> list[str]:
    found = []
    for package in ORDER:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top in ALLOWED and top not in ALLOWED[package]:
                        found.append(
                            f"{path.relative_to(root)}:{node.lineno}: {package} must not import {name} "
                            f"({package} may use {', '.join(sorted(ALLOWED[package]))})"
                        )
    return found


if __name__ == "__main__":
    problems = violations(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    for p in problems:
        print(p)
    print(f"layers: {'ok' if not problems else f'{len(problems)} wrong-way import(s)'}")
    sys.exit(1 if problems else 0)
