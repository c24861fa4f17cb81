"""A trainer's own world for the trust tests (issue 17): a policy that extends strict with its
own trust settings, the lab zone extended with the trainer's domains, keys generated here, and
each sender on its own loopback address. One server per test module, stopped after."""
from __future__ import annotations

import smtplib
from dataclasses import dataclass

from forgelab.app import Forgelab, Settings
from forgelab.auth import arc, keys
from forgelab.core.registry import BUILTIN
from forgelab.testing import EventRecorder

LAB_ZONE = keys.LAB_KEYS.parent / "lab.zone"
DATE = "Date: Tue, 01 Dec 2026 09:00:00 +0000"

ACME, ACME_IP = "acme-tools.example", "127.0.7.1"          # p=reject, rsa + ed25519 keys
WIDGET, WIDGET_IP = "widget-co.example", "127.0.7.2"       # p=quarantine
QUIET, QUIET_IP = "quiet-author.example", "127.0.7.3"      # p=none
BAKERY, BAKERY_IP = "tiny-bakery.example", "127.0.7.4"     # p=none, no key of its own: sends through the ESP
PLAIN, PLAIN_IP = "plain-club.example", "127.0.7.5"        # SPF and DKIM, no DMARC record at all
ESP, ESP_IP = "mailer-esp.example", "127.0.8.1"            # an email service provider's bounce domain
FWD, FWD_IP = "fwd-relay.example", "127.0.9.1"             # a forwarder that rewrites with SRS
HUB, HUB_IP = "groups-hub.example", "127.0.10.1"           # a list server, trusted as an ARC sealer
OTHER_HUB, OTHER_HUB_IP = "relay-unknown.example", "127.0.11.1"  # a list server nobody trusts
OUTSIDER_IP = "127.0.12.1"                                 # an honest client with nothing published

RSA_KEYS = {ACME: "k1", WIDGET: "s2026", QUIET: "q1", PLAIN: "club", ESP: "esp1", FWD: "fw", HUB: "hub",
            OTHER_HUB: "ru"}


def _host_records(domain: str, ip: str, spf: str, dmarc: str | None) -> list[str]:
    mx = f"mx.{domain}"
    last = ip.split(".")
    lines = [f"{domain}. IN MX 10 {mx}.", f"{mx}. IN A {ip}", f'{mx}. IN TXT "v=spf1 a -all"',
             f'{domain}. IN TXT "{spf}"', f"{last[3]}.{last[2]}.{last[1]}.{last[0]}.in-addr.arpa. IN PTR {mx}."]
    if dmarc:
        lines.append(f'_dmarc.{domain}. IN TXT "{dmarc}"')
    return lines


