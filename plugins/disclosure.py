"""disclosure: how VRFY and EXPN answer.

Settings: ``mode`` = ``disclose`` (the user's full name, the list's members: a user
oracle, as old servers gave), ``hide`` (``252`` for everyone, no names: RFC 5321
3.5.3) or ``disable`` (``502``).
"""
from forgelab import hookimpl
from forgelab.protocols.smtp import Reply

MODES = ("disclose", "hide", "disable")


class Disclosure:
    name = "disclosure"

    def __init__(self, settings: dict):
        self.mode = settings.get("mode", "hide")
        if self.mode not in MODES:
            raise ValueError(f"disclosure: mode must be one of {', '.join(MODES)}, not {self.mode!r}")

    def _same_for_everyone(self, verb: str) -> Reply | None:
        if self.mode == "disable":
            return Reply(502, "5.5.1", f"{verb} is disabled here")
        if self.mode == "hide":  # the same words for every argument: no oracle
            what = "that user" if verb == "VRFY" else "what that list holds"
            return Reply(252, "2.5.0", f"Cannot confirm or deny {what}, but will accept the message and try")
        return None

    @hookimpl
    def forgelab_vrfy(self, argument, lab):
        reply = self._same_for_everyone("VRFY")
        if reply:
            return reply
        directory = lab.directory
        user = directory.find(argument)
        if user:
            return Reply(250, "2.1.5", f"{user.full_name} <{directory.address(user)}>")
        members = directory.mailing_list(argument)
        if members is not None:
            return Reply(250, "2.1.5", f"{argument.strip('<> ')} is a mailing list; try EXPN")
        return Reply(550, "5.1.1", f"No such user here: {argument}")

    @hookimpl
    def forgelab_expn(self, argument, lab):
        reply = self._same_for_everyone("EXPN")
        if reply:
            return reply
        directory = lab.directory
        members = directory.mailing_list(argument)
        if members is None:
            return Reply(550, "5.1.1", f"No such mailing list here: {argument}")
        lines = []
        for member in members:
            user = directory.user(member)
            lines.append(f"{user.full_name} <{directory.address(user)}>" if user else f"<{member}>")
        return Reply(250, "2.1.5", lines or ["(the list is empty)"])
