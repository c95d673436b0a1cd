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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch


def decode_steps(batch, outs: list[list[int]], tokens: Sequence[int],
                 logits_pool: Sequence[torch.Tensor], *, warmup: int, steps: int,
                 ends: frozenset[int], restart: Callable[[int], list[int]],
                 stride: int = 977) -> dict:
    """Run ``warmup + steps`` decode steps; return the timed steps' seconds and counts.

    ``outs[i]`` is row i's output token list (the batch reads it); ``restart(i)`` re-adds
    row i as a new request and returns its new output list."""
    b = len(outs)
    device = logits_pool[0].device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n_text = len(tokens)
    pos = [i * stride % n_text for i in range(b)]
    rows = torch.arange(b, device=device)
    choice = [tokens[p] for p in pos]
    times: list[float] = []
    diverted = restarts = 0
    for step in range(warmup + steps):
        for i in range(b):
            outs[i].append(choice[i])
        x = logits_pool[step % len(logits_pool)].clone()
        sync()
        t0 = time.perf_counter()
        batch.apply(x)
        sync()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
        want = [tokens[(p + 1) % n_text] for p in pos]
        blocked = torch.isneginf(x[rows, torch.tensor(want, device=device)]).tolist()
        best = x.argmax(dim=-1).tolist() if any(blocked) else None
        for i in range(b):
            pos[i] = (pos[i] + 1) % n_text
            choice[i] = best[i] if blocked[i] else want[i]
            diverted += blocked[i] and step >= warmup
            if choice[i] in ends:
                outs[i] = restart(i)
                choice[i] = tokens[pos[i]]
                restarts += step >= warmup
    return {"times": times, "diverted": int(diverted), "restarts": int(restarts)}
