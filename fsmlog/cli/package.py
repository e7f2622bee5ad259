"""``fsmlog package``: build the Lambda artifact the SAM template's function points at (fsmlog.package)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import settings_for


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("package", help="build the Lambda code directory the template's CodeUri names, "
                                       "with Linux wheels for its runtime")
    p.add_argument("fsm", metavar="FSM.yaml", nargs="?", default="fsm.yaml",
                   help="the machine definitions to deploy (default ./fsm.yaml)")
    p.add_argument("--template", default="template.yaml", metavar="FILE",
                   help="the SAM template from `fsmlog template --out FILE` (default template.yaml)")
    p.add_argument("--requirements", default=None, metavar="FILE",
                   help="more requirements your actions import (pip's requirements format)")
    p.add_argument("--find-links", action="append", default=[], metavar="DIR",
                   help="also look for wheels in DIR (repeatable)")
    p.add_argument("--no-index", action="store_true", help="do not use PyPI: only --find-links")
    p.add_argument("--zip", action="store_true", help="also write DIR.zip beside the directory")
    p.set_defaults(func=cmd_package)


def cmd_package(args: argparse.Namespace) -> int:
    from fsmlog.package import PackageError, build, next_steps

    template, fsm = Path(args.template), Path(args.fsm)
    try:
        extra = Path(args.requirements).read_text().splitlines() if args.requirements else []
    except OSError as exc:
        raise PackageError(f"--requirements {args.requirements}: {exc.strerror}; give a file in pip's "
                           "requirements format", setting="--requirements") from None
    settings = settings_for(args, str(fsm))
    artifact = build(template, fsm, settings, extra_requirements=extra, find_links=args.find_links,
                     no_index=args.no_index, make_zip=args.zip)
    for line in next_steps(template, fsm, artifact):
        print(line)
    return 0
