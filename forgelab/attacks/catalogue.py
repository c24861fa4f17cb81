"""The attack catalogue: every forgery forgelab demonstrates, as data.

Each :class:`Attack` says where it comes from (paper section, CVE), the exact bytes
the client sends (:meth:`Script.client_bytes`), the defences that should react and
the outcome expected under each shipped policy. The legitimate messages (``legit=True``)
run with the catalogue and must never be refused or marked as failed.

The bytes are fixed: dates, message ids and DKIM ``t=`` tags are frozen, so
docs/attacks.md is reproducible and a test can check it is up to date.
"""
from __future__ import annotations

import base64
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Mapping

from ..forge import CRLF, END_OF_DATA, ForgeClient, Transaction

POLICIES = ("open", "observe", "strict")
OUTCOMES = ("accepted", "tagged", "quarantined", "tempfailed", "rejected")
ATTACK_CLASSES = {
    "espoofer": "Parsing ambiguities between SMTP, SPF, DKIM, DMARC and mail clients (Composition Kills)",
    "dkim-replay": "Reusing a valid DKIM signature on a message it was not meant for",
    "unicode": "Characters that make one address read as another",
    "smuggling": "SMTP smuggling: a second message hidden behind a non-standard end of data",
    "classic": "The classics of sender forgery and server abuse",
    "legitimate": "Legitimate mail that no policy may refuse or mark as failed",
}

# The lab world (forgelab/lab/world.py): who may send from which loopback address.
ATTACKER_IP = "127.0.66.1"
SPOOFED_PTR_IP = "127.0.66.2"
BANK_IP, SHOP_IP, INSURE_IP, LISTS_IP = "127.0.1.1", "127.0.2.1", "127.0.4.1", "127.0.5.1"
ATTACKER_HELO = "mail.phish.example"
ATTACKER_ENV = "attacker@phish.example"
VICTIM = "alice@corp.example"
TO = "Alice Liddell <alice@corp.example>"
DATE = "Mon, 01 Jan 2024 09:00:00 +0000"
DKIM_TIME = 1704099600  # the t= of every signature in the catalogue (2024-01-01 09:00 UTC)
BODY = "Please review the attached statement and confirm your details today.\r\n"

# Shorthands for the expected outcomes.
FORGERY = {"open": "accepted", "observe": "tagged", "strict": "rejected"}
SYNTAX = {"open": "accepted", "observe": "rejected", "strict": "rejected"}  # refused by the SMTP core's address syntax
LEGIT = {"open": "accepted", "observe": "accepted", "strict": "accepted"}
# Only ``mismatch`` fails: strict does what it suggests, quarantine for a From outside our domains.
MISMATCH_ONLY = {"open": "accepted", "observe": "tagged", "strict": "quarantined"}

# ``smtp`` is not a plugin: it names the SMTP core itself (a 5xx syntax reply).
CORE_CHECK = "smtp"


@dataclass(frozen=True)
class Script:
    """What the client does, after the banner, from ``source_ip``.

    ``mail_from_arg`` and ``rcpt_args`` (when set) are sent verbatim after ``MAIL FROM:`` and
    ``RCPT TO:``. ``probes`` (VRFY/EXPN lines) replace the message: the attack is the questions.
    ``stuff=False`` sends the message without dot-stuffing (the smuggling attacks need that).
    """

    source_ip: str
    helo: str
    mail_from: str = ""
    rcpts: tuple[str, ...] = (VICTIM,)
    message: bytes = b""
    mail_from_arg: str | None = None
    rcpt_args: tuple[str, ...] | None = None
    mail_params: str = ""
    stuff: bool = True
    probes: tuple[str, ...] = ()
    esmtp: bool = True
    auth: tuple[str, str] | None = None  # log in (AUTH PLAIN) before MAIL FROM

    def transaction(self) -> Transaction:
        return Transaction(mail_from=self.mail_from, rcpts=self.rcpts, message=self.message, helo=self.helo,
                           esmtp=self.esmtp, mail_params=self.mail_params, mail_from_arg=self.mail_from_arg,
                           rcpt_args=self.rcpt_args, stuff=self.stuff, auth=self.auth)

    def client_bytes(self) -> bytes:
        """Every byte the client sends after reading the banner, QUIT included."""
        greet = (b"EHLO " if self.esmtp else b"HELO ") + self.helo.encode() + CRLF
        if self.probes:
            return greet + b"".join(p.encode("utf-8") + CRLF for p in self.probes) + b"QUIT" + CRLF
        tx = self.transaction()
        if tx.auth:
            greet += tx.auth_line()
        return (greet + tx.mail_line() + b"".join(tx.rcpt_lines()) + b"DATA" + CRLF
                + ForgeClient.payload(self.message, self.stuff, END_OF_DATA) + b"QUIT" + CRLF)


@dataclass(frozen=True)
class Attack:
    """One catalogued attack (or, with ``legit=True``, one legitimate message).

    :param defences: the checks that must react (a verdict other than pass/none/neutral);
        ``smtp`` means the SMTP core's own syntax check.
    :param expected: policy name -> accepted / tagged / quarantined / tempfailed / rejected.
    :param must_not_store: bytes that must not appear in a stored copy (a forged header
        the server promises to strip).
    """

    id: str
    title: str
    cls: str
    reference: str
    explanation: str
    defences: tuple[str, ...]
    expected: Mapping[str, str]
    script: Script
    legit: bool = False
    must_not_store: bytes | None = None
    notes: str = ""

    def expected_for(self, policy: str) -> str | None:
        return self.expected.get(policy)


# ---------------------------------------------------------------- building bytes

def _msg(*headers: str, body: str | bytes = BODY) -> bytes:
    """Header lines exactly as written (UTF-8), a blank line, the body."""
    raw_body = body if isinstance(body, bytes) else body.encode("utf-8")
    return "".join(h + "\r\n" for h in headers).encode("utf-8") + b"\r\n" + raw_body


def _std(subject: str, msgid: str, *, to: str = TO) -> tuple[str, ...]:
    return (f"To: {to}", f"Subject: {subject}", f"Date: {DATE}", f"Message-ID: <{msgid}>")


