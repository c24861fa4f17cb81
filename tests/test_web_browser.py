"""The web view in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by
Selenium against a real forgelab on loopback. Skips only when Chromium or its driver is missing."""
import os
import shutil
import smtplib
import socket
import tempfile
import time

import pytest

from selenium import webdriver  # a test dependency: missing it is an error, not a skip
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = os.environ.get("FORGELAB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FORGELAB_CHROMEDRIVER", "/usr/bin/chromedriver")
ATTACKER = "127.0.66.1"
WAIT = 15  # seconds for anything the page should show

pytestmark = [
    pytest.mark.timeout(90),
    # CI (CI=true) installs them: there a missing browser is a failure, never a silent skip.
    pytest.mark.skipif(not os.environ.get("CI") and not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
                       reason=f"headless browser tests need {CHROMIUM} and {CHROMEDRIVER} "
                              "(Debian: apt-get install chromium chromium-driver)"),
]

XSS_SUBJECT = "<script>window.__xss='subject'</script>"
XSS_NAME = "<img src=x onerror=window.__xss='name'>"
XSS_MESSAGE = (
    f'From: "{XSS_NAME}" <ceo@bank.example>\r\nTo: alice@corp.example\r\nSubject: {XSS_SUBJECT}\r\n'
    "Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <xss@bank.example>\r\nContent-Type: text/html\r\n\r\n"
    "<script>window.__xss='body'</script><img src=x onerror=\"window.__xss='body-img'\">"
    "<svg onload=\"window.__xss='svg'\"></svg>\r\n").encode()


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="forgelab-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium never tries to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def served(lab_with_web):
    return lab_with_web


def send(lab, data, mail_from="alerts@bank.example", source_ip=ATTACKER):
    with smtplib.SMTP(*lab.smtp.address, timeout=10, source_address=(source_ip, 0)) as client:
        client.ehlo("client.example")
        return client.sendmail(mail_from, ["alice@corp.example"], data)


def plain(subject: str) -> bytes:
    return (f"From: Bank <alerts@bank.example>\r\nTo: alice@corp.example\r\nSubject: {subject}\r\n"
            "Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <b@bank.example>\r\n\r\nHello.\r\n").encode()


def wait(driver, condition, message):
    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(lambda d: condition(d), message)


def open_live(driver, url):
    driver.get(url)
    wait(driver, lambda d: d.find_element(By.ID, "live").text == "live", "the event stream did not connect")
    driver.execute_script("window.__sameDocument = 'yes';")  # gone if the page reloads


def no_alert(driver) -> bool:
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_a_message_sent_over_smtp_appears_on_the_open_page_without_reload(browser, served):
    lab, web = served()
    open_live(browser, web.url + "/")
    assert "Live-arrival" not in browser.find_element(By.ID, "messages").text
    send(lab, plain("Live-arrival check"))
    row = wait(browser, lambda d: next((r for r in d.find_elements(By.CSS_SELECTOR, "#messages tr")
                                        if "Live-arrival check" in r.text), None), "the message never appeared")
    assert "tag" in row.text and "spf=fail" in row.text  # observe tags the forgery, SPF failed
    sessions = browser.find_element(By.ID, "sessions").text
    assert ATTACKER in sessions
    assert browser.execute_script("return window.__sameDocument") == "yes"


def smtp_dialogue(sock: socket.socket):
    """A reader of the socket, and ``say(line)``: send one command, return its last reply line."""
    reader = sock.makefile("rb")

    def say(line: bytes) -> bytes:
        sock.sendall(line + b"\r\n")
        reply = reader.readline()
        while reply[3:4] == b"-":
            reply = reader.readline()
        return reply
    return reader, say


