"""Fixtures more than one test file uses."""
import pytest

from forgelab import speedups
from forgelab.drivers.smtp import DRIVERS
from forgelab.web import WebServer

speedups.install()  # as serve does; FORGELAB_SPEEDUPS=0 runs the suite on the plain path


@pytest.fixture
def lab_with_web(forgelab_server):
    """``start(policy)`` -> ``(lab, web)``: a running lab with its web view on a free port; stopped after."""
    webs = []

    def start(policy="observe"):
        lab = forgelab_server(policy=policy)
        web = WebServer(lab, port=0).start()
        webs.append(web)
        return lab, web

    yield start
    for web in webs:
        web.stop()


# Modules whose tests run against both SMTP drivers (serve --driver): every other test uses the default.
BOTH_DRIVERS = {"test_smtp_server", "test_smtp_drivers", "test_worksheet", "test_docs_worksheet", "test_tls",
                "test_auth_smtp", "test_hardening_limits", "test_hardening_safety", "test_fuzz_servers",
                "test_durability", "test_policies_e2e", "test_workers", "test_refusal_replies", "test_stored_copies"}


def pytest_generate_tests(metafunc):
    if "forgelab_server" in metafunc.fixturenames and metafunc.module.__name__.rpartition(".")[2] in BOTH_DRIVERS:
        metafunc.parametrize("smtp_driver", DRIVERS, indirect=True)


@pytest.fixture
def smtp_driver(request):
    return getattr(request, "param", "threads")


@pytest.fixture
def forgelab_server(forgelab_server, smtp_driver):
    """The plugin's ``forgelab_server``, with the SMTP driver of the test's parameter."""
    def start(policy="observe", plugins=(), **settings):
        settings.setdefault("driver", smtp_driver)
        return forgelab_server(policy, plugins, **settings)

    return start
