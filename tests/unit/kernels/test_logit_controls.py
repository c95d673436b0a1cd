"""Fused logit controls: Triton kernel (interpreter), the CPU torch path and the CPU numpy
path (float32) vs the float64 reference; the numpy path bit for bit against torch."""

import itertools
import math
import zlib

import pytest
import torch

from greyelephant.kernels import apply_logit_controls, pack_token_bitmask
from greyelephant.kernels import unpack_token_bitmask as unpack_banned
from greyelephant.kernels.logit_controls_numpy import apply_logit_controls_numpy
from greyelephant.kernels.logit_controls_ref import logit_controls_reference
from greyelephant.kernels.logit_controls_torch import apply_logit_controls_torch
from greyelephant.kernels.logit_controls_triton import apply_logit_controls_triton

# the interpreter evaluates both sides of tl.where: 1/0 and inf-inf warnings are expected
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
INF = float("inf")
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# One rounding per stage in the logits dtype (bias, penalty, dense); the interpreter's
# float->bf16 cast truncates instead of rounding, so allow a few ulps.
RTOL = {torch.float32: 1e-6, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}


def triton_small_blocks(x, **kw):
    return apply_logit_controls_triton(x, block=256, num_warps=4, **kw)


def triton_split(x, **kw):
    return apply_logit_controls_triton(x, mode="split", block=512, **kw)


IMPLS = {
    "torch": apply_logit_controls_torch,
    "numpy": apply_logit_controls_numpy,
    "triton": apply_logit_controls_triton,
    "triton_block256": triton_small_blocks,
    "triton_split": triton_split,
}
# (implementation, dtype) pairs: the numpy path takes float32 logits only
IMPL_DTYPES = [pytest.param(impl, dtype, id=f"{impl}-{dtype}") for impl in IMPLS
               for dtype in DTYPES if impl != "numpy" or dtype == torch.float32]
# every launch form: (mode, hoist, block); hoist=False is the staged sparse code
VARIANTS = [("fused", True, 256), ("fused", False, 256), ("split", True, 512),
            ("split", False, 512), ("fused", True, 1024)]


def rand_csr(g, b, v, max_len):
    lens = torch.randint(0, max_len + 1, (b,), generator=g)
    ids = [torch.randperm(v, generator=g)[: int(n)] for n in lens]
    indptr = torch.zeros(b + 1, dtype=torch.int32)
    indptr[1:] = lens.cumsum(0)
    return indptr, torch.cat(ids).to(torch.int32)


def rand_inputs(g, b, v, stages=("bias", "mask", "pen", "temp")):
    kw = {}
    if "bias" in stages:
        kw["bias_indptr"], kw["bias_token_ids"] = rand_csr(g, b, v, 12)
        kw["bias_values"] = torch.randn(kw["bias_token_ids"].numel(), generator=g) * 4
    if "mask" in stages:
        kw["banned_bitmask"] = pack_token_bitmask(torch.rand(b, v, generator=g) < 0.2)
    if "pen" in stages:
        kw["penalty_indptr"], ids = rand_csr(g, b, v, 40)
        n = ids.numel()
        counts = torch.randint(0, 4, (n,), generator=g, dtype=torch.int32)
        prompt = torch.rand(n, generator=g) < 0.5
        kw.update(
            penalty_token_ids=ids,
            penalty_output_counts=counts,
            penalty_in_prompt=prompt,
            repetition_penalty=torch.rand(b, generator=g) + 0.5,
            presence_penalty=torch.rand(b, generator=g) * 2 - 1,
            frequency_penalty=torch.rand(b, generator=g) * 2 - 1,
        )
    if "temp" in stages:
        t = torch.rand(b, generator=g) * 1.5 + 0.1
        t[0] = 0.0  # greedy row: unscaled
        kw["temperature"] = t
    return kw


