"""A trainer's own forgeries, none of them from the catalogue, against a strict policy of the trainer's.

The trainer's world: the lab zone plus its own brands and keys (made here), its own loopback
addresses, and a policy that ``extends = "strict"`` with its trust settings. Every forgery goes
through a real server over loopback and must be refused or quarantined, never delivered to the
inbox; one that DMARC passes must be stopped by something other than ``mismatch`` (which steps
back when DMARC passes). A few legitimate shapes of the same world are delivered, so the
forgeries are not refused merely because the world is broken.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import dkim
import pytest

from forgelab import Verdict
from forgelab.app import Forgelab, Settings
from forgelab.auth.keys import keygen, sign
from forgelab.forge import ForgeClient, Transaction, run_transaction
from forgelab.core.policy import load_policy
from forgelab.lab.dns import LAB_ZONE
from forgelab.testing import EventRecorder

pytestmark = pytest.mark.timeout(120)

ATTACKER, ESP_TENANT, ESP, BANK, HARBOUR, RELAY, OUTSIDER = (
    "127.0.77.1", "127.0.30.66", "127.0.30.5", "127.0.20.1", "127.0.21.1", "127.0.0.50", "127.0.0.58")
VICTIM = "alice@corp.example"
DATE = "Date: Tue, 01 Dec 2026 08:00:00 +0000"
OVERSIGNED = ["from", "from", "to", "cc", "cc", "subject", "subject", "date", "message-id"]
WEAK_SIGNED = ["from", "to", "subject", "date"]  # nothing oversigned: replayable

ZONE = """
; ---- the trainer's world
fortbank.example. IN MX 10 mail.fortbank.example.
mail.fortbank.example. IN A 127.0.20.1
fortbank.example. IN TXT "v=spf1 ip4:127.0.20.1 -all"
_dmarc.fortbank.example. IN TXT "v=DMARC1; p=reject; adkim=r; aspf=r"
harbour.example. IN MX 10 mail.harbour.example.
mail.harbour.example. IN A 127.0.21.1
harbour.example. IN TXT "v=spf1 ip4:127.0.21.1 -all"
_dmarc.harbour.example. IN TXT "v=DMARC1; p=quarantine"
sharedesp.example. IN TXT "v=spf1 ip4:127.0.30.0/24 -all"
cloudbrand.example. IN TXT "v=spf1 include:sharedesp.example -all"
_dmarc.cloudbrand.example. IN TXT "v=DMARC1; p=reject"
mallory.example. IN MX 10 mail.mallory.example.
mail.mallory.example. IN A 127.0.77.1
mail.mallory.example. IN TXT "v=spf1 a -all"
mallory.example. IN TXT "v=spf1 ip4:127.0.77.0/24 -all"
fortbank-online.example. IN TXT "v=spf1 ip4:127.0.77.0/24 -all"
fortbanklogin.example. IN TXT "v=spf1 ip4:127.0.77.0/24 -all"
updatefortbank.example. IN TXT "v=spf1 ip4:127.0.77.0/24 -all"
xn--fortbnk-twa.example. IN TXT "v=spf1 ip4:127.0.77.0/24 -all"
1.20.0.127.in-addr.arpa. IN PTR mail.fortbank.example.
1.21.0.127.in-addr.arpa. IN PTR mail.harbour.example.
1.77.0.127.in-addr.arpa. IN PTR mail.mallory.example.
"""
# corp.example's own relays (the trainer's mynetworks) are in its SPF too.
CORP_SPF = ('corp.example. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
            'corp.example. IN TXT "v=spf1 ip4:127.0.0.1 ip4:127.0.0.48/29 -all"')
POLICY = """description = "A trainer's strict: its own brands, keys and relays"
extends = "strict"

[defences.mismatch]
trusted_ips = ["127.0.0.48/29"]

[defences.dkim-replay]
# This trainer's ESPs are in its brands' SPF and it has no forwarders: the attacker's own
# envelope under a brand's signature is a sign of replay too.
envelope = "unaligned"

