"""Time and memory of RNN-T loss + backward alone, every implementation on the same logits.

The batch is the first ``--num-utterances`` rows of a shape table: 4-D float32 logits
``(N, T_max, U_max + 1, V)`` (standard normal, requires_grad), int32 targets ``(N, U_max)``
drawn from ``1..V-1`` (blank = 0), int32 lengths ``(N,)``; the packed layout
``(sum_i T_i (U_i + 1), V)`` holds the same values of the valid cells. Reduction is "sum".

Memory: peak of the running sum of bytes allocated minus freed by PyTorch's allocator,
seen by ``torch.profiler`` (``profile_memory=True``) during one loss + backward (the
profiler's "Total Allocated"); the logits are allocated before and do not count, their
gradient does. That run also serves as the warm-up; then ``--repeats`` timed runs.
"""

from __future__ import annotations

import argparse, os, statistics, time

import torch
from tqdm import tqdm

from shape_sampler import load_shape_info
from tlbench import REPO_DIR
from tlbench.errors import UsageError, exit_on_usage_error
from tlbench.io import atomic_write_json
from tlbench.reference_loss import rnnt_loss, rnnt_loss_packed

REFERENCE_SHAPES = "/work/shared/reference/librispeech_train_clean_100_sp_shape_info.pt"
DEFAULT_SHAPES = REFERENCE_SHAPES if os.path.isfile(REFERENCE_SHAPES) else os.path.join(REPO_DIR, "shape_info.pt")
PIP = {"torchaudio": "torchaudio", "fast_rnnt": "fast_rnnt", "optimized_transducer": "optimized_transducer"}


def make_impls(b):
    """name -> (layout, pip package, loss(logits) -> scalar); b: the batch dict of tensors."""
    def torchaudio_loss(x):
        import torchaudio.functional as F
        return F.rnnt_loss(x, b["targets"], b["t_lens"], b["u_lens"], blank=0, reduction="sum")
    def fast_rnnt_loss(x):
        try:
            from fast_rnnt import rnnt_loss as loss
        except ImportError:
            from k2 import rnnt_loss as loss
        return loss(x, b["targets"].long(), termination_symbol=0, boundary=b["boundary"], reduction="sum")
    def optimized_transducer_loss(x):
        import optimized_transducer
        return optimized_transducer.transducer_loss(x, b["targets"], b["t_lens"], b["u_lens"], blank=0,
                                                    reduction="sum", from_log_softmax=False, one_sym_per_frame=False)
    ref = lambda fn: lambda x: fn(x, b["targets"], b["t_lens"], b["u_lens"], blank=0, reduction="sum")
    return {"torchaudio": ("4-D", torchaudio_loss), "fast_rnnt": ("4-D", fast_rnnt_loss),
            "optimized_transducer": ("packed", optimized_transducer_loss),
            "reference": ("4-D", ref(rnnt_loss)), "reference_packed": ("packed", ref(rnnt_loss_packed))}


def importable(name):
    import importlib.util
    names = {"fast_rnnt": ["fast_rnnt", "k2"]}.get(name, [name] if name in PIP else [])
    return not names or any(importlib.util.find_spec(n) is not None for n in names)


def one_run(loss_fn, source, work):
    """Loss + backward on ``work`` (a leaf holding a copy of ``source``: optimized_transducer
    overwrites its input with the gradient). Returns (seconds, loss value)."""
    with torch.no_grad():
        work.copy_(source)
    work.grad = None
    start = time.perf_counter()
    loss = loss_fn(work)
    loss.backward()
    seconds = time.perf_counter() - start
    work.grad = None
    return seconds, float(loss)


def peak_extra_bytes(loss_fn, source, work):
    from torch.profiler import ProfilerActivity, profile
    with torch.no_grad():
        work.copy_(source)
    work.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss_fn(work).backward()
        work.grad = None
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    total = peak = 0
    for event in events:
        total += event.nbytes()
        peak = max(peak, total)
    return peak


