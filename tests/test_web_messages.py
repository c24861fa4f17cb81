"""Search, MIME parts, .eml download, delete and release through the real web server (docs/web.md)."""
import json
import poplib
import smtplib
from urllib.parse import quote

import pytest

from forgelab.web.search import MAX_QUERY, QueryError, parse_query
from test_web_api import ATTACKER, delivered, served  # noqa: F401 (served: a fixture)

pytestmark = pytest.mark.timeout(60)


def mail(subject, sender="alerts@bank.example", to="alice@corp.example", body="Hello.", extra="") -> bytes:
    return (f"From: Sender <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n{extra}\r\n{body}\r\n").encode()


def send(lab, data, mail_from="alerts@bank.example", rcpts=("alice@corp.example",), source_ip="127.0.0.1",
         helo="client.example"):
    with smtplib.SMTP(*lab.smtp.address, timeout=10, source_address=(source_ip, 0)) as client:
        client.ehlo(helo)
        return client.sendmail(mail_from, list(rcpts), data)


def pop3_subjects(lab, user="alice", password="rabbit-hole") -> list[bytes]:
    client = poplib.POP3(*lab.pop3.address, timeout=10)
    try:
        client.user(user)
        client.pass_(password)
        out = []
        for n in range(1, client.stat()[0] + 1):
            out += [line for line in client.top(n, 0)[1] if line.startswith(b"Subject:")]
        return out
    finally:
        client.quit()


def ids(client, query):
    return [m["subject"] for m in client.json("/api/messages?q=" + quote(query))["messages"]]


def test_search_combines_free_text_fields_checks_outcomes_and_policy(served):
    lab, _, client = served("observe")
    send(lab, mail("Quarterly statement", body="Your invoice number 4711 is attached."),
         source_ip="127.0.1.1")  # bank.example's own address: SPF passes
    send(lab, mail("Lunch on Friday", sender="bob@corp.example", to="carol@corp.example"),
         mail_from="bob@corp.example", rcpts=["carol@corp.example"])
    send(lab, mail("Urgent wire transfer", body="Please PAY today."), source_ip=ATTACKER)
    delivered(lab, 3)

    assert ids(client, "invoice") == ["Quarterly statement"]          # body text
    assert ids(client, "PAY") == ["Urgent wire transfer"]             # case-insensitive
    assert ids(client, "from:bob@") == ["Lunch on Friday"]
    assert ids(client, "to:carol") == ["Lunch on Friday"]
    assert ids(client, 'subject:"wire transfer"') == ["Urgent wire transfer"]
    assert ids(client, 'subject:"transfer wire"') == []
    assert ids(client, "check:spf") == ["Urgent wire transfer"]       # SPF failed only from the attacker
    assert ids(client, "from:bank.example check:spf") == ["Urgent wire transfer"]
    assert set(ids(client, "from:bank.example")) == {"Quarterly statement", "Urgent wire transfer"}
    actions = {m["subject"]: m["action"] for m in client.json("/api/messages")["messages"]}
    for outcome in ("accept", "tag"):
        assert set(ids(client, f"outcome:{outcome}")) == {s for s, a in actions.items() if a == outcome}
    assert "Urgent wire transfer" in ids(client, "outcome:tag")
    assert ids(client, "outcome:refused") == []
    assert len(ids(client, "policy:observe")) == 3 and ids(client, "policy:strict") == []
    assert len(client.json("/api/messages")["messages"]) == 3         # no q: the listing as before


def test_search_finds_refused_messages(served):
    lab, _, client = served("strict")
    with pytest.raises(smtplib.SMTPDataError):
        send(lab, mail("Your statement", sender="alerts@bank.example"), mail_from="bounce@phish.example",
             source_ip=ATTACKER, helo="mail.phish.example")
    lab.recorder.wait_for("message.rejected")
    assert ids(client, "outcome:refused check:dmarc") == ["Your statement"]
    assert ids(client, "outcome:accept") == []


@pytest.mark.parametrize("query, named", [
    ("nosuch:x", "unknown field 'nosuch'"),
    ('subject:"open', "unclosed quote"),
    ("outcome:maybe", "outcome is one of"),
    ("from:", "from: needs a value"),
    ("x" * (MAX_QUERY + 1), f"at most {MAX_QUERY}"),
])
def test_a_bad_query_is_refused_with_400_naming_the_problem(served, query, named):
    _, _, client = served()
    status, headers, body = client.get("/api/messages?q=" + quote(query))
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert named in json.loads(body)["error"]


