"""The console's JSON API over HTTP (Starlette's TestClient), on an embedded file with machines in
every status: shapes as the CLI's ``--json``, 404 and 401 as one JSON line, the actions, the token."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the console extra is not installed")

from starlette.testclient import TestClient  # noqa: E402

from fsmlog.cli import load_definitions, open_runtime  # noqa: E402
from fsmlog.console.app import LOOPBACK_HOSTS, create_app  # noqa: E402
from tests.fixtures.console_machines import MARKUP, make_console_log  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    log = make_console_log(tmp_path)
    args = argparse.Namespace(db=str(log.db), debug=False)
    definitions = load_definitions(str(log.fsm))
    runtime = open_runtime(args, definitions)
    app = create_app(runtime, token=TOKEN, definitions=definitions, allowed_hosts=[*LOOPBACK_HOSTS])
    client = TestClient(app, base_url="http://127.0.0.1")
    try:
        yield client, log
    finally:
        client.close()
        runtime.close()


def cli_json(log, *args: str):
    proc = subprocess.run([sys.executable, "-m", "fsmlog.cli", "--db", str(log.db), *args, "--json"],
                          capture_output=True, text=True, cwd=log.db.parent, timeout=120,
                          env={"PYTHONPATH": f"{ROOT}:{log.db.parent}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_machines_counts_every_status_and_filters(setup):
    client, log = setup
    doc = client.get("/api/machines").json()
    assert doc["counts"] == {"running": 1, "stalled": 2, "completed": 2, "failed": 1, "aborted": 1}
    assert doc["total"] == 7 and doc["cursor"] is None
    times = [m["time"] for m in doc["machines"]]
    assert times == sorted(times, reverse=True)
    stalled = client.get("/api/machines", params={"status": "stalled"}).json()["machines"]
    assert sorted(m["correlation_id"] for m in stalled) == sorted(log.stalled)
    assert all(m["status"] == "running" and m["stalled"] and m["stuck_s"] > 3000 for m in stalled)
    assert [m["correlation_id"] for m in client.get("/api/machines?status=running").json()["machines"]] == \
        [log.running]
    by_prefix = client.get("/api/machines", params={"q": "done-"}).json()["machines"]
    assert sorted(m["correlation_id"] for m in by_prefix) == sorted(log.completed)
    assert client.get("/api/machines", params={"machine": "nope"}).json()["machines"] == []
    # a longer stall threshold: the two-hour-old machine is stalled, the one-hour-old one is not
    longer = client.get("/api/machines", params={"status": "stalled", "stalled_after": "90m"}).json()
    assert [m["correlation_id"] for m in longer["machines"]] == [log.stalled[0]]


def test_machines_pages_with_a_cursor(setup):
    client, _log = setup
    seen, cursor = [], None
    while True:
        doc = client.get("/api/machines", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        seen += [m["correlation_id"] for m in doc["machines"]]
        cursor = doc["cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7


def test_machine_and_history_have_the_cli_shapes(setup):
    client, log = setup
    cid = log.completed[0]
    doc = client.get(f"/api/machines/{cid}").json()
    assert doc == cli_json(log, "status", cid)
    assert doc["machine"]["status"] == "completed" and doc["context"]["note"] == MARKUP
    assert client.get(f"/api/machines/{cid}/history").json() == cli_json(log, "history", cid)


def test_unknown_ids_are_404_with_one_json_line(setup):
    client, _log = setup
    for method, url in (("GET", "/api/machines/nope"), ("GET", "/api/machines/nope/history"),
                        ("POST", "/api/machines/nope/abort"), ("POST", "/api/machines/nope/redispatch"),
                        ("GET", "/api/dead-letters/nope"), ("POST", "/api/dead-letters/nope/redrive"),
                        ("GET", "/api/no-such-route")):
        response = client.request(method, url, headers=AUTH)
        assert response.status_code == 404, (method, url, response.text)
        body = response.json()
        assert list(body) == ["error"] and "\n" not in body["error"] and body["error"], body


def test_changes_need_the_token(setup):
    client, log = setup
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Cookie": "fsmlog_console=wrong"}):
        response = client.post(f"/api/machines/{log.running}/abort", json={"reason": "x"}, headers=headers)
        assert response.status_code == 401 and "token" in response.json()["error"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert client.get(f"/api/machines/{log.running}").json()["machine"]["status"] == "running"
    # reads need none
    assert client.get("/api/machines").status_code == 200


def test_the_url_token_sets_a_strict_httponly_cookie_that_authorizes(setup):
    client, log = setup
    response = client.get(f"/?token={TOKEN}&status=failed", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/?status=failed"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN in cookie
    assert client.get("/?token=wrong", follow_redirects=False).status_code == 401
    client.cookies.set("fsmlog_console", TOKEN)
    response = client.post(f"/api/machines/{log.running}/abort", json={"reason": "from the cookie"})
    assert response.status_code == 200, response.text


def test_abort_is_the_cli_abort(setup):
    client, log = setup
    response = client.post(f"/api/machines/{log.running}/abort", json={"reason": "wrong address"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["aborted"]["kind"] == "aborted"
    status = cli_json(log, "status", log.running)
    assert status["machine"]["status"] == "aborted" and status["machine"]["error"] == "Aborted: wrong address"
    again = client.post(f"/api/machines/{log.running}/abort", json={}, headers=AUTH)
    assert again.status_code == 409 and "already ended" in again.json()["error"]
    bad = client.post(f"/api/machines/{log.stalled[0]}/abort", content=b"not json", headers=AUTH)
    assert bad.status_code == 400


def test_redispatch_dry_run_then_append(setup):
    client, log = setup
    cid = log.stalled[1]
    dry = client.post(f"/api/machines/{cid}/redispatch", json={"dry_run": True}, headers=AUTH).json()
    assert dry["written"] is False and dry["would_append"]["kind"] == "retry"
    assert dry == cli_json(log, "replay", "machine", cid) | {"would_append": dry["would_append"]}
    assert len(cli_json(log, "history", cid)) == 2  # nothing written
    done = client.post(f"/api/machines/{cid}/redispatch", headers=AUTH).json()
    assert done["written"] is True and done["redispatched"]["retries"] == 1
    history = cli_json(log, "history", cid)
    assert [h["record"]["kind"] for h in history] == ["start", "step", "retry"]
    ended = client.post(f"/api/machines/{log.completed[0]}/redispatch", headers=AUTH).json()
    assert ended["ended"] is True and ended["written"] is False


def test_dead_letters_list_show_and_redrive(setup):
    client, log = setup
    record_letter, garbage_letter = log.letters
    letters = client.get("/api/dead-letters").json()
    assert letters == cli_json(log, "dead-letters", "list")
    assert {x["id"] for x in letters} == set(log.letters)
    one = client.get(f"/api/dead-letters/{garbage_letter}").json()
    assert one["data_hex"] == b"\x00\x01garbage<b>".hex() and "error" in one["decoded"]
    refused = client.post(f"/api/dead-letters/{garbage_letter}/redrive", headers=AUTH)
    assert refused.status_code == 409 and refused.json()["code"] == "not_a_record"
    assert list(refused.json()) == ["error", "code"] and "\n" not in refused.json()["error"]
    done = client.post(f"/api/dead-letters/{record_letter}/redrive", headers=AUTH)
    assert done.status_code == 200 and done.json()["correlation_id"] == "redrive-0001"
    assert [x["id"] for x in client.get("/api/dead-letters").json()] == [garbage_letter]
    assert client.get("/api/machines", params={"q": "redrive-0001"}).json()["total"] == 1


def test_pages_escape_user_data_and_send_a_strict_csp(setup):
    client, log = setup
    response = client.get(f"/machines/{log.completed[0]}")
    assert response.status_code == 200
    assert MARKUP not in response.text and "&lt;script&gt;" in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    for url in ("/", "/overview", "/dead-letters", f"/dead-letters/{log.letters[1]}"):
        page = client.get(url)
        assert page.status_code == 200 and "<b>bold</b>" not in page.text and "garbage<b>" not in page.text


def test_a_foreign_host_header_is_refused_on_loopback(setup):
    client, _log = setup
    assert client.get("/api/machines", headers={"Host": "evil.example"}).status_code == 400


def test_overview_counts_the_last_hour(setup):
    client, _log = setup
    doc = client.get("/api/overview").json()
    assert doc["source"] == "log"  # the embedded metrics keep totals, not series: the log is counted
    assert {c["name"] for c in doc["metrics"]} >= {"Transitions", "MachinesFailed"}
    series = doc["series"]
    assert all(len(v) == 60 for v in series.values())
    # the stalled machines' records are older than the hour: 13 records of the others, 7 of them transitions
    assert {k: sum(v) for k, v in series.items()} == {"transitions": 7, "failures": 1, "retries": 0, "parked": 2}
    assert doc["records"] == 13


def test_the_lambda_path_and_the_cli_parser_do_not_import_the_console():
    code = ("import sys, handlers, handlers.triggers.router, fsmlog.cli; fsmlog.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'jinja2') "
            "or m.startswith('fsmlog.console')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_pages_take_a_unique_id_prefix_and_name_an_ambiguous_one(setup):
    client, log = setup
    response = client.get(f"/machines/{log.completed[0][:7]}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/machines/{log.completed[0]}"
    ambiguous = client.get("/machines/stall-")
    assert ambiguous.status_code == 409 and "ambiguous" in ambiguous.text
    assert all(cid in ambiguous.text for cid in log.stalled)
    letter = client.get(f"/dead-letters/{log.letters[0][:8]}", follow_redirects=False)
    assert letter.status_code == 303 and letter.headers["location"] == f"/dead-letters/{log.letters[0]}"


def test_the_api_takes_a_unique_id_prefix_and_lists_the_candidates_of_an_ambiguous_one(setup):
    client, log = setup
    cid = log.completed[0]
    assert client.get(f"/api/machines/{cid[:7]}").json() == client.get(f"/api/machines/{cid}").json()
    assert client.get(f"/api/machines/{cid[:7]}/history").json() == cli_json(log, "history", cid)
    ambiguous = client.get("/api/machines/stall-")
    assert ambiguous.status_code == 409
    assert ambiguous.json()["candidates"] == sorted(log.stalled)
    assert "\n" not in ambiguous.json()["error"]
    unknown = client.get("/api/machines/zzz")
    assert unknown.status_code == 404 and list(unknown.json()) == ["error"]
    running = log.stalled[0]
    aborted = client.post(f"/api/machines/{running[:8]}/abort", headers=AUTH, json={"reason": "by prefix"})
    assert aborted.status_code == 200 and aborted.json()["aborted"]["kind"] == "aborted"
    assert cli_json(log, "status", running)["machine"]["status"] == "aborted"
    letter = client.get(f"/api/dead-letters/{log.letters[1][:8]}").json()
    assert letter["id"] == log.letters[1]


def test_a_port_in_use_is_one_line_naming_the_option():
    from fsmlog.cli.console import ConsoleError, _bind

    taken = _bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ConsoleError) as info:
            _bind("127.0.0.1", port)
    finally:
        taken.close()
    assert (info.value.code, info.value.setting) == ("cannot_bind", "--port")
    assert str(info.value) == f"cannot bind 127.0.0.1:{port} (Address already in use); pick another with --port"
