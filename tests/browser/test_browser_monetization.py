"""A real browser pays for an article of the example blog (headless Chromium, Selenium).

The Flask blog (``examples/flask_monetized_blog.py``) runs on a loopback server; its
receiver is a local account of the bundled connector running in-process.  The browser
loads an article page; a stand-in ``window.monetize`` injected before any page script
records the receiver URL and performs the SPSP query (``fetch`` with ``Accept:
application/spsp+json``), as the 2018 extensions did.  The test's Python client then pays
that destination through the connector; the page's script, waiting on the monetized
route, receives the article body (200) and shows it.  A screenshot goes to
``test-artifacts/`` (git-ignored).

Needs the Debian packages ``chromium`` and ``chromium-driver`` (skipped with a reason when
no chromium binary exists) and the ``selenium`` package.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from werkzeug.serving import make_server

from ilp_receiver._portal import BlockingPortal
from ilp_receiver.client import AsyncPaymentClient
from ilp_receiver.spsp import parse_spsp_response
from ilp_receiver_flask import get_service

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SECRET = bytes(range(32))

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium binary (apt-get install chromium chromium-driver)",
)

#: The stand-in for an era-A Web Monetization extension (RFC 28 drafts 1-2).
STAND_IN_MONETIZE = """
window.__monetize = {receiver: null, status: null, spsp: null, error: null};
window.monetize = function (options) {
  window.__monetize.receiver = options.receiver;
  return fetch(options.receiver, {headers: {Accept: "application/spsp+json"}})
    .then(function (response) {
      window.__monetize.status = response.status;
      return response.json();
    })
    .then(function (spsp) { window.__monetize.spsp = spsp; })
    .catch(function (error) { window.__monetize.error = String(error); throw error; });
};
"""


def load_blog() -> ModuleType:
    path = ROOT / "examples" / "flask_monetized_blog.py"
    spec = importlib.util.spec_from_file_location("example_browser_blog", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Site:
    """The blog on a loopback server, its connector, and the reader's paying client."""

    def __init__(self) -> None:
        blog = load_blog()
        self.portal = BlockingPortal("test-browser")
        self.connector = self.portal.call(blog.start_connector)
        self.payer = AsyncPaymentClient(self.connector.local_link("reader"))
        self.portal.call(self.payer.start)
        self.app = blog.create_app(
            self.connector.local_link("blog"), secret=SECRET, portal=self.portal
        )
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.body_text: str = blog.ARTICLES["interledger"]["body"]

    def pay(self, spsp: dict[str, Any], amount: int) -> None:
        answer = parse_spsp_response(json.dumps(spsp).encode())
        self.portal.call(self.payer.pay, answer, amount)

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)
        get_service(self.app).stop()
        self.portal.call(self.payer.close)
        self.portal.call(self.connector.stop)
        self.portal.stop()


@pytest.fixture
def site() -> Iterator[Site]:
    running = Site()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ilp-chromium-")
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1024,768",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_browser_pays_and_reads_the_article(site: Site, browser: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": STAND_IN_MONETIZE})
    browser.get(f"{site.base}/articles/interledger")
    wait = WebDriverWait(browser, 20)

    # the page's client.js called window.monetize with this visitor's SPSP endpoint
    spsp = wait.until(lambda d: d.execute_script("return window.__monetize.spsp"))
    state = browser.execute_script("return window.__monetize")
    cookie = browser.get_cookie("__monetizer")
    assert cookie is not None
    assert cookie.get("httpOnly") is False
    assert state["receiver"] == f"{site.base}/__monetizer/{cookie['value']}"
    assert state["status"] == 200
    visitor_id = cookie["value"].split(".")[0]
    assert spsp["destination_account"].split(".")[-3] == visitor_id

    # the article body is locked until the money arrives: pay through the connector
    assert site.body_text not in browser.find_element("id", "content").text
    site.pay(spsp, 250)

    wait.until(lambda d: d.find_element("id", "receipt").get_attribute("data-status") is not None)
    wait.until(lambda d: "Paid" in d.find_element("id", "receipt").text)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser-monetization.png"))
    assert browser.find_element("id", "receipt").get_attribute("data-status") == "200"
    assert browser.find_element("id", "content").text == site.body_text
    assert browser.find_element("id", "receipt").text == "Paid 100 units; 150 left."
    assert browser.find_element("id", "status").text == f"Monetized by visitor {visitor_id}"
    assert (ARTIFACTS / "browser-monetization.png").stat().st_size > 0
