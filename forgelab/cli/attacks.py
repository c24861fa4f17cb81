"""``forgelab attacks``: list the catalogue, show one attack, run them all against real servers."""
from __future__ import annotations

import json
import logging
import sys

import click


@click.group("attacks")
def attacks():
    """The attack catalogue: `list`, `show ID`, `run` (every attack under every policy)."""


@attacks.command("list")
@click.option("--class", "cls", help="Only this class (espoofer, dkim-replay, unicode, smuggling, classic, legitimate).")
def list_cmd(cls):
    """One attack a line: id, class, title. Legitimate messages come last."""
    from ..attacks.catalogue import all_entries

    entries = [a for a in all_entries() if cls is None or a.cls == cls]
    width = max((len(a.id) for a in entries), default=0)
    for a in entries:
        click.echo(f"{a.id:<{width}}  {a.cls:<11}  {a.title}")


@attacks.command("show")
@click.argument("attack_id")
def show_cmd(attack_id):
    """Explain one attack and print the bytes it sends."""
    from ..attacks.catalogue import get
    from ..attacks.text import as_text

    try:
        attack = get(attack_id)
    except KeyError:
        raise click.ClickException(f"no attack {attack_id!r}; see `forgelab attacks list`") from None
    click.echo(as_text(attack))


@attacks.command("run")
@click.option("--policy", "policies", multiple=True,
              help="Policy to run under (a shipped name or a file), repeatable; default: open, observe, strict.")
@click.option("--only", "only", multiple=True, help="Run only this attack id, repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcomes as JSON instead of the matrix.")
@click.option("--verbose", is_flag=True, help="Also show the server's log (plugin errors).")
@click.pass_context
def run_cmd(ctx, policies, only, as_json, verbose):
    """Run the catalogue against fresh in-process servers on free loopback ports and print the
    attack x policy matrix. Exit status 1 when any outcome differs from the catalogue."""
    from ..attacks.runner import matrix_text, run_catalogue

    logger = logging.getLogger("forgelab")
    saved = logger.level
    if not verbose:  # a defence that raises is already shown as its temperror verdict
        logger.setLevel(logging.CRITICAL)
    try:
        outcomes = run_catalogue(list(policies) or None, list(only) or None)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from None
    except Exception as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    finally:
        logger.setLevel(saved)
    if as_json:
        sys.stdout.write(json.dumps([o.as_dict() for o in outcomes], indent=2, ensure_ascii=False, default=str) + "\n")
    else:
        click.echo(matrix_text(outcomes))
    ctx.exit(0 if all(o.ok for o in outcomes) else 1)
