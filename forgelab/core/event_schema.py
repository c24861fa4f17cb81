"""The event schema as documentation: docs/events.md holds ``schema_markdown()`` between its
markers, made from the records' docstrings (``:param name: ...``), and a test keeps the two the same."""
from __future__ import annotations

from dataclasses import MISSING, fields

from .event_records import RECORDS


def _field_docs(cls) -> dict[str, str]:
    docs, name = {}, None
    for line in (cls.__doc__ or "").splitlines():
        line = line.strip()
        if line.startswith(":param "):
            name, _, text = line[len(":param "):].partition(":")
            docs[name] = text.strip()
        elif name and line:
            docs[name] += " " + line
    return docs


def schema_markdown() -> str:
    """The table of every kind and field, as docs/events.md holds it between its markers."""
    out = []
    for kind, cls in RECORDS.items():
        summary = " ".join((cls.__doc__ or "").split("\n\n")[0].split())
        out += [f"### `{kind}`", "", summary, "", "| field | always | what it holds |", "|---|---|---|"]
        docs = _field_docs(cls)
        for f in fields(cls):
            always = "yes" if f.default is MISSING else "no"
            out.append(f"| `{f.name}` | {always} | {docs.get(f.name, '')} |")
        out.append("")
    return "\n".join(out).replace("``", "`")  # reST literals in the docstrings, Markdown here