def check_close(out, ref, dtype, x_in=None):
    """Errors are relative to the magnitudes of the intermediates (input + ~8 for the
    biases and penalties used here): a stage can cancel a large value to near zero."""
    out = out.double()
    assert torch.equal(torch.isnan(out), torch.isnan(ref)), "NaN positions differ"
    inf = torch.isinf(ref)
    assert torch.equal(torch.isinf(out), inf), "inf positions differ"
    assert torch.equal(out[inf], ref[inf]), "inf signs differ"
    fin = torch.isfinite(ref)
    err = (out[fin] - ref[fin]).abs()
    scale = ref[fin].abs() + 8.0
    if x_in is not None:
        scale = scale + x_in.double()[fin].abs().nan_to_num(posinf=0.0, neginf=0.0)
    tol = RTOL[dtype] * scale
    assert bool((err <= tol).all()), f"max err {err.max().item()}"


def run_case(impl, dtype, x, kw):
    x = x.to(dtype)
    ref = logit_controls_reference(x.double(), **kw)
    y = x.clone()
    out = IMPLS[impl](y, **kw)
    assert out is y
    check_close(y, ref, dtype, x)


@pytest.mark.parametrize("impl,dtype", IMPL_DTYPES)
@pytest.mark.parametrize("shape", [(1, 77), (3, 1000), (4, 2051)])
def test_all_stages_random(impl, dtype, shape):
    g = torch.Generator().manual_seed(zlib.crc32(repr((impl, dtype, shape)).encode()))
    b, v = shape
    x = torch.randn(b, v, generator=g) * 5
    run_case(impl, dtype, x, rand_inputs(g, b, v))


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize(
    "stages", [("bias",), ("mask",), ("pen",), ("temp",), ("bias", "pen"), ("mask", "temp")]
)
def test_single_stages(impl, stages):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 600, generator=g) * 3
    run_case(impl, torch.float32, x, rand_inputs(g, 3, 600, stages))


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("which", ["repetition", "presence", "frequency"])
def test_each_penalty_alone(impl, which):
    g = torch.Generator().manual_seed(11)
    kw = rand_inputs(g, 2, 300, ("pen",))
    for other in ("repetition", "presence", "frequency"):
        if other != which:
            kw.pop(f"{other}_penalty")
    run_case(impl, torch.float32, torch.randn(2, 300, generator=g), kw)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_penalty_semantics_by_hand(impl):
    # row 0: token 1 in prompt only, token 2 output x3, token 3 both; rep 2, pres 0.5, freq 0.25
    x = torch.tensor([[1.0, 4.0, -4.0, 2.0, 8.0]])
    kw = dict(
        penalty_indptr=torch.tensor([0, 3], dtype=torch.int32),
        penalty_token_ids=torch.tensor([1, 2, 3], dtype=torch.int32),
        penalty_output_counts=torch.tensor([0, 3, 1], dtype=torch.int32),
        penalty_in_prompt=torch.tensor([True, False, True]),
        repetition_penalty=torch.tensor([2.0]),
        presence_penalty=torch.tensor([0.5]),
        frequency_penalty=torch.tensor([0.25]),
    )
    IMPLS[impl](x, **kw)
    assert x.tolist() == [[1.0, 2.0, -8.0 - 0.75 - 0.5, 1.0 - 0.25 - 0.5, 8.0]]


