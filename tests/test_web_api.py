"""The web view's JSON API, event stream, policy switch and escaping, against a real server on loopback."""
import asyncio
import http.client
import json
import smtplib
import socket
import time

import pytest
from waiting import wait_for

from forgelab.errors import BindError
from forgelab.web import EventIndex, WebServer
from forgelab.web.display import from_views
from forgelab.core.loopback import is_loopback as is_loopback_client

pytestmark = pytest.mark.timeout(60)

ATTACKER = "127.0.66.1"
XSS_SUBJECT = "<script>window.__xss='subject'</script>"
XSS_NAME = "<img src=x onerror=window.__xss='name'>"
XSS_MESSAGE = (
    f'From: "{XSS_NAME}" <ceo@bank.example>\r\nTo: alice@corp.example\r\nSubject: {XSS_SUBJECT}\r\n'
    "Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <xss@bank.example>\r\n"
    "Content-Type: text/html\r\n\r\n"
    "<script>window.__xss='body'</script><img src=x onerror=\"window.__xss='body-img'\">\r\n").encode()


def plain(subject="Your statement", sender="alerts@bank.example") -> bytes:
    return (f"From: Bank <{sender}>\r\nTo: alice@corp.example\r\nSubject: {subject}\r\n"
            "Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@bank.example>\r\n\r\nHello.\r\n").encode()


def send(lab, data, mail_from="alerts@bank.example", rcpt="alice@corp.example", source_ip="127.0.0.1"):
    with smtplib.SMTP(*lab.smtp.address, timeout=10, source_address=(source_ip, 0)) as client:
        client.ehlo("client.example")
        return client.sendmail(mail_from, [rcpt], data)


