import torch

from greyelephant.kernels import bitmask_words, pack_token_bitmask, unpack_token_bitmask


def test_words():
    assert [bitmask_words(v) for v in (1, 31, 32, 33, 151936)] == [1, 1, 1, 2, 4748]


def test_bit_order_lsb_first():
    banned = torch.zeros(2, 70, dtype=torch.bool)
    banned[0, 0] = banned[0, 33] = banned[1, 31] = banned[1, 69] = True
    w = pack_token_bitmask(banned)
    assert w.dtype == torch.int32 and w.shape == (2, 3)
    assert w[0].tolist() == [1, 2, 0]
    assert w[1].tolist() == [-(2**31), 0, 1 << 5]  # bit 31 is the sign bit


def test_roundtrip_random():
    g = torch.Generator().manual_seed(1)
    for v in (1, 32, 100, 1000):
        banned = torch.rand(3, v, generator=g) < 0.3
        assert torch.equal(unpack_token_bitmask(pack_token_bitmask(banned), v), banned)


def test_unpack_ignores_tail_bits():
    words = torch.full((1, 2), -1, dtype=torch.int32)
    assert unpack_token_bitmask(words, 40).shape == (1, 40)
    assert bool(unpack_token_bitmask(words, 40).all())