@pytest.mark.parametrize("impl,dtype", IMPL_DTYPES)
def test_edge_values_and_nan_policy(impl, dtype):
    big = torch.finfo(dtype).max / 4
    x = torch.tensor(
        [[-INF, INF, big, -big, 0.0, float("nan"), float("nan"), 1.0, -1.0, 3.0] * 7],
    )
    b, v = x.shape
    banned = torch.zeros(b, v, dtype=torch.bool)
    banned[0, 6] = True  # a banned NaN becomes -inf; an unbanned NaN stays NaN
    banned[0, 40:] = True
    kw = dict(
        bias_indptr=torch.tensor([0, 3], dtype=torch.int32),
        bias_token_ids=torch.tensor([0, 2, 8], dtype=torch.int32),
        bias_values=torch.tensor([5.0, 1.0, 2.0]),
        banned_bitmask=pack_token_bitmask(banned),
        penalty_indptr=torch.tensor([0, 4], dtype=torch.int32),
        penalty_token_ids=torch.tensor([1, 3, 5, 9], dtype=torch.int32),
        penalty_output_counts=torch.tensor([1, 2, 1, 0], dtype=torch.int32),
        penalty_in_prompt=torch.tensor([False, False, False, True]),
        repetition_penalty=torch.tensor([1.5]),
        frequency_penalty=torch.tensor([0.5]),
        temperature=torch.tensor([0.5]),
    )
    y = x.to(dtype)
    ref = logit_controls_reference(y.double(), **kw)
    y0 = y.clone()
    IMPLS[impl](y, **kw)
    check_close(y, ref, dtype, y0)
    assert math.isnan(y[0, 5].item()) and y[0, 6].item() == -INF
    assert bool((y[0, 40:] == -INF).all())


@pytest.mark.parametrize("impl", list(IMPLS))
def test_fully_masked_rows_empty_lists_greedy_rows(impl):
    g = torch.Generator().manual_seed(3)
    b, v = 4, 1030
    x = torch.randn(b, v, generator=g)
    banned = torch.zeros(b, v, dtype=torch.bool)
    banned[1] = True
    kw = dict(
        bias_indptr=torch.zeros(b + 1, dtype=torch.int32),
        bias_token_ids=torch.zeros(0, dtype=torch.int32),
        bias_values=torch.zeros(0),
        banned_bitmask=pack_token_bitmask(banned),
        penalty_indptr=torch.zeros(b + 1, dtype=torch.int32),
        penalty_token_ids=torch.zeros(0, dtype=torch.int32),
        penalty_output_counts=torch.zeros(0, dtype=torch.int32),
        repetition_penalty=torch.full((b,), 1.3),
        temperature=torch.tensor([0.0, 0.5, 1e-6, 2.0]),
    )
    y = x.clone()
    IMPLS[impl](y, **kw)
    assert bool((y[1] == -INF).all())
    assert torch.equal(y[0], x[0]) and torch.equal(y[2], x[2])  # greedy rows unscaled
    torch.testing.assert_close(y[3], x[3] / 2.0)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_strided_rows_and_out_of_range_ids(impl):
    g = torch.Generator().manual_seed(5)
    base = torch.randn(3, 700, generator=g)
    x = base[:, 50:650]  # row stride 700, V = 600
    kw = rand_inputs(g, 3, 600, ("bias", "pen", "temp"))
    kw["bias_token_ids"] = kw["bias_token_ids"].clone()
    kw["bias_token_ids"][0] = 600 + 5  # out of range: ignored
    ref = logit_controls_reference(x.double(), **kw)
    before = base.clone()
    IMPLS[impl](x, **kw)
    check_close(x, ref, torch.float32, before[:, 50:650])
    assert torch.equal(base[:, :50], before[:, :50]) and torch.equal(base[:, 650:], before[:, 650:])


def test_dispatcher_cpu_scalars_and_noop():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 100, generator=g)
    kw = rand_inputs(g, 2, 100, ("pen",))
    ref = logit_controls_reference(
        x.double(), **{**kw, "repetition_penalty": torch.full((2,), 1.2),
                       "presence_penalty": torch.full((2,), 0.3),
                       "frequency_penalty": None, "temperature": torch.full((2,), 0.8)})
    kw.update(repetition_penalty=1.2, presence_penalty=0.3, frequency_penalty=None,
              temperature=0.8)
    y = x.clone()
    assert apply_logit_controls(y, **kw) is y
    check_close(y, ref, torch.float32, x)
    z = x.clone()
    assert apply_logit_controls(z) is z and torch.equal(z, x)


def test_dispatcher_validation():
    x = torch.randn(2, 64)
    with pytest.raises(ValueError):
        apply_logit_controls(x, banned_bitmask=torch.zeros(2, 1, dtype=torch.int32))
    with pytest.raises(ValueError):
        apply_logit_controls(x, temperature=torch.ones(3))
    with pytest.raises(TypeError):
        apply_logit_controls(x.long())


