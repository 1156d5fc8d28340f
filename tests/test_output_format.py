"""Every output file keeps the format it had before summary.json was typed (schema 0): the keys of
a run's summary.json and their JSON types, the report's tables, summary.csv's columns and
summary.json's structure; new fields are allowed only where schema 1 names them."""

import csv
import json
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers_results as helpers  # noqa: E402

# Read off a tiny run of benchmark_all.py at commit 3dc93f4 (before the redesign), key: JSON type.
SCHEMA_0_KEYS = {
    "implementation": "str", "label": "str", "backend": "str", "backend_version": "str", "status": "str",
    "reason": "NoneType", "device": "str", "device_name": "str", "mode": "str", "batching": "str", "preset": "str",
    "preset_reason": "str", "schedule": "dict", "seed": "int", "vocab_size": "int", "dtype": "str",
    "subsampling_factor": "int", "max_utterance_frames": "NoneType", "inner_ops_hidden": "bool",
    "encoder_out_dim": "int", "shape_info": "str", "torch_version": "str", "python_version": "str",
    "num_threads": "int", "config": "dict", "command": "list", "created_at": "str", "run_dir": "str",
    "avg_step_time_us": "float", "median_step_time_us": "float", "iqr_step_time_us": "float",
    "min_step_time_us": "float", "max_step_time_us": "float", "step_times_us": "list", "loss_time_us": "float",
    "loss_times_us": "list", "peak_memory_mb": "float", "batches_reused": "bool", "peak_memory_source": "str",
    "traces": "list", "key_averages_file": "str", "measured_batches": "list", "loss_values": "list",
}
SCHEMA_1_NEW = {"schema_version", "host_step_times_us", "device_busy_us", "cuda_max_memory_allocated_mb",
                "failing_batch", "traceback", "config_hash"}
CSV_COLUMNS = ["name", "implementation", "backend", "mode", "status", "avg_step_time_us", "loss_time_us",
               "peak_memory_mb", "num_steps", "device", "device_name", "torch_version", "preset", "reason", "run_dir",
               "median_step_time_us", "iqr_step_time_us"]
REPORT_KEYS = ["generated_at", "rows", "pictures", "problems"]
TABLE_HEADER = ["| Name | Backend | Average step time (us) | Loss time (us) | Peak memory usage (MB) | Status |",
                "|---|---|---:|---:|---:|---|"]
PREAMBLE = [r"# Transducer loss benchmark", "", r"- Device: cpu: .+ \(\d+ cores\)",
            r"- torch: \S+; backends: .+", r"- Preset: quick \(--preset quick was requested\)",
            r"- Runs: \S+ to \S+ \(UTC\)",
            re.escape("- Step = random data + joiner + loss + backward + zero grads; loss time = the loss call and its "
                      "backward (record_function region); peak memory = max allocated bytes in the profiler's memory "
                      "events.")]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return helpers.results_dir(tmp_path_factory)


@pytest.mark.parametrize("run", helpers.RUN_NAMES)
def test_summary_keys_and_types_are_those_of_schema_0_plus_the_new_fields(results, run):
    summary = helpers.load_summary(results, run)
    for key, kind in SCHEMA_0_KEYS.items():
        assert key in summary, key
        assert type(summary[key]).__name__ == kind, (key, summary[key])
    assert list(summary)[: len(SCHEMA_0_KEYS)] == list(SCHEMA_0_KEYS)  # same order, new fields after
    assert set(summary) - set(SCHEMA_0_KEYS) == SCHEMA_1_NEW
    assert summary["schema_version"] == 1


def test_report_files_keep_their_format(results, tmp_path):
    folder = helpers.copy_results(results, str(tmp_path / "log"))
    import report

    markdown = report.write_report(folder, pictures=False)
    lines = markdown.splitlines()
    for pattern, line in zip(PREAMBLE, lines):
        assert re.fullmatch(pattern, line), (pattern, line)
    for mode in helpers.MODES:
        title = {"1": "## batch size 1"}.get(mode, f"## max frames {helpers.MAX_FRAMES} (sorted utterances)")
        at = lines.index(title)
        assert lines[at + 2: at + 4] == TABLE_HEADER
        rows = lines[at + 4: at + 4 + len(helpers.IMPLEMENTATIONS)]
        for row in rows:
            assert re.fullmatch(r"\| \S+ \| [^|]+ \| \d+ \| \d+ \| \d+\.\d \| ok \|", row), row
        assert lines[at + 5 + len(helpers.IMPLEMENTATIONS)] == "Take-aways:"
    with open(os.path.join(folder, "summary.csv"), encoding="utf-8") as f:
        assert next(csv.reader(f)) == CSV_COLUMNS
    with open(os.path.join(folder, "summary.json"), encoding="utf-8") as f:
        data = json.load(f)
    assert list(data) == REPORT_KEYS and list(data["rows"][0]) == CSV_COLUMNS


def test_a_schema_0_summary_still_loads_and_reports(results, tmp_path):
    folder = helpers.copy_results(results, str(tmp_path / "log"))
    run = helpers.RUN_NAMES[0]
    path = os.path.join(folder, run, "summary.json")
    old = {k: v for k, v in helpers.load_summary(folder, run).items() if k in SCHEMA_0_KEYS}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(old, f)
    from tlbench.measure.summary import RunSummary

    summary = RunSummary.load(path)
    assert summary.schema_version == 0 and summary.avg_step_time_us == old["avg_step_time_us"]
    assert summary.host_step_times_us == [] and summary.config_hash is None
    import report

    markdown = report.write_report(folder, pictures=False)
    assert f"| {old['implementation']} | {old['backend']} {old['backend_version']} | {old['avg_step_time_us']:.0f} |" \
        in markdown
