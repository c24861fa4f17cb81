"""The documentation keeps up with the code."""
import inspect
import re
from pathlib import Path

from forgelab import hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_hook_is_documented_with_its_arguments():
    text = (DOCS / "plugins.md").read_text()
    documented = set(re.findall(r"^### (forgelab_\w+)$", text, re.MULTILINE))
    hooks = {name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("forgelab_")}
    assert hooks - documented == set(), "hooks missing from docs/plugins.md"
    assert documented - hooks == set(), "docs/plugins.md documents hooks that do not exist"
    for name in hooks:
        signature = f"{name}({', '.join(inspect.signature(getattr(hookspecs, name)).parameters)})"
        assert signature in text, f"docs/plugins.md does not show {signature}"


def test_every_hookspec_has_a_docstring():
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("forgelab_"):
            doc = fn.__doc__ or ""
            # Every hook says what it returns, or that it is a notification whose return is ignored.
            assert ":return:" in doc or "notification" in doc, name
            assert all(f":param {arg}:" in doc or arg in ("session", "envelope", "lab")
                       for arg in inspect.signature(fn).parameters), name


def test_the_plugin_written_in_the_docs_works_with_plugin_option(forgelab_server, tmp_path):
    import smtplib

    import pytest

    code = re.search(r"```python\n(# my_defence.py\n.*?)```", (DOCS / "plugins.md").read_text(), re.DOTALL).group(1)
    path = tmp_path / "my_defence.py"
    path.write_text(code)
    lab = forgelab_server(policy="strict", plugins=[str(path)])
    friday = b"From: a@news.example\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\nhi\r\n"
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@news.example", ["alice@corp.example"], friday)
    assert b"[no-friday] mail written on Fri is not welcome" in refused.value.smtp_error


def test_the_plugin_test_written_in_the_docs_passes(tmp_path):
    """The "Testing a plugin" example, run by pytest as a user would, beside the plugin it tests."""
    import subprocess
    import sys

    text = (DOCS / "plugins.md").read_text()
    plugin = re.search(r"```python\n(# my_defence.py\n.*?)```", text, re.DOTALL).group(1)
    test = re.search(r"```python\n(# test_my_defence.py.*?)```", text, re.DOTALL).group(1)
    assert "pytest.raises" in test and "[no-friday]" in test
    (tmp_path / "my_defence.py").write_text(plugin)
    (tmp_path / "test_my_defence.py").write_text(test)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_defence.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout


def test_the_limits_defaults_agree_where_docs_security_md_sends_the_reader():
    """security.md says the defaults are in its table and in policies.md (policies show omits them)."""
    security = (DOCS / "security.md").read_text()
    example = (DOCS / "policies.md").read_text()
    rows = re.findall(r"^\| [^|]+ \| `(\w+)` \| ([0-9]+)\b", security, re.MULTILINE)
    assert len(rows) >= 8, rows
    for key, default in rows:
        assert re.search(rf"^{key} = {default}\b", example, re.MULTILINE), f"docs/policies.md: {key} = {default}?"
    assert not re.search(r"policies show \w+`\s+prints them", security)
