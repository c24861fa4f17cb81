"""A telnet-like test client: send a line, read one SMTP reply or one POP3 status line; can switch to TLS."""
from __future__ import annotations

import socket
import ssl


class LineClient:
    def __init__(self, address, source: str | None = None, timeout: float = 10, greet: str | None = None):
        """``greet="smtp"`` or ``"pop3"`` reads the server's greeting into ``.greeting``."""
        self.sock = socket.create_connection(address, timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply() if greet == "smtp" else self.line() if greet == "pop3" else None

    def reply(self) -> tuple[int, str]:
        """One whole SMTP reply: (code, text lines without the code)."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError(lines)
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(x[4:] for x in lines)

    def line(self) -> str:
        data = self.file.readline()
        if not data:
            raise EOFError
        return data.decode("utf-8", "replace").rstrip("\r\n")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, text: str | bytes) -> tuple[int, str]:
        self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.reply()

    def pop(self, text: str) -> str:
        self.send(text.encode() + b"\r\n")
        return self.line()

    def start_tls(self, context: ssl.SSLContext, hostname: str = "127.0.0.1") -> None:
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname=hostname)
        self.file = self.sock.makefile("rb")

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.file.close()
        self.sock.close()
