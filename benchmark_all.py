#!/usr/bin/env python3
"""Run every transducer-loss benchmark, each in its own subprocess, then write the report.

An implementation that is missing, crashes or runs out of memory is recorded with that
status in its summary.json (written here if the subprocess could not) and never stops the
others. Afterwards ``report.py`` writes ``<out-dir>/summary.md``, ``.csv`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

from tlbench.errors import UsageError, exit_on_usage_error
from tlbench.harness import STATUS_ERROR, summary_line
from tlbench.io import atomic_write_json
from tlbench.options import add_run_arguments, forwarded_flags, resolve_config
from tlbench.registry import SCRIPTS, load_implementation, script_path


def _parse_only(text: str):
    if not text:
        return list(SCRIPTS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown or not names:
        raise UsageError(f"--only {text!r} names unknown implementation(s) {unknown}; allowed: {', '.join(SCRIPTS)}")
    return names


def _sort_modes(text: str):
    choices = {"true": [True], "false": [False], "both": [False, True]}
    if text.lower() not in choices:
        raise UsageError(f"--sort-utterance {text!r} is not allowed; use true, false or both")
    return choices[text.lower()]


def _run_one(name: str, sort: bool, args, config) -> dict:
    """Runs one benchmark script; returns its summary.json (or an error record for it)."""
    run_dir = config.run_dir(name)
    os.makedirs(run_dir, exist_ok=True)
    command = [sys.executable, script_path(name), *forwarded_flags(args), "--sort-utterance", str(sort).lower()]
    started = time.time()
    with open(os.path.join(run_dir, "run.log"), "w", encoding="utf-8") as log:
        process = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    summary_path = os.path.join(run_dir, "summary.json")
    summary = None
    if os.path.exists(summary_path) and os.path.getmtime(summary_path) >= started:
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
    if summary is None:  # crashed before writing (segfault, killed, usage error)
        with open(os.path.join(run_dir, "run.log"), encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f.read().replace("\r", "\n").splitlines() if line.strip()]
        summary = {"implementation": name, "label": name, "backend": None, "backend_version": None,
                   "device": config.device, "mode": config.mode, "status": STATUS_ERROR,
                   "reason": f"the benchmark process exited with code {process.returncode} without a summary"
                             + (f"; last output: {lines[-1][:300]}" if lines else ""),
                   "avg_step_time_us": None, "peak_memory_mb": None, "loss_time_us": None, "step_times_us": [],
                   "torch_version": None, "command": command, "run_dir": run_dir,
                   "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        atomic_write_json(summary_path, summary)
    return summary


@exit_on_usage_error
def run(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, sort_choices_both=True)
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(SCRIPTS)}")
    args = parser.parse_args(argv)
    names = _parse_only(args.only)
    configs = [resolve_config(args, sort_utterance=sort) for sort in _sort_modes(args.sort_utterance)]
    from shape_sampler import load_shape_info

    load_shape_info(configs[0].shape_info)  # a bad table fails here once, not in every subprocess
    print(f"device: {configs[0].device}; {configs[0].preset_reason}", flush=True)
    from tqdm import tqdm

    # Each implementation's own config (its quick-preset overrides change its run folder).
    runs = [(resolve_config(args, sort_utterance=sort, quick_overrides=load_implementation(name).quick_overrides), name)
            for sort in _sort_modes(args.sort_utterance) for name in names]
    with tqdm(total=len(runs), desc="benchmarks", unit="run", file=sys.stderr, dynamic_ncols=True) as progress:
        for config, name in runs:
            progress.set_postfix_str(f"{name}-{config.mode}")
            summary = _run_one(name, config.sort_utterance, args, config)
            progress.write(summary_line(summary), file=sys.stdout)
            progress.update()
    import report

    markdown = report.write_report(configs[0].out_dir)
    print(markdown, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
