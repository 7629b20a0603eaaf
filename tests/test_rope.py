"""Axial 3D RoPE: golden tables, a plain per-pair reference, norms, relative-offset invariance, fraction."""

from __future__ import annotations

import math

import pytest
import torch

from ctvlp.models.rope import Rope3d, apply_rope, grid_positions, rope_angles, rope_split


def reference_rope(x: torch.Tensor, positions: torch.Tensor, split, base: float) -> torch.Tensor:
    """Plain loops: in axis a's block, rotate the pair (2k, 2k+1) by p_a * base^(-2k / d_a)."""
    out = x.clone().double()
    for n, pos in enumerate(positions.tolist()):
        start = 0
        for axis, d in enumerate(split):
            for k in range(d // 2):
                theta = pos[axis] * base ** (-2 * k / d)
                i, j = start + 2 * k, start + 2 * k + 1
                a, b = x[..., n, i].double(), x[..., n, j].double()
                out[..., n, i] = a * math.cos(theta) - b * math.sin(theta)
                out[..., n, j] = a * math.sin(theta) + b * math.cos(theta)
            start += d
    return out


def scores(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, head_dim: int, **kw) -> torch.Tensor:
    cos, sin = rope_angles(positions, head_dim, **kw)
    return apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)  # (B, H, N, N)


def test_split_rule():
    assert rope_split(66) == (22, 22, 22)  # SigVLP's small/base/large heads
    assert rope_split(72, 2 / 3) == (16, 16, 16)  # head_dim 72 at 2/3 (Primus-M rotates all 72: 24 + 24 + 24)
    assert rope_split(64) == (20, 22, 22)
    assert rope_split(16) == (4, 6, 6)
    for head_dim in range(6, 200):
        for fraction in (1.0, 2 / 3, 0.5):
            if int(fraction * head_dim) < 6:
                continue
            split = rope_split(head_dim, fraction)
            assert all(d > 0 and d % 2 == 0 for d in split) and max(split) - min(split) <= 2
            assert sum(split) <= fraction * head_dim + 1e-9
    with pytest.raises(ValueError):
        rope_split(4)
    with pytest.raises(ValueError):
        rope_split(64, 0.0)
    with pytest.raises(ValueError):
        rope_split(64, 1.5)


def test_golden_tables():
    """head_dim 12, base 10 -> blocks 4 + 4 + 4, frequencies (1, 10^-0.5); token at (z, y, x) = (2, 1, 3)."""
    cos, sin = rope_angles(torch.tensor([[2, 1, 3]]), 12, base=10.0)
    f = 10 ** -0.5
    angles = [2, 2, 2 * f, 2 * f, 1, 1, f, f, 3, 3, 3 * f, 3 * f]
    assert cos.shape == sin.shape == (1, 12)
    torch.testing.assert_close(cos[0], torch.tensor([math.cos(a) for a in angles]))
    torch.testing.assert_close(sin[0], torch.tensor([math.sin(a) for a in angles]))
    # the grid form is z-major: token n = (z * gy + y) * gx + x
    cos_grid, _ = rope_angles((3, 2, 4), 12, base=10.0)
    torch.testing.assert_close(cos_grid[(2 * 2 + 1) * 4 + 3], cos[0])


def test_golden_rotation():
    """Pairs are adjacent dims: at (z, y, x) = (1, 0, 0), base 10, head_dim 12, e_0 -> (cos 1, sin 1) on
    dims (0, 1), e_3 -> (-sin f, cos f) on dims (2, 3) with f = 10^-0.5, and y/x dims stay put."""
    x = torch.zeros(1, 1, 1, 12)
    x[..., 0], x[..., 3], x[..., 5] = 1.0, 1.0, 1.0
    out = apply_rope(x, *rope_angles(torch.tensor([[1, 0, 0]]), 12, base=10.0))[0, 0, 0]
    f = 10 ** -0.5
    expected = torch.zeros(12)
    expected[0], expected[1] = math.cos(1.0), math.sin(1.0)
    expected[2], expected[3] = -math.sin(f), math.cos(f)
    expected[5] = 1.0
    torch.testing.assert_close(out, expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("head_dim,fraction,split", [(12, 1.0, None), (16, 1.0, None), (18, 2 / 3, None),
                                                     (64, 1.0, (16, 24, 24))])
def test_matches_plain_reference(head_dim, fraction, split):
    torch.manual_seed(0)
    positions = torch.randint(0, 30, (7, 3))
    x = torch.randn(2, 3, 7, head_dim)
    cos, sin = rope_angles(positions, head_dim, base=1000.0, fraction=fraction, split=split)
    used = split or rope_split(head_dim, fraction)
    expected = reference_rope(x, positions, used, 1000.0).float()
    torch.testing.assert_close(apply_rope(x, cos, sin), expected, atol=1e-5, rtol=1e-5)


def test_preserves_norms():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 60, 66)
    cos, sin = rope_angles((3, 4, 5), 66)
    out = apply_rope(x, cos, sin)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    assert not torch.allclose(out, x)


