"""The dashboard in a real browser: headless Debian Chromium driven by Selenium.

1. In-process: a replaying daemon (cascade-long, hold long 10x, balanced) pauses at bar
   600 (ACTIVE) and again at the first REDUCING decision of the cascade; the page must show
   each state, the reasons and the new timeline row, and shade the REDUCING span.
2. Subprocess: `liqbot run --replay A --replay B --replay C --http`: first paint and time
   to data with three symbols (written to var/artifacts/dashboard_timings.json).
Screenshots are kept under tmp_path and copied to var/artifacts/.
Skips (with the reason) where chromium, chromedriver or selenium are missing."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from backtests.scenarios import load_scenario
from tests.test_http import (
    ARTIFACTS,
    LiveDaemon,
    at_bar,
    http_get,
    reducing,
    three_symbol_daemon,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER and HAVE_SELENIUM),
    reason="browser test needs Debian's chromium + chromium-driver (apt-get install chromium "
           "chromium-driver; .ci/run installs them) and selenium (pip install -e '.[dev]')")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1360,1000", "--hide-scrollbars"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _wait(drv, js: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = drv.execute_script(js)
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {js}")


def _shot(drv, tmp_path: Path, name: str) -> Path:
    p = tmp_path / name
    drv.save_screenshot(str(p))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(p, ARTIFACTS / name)
    return p


def _paint(drv) -> dict[str, float]:
    """First contentful paint and DOMContentLoaded from the browser's performance timing."""
    return drv.execute_script("""
        const p = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint');
        const n = performance.getEntriesByType('navigation')[0];
        return {fcp_ms: p ? p.startTime : null, dom_ms: n.domContentLoadedEventEnd};""")


def test_dashboard_follows_the_cascade(browser, tmp_path):
    bars = load_scenario("cascade-long").bars
    with LiveDaemon(tmp_path, {bars.symbol: bars}, [at_bar(600), reducing]) as ld:
        ld.wait_paused()
        t0 = time.monotonic()
        browser.get(ld.url + "/")
        _wait(browser, "return document.body.dataset.ready === '1'")
        ready_s = time.monotonic() - t0
        paint = _paint(browser)
        assert paint["fcp_ms"] is not None              # it painted (the time is a figure)
        state = browser.find_element("id", "state-BTCUSDT")
        assert state.text == "ACTIVE"
        assert "hold" in browser.find_element("id", "runinfo").text
        rows = browser.find_elements("css selector", "#positions tbody tr")
        assert len(rows) == 1 and rows[0].text.startswith("BTCUSDT")
        # the liquidation distance shown is the API's, to 2 decimals
        pos = json.loads(http_get(ld.url + "/api/positions")[1])["positions"][0]
        assert f"{pos['liq_distance_pct']:.2f}" in rows[0].text
        npts = browser.execute_script("return document.querySelector('#price-svg path.line-mark')"
                                      ".getAttribute('d').split(/[ML]/).length - 1")
        assert npts >= 500                                  # 600 bars drawn (downsampled)
        assert not browser.find_elements("css selector", ".shade-REDUCING")
        _shot(browser, tmp_path, "dashboard-active.png")
        # the replay crosses the cascade: the page follows without a reload
        ld.feed.go()
        ld.wait_paused()
        decs = ld.store.decisions(ld.daemon.run_id)
        first_red = next(d for d in decs if d.state == 1)
        _wait(browser, "return document.getElementById('state-BTCUSDT').textContent === 'REDUCING'",
              15)
        assert "cascade" in browser.execute_script(
            "return document.getElementById('reasons-BTCUSDT').textContent;")
        from bot.data.dataset import iso as to_iso
        # the timeline re-renders on every poll (rows are replaced): read its top row in one
        # script call, once the first REDUCING decision has reached it
        top_row = "document.querySelector('#timeline tbody tr')"
        _wait(browser, f"const r = {top_row}; "
                       f"return !!r && r.textContent.includes('{to_iso(first_red.bar_ts)}');", 15)
        top = browser.execute_script(f"return {top_row}.textContent;")
        assert "REDUCING" in top and "cascade running against the position" in top
        assert browser.find_elements("css selector", ".shade-REDUCING")
        shot = _shot(browser, tmp_path, "dashboard-cascade.png")
        assert shot.stat().st_size > 20_000
        assert not browser.find_element("id", "error").text
    (ARTIFACTS / "dashboard_paint_1symbol.json").write_text(json.dumps(
        {**paint, "time_to_data_s": ready_s}, indent=1))


def test_dashboard_first_paint_with_three_symbols(browser, tmp_path):
    p, url = three_symbol_daemon(tmp_path, "b.db", 1200)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                st = json.loads(http_get(url + "/api/status", timeout=5)[1])
                if st["decisions"] >= 3 * 300:
                    break
            except (OSError, ValueError):
                pass
            assert p.poll() is None, "the daemon exited early"
            time.sleep(0.3)
        t0 = time.monotonic()
        browser.get(url + "/")
        _wait(browser, "return document.body.dataset.ready === '1'")
        ready_s = time.monotonic() - t0
        paint = _paint(browser)
        for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
            assert browser.find_element("id", f"state-{s}").text in ("ACTIVE", "REDUCING",
                                                                      "HALTED")
        assert len(browser.find_elements("css selector", "#positions tbody tr")) == 3
        _shot(browser, tmp_path, "dashboard-3symbols.png")
    finally:
        p.terminate()
        p.wait(60)
    fig = {**paint, "time_to_data_s": ready_s, "symbols": 3}
    (ARTIFACTS / "dashboard_timings.json").write_text(json.dumps(fig, indent=1))
    print("dashboard (3 symbols):", fig)
    assert paint["fcp_ms"] is not None              # it painted (the time is a figure)
