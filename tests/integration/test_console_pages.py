"""The console's pages in a real headless browser (Debian's chromium, driven by Playwright).

``fsmlog console`` runs as a subprocess on an embedded file holding machines in
every status (tests/fixtures/console_machines.py); each test loads pages,
checks what they show, clicks the actions and saves a screenshot under its
temporary directory.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from fsmlog.cli.ids import short_ids
from tests.fixtures.console_machines import MARKUP, make_console_log

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("FSMLOG_CHROMIUM", "/usr/bin/chromium")
TOKEN = "test-token-1234"
README_SHOTS = {"machines", "machine", "dead-letters", "overview"}  # one of each page


@pytest.fixture
def console(tmp_path, monkeypatch):
    """(base URL, the URL with the token, the log) of a running ``fsmlog console``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    log = make_console_log(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_") and not k.endswith("_SOURCE")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]), FSMLOG_CONSOLE_TOKEN=TOKEN, COLUMNS="200")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsmlog.cli", "--db", str(log.db), "console", "--port", "0", "--no-open",
         "--fsm", str(log.fsm)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    url = None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            match = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", lines.get(timeout=1.0))
        except queue.Empty:
            continue
        url = match.group(0) if match else None
    if url is None:
        proc.kill()
        pytest.fail(f"fsmlog console printed no URL: {proc.stderr.read()}")
    try:
        yield url.split("/?")[0], url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}; `make services` installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def page_errors() -> list[str]:
    """What the browser reported as errors (a test that loads a 404 on purpose clears it)."""
    return []


@pytest.fixture
def page(browser, page_errors):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    pg.on("dialog", lambda dialog: dialog.accept())
    errors = page_errors
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield pg
    context.close()
    assert not errors, errors  # no script error and no CSP violation on any page


def shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / "screenshots" / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    if os.environ.get("FSMLOG_CONSOLE_SHOTS") and name in README_SHOTS:  # to refresh the README's pictures
        shutil.copy(path, Path(os.environ["FSMLOG_CONSOLE_SHOTS"]) / f"console-{name}.png")
    return path


