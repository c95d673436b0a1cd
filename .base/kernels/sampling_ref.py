"""Reference for the sampler: vLLM's sort-based filtering, any float dtype (tests use float64).

Order (vLLM v1 sampler): temperature -> min-p -> top-k -> top-p (renormalised over the
top-k set) -> sample. Greedy rows (temperature < 1e-5) take the argmax and skip filters.
"""

from __future__ import annotations

import torch

from ._args import GREEDY_EPS


def filtered_logits_reference(logits, *, temperature=None, top_k=None, top_p=None, min_p=None,
                              logits_scaled=False):
    """Scaled logits with filtered-out tokens set to -inf (greedy rows: unscaled, unfiltered)."""
    x = logits.clone()
    b, v = x.shape
    ninf = float("-inf")
    greedy = torch.zeros(b, dtype=torch.bool, device=x.device)
    if temperature is not None:
        t = temperature.to(x.dtype).view(b, 1)
        greedy = t.view(b) < GREEDY_EPS
        if not logits_scaled:
            x = x / torch.where(greedy.view(b, 1), torch.ones_like(t), t)
    filt = x.clone()
    if min_p is not None:
        probs = filt.softmax(-1)
        keep = probs >= min_p.to(x.dtype).view(b, 1) * probs.amax(-1, keepdim=True)
        filt = filt.masked_fill(~keep, ninf)
    if top_k is not None:
        k = top_k.to(torch.long).view(b)
        k = torch.where((k <= 0) | (k > v), torch.full_like(k, v), k)
        kth = filt.sort(-1, descending=True).values.gather(1, (k - 1).view(b, 1))
        filt = filt.masked_fill(filt < kth, ninf)
    if top_p is not None:
        srt, idx = filt.sort(-1, descending=False)
        cum = srt.softmax(-1).cumsum(-1)
        drop = cum <= 1 - top_p.to(x.dtype).view(b, 1)
        drop[:, -1] = False
        filt = filt.masked_fill(torch.zeros_like(drop).scatter(1, idx, drop), ninf)
    return torch.where(greedy.view(b, 1), x, filt), greedy


def sampling_probs_reference(logits, **kw):
    """The distribution each row is sampled from ([B, V]; greedy rows one-hot)."""
    filt, greedy = filtered_logits_reference(logits, **kw)
    probs = filt.softmax(-1)
    onehot = torch.zeros_like(probs).scatter(1, filt.argmax(-1, keepdim=True), 1.0)
    return torch.where(greedy.view(-1, 1), onehot, probs)


def sample_reference(logits, noise, **kw):
    """argmax over the kept tokens of (scaled logit + Gumbel noise); greedy rows: argmax."""
    filt, greedy = filtered_logits_reference(logits, **kw)
    keyed = torch.where(greedy.view(-1, 1), filt, filt + noise.to(filt.dtype))
    return keyed.argmax(-1)
