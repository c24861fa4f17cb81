"""Policy files: shipped policies, extends, actions, and errors that name file, key and line."""
import pytest
from click.testing import CliRunner

from forgelab import Verdict
from forgelab.cli.main import main
from forgelab.core.policy import PolicyError, load_policy, shipped_policies


def test_shipped_policies_load():
    assert {"open", "observe", "strict"} <= set(shipped_policies())
    for name in shipped_policies():
        assert load_policy(name).description


def test_strict_extends_observe_and_overrides():
    strict, observe = load_policy("strict"), load_policy("observe")
    assert set(observe.defences) <= set(strict.defences)
    assert strict.defences["disclosure"]["mode"] == "hide"
    assert observe.defences["disclosure"]["mode"] == "disclose"


@pytest.mark.parametrize("policy, result, action", [
    ("open", "fail", "accept"), ("observe", "fail", "tag"), ("observe", "pass", "accept"),
    ("strict", "fail", "reject"), ("strict", "softfail", "tag"), ("strict", "temperror", "tempfail"),
])
def test_unknown_checks_get_the_default(policy, result, action):
    assert load_policy(policy).action_for(Verdict("third-party", result, "why")) == action


def test_suggested_action_honours_the_verdicts_suggestion():
    strict = load_policy("strict")
    assert strict.action_for(Verdict("dmarc", "fail", "p=reject", action="reject")) == "reject"
    assert strict.action_for(Verdict("dmarc", "fail", "p=quarantine", action="quarantine")) == "quarantine"
    assert strict.action_for(Verdict("dmarc", "fail", "p=none")) == "tag"


def test_user_policy_extends_a_shipped_one(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('extends = "strict"\ndescription = "mine"\n[actions.default]\nfail = "quarantine"\n')
    policy = load_policy(str(path))
    assert policy.name == "mine" and policy.action_for(Verdict("x", "fail")) == "quarantine"
    assert policy.defences["disclosure"]["mode"] == "hide"


@pytest.mark.parametrize("text, key, line", [
    ('description = "x"\n[actions.spf]\nfail = "explode"\n', "actions.spf.fail", 3),
    ('description = "x"\n\n[actions.spf]\nfial = "reject"\n', "actions.spf.fial", 4),
    ('[server]\nend_of_data = "sometimes"\n', "server.end_of_data", 2),
    ('colour = "red"\n', "colour", 1),
    ('[defences.mismatch]\nenabled = "yes"\n', "defences.mismatch.enabled", 2),
])
def test_invalid_policy_names_file_key_and_line(tmp_path, text, key, line):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(str(path))
    message = str(info.value)
    assert str(path) in message and f"'{key}'" in message and f"line {line}" in message


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('description = "x"\n[actions\n')
    with pytest.raises(PolicyError, match=r"broken.toml.*line 2"):
        load_policy(str(path))


def test_extends_loop_is_an_error(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(PolicyError, match="loop"):
        load_policy(str(tmp_path / "a.toml"))


def test_cli_lists_and_shows_policies():
    runner = CliRunner()
    listing = runner.invoke(main, ["policies"])
    assert listing.exit_code == 0 and "strict" in listing.output and "observe" in listing.output
    shown = runner.invoke(main, ["policies", "show", "strict"])
    assert shown.exit_code == 0 and "[actions.dmarc]" in shown.output and 'mode = "hide"' in shown.output
    missing = runner.invoke(main, ["policies", "show", "nope"])
    assert missing.exit_code != 0 and "unknown policy 'nope'" in missing.output