def test_the_query_parser():
    assert parse_query('  Invoice from:Bank subject:"Two  Words" check:dmarc ') == [
        (None, "invoice"), ("from", "bank"), ("subject", "two  words"), ("check", "dmarc")]
    assert parse_query('"a phrase" outcome:REFUSED') == [(None, "a phrase"), ("outcome", "refused")]
    with pytest.raises(QueryError):
        parse_query(" ".join(["a"] * 40))


MIXED = (b"From: Sender <alerts@bank.example>\r\nTo: alice@corp.example\r\nSubject: With attachments\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
         b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n"
         b"--b1\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename=\"../../evil \\\"x\\\".html\"\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\nPHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\r\n"
         b"--b1\r\nContent-Type: image/png; name=\"dot.png\"\r\nContent-Disposition: inline; filename=\"dot.png\"\r\n"
         b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
         b"--b1--\r\n")


def test_parts_are_listed_and_each_downloads_decoded_as_a_safe_attachment(served):
    lab, _, client = served()
    send(lab, MIXED)
    (event,) = delivered(lab)
    message_id = event["message_id"]

    parts = client.json(f"/api/messages/{message_id}/parts")["parts"]
    assert [(p["index"], p["content_type"], p["disposition"]) for p in parts] == [
        (0, "text/plain", None), (1, "text/html", "attachment"), (2, "image/png", "inline")]
    assert parts[1]["size"] == len(b"<script>alert(1)</script>") and parts[2]["filename"] == "dot.png"

    status, headers, body = client.get(f"/api/messages/{message_id}/parts/1")
    assert status == 200 and body == b"<script>alert(1)</script>"  # decoded from base64
    assert headers["content-type"] == "application/octet-stream"    # never served as HTML
    assert headers["x-content-type-options"] == "nosniff"
    disposition = headers["content-disposition"]
    assert disposition.startswith("attachment;") and "/" not in disposition and ".." not in disposition
    assert disposition == 'attachment; filename="evil_x_.html"'

    status, headers, body = client.get(f"/api/messages/{message_id}/parts/2")
    assert status == 200 and headers["content-type"] == "image/png" and body == b"\x89PNG\r\n\x1a\n"
    assert headers["content-disposition"] == 'attachment; filename="dot.png"'
    status, headers, body = client.get(f"/api/messages/{message_id}/parts/0")
    assert headers["content-type"].startswith("text/plain; charset=utf-8") and body == b"See attached."  # the CRLF before a boundary belongs to it

    for path in [f"/api/messages/{message_id}/parts/3", f"/api/messages/{message_id}/parts/x",
                 f"/api/messages/{message_id}/parts/-1", "/api/messages/nosuch/parts", "/api/messages/nosuch/parts/0"]:
        assert client.get(path)[0] == 404, path


def test_a_message_downloads_as_eml(served):
    lab, _, client = served()
    send(lab, mail("Keep me"))
    (event,) = delivered(lab)
    status, headers, body = client.get(f"/api/messages/{event['message_id']}/eml")
    assert status == 200 and headers["content-type"] == "message/rfc822"
    assert headers["content-disposition"] == f'attachment; filename="{event["message_id"]}.eml"'
    assert b"Subject: Keep me" in body and body == lab.store.read_at(tuple(event["locations"][0]))
    assert client.get("/api/messages/nosuch/eml")[0] == 404


def delete(client, path, headers=None):
    return client.request("DELETE", path, b"{}", {"Content-Type": "application/json", **(headers or {})})


