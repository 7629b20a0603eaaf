"""COLIPRI's vision tower equals the authors' Primus-M (issue 17, item 5).

The fixture ``tests/data/colipri_fixture.safetensors`` was made by the authors' own package (``colipri``
0.1.3 from PyPI, random weights, reduced size, anisotropic patch, non-cubic input) with
``scripts/fixtures/make_colipri_fixture.py``: their weights, an input, their patch tokens and pooled
embedding. Their weights mapped into ours (``ctvlp.models.import_colipri``) give the same tokens and
pooled embedding on the same input, up to 1e-4.

The full-size check (``slow``) needs the ``colipri`` package itself, which cannot be a test dependency:
it imports torchvision, and PyPI's torchvision (a CUDA build pinned to its own torch) does not import
beside the project's CPU torch; the test skips when the package does not import. Run it in the scratch
environment the fixture script describes (with pytest installed there), or run the script with ``--full``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ctvlp.models import import_colipri
from ctvlp.models.heads import AttentionPool
from ctvlp.models.import_colipri import colipri_state_dict, load_colipri_image_encoder
from ctvlp.models.vit3d import VisionTransformer3d, vit_config

FIXTURE = Path(__file__).parent / "data" / "colipri_fixture.safetensors"
TOL = 1e-4


def _fixture() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    data = load_file(str(FIXTURE))
    with safe_open(str(FIXTURE), "pt") as f:
        overrides = json.loads(f.metadata()["overrides"])
    theirs = {k.removeprefix("theirs."): v for k, v in data.items() if k.startswith("theirs.")}
    return theirs, data, overrides


def _ours(overrides: dict) -> tuple[VisionTransformer3d, AttentionPool]:
    """Our Primus-M at the fixture's reduced size (their patch (x, y, z) becomes our (z, y, x))."""
    width, heads = overrides["image_embed_dim"], overrides["model.image_encoder.backbone.eva_numheads"]
    px, py, pz = overrides["model.image_encoder.backbone.patch_embed_size"]
    third = width // heads // 3
    cfg = vit_config("primus-m", width=width, heads=heads, depth=overrides["model.image_encoder.backbone.eva_depth"],
                     patch=(pz, py, px), rope_split=(third, third, third))
    pool = AttentionPool(width, overrides["model.image_encoder.pooler.num_heads"], dim=overrides["projection_dim"])
    return VisionTransformer3d(cfg).eval(), pool.eval()


