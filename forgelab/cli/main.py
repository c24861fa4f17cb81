"""The forgelab command line: thin commands over the library."""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import click

from .. import __version__
from ..errors import ForgelabError
from ..settings import MB, Settings


class UserError(click.ClickException):
    """A ``ForgelabError`` as the command line shows it: one line, exit code 2."""
    exit_code = ForgelabError.exit_code


class Commands(click.Group):
    """The command group: a ForgelabError from any command (a bad policy, a port in use, ...)
    is one line naming what to fix, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ForgelabError as exc:
            raise UserError(str(exc)) from None


def setting(name: str, *decls, **kwargs):
    """An option of ``serve`` for setting ``name``: its default and help are settings.py's."""
    kwargs.setdefault("default", Settings.serve_default(name))
    return click.option(*decls, name, help=Settings.doc(name), **kwargs)


class HostPort(click.ParamType):
    name = "HOST:PORT"

    def __init__(self, allow_off: bool = False):
        self.allow_off = allow_off

    def convert(self, value, param, ctx):
        from ..drivers.listening import parse_hostport

        if self.allow_off and value == "off":
            return None
        try:
            parse_hostport(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value


class ByteSize(click.ParamType):
    """A size such as 64MB, 512KB, 1GB or a number of bytes (units of 1,024)."""
    name = "SIZE"
    UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024 ** 2, "MB": 1024 ** 2, "G": 1024 ** 3, "GB": 1024 ** 3}

    def __init__(self, minimum: int = 0, allow_off: bool = False):
        self.minimum, self.allow_off = minimum, allow_off

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip().upper()
        if self.allow_off and text == "OFF":
            return 0
        number = text.rstrip("KMGB")
        unit = text[len(number):]
        if not number.isdigit() or unit not in self.UNITS:
            self.fail(f"{value!r} is not a size like 64MB, 512KB or 1GB", param, ctx)
        size = int(number) * self.UNITS[unit]
        if size and size < self.minimum:
            self.fail(f"{value!r} is below {self.minimum // 1024} KB (0 turns it off)", param, ctx)
        return size


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="forgelab")
def main():
    """forgelab: a mail-forgery lab. A real SMTP + POP3 server on loopback that runs every
    message through pluggable defences, so you can forge mail and watch each defence react."""


def banner(lab_app) -> str:
    from ..core.loopback import is_loopback

    lab = lab_app.lab
    smtp_host, smtp_port = lab_app.smtp.address
    pop3_host, pop3_port = lab_app.pop3.address
    policy = lab_app.context.rules.policy
    lines = [
        click.style(f"forgelab {__version__}: a mail-forgery lab (mail never leaves this machine)", bold=True),
        f"  SMTP   {smtp_host}:{smtp_port}    telnet {smtp_host} {smtp_port}",
        f"  POP3   {pop3_host}:{pop3_port}    telnet {pop3_host} {pop3_port}",
        f"  web    {lab_app.web.url}" if lab_app.web else "  web    off",
    ]
    lines += _tls_lines(lab_app)
    if getattr(lab_app, "workers", None):
        lines.append(f"  SMTP processes: {1 + len(lab_app.workers.workers)} (this one and workers "
                     f"{', '.join(map(str, lab_app.workers.pids))}), sharing port {smtp_port}")
    lines += [
        f"  policy {policy.name}: {policy.description}",
        f"  local domain(s): {', '.join(lab.directory.domains)}",
        "  lab users (lab-only passwords):",
    ]
    for user in lab.directory.users.values():
        password = user.password if user.password is not None else "(hashed)"
        lines.append(f"    {lab.directory.address(user):<28} {user.full_name:<22} password: {password}")
    for name, members in lab.directory.lists.items():
        lines.append(f"    list {name}@{lab.directory.primary_domain}: {', '.join(members)}")
    world = _world_lines(lab)
    lines += world
    lines += [
        "  try:",
        f"    telnet {smtp_host} {smtp_port}   then: HELO some.where.com / MAIL FROM:<> / RCPT TO:<alice@{lab.directory.primary_domain}> / DATA",
        f"    telnet {pop3_host} {pop3_port}   then: USER alice / PASS rabbit-hole / STAT / RETR 1 / QUIT",
        f"  data: {lab_app.data_dir}   (event log: events.jsonl)",
    ]
    listening = [("SMTP", lab_app.smtp.address), ("POP3", lab_app.pop3.address)]
    listening += [(name, server.address) for name, server in (("SMTPS", getattr(lab_app, "smtps", None)),
                                                              ("POP3S", getattr(lab_app, "pop3s", None))) if server]
    if lab_app.web:
        listening.append(("web view", lab_app.web.address))
    for name, (host, _) in listening:
        if not is_loopback(host):
            lines.append(click.style(f"  WARNING: {name} listens on {host}, not loopback: anyone who can reach it can use this lab", fg="red", bold=True))
    return "\n".join(lines)


