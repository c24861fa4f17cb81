"""Drive the sans-IO SMTP core with bytes and a simple answering function (no sockets)."""
from forgelab.protocols.smtp import NEED_DATA, Reply, SmtpConnection, events as ev

OK = {
    ev.Helo: Reply(250, None, "hello"),
    ev.Ehlo: Reply(250, None, ["hello", "PIPELINING"]),
    ev.MailFrom: Reply(250, "2.1.0", "ok"),
    ev.RcptTo: Reply(250, "2.1.5", "ok"),
    ev.Data: Reply(354, None, "go ahead"),
    ev.Message: Reply(250, "2.0.0", "queued"),
    ev.Rset: Reply(250, "2.0.0", "reset"),
    ev.Noop: Reply(250, "2.0.0", "ok"),
    ev.Quit: Reply(221, "2.0.0", "bye"),
    ev.Help: Reply(214, "2.0.0", "help"),
    ev.Vrfy: Reply(252, "2.5.0", "maybe"),
    ev.Expn: Reply(252, "2.5.0", "maybe"),
}


def answer(event) -> Reply:
    if isinstance(event, ev.CommandError):
        return event.reply
    return OK[type(event)]


def run(chunks, conn=None, respond=answer):
    """Feed chunks one by one; return (events, output bytes)."""
    conn = conn or SmtpConnection()
    events, out = [], bytearray()
    out += conn.send(Reply(220, None, "lab ESMTP"))
    for chunk in list(chunks) + [b""]:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA or isinstance(event, ev.ConnectionClosed):
                break
            events.append(event)
            out += conn.send(respond(event))
            if conn.closed:
                return events, bytes(out)
    return events, bytes(out)


def codes(out: bytes) -> list[int]:
    return [int(line[:3]) for line in out.split(b"\r\n") if line[3:4] == b" "]