def _run(vision, pool, image_xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Our tokens (B, N, C), z-major, and pooled embedding for their (B, 1, X, Y, Z) input."""
    with torch.no_grad():
        out = vision(image_xyz.permute(0, 1, 4, 3, 2))  # (B, 1, Z, Y, X)
        return out["tokens"], pool(out["tokens"], out["token_mask"])


def _their_tokens(tokens_xyz: torch.Tensor) -> torch.Tensor:
    """Their (B, C, X, Y, Z) tokens in our order: (B, Z * Y * X, C)."""
    b, c = tokens_xyz.shape[:2]
    return tokens_xyz.permute(0, 4, 3, 2, 1).reshape(b, -1, c)


def test_fixture_tokens_and_pooled_match_the_authors_tower():
    theirs, data, overrides = _fixture()
    vision, pool = _ours(overrides)
    load_colipri_image_encoder(vision, pool, theirs)
    tokens, pooled = _run(vision, pool, data["input"])
    want = _their_tokens(data["tokens"])
    assert tokens.shape == want.shape == (2, 6 * 4 * 5, 96)
    assert (tokens - want).abs().max().item() <= TOL
    assert (pooled - data["pooled"]).abs().max().item() <= TOL
    assert want.abs().max() > 0.5 and data["pooled"].abs().max() > 0.05  # not a comparison of near-zeros


def test_axis_permutations_are_needed(monkeypatch):
    """With q/k RoPE blocks left in their (x, y, z) order, or the patch kernel's x and y mixed up, the tokens
    differ: the fixture can tell a right mapping from a wrong one."""
    theirs, data, overrides = _fixture()
    want = _their_tokens(data["tokens"])
    vision, pool = _ours(overrides)
    monkeypatch.setattr(import_colipri, "_rope_permutation", lambda heads, head_dim: torch.arange(heads * head_dim))
    load_colipri_image_encoder(vision, pool, theirs)
    assert (_run(vision, pool, data["input"])[0] - want).abs().max().item() > 1e-2
    monkeypatch.undo()
    load_colipri_image_encoder(vision, pool, theirs)
    assert (_run(vision, pool, data["input"])[0] - want).abs().max().item() <= TOL
    with torch.no_grad():  # their (kx, ky, kz) kernel as (kz, kx, ky): fits our (4, 8, 8) but mixes x and y
        vision.patch_embed.proj.weight.copy_(theirs["backbone.down_projection.proj.weight"].permute(0, 1, 4, 2, 3))
    assert (_run(vision, pool, data["input"])[0] - want).abs().max().item() > 1e-2


def test_importer_names_bad_keys_and_wrong_towers():
    theirs, _, overrides = _fixture()
    vision, _ = _ours(overrides)
    mapped = colipri_state_dict({f"image_encoder.{k}": v for k, v in theirs.items()}, vision)  # whole-model keys
    assert mapped["vision.blocks.0.attn.qkv.weight"].shape == (3 * 96, 96) and "vision.rope" not in mapped
    extra = {**theirs, "backbone.eva.blocks.0.attn.k_bias": torch.zeros(96)}
    with pytest.raises(ValueError, match=r"unexpected keys \['backbone.eva.blocks.0.attn.k_bias'\]"):
        colipri_state_dict(extra, vision)
    short = {k: v for k, v in theirs.items() if k != "projector.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['projector.bias'\]"):
        colipri_state_dict(short, vision)
    third = 8
    old = VisionTransformer3d(vit_config("primus-m", width=96, heads=4, depth=2, patch=(4, 8, 8), rope_base=1000.0,
                                         rope_split=(third,) * 3))
    with pytest.raises(ValueError, match="base 10000"):
        colipri_state_dict(theirs, old)
    deeper = VisionTransformer3d(vit_config("primus-m", width=96, heads=4, depth=3, patch=(4, 8, 8),
                                            rope_split=(third,) * 3))
    with pytest.raises(ValueError, match="2 blocks, the tower 3"):
        colipri_state_dict(theirs, deeper)


@pytest.mark.slow
def test_full_primus_m_matches_the_installed_colipri_package():
    """Full Primus-M (864 wide, 16 blocks, 12 heads, 768-d pool) at 64^3, built by the installed package."""
    try:
        import colipri
    except Exception as err:  # ImportError, or torchvision's RuntimeError beside a foreign torch
        pytest.skip(f"the colipri package does not import here ({type(err).__name__}); see the module docstring")
    torch.manual_seed(0)
    model = colipri.get_model(pretrained=False, image_only=True, input_size=64).eval()
    image = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        tokens, pooled = model.encode_image(image), model.encode_image(image, project=True, pool=True)
    vision = VisionTransformer3d(vit_config("primus-m")).eval()
    pool = AttentionPool(864, 12, dim=768).eval()
    load_colipri_image_encoder(vision, pool, model.image_encoder.state_dict())
    ours, ours_pooled = _run(vision, pool, image)
    assert (ours - _their_tokens(tokens)).abs().max().item() <= TOL
    assert (ours_pooled - pooled).abs().max().item() <= TOL


def test_recipe_uses_the_checked_tower_and_head():
    """The colipri recipe is the architecture checked above; its debug and cohort variants keep the head kind."""
    from ctvlp.recipes import get_recipe
    from ctvlp.recipes.cohort import cohort_variant

    cfg = get_recipe("colipri")
    assert cfg.model.vision == vit_config("primus-m")
    assert (cfg.model.image_pool, cfg.model.image_pool_heads, cfg.model.embed_dim) == ("projected_attention", 12, 768)
    for variant in (get_recipe("colipri", debug=True), cohort_variant(cfg)):
        assert variant.model.image_pool == "projected_attention"
        assert variant.model.embed_dim % variant.model.image_pool_heads == 0
