"""Fixtures more than one test file uses."""
import pytest

from forgelab.web import WebServer


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