def build(tmp) -> tuple:
    """Write the trainer's keys, zone and policy under ``tmp``; returns (keys dir, zone, policy)."""
    keys_dir = tmp / "keys"
    lines = [LAB_ZONE.read_text(), "", "; ---- the trainer's world (tests/trainer_world.py)"]
    for domain, selector in RSA_KEYS.items():
        lines.append(keys.keygen(domain, selector, keys_dir, bits=1024).zone_line)
    lines.append(keys.keygen(ACME, "ed", keys_dir, algorithm="ed25519").zone_line)
    keys.keygen(ESP, "old2019", tmp / "revoked-keys", bits=1024)  # a rotated-out selector: its record is revoked
    lines.append(f'old2019._domainkey.{ESP}. IN TXT "v=DKIM1; k=rsa; p="')
    # The brand lists its ESP in its SPF, as brands do: its ESP's mail is no replay of its signature.
    lines += _host_records(ACME, ACME_IP, f"v=spf1 ip4:{ACME_IP} include:{ESP} -all", "v=DMARC1; p=reject; adkim=r; aspf=r")
    lines += [f'em.{ACME}. IN TXT "v=spf1 ip4:127.0.8.0/29 -all"', f"em.{ACME}. IN MX 10 mx.{ESP}."]
    lines += _host_records(WIDGET, WIDGET_IP, f"v=spf1 ip4:{WIDGET_IP} -all", "v=DMARC1; p=quarantine")
    lines += _host_records(QUIET, QUIET_IP, f"v=spf1 ip4:{QUIET_IP} -all", "v=DMARC1; p=none")
    lines += _host_records(BAKERY, BAKERY_IP, f"v=spf1 ip4:{BAKERY_IP} include:{ESP} ~all", "v=DMARC1; p=none")
    lines += _host_records(PLAIN, PLAIN_IP, f"v=spf1 ip4:{PLAIN_IP} -all", None)
    lines += _host_records(ESP, ESP_IP, "v=spf1 ip4:127.0.8.0/29 -all", "v=DMARC1; p=none")
    lines += [f'bounce.{ESP}. IN TXT "v=spf1 ip4:127.0.8.0/29 -all"', f"bounce.{ESP}. IN MX 10 mx.{ESP}."]
    lines += _host_records(FWD, FWD_IP, f"v=spf1 ip4:{FWD_IP} -all", "v=DMARC1; p=none")
    lines += _host_records(HUB, HUB_IP, f"v=spf1 ip4:{HUB_IP} -all", "v=DMARC1; p=none")
    lines += _host_records(OTHER_HUB, OTHER_HUB_IP, f"v=spf1 ip4:{OTHER_HUB_IP} -all", "v=DMARC1; p=none")
    zone = tmp / "trainer.zone"
    zone.write_text("\n".join(lines) + "\n")
    policy = tmp / "trainer.toml"
    policy.write_text(f'''description = "A trainer's strict lab with its own trust settings."
extends = "strict"

[defences.arc]
trusted_sealers = ["{HUB}"]

[defences.mismatch]
trusted_ips = ["127.0.0.1"]
''' + (f'''
[defences.dkim-replay]
trusted_forwarders = ["{FWD_IP}"]
''' if "dkim-replay" in BUILTIN else ""))  # the trainer trusts its forwarder, where that defence exists
    return keys_dir, zone, policy


def start(tmp) -> tuple[Forgelab, object]:
    keys_dir, zone, policy = build(tmp)
    app = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=tmp / "data", policy=str(policy),
                            zone_file=zone))
    app.recorder = EventRecorder()
    app.bus.subscribe(app.recorder)
    app.start()
    return app, keys_dir


@dataclass
class Shape:
    """One message as a real sender would hand it over."""

    id: str
    source_ip: str
    helo: str
    mail_from: str
    data: bytes
    rcpts: tuple = ("alice@corp.example",)
    auth: tuple | None = None


def message(*headers: str, body: str = "Hello.\r\n") -> bytes:
    return "".join(h + "\r\n" for h in headers).encode() + b"\r\n" + body.encode()


def sign(data: bytes, domain: str, keys_dir, selector=None, headers=None) -> bytes:
    return keys.sign(data, domain, selector, keys_dir, include_headers=headers)


def seal(data: bytes, domain: str, keys_dir) -> bytes:
    return arc.seal(data, domain, f"mx.{domain}", keys_dir=keys_dir)


def deliver(app, shape: Shape) -> tuple[str, str]:
    """Send ``shape`` and return (outcome, what decided): accepted, tagged, quarantined or refused."""
    delivered = len(app.recorder.of("message.delivered"))
    try:
        with smtplib.SMTP(*app.smtp.address, timeout=10, source_address=(shape.source_ip, 0)) as client:
            client.ehlo(shape.helo)
            if shape.auth:
                client.login(*shape.auth)
            client.sendmail(shape.mail_from, list(shape.rcpts), shape.data)
    except smtplib.SMTPResponseException as e:
        return "refused", f"{e.smtp_code} {e.smtp_error.decode('utf-8', 'replace')}"
    except smtplib.SMTPRecipientsRefused as e:
        return "refused", str(e.recipients)
    event = app.recorder.wait_for("message.delivered", delivered + 1)[-1]  # a 250: it is on disk
    outcome = {"accept": "accepted", "tag": "tagged", "quarantine": "quarantined"}[event["action"]]
    return outcome, f"{event.get('deciding')}: {[(v['check'], v['result']) for v in event['verdicts']]}"
