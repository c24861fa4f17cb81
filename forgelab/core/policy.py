"""Policies: which defences run with which settings, and what each result of each check does.

A policy is a TOML file (the shipped ones are in ``policies/``)::

    description = "..."
    extends = "observe"            # optional: start from another policy

    [server]                       # protocol settings (see docs/policies.md)
    end_of_data = "strict"

    [defences.mismatch]            # a table per defence turns it on, with its settings
    compare = "organizational"
    [defences.lookalike]
    enabled = false                # switch off one that a parent policy turned on

    [actions.default]              # for checks the policy does not name (third-party ones too)
    fail = "reject"
    [actions.spf]
    softfail = "tag"
    [actions.dmarc]
    fail = "suggested"             # do what the verdict suggests (DMARC: the domain's published p=)
"""
from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import PolicyError
from ..settings import DEFAULTS, KEYS, NETWORKS
from .networks import parse_networks
from ..verdicts import ACTIONS, RESULTS, Verdict

SHIPPED_DIR = Path(str(resources.files("forgelab.policies")))
POLICY_ACTIONS = ACTIONS + ("suggested",)
TOP_KEYS = {"description", "extends", "server", "defences", "actions"}
SERVER_KEYS = KEYS  # each [server] key with what it takes: settings.py holds them, with defaults and docs
# What a result does when neither the check's table nor the policy's default names it.
FALLBACK = {"pass": "accept", "none": "accept", "neutral": "accept", "softfail": "tag",
            "fail": "tag", "temperror": "tag", "permerror": "tag"}


@dataclass
class Policy:
    name: str
    description: str = ""
    source: str = ""
    server: dict = field(default_factory=dict)
    defences: dict[str, dict] = field(default_factory=dict)
    actions: dict[str, dict[str, str]] = field(default_factory=dict)

    def action_for(self, verdict: Verdict) -> str:
        table = self.actions.get(verdict.check, {})
        action = table.get(verdict.result) or self.actions.get("default", {}).get(verdict.result)
        action = action or FALLBACK[verdict.result]
        if action == "suggested":  # the defence suggests (DMARC: the domain's p=); no suggestion -> tag
            return verdict.action or ("accept" if verdict.result == "pass" else "tag")
        return action

    def enabled_defences(self) -> dict[str, dict]:
        return {name: {k: v for k, v in settings.items() if k != "enabled"}
                for name, settings in self.defences.items() if settings.get("enabled", True)}

    def setting(self, key: str, default=None):
        """The ``[server]`` value of ``key``; if the policy does not set it, ``default`` or else
        the default in settings.py."""
        if key in self.server:
            return self.server[key]
        return default if default is not None else getattr(DEFAULTS, key, None)

    def as_toml(self) -> str:
        """The resolved policy (after ``extends``), as TOML."""
        lines = [f"# policy {self.name!r} resolved from {self.source}", f"description = {_toml(self.description)}", ""]
        if self.server:
            lines.append("[server]")
            lines += [f"{k} = {_toml(v)}" for k, v in sorted(self.server.items())]
            lines.append("")
        for name, settings in sorted(self.defences.items()):
            lines.append(f"[defences.{_key(name)}]")
            lines += [f"{_key(k)} = {_toml(v)}" for k, v in sorted(settings.items())]
            lines.append("")
        for check, table in sorted(self.actions.items(), key=lambda kv: (kv[0] != "default", kv[0])):
            lines.append(f"[actions.{_key(check)}]")
            lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
            lines.append("")
        return "\n".join(lines)


def _key(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() else _toml(name)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def shipped_policies() -> list[str]:
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))


def load_policy(name_or_path: str | Path) -> Policy:
    """A shipped policy by name (``strict``) or a policy file by path, with ``extends`` resolved."""
    return _load(str(name_or_path), seen=())


