"""Testing forgelab plugins: ``run_hook`` calls one hook of one plugin, no server needed; the
``forgelab_server`` fixture (registered through the ``pytest11`` entry point) runs a whole lab.

    def test_my_defence_alone():
        verdicts = run_hook(MyDefence(), "forgelab_message", message="From: a@bank.example\r\n\r\nhi\r\n")
        assert [v.result for v in verdicts] == ["fail"]

    def test_my_defence(forgelab_server):
        lab = forgelab_server(policy="strict", plugins=["my_defence.py"])
        with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
            client.sendmail("a@shop.example", ["alice@corp.example"], b"Subject: hi\\r\\n\\r\\nhi\\r\\n")
        assert any(e["verdict"]["check"] == "my-defence" for e in lab.recorded("verdict"))
"""
from __future__ import annotations

import functools
import inspect
import threading

import pluggy
import pytest

from . import hookspecs
from .lab.dns import Resolver
from .lab import Lab, load_lab
from .core.message import parse_message
from .core.policy import Policy, load_policy
from .core.registry import BUILTIN, _instantiate, _load_class, import_plugin
from .core.session import Envelope, Session
from .verdicts import collect

# The stage hooks: each returns verdicts, which run_hook gathers into one list.
STAGE_HOOKS = ("forgelab_connect", "forgelab_helo", "forgelab_mail_from", "forgelab_rcpt_to", "forgelab_message")


def run_hook(plugin, hook: str, *, policy: str | Policy = "observe", **arguments):
    """Call one hook of one plugin as the server would, and return what it answered.

    :param plugin: an object or module with ``@hookimpl`` functions; a class, or a module with
        ``forgelab_plugin(settings)``, is built with ``policy``'s ``[defences.NAME]`` table; a
        string is a built-in defence (``"spf"``) or what ``--plugin`` takes.
    :param hook: ``"forgelab_message"``, or ``"message"`` for short.
    :param policy: a shipped name, a policy file or a ``Policy``: whose settings the plugin gets.
    :param arguments: the hook's arguments. Any left out is made up: ``session`` from 127.0.0.1
        (``helo`` as its HELO name), an ``envelope`` with ``address`` as MAIL FROM, the shipped
        ``lab`` with its DNS zone; ``message`` may be text or bytes (``raw`` is then made from it).
    :return: a list of Verdicts for a stage hook (connect, helo, mail from, rcpt to, message);
        the first answer for ``vrfy`` and ``expn``; for the others, the list of what each returned.

    >>> from forgelab import Verdict, hookimpl
    >>> class NoLocalhost:
    ...     @hookimpl
    ...     def forgelab_helo(self, helo):
    ...         return Verdict("helo", "fail" if helo == "localhost" else "pass", f"said {helo}")
    >>> [v.header_value() for v in run_hook(NoLocalhost(), "helo", helo="localhost")]
    ['helo=fail (said localhost)']
    """
    hook = hook if hook.startswith("forgelab_") else f"forgelab_{hook}"
    spec = getattr(hookspecs, hook, None)
    if spec is None:
        raise ValueError(f"{hook} is not a forgelab hook; the hooks are listed in docs/plugins.md")
    policy = policy if isinstance(policy, Policy) else load_policy(policy)
    pm = pluggy.PluginManager("forgelab")
    pm.add_hookspecs(hookspecs)
    pm.register(_built(plugin, policy))
    pm.check_pending()  # a misspelt hook name fails here, as at the server's start
    returned = getattr(pm.hook, hook)(**_arguments(hook, spec, arguments))
    return collect(returned) if hook in STAGE_HOOKS else returned


def _built(plugin, policy: Policy):
    if isinstance(plugin, str):
        plugin = _load_class(BUILTIN[plugin]) if plugin in BUILTIN else import_plugin(plugin)
    if inspect.isclass(plugin) or callable(getattr(plugin, "forgelab_plugin", None)):
        return _instantiate(plugin, policy.defences.get(getattr(plugin, "name", None), {}))
    return plugin


@functools.cache
def _shipped_lab() -> Lab:
    """The shipped lab world with its zone (loaded once: hooks only read it)."""
    lab = load_lab()
    lab.resolver = Resolver.lab()
    return lab


def _arguments(hook: str, spec, given: dict) -> dict:
    """Every argument of ``spec``: the given ones, the rest made up as the server would make them."""
    args = dict(given)
    if isinstance(args.get("message"), (str, bytes)):
        raw = args["message"].encode() if isinstance(args["message"], str) else args["message"]
        args.setdefault("raw", raw)
        args["message"] = parse_message(raw)
    helo = args.get("helo", "client.example")
    session = args.setdefault("session", Session(peer_ip="127.0.0.1", real_peer_ip="127.0.0.1", helo=helo))
    made_up = {"helo": helo, "address": "", "params": {}, "argument": "", "verdicts": [], "action": "accept",
               "locations": [], "stage": hook.removeprefix("forgelab_"), "reply": None, "raw": b"",
               "lab": _shipped_lab(), "session": session}
    if "envelope" not in args:
        made_up["envelope"] = Envelope(mail_from=args.get("address", "") if hook == "forgelab_mail_from" else "")
    return {name: args[name] if name in args else made_up.get(name) for name in inspect.signature(spec).parameters}


class EventRecorder:
    """Keeps every event of the bus, for assertions."""

    def __init__(self):
        self.events: list[dict] = []
        self._cond = threading.Condition()

    def __call__(self, record: dict) -> None:
        with self._cond:
            self.events.append(record)
            self._cond.notify_all()

    def of(self, kind: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e["kind"] == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        """Block until ``count`` events of ``kind`` arrived (the server may still be writing the last reply)."""
        with self._cond:
            self._cond.wait_for(lambda: len([e for e in self.events if e["kind"] == kind]) >= count, timeout)
            return [e for e in self.events if e["kind"] == kind]


@pytest.fixture
def forgelab_server(tmp_path_factory):
    """A factory: ``forgelab_server(policy="observe", plugins=(), **settings) -> Forgelab``.

    Starts SMTP and POP3 on free 127.0.0.1 ports with a fresh data directory; every
    server started is stopped after the test. ``lab.recorded(kind)`` lists events seen.
    """
    from .app import Forgelab, Settings

    started = []

    def start(policy="observe", plugins=(), **settings):
        data_dir = settings.pop("data_dir", None) or tmp_path_factory.mktemp("forgelab")
        app = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=data_dir, policy=policy,
                                plugins=tuple(plugins), **settings))
        recorder = EventRecorder()
        app.bus.subscribe(recorder)
        app.recorder = recorder
        app.recorded = recorder.of
        app.start()
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()
