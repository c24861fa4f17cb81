"""The Maildir store: durable delivery, folders, names, POP3 maildrops and their lock."""
from __future__ import annotations

import gc
import mailbox
import os
import re
import stat
import subprocess
import sys
import threading
import time

import pytest

from forgelab.protocols.pop3.wire import to_crlf
from forgelab.store import MaildropLocked, MailStore, MessageDeleted, NoSuchMessage

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def store(tmp_path):
    return MailStore(tmp_path / "mail")


def files(path):
    return sorted(os.listdir(path))


# -- delivery ----------------------------------------------------------------------------

def test_deliver_puts_the_whole_message_in_new_and_nothing_in_tmp(store):
    key = store.deliver("alice", MSG)
    base = store.root / "alice"
    assert files(base / "new") == [key]
    assert files(base / "tmp") == []
    assert (base / "new" / key).read_bytes() == MSG
    assert f",S={len(MSG)}," in key
    assert store.read("alice", "inbox", key) == MSG


def test_delivery_fsyncs_the_file_before_the_rename_and_the_directory_after(store, monkeypatch):
    calls = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        st = os.fstat(fd)
        calls.append(("fsync-dir" if stat.S_ISDIR(st.st_mode) else "fsync-file", st.st_size))
        real_fsync(fd)

    def rename(src, dst):
        calls.append(("rename", os.path.basename(os.path.dirname(src)), os.path.basename(os.path.dirname(dst))))
        real_rename(src, dst)

    store.deliver("alice", b"warm up")  # creates the Maildir (fsyncs its parents too)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    store.deliver("alice", MSG)
    assert calls[0] == ("fsync-file", len(MSG))  # fully written when flushed
    assert calls[1] == ("rename", "tmp", "new")
    assert calls[2][0] == "fsync-dir"
    assert len(calls) == 3