@pytest.mark.parametrize("shift", [(5, 0, 0), (0, -3, 7), (41, 11, -13)])
def test_scores_depend_only_on_offsets(shift):
    torch.manual_seed(2)
    q, k = torch.randn(1, 2, 24, 66), torch.randn(1, 2, 24, 66)
    positions = grid_positions((2, 3, 4))
    moved = positions + torch.tensor(shift)
    torch.testing.assert_close(scores(q, k, moved, 66), scores(q, k, positions, 66), atol=1e-5, rtol=1e-5)


def test_different_offsets_give_different_scores():
    """q at the origin, k at offset o: the score changes with o along every axis (not trivially constant)."""
    torch.manual_seed(3)
    q, k = torch.randn(1, 1, 1, 66), torch.randn(1, 1, 1, 66)
    values = []
    for offset in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0), (-1, 0, 0), (1, 1, 1)]:
        cq, sq = rope_angles(torch.tensor([[0, 0, 0]]), 66)
        ck, sk = rope_angles(torch.tensor([offset]), 66)
        values.append(float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()))
    gaps = [abs(a - b) for i, a in enumerate(values) for b in values[i + 1:]]
    assert min(gaps) > 1e-3, values


def test_axis_blocks_are_separate():
    """Moving along z rotates only the z block; the y and x blocks stay as they were."""
    x = torch.randn(1, 1, 1, 66)
    base = apply_rope(x, *rope_angles(torch.tensor([[0, 2, 3]]), 66))
    moved = apply_rope(x, *rope_angles(torch.tensor([[9, 2, 3]]), 66))
    torch.testing.assert_close(moved[..., 22:], base[..., 22:])
    assert not torch.allclose(moved[..., :22], base[..., :22])


def test_fraction_leaves_the_rest_unchanged():
    """Primus-M heads: 72 dims, 2/3 rotated -> dims 48..71 pass through bit for bit."""
    torch.manual_seed(4)
    x = torch.randn(2, 3, 40, 72)
    cos, sin = rope_angles((2, 4, 5), 72, fraction=2 / 3)
    assert cos.shape == (40, 48)
    out = apply_rope(x, cos, sin)
    assert torch.equal(out[..., 48:], x[..., 48:])
    assert not torch.allclose(out[..., :48], x[..., :48])


def test_batched_positions_and_dtype():
    """(B, N, 3) positions give per-sample tables; bf16 inputs stay bf16."""
    positions = torch.stack([grid_positions((2, 2, 2)), grid_positions((2, 2, 2)) + 4])  # (2, 8, 3)
    cos, sin = rope_angles(positions, 12)
    x = torch.randn(2, 3, 8, 12)
    out = apply_rope(x, cos, sin)
    torch.testing.assert_close(out[1:], apply_rope(x[1:], *rope_angles(positions[1], 12)))
    assert apply_rope(x.bfloat16(), cos, sin).dtype == torch.bfloat16


def test_bad_inputs():
    with pytest.raises(ValueError, match="split"):
        rope_angles((2, 2, 2), 12, split=(4, 3, 5))
    with pytest.raises(ValueError, match="split"):
        rope_angles((2, 2, 2), 12, split=(8, 4, 4))
    with pytest.raises(ValueError, match="integer"):
        rope_angles(torch.zeros(4, 3), 12)
    with pytest.raises(ValueError, match="base"):
        rope_angles((2, 2, 2), 12, base=1.0)
    cos, sin = rope_angles((2, 2, 2), 12)
    with pytest.raises(ValueError, match="fit"):
        apply_rope(torch.randn(1, 1, 9, 12), cos, sin)


def test_cache_per_grid():
    rope = Rope3d(12)
    first = rope((2, 3, 4))
    assert rope((2, 3, 4)) is first
    torch.testing.assert_close(first[0], rope_angles((2, 3, 4), 12)[0])
    shifted = rope((2, 3, 4), z_offset=3)
    torch.testing.assert_close(shifted[0], rope_angles(grid_positions((2, 3, 4), 3), 12)[0])
    for depth in range(1, 40):
        rope((depth, 1, 1))
    assert len(rope._cache) == Rope3d.cache_size