[defences.lookalike]
protect = ["corp.example", "fortbank.example", "harbour.example", "cloudbrand.example"]
"""
KEYS = (("fortbank.example", "s1", "rsa"), ("mail.fortbank.example", "s1", "rsa"),
        ("harbour.example", "k1", "ed25519"), ("cloudbrand.example", "c1", "rsa"),
        ("mallory.example", "m1", "rsa"), ("fortbank-online.example", "f1", "rsa"))


@dataclass(frozen=True)
class Shape:
    """One message of the trainer's set: from where, with which envelope, which bytes."""

    id: str
    source: str
    helo: str
    mail_from: str
    message: bytes
    needs: str = ""  # another branch's work it waits for (an xfail until merged)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(keys folder, running lab) of the trainer's world; stopped after the module."""
    root = tmp_path_factory.mktemp("trainer")
    keys = root / "keys"
    lines = [keygen(d, s, keys, algorithm=a, bits=2048).zone_line for d, s, a in KEYS]
    (root / "trainer.zone").write_text(LAB_ZONE.read_text().replace(*CORP_SPF) + ZONE + "\n".join(lines) + "\n")
    (root / "trainer.toml").write_text(POLICY)
    app = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=root / "data", web=None,
                            policy=str(root / "trainer.toml"), zone_file=root / "trainer.zone"))
    app.recorder = EventRecorder()
    app.bus.subscribe(app.recorder)
    app.start()
    yield keys, app
    app.stop()


def msg(*headers: str, body: str = "Please review the attached statement and confirm your details today.\r\n") -> bytes:
    return ("".join(h + "\r\n" for h in headers) + "\r\n" + body).encode("utf-8")


def std(subject: str, mid: str, to: str = f"Alice Liddell <{VICTIM}>") -> tuple[str, ...]:
    return (f"To: {to}", f"Subject: {subject}", DATE, f"Message-ID: <{mid}>")


def expiring(message: bytes, domain: str, selector: str, keys) -> bytes:
    """Signed two days ago with x= one day ago (dkimpy writes neither by itself)."""
    signed_at = int(time.time()) - 2 * 86400

    class Expiring(dkim.DKIM):
        def gen_header(self, fields, *args, **kwargs):
            fields = [(k, str(signed_at).encode() if k == b"t" else v) for k, v in fields]
            at = [k for k, _ in fields].index(b"b")
            fields[at:at] = [(b"x", str(signed_at + 86400).encode())]
            return super().gen_header(fields, *args, **kwargs)

    private = (keys / f"{selector}._domainkey.{domain}.pem").read_bytes()
    header = Expiring(message).sign(selector.encode(), domain.encode(), private, canonicalize=(b"relaxed", b"relaxed"),
                                    include_headers=[h.encode() for h in OVERSIGNED])
    return header + message