def overlapping_lists(g, b, v, n_bias, n_pen, n_both):
    """Bias and penalty lists sharing n_both tokens per row (unique within each list)."""
    kw = rand_inputs(g, b, v)
    b_ids, p_ids = [], []
    for _ in range(b):
        perm = torch.randperm(v, generator=g)
        both = perm[:n_both]
        b_ids.append(torch.cat([both, perm[n_both:n_bias]])[torch.randperm(n_bias, generator=g)])
        p_ids.append(torch.cat([both, perm[n_bias:n_bias + n_pen - n_both]])[
            torch.randperm(n_pen, generator=g)])
    kw["bias_indptr"] = torch.arange(0, (b + 1) * n_bias, n_bias, dtype=torch.int32)
    kw["bias_token_ids"] = torch.cat(b_ids).to(torch.int32)
    kw["bias_values"] = torch.randn(b * n_bias, generator=g) * 4
    n = b * n_pen
    kw.update(
        penalty_indptr=torch.arange(0, (b + 1) * n_pen, n_pen, dtype=torch.int32),
        penalty_token_ids=torch.cat(p_ids).to(torch.int32),
        penalty_output_counts=torch.randint(0, 4, (n,), generator=g, dtype=torch.int32),
        penalty_in_prompt=torch.rand(n, generator=g) < 0.5,
    )
    return kw


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lists", [(40, 300, 25), (600, 700, 300)], ids=["short", "long"])
def test_variants_agree_bitwise_with_shared_tokens(dtype, lists):
    """Tokens in both lists get bias, then penalties (on the biased value). Every launch
    form (fused / split, hoisted or staged sparse code) does the same IEEE
    operations: bitwise-equal outputs. "long" lists exceed one chunk (512 entries): the
    chunk loops."""
    g = torch.Generator().manual_seed(zlib.crc32(repr((dtype, lists)).encode()))
    b, v = 3, 2000 + 3
    kw = overlapping_lists(g, b, v, *lists)
    x = (torch.randn(b, v, generator=g) * 5).to(dtype)
    ref = logit_controls_reference(x.double(), **kw)
    outs = []
    for mode, hoist, block in VARIANTS:
        y = x.clone()
        apply_logit_controls_triton(y, mode=mode, hoist=hoist, block=block, **kw)
        outs.append(y)
    check_close(outs[0], ref, dtype, x)
    for (mode, hoist, block), y in zip(VARIANTS, outs, strict=True):
        assert torch.equal(y.view(torch.uint8), outs[0].view(torch.uint8)), (mode, hoist, block)
    if dtype == torch.float32:  # the torch path too (the interpreter truncates bf16/fp16)
        cpu = x.clone()
        apply_logit_controls_torch(cpu, **kw)
        assert torch.equal(cpu, outs[0])


def test_auto_mode_picks_split_for_large_batches_and_long_lists():
    from greyelephant.kernels.logit_controls_triton import pick_mode

    assert pick_mode(1, 600) == "fused" and pick_mode(32, 32 * 600) == "fused"
    assert pick_mode(256, 0) == "split" and pick_mode(4, 4 * 4096) == "split"
    # after a wait for the device (host_bound): one launch while the lists are short
    assert pick_mode(256, 256 * 600, host_bound=True) == "fused"
    assert pick_mode(256, 256 * 4096, host_bound=True) == "split"
    assert pick_mode(4, 4 * 600, host_bound=True) == "fused"
    g = torch.Generator().manual_seed(13)
    x = torch.randn(128, 64, generator=g)
    run_case("triton", torch.float32, x, rand_inputs(g, 128, 64))  # auto -> split


