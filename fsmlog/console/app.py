"""The console's ASGI app: pages, JSON API, static files, the token guard and error handling."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from eventlog.errors import FsmlogError
from fsmlog.cli import one_line

from . import api, pages
from .auth import TokenGuard
from .queries import Reader

if TYPE_CHECKING:
    from fsmlog.cli import Runtime
    from projections.definition import Definitions

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
# no inline script or style anywhere; the SVG is markup, styled by the stylesheet
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class SecurityHeaders:
    """ASGI middleware adding the content security policy and friends to every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
                    (b"cache-control", b"no-store")]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(runtime: Runtime, *, token: str, definitions: Definitions | None = None,
               stalled_after_s: float = 900.0,
               allowed_hosts: list[str] | None = None) -> Starlette:
    """The console on an open runtime (``fsmlog.cli.open_runtime``); ``allowed_hosts`` None allows any
    Host header (a non-loopback bind), else only those (DNS rebinding cannot reach a loopback console)."""

    async def fsmlog_error(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return api.error_response(exc)
        response = api.error_response(exc)
        return pages.render(request, "error.html", message=one_line(exc), status=response.status_code,
                            status_code=response.status_code)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = f"{exc.detail}: {request.method} {request.url.path}"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=exc.status_code)
        return pages.render(request, "error.html", message=message, status=exc.status_code,
                            status_code=exc.status_code)

    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    middleware.append(Middleware(TokenGuard, token=token))
    app = Starlette(
        routes=[*api.routes(), *pages.routes(),
                Mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")],
        middleware=middleware,
        exception_handlers={FsmlogError: fsmlog_error, HTTPException: http_error},
    )
    app.state.reader = Reader(runtime, definitions, stalled_after_s=stalled_after_s)
    return app