def _tls_lines(lab_app) -> list[str]:
    """The implicit-TLS ports, the CA file a client verifies the lab certificate with, and one way to."""
    from ..lab.tls import lab_ca_paths

    if getattr(lab_app, "tls", None) is None:
        return ["  TLS    off"]
    lines = []
    for name, scheme, server in (("SMTPS", "smtps", getattr(lab_app, "smtps", None)),
                                 ("POP3S", "pop3s", getattr(lab_app, "pop3s", None))):
        lines.append(f"  {name}  {_url_host(*server.address)}    implicit TLS" if server else f"  {name}  off")
    if lab_app.settings.tls_cert:
        return lines + [f"  TLS certificate: {lab_app.settings.tls_cert} (given)"]
    ca = lab_ca_paths(lab_app.data_dir)[0]
    lines.append(f"  TLS CA {ca}   (trust it once: docs/clients.md)")
    smtps = getattr(lab_app, "smtps", None)
    if smtps:
        lines.append(f"    verify: curl --cacert {ca} smtps://{_url_host(*smtps.address)}")
    else:
        host, port = lab_app.smtp.address[:2]
        lines.append(f"    verify: openssl s_client -verify_return_error -CAfile {ca} -starttls smtp "
                     f"-connect {_url_host(host, port)} </dev/null")
    return lines


def _url_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _world_lines(lab) -> list[str]:
    try:
        from ..lab.world import banner_lines
    except ImportError:
        return []
    return ["  lab world:"] + [f"    {line}" for line in banner_lines()]


def _web_view(address):
    """The web view's class, imported only when it is asked for (it brings Starlette and uvicorn)."""
    if not address:
        return None
    from ..web import WebServer

    return WebServer


def _max_workers() -> int:
    return (os.cpu_count() or 1) * 4


