"""Shared helpers of the browser tests and the viewer-copy tests.

* :func:`require_browser`: Debian's chromium (``apt-get install -y chromium``) driven by
  Playwright for Python. Playwright's own browser download cannot work offline, so the tests
  launch ``/usr/bin/chromium`` (or ``$TLB_CHROMIUM``). Without either the browser tests skip
  with one line saying so; with ``CI`` or ``TLB_REQUIRE_BROWSER`` set (``.ci/run`` and
  ``scripts/screenshots.sh`` set the latter) they fail instead.
* :func:`offline_page`: a headless page in a fresh profile whose every request to anything
  but 127.0.0.1 / localhost / file: / data: / blob: is aborted (and recorded), with host
  resolution switched off as well, so that a page that works here works with no network.
  With ``abort_remote=False`` such requests are only recorded and then fail as they do on a
  machine with no network (no name resolves: ``net::ERR_NAME_NOT_RESOLVED``), which is how
  the TensorBoard test sees what an offline user sees.
* :func:`save_screenshot`: with ``TLB_SCREENSHOT_DIR=docs/img`` the tests save their
  screenshots there (how docs/img/ is made).
* :class:`PerfettoUI`: waits until the bundled Perfetto UI has loaded a trace and runs SQL
  through its omnibox (``:`` then the query), reading the result table back from the page.
* :func:`running_viewer`: ``view_trace.py ... --port 0 --no-browser`` as a subprocess.
* :func:`gpu_format_trace`: a trace in kineto's GPU format, written event by event.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_DIR not in sys.path:
    sys.path.insert(0, REPO_DIR)

CHROMIUM = os.environ.get("TLB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 # no name resolves: only IP literals (127.0.0.1) and localhost can be reached
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"]
SCREENSHOT_DIR_ENV = "TLB_SCREENSHOT_DIR"
REQUIRE_BROWSER_ENV = "TLB_REQUIRE_BROWSER"
VIEWPORT = {"width": 1600, "height": 1000}
_LOCAL_URL = re.compile(r"^(?:file:|data:|blob:|about:|https?://(?:127\.0\.0\.1|localhost)(?::\d+)?/)")


def require_browser() -> None:
    """Skips the calling test (one line) when Playwright or chromium is missing; fails instead where
    the browser is required (``CI`` or ``TLB_REQUIRE_BROWSER`` set)."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "Playwright for Python is not installed (.venv/bin/pip install -r requirements.txt)"
    if reason is None and not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        reason = f"no browser at {CHROMIUM} (apt-get install -y chromium, or set TLB_CHROMIUM)"
    if reason is None:
        return
    # where the browser tests are the point (CI, .ci/run, scripts/screenshots.sh), a skip would hide it
    if os.environ.get("CI") or os.environ.get(REQUIRE_BROWSER_ENV):
        pytest.fail(f"browser tests must run here ({'CI' if os.environ.get('CI') else REQUIRE_BROWSER_ENV} is set): "
                    f"{reason}")
    pytest.skip(f"browser test skipped: {reason}")


@dataclass
class BrowserPage:
    """A page plus what it said: console messages ``(type, text)``, uncaught errors, blocked URLs."""

    page: object
    console: List[Tuple[str, str]] = field(default_factory=list)
    page_errors: List[str] = field(default_factory=list)
    blocked: List[str] = field(default_factory=list)

    def console_errors(self) -> List[str]:
        return [text for kind, text in self.console if kind == "error"]


@contextlib.contextmanager
def offline_page(viewport: Optional[Dict[str, int]] = None, abort_remote: bool = True) -> Iterator[BrowserPage]:
    """A headless chromium page (fresh profile) that can reach nothing but this machine; a
    request elsewhere is recorded in ``blocked`` and aborted (``abort_remote``) or left to fail
    on the unresolvable name, as it fails offline."""
    require_browser()
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="tlb-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport=viewport or VIEWPORT,
                service_workers="block")
            try:
                holder = BrowserPage(page=None)

                def route(handle):
                    url = handle.request.url
                    if _LOCAL_URL.match(url):
                        return handle.continue_()
                    holder.blocked.append(url)
                    # continued, it fails on the host-resolver rules of CHROMIUM_ARGS
                    return handle.abort("internetdisconnected") if abort_remote else handle.continue_()

                context.route("**/*", route)
                page = context.pages[0] if context.pages else context.new_page()
                page.on("console", lambda message: holder.console.append((message.type, message.text)))
                page.on("pageerror", lambda error: holder.page_errors.append(str(error)))
                holder.page = page
                yield holder
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot_dir() -> Optional[str]:
    folder = os.environ.get(SCREENSHOT_DIR_ENV)
    return os.path.join(REPO_DIR, folder) if folder and not os.path.isabs(folder) else folder


