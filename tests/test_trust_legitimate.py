"""Legitimate real-world mail shapes under a trainer's strict policy: none refused or quarantined (issue 17).

Each shape is sent over loopback from its sender's own address to a real server running a
policy that ``extends = "strict"`` with its own zone, keys and trusted sealers
(tests/trainer_world.py). Tagging (delivered, marked) is allowed: a broken extra signature
or a p=none failure is information a student should see.
"""
import pytest

from forgelab.auth.keys import DEFAULT_SIGNED_HEADERS

from trainer_world import (ACME, ACME_IP, BAKERY, BAKERY_IP, DATE, ESP, ESP_IP, FWD, FWD_IP, HUB, HUB_IP, PLAIN,
                           PLAIN_IP, QUIET, QUIET_IP, WIDGET, WIDGET_IP, OUTSIDER_IP, Shape, deliver, message, seal,
                           sign, start)

TO = "To: Alice Liddell <alice@corp.example>"
LIST_HEADERS = [*DEFAULT_SIGNED_HEADERS, "list-id", "list-id", "sender"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trainer")
    app, keys_dir = start(tmp)
    yield app, keys_dir, tmp
    app.stop()


def std(subject: str, mid: str, to: str = TO) -> tuple:
    return (to, f"Subject: {subject}", DATE, f"Message-ID: <{mid}>")


def list_post(k, author: str, domain: str, subject: str, mid: str, *, list_domain=HUB, sender=True,
              strip_author_signature=False, footer=True, rewrite_from=False) -> bytes:
    """A post as a list server relays it: the author's signed mail, the list's A-R of what it saw,
    a subject tag and a footer (breaking the author's signature), List-* headers, the list's
    own DKIM signature and an ARC set."""
    original = sign(message(f"From: {author}", *std(subject, mid, to=f"To: <talk@{list_domain}>"),
                            body="Here are the minutes of Tuesday's meeting.\r\n"), domain, k)
    head, _, body = original.partition(b"\r\n\r\n")
    if strip_author_signature:
        head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"dkim-signature")
                            and not line.startswith((b" ", b"\t")))
    head = head.replace(f"Subject: {subject}".encode(), f"Subject: [talk] {subject}".encode())
    if rewrite_from:  # DMARC mitigation: the list sends as itself, the author in Reply-To
        head = head.replace(f"From: {author}".encode(),
                            f"From: \"Author via talk\" <talk@{list_domain}>\r\nReply-To: {author}".encode())
    if footer:
        body += f"--\r\ntalk mailing list\r\nhttps://{list_domain}/talk\r\n".encode()
    extra = f"List-Id: <talk.{list_domain}>\r\nList-Post: <mailto:talk@{list_domain}>\r\nPrecedence: list\r\n"
    if sender:
        extra += f"Sender: talk-bounces@{list_domain}\r\n"
    ar = (f"Authentication-Results: mx.{list_domain}; spf=pass smtp.mailfrom={domain}; dkim=pass "
          f"header.d={domain}; dmarc=pass header.from={domain}\r\n")
    relayed = ar.encode() + extra.encode() + head + b"\r\n\r\n" + body
    return sign(seal(relayed, list_domain, k), list_domain, k, headers=LIST_HEADERS)


def srs_forward(k, signed: bytes, local: str, domain: str, srs1: bool = False) -> tuple[str, bytes]:
    """A forwarder that keeps the message intact and rewrites the envelope with SRS."""
    env = f"SRS0=HHH=TT={domain}={local}@{FWD}" if not srs1 else f"SRS1=HHH=other.example==HHH=TT={domain}={local}@{FWD}"
    return env, b"Received: from mx." + domain.encode() + b" by mx.fwd-relay.example; " + DATE[6:].encode() + b"\r\n" + signed


