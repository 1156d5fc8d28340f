"""Time and memory of RNN-T loss + backward alone, every implementation on the same logits.

The batch is the first ``--num-utterances`` rows of a shape table: float32 logits
``(N, T_max, U_max + 1, V)`` (standard normal), int32 targets ``(N, U_max)`` in ``1..V-1``
(blank = 0), int32 lengths ``(N,)``; the packed layout ``(sum_i T_i (U_i + 1), V)`` holds the
same values of the valid cells. Reduction is "sum". Each implementation gets a fresh copy of
its layout before each run (optimized_transducer overwrites its input with the gradient).

Memory: peak of the running sum of bytes allocated minus freed by PyTorch's CPU allocator,
as recorded by ``torch.profiler`` (``profile_memory=True``, the profiler's "Total Allocated")
over one loss + backward; the logits exist before and do not count, their gradient does.
That run is also the warm-up; then ``--repeats`` timed runs, median reported.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
import warnings

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's C++ log lines would break the progress bar
import torch
from tqdm import tqdm

from shape_sampler import load_shape_info
from tlbench import REPO_DIR
from tlbench.errors import UsageError, exit_on_usage_error
from tlbench.io import atomic_write_json
from tlbench.reference_loss import rnnt_loss, rnnt_loss_packed

REFERENCE_SHAPES = "/work/shared/reference/librispeech_train_clean_100_sp_shape_info.pt"
DEFAULT_SHAPES = REFERENCE_SHAPES if os.path.isfile(REFERENCE_SHAPES) else os.path.join(REPO_DIR, "shape_info.pt")
NAMES = ["torchaudio", "fast_rnnt", "optimized_transducer", "reference", "reference_packed"]
MODULES = {"torchaudio": ["torchaudio"], "fast_rnnt": ["fast_rnnt", "k2"], "optimized_transducer": ["optimized_transducer"]}


def make_impl(name, module, b):
    """-> (layout, loss(logits) -> scalar); ``b``: targets, t_lens, u_lens, boundary tensors."""
    if name == "torchaudio":
        from torchaudio.functional import rnnt_loss as loss
        return "4-D", lambda x: loss(x, b["targets"], b["t_lens"], b["u_lens"], blank=0, reduction="sum")
    if name == "fast_rnnt":  # fast_rnnt, or k2 where only k2 is installed: same function
        loss = importlib.import_module(module).rnnt_loss
        return "4-D", lambda x: loss(x, b["targets"].long(), termination_symbol=0, boundary=b["boundary"], reduction="sum")
    if name == "optimized_transducer":
        from optimized_transducer import transducer_loss as loss
        return "packed", lambda x: loss(x, b["targets"], b["t_lens"], b["u_lens"], blank=0, reduction="sum",
                                        from_log_softmax=False, one_sym_per_frame=False)
    fn, layout = (rnnt_loss, "4-D") if name == "reference" else (rnnt_loss_packed, "packed")
    return layout, lambda x: fn(x, b["targets"], b["t_lens"], b["u_lens"], blank=0, reduction="sum")


def measure(loss_fn, source, repeats, bar):
    """-> (peak extra bytes, [seconds per run], loss value); runs on a copy of ``source``."""
    from torch.profiler import ProfilerActivity, profile
    warnings.filterwarnings("ignore", message=".*Profiler clears events.*")
    work = source.detach().clone().requires_grad_()

    def run():
        with torch.no_grad():
            work.copy_(source)
        work.grad = None
        start = time.perf_counter()
        loss = loss_fn(work)
        loss.backward()
        seconds = time.perf_counter() - start
        work.grad = None
        bar.update()
        return seconds, float(loss.detach())

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    memory = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    total = peak = 0
    for event in memory:
        total += event.nbytes()
        peak = max(peak, total)
    runs = [run() for _ in range(repeats)]
    return peak, [s for s, _ in runs], runs[-1][1]


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


@exit_on_usage_error
def main(argv=None):
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--shape-info", default=DEFAULT_SHAPES, help="(N, 2) table of [T, U] rows")
    p.add_argument("--num-utterances", type=int, default=8, help="the batch: the table's first rows")
    p.add_argument("--vocab-size", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per implementation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated subset of: " + ", ".join(NAMES))
    p.add_argument("--output-json", default=None, help="also write the results there")
    args = p.parse_args(argv)
    names = NAMES
    if args.only is not None:
        chosen = {n.strip() for n in args.only.split(",") if n.strip()}
        if not chosen or chosen - set(NAMES):
            raise UsageError(f"--only {args.only!r}: unknown or empty; choose from {', '.join(NAMES)}")
        names = [n for n in NAMES if n in chosen]
    if args.vocab_size < 2 or args.repeats < 1:
        raise UsageError(f"--vocab-size {args.vocab_size} / --repeats {args.repeats}: need vocab >= 2 and repeats >= 1")
    table = load_shape_info(args.shape_info)
    if not 1 <= args.num_utterances <= table.size(0):
        raise UsageError(f"--num-utterances {args.num_utterances}: must be between 1 and {table.size(0)} "
                         f"(rows in {args.shape_info})")

    shapes = table[: args.num_utterances]
    t_lens, u_lens = shapes[:, 0].int(), shapes[:, 1].int()
    n, t_max, u_max, vocab = len(shapes), int(t_lens.max()), int(u_lens.max()), args.vocab_size
    gen = torch.Generator().manual_seed(args.seed)
    logits = torch.randn(n, t_max, u_max + 1, vocab, generator=gen)
    packed = torch.cat([logits[i, :t, : u + 1].reshape(-1, vocab) for i, (t, u) in enumerate(shapes.tolist())])
    zeros = torch.zeros_like(t_lens)
    batch = {"targets": torch.randint(1, vocab, (n, u_max), generator=gen, dtype=torch.int32), "t_lens": t_lens,
             "u_lens": u_lens, "boundary": torch.stack([zeros, zeros, u_lens, t_lens], 1).long()}
    found = {name: next((m for m in MODULES.get(name, ["torch"]) if importlib.util.find_spec(m)), None) for name in names}
    results = {}
    with tqdm(total=sum(m is not None for m in found.values()) * (args.repeats + 1), unit="run") as bar:
        for name in [n for n in names if found[n]]:
            bar.set_description(name)
            layout, loss_fn = make_impl(name, found[name], batch)
            source = logits if layout == "4-D" else packed
            extra, times, value = measure(loss_fn, source, args.repeats, bar)
            results[name] = dict(module=found[name], layout=layout, median_s=statistics.median(times), times_s=times,
                                 extra_bytes=extra, logits_bytes=source.numel() * source.element_size(), loss=value)

    base = results.get("torchaudio", {}).get("median_s")
    columns = ["implementation", "layout", "median time (s)", "time vs torchaudio", "extra memory (MB)",
               "extra memory / logits size", "loss value"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name in names:
        if name not in results:
            layout = "packed" if name in ("optimized_transducer", "reference_packed") else "4-D"
            lines.append(f"| {name} | {layout} | unavailable (pip install {MODULES[name][0]}) | | | | |")
            continue
        r = results[name]
        ratio = f"{r['median_s'] / base:.3f}x" if base else "n/a"
        label = name if r["module"] in (name, "torch") else f"{name} ({r['module']})"
        lines.append(f"| {label} | {r['layout']} | {r['median_s']:.3f} | {ratio} | {r['extra_bytes'] / 2**20:.1f} | "
                     f"{r['extra_bytes'] / r['logits_bytes']:.3f}x | {r['loss']:.4f} |")
    header = (f"device: cpu ({torch.get_num_threads()} threads), torch {torch.__version__}; N={n}, T_max={t_max}, U_max={u_max}, "
              f"V={vocab}; logits 4-D {tuple(logits.shape)} float32 = {logits.numel() * 4 / 2**20:.1f} MB, packed "
              f"{tuple(packed.shape)} = {packed.numel() * 4 / 2**20:.1f} MB; median of {args.repeats} runs")
    print(header + "\n\n" + "\n".join(lines))
    if args.output_json:
        atomic_write_json(args.output_json, {"header": header, "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