@exit_on_usage_error
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape-info", default=DEFAULT_SHAPES)
    p.add_argument("--num-utterances", type=int, default=8)
    p.add_argument("--vocab-size", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated subset of: " + ", ".join(make_impls({})))
    p.add_argument("--output-json", default=None)
    args = p.parse_args(argv)
    names = list(make_impls({}))
    if args.only is not None:
        chosen = [n.strip() for n in args.only.split(",") if n.strip()]
        bad = [n for n in chosen if n not in names]
        if bad or not chosen:
            raise UsageError(f"--only {args.only!r}: unknown or empty; choose from {', '.join(names)}")
        names = [n for n in names if n in chosen]
    if args.vocab_size < 2 or args.repeats < 1:
        raise UsageError(f"--vocab-size {args.vocab_size} / --repeats {args.repeats}: need vocab >= 2 and repeats >= 1")
    table = load_shape_info(args.shape_info)
    if not 1 <= args.num_utterances <= table.size(0):
        raise UsageError(f"--num-utterances {args.num_utterances}: must be between 1 and {table.size(0)} (rows in {args.shape_info})")

    shapes = table[: args.num_utterances]
    t_lens, u_lens = shapes[:, 0].int(), shapes[:, 1].int()
    gen = torch.Generator().manual_seed(args.seed)
    n, t_max, u_max, vocab = len(shapes), int(t_lens.max()), int(u_lens.max()), args.vocab_size
    logits = torch.randn(n, t_max, u_max + 1, vocab, generator=gen)
    packed = torch.cat([logits[i, :t, : u + 1].reshape(-1, vocab) for i, (t, u) in enumerate(shapes.tolist())])
    batch = {"targets": torch.randint(1, vocab, (n, u_max), generator=gen, dtype=torch.int32), "t_lens": t_lens,
             "u_lens": u_lens, "boundary": torch.stack([torch.zeros_like(t_lens), torch.zeros_like(t_lens), u_lens, t_lens], 1).long()}
    impls = make_impls(batch)
    runnable = [name for name in names if importable(name)]
    rows, results = [], {}
    bar = tqdm(total=len(runnable) * (args.repeats + 1), desc="loss+backward", unit="run")
    for name in runnable:
        layout, loss_fn = impls[name]
        source = logits if layout == "4-D" else packed
        work = source.detach().clone().requires_grad_()
        bar.set_description(name)
        extra = peak_extra_bytes(loss_fn, source, work)
        bar.update()
        times, value = [], None
        for _ in range(args.repeats):
            seconds, value = one_run(loss_fn, source, work)
            times.append(seconds)
            bar.update()
        results[name] = dict(layout=layout, median_s=statistics.median(times), times_s=times, extra_bytes=extra,
                             logits_bytes=source.numel() * source.element_size(), loss=value)
        del work
    bar.close()

    base = results.get("torchaudio", {}).get("median_s")
    lines = ["| implementation | layout | median time (s) | time vs torchaudio | extra memory (MB) | extra memory / logits size | loss value |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        if name not in results:
            lines.append(f"| {name} | {impls[name][0]} | unavailable (pip install {PIP.get(name, name)}) | | | | |")
            continue
        r = results[name]
        ratio = f"{r['median_s'] / base:.3f}x" if base else "n/a"
        lines.append(f"| {name} | {r['layout']} | {r['median_s']:.3f} | {ratio} | {r['extra_bytes'] / 2**20:.1f} | "
                     f"{r['extra_bytes'] / r['logits_bytes']:.3f}x | {r['loss']:.4f} |")
    header = (f"device: cpu ({torch.get_num_threads()} threads), torch {torch.__version__}; N={n}, T_max={t_max}, "
              f"U_max={u_max}, V={vocab}; logits 4-D {tuple(logits.shape)} float32 = {logits.numel() * 4 / 2**20:.1f} MB, "
              f"packed {tuple(packed.shape)} = {packed.numel() * 4 / 2**20:.1f} MB; median of {args.repeats}")
    print(header + "\n\n" + "\n".join(lines))
    if args.output_json:
        atomic_write_json(args.output_json, {"header": header, "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
