"""relay: recipients outside the local domains.

forgelab never sends mail off the machine. A policy that accepts a ``relay`` fail
(``open``) keeps such mail in a holding folder, to show what an open relay would
have sent; the others refuse it with ``550 5.7.1``.
"""
from forgelab import Verdict, hookimpl


class Relay:
    name = "relay"

    def __init__(self, settings: dict):
        self.settings = settings

    @hookimpl
    def forgelab_rcpt_to(self, session, address, lab):
        directory = lab.directory
        if directory.local_part(address) is not None:
            return None
        _, domain = directory.split(address)
        if session.authenticated:
            return Verdict(self.name, "pass", f"{session.authenticated} is logged in, so may send to {domain or address}; it will be held, never sent")
        local = ", ".join(directory.domains)
        return Verdict(self.name, "fail",
                       f"relay denied: {domain or address!r} is not a local domain ({local}) and the client is not logged in",
                       details={"recipient": address})