def forgeries(keys) -> list[Shape]:
    def signed(message, domain, selector, headers=OVERSIGNED, length=False):
        return sign(message, domain, selector, keys_dir=keys, include_headers=headers, length=length)

    bank_from = "From: Fortbank <statements@fortbank.example>"
    statement = signed(msg(bank_from, *std("Your December statement", "t1@fortbank.example")), "fortbank.example", "s1")
    with_l = signed(msg(bank_from, *std("Card news", "t2@fortbank.example")), "fortbank.example", "s1", length=True)
    appended = with_l + b"\r\nACTION NEEDED: confirm your card at http://mallory.example/card\r\n"
    cloud = "From: CloudBrand <news@cloudbrand.example>"
    cloud_l = signed(msg(cloud, *std("Spring offers", "t3@cloudbrand.example")), "cloudbrand.example", "c1", length=True)
    cloud_subject = signed(msg(cloud, *std("Spring offers", "t4@cloudbrand.example")), "cloudbrand.example", "c1",
                           ["from", "from", "to", "subject", "date"])
    weak = signed(msg(bank_from, *std("Statement", "t5@fortbank.example")), "fortbank.example", "s1", WEAK_SIGNED)
    harbour_from = "From: Harbour Insurance <claims@harbour.example>"
    harbour_cc = signed(msg(harbour_from, *std("Claim 4711", "t6@harbour.example"), "Cc: <claims@harbour.example>"),
                        "harbour.example", "k1", ["from", "from", "to", "cc", "subject", "subject", "date"])
    harbour = signed(msg(harbour_from, *std("Your claim", "t7@harbour.example")), "harbour.example", "k1")
    to_self = signed(msg(bank_from, *std("Transfer approved", "t8@fortbank.example", to="<mallory@mallory.example>")),
                     "fortbank.example", "s1", ["from", "from", "to", "subject", "subject", "date"])
    sub_signed = signed(msg("From: Fortbank Alerts <alerts@mail.fortbank.example>", *std("Login alert", "t9@fortbank")),
                        "mail.fortbank.example", "s1")
    expired = expiring(msg(bank_from, *std("One-time code", "t10@fortbank.example")), "fortbank.example", "s1", keys)
    mallory = "mallory@mallory.example"

    def by_mallory(message, headers=OVERSIGNED):
        return signed(message, "mallory.example", "m1", headers)

    def shape(id_, message, mail_from=mallory, source=ATTACKER, helo="mail.mallory.example", needs=""):
        return Shape(id_, source, helo, mail_from, message, needs)

    return [
        # replays of a p=reject or p=quarantine brand's real signature
        shape("replay-null-envelope", statement, ""),
        shape("replay-foreign-envelope", statement),
        shape("replay-l-appended-null-envelope", appended, ""),
        shape("replay-l-appended-shared-esp", cloud_l + b"\r\nClaim your prize: http://mallory.example/\r\n",
              "bounce-77@sharedesp.example", ESP_TENANT, "tenant77.sharedesp.example"),
        shape("replay-subject-added-shared-esp", b"Subject: Your account is suspended\r\n" + cloud_subject,
              "bounce-77@sharedesp.example", ESP_TENANT, "tenant77.sharedesp.example"),
        shape("replay-from-added-not-oversigned", b"From: Fortbank Security <security@fortbank.example>\r\n" + weak),
        shape("replay-cc-added-quarantine-brand", b"Cc: <everyone@corp.example>\r\n" + harbour_cc),
        shape("replay-ed25519-quarantine-brand-null", harbour, ""),
        shape("replay-to-retargeted", f"To: Alice Liddell <{VICTIM}>\r\n".encode() + to_self),
        shape("replay-subdomain-signer-null", sub_signed, ""),
        shape("replay-expired", expired, ""),
        # display-name tricks
        shape("display-name-holds-brand-address",
              by_mallory(msg('From: "statements@fortbank.example" <statements@mallory.example>',
                             *std("Statement", "d1@mallory.example")))),
        shape("display-name-local-colleague",
              by_mallory(msg("From: Bob Cratchit <bob.cratchit@mallory.example>",
                             *std("Quick favour", "d2@mallory.example"), body="Can you buy gift cards?\r\n"))),
        shape("display-name-brand-and-at",
              by_mallory(msg('From: "Fortbank <security@fortbank.example>" <x@mallory.example>',
                             *std("Security notice", "d3@mallory.example")))),
        # null-sender spoofs
        shape("null-sender-reject-brand", msg(bank_from, *std("Account locked", "n1@mallory.example")), ""),
        shape("null-sender-quarantine-brand", msg(harbour_from, *std("Claim declined", "n2@mallory.example")), ""),
        shape("null-sender-local-domain", msg("From: IT Desk <it@corp.example>", *std("Password expiry", "n3@m")), "",
              OUTSIDER, "desk.example"),
        # subdomains of a protected or local domain
        shape("subdomain-nonexistent-of-brand",
              msg("From: <alerts@secure.fortbank.example>", *std("Verify", "s1@mallory.example")),
              "alerts@secure.fortbank.example"),
        shape("subdomain-existing-of-brand-unsigned",
              msg("From: <alerts@mail.fortbank.example>", *std("Verify", "s2@mallory.example")), ""),
        shape("subdomain-of-local-domain", msg("From: Helpdesk <helpdesk@it.corp.example>", *std("VPN", "s3@m")),
              "helpdesk@it.corp.example"),
        shape("subdomain-of-local-domain-null", msg("From: Payroll <payroll@hr.corp.example>", *std("Payslip", "s4@m")),
              ""),
        # header injections and parser games
        shape("header-injected-bare-lf",
              by_mallory(msg("From: <x@mallory.example>", f"To: <{VICTIM}>",
                             "Subject: Invoice\nFrom: Fortbank <security@fortbank.example>", DATE,
                             "Message-ID: <h1@mallory.example>"), ["from", "to", "date"])),
        shape("header-tab-led-first-from", msg("\tFrom: <security@fortbank.example>", "From: <x@mallory.example>",
                                               *std("Notice", "h2@mallory.example"))),
        shape("header-brand-from-first-of-two", msg("From: <security@fortbank.example>", "From: <x@mallory.example>",
                                                    *std("Notice", "h3@mallory.example"))),
        shape("header-forged-arc-pass",
              msg("ARC-Authentication-Results: i=1; mx.corp.example; dmarc=pass header.from=fortbank.example",
                  "ARC-Seal: i=1; a=rsa-sha256; cv=none; d=fortbank.example; s=s1; b=AAAA",
                  bank_from, *std("Verified", "h4@mallory.example"))),
        # several authors
        shape("authors-brand-and-attacker",
              by_mallory(msg("From: <security@fortbank.example>, <x@mallory.example>", "Sender: <x@mallory.example>",
                             *std("Joint notice", "a1@mallory.example")))),
        shape("authors-two-brand-unsigned",
              msg("From: <a@fortbank.example>, <b@fortbank.example>", "Sender: <a@fortbank.example>",
                  *std("Joint notice", "a2@mallory.example"))),
        # look-alikes of the protected brands, each with its own passing SPF
        shape("lookalike-hyphenated",
              signed(msg("From: Fortbank <security@fortbank-online.example>", *std("Login", "l1@x")),
                     "fortbank-online.example", "f1"), "security@fortbank-online.example"),
        shape("lookalike-joined-word", msg("From: Fortbank <security@fortbanklogin.example>", *std("Login", "l2@x")),
              "security@fortbanklogin.example"),
        shape("lookalike-word-before", msg("From: Fortbank <security@updatefortbank.example>", *std("Login", "l3@x")),
              "security@updatefortbank.example"),
        shape("lookalike-idn-a-circumflex", msg("From: Fortbank <claims@xn--fortbnk-twa.example>", *std("Claim", "l4@x")),
              "claims@xn--fortbnk-twa.example"),
    ]


