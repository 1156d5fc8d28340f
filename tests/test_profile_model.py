"""profile_model.py on CPU with a tiny Conformer transducer and a tiny shape table."""

import glob
import json
import os

import pytest
import torch
from conftest import run_script

import profile_model
from tlbench.tools.model import Conv2dSubsampling, input_length_for, subsampled_length

# [T, U] after subsampling; small enough that a profiled step of the tiny model takes well under a second.
SHAPES = [[12, 3], [9, 4], [15, 2], [7, 1], [11, 4], [14, 3]]
TINY_MODEL = ["--num-layers", "1", "--model-dim", "32", "--num-heads", "2", "--ffn-dim", "64",
              "--conv-kernel-size", "3", "--decoder-dim", "16", "--joiner-dim", "16", "--vocab-size", "20"]
ENCODER_PARTS = ["rnnt_encoder_embed", "rnnt_encoder_layer"]
LAYER_PARTS = ["rnnt_encoder_layer_feed_forward_macaron", "rnnt_encoder_layer_self_attn", "rnnt_encoder_layer_conv",
               "rnnt_encoder_layer_feed_forward"]
MODEL_LABELS = ["rnnt_encoder", *ENCODER_PARTS, *LAYER_PARTS, "rnnt_decoder"]


@pytest.fixture(scope="module")
def shape_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("shapes") / "shapes.pt"
    torch.save(torch.tensor(SHAPES, dtype=torch.int32), path)
    return str(path)


def profile(shape_file, out_dir, loss):
    process = run_script("profile_model.py", [
        "--device", "cpu", "--preset", "quick", "--shape-info", shape_file, "--max-frames", "30",
        "--wait", "0", "--warmup", "1", "--active", "2", "--repeat", "1", "--loss", loss, "--out-dir", str(out_dir),
        *TINY_MODEL], timeout=300)
    run_dir = os.path.join(out_dir, f"model-{loss}-max-frames-30")
    return process, run_dir


@pytest.fixture(scope="module")
def runs(shape_file, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("log")
    return {loss: profile(shape_file, out_dir, loss) for loss in ("k2_pruned", "torchaudio")}


def test_front_end_gives_exactly_t_frames():
    front_end = Conv2dSubsampling(num_features=80, output_dim=8, channels=4)
    for frames in (1, 2, 7, 25, 100):
        assert input_length_for(frames) == 4 * frames + 3
        assert subsampled_length(input_length_for(frames)) == frames
        assert subsampled_length(input_length_for(frames) - 1) == frames - 1  # 4T + 3 is the shortest
        out, lengths = front_end(torch.randn(2, input_length_for(frames), 80),
                                 torch.tensor([input_length_for(frames), input_length_for(frames)]))
        assert out.shape == (2, frames, 8) and lengths.tolist() == [frames, frames]


@pytest.mark.parametrize("loss, loss_labels", [("k2_pruned", ["rnnt_loss_simple", "rnnt_loss_pruned"]),
                                               ("torchaudio", ["rnnt_loss_torchaudio"])])
def test_every_label_is_in_the_filtered_table(runs, loss, loss_labels):
    process, run_dir = runs[loss]
    assert process.returncode == 0, process.stderr[-3000:]
    assert len(glob.glob(os.path.join(run_dir, "cycle-*", "*.pt.trace.json"))) == 1
    assert "rnnt_encoder_layer_self_attn" in open(os.path.join(run_dir, "key_averages.txt")).read()
    table = open(os.path.join(run_dir, "rnnt_table.txt")).read()
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["status"] == "ok" and summary["loss"] == loss and len(summary["step_times_us"]) == 2
    expected = MODEL_LABELS + loss_labels + ["rnnt_joiner"]
    for label in expected:
        assert label in table and label in process.stdout, label
        for name in (label, label + "_backward"):
            row = summary["labels"][name]
            assert row["calls"] >= 2 and 0 < row["share_of_step_pct"] <= 100, (name, row)
            assert row["cpu_time_avg_us"] == pytest.approx(row["cpu_time_total_us"] / row["calls"])
            assert row["peak_memory_mb"] > 0
    assert summary["labels"]["rnnt_backward"]["calls"] == 2
    other_losses = {"rnnt_loss_simple", "rnnt_loss_pruned", "rnnt_loss_torchaudio"} - set(loss_labels)
    assert not other_losses & set(summary["labels"])  # swapping the loss swaps its label
    assert len(summary["loss_values"]) == 2 and all(value > 0 for value in summary["loss_values"])


@pytest.mark.parametrize("loss", ["k2_pruned", "torchaudio"])
def test_children_fit_in_their_parents(runs, loss):
    labels = json.load(open(os.path.join(runs[loss][1], "summary.json")))["labels"]
    for suffix in ("", "_backward"):
        def total(name, suffix=suffix):
            return labels[name + suffix]["cpu_time_total_us"]

        assert sum(total(name) for name in ENCODER_PARTS) <= total("rnnt_encoder")
        assert sum(total(name) for name in LAYER_PARTS) <= total("rnnt_encoder_layer")
        top = ["rnnt_encoder", "rnnt_decoder"] + [n for n in labels if n.startswith("rnnt_loss") and
                                                  not n.endswith("_backward")]
        assert sum(labels[n + suffix]["share_of_step_pct"] for n in top) <= 100
    backward_parts = [n for n in labels if n.endswith("_backward") and n != "rnnt_backward"
                      and not n.startswith(("rnnt_encoder_", "rnnt_joiner"))]
    assert sum(labels[n]["cpu_time_total_us"] for n in backward_parts) <= labels["rnnt_backward"]["cpu_time_total_us"]


def test_swapped_loss_trains_the_same_model(runs):
    k2_summary = json.load(open(os.path.join(runs["k2_pruned"][1], "summary.json")))
    ta_summary = json.load(open(os.path.join(runs["torchaudio"][1], "summary.json")))
    assert k2_summary["model"] == ta_summary["model"] and k2_summary["num_parameters"] == ta_summary["num_parameters"]
    assert k2_summary["measured_batches"] == ta_summary["measured_batches"]
    assert "rnnt_loss_torchaudio" in ta_summary["label_order"][-2]


def test_bad_flags_are_usage_errors(shape_file, tmp_path, capsys):
    for flags, fragment in ((["--loss", "nope"], "'nope' is not allowed"), (["--model-dim", "30"], "not divisible"),
                            (["--conv-kernel-size", "4"], "odd")):
        with pytest.raises(SystemExit) as exit_info:
            profile_model.main(["--device", "cpu", "--shape-info", shape_file, "--out-dir", str(tmp_path), *flags])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("error: ") and fragment in error[0], error
    assert not os.listdir(tmp_path)


def test_the_fused_loss_runs_inside_the_model(shape_file, tmp_path):
    process, run_dir = profile(shape_file, tmp_path, "fused")
    assert process.returncode == 0, process.stderr[-3000:]
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["status"] == "ok" and summary["loss"] == "fused"
    assert summary["labels"]["rnnt_loss_fused"]["calls"] == 2 and "rnnt_loss_fused" in process.stdout
    assert all(value > 0 for value in summary["loss_values"])
