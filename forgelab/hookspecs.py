"""Every hook a forgelab plugin can implement.

Stage hooks (connect, helo, mail from, rcpt to, message) are not firstresult: every
defence runs and every verdict it returns is kept and shown. Each returns a
:class:`forgelab.Verdict`, a list of them, or ``None``. An implementation may take
any subset of a hook's arguments, by name.

Arguments common to many hooks:

- ``session``: :class:`forgelab.core.session.Session` (client address, HELO name, TLS, ...).
- ``envelope``: :class:`forgelab.core.session.Envelope` (MAIL FROM, accepted RCPT TOs so far).
- ``lab``: :class:`forgelab.lab.Lab`, the world the server runs in: local domains,
  users and lists (``lab.directory``) and the DNS resolver every lookup goes through
  (``lab.resolver``).
"""
import pluggy

hookspec = pluggy.HookspecMarker("forgelab")
hookimpl = pluggy.HookimplMarker("forgelab")


@hookspec
def forgelab_connect(session, lab):
    """A client connected, before the banner.

    :param session: the new session; ``session.peer_ip`` is the client address.
    :return: Verdict, list of Verdicts, or None. A ``reject`` action answers the
        connection with ``554`` instead of the banner.

    >>> from forgelab import Verdict, hookimpl
    >>> from forgelab.testing import run_hook
    >>> class Loopback:
    ...     @hookimpl
    ...     def forgelab_connect(self, session):
    ...         return Verdict("loopback", "pass", f"{session.peer_ip} is on this machine")
    >>> run_hook(Loopback(), "forgelab_connect")
    [Verdict(check='loopback', result='pass', reason='127.0.0.1 is on this machine', action=None, details={})]
    """


@hookspec
def forgelab_helo(session, helo, lab):
    """The client said HELO or EHLO.

    :param helo: the name it gave (``session.helo`` holds it too).
    :return: Verdict, list of Verdicts, or None.

    >>> from forgelab import Verdict, hookimpl
    >>> from forgelab.testing import run_hook
    >>> class NoBareName:
    ...     @hookimpl
    ...     def forgelab_helo(self, helo):
    ...         return Verdict("helo-name", "pass" if "." in helo else "fail", f"HELO {helo}")
    >>> [v.header_value() for v in run_hook(NoBareName(), "forgelab_helo", helo="localhost")]
    ['helo-name=fail (HELO localhost)']
    """


@hookspec
def forgelab_mail_from(session, envelope, address, params, lab):
    """The client said ``MAIL FROM``.

    :param address: the reverse-path without angle brackets; ``""`` is the null sender.
    :param params: ESMTP parameters, upper-cased names to values (``{"SIZE": "123"}``).
    :return: Verdict, list of Verdicts, or None.

    >>> from forgelab.testing import run_hook
    >>> [v.result for v in run_hook("spf", "forgelab_mail_from", address="ceo@bank.example")]
    ['fail']
    """


@hookspec
def forgelab_rcpt_to(session, envelope, address, lab):
    """The client said ``RCPT TO``.

    :param address: the forward-path without angle brackets.
    :return: Verdict, list of Verdicts, or None. A rejecting action refuses this
        recipient only; the message goes on with the others.

    >>> from forgelab import Verdict, hookimpl
    >>> from forgelab.testing import run_hook
    >>> class LocalOnly:
    ...     @hookimpl
    ...     def forgelab_rcpt_to(self, address, lab):
    ...         local = lab.directory.is_local_domain(address.rpartition("@")[2])
    ...         return Verdict("local-only", "pass" if local else "fail", address)
    >>> [v.result for v in run_hook(LocalOnly(), "forgelab_rcpt_to", address="bob@elsewhere.example")]
    ['fail']
    """