def legitimate(keys) -> list[Shape]:
    bank = sign(msg("From: Fortbank <statements@fortbank.example>", *std("Statement", "g1@fortbank.example")),
                "fortbank.example", "s1", keys_dir=keys)
    harbour = sign(msg("From: Harbour Insurance <claims@harbour.example>", *std("Claim", "g2@harbour.example")),
                   "harbour.example", "k1", keys_dir=keys)
    relay = msg("From: Alice Liddell <alice@corp.example>", *std("Minutes", "g3@corp.example", to="<bob@corp.example>"))
    return [Shape("bank-direct", BANK, "mail.fortbank.example", "bounces@fortbank.example", bank),
            Shape("harbour-ed25519-direct", HARBOUR, "mail.harbour.example", "claims@harbour.example", harbour),
            Shape("trusted-relay-network", RELAY, "relay.corp.example", "alice@corp.example", relay)]


def play(app, shape: Shape, rcpt: str = VICTIM) -> tuple[str, list[dict]]:
    """Send one shape; (the outcome, the events of its session: verdicts, delivery or refusal)."""
    before = len(app.recorder.events)
    closed = len(app.recorder.of("session.close"))
    client = ForgeClient(*app.smtp.address, source_ip=shape.source, timeout=10)
    try:
        client.connect()
        result = run_transaction(client, Transaction(mail_from=shape.mail_from, rcpts=(rcpt,), message=shape.message,
                                                     helo=shape.helo))
    finally:
        client.close()
    app.recorder.wait_for("session.close", closed + 1)
    events = app.recorder.events[before:]
    delivered = [e for e in events if e["kind"] == "message.delivered"]
    if result.outcome != "accepted":
        return result.outcome, events
    return (delivered[0]["action"] if delivered else "unknown"), events


