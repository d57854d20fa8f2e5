"""A real browser pays for an article of the example blog (headless Chromium, Selenium).

The Flask blog (``examples/flask_monetized_blog.py``) runs on a loopback server; its
receiver is a local account of the bundled connector running in-process.  The browser
loads an article page with a stand-in for a Web Monetization extension injected before
any page script; the test's Python client plays the money side (the extension's
provider) and pays through the connector; the page's script, waiting on the monetized
route, receives the article body (200) and shows it.  One stand-in per era:

* **A** -- ``window.monetize``: records the receiver URL and performs the SPSP query
  (``fetch`` with ``Accept: application/spsp+json``), as the 2018 extensions did; paid
  with PSK2.
* **B** -- ``window.WebMonetization.monetize``: records the ``destinationAccount`` and
  ``sharedSecret`` the page's client script got from the server (SPSP v4) and the
  ``setSendMax`` of the stream it opened; paid over STREAM.
* **C** -- ``document.monetization``: reads ``<meta name="monetization">``, makes up a
  ``Web-Monetization-Id`` and performs the SPSP v4 query with it (no cookies); paid over
  STREAM, then ``monetizationstart`` / ``monetizationprogress`` are dispatched as the
  browser did after the first fulfilled packet, and the page presents the id to the
  guarded route.

Screenshots go to ``test-artifacts/`` (git-ignored).

Needs the Debian packages ``chromium`` and ``chromium-driver`` (skipped with a reason when
no chromium binary exists) and the ``selenium`` package.
"""

from __future__ import annotations

import base64
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

from ilp_receiver.client import AsyncPaymentClient, PaymentResult, StreamDestination
from ilp_receiver.portal import BlockingPortal
from ilp_receiver.spsp import SPSP4_MEDIA_TYPE, SetupProtocol, parse_spsp_response
from ilp_receiver_flask import get_monetization, get_service

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

#: The stand-in for an era-B polyfill (RFC 28 drafts 3-4): the page drives the STREAM
#: connection ``monetize`` gives it; the money itself is paid by the test.
STAND_IN_ERA_B = """
window.__eraB = {args: null, streams: 0, sendMax: null};
window.WebMonetization = {
  monetize: function (options) {
    window.__eraB.args = {
      destinationAccount: options.destinationAccount,
      sharedSecret: options.sharedSecret
    };
    return Promise.resolve({
      createStream: function () {
        window.__eraB.streams += 1;
        return {setSendMax: function (amount) { window.__eraB.sendMax = String(amount); }};
      }
    });
  }
};
"""