def test_a_failed_write_leaves_nothing_behind(store, monkeypatch):
    store.deliver("alice", b"first")

    def broken(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        store.deliver("alice", MSG)
    assert files(store.root / "alice" / "tmp") == []
    assert len(files(store.root / "alice" / "new")) == 1


def test_concurrent_deliveries_from_threads_are_all_kept(store):
    keys, errors = [], []

    def worker(n):
        try:
            for i in range(40):
                body = f"Subject: {n}-{i}\r\n\r\nbody {n} {i}\r\n".encode()
                keys.append((store.deliver("alice", body), body))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert len(keys) == 320 and len({k for k, _ in keys}) == 320
    listed = dict(store.list("alice"))
    assert len(listed) == 320
    for key, body in keys:
        assert store.read("alice", "inbox", key) == body
        assert listed[key] == len(body)
    assert files(store.root / "alice" / "tmp") == []


def test_list_is_in_delivery_order(store):
    keys = [store.deliver("alice", f"m{i}\r\n".encode()) for i in range(25)]
    assert [k for k, _ in store.list("alice")] == keys


@pytest.mark.parametrize("name", ["../x", "a/b", "a\0b", "", ".hidden", "Alice", "..", "x/../../etc"])
def test_user_names_that_could_reach_the_file_system_are_refused(store, name):
    with pytest.raises(ValueError):
        store.deliver(name, MSG)
    with pytest.raises(ValueError):
        store.list(name)
    with pytest.raises(ValueError):
        store.open_maildrop(name)
    assert files(store.root) == []


def test_message_keys_cannot_escape_the_folder(store):
    store.deliver("alice", MSG)
    for key in ("../../etc/passwd", "a/b", ".pop3.lock", "x\0y"):
        with pytest.raises(ValueError):
            store.read("alice", "inbox", key)
    with pytest.raises(KeyError):
        store.read("alice", "inbox", "123.no-such")


def test_quarantine_is_a_maildirpp_folder(store):
    key = store.deliver("alice", MSG, folder="quarantine")
    q = store.root / "alice" / ".Quarantine"
    assert files(q / "new") == [key]
    assert (q / "maildirfolder").exists()
    assert store.list("alice", "quarantine") == [(key, len(MSG))]
    assert store.list("alice") == []
    assert store.read("alice", "quarantine", key) == MSG
    with pytest.raises(ValueError):
        store.deliver("alice", MSG, folder="Trash")
    # the stdlib reads the same layout
    box = mailbox.Maildir(store.root / "alice", create=False)
    assert box.list_folders() == ["Quarantine"]
    assert box.get_folder("Quarantine").get_bytes(key) == MSG


def test_relay_hold_keeps_mail_apart_from_every_user(store):
    key = store.hold_relay(MSG)
    assert files(store.root / "_relay-hold" / "new") == [key]
    assert store.list_relay() == [(key, len(MSG))]
    assert store.read_relay(key) == MSG
    assert store.users() == []
    assert store.read_at(("_relay-hold", "inbox", key)) == MSG  # a location as the pipeline reports it
    mine = store.deliver("alice", MSG + b"mine\r\n", "quarantine")
    assert store.read_at(("alice", "quarantine", mine)) == MSG + b"mine\r\n"
    with pytest.raises(KeyError):
        store.read_at(("alice", "inbox", key))  # the relay's key is no user's message


def test_stdlib_mailbox_reads_the_inbox(store):
    key = store.deliver("alice", MSG)
    box = mailbox.Maildir(store.root / "alice", create=False)
    assert box.keys() == [key]
    assert box[key]["Subject"] == "hi"


# -- POP3 maildrop ------------------------------------------------------------------------

def test_maildrop_snapshot_numbers_sizes_and_retrieval(store):
    bodies = [MSG, b"Subject: bare\n\nlf only\n", b"no final newline"]
    for body in bodies:
        store.deliver("alice", body)
    with store.open_maildrop("alice") as md:
        assert len(md) == 3
        sizes = [md.size(n) for n in (1, 2, 3)]
        assert sizes == [len(to_crlf(b)) for b in bodies]  # octets as RETR sends them
        assert md.stat() == (3, sum(sizes))
        assert [md.retrieve(n) for n in (1, 2, 3)] == bodies
        for bad in (0, 4, -1):
            with pytest.raises(NoSuchMessage):
                md.size(bad)


def test_mail_arriving_during_a_session_waits_for_the_next_one(store):
    store.deliver("alice", MSG)
    md = store.open_maildrop("alice")
    store.deliver("alice", b"late\r\n")
    assert md.stat()[0] == 1
    md.close()
    with store.open_maildrop("alice") as md:
        assert md.stat()[0] == 2
        assert md.retrieve(2) == b"late\r\n"


def test_uids_are_stable_across_sessions_and_store_instances(store, tmp_path):
    for i in range(5):
        store.deliver("alice", f"m{i}\r\n".encode())
    with store.open_maildrop("alice") as md:
        first = [md.uid(n) for n in range(1, 6)]
    with store.open_maildrop("alice") as md:
        assert [md.uid(n) for n in range(1, 6)] == first
    with MailStore(store.root).open_maildrop("alice") as md:
        assert [md.uid(n) for n in range(1, 6)] == first
    assert len(set(first)) == 5
    assert all(re.fullmatch(r"[\x21-\x7e]{1,70}", uid) for uid in first)


def test_a_file_dropped_in_by_another_tool_is_measured_and_gets_a_uid(store):
    store.deliver("alice", MSG)
    (store.root / "alice" / "cur" / "0.foreign:2,S").write_bytes(b"a\nb\n")
    with store.open_maildrop("alice") as md:
        assert md.stat()[0] == 2
        assert md.retrieve(1) == b"a\nb\n"  # time 0 sorts first
        assert md.size(1) == 6
        assert md.uid(1) == "0.foreign"


def test_deletion_happens_only_on_commit(store):
    keys = [store.deliver("alice", f"m{i}\r\n".encode()) for i in range(3)]
    md = store.open_maildrop("alice")
    md.delete(2)
    assert md.stat() == (2, 8)
    with pytest.raises(MessageDeleted):
        md.retrieve(2)
    with pytest.raises(MessageDeleted):
        md.delete(2)
    md.reset()
    assert md.stat() == (3, 12)
    md.delete(2)
    md.close()  # session ended without QUIT: nothing goes
    assert [k for k, _ in store.list("alice")] == keys

    md = store.open_maildrop("alice")
    md.delete(1)
    md.delete(3)
    assert len(store.list("alice")) == 3  # marks only
    assert md.commit() == (2, 0)
    assert [k for k, _ in store.list("alice")] == [keys[1]]
    assert md.closed


def test_the_lock_is_exclusive_and_released_on_close_commit_and_collection(store):
    store.deliver("alice", MSG)
    md = store.open_maildrop("alice")
    with pytest.raises(MaildropLocked):
        store.open_maildrop("alice")
    with pytest.raises(MaildropLocked):
        MailStore(store.root).open_maildrop("alice")  # another store object, same files
    store.open_maildrop("bob").close()  # other users are not affected
    md.close()
    md.close()  # twice is fine

    md = store.open_maildrop("alice")
    md.commit()
    store.open_maildrop("alice").close()

    md = store.open_maildrop("alice")
    del md
    gc.collect()
    store.open_maildrop("alice").close()


def test_the_lock_excludes_another_process(store):
    store.deliver("alice", MSG)
    probe = ("import sys; from forgelab.store import MailStore, MaildropLocked\n"
             "try:\n    MailStore(sys.argv[1]).open_maildrop('alice').close(); print('open')\n"
             "except MaildropLocked:\n    print('locked')\n")
    run = lambda: subprocess.run([sys.executable, "-c", probe, str(store.root)], capture_output=True,
                                 text=True, timeout=30).stdout.strip()
    with store.open_maildrop("alice"):
        assert run() == "locked"
    assert run() == "open"


def _fill(store, count):
    for i in range(count):
        store.deliver("alice", b"Subject: x\r\n\r\n" + b"y" * (i % 50) + b"\r\n")


def _per_call(md, calls=3000):
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(calls):
            md.stat()
            md.size(1 + i % 500)
            md.uid(1 + i % 500)
        best = min(best, time.perf_counter() - start)
    return best / calls


def test_stat_and_list_cost_does_not_grow_with_the_maildrop(tmp_path, monkeypatch):
    small, big = MailStore(tmp_path / "small", fsync=False), MailStore(tmp_path / "big", fsync=False)
    _fill(small, 1000)
    _fill(big, 20000)
    with small.open_maildrop("alice") as md_small, big.open_maildrop("alice") as md_big:
        assert md_big.stat()[0] == 20000
        scans = []
        monkeypatch.setattr(os, "listdir", lambda *a: scans.append(a) or [])
        monkeypatch.setattr(os, "scandir", lambda *a: scans.append(a) or iter(()))
        t_small, t_big = _per_call(md_small), _per_call(md_big)
        md_big.delete(7)
        assert md_big.stat()[0] == 19999
        assert scans == []  # no directory listing after the snapshot
    # Timings only as a loose sanity bound (CI machines are noisy); the scans check above is the proof.
    assert t_big < 20 * t_small + 1e-4


def test_delivery_recreates_a_maildir_removed_behind_its_back(store):
    import shutil

    store.deliver("alice", MSG)
    shutil.rmtree(store.root / "alice")
    key = store.deliver("alice", MSG)
    assert store.list("alice") == [(key, len(MSG))]


def test_delivery_to_several_recreates_a_quarantine_removed_behind_its_back(store):
    import shutil

    store.deliver_many(["alice", "bob"], MSG, "quarantine")
    shutil.rmtree(store.root / "bob")
    keys = store.deliver_many(["alice", "bob"], MSG, "quarantine")
    assert store.list("bob", "quarantine") == [(keys[1], len(MSG))]
    assert (store.root / "bob" / ".Quarantine" / "maildirfolder").is_file()


# -- one message for several users --------------------------------------------------------

def test_deliver_many_writes_once_and_links_the_same_file_into_each_inbox(store):
    keys = store.deliver_many(["alice", "bob", "carol"], MSG)
    assert len(keys) == 3
    inodes = set()
    for user, key in zip(["alice", "bob", "carol"], keys):
        assert store.read(user, "inbox", key) == MSG
        assert files(store.root / user / "tmp") == []
        inodes.add(os.stat(store.root / user / "new" / key).st_ino)
    assert len(inodes) == 1  # one file on disk, three names
    with store.open_maildrop("bob") as drop:  # POP3 sees an ordinary message
        assert drop.retrieve(1) == MSG
        drop.delete(1)
        drop.commit()
    assert store.list("bob") == [] and store.read("alice", "inbox", keys[0]) == MSG


def test_deliver_many_flushes_the_file_once_then_every_new_directory(store, monkeypatch):
    calls = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd):
        st = os.fstat(fd)
        calls.append("fsync-dir" if stat.S_ISDIR(st.st_mode) else ("fsync-file", st.st_size))
        real_fsync(fd)

    def link(src, dst):
        calls.append(("link", os.path.basename(os.path.dirname(src)), os.path.basename(os.path.dirname(dst))))
        real_link(src, dst)

    store.deliver_many(["alice", "bob"], b"warm up")  # creates the Maildirs
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    store.deliver_many(["alice", "bob", "carol"], MSG, "quarantine")
    creating = calls.index(("fsync-file", len(MSG)))  # carol's quarantine folder is made first
    assert calls[creating + 1:] == [("link", "tmp", "new")] * 3 + ["fsync-dir"] * 3
    assert all(files(store.root / u / ".Quarantine" / "tmp") == [] for u in ("alice", "bob", "carol"))
    assert all(store.list(u, "quarantine") for u in ("alice", "bob", "carol"))


