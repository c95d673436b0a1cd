"""The steering processor's step counters, shared with the server's ``/metrics``.

vLLM runs the logits processors in its engine-core process, not in the server's, so the
counters that say how steering ran (rows planned on the fast path, rollback signals, the
runner-V2 adapter's staged reads) live there. Each engine process that steers writes its
counters into a small file of its own in the directory named by :data:`STATS_DIR_ENV`
(the server creates it before it starts the engine; the engine's processes inherit the
variable), and the server reads them when ``/metrics`` is scraped
(:func:`read_stats`). Without the variable (tests, benchmarks) the counters are kept in
memory only.

A file is :data:`MAGIC` and then one little-endian int64 per :data:`FIELDS` entry, each
the total since the process started. The writer overwrites them after a step (aligned
8-byte stores: a reader sees each value whole, old or new); nothing else is shared.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

STATS_DIR_ENV = "GREYELEPHANT_STEERING_STATS_DIR"
MAGIC = b"GESTEP01"
# (name, help): Prometheus exports each as greyelephant_steering_<name>_total
FIELDS: tuple[tuple[str, str], ...] = (
    ("steps", "Decode steps that steered at least one row"),
    ("row_steps", "Steered rows summed over decode steps"),
    ("fast_row_steps", "Of those, rows advanced by the lanes' compiled step (no Python "
                       "per row)"),
    ("pooled_row_steps", "Of those, rows whose plan came from the plan pool"),
    ("rollback_signals", "Rollback signals sent (a choice heading into an avoided form)"),
    ("anticipated_starts", "Start bans applied where a greedy choice would have written "
                           "a whole avoided form (no rollback needed)"),
    ("v2_staged_steps", "Runner V2: steps planned from the fed tokens read before the "
                        "forward pass"),
    ("v2_read_back_steps", "Runner V2: steps that read the fed tokens after waiting for "
                           "the forward pass"),
)
NAMES = tuple(name for name, _ in FIELDS)
_FILE_PREFIX = "steering-"
_FILE_SUFFIX = ".stats"
_SIZE = len(MAGIC) + 8 * len(FIELDS)
_INSTANCES = itertools.count()


class StepStats:
    """This process's counters (:data:`FIELDS`, in order) as an int64 array, backed by
    its stats file when the server asked for one."""

    def __init__(self, path: Path | None = None):
        """``path``: the file to create and write (None: memory only)."""
        self.path = path
        if path is None:
            self.values = np.zeros(len(FIELDS), dtype=np.int64)
            return
        with open(path, "w+b") as f:
            f.write(MAGIC + bytes(8 * len(FIELDS)))
            f.flush()
            self._map = mmap.mmap(f.fileno(), _SIZE)  # (it outlives the file object)
        # a plain array over the mapping (np.memmap's stores cost 4x as much)
        self.values = np.frombuffer(self._map, dtype="<i8", offset=len(MAGIC),
                                    count=len(FIELDS))

    @classmethod
    def for_this_process(cls) -> StepStats:
        """The counters of this process: in a file of the directory named by
        :data:`STATS_DIR_ENV` when it is set and writable, else in memory (a file that
        cannot be created is logged, and steering goes on)."""
        directory = os.environ.get(STATS_DIR_ENV)
        if not directory:
            return cls()
        n = next(_INSTANCES)  # (a second processor in one process: a file of its own)
        name = f"{os.getpid()}" if n == 0 else f"{os.getpid()}-{n}"
        path = Path(directory) / f"{_FILE_PREFIX}{name}{_FILE_SUFFIX}"
        try:
            return cls(path)
        except OSError:
            logger.warning("steering: cannot write step counters to %s; /metrics will not "
                           "show them", path, exc_info=True)
            return cls()

    def publish(self, values: Sequence[int]) -> None:
        """Set the counters to these totals (one per field, in order)."""
        self.values[:] = values

    def as_dict(self) -> dict[str, int]:
        return dict(zip(NAMES, self.values.tolist(), strict=True))


def read_stats(directory: str | os.PathLike | None) -> dict[str, dict[str, int]]:
    """The counters of each engine process that wrote a stats file in ``directory``,
    keyed by its pid (as a string; a second processor in one process: "<pid>-1"); files
    that are not (yet) whole stats files are skipped, and so is a missing directory."""
    if not directory:
        return {}
    out: dict[str, dict[str, int]] = {}
    try:
        paths = sorted(Path(directory).glob(f"{_FILE_PREFIX}*{_FILE_SUFFIX}"))
    except OSError:
        return {}
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if len(data) != _SIZE or not data.startswith(MAGIC):
            continue
        values = np.frombuffer(data, dtype="<i8", offset=len(MAGIC)).tolist()
        pid = path.name[len(_FILE_PREFIX):-len(_FILE_SUFFIX)]
        out[pid] = dict(zip(NAMES, values, strict=True))
    return out