_clock_lock = threading.Lock()


@contextmanager
def _frozen_dkim_clock():
    """dkimpy writes t= from time.time(); freeze it so the catalogue's bytes never change."""
    import dkim

    with _clock_lock:
        saved = dkim.time
        dkim.time = SimpleNamespace(time=lambda: DKIM_TIME)
        try:
            yield
        finally:
            dkim.time = saved


@lru_cache(maxsize=1)
def _held_keys():
    # keys.keys_for() re-reads and validates every PEM on each call (slow); read them once.
    from ..auth import keys

    return tuple(keys.held_keys())


def _key(domain: str, selector: str):
    for key in _held_keys():
        if key.domain == domain and key.selector == selector:
            return key
    raise KeyError(f"no lab key {selector}._domainkey.{domain}")


def _sign(message: bytes, domain: str, selector: str | None = None, headers=None, length: bool = False) -> bytes:
    """Sign as the lab would (forgelab.auth.keys.sign), with every key of the domain unless one is named."""
    import dkim

    from ..auth import keys

    chosen = [_key(domain, selector)] if selector else [
        k for k in _held_keys() if k.domain == domain and not k.selector.startswith("weak")]
    names = [h.lower().encode() for h in (headers or keys.DEFAULT_SIGNED_HEADERS)]
    signed = message
    with _frozen_dkim_clock():
        for key in chosen:
            sig = dkim.DKIM(signed).sign(key.selector.encode(), key.domain.encode(), key.dkimpy_private(),
                                         signature_algorithm=key.signature_algorithm,
                                         canonicalize=(b"relaxed", b"relaxed"), include_headers=names,
                                         length=length)
            signed = sig + signed
    return signed


def _sign_raw(message: bytes, key_domain: str, d: bytes, s: bytes, headers) -> bytes:
    """Sign with ``key_domain``'s lab key but write any ``d=``/``s=`` (the injection attacks)."""
    import dkim

    key = _key(key_domain, "lab")
    with _frozen_dkim_clock():
        sig = dkim.sign(message, s, d, key.dkimpy_private(), include_headers=[h.encode() for h in headers])
    return sig + message


def _sign_expiring(message: bytes, domain: str, lifetime: int) -> bytes:
    """Sign with ``domain``'s lab key and ``x=`` ``lifetime`` seconds after ``t=`` (dkimpy writes no x=)."""
    import dkim

    class Expiring(dkim.DKIM):
        def gen_header(self, fields, *args, **kwargs):
            at = [name for name, _ in fields].index(b"b")
            return super().gen_header([*fields[:at], (b"x", str(DKIM_TIME + lifetime).encode()), *fields[at:]],
                                      *args, **kwargs)

    key = _key(domain, "lab")
    with _frozen_dkim_clock():
        sig = Expiring(message).sign(key.selector.encode(), key.domain.encode(), key.dkimpy_private(),
                                     canonicalize=(b"relaxed", b"relaxed"),
                                     include_headers=[h.encode() for h in ("from", "from", "to", "subject",
                                                                           "subject", "date", "message-id")])
    return sig + message


def _arc_seal(message: bytes, domain: str, srv_id: str) -> bytes:
    import dkim

    key = _key(domain, "lab")
    with _frozen_dkim_clock():
        headers = dkim.arc_sign(message, key.selector.encode(), key.domain.encode(), key.dkimpy_private(),
                                srv_id.encode())
    return b"".join(headers) + message


def _attacker(message: bytes, **kw) -> Script:
    kw.setdefault("mail_from", ATTACKER_ENV)
    return Script(source_ip=ATTACKER_IP, helo=ATTACKER_HELO, message=message, **kw)


# ---------------------------------------------------------------- the catalogue

CF = "Chen, Paxson, Jiang: Composition Kills, USENIX Security 2020"
WL = "Shen et al.: Weak Links in Authentication Chains, USENIX Security 2021"
SMUG = ("CVE-2023-51764 (Postfix), CVE-2023-51765 (Sendmail), CVE-2023-51766 (Exim); "
        "T. Longin, SEC Consult: SMTP Smuggling, 2023")


