"""The bench runs end to end with tiny counts: both servers start, take mail, hold idle
connections, serve POP3, and everything started is stopped (bench/README.md)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import aiosmtpd  # noqa: F401,E402  (test dependencies: the bench needs them)
import psutil  # noqa: F401,E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(60)
def test_bench_smoke_run(tmp_path):
    out = tmp_path / "bench.json"
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--scale", "0.001", "--concurrency", "2",
         "--sizes", "2048", "--rcpts", "1", "--rounds", "2", "--idle", "20", "--pop-scale", "0.01", "--generator", "loadgen",
         "--workdir", str(work), "--json", str(out), "--timeout", "20"],
        capture_output=True, text=True, timeout=55, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = result["throughput"]
    assert [(r["policy"], r["signed"]) for r in rows] == [("open", False), ("observe", True)]
    for row in rows:
        for server in ("forgelab", "aiosmtpd"):
            assert row[server]["ok"] == row["messages"] and row[server]["failed"] == 0, row
            assert row[server]["rate"] > 0 and len(row[server]["rates"]) == 2  # the servers took turns
    forgelab_idle, aiosmtpd_idle = result["idle"]
    assert forgelab_idle["held"] == 20 and forgelab_idle["new_client_ok"] == 5
    assert aiosmtpd_idle["held"] == 20
    pop1k, pop20k = result["pop3"]
    assert pop1k["messages"] == 10 and pop20k["messages"] == 200 and pop20k["retr"] == 200
    assert "| policy | size |" in proc.stdout
    assert "[met]" in proc.stdout or "[NOT MET]" in proc.stdout
    # Everything it started is gone: the delivered mail shows the servers really wrote it.
    assert any((work / "open" / "data" / "mail" / "rcpt" / "new").iterdir())
    # The observe rows are the legitimate signed traffic they claim to be: every check passes.
    stored = next((work / "observe" / "data" / "mail" / "rcpt" / "new").iterdir()).read_text()
    for verdict in ("spf-helo=pass", "iprev=pass", "spf=pass", "dkim=pass", "dmarc=pass", "mismatch=pass",
                    "lookalike=pass", "display-name=pass"):
        assert f"X-Forgelab-Verdict: {verdict} " in stored, verdict


@pytest.mark.timeout(60)
def test_hooks_script_times_every_defence_of_the_policy():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "hooks.py"), "--messages", "20"],
                          capture_output=True, text=True, timeout=55, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.startswith("policy observe: ") and "µs of CPU per message in all" in proc.stdout
    timed = {line.split("µs", 1)[1].strip() for line in proc.stdout.splitlines()[1:]}
    for hook in ("forgelab_message:dkim", "forgelab_message:dmarc", "forgelab_mail_from:spf", "forgelab_helo:iprev",
                 "forgelab_message:mismatch", "forgelab_add_headers:authres", "delivery (add_headers, headers, file)"):
        assert hook in timed, proc.stdout
