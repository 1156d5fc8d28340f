"""Where the jobs of a suite run: in this process one after another, through submitit's local
executor (each job in its own process), or as one Slurm job array through submitit.

A job is a picklable item and a module-level function of it; every executor returns the same
:class:`Outcome` list, so a results folder and its report do not depend on how it was filled.
A job that fails, times out or is cancelled is an outcome with its error, never an exception.
submitit's pickles and the jobs' logs live in ``<out-dir>/jobs/``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

from tlbench.core.errors import UsageError, first_line

__all__ = ["EXECUTORS", "ExecutorSettings", "Outcome", "add_executor_arguments", "execute", "resolve_executor"]

EXECUTORS = ("sequential", "local", "slurm")


@dataclass(frozen=True)
class ExecutorSettings:
    """``kind`` is one of :data:`EXECUTORS`; the rest configures local and Slurm jobs."""

    kind: str = "sequential"
    folder: str = ""
    max_parallel: int = 1
    slurm_partition: Optional[str] = None
    slurm_time_min: int = 60
    slurm_gpus_per_job: int = 1
    slurm_cpus_per_job: Optional[int] = None
    job_name: str = "tlbench"


@dataclass
class Outcome:
    """One job's end: its result, or why there is none (``state`` as the executor tells it)."""

    item: Any
    result: Any = None
    error: Optional[str] = None
    state: str = "DONE"
    job_id: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


def add_executor_arguments(parser) -> None:
    group = parser.add_argument_group("where the jobs run (submitit)")
    group.add_argument("--executor", default="sequential",
                       help="sequential (default: one after another in this process's children), local (submitit's "
                       "local executor: each job in its own submitit process) or slurm (one job array)")
    group.add_argument("--max-parallel", type=int, default=1,
                       help="jobs running at once (default 1: jobs on one machine would disturb each other's timings)")
    group.add_argument("--slurm-partition", default=None, help="Slurm partition of the job array")
    group.add_argument("--slurm-time", type=int, default=60, help="time limit of each Slurm job in minutes (default 60)")
    group.add_argument("--slurm-gpus-per-job", type=int, default=1, help="GPUs of each Slurm job (default 1)")
    group.add_argument("--slurm-cpus-per-job", type=int, default=None, help="CPUs of each Slurm job (default: Slurm's)")


def resolve_executor(args, out_dir: str) -> ExecutorSettings:
    """Validates the executor flags (UsageError)."""
    if args.executor not in EXECUTORS:
        raise UsageError(f"--executor {args.executor!r} is not allowed; use {', '.join(EXECUTORS)}")
    for flag, value, minimum in (("--max-parallel", args.max_parallel, 1), ("--slurm-time", args.slurm_time, 1),
                                 ("--slurm-gpus-per-job", args.slurm_gpus_per_job, 0)):
        if value < minimum:
            raise UsageError(f"{flag} {value} is not allowed; it must be >= {minimum}")
    if args.slurm_cpus_per_job is not None and args.slurm_cpus_per_job < 1:
        raise UsageError(f"--slurm-cpus-per-job {args.slurm_cpus_per_job} is not allowed; it must be >= 1")
    if args.executor != "sequential":
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise UsageError(f"--executor {args.executor} needs submitit: pip install submitit==1.5.4") from None
    if args.executor == "slurm":
        import shutil

        missing = [tool for tool in ("sbatch", "srun", "sacct") if shutil.which(tool) is None]
        if missing:
            raise UsageError(f"--executor slurm: {', '.join(missing)} not found on PATH; run it on a Slurm login node")
    return ExecutorSettings(kind=args.executor, folder=os.path.join(out_dir, "jobs"), max_parallel=args.max_parallel,
                            slurm_partition=args.slurm_partition, slurm_time_min=args.slurm_time,
                            slurm_gpus_per_job=args.slurm_gpus_per_job, slurm_cpus_per_job=args.slurm_cpus_per_job)


def _importable_environment() -> None:
    """Jobs unpickle the function by its module path: the tlbench package (and the directory the
    suite was started in, for --impl modules) must be importable in every job process."""
    from tlbench.implementations.registry import subprocess_env

    os.environ["PYTHONPATH"] = subprocess_env()["PYTHONPATH"]


def _job_error(job) -> str:
    """One line: how a submitit job ended without a result."""
    try:
        state = job.state
    except Exception:  # the scheduler could not be asked
        state = "UNKNOWN"
    try:
        exception = job.exception()
    except Exception as error:  # an uncompleted job: submitit says what its logs say
        exception = error
    detail = first_line(exception, limit=300, with_type=True) if exception is not None else "no result"
    return f"the submitit job {job.job_id} ended {state} without a result ({detail})"


def _collect(job, item) -> Outcome:
    try:
        result = job.result()
    except Exception:
        return Outcome(item, error=_job_error(job), state=_safe_state(job), job_id=str(job.job_id))
    return Outcome(item, result=result, state=_safe_state(job), job_id=str(job.job_id))


def _safe_state(job) -> str:
    try:
        return str(job.state)
    except Exception:
        return "UNKNOWN"


def execute(function: Callable[[Any], Any], items: Sequence[Any], settings: ExecutorSettings,
            on_outcome: Optional[Callable[[Outcome], None]] = None) -> List[Outcome]:
    """Runs ``function(item)`` for every item; ``on_outcome`` sees each outcome as it arrives
    (in item order). ``KeyboardInterrupt`` cancels the submitit jobs still running and re-raises."""
    outcomes: List[Outcome] = []

    def done(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    if settings.kind == "sequential":
        for item in items:
            try:
                done(Outcome(item, result=function(item)))
            except Exception as error:  # one failing job never loses the others
                done(Outcome(item, error=first_line(error, limit=300, with_type=True), state="FAILED"))
        return outcomes
    import submitit

    _importable_environment()
    os.makedirs(settings.folder, exist_ok=True)
    if settings.kind == "local":
        executor = submitit.LocalExecutor(folder=settings.folder)
        executor.update_parameters(timeout_min=settings.slurm_time_min)
        pending = list(items)
        running: List[Any] = []
        try:
            while pending or running:
                while pending and len(running) < settings.max_parallel:
                    item = pending.pop(0)
                    running.append((executor.submit(function, item), item))
                job, item = running[0]
                while not job.done():
                    time.sleep(0.2)
                running.pop(0)
                done(_collect(job, item))
        except KeyboardInterrupt:
            for job, _ in running:
                job.cancel(check=False)
            raise
        return outcomes
    executor = submitit.AutoExecutor(folder=settings.folder, cluster="slurm")
    parameters = {"name": settings.job_name, "timeout_min": settings.slurm_time_min,
                  "gpus_per_node": settings.slurm_gpus_per_job, "slurm_array_parallelism": settings.max_parallel}
    if settings.slurm_partition:
        parameters["slurm_partition"] = settings.slurm_partition
    if settings.slurm_cpus_per_job:
        parameters["cpus_per_task"] = settings.slurm_cpus_per_job
    executor.update_parameters(**parameters)
    jobs = executor.map_array(function, list(items))  # one job array
    print(f"submitted Slurm job array {jobs[0].job_id.split('_')[0] if jobs else '-'} ({len(jobs)} jobs); "
          f"logs in {settings.folder}", file=sys.stderr, flush=True)
    try:
        for job, item in zip(jobs, items):
            done(_collect(job, item))
    except KeyboardInterrupt:
        for job in jobs:
            if not job.done():
                job.cancel(check=False)
        raise
    return outcomes