def _locate(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists() or "/" in name_or_path:
        if not path.is_file():
            raise PolicyError(f"{name_or_path}: no such policy file")
        return path
    shipped = SHIPPED_DIR / f"{name_or_path}.toml"
    if not shipped.is_file():
        raise PolicyError(f"unknown policy {name_or_path!r}; shipped policies: {', '.join(shipped_policies())}, or give a file path")
    return shipped


def _load(name_or_path: str, seen: tuple[str, ...]) -> Policy:
    path = _locate(name_or_path)
    if str(path.resolve()) in seen:
        raise PolicyError(f"{path}: 'extends' makes a loop: {' -> '.join(seen)}")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read: {exc}") from None
    _validate(data, path, text)
    parent = data.get("extends")
    if parent:
        base_dir = path.parent
        candidate = base_dir / parent if not Path(parent).is_absolute() else Path(parent)
        target = str(candidate) if candidate.suffix == ".toml" and candidate.exists() else parent
        policy = copy.deepcopy(_load(target, seen + (str(path.resolve()),)))
    else:
        policy = Policy(name="")
    policy.name = path.stem
    policy.source = str(path)
    policy.description = data.get("description", policy.description if parent else "")
    policy.server.update(data.get("server", {}))
    for name, settings in data.get("defences", {}).items():
        policy.defences[name] = {**policy.defences.get(name, {}), **settings}
    for check, table in data.get("actions", {}).items():
        policy.actions[check] = {**policy.actions.get(check, {}), **table}
    return policy


def _line_of(text: str, key: str) -> int:
    """The line a key is written on (for error messages); 0 when not found."""
    last = key.split(".")[-1]
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith(f"[{key}]") or stripped.split("=")[0].strip().strip('"') == last:
            return number
    return 0


def _fail(path: Path, text: str, key: str, problem: str):
    line = _line_of(text, key)
    where = f", line {line}" if line else ""
    raise PolicyError(f"{path}{where}: key '{key}': {problem}")


def _validate(data: dict, path: Path, text: str) -> None:
    for key in data:
        if key not in TOP_KEYS:
            _fail(path, text, key, f"unknown key; a policy has {', '.join(sorted(TOP_KEYS))}")
    if "extends" in data and not isinstance(data["extends"], str):
        _fail(path, text, "extends", "must be a policy name or file")
    if "description" in data and not isinstance(data["description"], str):
        _fail(path, text, "description", "must be a string")
    for key, value in data.get("server", {}).items():
        allowed = SERVER_KEYS.get(key)
        if allowed is None:
            _fail(path, text, f"server.{key}", f"unknown setting; known: {', '.join(sorted(SERVER_KEYS))}")
        if allowed == NETWORKS:
            if isinstance(value, bool):
                continue
            try:
                parse_networks(value, "")
            except ValueError as exc:
                _fail(path, text, f"server.{key}", f"{exc}; it takes {NETWORKS}")
            continue
        if isinstance(allowed, tuple) and all(isinstance(a, type) for a in allowed):
            ok = isinstance(value, allowed) and not isinstance(value, bool) and value > 0
        elif isinstance(allowed, type):
            ok = isinstance(value, allowed) and not isinstance(value, bool) and value > 0
        else:
            ok = value in allowed
        if not ok:
            _fail(path, text, f"server.{key}", f"bad value {value!r}")
    for name, settings in data.get("defences", {}).items():
        if not isinstance(settings, dict):
            _fail(path, text, f"defences.{name}", "must be a table of settings ({} for none)")
        if "enabled" in settings and not isinstance(settings["enabled"], bool):
            _fail(path, text, f"defences.{name}.enabled", "must be true or false")
    for check, table in data.get("actions", {}).items():
        if not isinstance(table, dict):
            _fail(path, text, f"actions.{check}", "must be a table of result = action")
        for result, action in table.items():
            if result not in RESULTS:
                _fail(path, text, f"actions.{check}.{result}", f"unknown result; results are {', '.join(RESULTS)}")
            if action not in POLICY_ACTIONS:
                _fail(path, text, f"actions.{check}.{result}", f"unknown action {action!r}; actions are {', '.join(POLICY_ACTIONS)}")
