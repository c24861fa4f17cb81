"""forgelab.testing.run_hook: one hook of one plugin, tested without a server."""
import doctest
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest

from forgelab import Verdict, hookimpl, hookspecs, testing
from forgelab.testing import run_hook

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_public_function_of_hookspecs_has_a_doctest():
    functions = [fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if not name.startswith("_")]
    assert len(functions) == 10
    assert [fn.__name__ for fn in functions if ">>>" not in (fn.__doc__ or "")] == []


@pytest.mark.parametrize("module", [hookspecs, testing])
def test_the_doctests_pass(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_a_class_is_built_with_the_policys_settings_for_it(tmp_path):
    class Greeter:
        name = "greeter"

        def __init__(self, settings):
            self.word = settings.get("word", "hello")

        @hookimpl
        def forgelab_connect(self, session):
            return [Verdict(self.name, "pass", f"{self.word} {session.peer_ip}")]

    policy = tmp_path / "p.toml"
    policy.write_text('extends = "observe"\n[defences.greeter]\nword = "hi"\n')
    assert [v.reason for v in run_hook(Greeter, "connect")] == ["hello 127.0.0.1"]
    assert [v.reason for v in run_hook(Greeter, "connect", policy=str(policy))] == ["hi 127.0.0.1"]


def test_a_built_in_defence_answers_as_its_policy_sets_it():
    assert run_hook("disclosure", "vrfy", argument="alice", policy="observe").code == 250
    assert run_hook("disclosure", "vrfy", argument="alice", policy="strict").code == 252


def test_the_message_may_be_text_and_raw_is_made_from_it():
    class Sizes:
        @hookimpl
        def forgelab_message(self, message, raw):
            return Verdict("sizes", "pass", f"{message['Subject']} {len(raw)}")

    text = "Subject: hi\r\n\r\nbody\r\n"
    (verdict,) = run_hook(Sizes(), "message", message=text)
    assert verdict.reason == f"hi {len(text)}"


def test_a_hook_that_does_not_exist_or_a_misspelt_implementation_is_an_error():
    class Typo:
        @hookimpl
        def forgelab_mesage(self, message):
            pass

    with pytest.raises(ValueError, match="forgelab_mesage is not a forgelab hook"):
        run_hook(Typo(), "mesage")
    with pytest.raises(pluggy.PluginValidationError):
        run_hook(Typo(), "message", message="hi")


def test_the_run_hook_example_in_the_docs_passes(tmp_path):
    text = (DOCS / "plugins.md").read_text()
    plugin = re.search(r"```python\n(# my_defence.py\n.*?)```", text, re.DOTALL).group(1)
    test = re.search(r"```python\n(# test_my_defence_alone.py.*?)```", text, re.DOTALL).group(1)
    assert "run_hook(" in test
    (tmp_path / "my_defence.py").write_text(plugin)
    (tmp_path / "test_my_defence_alone.py").write_text(test)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_defence_alone.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "2 passed" in run.stdout
