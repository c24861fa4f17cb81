"""The command line: clear errors, no tracebacks, a banner that tells a student where to start."""
import signal
import socket
import subprocess
import sys
import time

from click.testing import CliRunner

from forgelab.cli.main import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(*args, data_dir) -> subprocess.Popen:
    args = args if "--web" in args else (*args, "--web", "off")
    args = args if "--smtps" in args else (*args, "--smtps", "127.0.0.1:0", "--pop3s", "127.0.0.1:0")
    return subprocess.Popen([sys.executable, "-m", "forgelab", "serve", "--data", str(data_dir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_unknown_option_is_a_click_error_with_exit_2():
    result = CliRunner().invoke(main, ["serve", "--frobnicate"])
    assert result.exit_code == 2 and "No such option '--frobnicate'" in result.output


def test_bad_host_port_is_a_click_error():
    result = CliRunner().invoke(main, ["serve", "--smtp", "127.0.0.1:99999"])
    assert result.exit_code == 2 and "out of range" in result.output


def test_port_in_use_is_one_line_naming_the_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = serve("--smtp", f"127.0.0.1:{port}", "--pop3", f"127.0.0.1:{free_port()}", data_dir=tmp_path)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert f"127.0.0.1:{port}" in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_invalid_policy_file_stops_start_up_naming_file_key_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[actions.spf]\nfail = "maybe"\n')
    proc = serve("--policy", str(bad), "--smtp", f"127.0.0.1:{free_port()}", "--pop3", f"127.0.0.1:{free_port()}",
                 data_dir=tmp_path)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "bad.toml, line 2: key 'actions.spf.fail'" in err and "Traceback" not in err


def test_misspelt_hook_in_a_plugin_stops_start_up(tmp_path):
    plugin = tmp_path / "typo.py"
    plugin.write_text("from forgelab import hookimpl\n\n@hookimpl\ndef forgelab_mesage(message):\n    pass\n")
    result = CliRunner().invoke(main, ["plugins", "--plugin", str(plugin)])
    assert result.exit_code == 2 and "forgelab_mesage is not a forgelab hook" in result.output and "object at 0x" not in result.output


def test_plugins_lists_builtin_defences_and_their_hooks():
    result = CliRunner().invoke(main, ["plugins", "--policy", "strict"])
    assert result.exit_code == 0
    rows = dict(line.split(None, 1) for line in result.output.splitlines())
    assert "forgelab_mail_from" in rows["spf"] and "forgelab_message" in rows["dmarc"]
    assert "forgelab_vrfy" in rows["disclosure"]


def test_serve_banner_then_clean_stop_on_sigterm(tmp_path):
    smtp, pop3, web = free_port(), free_port(), free_port()
    proc = serve("--smtp", f"127.0.0.1:{smtp}", "--pop3", f"127.0.0.1:{pop3}", "--web", f"127.0.0.1:{web}",
                 "--policy", "strict", data_dir=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", smtp), timeout=2) as s:
                    assert s.recv(200).startswith(b"220 ")
                    s.sendall(b"QUIT\r\n")
                    s.recv(200)
                break
            except OSError:
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"telnet 127.0.0.1 {smtp}" in out and f"telnet 127.0.0.1 {pop3}" in out
    assert "alice@corp.example" in out and "rabbit-hole" in out and "policy strict" in out
    assert "bank.example" in out
    assert "C: QUIT" in out and "forgelab stopped" in out
    assert f"web    http://127.0.0.1:{web}" in out


def test_web_port_in_use_stops_start_up_and_frees_the_mail_ports(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        smtp = free_port()
        proc = serve("--smtp", f"127.0.0.1:{smtp}", "--pop3", f"127.0.0.1:{free_port()}", "--web", f"127.0.0.1:{port}",
                     data_dir=tmp_path)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and f"127.0.0.1:{port}" in err and "Traceback" not in err


def test_keygen_prints_a_zone_line(tmp_path):
    result = CliRunner().invoke(main, ["keygen", "shop.example", "--selector", "s9", "--algorithm", "ed25519",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0
    assert result.stdout.startswith('s9._domainkey.shop.example. 3600 IN TXT "v=DKIM1; k=ed25519; p=')
    assert (tmp_path / "s9._domainkey.shop.example.pem").exists()


def test_keygen_does_not_overwrite_a_key_without_force(tmp_path):
    args = ["keygen", "shop.example", "--selector", "s1", "--algorithm", "ed25519", "--out", str(tmp_path)]
    assert CliRunner().invoke(main, args).exit_code == 0
    before = (tmp_path / "s1._domainkey.shop.example.pem").read_bytes()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "exists; --force replaces it" in again.output
    assert (tmp_path / "s1._domainkey.shop.example.pem").read_bytes() == before
    assert CliRunner().invoke(main, args + ["--force"]).exit_code == 0
    assert (tmp_path / "s1._domainkey.shop.example.pem").read_bytes() != before


def test_policies_show_refuses_an_unknown_defence_as_serve_does(tmp_path):
    bad = tmp_path / "b7.toml"
    bad.write_text('extends = "strict"\n[defences.nosuch]\n')
    result = CliRunner().invoke(main, ["policies", "show", str(bad)])
    assert result.exit_code == 2 and "unknown defence 'nosuch'" in result.output


def test_plugin_with_no_hook_and_plugin_module_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "mydefence.py").write_text("from forgelab import Verdict, hookimpl\nname = 'mine'\n\n"
                                           "@hookimpl\ndef forgelab_message(message):\n    return None\n")
    monkeypatch.chdir(tmp_path)
    found = CliRunner().invoke(main, ["plugins", "--plugin", "mydefence"])
    assert found.exit_code == 0 and "mine" in found.output
    empty = CliRunner().invoke(main, ["plugins", "--plugin", "json"])
    assert empty.exit_code == 2 and "implements no forgelab hook" in empty.output


def test_an_installed_entry_point_plugin_loads_only_when_the_policy_names_it(tmp_path, monkeypatch):
    import sys

    from forgelab.core.policy import load_policy
    from forgelab.core.registry import build_plugin_manager, describe

    (tmp_path / "labdefence.py").write_text(
        "from forgelab import Verdict, hookimpl\n\nclass LabDefence:\n    name = 'lab-defence'\n"
        "    def __init__(self, settings):\n        self.word = settings.get('word', 'x')\n"
        "    @hookimpl\n    def forgelab_message(self, message):\n        return Verdict(self.name, 'pass', self.word)\n")
    info = tmp_path / "labdefence-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: labdefence\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[forgelab]\nlab-defence = labdefence:LabDefence\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plain = build_plugin_manager(load_policy("strict"))
    assert "lab-defence" not in dict(describe(plain))
    policy = tmp_path / "with.toml"
    policy.write_text('extends = "strict"\n[defences.lab-defence]\nword = "hello"\n')
    named = build_plugin_manager(load_policy(str(policy)))
    assert dict(describe(named))["lab-defence"] == ["forgelab_message"]
    assert named.get_plugin("lab-defence").word == "hello"
    sys.modules.pop("labdefence", None)
