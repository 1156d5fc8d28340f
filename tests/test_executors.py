"""Where the suite's jobs run: submitit's local executor gives the same results folder and report
as a sequential run; the Slurm path submits one job array (checked on a fake cluster: tests/
fake_slurm holds stand-ins for sbatch, srun, sacct and scancel that run the tasks here); --resume
reruns exactly what is missing or changed; an interrupted run loses no finished summary."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_DIR, TINY_RUN_FLAGS, run_script

EXTRA = os.path.join(REPO_DIR, "tests", "extra_loss.py")
FAKE_SLURM = os.path.join(REPO_DIR, "tests", "fake_slurm")
TWO = ["--only", "torchaudio", "--impl", f"{EXTRA}:PACKED_REFERENCE", "--sort-utterance", "false"]


def suite(tiny_shape_info, out_dir, *flags, env=None, timeout=600):
    return run_script_env("benchmark_all.py", [*TINY_RUN_FLAGS, "--shape-info", tiny_shape_info, "--out-dir",
                                               str(out_dir), *flags], env, timeout)


def run_script_env(script, args, env, timeout):
    if env is None:
        return run_script(script, args, timeout=timeout)
    return subprocess.run([sys.executable, os.path.join(REPO_DIR, script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_DIR, env=env)


def summaries(out_dir):
    return {run: json.load(open(os.path.join(out_dir, run, "summary.json")))
            for run in sorted(os.listdir(out_dir)) if os.path.isfile(os.path.join(out_dir, run, "summary.json"))}


def comparable(summary):
    """What a run measured about its inputs, apart from timings and paths."""
    return {k: summary[k] for k in ("implementation", "backend", "status", "mode", "config_hash", "loss_values",
                                    "measured_batches", "batches_reused")}


def table_shape(markdown):
    """The report's rows with every number replaced, so that two runs' reports can be compared."""
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "Name |" not in line]
    return [re.sub(r"\| [\d.]+ ", "| N ", row) for row in rows]


def test_local_executor_gives_the_sequential_results(tiny_shape_info, tmp_path):
    sequential, local = tmp_path / "sequential", tmp_path / "local"
    for out, flags in ((sequential, []), (local, ["--executor", "local"])):
        process = suite(tiny_shape_info, out, *TWO, *flags)
        assert process.returncode == 0, process.stderr[-3000:]
    a, b = summaries(sequential), summaries(local)
    assert set(a) == set(b) == {"torchaudio-2", "packed_reference-2"}
    for run in a:
        assert comparable(a[run]) == comparable(b[run]), run
    # the same rows; their order follows the measured step times, which differ between runs
    assert sorted(table_shape((sequential / "summary.md").read_text())) == sorted(
        table_shape((local / "summary.md").read_text()))
    logs = os.listdir(local / "jobs")
    assert len([n for n in logs if n.endswith("_log.out")]) == 2 and not os.path.exists(sequential / "jobs")


def test_slurm_submits_one_job_array_and_records_a_cancelled_job(tiny_shape_info, tmp_path):
    env = dict(os.environ, PATH=FAKE_SLURM + os.pathsep + os.environ["PATH"], FAKE_SLURM_DIR=str(tmp_path / "cluster"),
               FAKE_SLURM_CANCEL="1")
    out = tmp_path / "log"
    process = suite(tiny_shape_info, out, *TWO, "--executor", "slurm", "--slurm-partition", "gpu-test",
                    "--slurm-time", "7", "--slurm-gpus-per-job", "1", "--max-parallel", "2", env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    calls = [json.loads(line) for line in open(tmp_path / "cluster" / "sbatch_calls.jsonl")]
    assert len(calls) == 1  # one submission: a job array of the two runs
    script = calls[0]["script"]
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --partition=gpu-test", "#SBATCH --time=7",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --job-name=tlbench", f"#SBATCH --output={out}/jobs/%A_%a_0_log.out"):
        assert line in script.splitlines(), (line, script)
    assert f"-m submitit.core._submit {out}/jobs" in script
    runs = summaries(out)
    assert runs["torchaudio-2"]["status"] == "ok" and runs["torchaudio-2"]["loss_values"]
    cancelled = runs["packed_reference-2"]
    assert cancelled["status"] == "error" and "CANCELLED" in cancelled["reason"], cancelled["reason"]
    assert "| packed_reference | - |" in (out / "summary.md").read_text()


def test_resume_reruns_only_what_is_missing_and_everything_after_a_change(tiny_shape_info, tmp_path):
    out = tmp_path / "log"
    assert suite(tiny_shape_info, out, *TWO).returncode == 0
    first = summaries(out)
    os.remove(out / "packed_reference-2" / "summary.json")
    process = suite(tiny_shape_info, out, *TWO, "--resume")
    assert process.returncode == 0, process.stderr[-3000:]
    second = summaries(out)
    assert second["torchaudio-2"] == first["torchaudio-2"]  # kept as it was
    assert second["packed_reference-2"]["created_at"] >= first["packed_reference-2"]["created_at"]
    assert second["packed_reference-2"]["loss_values"] == first["packed_reference-2"]["loss_values"]
    assert process.stdout.count("(resumed: ok with the same configuration)") == 1
    process = suite(tiny_shape_info, out, *TWO, "--resume", "--seed", "7")  # another configuration: all rerun
    assert process.returncode == 0
    third = summaries(out)
    assert "(resumed" not in process.stdout
    assert all(third[run]["config_hash"] != second[run]["config_hash"] for run in third)
    assert all(third[run]["loss_values"] != second[run]["loss_values"] for run in third)


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_an_interrupted_suite_keeps_every_finished_summary(how, tiny_shape_info, tmp_path):
    out = tmp_path / "log"
    command = [sys.executable, os.path.join(REPO_DIR, "benchmark_all.py"), *TINY_RUN_FLAGS, "--shape-info",
               tiny_shape_info, "--out-dir", str(out), "--impl", f"{EXTRA}:PACKED_REFERENCE", "--impl",
               f"{EXTRA}:SLOW", "--sort-utterance", "false"]
    env = dict(os.environ, TLB_TEST_SLOW_S="5")
    process = subprocess.Popen(command, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    finished = out / "packed_reference-2" / "summary.json"
    started = out / "slow_reference-2" / "run.log"
    deadline = time.time() + 300
    while not (finished.exists() and started.exists()) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # the slow run is in its first steps now
    os.killpg(process.pid, signal.SIGINT if how == "sigint" else signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=120)
    kept = json.load(open(finished))
    assert kept["status"] == "ok" and kept["loss_values"]
    if how == "sigint":
        assert process.returncode == 130, stderr[-3000:]
        interrupted = json.load(open(out / "slow_reference-2" / "summary.json"))
        assert interrupted["status"] == "error" and "interrupted" in interrupted["reason"]
        assert "| packed_reference |" in (out / "summary.md").read_text()
    # the report can be written from what is there, and --resume finishes only the rest
    assert run_script("report.py", [str(out), "--no-pictures"]).returncode == 0
    resumed = subprocess.run([*command, "--resume"], cwd=REPO_DIR, env=dict(env, TLB_TEST_SLOW_S="0"),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("(resumed: ok with the same configuration)") == 1
    assert json.load(open(finished)) == kept
    assert json.load(open(out / "slow_reference-2" / "summary.json"))["status"] == "ok"