def test_a_session_page_shows_each_verdict_under_its_command_as_it_happens(browser, served):
    lab, web = served()
    with socket.create_connection(lab.smtp.address, timeout=10, source_address=(ATTACKER, 0)) as sock:
        reader, say = smtp_dialogue(sock)
        assert reader.readline().startswith(b"220")
        assert say(b"EHLO mail.phish.example").startswith(b"250")
        session_id = lab.recorded("session.open")[-1]["session"]["id"]
        open_live(browser, f"{web.url}/sessions/{session_id}")
        assert say(b"MAIL FROM:<alerts@bank.example>").startswith(b"250")
        dialogue = browser.find_element(By.ID, "dialogue")
        verdict = wait(browser, lambda d: next((li for li in dialogue.find_elements(By.CSS_SELECTOR, "li.verdict")
                                                if li.text.startswith("spf=fail")), None), "no live SPF verdict")
        items = dialogue.find_elements(By.TAG_NAME, "li")
        texts = [li.text for li in items]
        at = texts.index(verdict.text)
        command = next(t for t in reversed(texts[:at]) if t.startswith("C:"))
        assert "MAIL FROM:<alerts@bank.example>" in command
        assert say(b"QUIT").startswith(b"221")
    wait(browser, lambda d: "closed" in d.find_element(By.ID, "session-state").text, "the close never showed")
    assert browser.execute_script("return window.__sameDocument") == "yes"


def test_attacker_markup_never_executes_on_any_page(browser, served):
    lab, web = served()
    open_live(browser, web.url + "/")
    send(lab, XSS_MESSAGE, mail_from="ceo@bank.example")
    wait(browser, lambda d: XSS_SUBJECT in d.find_element(By.ID, "messages").text, "the payload row never appeared")
    event = lab.recorded("message.delivered")[-1]
    pages = ["/", f"/messages/{event['message_id']}", f"/sessions/{event['session_id']}"]
    for path in pages:
        if path != "/":
            browser.get(web.url + path)
        time.sleep(0.3)  # give any injected handler (onerror, onload) its chance to run
        assert no_alert(browser), path
        assert browser.execute_script("return window.__xss") is None, path
        # Escaped, not merely blocked by the CSP: no element the payload describes exists at all.
        assert browser.execute_script(
            "return document.querySelectorAll('[onerror], [onload], img[src=x], svg, iframe').length") == 0, path
        scripts = browser.execute_script("return [...document.scripts].map(s => s.getAttribute('src'))")
        assert scripts == ["/static/app.js"], path
    message_page = web.url + pages[1]
    browser.get(message_page)
    assert browser.find_element(By.CSS_SELECTOR, "h1.subject-line").text == XSS_SUBJECT
    assert "<script>window.__xss='body'</script>" in browser.find_element(By.ID, "source").text
    shown = browser.find_elements(By.CSS_SELECTOR, "table.display .shown")[0].text
    assert shown == XSS_NAME  # what a name-only client shows: the payload, as text
    csp_errors = [e for e in browser.get_log("browser") if "Content Security Policy" in e.get("message", "")]
    assert csp_errors == []  # nothing even tried to run: escaping held before the CSP had to


def test_the_policy_switch_on_the_page_takes_effect_on_the_next_message(browser, served):
    lab, web = served("observe")
    send(lab, plain("Before the switch"))
    browser.get(web.url + "/policy")
    browser.find_element(By.CSS_SELECTOR, "button.switch[data-policy='strict']").click()
    wait(browser, lambda d: "Now running policy strict" in d.find_element(By.ID, "policy-status").text,
         "the switch was not confirmed")
    assert browser.find_element(By.ID, "current-policy").text == "strict"
    assert browser.find_element(By.ID, "policy-name").text == "strict"
    assert lab.context.rules.policy.name == "strict"
    open_live(browser, web.url + "/")
    with pytest.raises(smtplib.SMTPException):
        send(lab, plain("After the switch"))
    row = wait(browser, lambda d: next((r for r in d.find_elements(By.CSS_SELECTOR, "#messages tr")
                                        if "refused (reject)" in r.text), None), "the refusal never appeared")
    assert row.find_element(By.CSS_SELECTOR, ".chip.result-fail")
    tagged = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#messages tr") if "Before the switch" in r.text]
    assert tagged and "tag" in tagged[0]