def _espoofer() -> list[Attack]:
    admin = "<admin@bank.example>"
    out = [
        Attack("spf-nonexistent-subdomain", "Non-existent MAIL FROM subdomain, HELO fallback", "espoofer",
               f"{CF}, section 4.2 (A1); espoofer server_a1",
               "MAIL FROM names a subdomain of the bank that does not exist, so it has no SPF record. A "
               "verifier that then falls back to the HELO identity (the attacker's, which passes) may report "
               "spf=pass for a domain that aligns with the From, and DMARC passes. The SPF result must stay "
               "'none' for the MAIL FROM, and DMARC must fail: nothing aligned with bank.example passed.",
               ("dmarc",), FORGERY,
               _attacker(_msg(f"From: {admin}", *_std("A1: Non-existent subdomain", "a1@phish.example")),
                         mail_from="any@mailfrom.notexist.bank.example")),
        Attack("mailfrom-unclosed-comment", "Unclosed comment in MAIL FROM", "espoofer",
               f"{CF}, section 4.2 (A2, empty MAIL FROM); espoofer server_a2",
               "'(any@bank.example' opens a comment that never closes: an SPF module that strips comments "
               "sees an empty MAIL FROM and checks the HELO instead, while DMARC takes bank.example from the "
               "same string. An SMTP server that enforces RFC 5321 address syntax refuses it at MAIL FROM.",
               (CORE_CHECK,), SYNTAX,
               _attacker(_msg(f"From: {admin}", *_std("A2: Empty MAIL FROM", "a2@phish.example")),
                         mail_from="(any@bank.example", mail_from_arg="<(any@bank.example>")),
        Attack("dkim-selector-nul", "NUL byte in the DKIM selector", "espoofer",
               f"{CF}, section 4.3 (A3, NUL ambiguity); espoofer server_a3",
               "The signature claims d=bank.example, but its selector holds a NUL: "
               "'lab._domainkey.phish.example.\\x00.any'. A C verifier building the key name stops at the NUL "
               "and fetches the attacker's own key (lab._domainkey.phish.example), which verifies the "
               "signature; DMARC then sees dkim=pass for bank.example. The key lookup must use the whole name "
               "and fail.",
               ("dkim", "dmarc"), FORGERY,
               _attacker(_sign_raw(_msg(f"From: {admin}", *_std("A3: NUL ambiguity", "a3@phish.example")),
                                   "phish.example", b"bank.example", b"lab._domainkey.phish.example.\x00.any",
                                   ("from", "to", "subject", "date")),
                         mail_from="any@phish.example")),
        Attack("dkim-d-quote-injection", "Quote injected into DKIM d=", "espoofer",
               f"{CF}, section 4.3 (A4, authentication results injection); espoofer server_a4",
               "d=bank.example'a.phish.example is a name under the attacker's phish.example, so the key is "
               "the attacker's; a verifier that writes 'header.d=bank.example'a.phish.example' unquoted into "
               "Authentication-Results lets the next component read header.d=bank.example. The signing "
               "domain must be taken whole (and here its key does not exist).",
               ("dkim", "dmarc"), FORGERY,
               _attacker(_sign_raw(_msg(f"From: {admin}", *_std("A4: Quote in d=", "a4@phish.example")),
                                   "phish.example", b"bank.example'a.phish.example", b"lab",
                                   ("from", "to", "subject", "date")),
                         mail_from="any@phish.example")),
        Attack("dkim-d-comment-injection", "Comment injected into DKIM d=", "espoofer",
               f"{CF}, section 4.3 (A4 variant, parenthesis)",
               "d=bank.example(.phish.example: DNS looks the key up under phish.example, but a component "
               "that treats '(' as the start of a comment reads d=bank.example, aligned with the From.",
               ("dkim", "dmarc"), FORGERY,
               _attacker(_sign_raw(_msg(f"From: {admin}", *_std("A4b: Comment in d=", "a4b@phish.example")),
                                   "phish.example", b"bank.example(.phish.example", b"lab",
                                   ("from", "to", "subject", "date")),
                         mail_from="any@phish.example")),
        Attack("mailfrom-comment-injection", "Comment injected into MAIL FROM", "espoofer",
               f"{CF}, section 4.2 (A5, SPF results injection); espoofer server_a5",
               "'any@bank.example(a.phish.example': SPF checks a.phish.example (the attacker's, passes) "
               "while a DMARC module that strips the comment sees bank.example. Refused as bad syntax.",
               (CORE_CHECK,), SYNTAX,
               _attacker(_msg(f"From: {admin}", *_std("A5: Comment in MAIL FROM", "a5@phish.example")),
                         mail_from="any@bank.example(a.phish.example",
                         mail_from_arg="<any@bank.example(a.phish.example>")),
        Attack("mailfrom-quote-injection", "Quote injected into MAIL FROM", "espoofer",
               f"{CF}, Figure 5(f) (A6); espoofer server_a6",
               "'any@bank.example'@any.phish.example': the last @ puts the address in phish.example for SPF, "
               "the first @ puts it in bank.example for a parser that stops at the quote.",
               (CORE_CHECK,), SYNTAX,
               _attacker(_msg(f"From: {admin}", *_std("A6: Quote in MAIL FROM", "a6@phish.example")),
                         mail_from="any@bank.example'@any.phish.example",
                         mail_from_arg="<any@bank.example'@any.phish.example>")),
        Attack("mailfrom-source-route", "Source route in MAIL FROM", "espoofer",
               f"{CF}, section 4.2 (A5 variant); espoofer server_a7",
               "An obsolete source route '@bank.example,@any.example:' in front of the real address. "
               "RFC 5321 says to ignore it; a component that takes the domain from the route checks "
               "bank.example while another checks phish.example. forgelab ignores the route, so SPF judges "
               "phish.example and DMARC finds nothing aligned with the From bank.example.",
               ("dmarc", "mismatch"), FORGERY,
               _attacker(_msg(f"From: {admin}", *_std("A7: Route in MAIL FROM", "a7@phish.example")),
                         mail_from="'any@phish.example",
                         mail_from_arg="<@bank.example,@any.example:'any@phish.example>")),
        Attack("from-two-headers", "Two From headers", "espoofer",
               f"{CF}, Figure 6(a) (A8); espoofer server_a8",
               "The attacker's From first, the bank's second. DMARC implementations that take the first "
               "From check phish.example (passes); mail clients that show the last one show the bank.",
               ("headers", "from-ambiguity"), FORGERY,
               _attacker(_msg("From: <first@phish.example>", f"From: {admin}",
                              *_std("A8: Multiple From headers", "a8@phish.example")))),
        Attack("from-space-before", "Space before the first From", "espoofer",
               f"{CF}, section 5.1 (A9); espoofer server_a9",
               "' From: <first@phish.example>' as the first line: strict parsers drop or misread it, "
               "lenient ones see a second From. Which From is 'the' From depends on the program.",
               ("headers", "from-ambiguity"), FORGERY,
               _attacker(_msg(" From: <first@phish.example>", f"From: {admin}",
                              *_std("A9: Space before From", "a9@phish.example")))),
        Attack("from-space-before-colon", "Space before the colon of From", "espoofer",
               f"{CF}, Figure 6(c) (A10); espoofer server_a10",
               "'From : <admin@bank.example>' is not a valid field name for a strict parser (so it checks "
               "the other From) but lenient software trims the name and shows this one.",
               ("headers", "from-ambiguity"), FORGERY,
               _attacker(_msg("From: <first@phish.example>", f"From : {admin}",
                              *_std("A10: Space before colon", "a10@phish.example")))),
        Attack("from-folded", "Folded From header name", "espoofer",
               f"{CF}, Figure 6(b) (A11); espoofer server_a11",
               "'From\\r\\n : <first@phish.example>': the colon is on a continuation line. Some parsers see "
               "no From there and use the bank's From below it; others unfold and see two.",
               ("headers", "from-ambiguity"), FORGERY,
               _attacker(_msg("From", " : <first@phish.example>", f"From: {admin}",
                              *_std("A11: Folded From", "a11@phish.example")))),
        Attack("from-and-sender", "From versus Sender", "espoofer",
               f"{CF}, Figure 6(d) (A12); espoofer server_a12",
               "A From that strict parsers cannot read (folded name) and a Sender: <admin@bank.example>. "
               "Clients that fall back to the Sender when there is no readable From show the bank.",
               ("headers", "from-ambiguity"), FORGERY,
               _attacker(_msg("From", " : <first@phish.example>", f"Sender: {admin}",
                              *_std("A12: From and Sender", "a12@phish.example")))),
        Attack("from-and-resent-from", "From versus Resent-From", "espoofer",
               f"{CF}, section 5.1 (A13); espoofer server_a13",
               "As above with Resent-From: <admin@bank.example>: some clients show the resender as the author.",
               ("headers",), FORGERY,
               _attacker(_msg("From", " : <first@phish.example>", f"Resent-From: {admin}",
                              *_std("A13: From and Resent-From", "a13@phish.example")))),
        Attack("from-two-addresses", "Two addresses in one From", "espoofer",
               f"{CF}, Figure 8(a) (A14); espoofer server_a14",
               "'From: <first@phish.example>, <admin@bank.example>': a DMARC module that checks only the "
               "first address passes; a client that shows only the last shows the bank.",
               ("from-ambiguity", "dmarc"), FORGERY,
               _attacker(_msg(f"From: <first@phish.example>, {admin}", "Sender: <s@phish.example>",
                              *_std("A14: Two addresses in From", "a14@phish.example")))),
        Attack("from-encoded-word-address", "Address inside an encoded-word", "espoofer",
               f"{CF}, Figure 8(b) (A15); espoofer server_a15",
               "'From: =?utf-8?B?PGFkbWluQGJhbmsuZXhhbXBsZT4=?=,<second@phish.example>': the encoded-word "
               "decodes to <admin@bank.example>. RFC 2047 forbids encoded-words in addresses, so a verifier "
               "checks phish.example, but a client that decodes first shows the bank.",
               ("from-ambiguity",), FORGERY,
               _attacker(_msg("From: =?utf-8?B?" + base64.b64encode(b"<admin@bank.example>").decode()
                              + "?=,<second@phish.example>", "Sender: <s@phish.example>",
                              *_std("A15: Encoded address", "a15@phish.example")))),
        Attack("from-route-portion", "Route portion in the From address", "espoofer",
               f"{CF}, Figure 8(c) (A16); espoofer server_a16",
               "'From: <@phish.example,@any.example:admin@bank.example>': an obsolete route. Some parsers "
               "take phish.example from the route, others the bank from the address.",
               ("from-ambiguity", "dmarc"), FORGERY,
               _attacker(_msg("From: <@phish.example,@any.example:admin@bank.example>",
                              *_std("A16: Route portion", "a16@phish.example")))),
        Attack("from-quoted-pair", "Quoted-pair in the From", "espoofer",
               f"{CF}, Figure 8(d) (A17); espoofer server_a17",
               "'From: <admin@bank.example>\\,<second@phish.example>': is the backslash-comma a separator "
               "or an escaped character? Parsers disagree, and so do the addresses they find.",
               ("from-ambiguity",), FORGERY,
               _attacker(_msg("From: <admin@bank.example>\\,<second@phish.example>", "Sender: <s@phish.example>",
                              *_std("A17: Quoted pair", "a17@phish.example")))),
        Attack("from-delimiter-precedence", "Delimiter precedence in the From", "espoofer",
               f"{CF}, Figure 8(e) (A18); espoofer server_a18",
               "'From: admin@bank.example,<second@phish.example>': a bare address then a bracketed one. "
               "Parsers that prefer the angle brackets take phish.example; clients show the first.",
               ("from-ambiguity",), FORGERY,
               _attacker(_msg("From: admin@bank.example,<second@phish.example>", "Sender: <s@phish.example>",
                              *_std("A18: Delimiter precedence", "a18@phish.example")))),
        Attack("from-display-name-address", "Display name versus real address", "espoofer",
               f"{CF}, Figure 8(f) (A19); espoofer server_a19",
               "'From: <any@phish.example>admin@bank.example': an address in angle brackets followed by "
               "another. A verifier reads the bracketed phish.example; a client reads the rest as the address.",
               ("from-ambiguity",), FORGERY,
               _attacker(_msg("From: <any@phish.example>admin@bank.example",
                              *_std("A19: Display name and address", "a19@phish.example")))),
    ]
    return out


