"""Trusted networks: every option that takes client addresses takes CIDR networks, read by one parser."""
import ipaddress
import smtplib
import socket

import pytest
from click.testing import CliRunner

from forgelab.cli.main import main
from forgelab.core.networks import allows, contains, parse_networks
from forgelab.core.policy import PolicyError, load_policy
from forgelab.core.registry import build_plugin_manager
from forgelab.lab.dns import LAB_ZONE
from forgelab.plugins.mismatch import Mismatch

LOCAL_FROM = (b"From: Alice <alice@corp.example>\r\nTo: <bob@corp.example>\r\nSubject: hi\r\n"
              b"Date: Mon, 01 Jan 2024 09:00:00 +0000\r\nMessage-ID: <n1@corp.example>\r\n\r\nhello\r\n")


def raw_session(address, payload: bytes, source: str) -> bytes:
    """Send ``payload`` from ``source`` and read every reply until the server closes (after QUIT)."""
    with socket.create_connection(address, timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(payload)
        out = bytearray()
        while chunk := sock.recv(65536):
            out += chunk
        return bytes(out)


def test_addresses_and_networks_parse_alike():
    nets = parse_networks(["127.0.0.1", "127.0.0.50/29", "::1", "::ffff:10.0.0.0/104"], "k")
    assert nets == (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("127.0.0.48/29"),
                    ipaddress.ip_network("::1/128"), ipaddress.ip_network("10.0.0.0/8"))
    assert contains(nets, "127.0.0.55") and not contains(nets, "127.0.0.56")
    assert contains(nets, "::ffff:127.0.0.49") and contains(nets, "10.9.8.7") and contains(nets, "::1")
    assert not contains(nets, "") and not contains(nets, "not-an-address")


@pytest.mark.parametrize("value, shown", [(["127.0.0.300"], "'127.0.0.300'"), (["127.0.0.0/33"], "'127.0.0.0/33'"),
                                          ([7], "7"), ("127.0.0.1", "must be a list")])
def test_a_bad_entry_is_named_with_its_key(value, shown):
    with pytest.raises(ValueError, match="mismatch: setting 'trusted_ips'") as err:
        parse_networks(value, "mismatch: setting 'trusted_ips'")
    assert shown in str(err.value)


def test_mismatch_trusted_ips_take_a_network():
    session_ip = "127.0.0.50"
    from forgelab.core.session import Envelope, Session
    from forgelab.testing import run_hook

    def result(trusted, ip):
        session = Session(peer_ip=ip, real_peer_ip=ip, helo="relay.corp.example")
        (v,) = run_hook(Mismatch({"trusted_ips": trusted}), "message", message=LOCAL_FROM, session=session,
                        envelope=Envelope(mail_from="alice@corp.example"))
        return v.result

    assert result(["127.0.0.48/29"], session_ip) == "pass"
    assert result(["127.0.0.48/29"], f"::ffff:{session_ip}") == "pass"
    assert result(["127.0.0.48/29"], "127.0.0.56") == "fail"


def test_a_policy_with_a_bad_network_does_not_load_and_names_the_key(tmp_path):
    policy = tmp_path / "trainer.toml"
    policy.write_text('extends = "strict"\n[defences.mismatch]\ntrusted_ips = ["127.0.0.48/29", "127.0.0.999"]\n')
    with pytest.raises(ValueError, match=r"mismatch: setting 'trusted_ips': '127.0.0.999'"):
        build_plugin_manager(load_policy(policy))
    result = CliRunner().invoke(main, ["policies", "show", str(policy)])
    assert result.exit_code != 0 and "trusted_ips" in result.output and "127.0.0.999" in result.output
    server = tmp_path / "xc.toml"
    server.write_text('extends = "observe"\n[server]\nxclient = ["127.0.0.0/8", "localhost"]\n')
    with pytest.raises(PolicyError, match=r"line 3: key 'server.xclient': 'localhost' is not an IP address"):
        load_policy(server)


def test_xclient_true_false_or_networks():
    lab = parse_networks(["127.0.0.1"], "")
    assert allows(True, "127.0.0.1", lab) and allows(True, "::ffff:127.0.0.1", lab)
    assert not allows(True, "127.0.0.2", lab) and not allows(False, "127.0.0.1", lab)
    assert allows(["127.0.0.0/8"], "127.0.0.2") and not allows([], "127.0.0.1")


def test_xclient_from_a_listed_network_over_loopback(forgelab_server, tmp_path):
    policy = tmp_path / "xc.toml"
    policy.write_text('extends = "strict"\n[server]\nxclient = ["127.0.0.32/27"]\n')
    lab = forgelab_server(policy=str(policy))
    said = b"EHLO trainer\r\nXCLIENT ADDR=127.0.66.1 HELO=mail.phish.example\r\nQUIT\r\n"
    assert b"you are now 127.0.66.1" in raw_session(lab.smtp.address, said, source="127.0.0.40")
    assert b"550 5.7.0 XCLIENT is allowed only" in raw_session(lab.smtp.address, said, source="127.0.0.1")


def test_strict_lets_a_trusted_network_send_as_the_local_domain(forgelab_server, tmp_path):
    policy = tmp_path / "trainer.toml"
    policy.write_text('extends = "strict"\n[defences.mismatch]\ntrusted_ips = ["127.0.0.48/29"]\n')
    zone = tmp_path / "lab.zone"  # the trainer's relays are in corp.example's SPF too
    zone.write_text(LAB_ZONE.read_text().replace('corp.example. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
                                                 'corp.example. IN TXT "v=spf1 ip4:127.0.0.1 ip4:127.0.0.48/29 -all"'))
    lab = forgelab_server(policy=str(policy), zone_file=zone)
    with smtplib.SMTP(*lab.smtp.address, timeout=10, source_address=("127.0.0.50", 0)) as client:
        client.sendmail("alice@corp.example", ["bob@corp.example"], LOCAL_FROM)
    assert len(lab.store.list("bob", "inbox")) == 1
    with smtplib.SMTP(*lab.smtp.address, timeout=10, source_address=("127.0.0.56", 0)) as client:
        with pytest.raises(smtplib.SMTPException):
            client.sendmail("alice@corp.example", ["bob@corp.example"], LOCAL_FROM)
    assert len(lab.store.list("bob", "inbox")) == 1
