"""What keeps attacker-written mail from running in the trainer's browser, and who may change the server."""
from __future__ import annotations


# No inline script or style, nothing from elsewhere, no frames, no plugins; the page talks only to us.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; form-action 'self'; frame-src 'none'; frame-ancestors 'none'; "
       "base-uri 'none'; object-src 'none'")

HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


class SecurityHeaders:
    """ASGI middleware: the headers above on every HTTP response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message = {**message, "headers": list(message.get("headers", []))
                           + [(n, v) for n, v in HEADERS if n not in names]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def allowed_hosts(bind_host: str) -> list[str]:
    """Host header values to accept. Checking Host defeats DNS rebinding (a web page that
    renames itself to 127.0.0.1 to read the lab's API); a wildcard bind cannot know its names."""
    if bind_host in ("0.0.0.0", "::", ""):
        return ["*"]
    hosts = list(LOOPBACK_NAMES)
    if bind_host not in hosts:
        hosts.append(bind_host)
    return hosts
