"""API Gateway trigger (REST API proxy, payload 1.0, and HTTP API, payload 2.0).

Routes:

- ``POST /machines/{machine}`` with a JSON object body (the machine's user context;
  empty body = empty context) starts a machine: ``201 {"correlation_id": ...}``
  with a ``Location`` header. ``?correlation_id=ID`` chooses the id.
- ``GET /machines/{id}`` returns the machine's status as JSON (``?context=true``
  adds the user context); ``404`` when there is no such machine.
- ``POST /machines/{id}/events`` with ``{"event": E, "data": ..., "event_id": ...}`` sends an
  event to a machine waiting in a ``wait: true`` state (``handlers.sending``): ``202`` with
  ``duplicate`` true when that ``event_id`` was applied already; ``409`` naming the state and
  the event (and ``code``) when the machine cannot take it; ``404`` for no such machine.

Anything else answers a JSON error: 400 (bad body), 404 (unknown machine or
route), 405 (wrong method), 503 (a backing service failed). The path may carry a
stage or base-path prefix; only its last two segments are routed on.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from eventlog.errors import BackendError, ContextValueError, FsmlogError
from projections.errors import UnknownMachine

from . import unbase64

if TYPE_CHECKING:
    from ..engine import Engine

JSON_HEADERS = {"Content-Type": "application/json"}


class _Fail(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {**JSON_HEADERS, **(headers or {})},
        "body": json.dumps(body, default=str, sort_keys=True),
        "isBase64Encoded": False,
    }


def error(status: int, message: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return response(status, {"error": message, "status": status}, headers)


def request(event: dict[str, Any]) -> tuple[str, str, dict[str, str], str | None]:
    """``(method, path, query, body text)`` of either payload version."""
    ctx = event.get("requestContext")
    ctx = ctx if isinstance(ctx, dict) else {}
    http = ctx.get("http") if isinstance(ctx.get("http"), dict) else None
    if http is not None:  # payload 2.0
        method = http.get("method") or ""
        path = event.get("rawPath") or http.get("path") or ""
    else:
        method = event.get("httpMethod") or ctx.get("httpMethod") or ""
        path = event.get("path") or ctx.get("path") or ""
    query = event.get("queryStringParameters") or {}
    body = event.get("body")
    if body is not None and not isinstance(body, str):
        raise _Fail(400, f"request body must be text, not {type(body).__name__}")
    if body and event.get("isBase64Encoded"):
        try:
            body = unbase64(body, "request body").decode("utf-8")
        except ValueError as exc:
            raise _Fail(400, f"request body is marked base64 but does not decode as UTF-8 text: {exc}") from None
    return str(method).upper(), str(path), query if isinstance(query, dict) else {}, body


def route(path: str) -> str | None:
    """The ``{machine}``/``{id}`` segment of ``.../machines/{x}``, or None for any other path."""
    parts = [unquote(p) for p in path.split("/") if p]
    if len(parts) >= 2 and parts[-2] == "machines" and parts[-1]:
        return parts[-1]
    return None


def events_route(path: str) -> str | None:
    """The ``{id}`` of ``.../machines/{id}/events``, or None."""
    parts = [unquote(p) for p in path.split("/") if p]
    if len(parts) >= 3 and parts[-3] == "machines" and parts[-2] and parts[-1] == "events":
        return parts[-2]
    return None


def _send(engine: Engine, cid: str, body: str | None) -> dict[str, Any]:
    from ..errors import EventRefused

    doc = _context(body)
    event, event_id = doc.get("event"), doc.get("event_id")
    if not isinstance(event, str) or not event:
        raise _Fail(400, 'request body must name the event: {"event": "approve", "data": {...}, "event_id": "..."}')
    if event_id is not None and (not isinstance(event_id, str) or not event_id):
        raise _Fail(400, "event_id must be a non-empty string")
    try:
        sent = engine.send_event(cid, event, doc.get("data"), event_id)
    except EventRefused as exc:
        status = 404 if exc.code == "UnknownMachine" else 409
        return response(status, {"error": str(exc), "status": status, "code": exc.code, "state": exc.state,
                                 "event": exc.event})
    except ContextValueError as exc:
        raise _Fail(400, str(exc)) from None
    return response(202, {"correlation_id": cid, "event": event, "event_id": sent.event_id, "state": sent.state,
                          "duplicate": sent.duplicate})


def _context(body: str | None) -> dict[str, Any]:
    if body is None or not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise _Fail(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _Fail(400, f"request body must be a JSON object (the machine's context), not {type(value).__name__}")
    return value


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def handle_api_event(event: dict[str, Any], engine: Engine) -> dict[str, Any]:
    """One request: the route picks the handler (an event sent, a machine started, a status read);
    every refusal is a ``_Fail`` or an error of ours turned into its status code here."""
    try:
        method, path, query, body = request(event)
        sent_to = events_route(path)
        if sent_to is not None:
            if method != "POST":
                raise _Fail(405, f"method {method or '(none)'} not allowed on {path}", {"Allow": "POST"})
            return _send(engine, sent_to, body)
        target = route(path)
        if target is None:
            raise _Fail(404, f"no route for {method} {path}; use POST /machines/{{machine}} or GET /machines/{{id}}")
        if method == "POST":
            return _start(engine, target, query, body)
        if method == "GET":
            return _status(engine, target, query)
        raise _Fail(405, f"method {method or '(none)'} not allowed on {path}", {"Allow": "GET, POST"})
    except _Fail as fail:
        return error(fail.status, fail.message, fail.headers)
    except BackendError as exc:
        return error(503, f"a backing service failed: {exc}", {"Retry-After": "1"})
    except FsmlogError as exc:
        return error(400, str(exc))


def _start(engine: Engine, machine: str, query: dict[str, str], body: str | None) -> dict[str, Any]:
    """``POST /machines/{machine}``: 201 with the new machine's id and where to read it."""
    context = _context(body)
    cid = query.get("correlation_id") or None
    try:
        cid = engine.start(machine, context, correlation_id=cid)
    except UnknownMachine as exc:
        raise _Fail(404, str(exc)) from None
    except ContextValueError as exc:
        raise _Fail(400, str(exc)) from None
    return response(201, {"correlation_id": cid, "machine": machine}, {"Location": f"/machines/{cid}"})


def _status(engine: Engine, cid: str, query: dict[str, str]) -> dict[str, Any]:
    """``GET /machines/{id}``: the folded state (``?context=1`` adds the context)."""
    state = engine.status(cid)
    if state is None:
        raise _Fail(404, f"no machine with id {cid!r}")
    out = state.as_dict()
    if _truthy(query.get("context", "")):
        out["context"] = state.context
    return response(200, out)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point for an API Gateway proxy integration (REST or HTTP API)."""
    from .runtime import engine

    return handle_api_event(event, engine())

