"""Vectorised torch sampler (the CPU path): exact pivot search, no sort.

Kept set K = {x >= theta_k} ∩ {xs >= m + log(min_p)} ∩ nucleus, an upper set of the
row's scaled logits ``xs``. The answer is ``argmax_{i in K} (xs_i + g_i)``. Search:

* pass 0: ``m = max xs``; candidate ``c = argmax_{x >= theta_k} (xs + g)``;
* round: with pivot ``xs_c``, one pass gives ``M = mass(xs > xs_c)``, ``Z = mass(R)``
  (R = top-k ∩ min-p set) and ``c' = argmax_{xs > xs_c, i in R} (xs + g)``. If c is in R
  and ``M < top_p * Z`` then c is in K and, being the argmax over a superset, is the
  answer. Otherwise every token at or below c is outside K, so c' (the argmax over a
  superset of K) is the next candidate.

Each round moves the pivot up; the expected number of rounds is about
``1 + (1 - top_p)``. Loops run over rounds only (vectorised over rows and tokens).
"""

from __future__ import annotations

import torch

from .rng import gumbel_noise

MAX_ROUNDS = 64


def sample_torch(logits: torch.Tensor, p) -> torch.Tensor:
    b, v = logits.shape
    ninf = float("-inf")
    x = logits.float()
    bad = torch.isnan(x).any(1) | torch.isposinf(x).any(1)
    x = torch.where(torch.isnan(x), ninf, x)
    xs = x * p.inv_temp.view(b, 1)
    m = xs.amax(1)
    key = xs + gumbel_noise(p.key_a, p.key_b, v) * p.noise_scale.view(b, 1)
    in_k = x >= p.theta_k.view(b, 1)
    cand = torch.where(in_k, key, ninf).argmax(1)

    thr = m + p.log_min_p
    in_r = in_k & (xs >= thr.view(b, 1))
    rows = torch.arange(b, device=x.device)
    cand_xs = xs[rows, cand]
    valid = cand_xs >= thr
    done = bad | (m == ninf) | (valid & (p.top_p >= 1))
    for _ in range(MAX_ROUNDS):
        if bool(done.all()):
            break
        act = (~done).nonzero().view(-1)  # work on unfinished rows only
        xa, ka, ra = xs[act], key[act], in_r[act]
        e = torch.exp(xa - m[act].view(-1, 1))
        above = xa > cand_xs[act].view(-1, 1)
        mass_above = torch.where(above, e, 0.0).sum(1)
        mass_r = torch.where(ra, e, 0.0).sum(1)
        new_key = torch.where(above & ra, ka, ninf)
        new = new_key.argmax(1)
        has_new = new_key.gather(1, new.view(-1, 1)).view(-1) > ninf
        accept = valid[act] & (mass_above < p.top_p[act] * mass_r)
        take = ~accept & has_new
        cand[act] = torch.where(take, new, cand[act])
        cand_xs[act] = torch.where(take, xa.gather(1, new.view(-1, 1)).view(-1), cand_xs[act])
        valid[act] = valid[act] | take
        done[act] = accept | ~has_new | (take & (p.top_p[act] >= 1))
    return torch.where(bad | (m == ninf), torch.full_like(cand, -1), cand)