def test_deliver_many_leaves_nothing_when_one_copy_fails(store, monkeypatch):
    store.deliver_many(["alice", "bob", "carol"], b"first")
    real_link = os.link
    made = []

    def link(src, dst):
        if len(made) == 2:
            raise OSError(28, "No space left on device")
        made.append(dst)
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(OSError):
        store.deliver_many(["alice", "bob", "carol"], MSG)
    for user in ("alice", "bob", "carol"):
        assert len(store.list(user)) == 1  # only the first message: all or nothing
        assert files(store.root / user / "tmp") == []


def test_deliver_many_copies_where_a_hard_link_is_not_possible(store, monkeypatch):
    real_link = os.link

    def link(src, dst):
        if "/bob/" in dst:
            raise OSError(18, "Invalid cross-device link")  # EXDEV
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    keys = store.deliver_many(["alice", "bob"], MSG)
    assert [store.read(u, "inbox", k) for u, k in zip(["alice", "bob"], keys)] == [MSG, MSG]
    alice, bob = (os.stat(store.root / u / "new" / k) for u, k in zip(["alice", "bob"], keys))
    assert alice.st_ino != bob.st_ino
    assert files(store.root / "alice" / "tmp") == [] and files(store.root / "bob" / "tmp") == []


def test_deliver_many_checks_every_name_before_writing(store):
    with pytest.raises(ValueError):
        store.deliver_many(["alice", "../evil"], MSG)
    assert not (store.root / "alice").exists() or store.list("alice") == []