def test_host_bound_takes_one_launch_at_large_batches_with_the_same_result(monkeypatch):
    """After the caller's wait for the device, B = 128 with short lists runs the fused
    form (one launch), bit for bit what the split form gives."""
    from greyelephant.kernels import logit_controls_triton as lct

    picked = []
    pick = lct.pick_mode
    monkeypatch.setattr(lct, "pick_mode", lambda *a: picked.append(pick(*a)) or picked[-1])
    g = torch.Generator().manual_seed(17)
    x = torch.randn(128, 64, generator=g)
    kw = rand_inputs(g, 128, 64)
    split, fused = x.clone(), x.clone()
    lct.apply_logit_controls_triton(split, **kw)
    lct.apply_logit_controls_triton(fused, **kw, host_bound=True)
    assert picked == ["split", "fused"]
    assert torch.equal(split, fused)


def test_dispatch_rules_from_run4():
    from greyelephant.kernels.logit_controls_triton import pick_config, pick_hoist

    cpu = torch.device("cpu")  # 4 "SMs" off CUDA: no shrinking for these grids
    assert pick_config(256, 131072, 2, cpu, "split") == (2048, 4)  # 4 KB tiles
    assert pick_config(256, 131072, 4, cpu, "split") == (1024, 4)
    assert pick_config(256, 131072, 2, cpu, "fused") == (4096, 4)  # 8 KB tiles
    assert pick_config(32, 131072, 4, cpu) == (2048, 4)
    assert pick_hoist("split", 2, 256 * 64) and pick_hoist("fused", 4, 1024)
    assert pick_hoist("fused", 2, 384) and pick_hoist("fused", 2, 1216)
    assert not pick_hoist("fused", 2, 32 * 32)  # bf16 B=32 V=131072: staged measured faster


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("banned_per_row", [0, 1, 7, 40])
def test_sparse_mask_path_matches_dense_and_reference(dtype, banned_per_row):
    """Steering masks ban a few tokens per row: the torch and numpy paths expand only non-zero
    words; it must equal the dense unpack and the reference, on strided rows too."""
    from greyelephant.kernels.bitmask import banned_flat_indices
    from greyelephant.kernels.logit_controls_torch import SPARSE_MASK_MAX_WORD_SHARE

    g = torch.Generator().manual_seed(banned_per_row)
    b, v = 5, 20011
    banned = torch.zeros(b, v, dtype=torch.bool)
    for r in range(1, b):  # row 0 stays unbanned
        banned[r, torch.randint(0, v, (banned_per_row,), generator=g)] = True
    banned[3, v - 1] = banned_per_row > 0  # a token in the last, partial word
    words = pack_token_bitmask(banned)
    assert int(torch.count_nonzero(words)) <= SPARSE_MASK_MAX_WORD_SHARE * words.numel()
    wide = torch.randn(b, v + 13, generator=g).to(dtype)
    expected = wide[:, :v].float().masked_fill(banned, float("-inf")).to(dtype)
    paths = [apply_logit_controls_torch] + (
        [apply_logit_controls_numpy] if dtype == torch.float32 else [])
    for path in paths:
        logits = wide.clone()[:, :v]  # strided rows
        path(logits, banned_bitmask=words)
        assert torch.equal(logits, expected), path.__name__
    idx = banned_flat_indices(words, v, v)
    assert sorted(idx.tolist()) == sorted(torch.nonzero(banned.flatten()).flatten().tolist())


@pytest.mark.parametrize("dense_rows", [(1,), (0, 3), (0, 1, 2, 3)])
def test_mask_rows_mixing_dense_and_sparse_masks(dense_rows):
    """A mask that bans most of the vocabulary (every token starting a new word) next to
    rows banning a few tokens: the dense rows are unpacked on their own, the rest
    expanded sparsely; the result equals the reference, on strided rows too."""
    g = torch.Generator().manual_seed(len(dense_rows))
    b, v = 4, 20011
    banned = torch.zeros(b, v, dtype=torch.bool)
    for r in range(b):
        if r in dense_rows:
            banned[r] = torch.rand(v, generator=g) < 0.5
        else:
            banned[r, torch.randint(0, v, (9,), generator=g)] = True
    words = pack_token_bitmask(banned)
    wide = torch.randn(b, v + 7, generator=g)
    expected = wide[:, :v].masked_fill(banned, float("-inf"))
    for path in (apply_logit_controls_torch, apply_logit_controls_numpy):
        logits = wide.clone()[:, :v]
        path(logits, banned_bitmask=words)
        assert torch.equal(logits, expected), path.__name__


