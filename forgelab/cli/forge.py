"""``forgelab forge``: send one forged message, printing the dialogue; exit status by outcome."""
from __future__ import annotations

import email.utils
import sys
from pathlib import Path

import click

from ..forge import (LINE_ENDINGS, ForgeResult, Transaction, WireEntry, build_message, dkim_sign, escape_bytes, parse_escapes, send, split_wire_lines)


class HeaderParam(click.ParamType):
    name = "NAME:VALUE"

    def convert(self, value, param, ctx):
        name, colon, rest = value.partition(":")
        if not colon or not name.strip():
            self.fail(f"{value!r} is not NAME:VALUE", param, ctx)
        return name, rest.lstrip(" ")


def _server_colour(data: bytes) -> str:
    code = data[:1]
    return {b"2": "green", b"3": "cyan", b"4": "yellow", b"5": "red"}.get(code, "white")


def printer(stream=None, colour: bool | None = None):
    """An ``on_wire`` callback that prints each line as it goes, escaped, C: ours, S: theirs."""
    stream = stream or sys.stdout

    def show(entry: WireEntry) -> None:
        for line in split_wire_lines(entry.data):
            # Our bytes with every backslash doubled (unambiguous); the server's text as it wrote it.
            text = escape_bytes(line, double_backslash=entry.direction == "C")
            if entry.direction == "C":
                click.secho(f"C: {text}", fg="cyan", file=stream, color=colour)
            else:
                click.secho(f"S: {text}", fg=_server_colour(line), file=stream, color=colour)

    return show


def _address(header_value: str | None) -> str:
    if not header_value:
        return ""
    return email.utils.parseaddr(header_value)[1]


def _header(headers, name: str) -> str | None:
    return next((value for n, value in headers if n.lower() == name), None)


def _from_attack(name: str, rcpts, source_ip, xclient) -> tuple[Transaction, str | None]:
    from ..attacks.catalogue import get
    from ..attacks.runner import can_bind

    try:
        attack = get(name)
    except KeyError:
        raise click.BadParameter(f"no attack {name!r}; see `forgelab attacks list`", param_hint="--attack") from None
    script = attack.script
    if script.probes:
        raise click.BadParameter(f"{name} is a VRFY/EXPN probe, not a message: use `forgelab attacks run --only {name}`",
                                 param_hint="--attack")
    tx = script.transaction()
    if rcpts:
        tx.rcpts, tx.rcpt_args = tuple(rcpts), None
    if xclient:
        tx.xclient = xclient
    elif not source_ip:
        if can_bind(script.source_ip):
            source_ip = script.source_ip
        else:
            tx.xclient = script.source_ip
    return tx, source_ip


@click.command("forge")
@click.option("--server", default="127.0.0.1:1025", show_default=True, help="SMTP server HOST:PORT.")
@click.option("--helo", help="Name for EHLO/HELO (default: forge.forgelab).")
@click.option("--smtp-helo", "plain_helo", is_flag=True, help="Say HELO instead of EHLO.")
@click.option("--mail-from", help="Envelope sender (MAIL FROM); default: the From address (--from or --header). '' for <>.")
@click.option("--rcpt", multiple=True, help="Envelope recipient (RCPT TO), repeatable; default: the To addresses (--to or --header).")
@click.option("--from", "from_", help="The From header, as written (e.g. 'CEO <ceo@bank.example>').")
@click.option("--to", help="The To header, as written.")
@click.option("--subject", help="The Subject header.")
@click.option("--header", "headers", multiple=True, type=HeaderParam(),
              help="Any header NAME:VALUE, repeatable, sent as written. One named From, To, Subject, Date or "
                   "Message-ID replaces the one forge writes (repeat it for two).")
@click.option("--body", help="Message body text; its line breaks are sent as CRLF (see --line-ending).")
@click.option("--data", "data_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Send this file verbatim as the message (headers and body); '-' is not supported.")
@click.option("--no-dot-stuff", is_flag=True, help="Do not double leading dots (send the message exactly).")
@click.option("--line-ending", type=click.Choice(sorted(LINE_ENDINGS)), help="Rewrite every line ending of the message.")
@click.option("--eod", help=r"End-of-data bytes, with escapes (default '\r\n.\r\n'), e.g. '\n.\n'.")
@click.option("--source-ip", help="Bind this local address (127.x.y.z) before connecting.")
@click.option("--xclient", metavar="ADDR", help="Ask the lab server (XCLIENT) to judge us as ADDR.")
@click.option("--dkim-sign", metavar="DOMAIN[:SELECTOR]", help="DKIM-sign with the lab key(s) of DOMAIN.")
@click.option("--pipeline", is_flag=True, help="Send MAIL, RCPT and DATA in one write (RFC 2920).")
@click.option("--auth", metavar="USER:PASSWORD", help="Log in with AUTH PLAIN after the greeting (loopback or TLS).")
@click.option("--attack", metavar="NAME",
              help="Send a catalogued attack (see `forgelab attacks list`) as written. Only --server, --source-ip, "
                   "--xclient, --rcpt, --pipeline, --auth, --timeout, --color and --quiet apply with it; the options that "
                   "shape the message or the greeting are refused.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for each reply.")
