"""The decode loop the per-step benchmarks time (``steering_step.py``,
``steering_step_compare.py``).

It imports nothing from the project, so that ``steering_step_compare`` can run it against
an older commit's ``SteeringBatch``: the batch, the logits and a ``restart`` callback are
passed in.

Each row writes real text, as a model that wants to write it would under the masks: it
takes the text's next token unless the step's controlled logits ban it, and then the row's
best allowed token (its argmax) instead, moving on in the text either way. A row handed
its rollback signal (or a stop token) ends there, as its request would in the engine, and
``restart(i)`` puts a fresh request in its place (a rollback continuation costs its first
step like any new request). Only ``batch.apply`` is timed.

Each step's logits are copied into one buffer that the loop allocates once, so every step
starts from memory the process has touched before, as it does in an engine whose
allocator keeps its blocks (torch's caching allocator on a GPU; glibc's heap on the CPU
once its mmap threshold has adapted). A fresh tensor per step (``clone()``) sometimes
lands on newly mapped pages, zero-filled by the kernel and cold in cache and TLB; whether
it does depends on the allocator's state, which differs from one process to the next, and
it made the same code's step time vary by 2x between runs.

:class:`DecodeLoop` runs one step at a time, so that a comparison can interleave the steps
of several batches (code versions) in one process, and a benchmark can read what each
step's phases took between steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch


class DecodeLoop:
    """One batch's decode loop, a step at a time.

    ``outs[i]`` is row i's output token list (the batch reads it); ``restart(i)`` re-adds
    row i as a new request and returns its new output list. Row i starts at offset
    ``i * stride`` of the text. A batch with a ``prepare(outs)`` method has it called
    before each timed ``apply`` (an adapter building its step's inputs from the rows'
    outputs, as an engine does before the logits processors run)."""

    def __init__(self, batch, outs: list[list[int]], tokens: Sequence[int],
                 logits_pool: Sequence[torch.Tensor], *, ends: frozenset[int],
                 restart: Callable[[int], list[int]], stride: int = 977):
        self.batch, self.outs, self.tokens = batch, outs, tokens
        self.logits_pool, self.ends, self.restart = logits_pool, ends, restart
        device = logits_pool[0].device
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.pos = [i * stride % len(tokens) for i in range(len(outs))]
        self.rows = torch.arange(len(outs), device=device)
        self.buffer = torch.empty_like(logits_pool[0])
        self.choice = [tokens[p] for p in self.pos]
        # called at the start of each timed step (before ``apply``): what an engine has
        # still in flight then, e.g. a stand-in for the forward pass on a GPU (step_overlap)
        self.in_flight: Callable[[], None] | None = None
        self.n = 0  # steps run
        self.diverted = self.restarts = 0  # counted over the steps run with count=True

    def step(self, count: bool = True) -> float:
        """Run one decode step; return the seconds ``batch.apply`` took."""
        outs, tokens, pos, choice = self.outs, self.tokens, self.pos, self.choice
        n_text = len(tokens)
        for i in range(len(outs)):
            outs[i].append(choice[i])
        prepare = getattr(self.batch, "prepare", None)
        if prepare is not None:  # (an adapter's inputs, built before the timed call)
            prepare(outs)
        x = self.buffer
        x.copy_(self.logits_pool[self.n % len(self.logits_pool)])
        self.n += 1
        self.sync()
        t0 = time.perf_counter()
        if self.in_flight is not None:
            self.in_flight()
        self.batch.apply(x)
        self.sync()
        took = time.perf_counter() - t0
        want = [tokens[(p + 1) % n_text] for p in pos]
        blocked = torch.isneginf(x[self.rows, torch.tensor(want, device=x.device)]).tolist()
        best = x.argmax(dim=-1).tolist() if any(blocked) else None
        for i in range(len(outs)):
            pos[i] = (pos[i] + 1) % n_text
            choice[i] = best[i] if blocked[i] else want[i]
            self.diverted += blocked[i] and count
            if choice[i] in self.ends:
                outs[i] = self.restart(i)
                choice[i] = tokens[pos[i]]
                self.restarts += count
        return took


def memoised_argmax_rows(argmax_rows: Callable) -> Callable:
    """``steering_batch._argmax_rows`` (the rollback check's torch argmax on a GPU's path)
    memoised per logits tensor: for a CPU standing in for a GPU's host, where that argmax,
    a device op on a GPU, takes tens of milliseconds on one thread. A loop's step logits
    are a copy of one of its pool's tensors, unchanged until the check has read them, so
    the shape and two corner values tell them apart."""
    seen: dict[tuple, list[int]] = {}

    def memo(logits: torch.Tensor, rows: list[int] | None) -> list[int] | dict[int, int]:
        key = (logits.shape, float(logits[0, 0]), float(logits[-1, -1]))
        best = seen.get(key)
        if best is None:
            best = seen[key] = argmax_rows(logits, list(range(logits.shape[0])))
        if rows is None or 4 * len(rows) >= len(best):  # (None: every row, newer code)
            return best
        return {i: best[i] for i in rows}

    return memo
