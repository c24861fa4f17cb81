"""Building the plugin manager: built-in defences, entry points and --plugin modules."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
import threading
from pathlib import Path

import pluggy

from .. import hookspecs
from ..errors import PluginError  # noqa: F401 (raised here; its home is errors.py)
from .policy import Policy

# The built-in defences: check name -> class, registered exactly like third-party plugins.
BUILTIN: dict[str, str] = {
    "relay": "forgelab.plugins.relay:Relay",
    "disclosure": "forgelab.plugins.disclosure:Disclosure",
    "spf": "forgelab.plugins.spf:SPF",
    "iprev": "forgelab.plugins.iprev:IPRev",
    "dkim": "forgelab.plugins.dkim:DKIM",
    "arc": "forgelab.plugins.arc:ARC",
    "dmarc": "forgelab.plugins.dmarc:DMARC",
    "authres": "forgelab.plugins.authres:AuthResults",
    "mismatch": "forgelab.plugins.mismatch:Mismatch",
    "dkim-replay": "forgelab.plugins.dkim_replay:DKIMReplay",
    "headers": "forgelab.plugins.headers:Headers",
    "from-ambiguity": "forgelab.plugins.from_ambiguity:FromAmbiguity",
    "display-name": "forgelab.plugins.display_name:DisplayName",
    "lookalike": "forgelab.plugins.lookalike:Lookalike",
    "bare-newline": "forgelab.plugins.bare_newline:BareNewline",
    "smuggling": "forgelab.plugins.smuggling:Smuggling",
}
ENTRY_POINT_GROUP = "forgelab"


def _load_class(target: str):
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _instantiate(obj, settings: dict):
    """A class is built with the policy's settings; a module is registered as it is."""
    if inspect.isclass(obj):
        return obj(settings)
    factory = getattr(obj, "forgelab_plugin", None)
    return factory(settings) if callable(factory) else obj


_import_lock = threading.Lock()
_file_plugins: dict[Path, object] = {}  # a policy switch rebuilds plugins but must not re-run their files


def import_plugin(spec: str):
    """``path/to/file.py`` or ``package.module`` -> module."""
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise PluginError(f"--plugin {spec}: no such file")
        if path.resolve() in _file_plugins:
            return _file_plugins[path.resolve()]
        name = f"forgelab_user_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise PluginError(f"--plugin {spec}: {type(exc).__name__}: {exc}") from exc
        _file_plugins[path.resolve()] = module
        return module
    # Like `python -m`: a module in the current directory can be named (examples.greylist).
    with _import_lock:  # sys.path is shared: one import at a time changes it
        cwd = os.getcwd()
        sys.path.insert(0, cwd)
        try:
            return importlib.import_module(spec)
        except ImportError as exc:
            raise PluginError(f"--plugin {spec}: cannot import: {exc}") from exc
        finally:
            sys.path.remove(cwd)


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def plugin_name(pm: pluggy.PluginManager, plugin) -> str:
    return getattr(plugin, "name", None) or pm.get_name(plugin) or repr(plugin)


def build_plugin_manager(policy: Policy, extra: list[str] | tuple[str, ...] = ()) -> pluggy.PluginManager:
    """Register the defences the policy enables, then each ``--plugin``.

    Installed entry-point plugins are loaded only when the policy or ``--plugin`` names
    them: nothing runs that the trainer did not ask for.
    """
    pm = pluggy.PluginManager("forgelab")
    pm.add_hookspecs(hookspecs)
    entry_points = _entry_points() if extra or set(policy.enabled_defences()) - set(BUILTIN) else {}
    given = {}  # --plugin objects by the name they go by, so the policy's settings reach them
    for spec in extra:
        obj = entry_points[spec].load() if spec in entry_points else import_plugin(spec)
        name = getattr(obj, "name", None) or getattr(_instantiate(obj, {}), "name", None) or spec
        if name in given:
            raise PluginError(f"--plugin {spec}: a plugin named {name!r} is already loaded")
        given[name] = (spec, obj)
    for name, (spec, obj) in reversed(given.items()):
        plugin = _instantiate(obj, policy.defences.get(name, {}))
        pm.register(plugin, name=name)
        if not pm.get_hookcallers(plugin):
            raise PluginError(f"--plugin {spec}: it implements no forgelab hook (see docs/plugins.md)")
    # pluggy calls the last registered first: registering the policy's defences backwards makes
    # them run in the order the policy lists them, before the --plugin ones.
    for name, settings in reversed(policy.enabled_defences().items()):
        if name in given:
            continue
        if name in BUILTIN:
            obj = _load_class(BUILTIN[name])
        elif name in entry_points:
            obj = entry_points[name].load()
        else:
            raise PluginError(f"policy {policy.name} ({policy.source}): unknown defence {name!r}; "
                              f"built-in: {', '.join(sorted(BUILTIN))}")
        pm.register(_instantiate(obj, settings), name=name)
    for hook_name in (n for n in dir(hookspecs) if n.startswith("forgelab_")):
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if impl.hookwrapper or getattr(impl, "wrapper", False):
                raise PluginError(f"plugin {plugin_name(pm, impl.plugin)}: {hook_name} is a hook wrapper; forgelab "
                                  "calls each implementation on its own, so wrappers are not supported")
    misspelt = [(name, hook) for name, plugin in pm.list_name_plugin()
                for hook in _hook_names(plugin) if not hasattr(hookspecs, hook)]
    if misspelt:
        name, hook = misspelt[0]
        raise PluginError(f"plugin {name}: {hook} is not a forgelab hook (misspelt? the hooks are listed in docs/plugins.md)")
    pm.check_pending()  # anything the check above missed
    return pm


def _hook_names(plugin) -> list[str]:
    """Names the plugin marked with @hookimpl."""
    names = []
    for attr in dir(plugin):
        options = getattr(getattr(plugin, attr, None), "forgelab_impl", None)
        if isinstance(options, dict):
            names.append(options.get("specname") or attr)
    return names


def describe(pm: pluggy.PluginManager) -> list[tuple[str, list[str]]]:
    """(plugin name, hooks it implements) for every registered plugin."""
    rows = []
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        rows.append((name, hooks))
    return rows
