"""The one status vocabulary of every result: a run's summary, a grid cell, a verification
row, a report row. String-valued (``Status.OK == "ok"``), so the JSON files hold the same
strings as before the type existed.

Which tool uses which:

- a benchmark run (``summary.json``): ``ok``, ``oom``, ``unavailable`` (the library or the
  device is missing), ``unsupported`` (the configuration is refused), ``error``;
- a grid cell: the run's, plus ``skipped`` (a cell left out by ``--triangle-only``);
- a verification row: ``ok``, ``FAIL``, ``refused`` (the library raised on an input it is known
  to reject), ``skipped``, ``unavailable``;
- a report row: the run's, plus ``corrupt`` (its ``summary.json`` cannot be read);
- a capacity probe: the run's, plus ``refused`` (estimated beyond the machine's free memory,
  not run) and ``over budget`` (it ran, and its peak memory exceeds the budget);
- a loss-only row: ``ok``, ``unavailable``, ``error``, ``not applicable`` (the loss takes no logits).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Dict

__all__ = ["CELL_STATUSES", "EXIT_CODES", "RUN_STATUSES", "VERIFY_STATUSES", "Status"]


class Status(StrEnum):
    OK = "ok"
    OOM = "oom"
    UNAVAILABLE = "unavailable"
    UNSUPPORTED = "unsupported"
    ERROR = "error"
    SKIPPED = "skipped"
    FAIL = "FAIL"
    REFUSED = "refused"
    CORRUPT = "corrupt"
    OVER_BUDGET = "over budget"
    NOT_APPLICABLE = "not applicable"


RUN_STATUSES = (Status.OK, Status.OOM, Status.UNAVAILABLE, Status.UNSUPPORTED, Status.ERROR)
CELL_STATUSES = (*RUN_STATUSES, Status.SKIPPED)
VERIFY_STATUSES = (Status.OK, Status.FAIL, Status.REFUSED, Status.SKIPPED, Status.UNAVAILABLE)

# A run that measured nothing because the library is missing or refuses the configuration is
# still a successful run of the benchmark script; only an unexpected error fails it.
EXIT_CODES: Dict[Status, int] = {Status.OK: 0, Status.OOM: 0, Status.UNAVAILABLE: 0, Status.UNSUPPORTED: 0,
                                 Status.ERROR: 1}