def _bank_signed(subject: str, msgid: str, headers=("from", "to", "subject", "date"), length=False,
                 extra: tuple[str, ...] = (), body: str = BODY) -> bytes:
    message = _msg("From: Bank of Example <security@bank.example>", *_std(subject, msgid), *extra, body=body)
    return _sign(message, "bank.example", "lab", headers=list(headers), length=length)


def _replays() -> list[Attack]:
    signed = _bank_signed("Your new card", "card@bank.example", extra=("Reply-To: <security@bank.example>",))
    edited = signed.replace(b"Reply-To: <security@bank.example>", b"Reply-To: <security@phish.example>")
    dup = _bank_signed("Your statement", "stmt@bank.example")
    dup = b"Subject: URGENT: verify your account at http://phish.example/login\r\n" + dup
    with_l = _bank_signed("Monthly newsletter", "news1@bank.example", length=True)
    with_l += b"\r\nUPDATE: your account is locked. Unlock it at http://phish.example/unlock\r\n"
    own = _sign(_msg("From: <attacker@phish.example>", *_std("Invoice", "inv@phish.example")),
                "phish.example", "lab", headers=["from", "to", "subject", "date"])
    own = b"From: Bank of Example <security@bank.example>\r\n" + own
    tampered = _bank_signed("Transfer confirmation", "xfer@bank.example")
    tampered = tampered.replace(b"confirm your details today", b"wire the funds to IBAN XX00 6666 today")
    statement = _sign(_msg("From: Bank of Example <statements@bank.example>",
                           *_std("Your card is blocked", "blocked@bank.example"),
                           body="Your card was blocked after three wrong PINs. Call the number on its back.\r\n"),
                      "bank.example", "lab")
    to_self = _sign(_msg("From: Bank of Example <payments@bank.example>",
                         *_std("Payment request", "payreq@bank.example", to="<mallory@phish.example>"),
                         body="Please pay the attached invoice of 2,400.00 to the account below by Friday.\r\n"),
                    "bank.example", "lab", headers=["from", "from", "to", "subject", "subject", "date"])
    to_self = b"To: " + TO.encode() + b"\r\n" + to_self
    expired = _sign_expiring(_msg("From: Bank of Example <security@bank.example>",
                                  *_std("One-time code", "otp@bank.example"),
                                  body="Your one-time code is 481 516. It is valid for 10 minutes.\r\n"),
                             "bank.example", 7 * 24 * 3600)
    return [
        Attack("dkim-unsigned-header-edited", "A header the signature does not cover, edited", "dkim-replay",
               "RFC 6376 section 8.2 (misappropriated signatures); " + CF + ", section 6",
               "A real message signed by bank.example with h=from:to:subject:date; Reply-To is not signed, so "
               "the attacker points it at phish.example and replays the message from its own server. DKIM "
               "and DMARC pass (the signature is the bank's); the From/envelope mismatch, the Reply-To and "
               "the non-oversigned From are what give it away: mismatch quarantines it under strict (DMARC "
               "passes only through a signature that leaves the pointing Reply-To unsigned). dkim-replay "
               "counts the attacker's own envelope as a sign only with envelope = \"unaligned\": an ESP "
               "or a forwarder sending the bank's mail looks the same.",
               ("mismatch",), MISMATCH_ONLY, _attacker(edited)),
        Attack("dkim-duplicate-subject", "A second Subject above the signed one", "dkim-replay",
               "RFC 6376 section 8.15 (header duplication); " + CF + ", section 6",
               "DKIM verifies the bottom-most instance of each signed header, clients show the top one. "
               "A Subject added above a valid bank signature changes what the reader sees and the signature "
               "still verifies, unless Subject was oversigned.",
               ("headers", "dkim-duplicate"), FORGERY, _attacker(dup)),
        Attack("dkim-length-append", "Body appended after an l= signature", "dkim-replay",
               "RFC 6376 section 8.2 (l= tag); Chen et al. 2020, section 6",
               "The bank signed with l= (the body length), so anything after those bytes is unsigned. The "
               "attacker appends a phishing paragraph and the signature still verifies. dkim-replay sees the "
               "body go on past l= (and the foreign envelope) and refuses it under strict.",
               ("dkim-length", "mismatch", "dkim-replay"), FORGERY, _attacker(with_l)),
        Attack("dkim-replay-extra-from", "Own signature replayed with an extra From", "dkim-replay",
               f"{CF}, section 6 (replay with header addition); {WL}",
               "The attacker signs a harmless message as phish.example (h= lists From once) and adds a "
               "second From, the bank's, on top. RFC 6376 verifies the bottom From, so a naive verifier "
               "passes the signature while clients show the top one. dkimpy counts every From as signed "
               "(its fix for Debian bug 644046), so here DKIM fails; the header checks see two Froms.",
               ("headers", "from-ambiguity", "dkim"), FORGERY, _attacker(own)),
        Attack("dkim-body-tampered", "Signed body changed in transit", "dkim-replay",
               "RFC 6376 section 3.7 (body hash)",
               "A bank-signed confirmation whose body the attacker rewrote: the body hash no longer matches, "
               "so DKIM fails and, with nothing else aligned, DMARC fails with the bank's p=reject.",
               ("dkim", "dmarc"), FORGERY, _attacker(tampered)),
        Attack("dkim-replay-null-sender", "A bank's signed message replayed with MAIL FROM:<>", "dkim-replay",
               "RFC 6376 section 8.6 (replay); M3AAWG: DKIM Replay Mitigation, 2023",
               "A message bank.example really signed (From and Subject oversigned, nothing left to add) is "
               "sent again, unchanged, from the attacker's server with a null envelope. DKIM passes and DMARC "
               "passes through it; SPF checks only the attacker's HELO name (passes), and mismatch has no "
               "envelope domain to compare. What is left: bank.example's SPF does not list 127.0.66.1, and a "
               "bounce is no way to send the bank's own mail. dkim-replay refuses it under strict.",
               ("dkim-replay",), FORGERY, _attacker(statement, mail_from="")),
        Attack("dkim-replay-added-to", "A To added above the signed one", "dkim-replay",
               "RFC 6376 section 8.15 (header duplication); " + CF + ", section 6",
               "The bank signed a payment request addressed to the attacker's own account (To: "
               "mallory@phish.example, signed once; From and Subject oversigned). The attacker adds "
               "'To: Alice Liddell <alice@corp.example>' above it: DKIM verifies the bottom To, readers "
               "show the top one, so the message seems addressed to Alice. dkim-replay sees the To present "
               "twice and signed once, and the foreign envelope.",
               ("dkim-replay", "headers"), FORGERY, _attacker(to_self)),
        Attack("dkim-replay-expired", "A signature replayed after its x= expiry", "dkim-replay",
               "RFC 6376 section 3.5 (x= tag)",
               "The bank signs its one-time codes with x= a week after t=, so an old message cannot be "
               "replayed for long. This one is replayed in 2026, two years after it expired: dkimpy refuses "
               "the signature as past x=, DMARC fails, and dkim-replay says why: the signature is the bank's "
               "and otherwise valid, but expired.",
               ("dkim", "dmarc", "dkim-replay"), FORGERY, _attacker(expired)),
    ]