def test_writes_run_together_are_all_written_before_the_first_flush_and_share_a_directory_fsync(store, monkeypatch):
    store.deliver("alice", b"warm up")
    store.deliver("bob", b"warm up")
    calls = []
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            calls.append("fsync-dir")
        else:  # how many messages are written (in tmp/) when a file is flushed
            calls.append(("fsync-file", len(files(store.root / "alice" / "tmp") + files(store.root / "bob" / "tmp"))))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    keys = store.run_together([store.delivering("alice", MSG), store.delivering("alice", MSG + b"2"),
                               store.delivering("bob", MSG)])
    assert calls == [("fsync-file", 3)] * 3 + ["fsync-dir"] * 2  # alice's new/ once for both of hers
    assert [store.read(user, "inbox", key) for user, key in zip(["alice", "alice", "bob"], keys)] == [MSG, MSG + b"2", MSG]
    assert files(store.root / "alice" / "tmp") == [] and files(store.root / "bob" / "tmp") == []


def test_a_write_that_fails_among_several_costs_only_its_own_message(store, monkeypatch):
    store.deliver("alice", b"warm up")
    real_fsync, flushed = os.fsync, []

    def fsync(fd):
        flushed.append(fd)
        if len(flushed) == 2:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    results = store.run_together([store.delivering("alice", b"one"), store.delivering("alice", b"two"),
                                  store.delivering("alice", b"three")])
    assert isinstance(results[1], OSError) and all(isinstance(r, str) for r in (results[0], results[2]))
    stored = {store.read("alice", "inbox", key) for key, _ in store.list("alice")}
    assert stored == {b"warm up", b"one", b"three"}
    assert files(store.root / "alice" / "tmp") == []
