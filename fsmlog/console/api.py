"""The JSON API under ``/api/``: the shapes of the CLI's ``--json``, and the actions.

Each action is the CLI command's own code path: abort is ``Engine.abort``
(``fsmlog abort``), redispatch is ``rebuild_machine`` (``fsmlog replay machine
--redispatch``), redrive is ``redrive`` (``fsmlog dead-letters redrive``).
Ids in paths are whole ids or any unique prefix (as the CLI and the pages
take them). Errors are one JSON line: 404 for an unknown id, 409 for an
ambiguous prefix (with its ``candidates``) or an action the machine's state
refuses, 400 for a bad request, 502 for a backing service.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from eventlog.errors import BackendError, DecodeError, FsmlogError
from fsmlog.cli import one_line
from fsmlog.cli import output as out
from fsmlog.cli.ids import AmbiguousId, UnknownId, resolve_letter, resolve_machine

from .queries import STATUSES, NotFound, Reader


class BadRequest(FsmlogError):
    """A request the API cannot act on (400); ``setting`` names the parameter."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class Refused(FsmlogError):
    """An action the item's state refuses (409); ``code`` says which refusal, ``letter`` names the
    dead letter when it is one."""

    def __init__(self, message: str, *, code: str, letter: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.letter = letter


def error_response(exc: BaseException) -> JSONResponse:
    body: dict[str, Any] = {"error": one_line(exc)}
    if isinstance(exc, (NotFound, UnknownId)):
        status = 404
    elif isinstance(exc, AmbiguousId):
        status = 409
        body["candidates"] = list(exc.candidates)
    elif isinstance(exc, Refused):
        status = 409
        body["code"] = exc.code
    elif isinstance(exc, BadRequest):
        status = 400
    elif isinstance(exc, BackendError):
        status = 502
    else:
        status = 409
    return JSONResponse(body, status_code=status)


def reader(request: Request) -> Reader:
    return request.app.state.reader


def machine_id(request: Request) -> str:
    """The machine the path names: its whole id, or the one id a unique prefix starts."""
    return resolve_machine(reader(request).rt, request.path_params["cid"], listing="GET /api/machines")


def letter_id(request: Request) -> str:
    """The dead letter the path names: its whole id, or the one id a unique prefix starts."""
    return resolve_letter(reader(request).rt.services.dead_letters, request.path_params["letter"],
                          listing="GET /api/dead-letters")


def stalled_after(text: str | None) -> float | None:
    if not text:
        return None
    from replay.errors import ReplayError
    from replay.scan import parse_duration

    try:
        return parse_duration(text)
    except ReplayError as exc:
        raise BadRequest(f"stalled_after: {exc}", setting="stalled_after") from None


def machine_filters(params: Any) -> dict[str, Any]:
    """The list's query parameters, checked (shared with the machines page)."""
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status {status!r} is not one of {', '.join(STATUSES)}", setting="status")
    try:
        limit = int(params.get("limit") or 50)
    except ValueError:
        raise BadRequest(f"limit {params.get('limit')!r} is not a number", setting="limit") from None
    return {"status": status, "machine": params.get("machine") or None, "q": params.get("q") or None,
            "limit": limit, "cursor": params.get("cursor") or None,
            "stalled_after_s": stalled_after(params.get("stalled_after"))}


async def body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise BadRequest("the request body is not JSON; send an object like {\"reason\": \"...\"}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type(value).__name__}")
    return value


async def list_machines(request: Request) -> JSONResponse:
    return JSONResponse(reader(request).machines(**machine_filters(request.query_params)))


async def get_machine(request: Request) -> JSONResponse:
    return JSONResponse(reader(request).machine(machine_id(request)))


async def get_history(request: Request) -> JSONResponse:
    return JSONResponse(reader(request).history(machine_id(request)))


async def abort(request: Request) -> JSONResponse:
    reason = (await body(request)).get("reason") or ""
    if not isinstance(reason, str):
        raise BadRequest("reason must be a string", setting="reason")
    rd = reader(request)
    cid = machine_id(request)
    rd.machine(cid)  # 404 before anything is attempted
    ev = rd.rt.engine.abort(cid, reason)  # what `fsmlog abort ID --reason` runs
    rd.forget()
    return JSONResponse({"aborted": out.event_dict(ev, with_context=False)})


async def redispatch(request: Request) -> JSONResponse:
    """Appends the retry record; ``{"dry_run": true}`` only shows what it would append."""
    dry_run = bool((await body(request)).get("dry_run", False))
    return JSONResponse(reader(request).rebuild(machine_id(request), write=not dry_run))


async def list_dead_letters(request: Request) -> JSONResponse:
    try:
        limit = int(request.query_params.get("limit") or 100)
    except ValueError:
        raise BadRequest("limit must be a number", setting="limit") from None
    return JSONResponse(reader(request).dead_letters(limit))


async def get_dead_letter(request: Request) -> JSONResponse:
    return JSONResponse(reader(request).dead_letter(letter_id(request)))


async def redrive(request: Request) -> JSONResponse:
    from fsmlog.cli.deadletters import redrive as redrive_letter

    rd = reader(request)
    letter = rd.letter(letter_id(request))
    try:
        cid = redrive_letter(rd.rt, letter)  # what `fsmlog dead-letters redrive ID` runs
    except DecodeError as exc:
        raise Refused(f"dead letter {letter.id} holds bytes that are not an fsmlog record ({exc}); "
                      "redriving would only park them again", code="not_a_record", letter=letter.id) from None
    rd.forget()
    return JSONResponse({"redriven": letter.id, "correlation_id": cid, "log": rd.rt.log.name})


async def overview(request: Request) -> JSONResponse:
    return JSONResponse(reader(request).overview())


def routes() -> list[Route]:
    return [
        Route("/api/machines", list_machines),
        Route("/api/machines/{cid:str}", get_machine),
        Route("/api/machines/{cid:str}/history", get_history),
        Route("/api/machines/{cid:str}/abort", abort, methods=["POST"]),
        Route("/api/machines/{cid:str}/redispatch", redispatch, methods=["POST"]),
        Route("/api/dead-letters", list_dead_letters),
        Route("/api/dead-letters/{letter:str}", get_dead_letter),
        Route("/api/dead-letters/{letter:str}/redrive", redrive, methods=["POST"]),
        Route("/api/overview", overview),
    ]
