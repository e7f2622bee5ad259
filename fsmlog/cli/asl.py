"""``fsmlog export-asl``: a machine as an Amazon States Language document for Step Functions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import UsageError, settings_for


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-asl", help="write a machine as an Amazon States Language (Step Functions) "
                                          "state machine that runs each step on the fsmlog Lambda")
    p.add_argument("fsm", metavar="FSM.yaml")
    p.add_argument("--machine", required=True, help="machine name from FSM.yaml")
    p.add_argument("--lambda-arn", required=True, metavar="ARN",
                   help="the fsmlog Lambda function (arn:aws:lambda:REGION:ACCOUNT:function:NAME)")
    p.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    p.set_defaults(func=cmd_export_asl)


def check_lambda_arn(arn: str) -> None:
    parts = arn.split(":")
    if len(parts) < 7 or parts[0] != "arn" or parts[2] != "lambda" or parts[5] != "function" or not parts[6]:
        raise UsageError(
            f"--lambda-arn {arn!r} is not a Lambda function ARN; expected "
            "arn:aws:lambda:REGION:ACCOUNT:function:NAME (optionally :ALIAS)"
        )


def cmd_export_asl(args: argparse.Namespace) -> int:
    from handlers.asl import build
    from projections.definition import load

    check_lambda_arn(args.lambda_arn)
    definitions = load(args.fsm, check_actions=False)  # the exporting machine need not import the actions
    document = build(definitions, args.machine, args.lambda_arn, settings_for(args, args.fsm))
    text = json.dumps(document, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")
    return 0