def save_screenshot(page, name: str, **options) -> Optional[str]:
    """Saves a PNG of ``page`` as ``$TLB_SCREENSHOT_DIR/<name>.png`` when that is set."""
    folder = screenshot_dir()
    if not folder:
        return None
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.png")
    page.screenshot(path=path, **options)
    return path


class PerfettoUI:
    """The bundled Perfetto UI in a page: load a served trace, query its trace processor."""

    LOAD_TIMEOUT_MS = 90_000

    def __init__(self, browser: BrowserPage):
        self.browser = browser
        self.page = browser.page
        self.queries = 0

    def open(self, url: str) -> None:
        self.page.goto(url)
        # the tracks are drawn once the trace processor has loaded the trace
        self.page.wait_for_selector(".pf-track__title", timeout=self.LOAD_TIMEOUT_MS)

    def sql(self, query: str) -> List[Dict[str, str]]:
        """Runs ``query`` in the omnibox's SQL mode; returns the result table's rows as text.

        The UI takes the typed text into its own state a moment after the input shows it, so an
        Enter right after the last key can run the text without its last character or two. So
        each query is sent with a trailing comment that names it (``-- tlb query N ----``): a
        lost character is a dash of the comment, and the result panel, which names the text it
        ran, tells this query's result from the one before."""
        self.queries += 1
        tag = f"tlb query {self.queries} "
        text = f"{query} -- {tag}--------"
        omnibox = self.page.locator(".pf-omnibox input").first
        omnibox.click()
        if "pf-omnibox--query-mode" not in (self.page.locator(".pf-omnibox").first.get_attribute("class") or ""):
            self.page.keyboard.type(":")  # switches the omnibox to SQL mode
            self.page.wait_for_selector(".pf-omnibox--query-mode")
        omnibox.fill("")
        self.page.keyboard.type(text)
        self.page.wait_for_function("t => document.querySelector('.pf-omnibox input').value === t", arg=text)
        self.page.keyboard.press("Enter")
        try:
            self.page.wait_for_function(
                """tag => {
                     const panel = document.querySelector('section.pf-query-table');
                     const title = panel && panel.querySelector('.pf-header-title');
                     const ran = panel && panel.querySelector('.pf-header-description');
                     return title && ran && title.textContent.startsWith('Query result') && ran.textContent.includes(tag);
                   }""", arg=tag, timeout=30_000)
        except Exception:
            panel = self.page.locator("section.pf-query-table")
            shown = panel.first.text_content() if panel.count() else "no result panel"
            raise AssertionError(f"no result of {query!r} in the page; it shows: {shown[:500]!r}") from None
        ran = self.page.locator("section.pf-query-table .pf-header-description").first.text_content()
        assert ran.startswith(query), f"the UI ran {ran!r} for {query!r}"
        panel = self.page.locator("section.pf-query-table").first
        title = panel.locator(".pf-header-title").text_content()
        if "error" in title:
            raise AssertionError(f"SQL error for {query!r}: {panel.text_content()}")
        table = self.page.evaluate("""() => {
            const panel = document.querySelector('section.pf-query-table');
            const text = cell => (cell.querySelector('.pf-grid-cell__content') || cell).textContent;
            const header = [...panel.querySelectorAll('thead th')].map(text);
            const rows = [...panel.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td')].map(text));
            return {header, rows};
        }""")
        rows = [dict(zip(table["header"], row)) for row in table["rows"]]
        count = int(re.search(r"\((\d+) rows?\)", title).group(1))
        assert count == len(rows), f"the page shows {len(rows)} of {count} rows of {query!r}"
        return rows


@contextlib.contextmanager
def running_viewer(target: str, *extra: str, timeout_s: float = 120) -> Iterator[Tuple[str, List[str]]]:
    """``view_trace.py TARGET --port 0 --no-browser`` until the URL is printed; yields (url,
    printed lines) and stops the server afterwards."""
    command = [sys.executable, os.path.join(REPO_DIR, "view_trace.py"), target, "--port", "0", "--no-browser", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_DIR)
    lines: List[str] = []
    try:
        deadline = time.monotonic() + timeout_s
        url = None
        while url is None:
            line = process.stdout.readline()
            if not line:
                raise AssertionError(f"view_trace.py exited ({process.wait()}) before serving:\n" + "".join(lines))
            lines.append(line)
            match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            url = match.group(1) if match else None
            if time.monotonic() > deadline:
                raise AssertionError("view_trace.py printed no URL in time:\n" + "".join(lines))
        yield url, lines
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


# ---------------------------------------------------------------------------------------------
# A trace in kineto's GPU format (torch 2.x, with_stack=True, profile_memory=True)