@pytest.fixture(scope="module")
def shapes(world) -> dict[str, Shape]:
    """Every shape of the trainer's set by id (signed once, with the keys of ``world``)."""
    keys, _ = world
    return {s.id: s for s in [*forgeries(keys), *legitimate(keys)]}


FORGERY_IDS = [
    "replay-null-envelope", "replay-foreign-envelope", "replay-l-appended-null-envelope",
    "replay-l-appended-shared-esp", "replay-subject-added-shared-esp", "replay-from-added-not-oversigned",
    "replay-cc-added-quarantine-brand", "replay-ed25519-quarantine-brand-null", "replay-to-retargeted",
    "replay-subdomain-signer-null", "replay-expired", "display-name-holds-brand-address",
    "display-name-local-colleague", "display-name-brand-and-at", "null-sender-reject-brand",
    "null-sender-quarantine-brand", "null-sender-local-domain", "subdomain-nonexistent-of-brand",
    "subdomain-existing-of-brand-unsigned", "subdomain-of-local-domain", "subdomain-of-local-domain-null",
    "header-injected-bare-lf", "header-tab-led-first-from", "header-brand-from-first-of-two",
    "header-forged-arc-pass", "authors-brand-and-attacker", "authors-two-brand-unsigned", "lookalike-hyphenated",
    "lookalike-joined-word", "lookalike-word-before", "lookalike-idn-a-circumflex",
]
NEEDS: dict[str, str] = {}  # every forgery is caught on main now


def _param(id_):
    if id_ in NEEDS:
        return pytest.param(id_, id=id_, marks=pytest.mark.xfail(strict=True, reason=f"needs {NEEDS[id_]}, another branch"))
    return pytest.param(id_, id=id_)


def test_the_set_is_complete(world):
    made = forgeries(world[0])
    assert [s.id for s in made] == FORGERY_IDS and len(made) - len(NEEDS) >= 25
    assert {s.id: s.needs for s in made if s.needs} == NEEDS


@pytest.mark.parametrize("shape_id", [_param(i) for i in FORGERY_IDS])
def test_every_forgery_is_refused_or_quarantined(world, shapes, shape_id):
    outcome, events = play(world[1], shapes[shape_id])
    assert outcome in ("rejected", "quarantine"), (shape_id, outcome)
    decided = [e for e in events if e["kind"] in ("message.rejected", "message.delivered")]
    policy = load_policy(world[0].parent / "trainer.toml")
    harsh = {v["check"] for e in decided for v in e["verdicts"]
             if policy.action_for(Verdict(v["check"], v["result"], action=v["action"])) in ("reject", "quarantine")}
    dmarc = {v["result"] for e in decided for v in e["verdicts"] if v["check"] == "dmarc"}
    if "pass" in dmarc:  # mismatch steps back when DMARC passes: something else must stop it
        assert harsh - {"mismatch"}, (shape_id, harsh)


def test_replays_are_refused_naming_their_sign(world, shapes):
    for shape_id, sign_ in [("replay-null-envelope", "envelope"), ("replay-l-appended-shared-esp", "length"),
                            ("replay-subject-added-shared-esp", "added-headers"), ("replay-expired", "expired"),
                            ("replay-subdomain-signer-null", "envelope")]:
        _, events = play(world[1], shapes[shape_id])
        replay = [e["verdict"] for e in events if e["kind"] == "verdict" and e["verdict"]["check"] == "dkim-replay"]
        assert replay and replay[0]["result"] == "fail" and f"[{sign_}]" in replay[0]["reason"], (shape_id, replay)


@pytest.mark.parametrize("shape_id", ["bank-direct", "harbour-ed25519-direct", "trusted-relay-network"])
def test_the_world_delivers_its_own_mail(world, shapes, shape_id):
    rcpt = "bob@corp.example" if shape_id == "trusted-relay-network" else VICTIM
    outcome, events = play(world[1], shapes[shape_id], rcpt)
    assert outcome in ("accept", "tag"), (shape_id, outcome, [e.get("reply") for e in events if e["kind"] == "message.rejected"])
