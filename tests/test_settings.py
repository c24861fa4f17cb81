"""One Settings: every server setting's default and meaning in settings.py, the rest derived."""
import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from forgelab.app import login_throttle, server_limits
from forgelab.cli.main import main
from forgelab.core.login_throttle import LoginThrottle
from forgelab.core.message_limits import DEFAULTS as MESSAGE_DEFAULTS
from forgelab.core.policy import SERVER_KEYS, Policy, load_policy
from forgelab.drivers.connection import Limits
from forgelab.settings import DEFAULTS, FIELDS, KEYS, Settings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "policies.md"


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULTS.idle_timeout = 1


def test_the_policy_loader_checks_exactly_the_server_keys_of_settings():
    assert SERVER_KEYS is KEYS
    assert set(KEYS) == {name for name, f in FIELDS.items() if f.metadata["key"]}


def test_a_policy_that_sets_nothing_gets_the_defaults_of_settings_everywhere():
    empty = Policy(name="empty")
    assert server_limits(Settings(), empty) == Limits()
    assert Limits().max_per_ip == DEFAULTS.max_connections_per_ip and Limits().idle_timeout == DEFAULTS.idle_timeout
    throttle = login_throttle(Settings(), empty)
    assert (throttle.free_failures, throttle.delay, throttle.ip_max_delay) == (
        DEFAULTS.login_free_failures, DEFAULTS.login_delay, DEFAULTS.login_ip_max_delay)
    assert all(empty.setting(key) == getattr(DEFAULTS, key) for key in KEYS)


def test_the_defaults_kept_beside_the_code_agree_with_settings():
    # message_limits and LoginThrottle still write theirs down; they must never drift apart.
    assert MESSAGE_DEFAULTS == {name: getattr(DEFAULTS, name) for name in MESSAGE_DEFAULTS}
    for name, key in (("free_failures", "login_free_failures"), ("user_free_failures", "login_user_free_failures"),
                      ("delay", "login_delay"), ("max_delay", "login_max_delay"),
                      ("ip_free_failures", "login_ip_free_failures"), ("ip_max_delay", "login_ip_max_delay")):
        assert getattr(LoginThrottle, name) == getattr(DEFAULTS, key)


def test_a_policys_server_table_wins_over_the_defaults(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('extends = "observe"\n[server]\nmax_connections_per_ip = 7\nidle_timeout = 2\nlogin_delay = 0.5\n')
    policy = load_policy(path)
    limits = server_limits(Settings(), policy)
    assert (limits.max_per_ip, limits.idle_timeout, limits.max_connections) == (7, 2, DEFAULTS.max_connections)
    assert login_throttle(Settings(), policy).delay == 0.5
    assert Settings().for_policy(policy).end_of_data == "strict"  # observe's own


def test_the_serve_help_is_the_settings_docs_and_defaults():
    text = " ".join(CliRunner().invoke(main, ["serve", "--help"], terminal_width=10_000).output.split())
    for name, flag in (("smtp", "--smtp"), ("workers", "--workers"), ("driver", "--driver"),
                       ("event_log_keep", "--event-log-keep"), ("tls_cert", "--tls-cert")):
        assert flag in text and Settings.doc(name) in text
    assert f"[default: {DEFAULTS.smtp}]" in text and "[default: 127.0.0.1:8025]" in text


def test_docs_policies_lists_every_server_key_with_its_default():
    block = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S)[1]
    documented = tomllib.loads(block)["server"]
    assert set(documented) == set(KEYS)
    assert all(documented[key] == getattr(DEFAULTS, key) for key in KEYS)
