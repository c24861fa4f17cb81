"""forgelab's benchmark: forgelab against aiosmtpd on loopback, same load, same run.

    python bench/run.py                 # the full run (a few minutes on 2 cores)
    python bench/run.py --scale 0.05    # a quick look
    python bench/run.py --json out.json # also keep the figures

Starts three server processes: forgelab with policy ``open`` and with ``observe`` (each
with durable Maildir delivery and its JSONL event log, as ``forgelab serve`` runs), and
aiosmtpd 1.4.6 with its Maildir handler. Drives them with Postfix's ``smtp-source`` when
installed, else with ``bench/loadgen.py``. The observe rows send DKIM-signed mail from the
bench's own sending domain (``servers.SENDER_DOMAIN``, added to the lab zone of the observe
server) with either generator (``smtp-source -F``). Then holds 1,000 idle
SMTP connections on each server, and times POP3 on 1,000- and 20,000-message maildrops.
Every loop is bounded by a count and a timeout; everything started is stopped at the end.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from loadgen import make_message  # noqa: E402
from servers import SENDER_DOMAIN, SENDER_HELO, AiosmtpdServer, ForgelabServer, bench_world, mb, os_name  # noqa: E402

SIZES = (2048, 102400)
CONCURRENCY = (1, 10, 50)
RCPTS = (1, 10)


def base_count(size: int, concurrency: int) -> int:
    if size > 10_000:
        return 150 if concurrency == 1 else 600
    return 600 if concurrency == 1 else 3000


def smtp_source() -> str | None:
    return shutil.which("smtp-source") or next(
        (p for p in ("/usr/sbin/smtp-source", "/usr/lib/postfix/sbin/smtp-source") if Path(p).exists()), None)


def run_load(port: int, *, messages: int, concurrency: int, size: int, rcpts: int, use_source: bool,
             signed: Path | None = None, timeout: float = 300.0) -> dict:
    """One load run in its own process; returns ok, seconds and the generator used.

    :param signed: a signed message file to send from ``SENDER_DOMAIN`` instead of a generated message.
    """
    rcpt = "{n}rcpt@corp.example" if rcpts > 1 else "rcpt@corp.example"
    sender = f"news@{SENDER_DOMAIN}" if signed else "bench@news.example"
    if use_source:
        what = ["-F", str(signed), "-M", SENDER_HELO] if signed else ["-l", str(size)]
        argv = [smtp_source(), "-s", str(concurrency), "-m", str(messages), *what,
                "-f", sender, "-t", "rcpt@corp.example", "-r", str(rcpts), f"127.0.0.1:{port}"]
        t = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, timeout=timeout)
        seconds = time.monotonic() - t
        ok = messages if proc.returncode == 0 else 0
        return {"generator": "smtp-source", "ok": ok, "failed": messages - ok, "seconds": seconds,
                "error": proc.stderr.decode(errors="replace")[-300:] if proc.returncode else ""}
    argv = [sys.executable, str(HERE / "loadgen.py"), "--port", str(port), "--messages", str(messages),
            "--concurrency", str(concurrency), "--size", str(size), "--rcpts", str(rcpts),
            "--rcpt", rcpt, "--sender", sender, "--timeout", str(timeout)]
    if signed:
        argv += ["--message-file", str(signed), "--helo", SENDER_HELO]
    proc = subprocess.run(argv, capture_output=True, timeout=timeout + 30)
    if proc.returncode:
        raise RuntimeError(f"loadgen failed: {proc.stderr.decode(errors='replace')[-500:]}")
    out = json.loads(proc.stdout)
    return {"generator": "loadgen", "ok": out["ok"], "failed": out["failed"], "seconds": out["seconds"],
            "error": json.dumps(out["errors"]) if out["errors"] else ""}


def measure(server, **load) -> dict:
    server.reset_peak()
    cpu0 = server.cpu_seconds()
    result = run_load(server.port, **load)
    result["cpu"] = server.cpu_seconds() - cpu0
    result["peak_rss_mb"] = mb(server.peak_rss())
    return result


def alternated(servers: list, rounds: int, **load) -> list[dict]:
    """``load`` run ``rounds`` times on each server, the servers taking turns: on a shared
    machine whose speed drifts within a minute, each server meets the same drift."""
    runs = {id(server): [] for server in servers}
    for _ in range(rounds):
        for server in servers:
            runs[id(server)].append(measure(server, **load))
    results = []
    for server in servers:
        parts = runs[id(server)]
        ok, seconds, cpu = sum(r["ok"] for r in parts), sum(r["seconds"] for r in parts), sum(r["cpu"] for r in parts)
        results.append({"generator": parts[0]["generator"], "ok": ok, "failed": sum(r["failed"] for r in parts),
                        "seconds": seconds, "error": next((r["error"] for r in parts if r["error"]), ""),
                        "server": server.name, "rate": round(ok / seconds, 1) if ok else 0.0,
                        "rates": [round(r["ok"] / r["seconds"], 1) if r["ok"] else 0.0 for r in parts],
                        "cpu_ms": round(cpu / ok * 1000, 3) if ok else None,
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in parts)})
    return results


def warm_up(servers: dict, use_source: bool, signed_message: Path) -> None:
    """A few messages to every server before anything is timed: first-use costs (imports,
    the Public Suffix List, pools) are not part of a row, for either server."""
    loads = {"open": [None], "observe": [signed_message], "aiosmtpd": [None, signed_message]}
    for name, server in servers.items():
        for signed in loads[name]:
            run_load(server.port, messages=50, concurrency=10, size=2048, rcpts=1, use_source=use_source,
                     signed=signed, timeout=60)


def throughput(servers: dict, args, use_source: bool, signed_message: Path) -> list[dict]:
    rows = []
    plan = [("open", size, c, r, False) for size in args.sizes for r in args.rcpts for c in args.concurrency]
    plan += [("observe", 2048, c, 1, True) for c in args.concurrency]
    for policy, size, c, r, signed in plan:
        per_run = max(int(base_count(size, c) * args.scale) // args.rounds, c, 5)
        messages = per_run * args.rounds
        load = dict(messages=per_run, concurrency=c, size=size, rcpts=r, use_source=use_source,
                    signed=signed_message if signed else None, timeout=args.timeout)
        fl, aio = alternated([servers[policy], servers["aiosmtpd"]], args.rounds, **load)
        ratio = round(fl["rate"] / aio["rate"], 2) if aio["rate"] else None
        row = {"policy": policy, "size": size, "concurrency": c, "rcpts": r, "signed": signed,
               "messages": messages, "forgelab": fl, "aiosmtpd": aio, "ratio": ratio}
        rows.append(row)
        print(f"  {policy:<8} {size // 1024:>4} KB  c={c:<3} rcpt={r:<3} {'signed ' if signed else ''}"
              f"forgelab {fl['rate']:>7.1f}/s  aiosmtpd {aio['rate']:>7.1f}/s  ratio {ratio}"
              f"  (runs: {' '.join(map(str, fl['rates']))} / {' '.join(map(str, aio['rates']))})"
              f"{'  FAILED ' + str(fl['failed'] + aio['failed']) if fl['failed'] or aio['failed'] else ''}",
              flush=True)
    return rows


def _open_idle(port: int, count: int, timeout: float) -> list[socket.socket]:
    socks = []
    deadline = time.monotonic() + timeout
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(s)
    for s in socks:  # the banner proves the server took the connection on (thread or task)
        try:
            s.recv(512)
        except OSError:
            pass
    return socks


def idle(server, count: int, timeout: float) -> dict:
    """Hold ``count`` idle connections; RSS, threads; a new client is still served; all still answer."""
    server.reset_peak()
    rss0 = server.rss()
    socks = _open_idle(server.port, count, timeout)
    try:
        time.sleep(0.5)
        rss = server.rss()
        threads = server.threads()
        t = time.monotonic()
        served = run_load(server.port, messages=5, concurrency=1, size=2048, rcpts=1, use_source=False, timeout=30)
        latency_ms = (time.monotonic() - t) / 5 * 1000
        held = 0
        for s in socks:
            try:
                s.sendall(b"NOOP\r\n")
                if s.recv(512).startswith(b"250"):
                    held += 1
            except OSError:
                pass
    finally:
        for s in socks:
            s.close()
    return {"server": server.name, "opened": len(socks), "held": held, "rss_mb": mb(rss),
            "rss_before_mb": mb(rss0), "per_conn_kb": round((rss - rss0) / max(len(socks), 1) / 1024, 1),
            "threads": threads, "new_client_ok": served["ok"], "new_client_ms": round(latency_ms, 1)}


def pop3(server, args) -> list[dict]:
    from pop3 import fill, measure as pop_measure

    message = make_message(2048, "bench@news.example", "pop@corp.example")
    out = []
    for user, count in (("pop1k", 1000), ("pop20k", 20000)):
        n = max(int(count * args.pop_scale), 10)
        fill(server.data, user, n, message)
        out.append(pop_measure(server, user, retr_count=min(n, 1000)))
    return out


def table(result: dict) -> str:
    lines = ["| policy | size | conc. | rcpts | forgelab msg/s | aiosmtpd msg/s | ratio | forgelab CPU ms/msg | aiosmtpd CPU ms/msg | forgelab peak RSS MB | aiosmtpd peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["throughput"]:
        fl, aio = r["forgelab"], r["aiosmtpd"]
        policy = r["policy"] + (" (signed)" if r["signed"] else "")
        lines.append(f"| {policy} | {r['size'] // 1024} KB | {r['concurrency']} | {r['rcpts']} | {fl['rate']} | {aio['rate']} "
                     f"| **{r['ratio']}** | {fl['cpu_ms']} | {aio['cpu_ms']} | {fl['peak_rss_mb']} | {aio['peak_rss_mb']} |")
    lines += ["", "| idle connections | opened | held (answer NOOP) | RSS MB | RSS before | KB per conn | threads | new client served | new client ms/msg |",
              "|---|---|---|---|---|---|---|---|---|"]
    for i in result["idle"]:
        lines.append(f"| {i['server']} | {i['opened']} | {i['held']} | {i['rss_mb']} | {i['rss_before_mb']} | {i['per_conn_kb']} "
                     f"| {i['threads']} | {i['new_client_ok']}/5 | {i['new_client_ms']} |")
    lines += ["", "| POP3 maildrop | messages | login ms | STAT µs | LIST n µs | LIST all ms | RETR/s | µs/RETR | server CPU µs/RETR | MB/s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for p in result["pop3"]:
        lines.append(f"| {p['user']} | {p['messages']} | {p['login_ms']} | {p['stat_us']} | {p['list_one_us']} | {p['list_all_ms']} "
                     f"| {p['retr_per_s']} | {p['retr_us']} | {p['retr_cpu_us']} | {p['mb_per_s']} |")
    return "\n".join(lines)


def targets(result: dict) -> list[tuple[str, bool, str]]:
    rows = result["throughput"]

    def ratio(policy, c):
        found = [r["ratio"] for r in rows if r["policy"] == policy and r["size"] == 2048 and r["rcpts"] == 1
                 and r["concurrency"] == c]
        return found[0] if found and found[0] is not None else 0.0

    out = []
    for c in (10, 50):
        out.append((f"open, durable, 2 KB, 1 rcpt, c={c}: >= 1.5x aiosmtpd", ratio("open", c) >= 1.5, f"{ratio('open', c)}x"))
    for c in (10, 50):
        out.append((f"observe, signed, 2 KB, 1 rcpt, c={c}: >= 1.0x aiosmtpd", ratio("observe", c) >= 1.0, f"{ratio('observe', c)}x"))
    fl_idle = next(i for i in result["idle"] if i["server"].startswith("forgelab"))
    want = result["idle_count"]
    ok = fl_idle["held"] >= want and fl_idle["rss_mb"] < 150 and fl_idle["new_client_ok"] == 5
    out.append((f"{want} idle SMTP connections held, < 150 MB RSS, new clients served", ok,
                f"{fl_idle['held']} held, {fl_idle['rss_mb']} MB, {fl_idle['new_client_ok']}/5 served"))
    p1, p2 = result["pop3"]
    flat = p2["retr_cpu_us"] <= 1.5 * p1["retr_cpu_us"] and p2["stat_us"] <= 1.5 * max(p1["stat_us"], 50)
    out.append((f"POP3 cost flat from {p1['messages']} to {p2['messages']} messages (within 1.5x)", flat,
                f"server CPU/RETR {p1['retr_cpu_us']} -> {p2['retr_cpu_us']} µs, STAT {p1['stat_us']} -> {p2['stat_us']} µs"))
    return out


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="forgelab vs aiosmtpd on loopback")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every message count (0.01 for a smoke run)")
    p.add_argument("--idle", type=int, default=1000, help="idle connections to hold")
    p.add_argument("--pop-scale", type=float, default=1.0, help="multiply the POP3 maildrop sizes")
    p.add_argument("--generator", choices=("auto", "smtp-source", "loadgen"), default="auto")
    p.add_argument("--timeout", type=float, default=300.0, help="limit for one load run, seconds")
    p.add_argument("--workdir", type=Path, help="where the servers keep their mail (default: a new temp dir, removed)")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--concurrency", type=_ints, default=CONCURRENCY, help="comma-separated (default 1,10,50)")
    p.add_argument("--sizes", type=_ints, default=SIZES, help="message sizes in octets (default 2048,102400)")
    p.add_argument("--rcpts", type=_ints, default=RCPTS, help="recipients per message (default 1,10)")
    p.add_argument("--rounds", type=int, default=3,
                   help="each row's messages in this many runs per server, the servers taking turns (default 3)")
    p.add_argument("--workers", type=int, default=2, help="forgelab serve --workers (SMTP processes, default 2)")
    p.add_argument("--driver", choices=["threads", "selector"], default="selector",
                   help="forgelab serve --driver (default selector)")
    args = p.parse_args(argv)

    use_source = args.generator == "smtp-source" or (args.generator == "auto" and smtp_source() is not None)
    if use_source and not smtp_source():
        p.error("smtp-source is not installed (Debian: apt-get install postfix)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="forgelab-bench-"))
    print(f"forgelab bench on {os_name()}; generator: {'smtp-source' if use_source else 'bench/loadgen.py'}; work dir {work}", flush=True)
    servers = {}
    try:
        servers["open"] = ForgelabServer(work / "open", "open", args.workers, driver=args.driver)
        zone, keys = bench_world(work)
        signed_message = work / "signed.eml"  # LF lines: smtp-source -F sends each line with CRLF
        signed_message.write_bytes(make_message(2048, f"news@{SENDER_DOMAIN}", "rcpt@corp.example",
                                                SENDER_DOMAIN, keys).replace(b"\r\n", b"\n"))
        servers["observe"] = ForgelabServer(work / "observe", "observe", args.workers, zone, driver=args.driver)
        servers["aiosmtpd"] = AiosmtpdServer(work / "aiosmtpd")
        result = {"machine": os_name(), "generator": "smtp-source" if use_source else "loadgen",
                  "scale": args.scale, "idle_count": args.idle, "workers": args.workers, "driver": args.driver}
        print("throughput (messages accepted per second, a new connection per message):", flush=True)
        warm_up(servers, use_source, signed_message)
        result["throughput"] = throughput(servers, args, use_source, signed_message)
        print("idle connections:", flush=True)
        result["idle"] = [idle(servers["open"], args.idle, args.timeout), idle(servers["aiosmtpd"], args.idle, args.timeout)]
        print("POP3:", flush=True)
        result["pop3"] = pop3(servers["open"], args)
    finally:
        for server in servers.values():
            server.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    result["targets"] = [{"target": t, "met": ok, "measured": m} for t, ok, m in targets(result)]
    print()
    print(table(result))
    print()
    for t in result["targets"]:
        print(f"  [{'met' if t['met'] else 'NOT MET'}] {t['target']}: {t['measured']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
