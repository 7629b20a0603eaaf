"""Our CTViT equals the CT-CLIP authors' CTViT (fixture made by their code:
scripts/fixtures/make_ctclip_fixture.py), with their weights mapped by ctvlp.models.import_ctclip."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ctvlp.models.ctvit import CTViT, ctvit_config
from ctvlp.models.import_ctclip import CTClipImportError, load_ctclip_state

FIXTURE = Path(__file__).parent / "data" / "ctclip_fixture"
# the size make_ctclip_fixture.py builds theirs at (their t, h, w = our Z, Y, X)
CFG = ctvit_config("debug", image_size=(8, 32, 32), patch=(4, 8, 8), width=32, spatial_depth=1, temporal_depth=1,
                   heads=2, head_dim=16, codebook_size=64)


@pytest.fixture(scope="module")
def ours_and_io():
    weights, io = load_file(str(FIXTURE / "weights.safetensors")), load_file(str(FIXTURE / "io.safetensors"))
    model = CTViT(CFG).eval()
    load_ctclip_state(model, weights)
    with torch.no_grad():
        out = model(io["video"])  # their (b, c, t, h, w) is our (B, C, Z, Y, X)
    return out, io


def test_tokens_match_the_authors(ours_and_io):
    out, io = ours_and_io
    b, t, h, w, d = io["tokens"].shape
    assert (out["tokens_pre_vq"].reshape(b, t, h, w, d) - io["tokens_pre_vq"]).abs().max() <= 1e-4
    assert (out["tokens"].reshape(b, t, h, w, d) - io["tokens"]).abs().max() <= 1e-4


def test_pooled_and_projection_match_the_authors(ours_and_io):
    out, io = ours_and_io
    assert (out["pooled"] - io["pooled"]).abs().max() <= 1e-4
    latent = out["pooled"] @ io["visual_latent_weight"].T
    assert (latent - io["image_latent"]).abs().max() <= 1e-4


def test_import_names_missing_and_unexpected_keys():
    weights = load_file(str(FIXTURE / "weights.safetensors"))
    weights.pop("to_patch_emb.2.weight")
    weights["enc_spatial_transformer.layers.0.9.weight"] = torch.zeros(1)
    with pytest.raises(CTClipImportError, match=r"missing \['patch_proj.weight'\].*unexpected"):
        load_ctclip_state(CTViT(CFG), weights)