def shapes(k, tmp) -> list[Shape]:
    out = []

    def add(id_, ip, helo, mail_from, data, **kw):
        out.append(Shape(id_, ip, helo, mail_from, data, **kw))

    acme = sign(message(f"From: Acme Tools <orders@{ACME}>", *std("Your order 1182 has shipped", "o1182@acme")), ACME, k)
    add("direct-rsa-ed25519", ACME_IP, f"mx.{ACME}", f"orders@{ACME}", acme)
    add("direct-rsa-only", ACME_IP, f"mx.{ACME}", f"orders@{ACME}",
        sign(message(f"From: <billing@{ACME}>", *std("Invoice 55", "i55@acme")), ACME, k, "k1"))
    add("direct-ed25519-only", ACME_IP, f"mx.{ACME}", f"orders@{ACME}",
        sign(message(f"From: <billing@{ACME}>", *std("Invoice 56", "i56@acme")), ACME, k, "ed"))
    # ESP sends: the envelope at the ESP's bounce domain, DKIM aligned with the brand.
    esp = sign(sign(message(f"From: Acme News <news@{ACME}>", *std("Spring catalogue", "c1@esp"),
                            "List-Unsubscribe: <https://esp.example/u/1>", "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                            "MIME-Version: 1.0", "Content-Type: multipart/alternative; boundary=b1",
                            body="--b1\r\nContent-Type: text/plain\r\n\r\nNew tools.\r\n--b1\r\nContent-Type: text/html\r\n\r\n"
                                 "<p>New tools.</p>\r\n--b1--\r\n"), ACME, k, "k1"), ESP, k)
    add("esp-brand-signed", ESP_IP, f"mx.{ESP}", f"bounce+8812@bounce.{ESP}", esp)
    add("esp-verp", ESP_IP, f"mx.{ESP}", f"b-8813-alice=corp.example@bounce.{ESP}",
        sign(message(f"From: Acme <hello@{ACME}>", *std("Welcome aboard", "w1@esp")), ACME, k, "ed"))
    add("esp-custom-bounce-subdomain", ESP_IP, f"mx.{ESP}", f"bounces@em.{ACME}",
        sign(message(f"From: Acme <no-reply@app.{ACME}>", *std("Reset your password", "r1@esp")), ESP, k))
    add("esp-shared-domain-p-none", ESP_IP, f"mx.{ESP}", f"bounce+9@bounce.{ESP}",
        sign(message(f"From: Tiny Bakery <owner@{BAKERY}>", *std("Fresh bread on Saturday", "t1@esp")), ESP, k))
    add("esp-rotated-key-extra-signature", ESP_IP, f"mx.{ESP}", f"bounce+10@bounce.{ESP}",
        sign(sign(message(f"From: Acme <hello@{ACME}>", *std("Your receipt", "rc1@esp")), ACME, k, "k1"),
             ESP, tmp / "revoked-keys", "old2019"))
    # Forwarding: SRS keeps SPF; the author's signature survives.
    env, fwd = srs_forward(k, acme, "orders", ACME)
    add("srs-forward-p-reject", FWD_IP, f"mx.{FWD}", env, fwd)
    env, fwd = srs_forward(k, sign(message(f"From: <ann@{WIDGET}>", *std("Board papers", "bp@widget")), WIDGET, k),
                           "ann", WIDGET, srs1=True)
    add("srs1-double-forward-p-quarantine", FWD_IP, f"mx.{FWD}", env, fwd)
    env, fwd = srs_forward(k, sign(message(f"From: <jo@{QUIET}>", *std("Photos", "ph@quiet")), QUIET, k), "jo", QUIET)
    fwd = fwd.replace(b"Photos\r\n", b"Photos\r\n").rstrip(b"\r\n") + b"\r\n[forwarded by fwd-relay]\r\n"
    add("srs-forward-footer-p-none", FWD_IP, f"mx.{FWD}", env, fwd)
    add("forward-resent-own-envelope", FWD_IP, f"mx.{FWD}", f"resent@{FWD}",
        f"Resent-From: <resent@{FWD}>\r\nResent-Date: {DATE[6:]}\r\n".encode() + acme)
    # Mailing lists: footer, subject tag, list signature; ARC from the trusted sealer.
    add("list-p-reject-author-arc-trusted", HUB_IP, f"mx.{HUB}", f"talk-bounces@{HUB}",
        list_post(k, f"Ann <ann@{ACME}>", ACME, "Minutes", "m1@acme"))
    add("list-p-quarantine-author-arc-trusted", HUB_IP, f"mx.{HUB}", f"talk-bounces@{HUB}",
        list_post(k, f"<ann@{WIDGET}>", WIDGET, "Minutes 2", "m2@widget"))
    add("list-p-none-author", HUB_IP, f"mx.{HUB}", f"talk-bounces@{HUB}",
        list_post(k, f"<jo@{QUIET}>", QUIET, "Minutes 3", "m3@quiet"))
    add("list-p-none-author-no-sender", HUB_IP, f"mx.{HUB}", f"talk-bounces@{HUB}",
        list_post(k, f"<jo@{QUIET}>", QUIET, "Minutes 4", "m4@quiet", sender=False))
    add("list-p-reject-author-no-sender-arc", HUB_IP, f"mx.{HUB}", f"talk-bounces@{HUB}",
        list_post(k, f"<ann@{ACME}>", ACME, "Minutes 5", "m5@acme", sender=False))
    add("list-strips-author-signature", HUB_IP, f"mx.{HUB}", f"talk-bounces@{HUB}",
        list_post(k, f"<jo@{QUIET}>", QUIET, "Minutes 6", "m6@quiet", strip_author_signature=True))
    add("list-rewrites-from", HUB_IP, f"mx.{HUB}", f"talk-bounces@{HUB}",
        list_post(k, f"<ann@{ACME}>", ACME, "Minutes 7", "m7@acme", rewrite_from=True))
    add("list-own-announcement", HUB_IP, f"mx.{HUB}", f"announce-bounces@{HUB}",
        sign(message(f"From: Groups Hub <announce@{HUB}>", *std("[announce] Maintenance", "a1@hub"),
                     f"List-Id: <announce.{HUB}>"), HUB, k))
    # Several authors of one domain, with the Sender RFC 5322 asks for.
    add("several-authors-one-domain-sender", ACME_IP, f"mx.{ACME}", f"ann@{ACME}",
        sign(message(f"From: Ann <ann@{ACME}>, Bo <bo@{ACME}>", f"Sender: Ann <ann@{ACME}>",
                     *std("Our joint proposal", "j1@acme")), ACME, k))
    add("delegate-sender-same-org", ACME_IP, f"mx.{ACME}", f"assistant@{ACME}",
        sign(message(f"From: CEO <ceo@{ACME}>", f"Sender: <assistant@{ACME}>", *std("Board dates", "bd@acme")), ACME, k))
    # Internal mail: a trusted system address, a logged-in user, a host of the local domain.
    add("internal-cron-trusted-ip", "127.0.0.1", "mx.corp.example", "cron@corp.example",
        message("From: Cron Daemon <cron@corp.example>", *std("backup finished", "cr1@corp")))
    add("internal-monitor-subdomain-trusted-ip", "127.0.0.1", "mx.corp.example", "monitor@ops.corp.example",
        message("From: <monitor@ops.corp.example>", *std("disk 80% full", "mo1@corp")))
    add("internal-user-logged-in", "127.0.0.1", "workstation.corp.example", "bob@corp.example",
        message("From: Bob Cratchit <bob@corp.example>", *std("Lunch?", "l1@corp")),
        auth=("bob", "tiny-tim"), rcpts=("alice@corp.example", "carol@corp.example"))
    # Bounces, auto-replies, calendars, newsletters.
    add("dsn-null-sender", ACME_IP, f"mx.{ACME}", "",
        message(f"From: Mail Delivery System <MAILER-DAEMON@mx.{ACME}>", *std("Undelivered Mail Returned to Sender", "d1@acme"),
                "Auto-Submitted: auto-replied", "MIME-Version: 1.0",
                "Content-Type: multipart/report; report-type=delivery-status; boundary=r1",
                body="--r1\r\nContent-Type: text/plain\r\n\r\nCould not deliver.\r\n--r1\r\n"
                     "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.acme-tools.example\r\n\r\n"
                     "Final-Recipient: rfc822; nobody@acme-tools.example\r\nAction: failed\r\nStatus: 5.1.1\r\n--r1--\r\n"))
    add("dsn-from-esp-mta", ESP_IP, f"mx.{ESP}", "",
        message(f"From: <postmaster@{ESP}>", *std("Delivery Status Notification (Failure)", "d2@esp"),
                "Auto-Submitted: auto-replied"))
    add("auto-reply-null-sender", WIDGET_IP, f"mx.{WIDGET}", "",
        sign(message(f"From: Ann <ann@{WIDGET}>", *std("Out of office: Board papers", "oo1@widget"),
                     "Auto-Submitted: auto-replied", "X-Autoreply: yes"), WIDGET, k))
    add("auto-reply-normal-envelope", QUIET_IP, f"mx.{QUIET}", f"jo@{QUIET}",
        sign(message(f"From: <jo@{QUIET}>", *std("Automatic reply: Photos", "oo2@quiet"),
                     "Auto-Submitted: auto-replied"), QUIET, k))
    add("calendar-invite", ACME_IP, f"mx.{ACME}", f"calendar@{ACME}",
        sign(message(f"From: Ann <ann@{ACME}>", *std("Invitation: Review @ Thu 10:00", "cal1@acme"), "MIME-Version: 1.0",
                     "Content-Type: multipart/alternative; boundary=c1",
                     body="--c1\r\nContent-Type: text/plain\r\n\r\nReview on Thursday.\r\n--c1\r\n"
                          "Content-Type: text/calendar; method=REQUEST; charset=utf-8\r\n\r\nBEGIN:VCALENDAR\r\n"
                          "METHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:r1@acme\r\nDTSTART:20261210T100000Z\r\n"
                          "SUMMARY:Review\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n--c1--\r\n"), ACME, k))
    add("newsletter-no-dmarc-club", PLAIN_IP, f"mx.{PLAIN}", f"news@{PLAIN}",
        sign(message(f"From: Plain Club <news@{PLAIN}>", *std("Club news, December", "cn1@club"),
                     "List-Unsubscribe: <mailto:leave@plain-club.example>"), PLAIN, k))
    add("no-dmarc-extra-broken-signature", PLAIN_IP, f"mx.{PLAIN}", f"news@{PLAIN}",
        sign(message(f"From: <news@{PLAIN}>", *std("Club news, January", "cn2@club")), PLAIN, k)
        .replace(b"DKIM-Signature:", b"DKIM-Signature: v=1; a=rsa-sha256; d=plain-club.example; s=gone; h=from; "
                                     b"bh=AAAA; b=AAAA\r\nDKIM-Signature:", 1))
    add("helpdesk-reply-to-ticket-system", ACME_IP, f"mx.{ACME}", f"support@{ACME}",
        sign(message(f"From: Acme Support <support@{ACME}>", f"Reply-To: <ticket+4411@{ACME}>",
                     *std("[Ticket #4411] We are on it", "tk1@acme")), ACME, k))
    add("p-none-own-sender-direct", QUIET_IP, f"mx.{QUIET}", f"jo@{QUIET}",
        sign(message(f"From: Jo <jo@{QUIET}>", *std("Hello again", "h1@quiet")), QUIET, k))
    add("p-quarantine-subdomain-sender", WIDGET_IP, f"mx.{WIDGET}", f"alerts@{WIDGET}",
        sign(message(f"From: <alerts@notify.{WIDGET}>", *std("Your widget report", "wr1@widget")), WIDGET, k))
    add("unsigned-small-sender-nothing-published", OUTSIDER_IP, "host.outsider.example", "me@outsider.example",
        message("From: Someone <me@outsider.example>", *std("Question about your talk", "q1@outsider")))
    add("dkim-body-modified-spf-aligned-pass", ACME_IP, f"mx.{ACME}", f"orders@{ACME}",
        acme.replace(b"Hello.\r\n", b"Hello.\r\n-- scanned by the outbound antivirus\r\n"))
    return out