class Http:
    """A tiny client over http.client: real requests to the real server."""

    def __init__(self, web):
        self.host, self.port = web.address

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def json(self, path):
        status, _, body = self.get(path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def post_json(self, path, data, headers=None):
        status, _, body = self.request("POST", path, json.dumps(data).encode(),
                                       {"Content-Type": "application/json", **(headers or {})})
        return status, json.loads(body or b"{}")


@pytest.fixture
def served(lab_with_web):
    """``start(policy)`` -> ``(lab, web, http)``: a running lab, its web view, a client for it."""
    def start(policy="observe"):
        lab, web = lab_with_web(policy)
        return lab, web, Http(web)
    return start


def delivered(lab, count=1):
    events = lab.recorder.wait_for("message.delivered", count)
    assert len(events) >= count
    return events


def test_messages_and_sessions_show_a_delivered_message_with_verdicts_and_source(served):
    lab, web, client = served()
    send(lab, plain("Quarterly statement"), source_ip=ATTACKER)
    (event,) = delivered(lab)
    message_id = event["message_id"]

    listing = client.json("/api/messages")["messages"]
    assert [m["id"] for m in listing] == [message_id]
    assert listing[0]["subject"] == "Quarterly statement" and listing[0]["status"] == "delivered"
    assert {"check": "spf", "result": "fail"} in listing[0]["checks"]

    detail = client.json(f"/api/messages/{message_id}")
    checks = {v["check"]: v for v in detail["verdicts"]}
    assert checks["spf"]["result"] == "fail" and checks["spf"]["reason"]
    assert checks["spf"]["stage"] == "mail_from" and checks["spf"]["policy_action"] == "tag"
    assert "Subject: Quarterly statement" in detail["source"]
    assert detail["rejections"] == []  # docs/web.md lists it for every message
    highlighted = {h["name"].lower() for h in detail["headers"] if h["highlight"]}
    assert {"authentication-results", "x-forgelab-verdict"} <= highlighted
    assert detail["display"]["views"][0]["shows"] == "Bank"

    status, headers, raw = client.get(f"/api/messages/{message_id}/raw")
    assert status == 200 and headers["content-type"].startswith("text/plain") and b"Quarterly statement" in raw

    session_id = event["session_id"]
    assert [s["id"] for s in client.json("/api/sessions")["sessions"]] == [session_id]
    session = client.json(f"/api/sessions/{session_id}")
    assert session["peer_ip"] == ATTACKER and session["helo"] == "client.example"
    steps = session["steps"]
    # The SPF verdict sits between the MAIL FROM that caused it and the reply to it.
    mail_from = next(i for i, s in enumerate(steps) if s["type"] == "line" and s["text"].upper().startswith("MAIL FROM"))
    spf = next(i for i, s in enumerate(steps) if s["type"] == "verdict" and s["verdict"]["check"] == "spf")
    assert mail_from < spf and steps[spf + 1]["type"] in ("verdict", "line")
    reply = next(s for s in steps[spf:] if s["type"] == "line")
    assert reply["direction"] == "out" and reply["text"].startswith("250")
    assert any(s["type"] == "delivered" and s["action"] == "tag" for s in steps)


def test_a_refused_message_is_listed_with_its_reply_and_what_was_asked(served):
    lab, web, client = served()
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(lab, plain(), mail_from="x@phish.example", rcpt="someone@elsewhere.example")
    wait_for(lambda: lab.recorded("message.rejected"))
    (message,) = client.json("/api/messages")["messages"]
    assert message["status"] == "rejected" and message["stage"] == "rcpt_to" and message["reply"].startswith("550")
    assert message["mail_from"] == "x@phish.example" and message["rcpt_tos"] == ["someone@elsewhere.example"]
    detail = client.json(f"/api/messages/{message['id']}")
    assert detail["source"] is None and "refused" in detail["source_note"]
    (refusal,) = detail["rejections"]
    assert refusal["stage"] == "rcpt_to" and refusal["reply"].startswith("550") and refusal["message_id"] == message["id"]


def read_events(response, until, timeout=10.0):
    """Read ``data:`` records from an open event stream until ``until(record)``."""
    records, ids = [], []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = response.fp.readline()
        if not line:
            break
        if line.startswith(b"id: "):
            ids.append(int(line[4:]))
        if line.startswith(b"data: "):
            records.append(json.loads(line[6:]))
            if until(records[-1]):
                return records, ids
    raise AssertionError(f"stream ended without the awaited event; got {[r['kind'] for r in records]}")


def open_stream(web, path="/api/events", headers=None):
    conn = http.client.HTTPConnection(*web.address, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
    return conn, response


def test_the_event_stream_sends_every_step_verdict_and_delivery_as_it_happens(served):
    lab, web, client = served()
    conn, response = open_stream(web)
    try:
        time.sleep(0.2)  # the stream is registered once the response started
        send(lab, plain("Streamed"), source_ip=ATTACKER)
        records, ids = read_events(response, lambda r: r["kind"] == "message.delivered")
    finally:
        conn.close()
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "session.open" and "session.line" in kinds and "verdict" in kinds
    assert records[-1]["subject"] == "Streamed"
    assert ids == [r["seq"] for r in records] and ids == sorted(ids)


def test_the_event_stream_resumes_after_the_last_event_id_and_filters_by_session(served):
    lab, web, client = served()
    send(lab, plain("First"))
    send(lab, plain("Second"))
    first, second = delivered(lab, 2)
    assert first["session_id"] != second["session_id"]
    conn, response = open_stream(web, f"/api/events?session={second['session_id']}", {"Last-Event-ID": "0"})
    try:
        records, _ = read_events(response, lambda r: r["kind"] == "message.delivered")
    finally:
        conn.close()
    assert {r.get("session_id", r.get("session", {}).get("id")) for r in records} == {second["session_id"]}
    assert records[-1]["subject"] == "Second"


def test_stopping_the_web_view_ends_open_event_streams(forgelab_server):
    lab = forgelab_server()
    web = WebServer(lab, port=0).start()
    conn, response = open_stream(web)
    started = time.monotonic()
    web.stop()
    while response.fp.readline():
        pass
    conn.close()
    assert time.monotonic() - started < 5
    assert not web._thread.is_alive()


def test_policy_switch_takes_effect_on_the_next_message(served):
    lab, web, client = served("observe")
    send(lab, plain("Before"), source_ip=ATTACKER)  # observe: a forgery is only tagged
    status, answer = client.post_json("/api/policy", {"policy": "strict"})
    assert status == 200 and answer["policy"] == "strict"
    assert lab.context.rules.policy.name == "strict"
    assert client.json("/api/policy")["name"] == "strict"
    assert lab.recorded("policy.changed")[-1]["name"] == "strict"
    with pytest.raises(smtplib.SMTPException) as refused:
        send(lab, plain("After"), source_ip=ATTACKER)
    assert "550" in str(refused.value)
    statuses = [m["status"] for m in client.json("/api/messages")["messages"]]
    assert statuses == ["rejected", "delivered"]


@pytest.mark.parametrize("body, headers, code", [
    ({"policy": "nonesuch"}, {}, 400),
    ({"policy": "../../etc/passwd"}, {}, 400),
    ({"policy": "/work/main/policies/strict.toml"}, {}, 400),
    ({"policy": "strict"}, {"Origin": "http://evil.example"}, 403),
])
def test_policy_switch_refuses_bad_requests(served, body, headers, code):
    lab, web, client = served("observe")
    status, answer = client.post_json("/api/policy", body, headers)
    assert status == code and answer["error"]
    assert lab.context.rules.policy.name == "observe"


def test_policy_switch_refuses_a_cross_site_form(served):
    lab, web, client = served("observe")
    status, _, _ = client.request("POST", "/api/policy", b"policy=strict",
                                  {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and lab.context.rules.policy.name == "observe"


def asgi_post(app, path, body: bytes, client_ip: str):
    """One request straight into the ASGI app: the only way to arrive from a non-loopback peer here."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8025"), (b"content-type", b"application/json")],
             "client": (client_ip, 40000), "server": ("127.0.0.1", 8025)}
    sent, received = [], [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return received.pop(0) if received else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_policy_switch_is_for_loopback_clients_only(forgelab_server):
    lab = forgelab_server(policy="observe")
    web = WebServer(lab, port=0)  # not started: the app object is called directly
    try:
        status, body = asgi_post(web.app, "/api/policy", b'{"policy": "strict"}', "192.0.2.7")
        assert status == 403 and b"loopback" in body
        assert lab.context.rules.policy.name == "observe"
        status, _ = asgi_post(web.app, "/api/policy", b'{"policy": "strict"}', "127.0.0.1")
        assert status == 200 and lab.context.rules.policy.name == "strict"
    finally:
        web.stop()


def test_loopback_clients():
    assert is_loopback_client("127.0.0.1") and is_loopback_client("127.0.66.1") and is_loopback_client("::1")
    assert is_loopback_client("::ffff:127.0.0.1")
    assert not is_loopback_client("192.0.2.7") and not is_loopback_client("testclient") and not is_loopback_client(None)


def test_every_page_sends_a_strict_content_security_policy(served):
    lab, web, client = served()
    send(lab, plain())
    (event,) = delivered(lab)
    for path in ["/", f"/messages/{event['message_id']}", f"/sessions/{event['session_id']}", "/policy", "/lab",
                 "/attacks", "/api/messages", "/static/app.js", "/messages/nonesuch"]:
        status, headers, _ = client.get(path)
        assert status in (200, 404), path
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "img-src 'self' data:" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"


def test_a_foreign_host_name_is_refused(served):
    """A page on another site that rebinds its name to 127.0.0.1 must not read the lab's API."""
    lab, web, client = served()
    status, _, _ = client.get("/api/messages", headers={"Host": f"attacker.example:{web.address[1]}"})
    assert status == 400
    assert client.get("/api/messages", headers={"Host": f"localhost:{web.address[1]}"})[0] == 200


def test_attacker_markup_is_escaped_on_every_page(served):
    lab, web, client = served()
    send(lab, XSS_MESSAGE, mail_from="ceo@bank.example", source_ip=ATTACKER)
    (event,) = delivered(lab)
    for path in ["/", f"/messages/{event['message_id']}", f"/sessions/{event['session_id']}"]:
        status, _, body = client.get(path)
        page = body.decode()
        assert status == 200
        assert "<script>window" not in page and "<img src=x" not in page, path
        assert page.count("<script") == 1  # our own /static/app.js, nothing else
    message_page = client.get(f"/messages/{event['message_id']}")[2].decode()
    assert "&lt;script&gt;window.__xss=&#39;subject&#39;&lt;/script&gt;" in message_page
    assert "&lt;script&gt;window.__xss=&#39;body&#39;&lt;/script&gt;" in message_page  # the source, as text
    assert "<iframe" not in message_page


def test_pages_for_unknown_ids_are_404(served):
    lab, web, client = served()
    assert client.get("/messages/nonesuch")[0] == 404
    assert client.get("/sessions/nonesuch")[0] == 404
    assert client.get("/api/messages/nonesuch")[0] == 404
    assert client.get("/api/sessions/nonesuch")[0] == 404


def test_lab_world_lists_domains_users_and_servers(served):
    lab, web, client = served()
    world = client.json("/api/lab")
    assert "bank.example" in {d["name"] for d in world["domains"]}
    assert {"alice", "bob"} <= {u["name"] for u in world["users"]}
    assert world["smtp"] == "%s:%d" % lab.smtp.address
    assert next(u for u in world["users"] if u["name"] == "alice")["password"] == "rabbit-hole"  # loopback sees it
    page = client.get("/lab")[2].decode()
    assert "bank.example" in page and "alice@corp.example" in page


def test_attack_run_request_is_checked_and_reports_its_state(served):
    lab, web, client = served()
    assert client.json("/api/attacks")["state"] == "idle"
    status, answer = client.post_json("/api/attacks", {"policies": ["nonesuch"]})
    assert status == 400 and "unknown policy 'nonesuch'" in answer["error"] and "strict" in answer["error"]
    status, _, _ = client.request("POST", "/api/attacks", b"policies=open", {"Content-Type": "text/plain"})
    assert status == 415


@pytest.mark.parametrize("body, named", [
    ({"only": ["nope"]}, "unknown attack id 'nope'"),
    ({"mode": "send", "only": ["from-two-headers", "nope"]}, "unknown attack id 'nope'"),
    ({"policies": ["open", "nope"], "only": ["from-two-headers"]}, "unknown policy 'nope'"),
    ({"policies": "open"}, "'policies' must be a list of names"),
    ({"mode": "send", "policies": ["open"]}, "'policies' is for mode matrix"),
    (["from-two-headers"], "send a JSON object"),
])
def test_attack_run_names_what_is_unknown_and_starts_nothing(served, body, named):
    lab, web, client = served()
    status, answer = client.post_json("/api/attacks", body)
    assert status == 400 and named in answer["error"], answer
    assert "Traceback" not in answer["error"] and "\n" not in answer["error"]
    assert client.json("/api/attacks")["state"] == "idle"


def test_a_failed_run_shows_one_line_and_logs_the_traceback(caplog):
    from forgelab.web.attacks import MatrixJob

    def broken(policies, only):
        raise RuntimeError("the runner broke\nsecond line")

    job = MatrixJob()
    with caplog.at_level("ERROR", logger="forgelab.web.attacks"):
        assert job._launch("matrix", broken, None, None)
        job.join(10)
    status = job.status()
    assert status["state"] == "error"
    assert status["error"].startswith("RuntimeError: the runner broke (")
    assert "\n" not in status["error"] and "Traceback" not in status["error"]
    assert "Traceback" in caplog.text and "second line" in caplog.text  # the details stay on the server


@pytest.mark.parametrize("path", ["/api/messages?limit=0", "/api/messages?limit=1001", "/api/messages?limit=abc",
                                  "/api/messages?limit=-5", "/api/sessions?limit=0", "/api/sessions?limit=1_000",
                                  "/api/events?since=abc", "/api/events?since=-1"])
def test_bad_limit_and_since_are_refused(served, path):
    lab, web, client = served()
    status, headers, body = client.get(path)
    assert status == 400 and headers["content-type"].startswith("application/json"), (status, body)
    error = json.loads(body)["error"]
    name = "limit" if "limit" in path else "since"
    assert f"'{name}' must be a whole number" in error and (name == "since" or "from 1 to 1000" in error)


def test_good_limits_are_honoured(served):
    lab, web, client = served()
    for n in range(3):
        send(lab, plain(f"m{n}"))
    delivered(lab, 3)
    assert len(client.json("/api/messages?limit=2")["messages"]) == 2
    assert len(client.json("/api/sessions?limit=1000")["sessions"]) == 3


def test_the_catalogue_runs_from_the_api(served):
    from forgelab.attacks import catalogue

    lab, web, client = served()
    first = catalogue.attacks()[0].id
    status, answer = client.post_json("/api/attacks", {"policies": ["open"], "only": [first]})
    assert status == 202 and answer["state"] == "running"
    job = wait_for(lambda: (j := client.json("/api/attacks"))["state"] != "running" and j, timeout=40)
    assert job["state"] == "done", job["error"]
    assert first in job["matrix"]


def test_port_in_use_is_a_clear_error(forgelab_server):
    lab = forgelab_server()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        web = WebServer(lab, port=taken.getsockname()[1])
        with pytest.raises(BindError, match="web view cannot listen"):
            web.start()
        web.stop()


def record(seq, kind, **fields):
    return {"seq": seq, "ts": 1000.0 + seq, "kind": kind, **fields}


def test_the_index_is_bounded():
    index = EventIndex(max_sessions=3, max_messages=2, max_steps=5)
    seq = 0
    for n in range(6):
        sid = f"s{n}"
        index(record(seq := seq + 1, "session.open", protocol="smtp", session={"id": sid, "peer_ip": "127.0.0.1"}))
        for _ in range(10):
            index(record(seq := seq + 1, "session.line", session_id=sid, protocol="smtp", direction="in", text="NOOP"))
        index(record(seq := seq + 1, "message.delivered", session_id=sid, message_id=f"m{n}", action="accept",
                     envelope={"mail_from": "a@b.example", "rcpt_tos": []}, verdicts=[], locations=[]))
    assert [s["id"] for s in index.sessions()] == ["s5", "s4", "s3"]
    assert [m["id"] for m in index.messages()] == ["m5", "m4"]
    session = index.session("s5")
    assert len(session["steps"]) == 5 and session["dropped_steps"] == 6
    assert index.session("s0") is None and index.message("m0") is None


def test_the_index_clips_huge_lines():
    index = EventIndex()
    index(record(1, "session.open", protocol="smtp", session={"id": "s1"}))
    index(record(2, "session.line", session_id="s1", direction="in", text="X" * 100_000))
    (step,) = index.session("s1")["steps"]
    assert len(step["text"]) < 5000 and "more characters" in step["text"]


def test_from_views_show_what_clients_show_and_warn():
    views = from_views(['"support@bank.example" <attacker@phish.example>'])
    assert views["views"][0]["shows"] == "support@bank.example"
    assert any("attacker@phish.example" in w for w in views["warnings"])
    two = from_views(["Bank <alerts@bank.example>", "Evil <x@phish.example>"])
    assert any("2 From headers" in w for w in two["warnings"])
    assert two["views"][-1]["shows"] == "Evil"
    hidden = from_views(["=?utf-8?q?B=D0=B0nk?= <a@phish.example>"])
    assert "[U+0430]" in hidden["views"][3]["shows"]  # Cyrillic a, spelled out
    assert from_views([])["warnings"] == ["No From header at all."]


def test_the_catalogue_is_sent_to_the_running_server_from_the_api(served):
    from forgelab.attacks import catalogue

    lab, web, client = served()
    entry = next(a for a in catalogue.all_entries() if not a.script.probes and not a.legit)
    status, answer = client.post_json("/api/attacks", {"mode": "send", "only": [entry.id]})
    assert status == 202 and answer["mode"] == "send"
    job = wait_for(lambda: (j := client.json("/api/attacks"))["state"] != "running" and j, timeout=30)
    assert job["state"] == "done", job["error"]
    assert [s["attack"] for s in job["sent"]] == [entry.id]
    # It arrived on this server, so the live list shows it.
    assert wait_for(lambda: client.json("/api/messages")["messages"])
    assert client.json("/api/sessions")["sessions"][0]["peer_ip"] == entry.script.source_ip


def test_every_api_route_is_documented(forgelab_server):
    import re
    from pathlib import Path

    from starlette.routing import Route

    docs = (Path(__file__).parent.parent / "docs" / "web.md").read_text()
    web = WebServer(forgelab_server(), port=0)
    try:
        for route in web.app.routes:
            if isinstance(route, Route) and route.path.startswith("/api/"):
                # {message_id}, {session_id} -> {id}; {index:int} -> {index}
                path = re.sub(r"\{(\w+?)(_id)?(:\w+)?\}",
                              lambda m: "{id}" if m.group(2) else "{%s}" % m.group(1), route.path)
                for method in sorted(route.methods - {"HEAD"}):
                    assert f"{method} {path}" in docs, f"docs/web.md does not document {method} {path}"
    finally:
        web.stop()


def test_stopping_the_web_view_stops_a_matrix_run_and_its_servers(served):
    import threading

    from forgelab.attacks.catalogue import all_entries

    lab, web, client = served()
    status, answer = client.post_json("/api/attacks", {"policies": ["open"]})
    assert status == 202 and answer["state"] == "running", answer
    job = web.job
    wait_for(lambda: job.status()["progress"], timeout=30)
    web.stop(20)
    status = job.status()
    assert status["state"] == "error" and status["error"] == "stopped: the web view was stopped"
    assert len(status["outcomes"]) < len(list(all_entries()))
    assert not [t for t in threading.enumerate() if t.name.startswith(("forgelab-web-matrix", "attacks-"))]
    assert not job.start(["open"], ["from-two-headers"])  # a request that came late starts nothing


def test_a_new_web_view_shows_the_sessions_and_mail_of_earlier_runs(forgelab_server, tmp_path):
    earlier = forgelab_server(data_dir=tmp_path)
    with smtplib.SMTP(*earlier.smtp.address, timeout=10) as client:
        client.sendmail("news@bank.example", ["alice@corp.example"],
                        b"From: news@bank.example\r\nSubject: kept in the log\r\n\r\nhello\r\n")
    left_open = socket.create_connection(earlier.smtp.address, timeout=10)
    left_open.recv(512)
    (delivered,) = earlier.recorder.wait_for("message.delivered")
    wait_for(lambda: len(earlier.recorder.of("session.open")) == 2)
    earlier.bus.flush()
    earlier.data_lock.release()  # as if its process had died: the kernel drops the lock (DATA/.lock)
    try:
        later = forgelab_server(data_dir=tmp_path)  # the same data directory, a new process's view
        web = WebServer(later, port=0).start()
        try:
            client = Http(web)
            messages = client.json("/api/messages")["messages"]
            assert [m["subject"] for m in messages] == ["kept in the log"]
            assert messages[0]["id"] == delivered["message_id"] and messages[0]["status"] == "delivered"
            sessions = {s["id"]: s for s in client.json("/api/sessions")["sessions"]}
            assert len(sessions) == 2 and not any(s["open"] for s in sessions.values())
            assert {s["close_reason"] for s in sessions.values()} == {
                "client quit", "not closed in the event log: the server stopped first"}
            assert web.index.last_seq == 0  # history is not replayed to event streams
        finally:
            web.stop()
    finally:
        left_open.close()
