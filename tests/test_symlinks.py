"""Nothing inside the data directory is reached through a symlink (issue 15, item 10): a link
planted in a mailbox, its folders, its lock file, the event log or the lab key is refused with
a clear reply and a log line naming it, and what it points at stays untouched."""
from __future__ import annotations

import logging
import os
import smtplib
import stat

import pytest

from forgelab.app import Forgelab, Settings
from forgelab.core.events import JsonlLog
from forgelab.store.nofollow import SymlinkRefused
from forgelab.drivers.smtp import DRIVERS
from forgelab.store import MailStore

from line_client import LineClient

pytestmark = pytest.mark.timeout(60)

MESSAGE = b"From: a@shop.example\r\nTo: alice@corp.example\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def outside(tmp_path):
    """A directory outside the data directory, holding one file; the test checks it is unchanged."""
    target = tmp_path / "outside"
    target.mkdir()
    (target / "precious").write_bytes(b"keep me")
    return target


def unchanged(outside) -> bool:
    return os.listdir(outside) == ["precious"] and (outside / "precious").read_bytes() == b"keep me"


def refused_in_log(caplog, path) -> bool:
    return any(f"refusing to follow a symlink at {path}" in r.getMessage() for r in caplog.records)


def send(lab) -> tuple[int, bytes]:
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.ehlo("me.example")
        client.mail("a@shop.example")
        client.rcpt("alice@corp.example")
        return client.data(MESSAGE)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("link", ["alice", "alice/new", "alice/tmp"])
def test_a_delivery_through_a_symlinked_folder_is_refused_451(forgelab_server, outside, caplog, driver, link):
    lab = forgelab_server(driver=driver)
    root = lab.store.root
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    if link != "alice":
        for part in ("tmp", "new", "cur"):
            if f"alice/{part}" != link:
                (root / "alice" / part).mkdir(exist_ok=True)
    (root / link).symlink_to(outside, target_is_directory=True)
    with caplog.at_level(logging.WARNING):
        code, text = send(lab)
    assert code == 451 and b"not stored" in text
    assert unchanged(outside)
    assert refused_in_log(caplog, root / link)
    assert not any(r.exc_info for r in caplog.records)  # one clear line, no traceback beside it
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:  # the server goes on
        assert client.noop()[0] == 250


def test_a_quarantine_folder_or_a_message_file_that_is_a_symlink_is_not_followed(tmp_path, outside):
    store = MailStore(tmp_path / "mail")
    store.deliver("alice", MESSAGE)
    (store.root / "alice" / ".Quarantine").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SymlinkRefused, match="refusing to follow a symlink at .*/alice/.Quarantine"):
        store.deliver("alice", MESSAGE, "quarantine")
    with pytest.raises(SymlinkRefused):
        store.list("alice", "quarantine")
    (store.root / "alice" / "new" / "1.M1P1Q1.evil").symlink_to(outside / "precious")
    with pytest.raises(SymlinkRefused):
        store.read("alice", "inbox", "1.M1P1Q1.evil")
    with store.open_maildrop("alice") as drop:  # POP3 lists only the real message
        assert len(drop) == 1 and b"keep me" not in drop.retrieve(1)
    assert unchanged(outside)


def test_a_symlinked_lock_file_refuses_the_pop3_login(forgelab_server, outside, caplog):
    lab = forgelab_server()
    lab.store.deliver("alice", MESSAGE)
    lock = lab.store.root / "alice" / ".pop3.lock"
    lock.symlink_to(outside / "precious")
    c = LineClient(lab.pop3.address, greet="pop3")
    try:
        with caplog.at_level(logging.WARNING):
            c.pop("USER alice")
            assert c.pop("PASS rabbit-hole") == "-ERR [SYS/TEMP] maildrop not available now; try later"
        assert c.pop("NOOP").startswith("-ERR")  # still not logged in, and the session goes on
    finally:
        c.close()
    assert unchanged(outside)
    assert refused_in_log(caplog, lock)


def test_a_symlinked_pop3_message_is_never_served(forgelab_server, outside):
    lab = forgelab_server()
    lab.store.deliver("alice", MESSAGE)
    (lab.store.root / "alice" / "new" / "2.M1P1Q1.evil").symlink_to(outside / "precious")
    c = LineClient(lab.pop3.address, greet="pop3")
    try:
        c.pop("USER alice")
        assert c.pop("PASS rabbit-hole").startswith("+OK alice's maildrop has 1 message")
        c.send(b"RETR 1\r\n")
        lines = []
        while (line := c.line()) != ".":
            lines.append(line)
        assert "keep me" not in lines
    finally:
        c.close()


@pytest.mark.parametrize("inside", ["events.jsonl", "tls/lab-key.pem", "tls", "mail"])
def test_a_symlink_in_the_data_directory_stops_the_start_with_a_clear_error(tmp_path, outside, inside):
    data = tmp_path / "data"
    (data / inside).parent.mkdir(parents=True, exist_ok=True)
    target = outside if inside in ("tls", "mail") else outside / "precious"
    (data / inside).symlink_to(target)
    with pytest.raises(SymlinkRefused, match=f"refusing to follow a symlink at {data / inside}$"):
        Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=data))
    assert unchanged(outside)


def test_the_event_log_is_opened_without_following_a_symlink(tmp_path, outside):
    (tmp_path / "events.jsonl").symlink_to(outside / "precious")
    with pytest.raises(SymlinkRefused):
        JsonlLog(tmp_path / "events.jsonl")
    assert unchanged(outside)


def test_the_data_directory_is_made_0700_and_may_itself_be_a_symlink(tmp_path, forgelab_server):
    lab = forgelab_server(data_dir=tmp_path / "new-data")
    assert stat.S_IMODE(os.stat(tmp_path / "new-data").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(lab.data_dir / "events.jsonl").st_mode) == 0o600
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)
    lab = forgelab_server(data_dir=tmp_path / "linked")  # the user's choice: followed
    code, _ = send(lab)
    assert code == 250 and len(os.listdir(real / "mail" / "alice" / "new")) == 1


def test_keygen_writes_no_private_key_through_a_symlink(tmp_path, outside):
    from forgelab.auth.keys import keygen

    (tmp_path / "s1._domainkey.shop.example.pem").symlink_to(outside / "precious")
    with pytest.raises(SymlinkRefused):
        keygen("shop.example", "s1", tmp_path, algorithm="ed25519")
    assert unchanged(outside)
    pair = keygen("shop.example", "s2", tmp_path, algorithm="ed25519")
    assert stat.S_IMODE(os.stat(pair.key.path).st_mode) == 0o600
