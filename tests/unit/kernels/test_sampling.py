"""Sampler: Triton kernel (interpreter) and CPU torch path vs the float64 reference."""

import pytest
import torch
import triton
import triton.language as tl

from greyelephant.kernels import sample_from_logits
from greyelephant.kernels.rng import gumbel_noise, hash32, row_keys
from greyelephant.kernels.sampling import normalize_args, row_params
from greyelephant.kernels.sampling_ref import sample_reference, sampling_probs_reference
from greyelephant.kernels.sampling_torch import sample_torch
from greyelephant.kernels.sampling_triton import _gumbel, sample_triton

# the interpreter evaluates both sides of tl.where: 1/0 and inf-inf warnings are expected
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
INF = float("inf")


def run_torch(x, a):
    return sample_torch(x, row_params(a, x.shape[0], x.device))


def run_triton(x, a, **kw):
    return sample_triton(x, a, **kw)


PATHS = {"torch": run_torch, "triton": run_triton}


def rand_params(g, b, v):
    temp = torch.rand(b, generator=g) * 1.2 + 0.3
    temp[0] = 0.0  # greedy
    top_k = torch.randint(-1, v // 3, (b,), generator=g)
    top_p = torch.rand(b, generator=g) * 0.95 + 0.05
    top_p[1] = 1.0
    min_p = torch.rand(b, generator=g) * 0.3
    min_p[2] = 0.0
    return dict(temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p)


def ref_kw(kw):
    return {k: (val.double() if val.is_floating_point() else val) for k, val in kw.items()}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_matches_reference_with_same_noise(path, dtype):
    g = torch.Generator().manual_seed(21)
    b, v = 24, 333
    x = (torch.randn(b, v, generator=g) * 2).to(dtype)
    kw = rand_params(g, b, v)
    rows = normalize_args(x, seeds=torch.arange(b) * 1000 + 1, steps=5, **kw)
    out = PATHS[path](x, rows)
    p = row_params(rows, b, x.device)
    noise = gumbel_noise(p.key_a, p.key_b, v).double()
    ref = sample_reference(x.double(), noise, **ref_kw(kw))
    assert out.dtype == torch.int64
    assert torch.equal(out, ref)


def test_triton_equals_torch_path():
    g = torch.Generator().manual_seed(4)
    b, v = 32, 1100  # several blocks per row with block=256
    x = torch.randn(b, v, generator=g) * 3
    kw = rand_params(g, b, v)
    rows = normalize_args(x, seeds=torch.randint(0, 2**40, (b,), generator=g), **kw)
    assert torch.equal(run_triton(x, rows, block=256), run_torch(x, rows))


def test_noise_bits_triton_equal_torch():
    @triton.jit
    def noise_kernel(out_ptr, ka_ptr, kb_ptr, V, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        ka = tl.load(ka_ptr + row).to(tl.uint32, bitcast=True)
        kb = tl.load(kb_ptr + row).to(tl.uint32, bitcast=True)
        tl.store(out_ptr + row * V + offs, _gumbel(offs, ka, kb), mask=offs < V)

    ka, kb = row_keys(torch.tensor([0, 1, -5, 2**62]), torch.tensor([0, 3, 3, 9]))
    out = torch.empty(4, 200)
    noise_kernel[(4,)](out, ka, kb, 200, BLOCK=256)
    torch.testing.assert_close(out, gumbel_noise(ka, kb, 200), rtol=1e-6, atol=1e-6)


def test_hash_matches_exact_uint32_arithmetic():
    x = torch.randint(-(2**31), 2**31, (4096,), dtype=torch.int64)
    y = x & 0xFFFFFFFF
    y = y ^ (y >> 16)
    y = (y * 0x7FEB352D) & 0xFFFFFFFF
    y = y ^ (y >> 15)
    y = (y * 0x846CA68B) & 0xFFFFFFFF
    y = y ^ (y >> 16)
    assert torch.equal(hash32(x.to(torch.int32)).long() & 0xFFFFFFFF, y)


def chi_square(counts, probs, n):
    keep = probs > 0
    assert counts[~keep].sum() == 0, "sampled a token with zero reference probability"
    expected = probs[keep] * n
    return (((counts[keep] - expected) ** 2) / expected).sum().item(), int(keep.sum()) - 1


@pytest.mark.parametrize(
    "params",
    [
        dict(temperature=0.8),
        dict(temperature=1.3, top_p=0.7),
        dict(temperature=1.0, top_k=6, top_p=0.9),
        dict(temperature=0.7, min_p=0.05, top_p=0.95),
    ],
    ids=["temp", "top_p", "top_k_top_p", "min_p_top_p"],
)
def test_distribution_matches_reference_torch_path(params):
    # many draws of one row with different seeds: chi-square and total variation
    g = torch.Generator().manual_seed(123)
    v, n = 24, 40000
    row = torch.randn(1, v, generator=g) * 1.5
    x = row.expand(n, v).contiguous()
    rows = normalize_args(x, seeds=torch.arange(n), **params)
    counts = torch.bincount(run_torch(x, rows), minlength=v).double()
    ref_params = {k: torch.tensor([float(val)], dtype=torch.float64) if k != "top_k"
                  else torch.tensor([val]) for k, val in params.items()}
    probs = sampling_probs_reference(row.double(), **ref_params)[0]
    stat, dof = chi_square(counts, probs, n)
    assert stat < dof + 6 * (2 * dof) ** 0.5 + 10, (stat, dof)  # far tail of chi2(dof)
    assert 0.5 * (counts / n - probs).abs().sum().item() < 0.02


def test_distribution_triton_small():
    # the interpreter is slow: a small draw, coarse check (exactness is tested above)
    g = torch.Generator().manual_seed(5)
    v, n = 6, 100
    row = torch.randn(1, v, generator=g)
    x = row.expand(n, v).contiguous()
    rows = normalize_args(x, seeds=torch.arange(n) + 77, temperature=1.0, top_p=0.8)
    counts = torch.bincount(run_triton(x, rows), minlength=v).double()
    probs = sampling_probs_reference(row.double(), temperature=torch.ones(1, dtype=torch.float64),
                                     top_p=torch.full((1,), 0.8, dtype=torch.float64))[0]
    stat, dof = chi_square(counts, probs, n)
    assert stat < dof + 6 * (2 * max(dof, 1)) ** 0.5 + 10, (stat, dof)


@pytest.mark.parametrize("path", list(PATHS))
def test_determinism_and_steps(path):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(16, 200, generator=g)
    a = PATHS[path](x, normalize_args(x, seeds=42, steps=0, temperature=1.0))
    b = PATHS[path](x, normalize_args(x, seeds=42, steps=0, temperature=1.0))
    c = PATHS[path](x, normalize_args(x, seeds=42, steps=1, temperature=1.0))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("path", list(PATHS))
def test_invalid_rows_greedy_and_degenerate_filters(path):
    x = torch.randn(7, 50, generator=torch.Generator().manual_seed(2))
    x[0, 3] = float("nan")
    x[1] = -INF
    x[2, 9] = INF
    x[3] = -INF
    x[3, 17] = 0.5  # only one finite token
    am = x.argmax(1)
    temp = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0])  # row 4 greedy
    top_k = torch.tensor([0, 0, 0, 0, 0, 1, 0])  # row 5: top-1
    top_p = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1e-6])  # row 6: tiny nucleus
    rows = normalize_args(x, seeds=torch.arange(7), temperature=temp, top_k=top_k, top_p=top_p)
    out = PATHS[path](x, rows).tolist()
    assert out[:4] == [-1, -1, -1, 17]
    assert out[4:] == am[4:].tolist()


@pytest.mark.parametrize("path", list(PATHS))
def test_min_p_one_keeps_only_max(path):
    x = torch.randn(5, 80, generator=torch.Generator().manual_seed(6))
    rows = normalize_args(x, seeds=torch.arange(5), temperature=1.5, min_p=1.0)
    assert torch.equal(PATHS[path](x, rows), x.argmax(1))


def test_dispatcher_cpu_and_scaled_logits():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(6, 120, generator=g)
    t = torch.tensor([0.5, 0.0, 1.0, 2.0, 0.7, 1.3])
    a = sample_from_logits(x, temperature=t, top_p=0.9, seeds=torch.arange(6), steps=3)
    scaled = x / torch.where(t < 1e-5, torch.ones_like(t), t).view(-1, 1)
    b = sample_from_logits(scaled, temperature=t, top_p=0.9, seeds=torch.arange(6), steps=3,
                           logits_scaled=True)
    assert a.shape == (6,) and a.dtype == torch.int64
    assert torch.equal(a, b)
    assert a[1].item() == x[1].argmax().item()
    gen = torch.Generator().manual_seed(0)
    c = sample_from_logits(x, temperature=1.0, generator=gen)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(c, sample_from_logits(x, temperature=1.0, generator=gen))
