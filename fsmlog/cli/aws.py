"""Commands for AWS deployments: create/delete the resources the settings name, render the template."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import settings_for


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("resources", help="create or delete every AWS resource the settings name")
    p.add_argument("action", choices=("create", "delete"))
    p.add_argument("--shards", type=int, default=1, help="Kinesis shards for a created stream (default 1)")
    p.set_defaults(func=cmd_resources)

    p = sub.add_parser("template", help="print (or write) the deployment template for the settings")
    p.add_argument("--out", default=None, metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--region", default=None, metavar="REGION",
                   help="render the stack for REGION (default: the primary stream's); a failover stream in "
                        "another region is consumed by its region's stack")
    p.add_argument("--code-uri", default=None, metavar="DIR",
                   help="the function's code directory, relative to the template (default build/lambda, "
                        "what `fsmlog package` builds)")
    p.add_argument("--runtime", default="python3.11", metavar="RUNTIME",
                   help="the function's Lambda runtime (default python3.11)")
    p.add_argument("--arch", default=None, choices=("x86_64", "arm64"),
                   help="the function's architecture (default: Lambda's, x86_64)")
    p.set_defaults(func=cmd_template)


def cmd_resources(args: argparse.Namespace) -> int:
    from fsmlog.resources import create_resources, delete_resources  # boto3 only when asked for

    settings = settings_for(args)
    if args.action == "create":
        lines = create_resources(settings, shards=args.shards)
    else:
        lines = delete_resources(settings)
    for line in lines:
        print(line)
    if not lines:
        print("nothing to do: the settings name no AWS resource fsmlog creates", file=sys.stderr)
    return 0


def cmd_template(args: argparse.Namespace) -> int:
    from fsmlog.template import CODE_URI, render_template, untriggered_streams

    settings = settings_for(args)
    stream = str(settings.PRIMARY_STREAM_SOURCE or "")
    if not stream.startswith("arn:"):
        # nothing would feed the function: no stream, no tables, only the retry timer
        print("warning: template has no stream: set PRIMARY_STREAM_SOURCE to a Kinesis ARN", file=sys.stderr)
    text = render_template(settings, region=args.region, code_uri=args.code_uri or CODE_URI,
                           runtime=args.runtime, architecture=args.arch)
    for arn, region in untriggered_streams(settings, args.region):
        print(f"note: stream {arn} is in {region}; this stack cannot trigger from it. Deploy "
              f"`fsmlog template --region {region}` there too, or its records are never consumed.",
              file=sys.stderr)
    if not isinstance(text, str):
        text = json.dumps(text, indent=2)
    if not text.endswith("\n"):
        text += "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
