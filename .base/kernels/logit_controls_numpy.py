"""The fused logit controls for float32 logits on the CPU, through numpy.

The same stages, order and float32 arithmetic as :mod:`.logit_controls_torch` (and so the
same results, bit for bit), on numpy views of the logits' storage, in place. A decode step
of a steered batch touches a few hundred logits; torch's fixed cost per CPU operation
(several microseconds, about twenty operations a step) outweighs that work, numpy's is a
fraction of it. Half-precision logits stay on the torch path (numpy has no bfloat16).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch

from ._args import GREEDY_EPS
from .logit_controls_torch import SPARSE_MASK_MAX_WORD_SHARE

_NEG_INF = np.float32(-np.inf)
_NEG_INF_BITS = _NEG_INF.view(np.int32)
_ROW0 = np.zeros(1, dtype=np.int64)


def supports(logits: torch.Tensor) -> bool:
    """Whether :func:`apply_logit_controls_numpy` takes these logits (CPU float32, on a
    little-endian machine: the masks' words are read as bytes)."""
    return (logits.device.type == "cpu" and logits.dtype == torch.float32
            and logits.numel() > 0 and sys.byteorder == "little")


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().numpy()


def _flat_index(indptr: np.ndarray, ids: np.ndarray, vocab: int, stride: int):
    """(flat index into the logits storage, row of each entry, keep-mask) for a CSR list."""
    rows = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
    ids = ids.astype(np.int64)
    keep = (ids >= 0) & (ids < vocab)
    return rows * stride + ids, rows, keep


def apply_logit_controls_numpy(
    logits: torch.Tensor,
    *,
    bias_indptr=None,
    bias_token_ids=None,
    bias_values=None,
    banned_bitmask=None,
    penalty_indptr=None,
    penalty_token_ids=None,
    penalty_output_counts=None,
    penalty_in_prompt=None,
    repetition_penalty=None,
    presence_penalty=None,
    frequency_penalty=None,
    temperature=None,
    banned_indptr=None,
    banned_token_ids=None,
    mask_table=None,
    mask_rows=None,
) -> torch.Tensor:
    """In place on CPU float32 ``logits`` [B, V] (rows may be strided); arguments as for
    :func:`.logit_controls.apply_logit_controls` after its normalisation (CPU tensors).
    ``mask_table`` + ``mask_rows`` are read in place: only the rows with a mask (a slot
    other than 0) are touched."""
    if not supports(logits):
        raise TypeError("the numpy path takes non-empty CPU float32 logits")
    b, v = logits.shape
    x = logits.detach().numpy()
    stride = logits.stride(0)
    # a flat view over the rows' storage (rows may be strided, columns are contiguous)
    flat = x.reshape(-1) if stride == v else np.lib.stride_tricks.as_strided(
        x, shape=((b - 1) * stride + v,), strides=(x.itemsize,))

    if bias_indptr is not None and bias_token_ids.numel() > 0:
        idx, _, keep = _flat_index(_np(bias_indptr), _np(bias_token_ids), v, stride)
        vals = _np(bias_values).astype(np.float32, copy=False)
        if not keep.all():
            idx, vals = idx[keep], vals[keep]
        flat[idx] = flat[idx] + vals

    pens = (repetition_penalty, presence_penalty, frequency_penalty)
    if (penalty_indptr is not None and any(p is not None for p in pens)
            and penalty_token_ids.numel() > 0):
        idx, rows, keep = _flat_index(_np(penalty_indptr), _np(penalty_token_ids), v, stride)
        counts, prompt = _np(penalty_output_counts), _np(penalty_in_prompt)
        if not keep.all():
            idx, rows = idx[keep], rows[keep]
            counts = None if counts is None else counts[keep]
            prompt = None if prompt is None else prompt[keep]
        y = flat[idx]
        cnt = counts.astype(np.float32) if counts is not None else np.zeros_like(y)
        in_output = cnt > 0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if repetition_penalty is not None:
                seen = in_output if prompt is None else in_output | (prompt != 0)
                r = _np(repetition_penalty).astype(np.float32, copy=False)[rows]
                y = np.where(seen, np.where(y > 0, y / r, y * r), y)
            y = _minus_penalties(
                y, cnt, None if presence_penalty is None else
                _np(presence_penalty).astype(np.float32, copy=False)[rows],
                None if frequency_penalty is None else
                _np(frequency_penalty).astype(np.float32, copy=False)[rows])
        flat[idx] = y

    if banned_bitmask is not None:
        _apply_bitmask(x, flat, _np(banned_bitmask), stride)
    if mask_table is not None:  # only the rows with a mask (slot 0: none)
        slots = _np(mask_rows).astype(np.int64, copy=False)
        table = _np(mask_table)
        if slots.size and (slots.min() < 0 or slots.max() >= table.shape[0]):
            raise IndexError(f"mask_rows outside the table's {table.shape[0]} slots")
        rows = np.flatnonzero(slots)
        if rows.size:
            _apply_bitmask(x, flat, table[slots[rows]], stride, rows)
    if banned_indptr is not None and banned_token_ids.numel() > 0:
        idx, _, keep = _flat_index(_np(banned_indptr), _np(banned_token_ids), v, stride)
        flat[idx[keep]] = _NEG_INF

    if temperature is not None:
        t = _np(temperature).astype(np.float32, copy=False)
        with np.errstate(divide="ignore"):
            inv = np.where(t < GREEDY_EPS, np.float32(1.0), np.float32(1.0) / t)
        x *= inv.astype(np.float32, copy=False)[:, None]
    return logits


def _fill_dense_row(row: np.ndarray, words: np.ndarray) -> None:
    """``row[t] = -inf`` where bit t of ``words`` is set, as bitwise selects on the
    logits' bits (``x & ~m | m & bits(-inf)``, m all ones at banned tokens): the result of
    a masked fill (NaN included) without its per-element branch, which costs several times
    more on a mask banning half the row."""
    bits = np.unpackbits(words.view(np.uint8), bitorder="little")[:row.size]
    m = np.negative(bits.astype(np.int32))
    xi = row.view(np.int32)
    np.bitwise_and(xi, np.invert(m), out=xi)
    np.bitwise_or(xi, m & _NEG_INF_BITS, out=xi)


def _apply_bitmask(x: np.ndarray, flat: np.ndarray, words: np.ndarray, stride: int,
                   rows: np.ndarray | None = None) -> None:
    """-inf at the banned tokens of ``words`` [R, W], the masks of the logits rows ``rows``
    (None: every row, in order): rows whose non-zero words are at most
    SPARSE_MASK_MAX_WORD_SHARE of the row are expanded sparsely (only their non-zero
    words), the others unpacked whole."""
    v = x.shape[1]
    if rows is None:
        rows = np.arange(words.shape[0])
    n_words = words.shape[1]
    per_row = np.count_nonzero(words, axis=1)
    dense = per_row > SPARSE_MASK_MAX_WORD_SHARE * n_words
    for r in np.flatnonzero(dense).tolist():
        _fill_dense_row(x[rows[r]], words[r])
    if not per_row[~dense].any():
        return
    at, cols = np.nonzero(words)
    if dense.any():
        sparse = ~dense[at]
        at, cols = at[sparse], cols[sparse]
    values = np.ascontiguousarray(words[at, cols]).view(np.uint8).reshape(-1, 4)
    hit, bit = np.nonzero(np.unpackbits(values, axis=1, bitorder="little"))
    tokens = cols[hit].astype(np.int64) * 32 + bit
    keep = tokens < v
    flat[(rows[at[hit]].astype(np.int64) * stride + tokens)[keep]] = _NEG_INF


def apply_row_controls_numpy(
    logits: torch.Tensor,
    rows: Sequence[int],
    *,
    bias: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None,
    penalty: Sequence[tuple[np.ndarray, np.ndarray, float, float] | None] | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    banned: Sequence[np.ndarray | None] | None = None,
    in_range: bool = False,
) -> torch.Tensor:
    """The controls of :func:`apply_logit_controls_numpy` given per row rather than as
    CSR lists: in place on CPU float32 ``logits`` [B, V], the k-th entry of
    each list belonging to logits row ``rows[k]`` (None: nothing of that kind there).

    * ``bias[k]``: (token ids, float32 values), ids unique;
    * ``penalty[k]``: (token ids, output counts, presence, frequency), ids unique;
    * ``masks[k]``: packed int32 ban mask (the ``banned_bitmask`` layout);
    * ``banned[k]``: token ids to ban (duplicates allowed).

    Ids outside [0, V) are ignored; ``in_range=True`` says the caller knows there are
    none (then no id is checked: a step saves two reductions per list). Per row, the stages run in the fused op's order (bias,
    presence/frequency penalties, mask, banned ids) with its float32 arithmetic, so a row
    comes out bit for bit as :func:`.logit_controls.apply_logit_controls` would leave it.
    A steered decode step on the CPU touches a few dozen logits per row: each stage
    gathers every row's ids into one list of flat indices into the logits' storage and
    applies them at once (a handful of numpy operations a stage, whatever the number of
    rows); logits without a flat view (not C-contiguous) are done row by row."""
    if not supports(logits):
        raise TypeError("the numpy path takes non-empty CPU float32 logits")
    x = logits.detach().numpy()
    b, v = x.shape
    for i in rows:
        if not 0 <= i < b:
            raise IndexError(f"row {i} outside the logits' {b} rows")
    fit = _as_is if in_range else _in_vocab
    if not x.flags.c_contiguous:  # no flat view of the storage: row by row
        for k, i in enumerate(rows):
            _row_controls(x[i], fit, bias[k] if bias is not None else None,
                          penalty[k] if penalty is not None else None,
                          masks[k] if masks is not None else None,
                          banned[k] if banned is not None else None)
        return logits
    # every row's entries of a stage at once, through flat indices into the storage (a
    # handful of numpy operations a stage, however many rows)
    flat = x.reshape(-1)
    if bias is not None:
        found = _flat_lists(rows, bias, v, fit)
        if found is not None:
            idx, _, vals = found
            flat[idx] = flat[idx] + vals.astype(np.float32, copy=False)
    if penalty is not None:
        found = _flat_lists(rows, penalty, v, fit)
        if found is not None:
            idx, owner, counts = found
            presence = np.array([e[2] if e else 0.0 for e in penalty], np.float32)[owner]
            frequency = np.array([e[3] if e else 0.0 for e in penalty], np.float32)[owner]
            with np.errstate(invalid="ignore", over="ignore"):
                flat[idx] = _minus_penalties(flat[idx], counts.astype(np.float32),
                                             presence, frequency)
    if masks is not None:
        for k, words in enumerate(masks):
            if words is not None:
                _row_mask(x[rows[k]], words)
    if banned is not None:
        found = _flat_lists(rows, [None if ids is None else (np.asarray(ids),)
                                   for ids in banned], v, fit)
        if found is not None:
            flat[found[0]] = _NEG_INF
    return logits


def apply_flat_controls_numpy(
    flat: np.ndarray,
    *,
    bias_index: np.ndarray | None = None,
    bias_values: np.ndarray | None = None,
    banned_index: np.ndarray | None = None,
) -> None:
    """The bias and banned-id stages of :func:`apply_row_controls_numpy` given as flat
    indices ``row * V + token`` into ``flat``, a 1-D float32 numpy view of C-contiguous
    logits [B, V] (``logits.detach().numpy().reshape(-1)``; written through, in place):
    ``bias_values`` (float32) added at ``bias_index`` (unique indices), then ``-inf`` at
    ``banned_index`` (duplicates allowed), in the fused op's order and float32
    arithmetic. For rows with neither penalties nor a packed mask it leaves them as
    :func:`.logit_controls.apply_logit_controls` would, bit for bit. Indices are trusted
    (the caller built them inside the storage): a step is four numpy operations, whatever
    the number of rows."""
    if flat.ndim != 1 or flat.dtype != np.float32:
        raise TypeError("the flat path takes a 1-D float32 view of the logits' storage")
    if bias_index is not None and bias_index.size:
        flat[bias_index] = flat[bias_index] + bias_values.astype(np.float32, copy=False)
    if banned_index is not None and banned_index.size:
        flat[banned_index] = _NEG_INF


def _flat_lists(rows: Sequence[int], entries: Sequence[tuple | None], v: int, fit):
    """Per-row entries ``(ids, companion, …)`` (None: none), the k-th for logits row
    ``rows[k]``, as (flat indices into a [B, v] row-major storage, the k each index
    belongs to, the companions concatenated or None), after ``fit`` (ids outside [0, v)
    dropped, or trusted); None when no entry has ids."""
    ks = [k for k, e in enumerate(entries) if e is not None and e[0].size]
    if not ks:
        return None
    owner = np.repeat(np.array(ks, dtype=np.intp), [entries[k][0].size for k in ks])
    ids = np.concatenate([entries[k][0] for k in ks]).astype(np.int64, copy=False)
    other = np.concatenate([entries[k][1] for k in ks]) if len(entries[ks[0]]) > 1 else None
    ids, owner, other = fit(ids, v, owner, other)
    return np.asarray(rows, dtype=np.int64)[owner] * v + ids, owner, other


def _row_controls(row: np.ndarray, fit, bias, penalty, words, banned) -> None:
    """The controls of :func:`apply_row_controls_numpy` on one logits row (a 1-D view),
    in the fused op's order."""
    if bias is not None and bias[0].size:
        ids, vals = fit(bias[0], row.size, bias[1])
        row[ids] = row[ids] + vals.astype(np.float32, copy=False)
    if penalty is not None and penalty[0].size:
        ids, counts = fit(penalty[0], row.size, penalty[1])
        with np.errstate(invalid="ignore", over="ignore"):
            row[ids] = _minus_penalties(row[ids], counts.astype(np.float32),
                                        np.float32(penalty[2]), np.float32(penalty[3]))
    if words is not None:
        _row_mask(row, words)
    if banned is not None and len(banned):
        row[fit(np.asarray(banned), row.size)[0]] = _NEG_INF


def _minus_penalties(y: np.ndarray, cnt: np.ndarray, presence, frequency) -> np.ndarray:
    """``y - frequency * count - presence * (count > 0)`` in float32, in that order (None:
    that penalty is off); presence/frequency per entry or one number."""
    if frequency is not None:
        y = y - frequency * cnt
    if presence is not None:
        y = y - presence * (cnt > 0).astype(np.float32)
    return y


def _in_vocab(ids: np.ndarray, v: int, *others: np.ndarray | None) -> tuple:
    """(ids, *others) without the entries whose id lies outside [0, v) (an array of
    ``others`` has one entry per id; None stays None)."""
    if ids.size and (ids.min() < 0 or ids.max() >= v):
        keep = (ids >= 0) & (ids < v)
        return ids[keep], *(None if o is None else o[keep] for o in others)
    return ids, *others


def _as_is(ids: np.ndarray, v: int, *others: np.ndarray | None) -> tuple:
    return ids, *others


def _row_mask(row: np.ndarray, words: np.ndarray) -> None:
    """-inf at the tokens that packed ``words`` bans in one logits row (a 1-D view); words
    past the row are ignored, missing ones ban nothing."""
    need = (row.size + 31) // 32
    if words.size < need:
        words = np.concatenate([words, np.zeros(need - words.size, dtype=words.dtype)])
    _apply_bitmask(row[None, :], row, words[None, :need], row.size, _ROW0)