def _unicode() -> list[Attack]:
    homograph = "xn--bnk-7cd.example"  # "bаnk.example" with a Cyrillic а (U+0430)
    return [
        Attack("unicode-trailing-space", "U+2000 after the From domain", "unicode",
               f"{WL}, section 5 (invisible characters)",
               "'From: <admin@bank.example\u2000>' with an EN QUAD after the domain: DMARC looks up "
               "'_dmarc.bank.example\\u2000', finds nothing and lets it pass; the reader sees bank.example.",
               ("lookalike",), FORGERY,
               _attacker(_msg("From: <admin@bank.example\u2000>", *_std("Trailing U+2000", "u1@phish.example")))),
        Attack("unicode-base64-address", "Whole From address base64-encoded", "unicode",
               f"{WL}, section 5 (encoding); {CF}, Figure 8(b)",
               "'From: =?utf-8?B?YWRtaW5AYmFuay5leGFtcGxl?=' is 'admin@bank.example' encoded: verifiers see no "
               "address at all (no DMARC policy to apply), clients decode and show the bank.",
               ("from-ambiguity", "headers"), FORGERY,
               _attacker(_msg("From: =?utf-8?B?" + base64.b64encode(b"admin@bank.example").decode() + "?=",
                              *_std("Encoded address", "u2@phish.example")))),
        Attack("unicode-rtl-override", "Right-to-left override in the display name", "unicode",
               "Boucher, Anderson: Trojan Source, USENIX Security 2023 (bidi controls); " + WL,
               "The display name is U+202E then 'elpmaxe.knab@ytiruces': shown right to left it reads "
               "'security@bank.example', while the real address is the attacker's.",
               ("lookalike",), FORGERY,
               _attacker(_msg("From: \"\u202eelpmaxe.knab@ytiruces\u202c\" <security@phish.example>",
                              *_std("Bidi override", "u3@phish.example")))),
        Attack("unicode-idn-homograph", "IDN homograph of bank.example", "unicode",
               "Gabrilovich, Gontmakher: The Homograph Attack, CACM 2002; UTS #39",
               f"{homograph} is 'b\u0430nk.example' with a Cyrillic a. It publishes nothing, so SPF and DMARC "
               "have nothing to fail, and the envelope and From agree: only a look-alike check sees it.",
               ("lookalike",), FORGERY,
               Script(ATTACKER_IP, ATTACKER_HELO, mail_from=f"security@{homograph}",
                      message=_msg(f"From: Bank of Example <security@{homograph}>",
                                   *_std("Homograph", "u4@phish.example")))),
    ]