@pytest.fixture(scope="module")
def corpus(world):
    app, k, tmp = world
    return {s.id: s for s in shapes(k, tmp)}


SHAPE_IDS = [
    "direct-rsa-ed25519", "direct-rsa-only", "direct-ed25519-only", "esp-brand-signed", "esp-verp",
    "esp-custom-bounce-subdomain", "esp-shared-domain-p-none", "esp-rotated-key-extra-signature",
    "srs-forward-p-reject", "srs1-double-forward-p-quarantine", "srs-forward-footer-p-none",
    "forward-resent-own-envelope", "list-p-reject-author-arc-trusted", "list-p-quarantine-author-arc-trusted",
    "list-p-none-author", "list-p-none-author-no-sender", "list-p-reject-author-no-sender-arc",
    "list-strips-author-signature", "list-rewrites-from", "list-own-announcement",
    "several-authors-one-domain-sender", "delegate-sender-same-org", "internal-cron-trusted-ip",
    "internal-monitor-subdomain-trusted-ip", "internal-user-logged-in", "dsn-null-sender", "dsn-from-esp-mta",
    "auto-reply-null-sender", "auto-reply-normal-envelope", "calendar-invite", "newsletter-no-dmarc-club",
    "no-dmarc-extra-broken-signature", "helpdesk-reply-to-ticket-system", "p-none-own-sender-direct",
    "p-quarantine-subdomain-sender", "unsigned-small-sender-nothing-published", "dkim-body-modified-spf-aligned-pass",
]


def test_the_corpus_is_large_enough(corpus):
    assert sorted(corpus) == sorted(SHAPE_IDS) and len(SHAPE_IDS) >= 30


@pytest.mark.parametrize("shape_id", SHAPE_IDS)
def test_legitimate_shape_is_neither_refused_nor_quarantined(world, corpus, shape_id):
    outcome, why = deliver(world[0], corpus[shape_id])
    assert outcome in ("accepted", "tagged"), f"{shape_id}: {outcome} ({why})"
