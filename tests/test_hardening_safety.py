"""No way in: names never reach outside the data directory, passwords are hashed, loopback by
default with a loud warning otherwise, no outbound connection ever, plugins only when named."""
from __future__ import annotations

import poplib
import smtplib
import socket
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from forgelab.core import registry
from forgelab.app import Settings
from forgelab.lab.directory import DirectoryError, check_password, hash_password, parse_directory
from forgelab.lab import load_lab
from forgelab.core.policy import load_policy
from forgelab.store import MailStore

pytestmark = pytest.mark.timeout(30)

EVIL_NAMES = ["../evil", "..", ".", "/etc/passwd", "a/b", "a\0b", ".hidden", "", "x" * 200, "ALICE/../../x",
              "..\\..\\win", "alice\n", "é"]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name", EVIL_NAMES)
def test_the_store_refuses_names_that_could_leave_its_root(tmp_path, name):
    store = MailStore(tmp_path / "mail")
    with pytest.raises(ValueError):
        store.deliver(name, b"Subject: x\r\n\r\nx\r\n")
    with pytest.raises(ValueError):
        store.open_maildrop(name)
    assert tree(tmp_path) == {"mail"}


@pytest.mark.parametrize("name", ["../evil", "/root", "a b", "a\0b", ".x", "Bob"])
def test_a_users_file_with_an_unsafe_name_is_refused(name):
    with pytest.raises(DirectoryError, match="user names"):
        parse_directory({"domains": ["corp.example"], "users": {name: {"password": "x"}}})


def test_passwords_are_kept_as_scrypt_hashes_and_checked_in_constant_time():
    stored = hash_password("rabbit-hole")
    assert stored.startswith("scrypt$") and "rabbit-hole" not in stored
    assert hash_password("rabbit-hole") != stored  # salted
    assert check_password("rabbit-hole", stored) and not check_password("rabbit-hol", stored)
    assert not check_password("rabbit-hole", "md5$00$00") and not check_password("x", "garbage")
    import inspect
    from forgelab.lab import directory
    assert "compare_digest" in inspect.getsource(directory.check_password)
    lab = load_lab()
    assert all(u.password_hash.startswith("scrypt$") for u in lab.directory.users.values())


def test_hostile_names_over_the_wire_create_nothing_outside_the_data_dir(forgelab_server, tmp_path):
    app = forgelab_server(data_dir=tmp_path / "data")
    before = tree(tmp_path)
    with smtplib.SMTP(*app.smtp.address, timeout=10) as smtp:
        smtp.ehlo("x.example")
        smtp.mail("a@shop.example")
        for name in ["../../escape", "..", "/etc/passwd", "x/../../y", "%2e%2e"]:
            code, _ = smtp.rcpt(f"<{name}@corp.example>")
            assert code >= 500
        smtp.rset()
    for name in ["../../escape", "/tmp/x", "..", "a\x00b"]:
        pop = poplib.POP3(*app.pop3.address, timeout=10)
        try:
            pop._putcmd(f"USER {name}")
            pop._getresp()
            with pytest.raises(poplib.error_proto):
                pop.pass_("whatever")
        finally:
            pop.close()
    created = tree(tmp_path) - before
    assert all(p.startswith("data") for p in created), created
    assert not (tmp_path / "escape").exists()


def test_servers_bind_loopback_by_default():
    settings = Settings()
    assert settings.smtp.startswith("127.0.0.1:") and settings.pop3.startswith("127.0.0.1:")
    from forgelab.cli.main import serve
    defaults = {p.name: p.default for p in serve.params}
    assert defaults["smtp"].startswith("127.0.0.1:") and defaults["pop3"].startswith("127.0.0.1:")


def test_a_loud_warning_when_bound_elsewhere(forgelab_server):
    from forgelab.cli.main import banner

    app = forgelab_server()
    assert "WARNING" not in banner(app)
    exposed = SimpleNamespace(lab=app.lab, context=app.context, data_dir=app.data_dir, web=None,
                              smtp=SimpleNamespace(address=("0.0.0.0", 1025)),
                              pop3=SimpleNamespace(address=("192.0.2.7", 1110)))
    text = banner(exposed)
    assert "WARNING: SMTP listens on 0.0.0.0" in text and "WARNING: POP3 listens on 192.0.2.7" in text


# Audit hooks cannot be removed: this one only records while a test switches it on.
_recording = threading.Event()
_connects: list = []


def _audit(event, args):
    if _recording.is_set() and event in ("socket.connect", "socket.getaddrinfo", "socket.sendto"):
        _connects.append((event, args[1] if event != "socket.getaddrinfo" else args[0]))


sys.addaudithook(_audit)


def test_forgelab_never_connects_out_not_even_for_an_open_relay(forgelab_server):
    app = forgelab_server(policy="open")
    address = app.smtp.address
    # Connect first, then record: only what the server does while handling mail counts.
    smtp = smtplib.SMTP(*address, timeout=10)
    _connects.clear()
    _recording.set()
    try:
        smtp.ehlo("sender.example")
        smtp.sendmail("someone@bank.example", ["victim@gmail.com", "alice@corp.example"],
                      b"From: ceo@bank.example\r\nSubject: wire\r\n\r\nsend money\r\n")
        smtp.quit()
        socket.create_connection(app.pop3.address, timeout=5).close()  # proves the hook records
    finally:
        _recording.clear()
    assert len(app.store.list_relay()) == 1  # held, never sent
    assert ("socket.connect", app.pop3.address) in _connects
    outside = [c for c in _connects if not (isinstance(c[1], tuple) and str(c[1][0]).startswith("127."))
               and c[1] not in ("127.0.0.1", "localhost")]
    assert outside == [], outside


def test_plugins_load_only_when_named(monkeypatch):
    def boom():
        raise AssertionError("installed plugins were scanned without being named")

    monkeypatch.setattr(registry, "_entry_points", boom)
    pm = registry.build_plugin_manager(load_policy("strict"))
    names = {name for name, _ in registry.describe(pm)}
    assert names <= set(registry.BUILTIN)


def test_a_login_for_an_unknown_user_costs_one_scrypt_like_a_known_one(monkeypatch):
    import forgelab.lab.directory as directory_module

    directory = parse_directory({"domains": ["corp.example"], "users": {"alice": {"name": "A", "password": "right"}}})
    directory.authenticate("warm-up", "x")  # the dummy hash is made once, not per login
    calls = []
    real = directory_module.hashlib.scrypt
    monkeypatch.setattr(directory_module.hashlib, "scrypt", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert directory.authenticate("alice", "right").name == "alice"
    assert directory.authenticate("alice", "wrong") is None
    assert directory.authenticate("mallory", "right") is None
    assert directory.authenticate("mallory@corp.example", "right") is None
    assert calls == [1, 1, 1, 1]