SMUGGLING_ENDINGS = (
    ("lflf", b"\n.\n"), ("crcr", b"\r.\r"), ("crlf", b"\r.\n"), ("lfcr", b"\n.\r"),
    ("lfcrlf", b"\n.\r\n"), ("crlflf", b"\r\n.\n"), ("crcrlf", b"\r.\r\n"), ("crlfcr", b"\r\n.\r"),
    ("nullbefore", b"\r\n\x00.\r\n"), ("nullafter", b"\r\n.\x00\r\n"),
)


def _smuggled(ending: bytes) -> bytes:
    outer = _msg("From: <customer@shop.example>", *_std("Order question", "outer@shop.example"),
                 body="Hello, a question about my order.")
    hidden = (b"MAIL FROM:<ceo@shop.example>\r\nRCPT TO:<alice@corp.example>\r\nDATA\r\n"
              + _msg("From: CEO <ceo@shop.example>", *_std("Wire transfer, today", "hidden@shop.example"),
                     body="Please wire 50,000 to the account below.\r\n"))
    return outer + ending + hidden


def _smuggling() -> list[Attack]:
    out = []
    for name, ending in SMUGGLING_ENDINGS:
        shown = repr(ending)[2:-1]
        bare = any(x in ending.replace(b"\r\n", b"") for x in (b"\r", b"\n"))
        out.append(Attack(
            f"smuggling-{name}", f"SMTP smuggling with {shown}", "smuggling", SMUG,
            f"The attacker, a customer of shop.example's mail service (127.0.2.1), sends one message "
            f"whose text holds '{shown}' followed by SMTP commands for a second message from "
            f"ceo@shop.example. A server that takes '{shown}' for the end of data (the open policy's "
            f"lenient reading) delivers two messages, and the hidden one passes SPF and DMARC because it "
            f"came from shop.example's own server. A strict server sees one message holding a bare "
            f"line ending or NUL and an end-of-data look-alike.",
            ("smuggling", "bare-newline") if bare else ("smuggling",), FORGERY,
            Script(SHOP_IP, "mail.shop.example", mail_from="customer@shop.example",
                   message=_smuggled(ending), stuff=False)))
    return out


_ACCENTED = "b\u00e2nk.com".encode("idna").decode("ascii")  # xn--, as a sender must write it