@pytest.mark.parametrize("seed", range(6))
def test_numpy_path_equals_torch_path_bit_for_bit(seed):
    """The CPU's float32 path (numpy) and the torch path give identical logits: every
    stage, masks mixing dense and sparse rows, strided rows, NaN and inf inputs."""
    g = torch.Generator().manual_seed(100 + seed)
    b, v = 6, 4099
    kw = rand_inputs(g, b, v)
    banned = torch.rand(b, v, generator=g) < 0.002  # sparse rows
    banned[seed % b] = torch.rand(v, generator=g) < 0.5  # one dense row
    kw["banned_bitmask"] = pack_token_bitmask(banned)
    wide = torch.randn(b, v + 9, generator=g) * 4
    wide[0, :40:3] = float("nan")
    wide[1, 5:30:4] = INF
    x_torch, x_numpy = wide.clone()[:, 3:v + 3], wide.clone()[:, 3:v + 3]
    apply_logit_controls_torch(x_torch, **kw)
    apply_logit_controls_numpy(x_numpy, **kw)
    assert torch.equal(torch.isnan(x_torch), torch.isnan(x_numpy))
    fin = ~torch.isnan(x_torch)
    assert torch.equal(x_torch[fin], x_numpy[fin])


def test_dispatcher_takes_the_numpy_path_for_cpu_float32_only(monkeypatch):
    from greyelephant.kernels import logit_controls_numpy

    calls = []
    real = logit_controls_numpy.apply_logit_controls_numpy
    monkeypatch.setattr(logit_controls_numpy, "apply_logit_controls_numpy",
                        lambda x, **kw: calls.append(x.dtype) or real(x, **kw))
    for dtype in DTYPES:
        apply_logit_controls(torch.zeros(2, 40, dtype=dtype), temperature=0.5)
    assert calls == [torch.float32]
    with pytest.raises(TypeError):
        real(torch.zeros(2, 40, dtype=torch.bfloat16), temperature=0.5)


