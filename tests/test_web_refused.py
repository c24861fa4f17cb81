"""Refused mail stays visible (issue 17): a message refused at DATA keeps its From, Subject and
the start of its source in its message.rejected event, and the web view shows them, escaped."""
import smtplib

import pytest

from forgelab.core.event_records import MessageRejected
from forgelab.core.event_values import MAX_SOURCE
from test_web_api import Http

pytestmark = pytest.mark.timeout(60)

ATTACKER = "127.0.66.1"
XSS_SUBJECT = "<script>window.__xss='subject'</script> wire"
XSS_NAME = "<img src=x onerror=window.__xss='name'>"
# From claims our own domain from outside: strict refuses it at DATA ([mismatch]).
FORGED = (f'From: "{XSS_NAME}" <carol@corp.example>\r\nTo: alice@corp.example\r\nSubject: {XSS_SUBJECT}\r\n'
          "Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n").encode() + b"pay now, \xff bad byte\r\n" * 1000


def refused(lab, data=FORGED) -> dict:
    with smtplib.SMTP(*lab.smtp.address, timeout=10, source_address=(ATTACKER, 0)) as client:
        client.ehlo("mail.phish.example")
        with pytest.raises(smtplib.SMTPDataError):
            client.sendmail("boss@phish.example", ["alice@corp.example"], data)
    (event,) = lab.recorder.wait_for("message.rejected")
    return event


@pytest.fixture
def strict_web(lab_with_web):
    lab, web = lab_with_web("strict")
    return lab, web, Http(web)


def test_the_event_keeps_from_subject_and_the_start_of_the_source(strict_web):
    lab, _, _ = strict_web
    event = refused(lab)
    assert event["stage"] == "message" and event["subject"] == XSS_SUBJECT
    assert event["from_"] == f'"{XSS_NAME}" <carol@corp.example>'
    source = event["source"]
    assert source.startswith(FORGED[:150].decode()) and "\ufffd bad byte" in source
    assert source.endswith(f"… [{len(FORGED) - MAX_SOURCE} more octets]") and len(source) < MAX_SOURCE + 40
    # a worker process (serve --workers) sends it to the main bus as this record: nothing is lost
    assert MessageRejected.from_dict(event).to_dict() == {k: v for k, v in event.items() if k not in ("seq", "ts")}


def test_the_web_view_shows_the_refused_message_escaped(strict_web):
    lab, _, client = strict_web
    event = refused(lab)
    (listed,) = client.json("/api/messages")["messages"]
    assert (listed["status"], listed["subject"], listed["from"]) == ("rejected", XSS_SUBJECT, event["from_"])
    detail = client.json(f"/api/messages/{event['message_id']}")
    assert detail["source"] == event["source"] and "refused at DATA" in detail["source_note"]
    assert {h["name"] for h in detail["headers"]} >= {"From", "Subject", "To", "Date"}
    assert detail["display"]["froms"]
    status, _, raw = client.get(f"/api/messages/{event['message_id']}/raw")
    assert status == 200 and raw.startswith(b'From: "<img src=x')

    status, _, page = client.get(f"/messages/{event['message_id']}")
    assert status == 200 and b"&lt;script&gt;window.__xss=&#39;subject&#39;&lt;/script&gt; wire" in page
    assert b"<script>window.__xss" not in page and b"<img src=x" not in page
    assert b"pay now, \xef\xbf\xbd bad byte" in page and b"refused at DATA" in page
    status, _, page = client.get(f"/sessions/{event['session_id']}")
    assert status == 200 and b'class="refused-mail"' in page and b"carol@corp.example" in page
    assert b"&lt;script&gt;window.__xss=&#39;subject&#39;&lt;/script&gt; wire" in page
    assert b"<script>window.__xss" not in page and b"<img src=x" not in page
