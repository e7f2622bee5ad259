"""The ``fsmlog`` command line: argparse for the commands, rich for the output.

Commands live in modules (``COMMAND_MODULES``), each exposing
``register(subparsers)`` that adds its subcommands and sets ``func`` (a
function ``(args) -> int``) on them. A module that is not installed yet is
skipped, so the CLI works while its commands grow.

Every error fsmlog raises on purpose (``FsmlogError``), and ``OSError`` and
Ctrl-C, end as ONE line on stderr, ``error: <what, where, what to do>``, and exit
status 1 (2 for usage errors, bad options included: no usage lines, `-h` shows
them; 130 when Ctrl-C left machines running). ``--debug`` shows the traceback too
and logs user-context values.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from eventlog.errors import FsmlogError, ServiceUnavailable
from eventlog.settings import SOURCES, Settings, load_settings

if TYPE_CHECKING:  # the engine and its backends are imported by the commands that run them
    from eventlog.log import EventLog
    from handlers.engine import Engine
    from handlers.services import Services

COMMAND_MODULES = [
    "fsmlog.cli.machines",
    "fsmlog.cli.aws",
    "fsmlog.cli.deadletters",
    "fsmlog.cli.dev",
    "fsmlog.cli.asl",
    "fsmlog.cli.replay",
    "fsmlog.cli.send",
    "fsmlog.cli.console",
    "fsmlog.cli.testing",
    "fsmlog.cli.package",
]

# looked for beside an FSM.yaml when neither --settings nor FSMLOG_SETTINGS names settings
SETTINGS_BESIDE = ("settings.yaml", "settings.yml", "settings.json")


class UsageError(FsmlogError):
    """A command line that cannot be acted on (exit status 2)."""


class Interrupted(FsmlogError):
    """Ctrl-C stopped a command that leaves work behind; the message says how to go on (exit status 130)."""


EXIT_INTERRUPTED = 130  # what a shell reports for a process ended by SIGINT
# a source could not be reached (after its retries): worth trying again, unlike a refusal or a mistake
# (exit status 1), which a script must not retry blindly
EXIT_UNAVAILABLE = 3


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line naming the fix; usage only on ``-h``.

    Subcommand parsers are made of the same class (``add_subparsers`` uses the parent's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}; `{self.prog} -h` shows the options\n")


def build_parser() -> argparse.ArgumentParser:
    from fsmlog import __version__

    parser = Parser(
        prog="fsmlog",
        description="Finite-state-machine workflows on an event log: run them locally on one SQLite "
        "file, deploy them on AWS Lambda + Kinesis.",
    )
    parser.add_argument("--version", action="version", version=f"fsmlog {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and log user-context values")
    parser.add_argument("--settings", metavar="PATH",
                        help="settings module or .py/.yaml/.json file (sets FSMLOG_SETTINGS)")
    parser.add_argument("--db", metavar="PATH", help="shortcut: every source on the embedded file PATH")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a command module not written (or not installed) yet
            raise
        module.register(sub)
    _db_after_the_command(sub)
    return parser


def _db_after_the_command(sub: argparse._SubParsersAction) -> None:
    """``--db PATH`` after the command as well as before it (``fsmlog history --db PATH ID``)."""
    for command in {id(p): p for p in sub.choices.values()}.values():
        try:
            command.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                                 help="every source on the embedded file PATH (as `fsmlog --db PATH`)")
        except argparse.ArgumentError:
            pass  # the command has a --db of its own
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _db_after_the_command(action)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    _configure_logging(args.debug)
    if args.settings:
        os.environ["FSMLOG_SETTINGS"] = args.settings
    from handlers.metrics.emf import send_to_stderr

    was = send_to_stderr()  # stdout is the command's own output (one JSON document with --json)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        _report(exc, args.debug)
        return 2
    except Interrupted as exc:
        _report(exc, args.debug)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 1
    except ServiceUnavailable as exc:
        _report(exc, args.debug)
        return EXIT_UNAVAILABLE
    except (FsmlogError, OSError) as exc:
        _report(exc, args.debug)
        return 1
    finally:
        send_to_stderr(was)


def _report(exc: BaseException, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exception(exc)
    print(f"error: {one_line(exc)}", file=sys.stderr)


def one_line(exc: BaseException) -> str:
    """An error as one line: what, where, and what to do."""
    problems = getattr(exc, "problems", None)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more; `fsmlog validate FILE` lists them all)" if len(problems) > 1 else ""
        return f"invalid machine definitions: {first}{more}"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}"
    text = str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _configure_logging(debug: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    handler = RichHandler(console=Console(stderr=True), show_path=debug, rich_tracebacks=debug)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(message)s",
                        handlers=[handler], force=True)
    if not debug:
        logging.getLogger("botocore").setLevel(logging.WARNING)


# ---------------------------------------------------------------- shared by command modules


def settings_for(args: argparse.Namespace, fsm_path: str | None = None) -> Settings:
    """Settings for a command: FSMLOG_SETTINGS (or --settings), else a settings.yaml beside the FSM.yaml;
    the environment overrides; ``--db`` puts every source on one embedded file; ``--debug`` sets DEBUG."""
    environ = dict(os.environ)
    if not environ.get("FSMLOG_SETTINGS") and fsm_path:
        for name in SETTINGS_BESIDE:
            beside = Path(fsm_path).resolve().parent / name
            if beside.is_file():
                environ["FSMLOG_SETTINGS"] = str(beside)
                logging.getLogger("fsmlog.cli").debug("settings from %s", beside)
                break
    overrides: dict[str, Any] = {}
    if getattr(args, "db", None):
        url = "sqlite:///" + str(Path(args.db).expanduser().absolute())
        for kind in SOURCES:
            overrides[f"PRIMARY_{kind}_SOURCE"] = url
            overrides[f"SECONDARY_{kind}_SOURCE"] = None
    if getattr(args, "debug", False):
        overrides["DEBUG"] = True
    return load_settings(environ, **overrides)


def load_definitions(path: str) -> Any:
    """Load an FSM.yaml with its directory (and the working directory) importable, for its actions."""
    from projections.definition import load

    for entry in (str(Path(path).resolve().parent), os.getcwd()):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    return load(path)


@dataclass
class Runtime:
    settings: Settings
    services: Services
    engine: Engine

    @property
    def log(self) -> EventLog:
        return self.services.log

    def close(self) -> None:
        self.services.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_runtime(args: argparse.Namespace, definitions: Any = None, fsm_path: str | None = None,
                 **engine_options: Any) -> Runtime:
    """Settings, services and an engine for a command (definitions may be omitted for status/abort)."""
    from handlers.engine import Engine
    from handlers.wiring import open_services
    from projections.definition import Definitions

    settings = settings_for(args, fsm_path)
    services = open_services(settings)
    try:
        engine = Engine(definitions if definitions is not None else Definitions({}), services, settings,
                        **engine_options)
    except BaseException:
        services.close()
        raise
    return Runtime(settings, services, engine)


def local_log(runtime: Runtime, what: str) -> Any:
    """The stream as a log this process can read and claim from (every side of it that can), or a
    clear error. The worker claims from each embedded side itself (``handlers.worker``)."""
    from handlers.worker import claimable_sides

    log = runtime.log
    if not claimable_sides(log):
        raise FsmlogError(
            f"{what} needs the embedded log, but PRIMARY_STREAM_SOURCE is {log.name!r}; use --db PATH "
            "(or unset the stream settings) to run locally, or deploy the Lambda for AWS sources"
        )
    return log


def readable_log(runtime: Runtime, what: str) -> Any:
    """The stream source, when at least one side of it can be read back (``eventlog.sides``)."""
    from eventlog.sides import readable_sides

    log = runtime.log
    if not readable_sides(log):
        raise FsmlogError(
            f"{what} needs a stream fsmlog can read back; PRIMARY_STREAM_SOURCE {log.name!r} is not one "
            "(use Kinesis or the embedded log)"
        )
    return log
