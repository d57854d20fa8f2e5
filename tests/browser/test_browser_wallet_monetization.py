"""A real browser unlocks an article paid the way browsers pay today (headless Chromium).

The Flask example ``examples/flask_wallet_monetization.py`` runs on a loopback server
with its wallet address pointing at the local fake Open Payments wallet
(``tests/op_fake.py``).  Chromium loads the page with a stand-in for the Web
Monetization extension injected before any page script.  As the extension does
(``src/content/polyfill.ts``, spec 13 §1), the stand-in reads the page's
``<link rel="monetization">`` and fires a ``MonetizationEvent`` named ``monetization``
(``bubbles: true``) *on the link element*, carrying ``amountSent`` ``{currency, value}``,
``paymentPointer`` (the wallet address paid) and ``incomingPayment`` (the URL of the
incoming payment at the site's wallet).  The event fires before the money settles, as
the extension's does; only then does the fake wallet's ``receivedAmount`` grow.  The
page's ``wm.js`` reports the payment, the server finds the growth by polling the wallet,
the page's ``whenBalance`` resolves and the guarded route unlocks the article.  A report
the wallet fails to answer is retried.  A screenshot is saved to the test's temporary
directory.
"""

from __future__ import annotations

import importlib.util
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

from ilp_receiver.portal import BlockingPortal
from ilp_receiver_flask import get_monetization, get_service
from tests.test_wm_adapters import Wallet

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium binary (apt-get install chromium chromium-driver)",
)

#: The stand-in for the Interledger Web Monetization extension (v1.0.0): its polyfill's
#: event class and where it dispatches the event.  ``pay`` is what the extension does on
#: a 201 to create-outgoing-payment.
STAND_IN_EXTENSION = """
(function () {
  class MonetizationEvent extends Event {
    constructor(type, init) {
      super(type, {bubbles: true});
      this.amountSent = init.amountSent;
      this.incomingPayment = init.incomingPayment;
      this.paymentPointer = init.paymentPointer;
      this.amount = null; this.assetCode = null; this.assetScale = null; this.receipt = null;
    }
  }
  window.MonetizationEvent = MonetizationEvent;
  var state = {href: null, fired: 0};
  window.__extension = state;
  document.addEventListener("DOMContentLoaded", function () {
    var link = document.querySelector('link[rel="monetization"]');
    state.href = link ? link.href : null;
  });
  state.pay = function (incomingPayment, value, currency) {
    var link = document.querySelector('link[rel="monetization"]');
    link.dispatchEvent(new MonetizationEvent("monetization", {
      amountSent: {currency: currency, value: value},
      incomingPayment: incomingPayment,
      paymentPointer: link.href
    }));
    state.fired += 1;
  };
})();
"""


def load_example() -> ModuleType:
    path = ROOT / "examples" / "flask_wallet_monetization.py"
    spec = importlib.util.spec_from_file_location("example_browser_wallet", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Site:
    """The example on a loopback server, its wallet a local fake."""

    def __init__(self, tmp_path: Path) -> None:
        self.module = load_example()
        self.wallet = Wallet()
        self.portal = BlockingPortal("test-browser-wallet")
        self.app = self.module.create_app(
            wallet_address=self.wallet.fake.wallet_address,
            store=str(tmp_path / "buckets.db"),
            monetization_secret="browser test secret, 32 bytes long",
            portal=self.portal,
            local_wallet=True,
        )
        verifier = get_monetization(self.app).service.verifier
        assert verifier is not None
        verifier.poll_initial = 0.2  # find the growth soon after it happens
        self.verifier = verifier
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)
        self.portal.call(self.verifier.close)
        get_service(self.app).stop()
        self.portal.stop()
        self.wallet.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    running = Site(tmp_path)
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


def test_browser_unlocks_after_the_wallet_receives(
    site: Site, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": STAND_IN_EXTENSION})
    browser.get(f"{site.base}/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.execute_script("return window.__extension.href"))
    assert browser.execute_script("return window.__extension.href") == (
        site.wallet.fake.wallet_address
    )
    assert browser.get_cookie("__monetizer") is not None
    assert browser.execute_script("return document.body.dataset.unlocked") is None

    # the extension created an incoming payment at the site's wallet and its outgoing
    # payment was accepted: the event fires, twice (two payments), before any money
    url = site.wallet.fake.create()
    price = site.module.PRICE
    for _ in range(2):
        browser.execute_script("window.__extension.pay(arguments[0], '0.25', 'USD')", url)
    wait.until(
        lambda d: d.execute_script(
            "var r = window.ilpWebMonetization.reports[arguments[0]];return r && r.status === 200;",
            url,
        )
    )
    report = browser.execute_script("return window.ilpWebMonetization.reports[arguments[0]]", url)
    assert report["attempts"] == 1  # one post for the two events
    assert browser.execute_script("return window.ilpWebMonetization.balance") == 0
    assert browser.find_element("id", "content").is_displayed() is False

    # the money settles at the wallet: receivedAmount grows
    site.wallet.fake.receive(url, price)
    wait.until(lambda d: d.execute_script("return document.body.dataset.unlocked") == "yes")
    content = browser.find_element("id", "content")
    assert content.is_displayed()
    assert "incoming payment" in content.text
    assert browser.execute_script("return window.ilpWebMonetization.balance") >= price

    # a report the wallet fails to answer (502) is retried, and then counts
    flaky = site.wallet.fake.create()
    site.wallet.fake.receive(flaky, 5)
    site.wallet.fake.modes[flaky] = "garbage"
    path = flaky[len(site.wallet.fake.base) :]
    browser.execute_script("window.__extension.pay(arguments[0], '0.05', 'USD')", flaky)
    wait.until(lambda _d: path in site.wallet.fake.requests)
    del site.wallet.fake.modes[flaky]
    wait.until(
        lambda d: d.execute_script(
            "var r = window.ilpWebMonetization.reports[arguments[0]];return r && r.status === 200;",
            flaky,
        )
    )
    retried = browser.execute_script(
        "return window.ilpWebMonetization.reports[arguments[0]]", flaky
    )
    assert retried["attempts"] >= 2

    shot = tmp_path / "wallet-monetization-unlocked.png"  # pytest keeps the last runs
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 1000
