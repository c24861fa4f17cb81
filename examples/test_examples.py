"""The example plugins, tested the way a plugin author would: a real server, a real client."""
import smtplib
from pathlib import Path

import pytest

HERE = Path(__file__).parent
MESSAGE = "From: Shop <orders@shop.example>\r\nTo: alice@corp.example\r\nSubject: {}\r\n\r\nhello\r\n"


def test_subject_tagger_tags_in_observe_and_rejects_in_strict(forgelab_server):
    observe = forgelab_server(policy="observe", plugins=[str(HERE / "subject_tagger.py")])
    with smtplib.SMTP(*observe.smtp.address, timeout=10) as client:
        client.sendmail("orders@shop.example", ["alice@corp.example"], MESSAGE.format("URGENT wire transfer"))
    (delivered,) = observe.recorder.wait_for("message.delivered")
    checks = {v["check"]: v["result"] for v in delivered["verdicts"]}
    assert checks["subject-keywords"] == "fail" and delivered["action"] == "tag"

    strict = forgelab_server(policy="strict", plugins=[str(HERE / "subject_tagger.py")])
    with smtplib.SMTP(*strict.smtp.address, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("orders@shop.example", ["alice@corp.example"], MESSAGE.format("Your gift card"))
    assert refused.value.smtp_code == 550 and b"[subject-keywords]" in refused.value.smtp_error


def test_greylist_tempfails_first_attempt_then_accepts(forgelab_server, tmp_path):
    policy = tmp_path / "grey.toml"
    policy.write_text('extends = "strict"\n[defences.greylist]\ndelay = 0.5\n')
    lab = forgelab_server(policy=str(policy), plugins=[str(HERE / "greylist.py")])
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.ehlo("client.example")
        client.mail("orders@shop.example")
        code, text = client.rcpt("alice@corp.example")
        assert code == 451 and b"[greylist]" in text
        client.rset()
    import time
    time.sleep(0.6)
    with smtplib.SMTP(*lab.smtp.address, timeout=10) as client:
        client.ehlo("client.example")
        client.mail("orders@shop.example")
        assert client.rcpt("alice@corp.example")[0] == 250
