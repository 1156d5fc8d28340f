#!/usr/bin/env python3
"""Time and memory of RNN-T loss + backward alone, every implementation on the same logits.

See :mod:`tlbench.tools.loss_only` for what is measured. The batch is the first ``--num-utterances``
rows of a shape table (by default the real LibriSpeech table in ``../shared/reference/`` when it
is there, else the repository's ``shape_info.pt``); the implementations are the registry's
(``--only``) and any ``--impl MODULE_OR_FILE:NAME``.
"""

from __future__ import annotations

import os
import sys

from tlbench import REPO_DIR
from tlbench.core.errors import ArgumentParser, UsageError, exit_on_usage_error
from tlbench.core.io import atomic_write_json, check_input_file, check_output_file
from tlbench.data.shape_table import load_shape_info
from tlbench.implementations.registry import builtin_names, load, select

REFERENCE_SHAPES = os.path.join(os.path.dirname(REPO_DIR), "shared", "reference",
                                "librispeech_train_clean_100_sp_shape_info.pt")
DEFAULT_SHAPES = REFERENCE_SHAPES if os.path.isfile(REFERENCE_SHAPES) else os.path.join(REPO_DIR, "shape_info.pt")


@exit_on_usage_error
def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape-info", default=DEFAULT_SHAPES, help="(N, 2) table of [T, U] rows")
    p.add_argument("--num-utterances", type=int, default=8, help="the batch: the table's first rows")
    p.add_argument("--vocab-size", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per implementation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated subset of: " + ", ".join(builtin_names()))
    p.add_argument("--impl", action="append", default=[], metavar="MODULE_OR_FILE:NAME",
                   help="also measure this implementation (repeatable)")
    p.add_argument("--output-json", default=None, help="also write the results there")
    args = p.parse_args(argv)
    if args.vocab_size < 2 or args.repeats < 1:
        raise UsageError(f"--vocab-size {args.vocab_size} / --repeats {args.repeats}: need vocab >= 2 and repeats >= 1")
    output = check_output_file(args.output_json, "--output-json") if args.output_json else None
    impls = [load(spec) for spec in select(args.only, args.impl)]
    table = load_shape_info(check_input_file(args.shape_info, "--shape-info", "shape table file"))
    if not 1 <= args.num_utterances <= table.size(0):
        raise UsageError(f"--num-utterances {args.num_utterances}: must be between 1 and {table.size(0)} "
                         f"(rows in {args.shape_info})")
    import torch

    from tlbench.render.tables import loss_only_table
    from tlbench.tools.loss_only import make_batch, run_loss_only

    data = make_batch(table[: args.num_utterances], args.vocab_size, args.seed)
    rows = run_loss_only(impls, data, args.repeats)
    logits, packed = data.logits, data.packed
    header = (f"device: cpu ({torch.get_num_threads()} threads), torch {torch.__version__}; N={logits.size(0)}, "
              f"T_max={logits.size(1)}, U_max={logits.size(2) - 1}, V={args.vocab_size}; logits 4-D "
              f"{tuple(logits.shape)} float32 = {logits.numel() * 4 / 2**20:.1f} MB, packed {tuple(packed.shape)} = "
              f"{packed.numel() * 4 / 2**20:.1f} MB; median of {args.repeats} runs")
    print(header + "\n\n" + loss_only_table(rows))
    if output:
        atomic_write_json(output, {"header": header, "args": vars(args), "rows": [r.to_dict() for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
