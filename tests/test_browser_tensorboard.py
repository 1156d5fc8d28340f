"""What TensorBoard's profiler page shows on a machine with no network, seen in a real browser.

A real TensorBoard (torch-tb-profiler plugin) serves the tiny suite run on 127.0.0.1, and
headless chromium opens its PYTORCH_PROFILER tab with no name resolving, as on an offline
machine (remote requests are left to fail, not aborted, so the console says what an offline
user's console says). The sidebar lists every run, but every view stays a spinner: the
plugin's page loads Google Charts from www.gstatic.com and draws nothing without it. The
test pins that down so that docs/viewing.md says what is seen; should a later plugin draw its
pages offline, this test fails and the page needs rewriting.

With ``TLB_SCREENSHOT_DIR=docs/img`` it saves ``tensorboard-offline.png`` there.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browser_support as support  # noqa: E402
import helpers_results as helpers  # noqa: E402
from test_tensorboard import average_step_time_us, plugin_runs, running_tensorboard  # noqa: E402

pytestmark = pytest.mark.tensorboard

CHARTS_LOADER = "https://www.gstatic.com/charts/loader.js"
SPINNER = ".MuiCircularProgress-root"
# long enough for the plugin to give up on its charts loader and fall back, were it to
STILL_SPINNING_AFTER_MS = 15_000


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return helpers.results_dir(tmp_path_factory)


def test_offline_the_profiler_page_lists_the_runs_and_stays_a_spinner(results, tmp_path):
    pytest.importorskip("torch_tb_profiler", reason="the torch-tb-profiler plugin is not installed")
    support.require_browser()
    runs = plugin_runs(results)
    with running_tensorboard(results, runs, str(tmp_path / "tensorboard.log")) as server:
        with support.offline_page(abort_remote=False) as browser:
            page = browser.page
            failed = []
            page.on("requestfailed", lambda request: failed.append((request.url, request.failure)))
            page.goto(f"{server.base_url}/#pytorch_profiler")
            frame = page.frame_locator("iframe").first  # TensorBoard shows the plugin in an iframe
            frame.locator("text=Runs").wait_for(timeout=60_000)
            frame.locator(SPINNER).first.wait_for(timeout=30_000)
            page.wait_for_timeout(STILL_SPINNING_AFTER_MS)
            plugin = next(f for f in page.frames if f.url.endswith("/pytorch_profiler/index.html"))
            text = plugin.evaluate("() => document.body.innerText")
            spinners = plugin.locator(SPINNER).count()
            support.save_screenshot(page, "tensorboard-offline")
            # the sidebar's run list: open it and read its options
            plugin.locator("[role=button]").first.click()
            listed = plugin.evaluate("() => [...document.querySelectorAll('li[role=option]')].map(e => e.textContent)")
        # the numbers are there, behind the page: the plugin's own API answers offline
        run = sorted(runs)[0]
        worker = server.get("/workers", run=run, view="Overview")[0]
        span = server.get("/spans", run=run, worker=worker)[0]
        api_avg_us = average_step_time_us(server.get("/overview", run=run, worker=worker, span=span))
    assert sorted(listed) == sorted(runs)
    assert spinners >= 1 and "Average Step Time" not in text and "Step Time Breakdown" not in text, text
    assert (CHARTS_LOADER, "net::ERR_NAME_NOT_RESOLVED") in failed, failed
    assert browser.blocked == [CHARTS_LOADER]  # the only request that leaves the machine
    # the console's one error, as an offline user sees it
    assert browser.console_errors() == ["Failed to load resource: net::ERR_NAME_NOT_RESOLVED"], browser.console
    assert api_avg_us > 0