@hookspec
def forgelab_message(session, envelope, message, raw, lab):
    """The client ended DATA: the whole message is here.

    :param message: an ``email.message.EmailMessage`` parsed with ``email.policy.default``.
    :param raw: the message bytes exactly as received (after dot-unstuffing, before
        forgelab adds any header).
    :return: Verdict, list of Verdicts, or None.

    >>> from forgelab import Verdict, hookimpl
    >>> from forgelab.testing import run_hook
    >>> class NeedsSubject:
    ...     @hookimpl
    ...     def forgelab_message(self, message):
    ...         return Verdict("subject", "pass" if message["Subject"] else "fail", "a Subject: is expected")
    >>> no_subject = "From: a@shop.example\\r\\n\\r\\nhi\\r\\n"
    >>> [v.result for v in run_hook(NeedsSubject(), "forgelab_message", message=no_subject)]
    ['fail']
    """


@hookspec
def forgelab_add_headers(session, envelope, message, verdicts, lab):
    """Headers to prepend to a message about to be stored (e.g. ``Authentication-Results``).

    :param message: the parsed message (``email.message.EmailMessage``), as the defences saw it.
    :param verdicts: every Verdict of the message so far.
    :return: a list of ``(name, value)`` pairs, or None.

    >>> from forgelab import hookimpl
    >>> from forgelab.testing import run_hook
    >>> class Stamp:
    ...     @hookimpl
    ...     def forgelab_add_headers(self, verdicts):
    ...         return [("X-Checks", str(len(verdicts)))]
    >>> run_hook(Stamp(), "forgelab_add_headers", message="Subject: hi\\r\\n\\r\\nhi\\r\\n")
    [[('X-Checks', '0')]]
    """


@hookspec(firstresult=True)
def forgelab_vrfy(session, argument, lab):
    """How to answer ``VRFY``. The first implementation to return a value wins.

    :param argument: what the client asked about, as typed.
    :return: a :class:`forgelab.protocols.smtp.Reply`, or None to let the next plugin answer.

    >>> from forgelab.testing import run_hook
    >>> str(run_hook("disclosure", "forgelab_vrfy", argument="alice", policy="observe"))
    '250 2.1.5 Alice Liddell <alice@corp.example>'
    >>> run_hook("disclosure", "forgelab_vrfy", argument="alice", policy="strict").code
    252
    """


@hookspec(firstresult=True)
def forgelab_expn(session, argument, lab):
    """How to answer ``EXPN``. The first implementation to return a value wins.

    :param argument: the list name, as typed.
    :return: a :class:`forgelab.protocols.smtp.Reply`, or None to let the next plugin answer.

    >>> from forgelab.testing import run_hook
    >>> run_hook("disclosure", "forgelab_expn", argument="nosuchlist", policy="observe").code
    550
    """


@hookspec
def forgelab_delivered(session, envelope, message, action, verdicts, locations, lab):
    """A message was stored (notification; the return value is ignored).

    :param message: the parsed message (``email.message.EmailMessage``).
    :param action: the folded action: ``accept``, ``tag`` or ``quarantine``.
    :param verdicts: every Verdict of the message's session stages and its content.
    :param locations: ``(user, folder, key)`` for each copy written.

    >>> from forgelab import hookimpl
    >>> from forgelab.testing import run_hook
    >>> seen = []
    >>> class Counter:
    ...     @hookimpl
    ...     def forgelab_delivered(self, action, locations):
    ...         seen.append((action, len(locations)))
    >>> run_hook(Counter(), "forgelab_delivered", action="tag", locations=[("alice", "inbox", "k1")])
    []
    >>> seen
    [('tag', 1)]
    """


@hookspec
def forgelab_rejected(session, envelope, stage, reply, verdicts, lab):
    """Something was refused because of a verdict (notification).

    :param stage: ``connect``, ``helo``, ``mail_from``, ``rcpt_to`` or ``message``.
    :param reply: the :class:`forgelab.protocols.smtp.Reply` sent to the client.
    :param verdicts: the verdicts of that stage; the harshest decided.

    >>> from forgelab import hookimpl
    >>> from forgelab.protocols.smtp import Reply
    >>> from forgelab.testing import run_hook
    >>> refused = []
    >>> class Tally:
    ...     @hookimpl
    ...     def forgelab_rejected(self, stage, reply):
    ...         refused.append(f"{stage}: {reply.code}")
    >>> run_hook(Tally(), "forgelab_rejected", stage="rcpt_to", reply=Reply(550, "5.7.1", "no"))
    []
    >>> refused
    ['rcpt_to: 550']
    """