def _classics() -> list[Attack]:
    forged_ar = ("Authentication-Results: mx.corp.example; spf=pass smtp.mailfrom=bank.example; "
                 "dkim=pass header.d=bank.example; dmarc=pass header.from=bank.example")
    return [
        Attack("spf-fail-direct", "Plain forgery of a strict domain", "classic", "RFC 7208 section 2.6.2",
               "MAIL FROM and From are security@bank.example, sent from the attacker's address. bank.example "
               "publishes 'v=spf1 ip4:127.0.1.1 -all': a hard SPF fail at MAIL FROM, before any data.",
               ("spf", "dmarc"), FORGERY,
               _attacker(_msg("From: Bank of Example <security@bank.example>", *_std("Account locked", "c1@phish.example")),
                         mail_from="security@bank.example")),
        Attack("ceo-display-name", "Display-name CEO fraud", "classic",
               "FBI IC3: Business Email Compromise; Gascon et al., USENIX Security 2018",
               "From: \"Alice Liddell\" <alice.liddell@phish.example> to a colleague. Every authentication "
               "check passes (it really is phish.example, signed and aligned); only the display name, a "
               "local user's full name on an outside address, gives it away.",
               ("display-name",), FORGERY,
               _attacker(_sign(_msg("From: Alice Liddell <alice.liddell@phish.example>",
                                    *_std("Quick favour", "c2@phish.example", to="Bob Cratchit <bob@corp.example>"),
                                    body="Are you at your desk? I need you to buy gift cards for a client.\r\n"),
                               "phish.example", "lab"),
                         rcpts=("bob@corp.example",))),
        Attack("lookalike-domain", "Look-alike domain", "classic", "RFC 3986 section 7.9 (semantic attacks); UTS #39",
               "security@bank-secure.example: the attacker registered it, and SPF, DKIM and DMARC all pass. "
               "Authentication proves who sent it, not that they are the bank.",
               ("lookalike",), FORGERY,
               Script(ATTACKER_IP, ATTACKER_HELO, mail_from="security@bank-secure.example",
                      message=_sign(_msg("From: Bank Security <security@bank-secure.example>",
                                         *_std("Confirm your identity", "c3@bank-secure.example")),
                                    "bank-secure.example", "lab"))),
        Attack("lookalike-combosquat", "Bank name joined to a word, no hyphen", "classic",
               "Kintis et al.: Hiding in Plain Sight, a Longitudinal Study of Combosquatting Abuse, ACM CCS 2017; "
               "dnstwist (dictionary fuzzer)",
               "security@banklogin.example: the bank's name and 'login' run together, the form most "
               "look-alike registrations take. It publishes nothing, so SPF and DMARC have nothing to fail, "
               "and a check that splits names only at hyphens reads one unknown word. The look-alike check "
               "finds 'bank' beside a word phishing domains use (a short name inside an ordinary word, "
               "workshop or foxnews, is left alone).",
               ("lookalike",), FORGERY,
               Script(ATTACKER_IP, ATTACKER_HELO, mail_from="security@banklogin.example",
                      message=_msg("From: Bank of Example <security@banklogin.example>",
                                   *_std("Sign in to keep your account", "c3b@banklogin.example")))),
        Attack("lookalike-idn-accent", "Accented IDN of the bank under another suffix", "classic",
               "UTS #39 section 4 (skeleton); Gabrilovich, Gontmakher: The Homograph Attack, CACM 2002",
               f"security@{_ACCENTED} is 'b\u00e2nk.com': an a with a circumflex, and .com for .example. "
               "No single letter is swapped for a Cyrillic twin, so a confusables table alone does not "
               "merge it, and it is more than one typing slip from bank.example. Dropping the accent (the "
               "mark after NFD) and comparing the registrable name under any suffix does.",
               ("lookalike",), FORGERY,
               Script(ATTACKER_IP, ATTACKER_HELO, mail_from=f"security@{_ACCENTED}",
                      message=_msg(f"From: Bank of Example <security@{_ACCENTED}>",
                                   *_std("Statement ready", "c3c@phish.example")))),
        Attack("reply-to-hijack", "Reply-To hijack", "classic", "RFC 5322 section 3.6.2",
               "The From claims the bank, but Reply-To sends every answer to billing@bank-secure.example: "
               "the reader replies to the attacker without noticing.",
               ("mismatch", "lookalike"), FORGERY,
               _attacker(_msg("From: Bank Billing <billing@bank.example>", "Reply-To: <billing@bank-secure.example>",
                              *_std("Overdue invoice", "c4@phish.example")))),
        Attack("null-sender", "Null sender (MAIL FROM:<>) with a forged From", "classic",
               "RFC 5321 section 4.5.5; RFC 7208 section 2.4",
               "MAIL FROM:<> is allowed for bounces, so SPF checks only the HELO name (the attacker's, "
               "passes) and nothing ties the From: claims@insure.example to the sender. DMARC does: it "
               "fails, and insure.example publishes p=quarantine.",
               ("dmarc",), {"open": "accepted", "observe": "tagged", "strict": "quarantined"},
               _attacker(_msg("From: Insure Claims <claims@insure.example>",
                              *_std("Your claim was declined", "c5@phish.example")), mail_from="")),
        Attack("dmarc-np-subdomain", "Non-existent subdomain of a DMARC domain", "classic",
               "RFC 9091 (DMARC np=)",
               "From: payments.insure.example, a name that does not exist. insure.example publishes "
               "sp=none but np=reject for non-existent subdomains, so DMARC asks for rejection.",
               ("dmarc",), FORGERY,
               _attacker(_msg("From: <refunds@payments.insure.example>", *_std("Refund", "c6@phish.example")),
                         mail_from="")),
        Attack("iprev-spoofed-ptr", "Client whose PTR claims to be the bank", "classic", "RFC 8601 section 3",
               "127.0.66.2 has a PTR record naming mail.bank.example, but that name does not point back: "
               "anyone can put any name in their own reverse zone. The HELO claims the bank too.",
               ("iprev", "spf-helo"), FORGERY,
               Script(SPOOFED_PTR_IP, "mail.bank.example", mail_from=ATTACKER_ENV,
                      message=_msg("From: <attacker@phish.example>", *_std("Hello", "c7@phish.example")))),
        Attack("open-relay", "Open relay attempt", "classic", "RFC 5321 section 3.9, RFC 2505",
               "RCPT TO a domain this server is not responsible for, without logging in. An open relay "
               "would pass it on; forgelab only holds it (open) or refuses it.",
               ("relay",), {"open": "accepted", "observe": "rejected", "strict": "rejected"},
               _attacker(_msg("From: <attacker@phish.example>",
                              *_std("Relay test", "c8@phish.example", to="<victim@elsewhere.example>")),
                         rcpts=("victim@elsewhere.example",))),
        Attack("vrfy-enumeration", "VRFY user enumeration", "classic", "RFC 5321 sections 3.5.3 and 7.3",
               "VRFY each guess: a server that answers 250 with the full name for real users and 550 for "
               "others is a user oracle. The outcome is 'accepted' when the server disclosed a user.",
               ("disclosure",), {"open": "accepted", "observe": "accepted", "strict": "rejected"},
               Script(ATTACKER_IP, ATTACKER_HELO, probes=("VRFY alice", "VRFY mallory", "VRFY bob"))),
        Attack("expn-enumeration", "EXPN list enumeration", "classic", "RFC 5321 sections 3.5.3 and 7.3",
               "EXPN staff lists every member of the mailing list with full names. 'accepted' when disclosed.",
               ("disclosure",), {"open": "accepted", "observe": "accepted", "strict": "rejected"},
               Script(ATTACKER_IP, ATTACKER_HELO, probes=("EXPN staff",))),
        Attack("forged-authentication-results", "Forged Authentication-Results header", "classic",
               "RFC 8601 section 5 (removing forged headers)",
               "The attacker writes 'Authentication-Results: mx.corp.example; spf=pass ... dmarc=pass' itself, "
               "hoping a client trusts it. The server must remove every such header claiming its own "
               "authserv-id before storing; the forgery underneath is caught as usual.",
               ("dmarc",), FORGERY,
               _attacker(_msg(forged_ar, "From: Bank of Example <security@bank.example>",
                              *_std("Verified notice", "c9@phish.example"))),
               must_not_store=forged_ar.encode()),
        Attack("sender-without-from", "Sender header and no From", "classic", "RFC 5322 section 3.6.2",
               "No From at all, only 'Sender: <security@bank.example>'. DMARC has no From domain to judge; "
               "many clients show the Sender as the author.",
               ("headers",), FORGERY,
               _attacker(_msg("Sender: Bank of Example <security@bank.example>", *_std("No From", "c10@phish.example")))),
    ]