def test_every_page_renders_and_the_attack_page_runs_the_catalogue(browser, served, tmp_path):
    lab, web = served()
    send(lab, plain("For the screenshots"))
    event = lab.recorder.wait_for("message.delivered")[-1]
    shots = os.environ.get("FORGELAB_SCREENSHOTS")  # set it to keep a PNG of each page
    for name, path in [("live", "/"), ("message", f"/messages/{event['message_id']}"),
                       ("session", f"/sessions/{event['session_id']}"), ("policy", "/policy"), ("lab", "/lab"),
                       ("attacks", "/attacks")]:
        browser.get(web.url + path)
        wait(browser, lambda d: d.find_element(By.TAG_NAME, "h1").text, f"{path} has no heading")
        assert no_alert(browser)
        if shots:
            os.makedirs(shots, exist_ok=True)
            browser.save_screenshot(os.path.join(shots, f"{name}.png"))
    browser.get(web.url + "/attacks")
    browser.find_element(By.ID, "send-attacks").click()
    wait(browser, lambda d: d.find_element(By.ID, "attacks-status").get_attribute("data-state") == "running",
         "the run never started")
    WebDriverWait(browser, 60, poll_frequency=0.25).until(
        lambda d: d.find_element(By.ID, "attacks-status").get_attribute("data-state") != "running",
        "the catalogue did not finish within 60 s")
    assert browser.find_element(By.ID, "attacks-status").get_attribute("data-state") == "done", \
        browser.find_element(By.ID, "attacks-error").text
    sent = browser.find_elements(By.CSS_SELECTOR, "#sent-body tr")
    assert len(sent) > 10
    browser.get(web.url + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#messages tr")
    assert len(rows) > 10 and any("reject" in r.text or "tag" in r.text for r in rows)


def test_a_message_refused_at_data_shows_its_from_and_subject_live_and_after_reload(browser, served):
    lab, web = served("strict")
    subject = "<script>window.__xss='refused'</script> wire now"
    data = (f"From: Carol <carol@corp.example>\r\nTo: alice@corp.example\r\nSubject: {subject}\r\n"
            "Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\npay now\r\n.\r\n").encode()
    with socket.create_connection(lab.smtp.address, timeout=10, source_address=(ATTACKER, 0)) as sock:
        reader, say = smtp_dialogue(sock)
        assert reader.readline().startswith(b"220")
        assert say(b"EHLO mail.phish.example").startswith(b"250")
        session_id = lab.recorded("session.open")[-1]["session"]["id"]
        open_live(browser, f"{web.url}/sessions/{session_id}")
        for line, code in ((b"MAIL FROM:<boss@phish.example>", b"250"), (b"RCPT TO:<alice@corp.example>", b"250"),
                           (b"DATA", b"354"), (data[:-2], b"550"), (b"QUIT", b"221")):
            assert say(line).startswith(code), line

    def shown(d):
        return next((e.text for e in d.find_elements(By.CSS_SELECTOR, "#dialogue .refused-mail")), None)
    live = wait(browser, shown, "the refused message's From and Subject never showed live")
    assert "carol@corp.example" in live and subject in live  # as text: the markup never ran
    assert browser.execute_script("return window.__sameDocument") == "yes"
    message_id = lab.recorded("message.rejected")[-1]["message_id"]
    browser.get(f"{web.url}/messages/{message_id}")
    assert subject in browser.find_element(By.CSS_SELECTOR, "h1").text
    assert "pay now" in browser.find_element(By.ID, "source").text
    assert browser.execute_script("return window.__xss") is None and no_alert(browser)


def test_the_search_box_filters_as_you_type_escapes_and_stays_live(browser, served):
    lab, web = served()
    send(lab, plain("Quarterly statement"))
    send(lab, XSS_MESSAGE, mail_from="ceo@bank.example")
    lab.recorder.wait_for("message.delivered", 2)
    open_live(browser, web.url + "/")

    def subjects(d):
        return [td.text for td in d.find_elements(By.CSS_SELECTOR, "#messages td.subject")]

    box = browser.find_element(By.ID, "search")
    box.send_keys("subject:script")
    wait(browser, lambda d: subjects(d) == [XSS_SUBJECT], "the search did not narrow the list to one message")
    assert browser.execute_script("return window.__xss === undefined")  # shown as text, never run
    box.clear()
    box.send_keys("subject:quarterly")
    wait(browser, lambda d: subjects(d) == ["Quarterly statement"], "the list did not follow the new query")
    send(lab, plain("Quarterly report"))  # a new match arrives while the query is typed in: it shows up
    wait(browser, lambda d: subjects(d) == ["Quarterly report", "Quarterly statement"], "the list is not live")
    box.send_keys(' nosuch:"x')
    wait(browser, lambda d: "unclosed quote" in d.find_element(By.ID, "search-status").text
         or "unknown field" in d.find_element(By.ID, "search-status").text, "a bad query was not explained")
    assert browser.execute_script("return window.__sameDocument") == "yes"