def test_delete_removes_every_copy_and_pop3_no_longer_lists_it(served):
    lab, _, client = served()
    send(lab, mail("To both"), rcpts=["alice@corp.example", "bob@corp.example"])
    send(lab, mail("Stays"))
    first, _ = delivered(lab, 2)
    assert len(first["locations"]) == 2
    assert pop3_subjects(lab) == [b"Subject: To both", b"Subject: Stays"]

    status, _, body = delete(client, f"/api/messages/{first['message_id']}")
    assert status == 200 and sorted(map(tuple, json.loads(body)["deleted"])) == sorted(map(tuple, first["locations"]))
    assert pop3_subjects(lab) == [b"Subject: Stays"]
    for user, folder, key in first["locations"]:
        assert key not in [k for k, _ in lab.store.list(user, folder)]
    (record,) = lab.recorder.wait_for("message.deleted")
    assert record["message_id"] == first["message_id"] and len(record["copies"]) == 2
    detail = client.json(f"/api/messages/{first['message_id']}")
    assert detail["locations"] == [] and detail["source"] is None
    assert delete(client, f"/api/messages/{first['message_id']}")[0] == 404  # nothing left to delete
    assert delete(client, "/api/messages/nosuch")[0] == 404


def quarantined(lab):
    send(lab, mail("Claim form", sender="claims@insure.example"), mail_from="bounce@phish.example",
         source_ip=ATTACKER, helo="mail.phish.example")
    (event,) = delivered(lab)
    assert event["action"] == "quarantine"
    return event


def test_release_moves_a_quarantined_copy_into_the_inbox_for_pop3(served):
    lab, _, client = served("strict")
    event = quarantined(lab)
    assert pop3_subjects(lab) == []
    status, answer = client.post_json(f"/api/messages/{event['message_id']}/release", {})
    assert status == 200 and answer["released"] == event["locations"]
    assert pop3_subjects(lab) == [b"Subject: Claim form"]
    assert lab.store.list("alice", "quarantine") == []
    (record,) = lab.recorder.wait_for("message.released")
    assert record["copies"] == event["locations"] and record["locations"][0][1] == "inbox"
    assert client.json(f"/api/messages/{event['message_id']}")["locations"][0][1] == "inbox"
    status, answer = client.post_json(f"/api/messages/{event['message_id']}/release", {})
    assert status == 409  # nothing quarantined is left
    # Deleting it now removes the inbox copy the release made.
    assert delete(client, f"/api/messages/{event['message_id']}")[0] == 200 and pop3_subjects(lab) == []


@pytest.mark.parametrize("headers, body, code", [
    ({"Origin": "http://evil.example", "Content-Type": "application/json"}, b"{}", 403),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"a=b", 415),
    ({"Content-Type": "text/plain"}, b"{}", 415),
])
def test_delete_and_release_follow_the_policy_switch_rules(served, headers, body, code):
    lab, _, client = served("strict")
    event = quarantined(lab)
    path = f"/api/messages/{event['message_id']}"
    assert client.request("DELETE", path, body, headers)[0] == code
    assert client.request("POST", path + "/release", body, headers)[0] == code
    assert len(lab.store.list("alice", "quarantine")) == 1 and lab.recorded("message.deleted") == []


def test_delete_and_release_are_for_loopback_clients_only(forgelab_server):
    from test_web_api import asgi_post
    from forgelab.web import WebServer

    lab = forgelab_server(policy="strict")
    web = WebServer(lab, port=0)
    try:
        event = quarantined(lab)
        status, _ = asgi_post(web.app, f"/api/messages/{event['message_id']}/release", b"{}", "192.0.2.7")
        assert status == 403 and len(lab.store.list("alice", "quarantine")) == 1
    finally:
        web.stop()


def test_store_release_and_delete_never_follow_a_symlink(tmp_path):
    from forgelab.store.maildir import MailStore
    from forgelab.store.nofollow import SymlinkRefused

    store = MailStore(tmp_path / "mail")
    key = store.deliver("alice", b"Subject: q\r\n\r\nx\r\n", "quarantine")
    outside = tmp_path / "outside"
    outside.mkdir()
    inbox_new = store.folder_dir("alice", "inbox") / "new"
    inbox_new.rmdir()
    inbox_new.symlink_to(outside)  # a planted link where the inbox's new/ should be
    with pytest.raises(SymlinkRefused):
        store.release("alice", key)
    assert list(outside.iterdir()) == [] and [k for k, _ in store.list("alice", "quarantine")] == [key]
    inbox_new.unlink()
    assert store.release("alice", key) == ("alice", "inbox", key)
    assert store.list("alice", "quarantine") == [] and [k for k, _ in store.list("alice")] == [key]
    assert store.delete_at(("alice", "inbox", key)) and store.list("alice") == []
    assert not store.delete_at(("alice", "inbox", key))
    with pytest.raises(KeyError):
        store.release("alice", key)
