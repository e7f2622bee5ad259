"""``fsmlog console``: serve the web console (``fsmlog.console``) on the configured sources.

Starlette and uvicorn come with the ``console`` extra and are imported only
here, when the command runs. The console binds to 127.0.0.1 unless told
otherwise and prints its URL with a token that every change needs.
"""

from __future__ import annotations

import argparse
import os
import socket

from eventlog.errors import FsmlogError

from . import UsageError, load_definitions, open_runtime
from . import output as out

TOKEN_ENV = "FSMLOG_CONSOLE_TOKEN"


class ConsoleError(FsmlogError):
    """The console cannot start: ``setting`` names the option at fault, ``code`` the reason
    (``missing_extra``, ``cannot_bind``)."""

    def __init__(self, message: str, *, code: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.setting = setting


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("console", help="serve a web console: machines, history, graph, dead letters, actions")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--fsm", metavar="FSM.yaml", default=None,
                   help="definitions, to draw each machine's graph (and read settings beside it)")
    p.add_argument("--token", default=None,
                   help=f"the token changes need (default: ${TOKEN_ENV}, else a new random one)")
    p.add_argument("--stalled-after", default="15m", metavar="DURATION",
                   help="running with no record for longer than this is stalled (default 15m)")
    p.add_argument("--no-open", action="store_true", help="do not open a browser")
    p.set_defaults(func=cmd_console)


def cmd_console(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from fsmlog.console.app import LOOPBACK_HOSTS, create_app
        from fsmlog.console.auth import is_loopback, new_token
    except ModuleNotFoundError as exc:
        raise ConsoleError(f"fsmlog console needs the console extra ({exc.name} is missing): "
                           "pip install 'fsmlog[console]'", code="missing_extra") from None
    from replay.errors import ReplayError
    from replay.scan import parse_duration

    try:
        stalled_after_s = parse_duration(args.stalled_after)
    except ReplayError as exc:
        raise UsageError(f"--stalled-after: {exc}") from None
    token = args.token or os.environ.get(TOKEN_ENV) or new_token()
    definitions = load_definitions(args.fsm) if args.fsm else None
    loopback = is_loopback(args.host)
    if not loopback:
        out.err_console().print(
            f"warning: binding {args.host}, not loopback: anyone who can reach it sees every machine and its "
            "context; only the token guards changes, and it travels unencrypted (no TLS)",
            style="bold yellow", markup=False)
    sock = _bind(args.host, args.port)  # bound first, so the URL names the port (--port 0 picks one)
    try:
        runtime = open_runtime(args, definitions, fsm_path=args.fsm)
    except BaseException:
        sock.close()
        raise
    app = create_app(runtime, token=token, definitions=definitions, stalled_after_s=stalled_after_s,
                     allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    host = f"[{shown}]" if ":" in shown else shown
    url = f"http://{host}:{sock.getsockname()[1]}/?token={token}"
    out.console().print(f"fsmlog console on {runtime.log.name}", markup=False)
    print(url, flush=True)
    out.console().print("Ctrl-C stops it", style="dim")
    if not args.no_open:
        import webbrowser

        webbrowser.open(url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        runtime.close()
    return 0


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConsoleError(f"cannot bind {host}:{port} ({exc.strerror}); pick another with --port",
                           code="cannot_bind", setting="--port") from None
    sock.listen(128)  # connections wait in the backlog until uvicorn serves: the printed URL works at once
    return sock
