#!/usr/bin/env python3
"""How big a batch fits: for each implementation, the largest fixed batch size and the largest
max-frames (sorted batching) whose step stays within ``--memory-budget-gb``, found by bisection
over real probe runs of the suite's own step, each in its own process (see :mod:`tlbench.tools.capacity`).

Writes ``capacity.md``, ``capacity.csv``, ``capacity.json`` and ``capacity.png`` into
``--out-dir`` (default ``log/capacity``), the probes' run folders under ``<out-dir>/probes/``.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys

from tlbench import REPO_DIR
from tlbench.core.errors import ArgumentParser, UsageError, exit_on_usage_error
from tlbench.core.io import atomic_save_tensor, atomic_write_json, atomic_write_text, check_input_file, check_output_dir
from tlbench.implementations.registry import builtin_names, load, select
from tlbench.run.executors import add_executor_arguments, execute, resolve_executor
from tlbench.run.options import DEFAULT_SEED, DTYPES, resolve_device

DEFAULT_MAX_PROBES = 12


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--memory-budget-gb", type=float, default=None,
                        help="the budget in GiB (default on CUDA: the GPU's total memory; required on CPU)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(builtin_names())}")
    parser.add_argument("--impl", action="append", default=[], metavar="MODULE_OR_FILE:NAME",
                        help="also search this implementation (repeatable); with --impl and no --only only these")
    parser.add_argument("--mode", default="both", help="batch-size, max-frames or both (default)")
    parser.add_argument("--max-probes", type=int, default=DEFAULT_MAX_PROBES,
                        help=f"probes per implementation and mode at most (default {DEFAULT_MAX_PROBES})")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--shape-info", default=os.path.join(REPO_DIR, "shape_info.pt"), help="shape table (N, 2)")
    parser.add_argument("--vocab-size", type=int, default=500)
    parser.add_argument("--encoder-out-dim", type=int, default=512)
    parser.add_argument("--dtype", default="float32", help=f"logits dtype: {', '.join(DTYPES)}")
    parser.add_argument("--subsampling-factor", type=int, default=4, help="as for the benchmark scripts")
    parser.add_argument("--max-utterance-frames", type=int, default=None, help="drop longer utterances first")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out-dir", default=os.path.join(REPO_DIR, "log", "capacity"))
    add_executor_arguments(parser)
    return parser


def _budget_gb(args, device: str) -> float:
    from tlbench.tools.capacity import machine_memory_bytes

    if args.memory_budget_gb is not None and not args.memory_budget_gb > 0:
        raise UsageError(f"--memory-budget-gb {args.memory_budget_gb} is not allowed; it must be > 0")
    if device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        if args.memory_budget_gb is not None and args.memory_budget_gb > total:
            raise UsageError(f"--memory-budget-gb {args.memory_budget_gb} is more than the GPU's {total:.1f} GiB")
        return args.memory_budget_gb or total
    if args.memory_budget_gb is None:
        raise UsageError("--memory-budget-gb is required on CPU (there is no device memory to default to)")
    total = machine_memory_bytes()
    if total is not None and args.memory_budget_gb > total / 2**30:
        raise UsageError(f"--memory-budget-gb {args.memory_budget_gb} is more than this machine's "
                         f"{total / 2**30:.1f} GiB of memory")
    return float(args.memory_budget_gb)


@exit_on_usage_error
def prepare(argv):
    """Validates everything and returns (jobs, executor settings, header lines, out_dir)."""
    import torch

    from tlbench.data.shape_table import load_shape_info, rescale_frames
    from tlbench.tools.capacity import MODES, CapacityJob

    args = build_parser().parse_args(argv)
    modes = list(MODES) if args.mode == "both" else [args.mode]
    if not set(modes) <= set(MODES):
        raise UsageError(f"--mode {args.mode!r} is not allowed; use batch-size, max-frames or both")
    if args.max_probes < 1:
        raise UsageError(f"--max-probes {args.max_probes} is not allowed; it must be >= 1")
    if args.dtype not in DTYPES:
        raise UsageError(f"--dtype {args.dtype!r} is not allowed; use {', '.join(DTYPES)}")
    device = resolve_device(args.device)
    budget = _budget_gb(args, device)
    specs = select(args.only, args.impl)
    table = rescale_frames(load_shape_info(check_input_file(args.shape_info, "--shape-info", "shape table file")),
                           args.subsampling_factor)
    if args.max_utterance_frames is not None:
        table = table[table[:, 0] <= args.max_utterance_frames]
        if table.size(0) == 0:
            raise UsageError(f"--max-utterance-frames {args.max_utterance_frames} leaves no utterance")
    out_dir = check_output_dir(args.out_dir, "--out-dir")
    table_path = os.path.join(out_dir, "shape_info.pt")  # the table the probes draw from, final T
    atomic_save_tensor(table_path, table.to(torch.int32))
    flags = ["--vocab-size", str(args.vocab_size), "--encoder-out-dim", str(args.encoder_out_dim), "--dtype",
             args.dtype, "--seed", str(args.seed)]
    jobs = [CapacityJob(spec, load(spec).name, mode, budget, device, table_path, out_dir, args.max_probes, flags,
                        args.seed, args.vocab_size) for spec in specs for mode in modes]
    header = [f"Device: {device}; budget {budget:g} GiB "
              + ("(enforced with torch.cuda.set_per_process_memory_fraction)" if device == "cuda" else
                 "(a probe fits when the profiler's peak allocated memory is within it)"),
              f"Shape table: {os.path.abspath(args.shape_info)} ({table.size(0)} utterances after --subsampling-factor "
              f"{args.subsampling_factor} and --max-utterance-frames {args.max_utterance_frames}); V = "
              f"{args.vocab_size}, C = {args.encoder_out_dim}, {args.dtype} logits, seed {args.seed}",
              "Probe: the suite's step (random data, joiner, loss, backward) on the batch of that size with the "
              "largest padded lattice N x T_max x (U_max + 1), two steps, the second recorded, in its own process",
              f"Search: doubling from batch size 1 / max-frames = the longest utterance, then bisection (batch size "
              f"exact, max-frames to 1%), at most {args.max_probes} probes per implementation and mode",
              f"torch {torch.__version__}, Python {platform.python_version()}, "
              f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}"]
    return jobs, resolve_executor(args, out_dir), header, out_dir


def main(argv=None) -> int:
    jobs, executor, header, out_dir = prepare(argv)
    from tqdm import tqdm

    from tlbench.render.pictures import draw_capacity
    from tlbench.render.tables import capacity_csv, capacity_markdown
    from tlbench.tools.capacity import CapacityRow, run_capacity_job

    rows = []
    with tqdm(total=len(jobs), desc="capacity searches", unit="search", file=sys.stderr) as progress:
        def arrived(outcome):
            job = outcome.item
            row = outcome.result if outcome.ok else CapacityRow(job.name, job.mode, job.budget_gb, None, None, None,
                                                                 None, None, outcome.error or "the job failed",
                                                                 device=job.device)
            rows.append(row)
            progress.update()

        execute(run_capacity_job, jobs, executor, on_outcome=arrived)
    markdown = capacity_markdown(rows, header)
    atomic_write_text(os.path.join(out_dir, "capacity.md"), markdown)
    atomic_write_text(os.path.join(out_dir, "capacity.csv"), capacity_csv(rows))
    atomic_write_json(os.path.join(out_dir, "capacity.json"), {"header": header, "rows": [r.to_dict() for r in rows]})
    picture = os.path.join(out_dir, "capacity.png")
    try:
        draw_capacity(rows, picture, f"How big a batch fits, {header[0].split(';')[0].lower()}, "
                      f"budget {rows[0].budget_gb:g} GiB" if rows else "")
    except Exception as error:  # a picture must never cost the tables
        print(f"capacity.png not drawn: {type(error).__name__}: {error}", file=sys.stderr)
    print(markdown)
    print(f"written: {', '.join(os.path.join(out_dir, n) for n in ('capacity.md', 'capacity.csv', 'capacity.json'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
