"""The classic telnet worksheet, replayed byte for byte over real sockets, SMTP then POP3."""
import re
import socket

SMTP_SESSION = [
    (b"HELO some.where.com\r\n", b"250 "),
    (b"MAIL FROM <>\r\n", b"250 2.1.0"),
    (b"RCPT TO <alice@corp.example>\r\n", b"250 2.1.5"),
    (b"DATA\r\n", b"354 "),
    (b"From: womble@wimbledon.com\r\nTo: fred@flintstone.org\r\nSubject: Greetings\r\n"
     b"Date: Mon, 17 Jun 96 11:24 PDT\r\n\r\nHello!!\r\n.. Count the dots\r\n.\r\n", b"250 2.0.0"),
    (b"QUIT\r\n", b"221 2.0.0"),
]


def read_reply(sock: socket.socket, buffer: bytearray) -> bytes:
    """One whole (possibly multi-line) SMTP reply."""
    while True:
        for m in re.finditer(rb"(?m)^\d{3} [^\r\n]*\r\n", bytes(buffer)):
            end = m.end()
            reply = bytes(buffer[:end])
            del buffer[:end]
            return reply
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed; got {bytes(buffer)!r}")
        buffer += chunk


def pop3_line(sock, buffer) -> bytes:
    while b"\r\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\r\n")
    buffer[:] = rest
    return line


def pop3_multiline(sock, buffer) -> list[bytes]:
    lines = []
    while (line := pop3_line(sock, buffer)) != b".":
        lines.append(line)
    return lines


def test_worksheet_smtp_then_pop3(forgelab_server):
    lab = forgelab_server(policy="observe")
    with socket.create_connection(lab.smtp.address, timeout=10) as sock:
        buf = bytearray()
        assert read_reply(sock, buf).startswith(b"220 ")
        for sent, expected in SMTP_SESSION:
            sock.sendall(sent)
            assert read_reply(sock, buf).startswith(expected), sent

    with socket.create_connection(lab.pop3.address, timeout=10) as sock:
        buf = bytearray()
        assert pop3_line(sock, buf).startswith(b"+OK")
        for command, expected in [(b"USER alice", b"+OK"), (b"PASS rabbit-hole", b"+OK"), (b"STAT", b"+OK 1 "),
                                  (b"RETR 1000", b"-ERR no such message")]:
            sock.sendall(command + b"\r\n")
            assert pop3_line(sock, buf).startswith(expected), command
        sock.sendall(b"retr 1\r\n")
        assert pop3_line(sock, buf).startswith(b"+OK")
        message = pop3_multiline(sock, buf)
        # The student's ".. Count the dots" was stored as ". Count the dots" and is byte-stuffed again on the wire.
        assert b".. Count the dots" in message
        assert any(line.startswith(b"Received: from some.where.com") for line in message)
        assert b"Subject: Greetings" in message
        sock.sendall(b"quit\r\n")
        assert pop3_line(sock, buf).startswith(b"+OK")


def test_worksheet_experiments_help_vrfy_expn(forgelab_server):
    lab = forgelab_server(policy="observe")
    with socket.create_connection(lab.smtp.address, timeout=10) as sock:
        buf = bytearray()
        read_reply(sock, buf)
        sock.sendall(b"HELP\r\n")
        assert b"VRFY" in read_reply(sock, buf)
        sock.sendall(b"VRFY alice\r\n")
        assert read_reply(sock, buf) == b"250 2.1.5 Alice Liddell <alice@corp.example>\r\n"
        sock.sendall(b"VRFY nobody\r\n")
        assert read_reply(sock, buf).startswith(b"550 5.1.1")
        sock.sendall(b"EXPN staff\r\n")
        reply = read_reply(sock, buf)
        assert reply.count(b"\r\n") == 3 and b"Bob Cratchit <bob@corp.example>" in reply


def test_pop3_has_no_help_and_commands_are_case_insensitive(forgelab_server):
    lab = forgelab_server()
    with socket.create_connection(lab.pop3.address, timeout=10) as sock:
        buf = bytearray()
        pop3_line(sock, buf)
        sock.sendall(b"HELP\r\n")
        assert pop3_line(sock, buf).startswith(b"-ERR")
        sock.sendall(b"uSeR alice\r\npAsS rabbit-hole\r\nstat\r\n")
        assert pop3_line(sock, buf).startswith(b"+OK")
        assert pop3_line(sock, buf).startswith(b"+OK")
        assert pop3_line(sock, buf) == b"+OK 0 0"