@pytest.mark.parametrize("path", ["torch", "numpy", "dispatcher", "dispatcher-bf16"])
def test_banned_token_lists_equal_the_same_bans_as_a_bitmask(path):
    """A CSR list of banned tokens (with a bitmask, bias, penalties and temperature around
    it) bans exactly like the same tokens in the bitmask: -inf, NaN included; ids out of
    range are ignored, a token listed twice or also in the bitmask is simply banned."""
    g = torch.Generator().manual_seed(21)
    b, v = 4, 2053
    dtype = torch.bfloat16 if path.endswith("bf16") else torch.float32
    kw = rand_inputs(g, b, v)
    lists = [[5, 5, 2052, v + 3, -1], [], [0, 1, 2, 3, 4, 1000], [77]]
    listed = torch.zeros(b, v, dtype=torch.bool)
    for r, ids in enumerate(lists):
        listed[r, [t for t in ids if 0 <= t < v]] = True
    listed_kw = {"banned_indptr": torch.tensor([0, *itertools.accumulate(map(len, lists))],
                                               dtype=torch.int32),
                 "banned_token_ids": torch.tensor(sum(lists, []), dtype=torch.int32)}
    x = (torch.randn(b, v, generator=g) * 4)
    x[2, :8] = float("nan")
    x = x.to(dtype)
    as_bitmask = dict(kw, banned_bitmask=pack_token_bitmask(
        unpack_banned(kw["banned_bitmask"], v) | listed))
    fn = {"torch": apply_logit_controls_torch, "numpy": apply_logit_controls_numpy,
          "dispatcher": apply_logit_controls, "dispatcher-bf16": apply_logit_controls}[path]
    y, expected = x.clone(), x.clone()
    fn(y, **kw, **listed_kw)
    fn(expected, **as_bitmask)
    assert torch.equal(torch.isnan(y), torch.isnan(expected))
    fin = ~torch.isnan(y)
    assert torch.equal(y[fin], expected[fin])
    assert bool((y[listed] == -INF).all())
    ref = logit_controls_reference(x.double(), **kw, **listed_kw)
    check_close(y, ref, dtype, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mask_table_rows_equal_the_same_masks_as_a_bitmask(dtype):
    """Masks given as table slots (slot 0: no mask) ban exactly what the same masks as a
    bitmask ban, with bias, penalties and temperature around them: the numpy path reads
    the table in place (CPU float32), the others gather it; dense and sparse masks,
    strided rows, NaN inputs. A slot outside the table is an error."""
    g = torch.Generator().manual_seed(33)
    b, v = 5, 3001
    table_bool = torch.zeros(4, v, dtype=torch.bool)
    table_bool[1] = torch.rand(v, generator=g) < 0.5  # dense
    table_bool[2, [0, 31, 32, 2999, 3000]] = True  # sparse, the last partial word
    table_bool[3, torch.randint(0, v, (40,), generator=g)] = True
    table = pack_token_bitmask(table_bool)
    rows = torch.tensor([0, 2, 1, 3, 2], dtype=torch.int32)
    kw = rand_inputs(g, b, v, stages=("bias", "pen", "temp"))
    wide = torch.randn(b, v + 5, generator=g) * 4
    wide[1, :6] = float("nan")
    wide = wide.to(dtype)
    y, expected = wide.clone()[:, 2:v + 2], wide.clone()[:, 2:v + 2]
    apply_logit_controls(y, mask_table=table, mask_rows=rows, **kw)
    apply_logit_controls(expected, banned_bitmask=table[rows.long()], **kw)
    assert torch.equal(torch.isnan(y), torch.isnan(expected))
    assert torch.equal(y[~torch.isnan(y)], expected[~torch.isnan(expected)])
    assert bool(torch.isneginf(y[2]).sum() >= table_bool[1].sum())
    for bad in (-1, 4):
        with pytest.raises((IndexError, RuntimeError)):
            apply_logit_controls(wide.clone()[:, :v], mask_table=table,
                                 mask_rows=torch.tensor([0, bad, 0, 0, 0], dtype=torch.int32))


@pytest.mark.parametrize("mode", ["fused", "split"])
def test_triton_reads_the_mask_table_in_place(mode):
    """The kernels read table row ``mask_rows[j]`` for row j (no gathered bitmask): the
    same result as the gathered masks, with bias, penalties and temperature; a slot
    outside the table bans its whole row (fail closed, on the device no error can be
    raised without a synchronisation)."""
    g = torch.Generator().manual_seed(44)
    b, v = 6, 1500
    table = pack_token_bitmask(torch.rand(5, v, generator=g) < 0.3)
    table[0] = 0
    rows = torch.tensor([0, 3, 1, 4, 2, 3], dtype=torch.int32)
    kw = rand_inputs(g, b, v, stages=("bias", "pen", "temp"))
    x = torch.randn(b, v, generator=g) * 4
    y, expected = x.clone(), x.clone()
    apply_logit_controls_triton(y, banned_bitmask=table, mask_rows=rows, mode=mode,
                                block=512, **kw)
    apply_logit_controls_triton(expected, banned_bitmask=table[rows.long()], mode=mode,
                                block=512, **kw)
    assert torch.equal(y, expected)
    bad = torch.tensor([0, 5, 1, -1, 2, 3], dtype=torch.int32)
    z = x.clone()
    apply_logit_controls_triton(z, banned_bitmask=table, mask_rows=bad, mode=mode, block=512)
    assert bool(torch.isneginf(z[1]).all()) and bool(torch.isneginf(z[3]).all())
    assert torch.equal(z[0], x[0])


def _some_rows_case(seed, dtype):
    g = torch.Generator().manual_seed(seed)
    b, v, k = 7, 1100, 4
    table = pack_token_bitmask(torch.rand(4, v, generator=g) < 0.3)
    table[0] = 0
    kw = rand_inputs(g, k, v, stages=("bias", "pen", "temp"))
    kw.update(mask_table=table, mask_rows=torch.tensor([2, 0, 3, 1], dtype=torch.int32))
    x = (torch.randn(b, v, generator=g) * 4).to(dtype)
    return x, torch.tensor([5, 0, 3, 6], dtype=torch.int32), kw


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", ["dispatcher", "triton_fused", "triton_split"])
def test_logit_rows_control_only_the_listed_rows(path, dtype, monkeypatch):
    """``logit_rows``: controls row j applies to logits row ``logit_rows[j]``, exactly as
    the controls applied to those rows gathered; the other rows are untouched. The
    dispatcher on the CPU gathers and scatters (numpy for float32, torch otherwise); the
    Triton kernels (interpreter) index the rows in place, through the dispatcher too."""
    x, rows, kw = _some_rows_case(55, dtype)
    sub = x.index_select(0, rows.long())
    apply_logit_controls(sub, **kw)
    y = x.clone()
    if path == "dispatcher":
        apply_logit_controls(y, logit_rows=rows, **kw)
    else:
        from greyelephant.kernels import logit_controls

        monkeypatch.setattr(logit_controls, "_use_triton", lambda t: True)
        mode = path.split("_")[1]
        monkeypatch.setattr("greyelephant.kernels.logit_controls_triton.pick_mode",
                            lambda b, nnz, host_bound=False: mode)
        apply_logit_controls(y, logit_rows=rows, **kw)
    expected = x.clone()
    expected[rows.long()] = sub
    if path == "dispatcher":
        assert torch.equal(y, expected)
    else:  # the interpreter's bf16 rounding differs from torch's: compare within tolerance
        check_close(y, expected.double(), dtype, x)
    others = [i for i in range(x.shape[0]) if i not in rows.tolist()]
    assert torch.equal(y[others], x[others])


def test_logit_rows_checked_on_the_cpu():
    x, rows, kw = _some_rows_case(56, torch.float32)
    with pytest.raises(IndexError):
        apply_logit_controls(x.clone(), logit_rows=torch.tensor([5, 0, 3, 7]), **kw)
    with pytest.raises(ValueError, match="distinct"):
        apply_logit_controls(x.clone(), logit_rows=torch.tensor([5, 0, 5, 6]), **kw)
    with pytest.raises(TypeError):
        apply_logit_controls(x.clone(), logit_rows=torch.tensor([5.0, 0, 3, 6]), **kw)
    with pytest.raises(ValueError):  # per-row arguments have one entry per listed row
        apply_logit_controls(x.clone(), logit_rows=torch.tensor([5, 0, 3]), **kw)


def test_logit_rows_with_banned_lists_on_the_triton_path(monkeypatch):
    """On the Triton path, ban lists are applied after the kernel on the listed rows only."""
    from greyelephant.kernels import logit_controls

    x, rows, kw = _some_rows_case(57, torch.float32)
    kw["banned_indptr"] = torch.tensor([0, 2, 2, 3, 5], dtype=torch.int32)
    kw["banned_token_ids"] = torch.tensor([7, 1099, 0, 3, 3], dtype=torch.int32)
    sub = x.index_select(0, rows.long())
    apply_logit_controls(sub, **kw)
    expected = x.clone()
    expected[rows.long()] = sub
    monkeypatch.setattr(logit_controls, "_use_triton", lambda t: True)
    y = x.clone()
    apply_logit_controls(y, logit_rows=rows, **kw)
    check_close(y, expected.double(), torch.float32, x)
    assert bool(torch.isneginf(y[5, [7, 1099]]).all()) and bool(torch.isneginf(y[6, 3]))
