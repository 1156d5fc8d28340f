"""The whole suite: one job per implementation and batching mode, each in its own process.

An implementation that is missing, crashes or runs out of memory is recorded with that status
in its ``summary.json`` (written here when the process could not) and never stops the others.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from tlbench.core.errors import UsageError
from tlbench.core.status import Status
from tlbench.implementations.registry import command_for, load, subprocess_env
from tlbench.measure.summary import RunSummary, SummaryError
from tlbench.run.options import RunConfig, forwarded_flags, resolve_config

__all__ = ["RunJob", "collect", "crash_summary", "plan_jobs", "previous_result", "run_job", "run_suite", "sort_modes"]


def sort_modes(text: str) -> List[bool]:
    """``--sort-utterance`` of the whole suite: ``true``, ``false`` or ``both``."""
    choices = {"true": [True], "false": [False], "both": [False, True]}
    if text.lower() not in choices:
        raise UsageError(f"--sort-utterance {text!r} is not allowed; use true, false or both")
    return choices[text.lower()]


@dataclass
class RunJob:
    """One benchmark run: ``spec`` (a built-in name or MODULE_OR_FILE:NAME) in one mode.

    ``command`` is the full command line of its process; its output goes to ``run.log`` in the
    run folder.
    """

    spec: str
    name: str
    config: RunConfig
    command: List[str]

    @property
    def run_dir(self) -> str:
        return self.config.run_dir(self.name)

    @property
    def key(self) -> str:
        return f"{self.name}-{self.config.mode}"

    @property
    def config_hash(self) -> str:
        return self.config.fingerprint(self.name)


def plan_jobs(specs: Sequence[str], args) -> List[RunJob]:
    """Every (implementation, mode) run of the suite, mode-major, with each implementation's own
    config (its quick-preset overrides change its run folder)."""
    jobs = []
    for sort in sort_modes(args.sort_utterance):
        for spec in specs:
            impl = load(spec)
            config = resolve_config(args, sort_utterance=sort, quick_overrides=impl.quick_overrides)
            command = [*command_for(spec), *forwarded_flags(args), "--sort-utterance", str(sort).lower()]
            jobs.append(RunJob(spec, impl.name, config, command))
    return jobs


def crash_summary(job: RunJob, reason: str) -> RunSummary:
    """The summary of a run whose process ended without writing one (segfault, kill, usage error)."""
    from tlbench.measure.environment import device_name

    return RunSummary(
        implementation=job.name, label=job.name, device=job.config.device, device_name=device_name(job.config.device),
        mode=job.config.mode, status=Status.ERROR,
        reason=reason, command=job.command, run_dir=job.run_dir, config_hash=job.config_hash,
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def _last_line(log_path: str) -> Optional[str]:
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f.read().replace("\r", "\n").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1][:300] if lines else None


def run_job(job: RunJob, env: Optional[dict] = None) -> RunSummary:
    """Runs ``job`` in a subprocess; returns its summary, or records and returns an error one."""
    os.makedirs(job.run_dir, exist_ok=True)
    summary_path = os.path.join(job.run_dir, "summary.json")
    if os.path.exists(summary_path):
        os.remove(summary_path)  # a summary found afterwards is this run's
    log_path = os.path.join(job.run_dir, "run.log")
    # Modules of --impl MODULE:NAME resolve from the directory the suite was started in.
    child_env = subprocess_env(env)
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.run(job.command, stdout=log, stderr=subprocess.STDOUT, text=True, env=child_env,
                                 cwd=os.getcwd())
    return collect(job, process.returncode, log_path)


def collect(job: RunJob, returncode: Optional[int], log_path: Optional[str], how: str = "the benchmark process"
            ) -> RunSummary:
    """The summary a finished job left, or an error summary (written) saying how it ended."""
    summary_path = os.path.join(job.run_dir, "summary.json")
    try:
        return RunSummary.load(summary_path)
    except SummaryError:
        pass
    last = _last_line(log_path) if log_path else None
    ended = f"exited with code {returncode}" if returncode is not None else "ended"
    summary = crash_summary(job, f"{how} {ended} without a summary" + (f"; last output: {last}" if last else ""))
    summary.write(summary_path)
    return summary



def previous_result(job: RunJob) -> Optional[RunSummary]:
    """The run's summary.json if it ended ``ok`` with this job's configuration (``--resume``)."""
    try:
        summary = RunSummary.load(os.path.join(job.run_dir, "summary.json"))
    except SummaryError:
        return None
    return summary if summary.ok and summary.config_hash == job.config_hash else None


def run_suite(jobs: Sequence[RunJob], executor, resume: bool = False,
              on_summary: Optional[Callable[[RunJob, RunSummary, str], None]] = None) -> List[RunSummary]:
    """Runs every job (or, with ``resume``, every job without an ``ok`` summary of the same
    configuration) through ``executor`` (:class:`tlbench.run.executors.ExecutorSettings`); returns
    the summaries in job order. ``on_summary(job, summary, how)`` sees each as it is known
    (``how``: "ran", "resumed" or "failed").

    A job that fails, is cancelled or is killed gets an error summary with the reason; on
    Ctrl-C the running job is recorded as interrupted, every finished summary stays, and the
    ``KeyboardInterrupt`` goes on to the caller.
    """
    from tlbench.run.executors import execute

    summaries: dict = {}

    def note(job: RunJob, summary: RunSummary, how: str) -> None:
        summaries[job.key] = summary
        if on_summary is not None:
            on_summary(job, summary, how)

    todo = []
    for job in jobs:
        kept = previous_result(job) if resume else None
        if kept is not None:
            note(job, kept, "resumed")
        else:
            todo.append(job)

    def arrived(outcome) -> None:
        job = outcome.item
        if outcome.ok and isinstance(outcome.result, RunSummary):
            note(job, outcome.result, "ran")
            return
        last = _last_line(os.path.join(job.run_dir, "run.log"))
        summary = crash_summary(job, (outcome.error or "the job ended without a result")
                                + (f"; last output: {last}" if last else ""))
        os.makedirs(job.run_dir, exist_ok=True)
        summary.write(os.path.join(job.run_dir, "summary.json"))  # never leave an older run's summary
        note(job, summary, "failed")

    started = time.time()
    try:
        execute(run_job, todo, executor, on_outcome=arrived)
    except KeyboardInterrupt:
        for job in todo:
            log = os.path.join(job.run_dir, "run.log")
            if job.key not in summaries and os.path.exists(log) and os.path.getmtime(log) >= started - 1:
                summary = crash_summary(job, "interrupted (Ctrl-C or a kill) before it finished; rerun with --resume")
                summary.write(os.path.join(job.run_dir, "summary.json"))
        raise
    return [summaries[job.key] for job in jobs if job.key in summaries]