@click.option("--color/--no-color", "colour", default=None, help="Colour the dialogue (default: when a terminal).")
@click.option("--quiet", is_flag=True, help="Print only the outcome.")
@click.pass_context
def forge(ctx, server, helo, plain_helo, mail_from, rcpt, from_, to, subject, headers, body, data_file,
          no_dot_stuff, line_ending, eod, source_ip, xclient, dkim_sign, pipeline, auth, attack, timeout, colour,
          quiet):
    """Forge one message, swaks-style: the envelope (--mail-from, --rcpt, --helo) and the headers
    (--from, --to, --subject, --header) are separate, so they can disagree.

    Exit status: 0 accepted, 3 refused (5xx), 4 deferred (4xx), 1 error (no connection,
    timeout, the server hung up), 2 bad usage.
    """
    from ..drivers.listening import parse_hostport

    try:
        host, port = parse_hostport(server)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--server") from None
    if attack:
        _refuse_with_attack(ctx)
        tx, source_ip = _from_attack(attack, rcpt, source_ip, xclient)
    else:
        tx = _build(helo, plain_helo, mail_from, rcpt, from_, to, subject, headers, body, data_file,
                    no_dot_stuff, line_ending, eod, xclient, dkim_sign)
    tx.pipeline = pipeline or tx.pipeline
    if auth:
        user, colon, password = auth.partition(":")
        if not colon or not user:
            raise click.BadParameter("give USER:PASSWORD", param_hint="--auth")
        tx.auth = (user, password)
    if not tx.rcpts and not tx.rcpt_args:
        raise click.UsageError("no recipient: give --rcpt or --to")
    on_wire = None if quiet else printer(colour=colour)
    result = send(host, port, tx, source_ip=source_ip, timeout=timeout, on_wire=on_wire)
    _summary(result, colour)
    ctx.exit(result.exit_status)


# What --attack leaves to the command line: where to send, from where, to whom, and how to show it.
WITH_ATTACK = {"attack", "server", "source_ip", "xclient", "rcpt", "pipeline", "auth", "timeout", "colour", "quiet"}


def _refuse_with_attack(ctx: click.Context) -> None:
    """A catalogued attack sends its own bytes: options that would change them are an error, not ignored."""
    ignored = [param for param in ctx.command.params if param.name not in WITH_ATTACK
               and ctx.get_parameter_source(param.name) not in (None, click.core.ParameterSource.DEFAULT)]
    if ignored:
        names = ", ".join(param.opts[0] for param in ignored)
        raise click.UsageError(f"--attack sends the catalogued message as written: {names} would be ignored; "
                               "drop them (only --server, --source-ip, --xclient, --rcpt, --pipeline, --auth, --timeout, "
                               "--color and --quiet apply with --attack)", ctx=ctx)


def _build(helo, plain_helo, mail_from, rcpt, from_, to, subject, headers, body, data_file, no_dot_stuff,
           line_ending, eod, xclient, dkim_spec) -> Transaction:
    if data_file is not None:
        if any(x is not None for x in (from_, to, subject, body)) or headers:
            raise click.UsageError("--data sends a file verbatim: do not combine it with --from/--to/--subject/--header/--body")
        message = data_file.read_bytes()
    else:
        message = build_message(from_=from_, to=to, subject=subject, headers=headers, body=body or "")
    if line_ending:
        from ..forge import set_line_endings

        message = set_line_endings(message, LINE_ENDINGS[line_ending])
    if dkim_spec:
        try:
            message = dkim_sign(message, dkim_spec)
        except Exception as exc:
            raise click.BadParameter(str(exc), param_hint="--dkim-sign") from None
    # The envelope follows the From and To headers unless told otherwise, --header ones included.
    from_ = from_ if from_ is not None else _header(headers, "from")
    to = to if to is not None else _header(headers, "to")
    if rcpt:
        rcpts = tuple(rcpt)
    else:
        rcpts = tuple(a for _, a in email.utils.getaddresses([to]) if a) if to else ()
    envelope_from = mail_from if mail_from is not None else _address(from_)
    tx = Transaction(mail_from=envelope_from, rcpts=rcpts, message=message, helo=helo or "forge.forgelab",
                     esmtp=not plain_helo, xclient=xclient, stuff=not no_dot_stuff)
    if eod is not None:
        tx.end = parse_escapes(eod)
    return tx


def _summary(result: ForgeResult, colour) -> None:
    colours = {"accepted": "green", "rejected": "red", "tempfailed": "yellow", "error": "magenta"}
    where = f" at {result.stage}" if result.outcome in ("rejected", "tempfailed") else ""
    detail = result.error if result.outcome == "error" else (str(result.reply) if result.reply else "")
    click.secho(f"outcome: {result.outcome}{where}: {escape_bytes(detail.encode('utf-8'), double_backslash=False)}",
                fg=colours.get(result.outcome), bold=True, color=colour)
    for extra in result.extra_replies:
        click.secho(f"  and the server answered more than we asked (smuggled commands?): {escape_bytes(extra.raw, double_backslash=False)}",
                    fg="yellow", color=colour)
