"""The fake cluster's node (tests only): runs each task of a submitted script like Slurm."""

import json
import os
import re
import subprocess
import sys
import time

script, job_id, tasks = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
state_dir = os.environ["FAKE_SLURM_DIR"]
cancel = {c for c in os.environ.get("FAKE_SLURM_CANCEL", "").split(",") if c}
with open(script, encoding="utf-8") as f:
    text = f.read()
time.sleep(1.0)  # sbatch has returned and submitit has put each task's pickle in place


def substitute(pattern: str, task) -> str:
    return (pattern.replace("%A", job_id).replace("%a", "" if task is None else str(task))
            .replace("%j", job_id if task is None else f"{job_id}_{task}").replace("%t", "0"))


output = re.search(r"^#SBATCH --output=(\S+)", text, re.M).group(1)
for task in tasks:
    name = job_id if task is None else f"{job_id}_{task}"
    state_file = os.path.join(state_dir, f"{name}.state")
    if str(task) in cancel:
        with open(state_file, "w", encoding="utf-8") as f:
            f.write("CANCELLED")
        continue
    with open(state_file, "w", encoding="utf-8") as f:
        f.write("RUNNING")
    env = dict(os.environ, SLURM_JOB_ID=name, SLURM_ARRAY_JOB_ID=job_id, SLURM_ARRAY_TASK_ID=str(task),
               SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0",
               SLURM_JOB_NODELIST="fakenode", FAKE_SLURM_TASK=str(task), FAKE_SLURM_JOB=job_id)
    log_path = substitute(output, task)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        code = subprocess.call(["bash", script], env=env, stdout=log, stderr=subprocess.STDOUT)
    with open(state_file, "w", encoding="utf-8") as f:
        f.write("COMPLETED" if code == 0 else "FAILED")