@main.command()
@setting("smtp", "--smtp", show_default=True, type=HostPort())
@setting("pop3", "--pop3", show_default=True, type=HostPort())
@setting("smtps", "--smtps", show_default=True, type=HostPort(allow_off=True))
@setting("pop3s", "--pop3s", show_default=True, type=HostPort(allow_off=True))
@setting("data_dir", "--data", type=click.Path(file_okay=False, path_type=Path))
@setting("users_file", "--users", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@setting("policy", "--policy", show_default=True)
@setting("plugins", "--plugin", multiple=True)
@setting("zone_file", "--zone", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@setting("dns", "--dns", type=click.Choice(["lab", "system"]), show_default=True)
@click.option("--quiet", is_flag=True, help="Do not print the session transcripts.")
@click.option("--json", "json_lines", is_flag=True, help="Print every event as a JSON line instead of the transcript.")
@setting("tls_cert", "--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@setting("tls_key", "--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@setting("web", "--web", show_default=True, type=HostPort(allow_off=True))
@setting("workers", "--workers", type=click.IntRange(1, _max_workers()), show_default=True)
@setting("driver", "--driver", type=click.Choice(["threads", "selector"]), show_default=True)
@setting("event_log_max", "--event-log-max", type=ByteSize(minimum=64 * 1024), show_default=True,
         default=f"{Settings.serve_default('event_log_max') // MB}MB")
@setting("event_log_keep", "--event-log-keep", type=click.IntRange(0, 100), show_default=True)
@setting("event_log_rate", "--event-log-rate", type=ByteSize(minimum=1024, allow_off=True), show_default=True,
         default=f"{Settings.serve_default('event_log_rate') // 1024}KB")
def serve(smtp, pop3, smtps, pop3s, data_dir, users_file, policy, plugins, zone_file, dns, quiet, json_lines, tls_cert, tls_key, web,
          workers, driver, event_log_max, event_log_keep, event_log_rate):
    """Start the SMTP and POP3 servers on the embedded lab world."""
    from ..app import Forgelab, raise_open_files_limit
    from ..speedups import install as install_speedups
    from .terminal import TerminalView

    install_speedups(process=True)  # before the lab is loaded: what loading frees goes back too
    raise_open_files_limit()  # before workers start: they inherit it
    settings = Settings(smtp=smtp, pop3=pop3, smtps=smtps, pop3s=pop3s, data_dir=data_dir, users_file=users_file, policy=policy,
                        plugins=tuple(plugins), zone_file=zone_file, dns=dns, tls_cert=tls_cert, tls_key=tls_key,
                        web=web, workers=workers, driver=driver, pin_cpus=workers > 1,
                        event_log_max=event_log_max, event_log_keep=event_log_keep, event_log_rate=event_log_rate)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before starting: a signal during start-up still stops cleanly
        signal.signal(sig, lambda *_: stop.set())
    view = None if quiet else TerminalView(sys.stdout, json_lines=json_lines)
    try:
        lab_app = Forgelab(settings, web_view=_web_view(web))
        if view:
            view.hold()  # sessions that start before the banner is out are shown after it
            lab_app.bus.subscribe(view)
        lab_app.start()
    except ForgelabError:
        raise
    except Exception as exc:  # any other start-up problem is one clear line too, never a traceback
        raise click.ClickException(str(exc)) from None
    click.echo(banner(lab_app))
    if view:
        view.release()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        lab_app.stop()
        if view:
            view.flush()
        click.echo("forgelab stopped")


@main.command("_smtp-worker", hidden=True)
@click.argument("config")
def smtp_worker(config):
    """One SMTP worker process of `serve --workers` (started by serve, not by hand)."""
    from ..drivers.worker_process import worker_main

    sys.exit(worker_main(config))


@main.command("plugins")
@click.option("--policy", default="observe", show_default=True, help="Policy whose defences to load.")
@click.option("--plugin", "plugins", multiple=True, help="Also load this plugin module or file.")
def plugins_cmd(policy, plugins):
    """List every loaded plugin and the hooks it implements."""
    from ..core.policy import load_policy
    from ..core.registry import build_plugin_manager, describe

    try:
        pm = build_plugin_manager(load_policy(policy), plugins)
    except ForgelabError:
        raise
    except Exception as exc:
        raise click.ClickException(str(exc)) from None
    for name, hooks in describe(pm):
        click.echo(f"{name:<16} {', '.join(hooks)}")


@main.group("policies", invoke_without_command=True)
@click.pass_context
def policies_cmd(ctx):
    """List the shipped policies; `policies show NAME` prints one resolved."""
    if ctx.invoked_subcommand is None:
        from ..core.policy import load_policy, shipped_policies

        for name in shipped_policies():
            click.echo(f"{name:<10} {load_policy(name).description}")


@policies_cmd.command("show")
@click.argument("name")
def policies_show(name):
    """Print a policy (a shipped name or a file) with `extends` resolved."""
    from ..core.policy import load_policy
    from ..core.registry import build_plugin_manager

    try:
        policy = load_policy(name)
        build_plugin_manager(policy)  # the defences it names must exist, as `serve` requires
        click.echo(policy.as_toml())
    except ForgelabError:
        raise
    except Exception as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("domain")
@click.option("--selector", "-s", default="lab", show_default=True, help="DKIM selector.")
@click.option("--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True)
@click.option("--bits", type=click.IntRange(1024, 8192), default=2048, show_default=True, help="RSA key size.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True,
              help="Folder for the private key (SELECTOR._domainkey.DOMAIN.pem) and its record.")
@click.option("--force", is_flag=True, help="Replace a key that is already there.")
def keygen(domain, selector, algorithm, bits, out_dir, force):
    """Write a DKIM key pair for DOMAIN and print the TXT record to publish in the zone."""
    from ..auth.keys import keygen as make_key

    existing = out_dir / f"{selector}._domainkey.{domain.strip('.').lower()}.pem"
    if existing.exists() and not force:
        raise click.ClickException(f"{existing} exists; --force replaces it")
    try:
        pair = make_key(domain, selector, out_dir, algorithm=algorithm, bits=bits)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"private key: {pair.key.path}", err=True)
    click.echo(pair.zone_line)


def _add_commands() -> None:
    from .attacks import attacks
    from .forge import forge

    main.add_command(forge)
    main.add_command(attacks)


_add_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
