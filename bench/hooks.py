"""CPU per message of each defence, in-process: where the bench's observe time goes.

    python bench/hooks.py                # policy observe, the bench's signed message
    python bench/hooks.py --policy open  # or any shipped policy
    python bench/hooks.py --profile      # and cProfile's top functions

Drives the real SMTP pipeline (``SmtpPipeline``, the policy's plugins, the store) without
sockets, one thread, fsync off, on the message the bench's observe rows send (DKIM-signed by
``loadtest.example`` from 127.0.0.1, its zone from ``servers.bench_world``). Prints the CPU
time (``time.thread_time``) per message of every hook implementation and of delivery.
"""
from __future__ import annotations

import argparse
import cProfile
import collections
import pstats
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from loadgen import make_message  # noqa: E402
from servers import SENDER_DOMAIN, SENDER_HELO, bench_world  # noqa: E402

from forgelab.app import Forgelab, Settings  # noqa: E402
from forgelab.core.pipeline import SmtpPipeline, plugin_name  # noqa: E402
from forgelab.core.session import Session  # noqa: E402
from forgelab.protocols.smtp import events as ev  # noqa: E402


class TimedPipeline(SmtpPipeline):
    """The real pipeline, with the CPU time of each hook implementation and of delivery added up."""

    spent: collections.Counter = collections.Counter()

    def _call(self, hook_name: str, **kwargs):
        for impl in reversed(getattr(self.rules.pm.hook, hook_name).get_hookimpls()):
            name = plugin_name(self.rules.pm, impl.plugin)
            start = time.thread_time()
            try:
                returned, error = impl.function(*[kwargs[arg] for arg in impl.argnames]), None
            except Exception as exc:  # as in the pipeline: a temperror verdict, and the others go on
                returned, error = None, exc
            self.spent[f"{hook_name}:{name}"] += time.thread_time() - start
            yield name, returned, error

    def _prepare_writes(self, *args, **kwargs):
        start = time.thread_time()
        try:
            write = super()._prepare_writes(*args, **kwargs)
        finally:  # add_headers is inside: counted under its own name too
            self.spent["delivery (add_headers, headers, file)"] += time.thread_time() - start

        def timed_write():  # the store's steps; with fsync off they run through without pausing
            start = time.thread_time()
            try:
                return (yield from write())
            finally:
                self.spent["delivery (add_headers, headers, file)"] += time.thread_time() - start

        return timed_write


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default="observe")
    p.add_argument("--messages", type=int, default=500)
    p.add_argument("--profile", action="store_true", help="also print cProfile's top 30 functions")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="forgelab-hooks-") as tmp:
        work = Path(tmp)
        zone, keys = bench_world(work)
        app = Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=work / "data",
                                policy=args.policy, zone_file=zone, web=None))
        app.store.fsync = False  # the disk is not what is measured here
        message = make_message(2048, f"news@{SENDER_DOMAIN}", "rcpt@corp.example", SENDER_DOMAIN, keys)

        def one() -> None:
            pipeline = TimedPipeline(app.context, Session(peer_ip="127.0.0.1"))
            pipeline.connect()
            for event in (ev.Ehlo(SENDER_HELO), ev.MailFrom(f"news@{SENDER_DOMAIN}", {}),
                          ev.RcptTo("rcpt@corp.example", {}), ev.Data()):
                pipeline.handle(event)
            reply = pipeline.handle(ev.Message(message))
            if reply.code != 250:
                raise SystemExit(f"the message was not accepted: {reply}")

        for _ in range(50):  # first-use costs (the Public Suffix List, imports) are not measured
            one()
        TimedPipeline.spent.clear()
        start = time.thread_time()
        for _ in range(args.messages):
            one()
        total = time.thread_time() - start
        print(f"policy {args.policy}: {total / args.messages * 1e6:.0f} µs of CPU per message in all")
        for name, seconds in TimedPipeline.spent.most_common():
            print(f"{seconds / args.messages * 1e6:8.0f} µs  {name}")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(min(args.messages, 300)):
                one()
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        app.bus.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