def test_machines_page_counts_every_status_filters_and_searches(console, page, tmp_path):
    base, url, log = console
    page.goto(url)
    assert page.url == base + "/"  # the token left the address bar; the cookie carries it
    cookie = next(c for c in page.context.cookies() if c["name"] == "fsmlog_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.inner_text("header .session").strip() == "operator"
    page.goto(base + "/?refresh=600")  # auto-refresh on, but no reload while the test reads the page
    counts = {a.get_attribute("data-status"): a.inner_text().split()[-1]
              for a in page.locator("#status-counts a[data-status]").all()}
    assert counts == {"running": "1", "stalled": "2", "completed": "2", "failed": "1", "aborted": "1"}
    rows = page.locator("#machines tbody tr")
    assert rows.count() == 7
    first_stalled = page.locator(f'#machines tr[data-id="{log.stalled[0]}"]')
    assert first_stalled.get_attribute("data-status") == "stalled"
    link = first_stalled.locator("td.id a")
    every_id = [*log.completed, log.failed, log.aborted, log.running, *log.stalled]
    assert link.inner_text() == short_ids(every_id)[log.stalled[0]] != log.stalled[0]
    assert link.get_attribute("title") == log.stalled[0]
    shot(page, tmp_path, "machines")

    page.select_option("select[name=status]", "stalled")
    page.click(".filters button[type=submit]")
    page.wait_for_url(re.compile(r"status=stalled"))
    assert "refresh=600" in page.url
    assert sorted(r.get_attribute("data-id") for r in page.locator("#machines tbody tr").all()) == sorted(log.stalled)

    page.goto(base + "/?q=done-&refresh=0")
    assert sorted(r.get_attribute("data-id") for r in page.locator("#machines tbody tr").all()) == \
        sorted(log.completed)
    page.goto(base + "/?limit=3&refresh=0")
    assert page.locator("#machines tbody tr").count() == 3
    page.click("a[rel=next]")
    assert page.locator("#machines tbody tr").count() == 3
    assert "4–6 of 7" in page.inner_text(".pager")


def test_machine_page_graph_timeline_and_escaped_context(console, page, page_errors, tmp_path):
    base, url, log = console
    page.goto(url)
    page.goto(f"{base}/machines/{log.completed[0]}")
    assert page.inner_text("#machine-status") == "completed"
    graph = page.locator("#graph svg")
    assert graph.count() == 1
    assert page.locator('#graph g.state.current').get_attribute("data-state") == "shipped"
    assert page.locator("#graph path.edge.taken").count() >= 2  # start arrow + the fired transitions
    kinds = [r.get_attribute("data-kind") for r in page.locator("#timeline tbody tr").all()]
    assert kinds[0] == "start" and kinds[-1] == "completed"
    context_text = page.inner_text("#context")
    assert MARKUP in context_text  # shown as text ...
    assert page.locator("main script, main b:text('bold')").count() == 0  # ... never as markup
    assert "+ label" in page.inner_text("#timeline")  # the context diff of the labelling step
    shot(page, tmp_path, "machine-history")

    page.goto(f"{base}/machines/{log.failed}")
    assert page.inner_text("#machine-status") == "failed"
    assert "the packing robot jammed on lamp-3" in page.inner_text("#timeline")

    page.goto(f"{base}/machines/{log.failed[:8]}")  # a unique prefix, as the CLI's tables show ids
    assert page.url == f"{base}/machines/{log.failed}"
    assert not page_errors
    response = page.goto(f"{base}/machines/no-such-id")
    assert response.status == 404
    assert "no machine with id 'no-such-id'" in page.inner_text("#error-message")
    page_errors.clear()  # the 404 itself


def test_abort_from_the_machine_page(console, page, tmp_path):
    base, url, log = console
    page.goto(url)
    page.goto(f"{base}/machines/{log.running}")
    assert page.inner_text("#machine-status") == "running"
    assert page.locator("#machine-stalled").count() == 0  # started just now
    page.fill("#abort-reason", "wrong address <i>")
    page.click("#abort-button")
    expect(page.locator("#machine-status")).to_have_text("aborted", timeout=15000)
    timeline = page.inner_text("#timeline")
    assert "Aborted: wrong address <i>" in timeline
    shot(page, tmp_path, "aborted")
    status = page.request.get(f"{base}/api/machines/{log.running}").json()
    assert status["machine"]["status"] == "aborted" and status["machine"]["error"] == "Aborted: wrong address <i>"


def test_redispatch_shows_the_record_first_then_appends_it(console, page, tmp_path):
    base, url, log = console
    page.goto(url)
    cid = log.stalled[1]
    page.goto(f"{base}/machines/{cid}")
    assert page.inner_text("#machine-stalled") == "stalled 1h"
    assert page.locator("#redispatch-preview").is_hidden()
    page.click("#redispatch-button")
    preview = page.inner_text("#redispatch-preview")
    assert "labelling" in preview and "0 → 1" in preview and "retry" in preview
    history = page.request.get(f"{base}/api/machines/{cid}/history").json()
    assert [h["record"]["kind"] for h in history] == ["start", "step"]  # the preview wrote nothing
    shot(page, tmp_path, "machine")  # with the redispatch preview open
    page.click("#redispatch-confirm")
    expect(page.locator("#timeline tbody tr")).to_have_count(3, timeout=15000)
    last = page.locator("#timeline tbody tr").last
    assert last.get_attribute("data-kind") == "retry"
    assert "Redispatched" in last.inner_text()


def test_dead_letters_page_shows_one_letter_and_redrives_it(console, page, tmp_path):
    base, url, log = console
    record_letter, garbage_letter = log.letters
    page.goto(url)
    page.goto(f"{base}/dead-letters")
    assert page.locator("#letters tbody tr").count() == 2
    page.click(f'#letters tr[data-letter="{garbage_letter}"] td a')
    page.wait_for_url(re.compile(garbage_letter))
    assert "00000000  00 01 67 61 72 62 61 67 65 3c 62 3e" in page.inner_text("#hexdump")
    assert "|..garbage<b>|" in page.inner_text("#hexdump")
    assert "not an fsmlog record" in page.inner_text("#letter")
    page.goto(f"{base}/dead-letters/{record_letter[:8]}")
    assert page.url == f"{base}/dead-letters/{record_letter}"
    assert "poison: handler raised DecodeError" in page.inner_text("#letter")
    shot(page, tmp_path, "dead-letters")
    page.click("#letter button.redrive")
    page.wait_for_url(base + "/dead-letters")
    page.wait_for_load_state()
    assert [r.get_attribute("data-letter") for r in page.locator("#letters tbody tr").all()] == [garbage_letter]
    history = page.request.get(f"{base}/api/machines/redrive-0001/history").json()
    assert [h["record"]["kind"] for h in history] == ["start"]  # back on the stream


def test_overview_page_charts_the_last_hour(console, page, tmp_path):
    base, url, log = console
    page.goto(url)
    page.goto(f"{base}/overview?refresh=600")
    assert page.is_checked("#auto-refresh")
    boxes = page.locator("#charts figure")
    assert [b.get_attribute("data-series") for b in boxes.all()] == ["transitions", "failures", "retries", "parked"]
    totals = {b.get_attribute("data-series"): int(b.locator("figcaption b").inner_text()) for b in boxes.all()}
    assert totals["transitions"] >= 5 and totals["failures"] == 1 and totals["parked"] == 2
    assert page.locator("#charts svg rect.bar").count() == 4 * 60
    assert "parcel" in page.inner_text("#summary")
    shot(page, tmp_path, "overview")


def test_without_the_token_pages_are_read_only_and_changes_refused(console, page, page_errors):
    base, _url, log = console
    page.goto(f"{base}/machines/{log.running}")
    assert page.inner_text("header .session").strip() == "read-only"
    assert page.locator("#abort-button").count() == 0
    status = page.evaluate(
        "async (id) => (await fetch('/api/machines/' + id + '/abort', {method: 'POST', body: '{}'})).status",
        log.running)
    assert status == 401
    response = page.goto(f"{base}/?token=wrong")
    assert response.status == 401 and "not this console's" in page.inner_text("body")
    assert not [c for c in page.context.cookies() if c["name"] == "fsmlog_console"]
    page_errors.clear()  # the 401s asked for


def test_a_non_loopback_bind_warns_and_takes_the_token_option(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSMLOG_") and not k.endswith("_SOURCE")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsmlog.cli", "--db", str(tmp_path / "x.db"), "console", "--host", "0.0.0.0",
         "--port", "0", "--no-open", "--token", "from-the-option"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = ""
        while "token=" not in url:
            url = proc.stdout.readline()
            assert url, proc.stderr.read()
        assert url.strip().endswith("/?token=from-the-option")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    warning = proc.stderr.read()
    assert "warning: binding 0.0.0.0, not loopback" in " ".join(warning.split())