#: The stand-in for an era-C extension (RFC 28 drafts 5-9, Feb 2019 onward).
STAND_IN_ERA_C = """
(function () {
  var state = {pointer: null, requestId: null, status: null, contentType: null,
               spsp: null, error: null};
  window.__eraC = state;
  var monetization = new EventTarget();
  monetization.state = "pending";
  document.monetization = monetization;

  function uuid() {
    var b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(b, function (x) {
      return (x + 0x100).toString(16).slice(1);
    }).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20),
            hex.slice(20)].join("-");
  }

  function endpoint(pointer) {
    if (pointer.charAt(0) !== "$") { return pointer; }
    var url = new URL("https://" + pointer.slice(1));
    return url.origin + (url.pathname === "/" ? "/.well-known/pay" : url.pathname);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var meta = document.head.querySelector('meta[name="monetization"]');
    if (!meta) { state.error = "no monetization meta tag"; return; }
    state.pointer = meta.getAttribute("content");
    state.requestId = uuid();
    fetch(endpoint(state.pointer), {
      credentials: "omit",
      headers: {
        "Accept": "application/spsp4+json, application/spsp+json",
        "Web-Monetization-Id": state.requestId
      }
    }).then(function (response) {
      state.status = response.status;
      state.contentType = response.headers.get("Content-Type");
      return response.json();
    }).then(function (spsp) { state.spsp = spsp; })
      .catch(function (error) { state.error = String(error); });
  });

  // what the browser did after every non-zero fulfilled packet (the test calls it)
  window.__eraCFulfilled = function (amount, assetCode, assetScale) {
    if (monetization.state !== "started") {
      monetization.state = "started";
      monetization.dispatchEvent(new CustomEvent("monetizationstart", {
        detail: {paymentPointer: state.pointer, requestId: state.requestId}
      }));
    }
    monetization.dispatchEvent(new CustomEvent("monetizationprogress", {
      detail: {amount: String(amount), assetCode: assetCode, assetScale: assetScale}
    }));
  };
})();
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

    def pay(
        self, spsp: dict[str, Any], amount: int, protocol: SetupProtocol = "psk2"
    ) -> PaymentResult:
        answer = parse_spsp_response(json.dumps(spsp).encode(), protocol=protocol)
        result: PaymentResult = self.portal.call(self.payer.pay, answer, amount)
        return result

    def bucket(self, monetization_id: str) -> int:
        service = get_monetization(self.app)
        return service.balance(service.monetizer.ids.monetization_visitor(monetization_id))

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


def wait_for_receipt(browser: Any, screenshot: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_element("id", "receipt").get_attribute("data-status") is not None)
    wait.until(lambda d: "Paid" in d.find_element("id", "receipt").text)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / screenshot))
    assert (ARTIFACTS / screenshot).stat().st_size > 0


def test_browser_era_b_hands_a_stream_destination_to_monetize(site: Site, browser: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": STAND_IN_ERA_B})
    browser.get(f"{site.base}/articles/interledger")
    wait = WebDriverWait(browser, 20)

    # client.js asked the server for this visitor's STREAM details (SPSP v4) and passed
    # them to WebMonetization.monetize, then opened a stream and set its send maximum
    args = wait.until(lambda d: d.execute_script("return window.__eraB.args"))
    state = wait.until(lambda d: d.execute_script("return window.__eraB.sendMax && window.__eraB"))
    assert state["streams"] == 1
    assert int(state["sendMax"]) > 0
    cookie = browser.get_cookie("__monetizer")
    assert cookie is not None
    visitor_id = cookie["value"].split(".")[0]
    assert browser.execute_script("return window.monetizer.era") == "B"
    # a STREAM destination: one segment after the receiver's address, no spliced id
    destination = args["destinationAccount"]
    assert visitor_id not in destination
    assert len(base64.b64decode(args["sharedSecret"])) == 32

    assert site.body_text not in browser.find_element("id", "content").text
    target = StreamDestination(destination, base64.b64decode(args["sharedSecret"]))
    result = site.portal.call(site.payer.pay, target, 250)
    assert result.protocol == "stream"

    wait_for_receipt(browser, "browser-monetization-era-b.png")
    assert browser.find_element("id", "receipt").get_attribute("data-status") == "200"
    assert browser.find_element("id", "content").text == site.body_text
    assert browser.find_element("id", "receipt").text == "Paid 100 units; 150 left."
    assert browser.find_element("id", "status").text == f"Monetized by visitor {visitor_id}"


def test_browser_era_c_pays_over_stream(site: Site, browser: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": STAND_IN_ERA_C})
    browser.get(f"{site.base}/articles/interledger")
    wait = WebDriverWait(browser, 20)

    # the stand-in read the meta tag and queried it with its Web-Monetization-Id
    spsp = wait.until(lambda d: d.execute_script("return window.__eraC.spsp"))
    state = browser.execute_script("return window.__eraC")
    assert state["error"] is None
    assert state["pointer"] == f"{site.base}/__monetizer"
    assert state["status"] == 200
    assert state["contentType"] == SPSP4_MEDIA_TYPE
    request_id = state["requestId"]
    assert request_id not in spsp["destination_account"]
    # nothing is unlocked before the browser has paid and said so
    assert site.body_text not in browser.find_element("id", "content").text
    assert browser.execute_script("return window.monetizer.id") is None

    result = site.pay(spsp, 250, protocol="stream")
    assert (result.protocol, result.delivered_amount) == ("stream", 250)
    assert site.bucket(request_id) == 250
    # the browser's events after the first fulfilled packet: the page learns the id
    browser.execute_script("window.__eraCFulfilled(arguments[0], 'XYZ', 9)", 250)

    wait_for_receipt(browser, "browser-monetization-era-c.png")
    assert browser.execute_script("return window.monetizer.era") == "C"
    assert browser.execute_script("return window.monetizer.id") == request_id
    # the guarded route got the header, answered 200 and debited the id's bucket
    assert browser.find_element("id", "receipt").get_attribute("data-status") == "200"
    assert browser.find_element("id", "content").text == site.body_text
    assert browser.find_element("id", "receipt").text == "Paid 100 units; 150 left."
    assert browser.find_element("id", "status").text == f"Monetized by visitor {request_id}"
    assert site.bucket(request_id) == 150