GPU_T0_US = 1_700_000_000_000.0
GPU_HOST_PID = 4242
GPU_DEVICE_PID = 0
GPU_STREAMS = (7, 20)
GPU_REGION = "myloss"
GPU_STEPS = (1, 2, 3)
GPU_STEP_PERIOD_US = 300.0
ENTER_NEW = "<built-in method _record_function_enter_new of PyCapsule object at 0x7f3a2c1d5e90>"


def gpu_format_trace(kernel_overlap_us: float = 0.5) -> dict:
    """One profiler cycle of three steps on a (fake) GPU, in the shape today's kineto writes
    with ``with_stack=True``: Python frames (``python_function``) around the ops, the
    ``ProfilerStep#N`` and loss-region ``user_annotation`` spans opened inside
    ``_record_function_enter_new`` and closed inside ``__exit__`` / ``profiler.step`` (so they
    cross those frames, as on a real trace), ``cpu_op`` events, ``cuda_runtime`` launches with
    correlation ids and ``ac2g`` flows to ``kernel`` / ``gpu_memcpy`` / ``gpu_memset`` events
    on two streams of device 0, the GPU-side ``gpu_user_annotation`` copies of the step and of
    the region on each stream, ``[memory]`` events of the CUDA device, and the metadata events.

    In step 2 the region's kernel starts ``kernel_overlap_us`` before the previous kernel on
    the same stream ends (made by hand, as clock conversion can leave it), so that the GPU
    region annotation and that kernel cross the previous kernel: the case that needs an
    overflow track. Times are three-decimal microseconds after :data:`GPU_T0_US`.
    """
    events: List[dict] = []
    correlation = iter(range(1000, 100000))
    external = iter(range(1, 100000))

    def at(offset_us: float) -> float:
        return round(GPU_T0_US + offset_us, 3)

    def span(category, name, start, end, pid=GPU_HOST_PID, tid=GPU_HOST_PID, **args):
        event = {"ph": "X", "cat": category, "name": name, "pid": pid, "tid": tid, "ts": at(start),
                 "dur": round(end - start, 3), "args": args}
        events.append(event)
        return event

    def python(name, start, end):
        return span("python_function", name, start, end, **{"Python id": next(external), "Python parent id": 0})

    def launch(name, start, end, device_kind, device_name, device_start, device_end, stream=GPU_STREAMS[0], **device_args):
        number = next(correlation)
        span("cuda_runtime", name, start, end, **{"External id": next(external), "cbid": 211, "correlation": number})
        events.append({"ph": "s", "id": number, "pid": GPU_HOST_PID, "tid": GPU_HOST_PID, "ts": at(start),
                       "cat": "ac2g", "name": "ac2g"})
        span(device_kind, device_name, device_start, device_end, pid=GPU_DEVICE_PID, tid=stream,
             **{"device": 0, "stream": stream, "correlation": number, "External id": number, **device_args})
        events.append({"ph": "f", "id": number, "pid": GPU_DEVICE_PID, "tid": stream, "ts": at(device_start),
                       "cat": "ac2g", "name": "ac2g", "bp": "e"})

    def memory(time_us, delta, total):
        events.append({"ph": "i", "cat": "cpu_instant_event", "s": "t", "name": "[memory]", "pid": GPU_HOST_PID,
                       "tid": GPU_HOST_PID, "ts": at(time_us),
                       "args": {"Total Reserved": 2**24, "Total Allocated": total, "Bytes": delta,
                                "Addr": 139_000_000_000 + int(time_us), "Device Id": 0, "Device Type": 1}})

    kernel_args = {"registers per thread": 32, "shared memory": 0, "grid": [40, 1, 1], "block": [128, 1, 1]}
    last = len(GPU_STEPS)
    python("tlbench/run/harness.py(260): run", 50, 100 + last * GPU_STEP_PERIOD_US + 20)
    span("Trace", "PyTorch Profiler (0)", 40, 100 + last * GPU_STEP_PERIOD_US + 40, pid="Spans", tid="PyTorch Profiler",
         **{"Op count": 0})
    for index, step in enumerate(GPU_STEPS):
        b = 100 + index * GPU_STEP_PERIOD_US
        # profiler.step() opens ProfilerStep#N inside _record_function_enter_new; the step ends
        # inside the next profiler.step() frame (or the profiler's exit after the last step)
        python("torch/profiler/profiler.py(884): step", b - 10, b + 8)
        python(ENTER_NEW, b - 6, b + 4)
        span("user_annotation", f"ProfilerStep#{step}", b, b + 295, **{"External id": next(external)})
        python("tlbench/run/harness.py(300): step", b + 10, b + 280)
        span("cpu_op", "aten::mm", b + 20, b + 60, **{"External id": next(external)})
        gemm_end = b + 120
        launch("cudaLaunchKernel", b + 30, b + 36, "kernel", "gemm_kernel", b + 40, gemm_end, **kernel_args)
        memory(b + 25, 2**20, 2**21)
        python("torch/autograd/profiler.py(770): __enter__", b + 70, b + 82)
        python(ENTER_NEW, b + 72, b + 80)
        span("user_annotation", GPU_REGION, b + 76, b + 250, **{"External id": next(external)})
        python("tlbench/losses/fused.py(42): forward", b + 84, b + 240)
        span("cpu_op", "aten::_transducer_loss", b + 90, b + 200, **{"External id": next(external)})
        loss_start = gemm_end - kernel_overlap_us if step == 2 else gemm_end + 5
        launch("cudaLaunchKernel", b + 100, b + 106, "kernel", "loss_kernel", loss_start, b + 200, **kernel_args)
        memory(b + 101, 3 * 2**20, 5 * 2**20)
        launch("cudaMemcpyAsync", b + 150, b + 160, "gpu_memcpy", "Memcpy DtoD (Device -> Device)", b + 200, b + 210,
               bytes=2**20)
        span("cpu_op", "aten::zero_", b + 205, b + 225, **{"External id": next(external)})
        launch("cudaMemsetAsync", b + 210, b + 215, "gpu_memset", "Memset (Device)", b + 215, b + 218,
               stream=GPU_STREAMS[1], bytes=2**20)
        span("cpu_op", "aten::item", b + 226, b + 239, **{"External id": next(external)})
        span("cuda_runtime", "cudaStreamSynchronize", b + 228, b + 238, **{"External id": next(external), "cbid": 131,
                                                                           "correlation": next(correlation)})
        python("torch/autograd/profiler.py(780): __exit__", b + 245, b + 256)  # the region ends inside it
        memory(b + 247, -3 * 2**20, 2**21)
        # GPU-side copies of the annotations: one per stream, from its first to its last device event
        span("gpu_user_annotation", f"ProfilerStep#{step}", b + 40, b + 210, pid=GPU_DEVICE_PID, tid=GPU_STREAMS[0],
             **{"External id": 0})
        span("gpu_user_annotation", GPU_REGION, loss_start, b + 210, pid=GPU_DEVICE_PID, tid=GPU_STREAMS[0],
             **{"External id": 0})
        for name in (f"ProfilerStep#{step}", GPU_REGION):
            span("gpu_user_annotation", name, b + 215, b + 218, pid=GPU_DEVICE_PID, tid=GPU_STREAMS[1],
                 **{"External id": 0})
    after = 100 + last * GPU_STEP_PERIOD_US  # where a next step would start
    python("torch/profiler/profiler.py(760): __exit__", after - 10, after + 5)  # the last step ends inside it
    for pid, tid, name, sort in [(GPU_HOST_PID, GPU_HOST_PID, f"thread {GPU_HOST_PID} (python)", GPU_HOST_PID),
                                 *[(GPU_DEVICE_PID, s, f"stream {s} ", s) for s in GPU_STREAMS]]:
        events.append({"name": "thread_name", "ph": "M", "ts": at(40), "pid": pid, "tid": tid, "args": {"name": name}})
        events.append({"name": "thread_sort_index", "ph": "M", "ts": at(40), "pid": pid, "tid": tid,
                       "args": {"sort_index": sort}})
    events.append({"name": "process_name", "ph": "M", "ts": at(40), "pid": GPU_HOST_PID, "tid": 0,
                   "args": {"name": "python"}})
    events.append({"name": "process_name", "ph": "M", "ts": at(40), "pid": GPU_DEVICE_PID, "tid": 0,
                   "args": {"name": "python"}})
    events.append({"name": "process_labels", "ph": "M", "ts": at(40), "pid": GPU_DEVICE_PID, "tid": 0,
                   "args": {"labels": "GPU 0"}})
    return {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "NVIDIA H100 80GB HBM3 (synthetic)",
                                                      "totalGlobalMem": 85_000_000_000}],
            "with_stack": 1, "profile_memory": 1, "displayTimeUnit": "ms", "baseTimeNanoseconds": 1_700_000_000_000_000_000,
            "traceEvents": events, "traceName": "synthetic-gpu.pt.trace.json"}


def span_counts(trace: dict, names=None) -> Dict[str, int]:
    """Complete events (``X``) per name, optionally only the names for which ``names(name)`` holds."""
    counts: Dict[str, int] = {}
    for event in trace["traceEvents"]:
        if isinstance(event, dict) and event.get("ph") == "X":
            name = str(event.get("name"))
            if names is None or names(name):
                counts[name] = counts.get(name, 0) + 1
    return counts


def slice_total(trace: dict) -> int:
    """How many slices the importer makes of a trace it keeps whole: every complete event and
    every instant event (``i``/``I``: zero-length slices)."""
    return sum(1 for e in trace["traceEvents"] if isinstance(e, dict) and e.get("ph") in ("X", "i", "I"))
