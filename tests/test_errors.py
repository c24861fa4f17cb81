"""The ForgelabError family: what a user can fix is one line, exit code 2, never a traceback."""
import subprocess
import sys

import pytest

from forgelab.app import Forgelab, Settings
from forgelab.lab.directory import DirectoryError
from forgelab.lab.dns import ZoneError
from forgelab.errors import (BindError, ConfigError, DataDirError, ForgelabError, PluginError, PolicyError,
                             WorkerError, WorldError)
from forgelab.store.nofollow import SymlinkRefused
from forgelab.lab.tls import TlsError


@pytest.mark.parametrize("error, still", [
    (PolicyError, ValueError), (ConfigError, ValueError), (ZoneError, ValueError), (DirectoryError, ValueError),
    (TlsError, ValueError), (PluginError, RuntimeError), (WorkerError, RuntimeError), (BindError, OSError),
    (DataDirError, OSError), (SymlinkRefused, OSError)])
def test_each_error_is_a_forgelab_error_and_still_what_it_was(error, still):
    assert issubclass(error, ForgelabError) and issubclass(error, still)


def test_the_lab_world_files_share_one_kind():
    assert all(issubclass(e, WorldError) for e in (ZoneError, DirectoryError, TlsError))
    assert issubclass(SymlinkRefused, DataDirError)


def serve(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forgelab", "serve", "--smtps", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--web", "off", "--smtp", "127.0.0.1:0",
                           "--pop3", "127.0.0.1:0", *args], capture_output=True, text=True, timeout=60)


def test_a_data_directory_that_cannot_be_made_is_one_line_naming_it_and_what_to_do(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    data = tmp_path / "file" / "data"
    done = serve(tmp_path, "--data", str(data))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: data directory {data} cannot be made: Not a directory; give another with --data"]


def test_a_bad_zone_file_is_exit_code_2_naming_the_file(tmp_path):
    zone = tmp_path / "bad.zone"
    zone.write_text("$ORIGIN lab.example.\n@ IN NOPE what\n")
    done = serve(tmp_path, "--data", str(tmp_path / "d"), "--zone", str(zone))
    assert done.returncode == 2 and str(zone) in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_web_address_without_a_web_view_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="web_view"):
        Forgelab(Settings(smtp="127.0.0.1:0", pop3="127.0.0.1:0", data_dir=tmp_path, web="127.0.0.1:0"))
