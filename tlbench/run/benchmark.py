"""``python -m tlbench.run.benchmark --impl SPEC [flags]``: benchmarks one implementation, a
built-in name or ``MODULE_OR_FILE:NAME``, in this process; what the suite runs per job."""

from __future__ import annotations

import sys
from typing import List, Optional

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> None:
    from tlbench.core.errors import ArgumentParser, exit_on_usage_error
    from tlbench.implementations.registry import load
    from tlbench.run.harness import main as run_main

    @exit_on_usage_error
    def implementation(args_in):
        parser = ArgumentParser(add_help=False)
        parser.add_argument("--impl", required=True, help="a built-in name or MODULE_OR_FILE:NAME")
        args, rest = parser.parse_known_args(args_in)
        return load(args.impl), rest

    impl, rest = implementation(sys.argv[1:] if argv is None else argv)
    run_main(impl, rest)


if __name__ == "__main__":
    main()