def _legitimate() -> list[Attack]:
    why = "Legitimate mail: it must be delivered under every policy with no check failing."
    bank = _sign(_msg("From: Bank of Example <statements@bank.example>",
                      *_std("Your monthly statement", "l1@bank.example"),
                      body="Your statement for December is ready in online banking.\r\n"), "bank.example")
    shop = _sign(_msg("From: =?utf-8?q?Caf=C3=A9_Shop?= <orders@shop.example>",
                      *_std("=?utf-8?b?WW91ciBvcmRlciDinJQgc2hpcHBlZA==?=", "l2@shop.example"),
                      body="Your order has shipped.\r\n"), "shop.example")
    insure = _sign(_msg("From: Insure Example <claims@insure.example>",
                        *_std("Claim received", "l3@insure.example"), "MIME-Version: 1.0",
                        "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit",
                        body="Grüße! Your claim № 4711 was received: we will answer within 5 days — 保险.\r\n"),
                   "insure.example")
    lists_own = _sign(_msg("From: Lists Example <announce@lists.example>",
                           *_std("[announce] Maintenance on Sunday", "l4@lists.example"), "List-Id: <announce.lists.example>",
                           body="The list server will be down on Sunday morning.\r\n"), "lists.example")
    original = _sign(_msg("From: Shop Example <news@shop.example>",
                          *_std("Spring sale", "l5@shop.example", to="<staff@lists.example>"),
                          body="Everything is 20% off this week.\r\n"), "shop.example")
    relayed = (b"Authentication-Results: mail.lists.example; spf=pass smtp.mailfrom=shop.example; "
               b"dkim=pass header.d=shop.example; dmarc=pass header.from=shop.example\r\n"
               + b"Sender: <staff-owner@lists.example>\r\nList-Id: <staff.lists.example>\r\n" + original)
    from ..auth.keys import DEFAULT_SIGNED_HEADERS

    relayed = _sign(_arc_seal(relayed, "lists.example", "mail.lists.example"), "lists.example",
                    headers=[*DEFAULT_SIGNED_HEADERS, "sender", "sender", "list-id", "list-id"])

    corp = _sign(_msg("From: Alice Liddell <alice@corp.example>",
                      *_std("Lunch on Friday?", "l6@corp.example", to="Bob Cratchit <bob@corp.example>"),
                      body="Shall we try the new place on Friday?\r\n"), "corp.example")

    def legit(id_, title, script, note=""):
        return Attack(id_, title, "legitimate", "forgelab lab world (forgelab/lab/world.py)", why + note,
                      (), LEGIT, script, legit=True)

    return [
        legit("legit-bank", "Signed, aligned statement from the bank, with a display name",
              Script(BANK_IP, "mail.bank.example", mail_from="bounces@bank.example", message=bank)),
        legit("legit-shop-encoded", "Shop mail signed twice (RSA and Ed25519), encoded-word From name and Subject",
              Script(SHOP_IP, "mail.shop.example", mail_from="orders@shop.example", message=shop)),
        legit("legit-insure-utf8", "Insurer mail with a UTF-8 body (8BITMIME)",
              Script(INSURE_IP, "mail.insure.example", mail_from="claims@insure.example", message=insure,
                     mail_params="BODY=8BITMIME")),
        legit("legit-corp-auth", "A local user, logged in (AUTH PLAIN), writes to a colleague",
              Script("127.0.0.1", "workstation.corp.example", mail_from="alice@corp.example", message=corp,
                     rcpts=("bob@corp.example",), auth=("alice", "rabbit-hole")),
              " Only a logged-in local user may send as corp.example: this is how alice does it."),
        legit("legit-lists-own", "The list server's own announcement",
              Script(LISTS_IP, "mail.lists.example", mail_from="announce@lists.example", message=lists_own)),
        legit("legit-list-arc", "A shop message through the mailing list, ARC-sealed and re-signed by the list",
              Script(LISTS_IP, "mail.lists.example", mail_from="staff-bounces@lists.example", message=relayed,
                     rcpts=(VICTIM,)),
              " The author's DKIM signature survives (the list changes nothing it signed); the list adds "
              "Sender, List-Id, its own signature and an ARC set."),
    ]


@lru_cache(maxsize=1)
def all_entries() -> tuple[Attack, ...]:
    """Every entry: the attacks, then the legitimate messages (built once; bytes are fixed)."""
    entries = (*_espoofer(), *_replays(), *_unicode(), *_smuggling(), *_classics(), *_legitimate())
    ids = [a.id for a in entries]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"duplicate attack ids: {', '.join(sorted(duplicates))}")
    return entries


def attacks() -> tuple[Attack, ...]:
    return tuple(a for a in all_entries() if not a.legit)


def legitimate() -> tuple[Attack, ...]:
    return tuple(a for a in all_entries() if a.legit)


def get(attack_id: str) -> Attack:
    for a in all_entries():
        if a.id == attack_id:
            return a
    raise KeyError(attack_id)
