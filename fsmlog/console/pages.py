"""The HTML pages: ``/``, ``/machines/{id}``, ``/dead-letters``, ``/overview``.

Jinja2 with autoescaping: every value from the log (ids, states, user context,
error messages) is escaped. The only markup inserted unescaped is the SVG that
``diagram`` and ``charts`` build, which escape every name they draw.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from fsmlog.cli.ids import resolve, resolve_letter, short_ids
from fsmlog.cli.output import short_id
from fsmlog.cli.replay import human_duration

from .api import machine_filters, reader
from .charts import bar_chart
from .queries import STATUSES, NotFound

templates = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")), autoescape=True))
templates.env.filters["short"] = short_id
templates.env.filters["ago"] = lambda t: human_duration(time.time() - t) + " ago"
templates.env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
templates.env.filters["duration"] = human_duration
# JSON as text (autoescaped where it is shown), not Jinja's tojson, which is for script blocks
templates.env.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, default=str)
templates.env.filters["dict_with"] = lambda d, k, v: {**d, k: v}
templates.env.filters["dict_without"] = lambda d, k: {x: y for x, y in d.items() if x != k}

CHARTS = (("transitions", "Transitions"), ("failures", "Failures"), ("retries", "Retries"),
          ("parked", "Parked records (dead letters)"))


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    context.update(authorized=request.scope.get("state", {}).get("authorized", False), statuses=STATUSES)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


async def machines(request: Request) -> Response:
    params = request.query_params
    filters = machine_filters(params)
    page = reader(request).machines(**filters)
    query = {k: v for k, v in params.items() if k != "cursor" and v}
    return render(request, "machines.html", page=page, query=query,
                  stalled_after=params.get("stalled_after") or human_duration(page["stalled_after_s"]),
                  refresh=params.get("refresh", "5"), now=time.time())


async def machine(request: Request) -> Response:
    """One machine; a unique id prefix (as the CLI's tables show ids) redirects to the full id."""
    cid = request.path_params["cid"]
    rd = reader(request)
    try:
        view = rd.page(cid)
    except NotFound:
        full = resolve(cid, (r["correlation_id"] for r in rd.listing().rows), kind="machine",
                       where=rd.listing().log, listing="fsmlog status")
        if full == cid:
            raise
        return RedirectResponse(f"/machines/{quote(full, safe='')}", status_code=303)
    graph = Markup(view["graph"]) if view["graph"] else None  # built by diagram.render_svg, names escaped
    return render(request, "machine.html", cid=cid, view=view, graph=graph,
                  has_definitions=reader(request).definitions is not None)


async def dead_letters(request: Request) -> Response:
    letters = reader(request).dead_letters(100)
    return render(request, "dead_letters.html", letters=letters, letter=None,
                  short=short_ids(x["id"] for x in letters))


async def dead_letter(request: Request) -> Response:
    """One dead letter; a unique id prefix redirects to the full id."""
    rd = reader(request)
    given = request.path_params["letter"]
    full = resolve_letter(rd.rt.services.dead_letters, given)
    if full != given:
        return RedirectResponse(f"/dead-letters/{quote(full, safe='')}", status_code=303)
    letter = rd.dead_letter(full, full=request.query_params.get("full") == "1")
    letters = rd.dead_letters(100)
    return render(request, "dead_letters.html", letters=letters, letter=letter,
                  short=short_ids(x["id"] for x in letters))


async def overview(request: Request) -> Response:
    rd = reader(request)
    data = rd.overview()
    charts = [(title, key, sum(data["series"][key]),
               Markup(bar_chart(title, data["series"][key], data["start"], key)))  # numbers and times only
              for key, title in CHARTS]
    listing = rd.listing()
    return render(request, "overview.html", data=data, charts=charts, listing=listing,
                  refresh=request.query_params.get("refresh", "10"))


def routes() -> list[Route]:
    return [
        Route("/", machines),
        Route("/machines/{cid:str}", machine),
        Route("/dead-letters", dead_letters),
        Route("/dead-letters/{letter:str}", dead_letter),
        Route("/overview", overview),
    ]
