"""Paper cards (issue 17 item 7): each recipe's key hyper-parameters asserted against its paper, so that a change
is a conscious one. Each expected value cites where it comes from: [paper] / [code] (the authors' released code) /
[reviews] / METHODS.md, or [ours] (our decision, with the recipe docstring's reason). Only configs are built (no
weights), so each card takes milliseconds.
"""

import math

import pytest

from ctvlp.models.ctvit import CTViTConfig
from ctvlp.models.vit3d import ViT3dConfig
from ctvlp.recipes import NAMES, get_recipe
from ctvlp.recipes.demo import DEMO_WINDOWS
from ctvlp.recipes.segvl import SEGVL_MASKS

SIGLIP_T, SIGLIP_B = math.log(10.0), -10.0  # SigLIP's initial log t and b (Zhai et al. 2023)
CLIP_T = math.log(1 / 0.07)  # CLIP's initial log t (Radford et al. 2021)


def shared_optimiser(optim, name: str, lr: float, warmup: int = 1000):
    """The optimiser every full recipe shares unless its card says otherwise [ours: OptimConfig's defaults]:
    AdamW betas (0.9, 0.95), weight decay 0.05, grad-norm clip 1.0, linear warm-up then cosine to 0.1 x."""
    assert (optim.name, optim.lr, optim.warmup_steps) == (name, lr, warmup)
    assert optim.betas == (0.9, 0.95) and optim.weight_decay == 0.05 and optim.grad_clip == 1.0
    assert optim.min_lr_ratio == 0.1


def test_every_recipe_has_a_card():
    assert set(NAMES) == {"ctclip", "sigvlp", "scalevlp", "segvl", "uniferum", "colipri", "demo"}


def test_ctclip_card():
    cfg = get_recipe("ctclip")
    # The text tower and eval tasks are asserted in tests/test_paper_text_towers.py / tests/test_paper_eval_tasks.py.
    v = cfg.model.vision
    assert isinstance(v, CTViTConfig)  # [code] CTViT, not a ViT
    assert v.image_size == (240, 480, 480) and v.patch == (10, 20, 20)  # [code] image 480, patch 20, temporal 10
    assert v.grid == (24, 24, 24) and v.pooled_width == 294_912  # [code] dim_image = 294912
    assert (v.width, v.spatial_depth, v.temporal_depth, v.heads, v.head_dim) == (512, 4, 4, 8, 32)  # [code]
    assert (v.codebook_size, v.attn_scale, v.ff_mult) == (8192, 8.0, 4.0)  # [code] VQ 8192, cosine-sim scale 8
    assert cfg.model.embed_dim == 512 and cfg.model.projection == "linear"  # [code] dim_latent 512, bias-free
    p = cfg.data.preprocess
    assert p.spacing == (0.75, 0.75, 1.5)  # [paper] 0.75 x 0.75 x 1.5 mm
    assert p.hu_window == (-1000.0, 1000.0) and not p.crop_to_body  # [code] HU / 1000 in [-1, 1], no body crop
    s = cfg.data.sampler
    assert (s.mode, s.size, s.max_slices, s.min_depth, s.padding) == ("whole", (480, 480), 240, 240, "zero")
    # ^ [code] centre crop/pad to 480 x 480 x 240 with -1 (zero padding = air = -1)
    assert (cfg.loss.name, cfg.loss.terms) == ("clip", {"clip": 1.0})  # [paper] symmetric InfoNCE only
    assert cfg.loss.gather  # [ours] negatives gathered across processes (CT-CLIP's code does not)
    assert cfg.model.init_logit_scale == 1.0  # [code] temperature = 1, used as exp(1)
    assert cfg.model.max_logit_scale == 100.0  # [ours] clamp at 100 (open_clip); CT-CLIP never clamps
    assert cfg.data.batch_size == 8 and cfg.steps == 100_000  # [code] batch 8, 100,001 steps
    o = cfg.optim  # [code] Adam (= AdamW without weight decay), betas (0.9, 0.99), lr 1.25e-6 constant, clip 0.5
    assert (o.name, o.lr, o.weight_decay, o.betas, o.grad_clip) == ("adamw", 1.25e-6, 0.0, (0.9, 0.99), 0.5)
    assert (o.warmup_steps, o.min_lr_ratio) == (0, 1.0)  # constant: its warm-up/cosine class is never used
    assert cfg.stages == () and cfg.tasks == {} and cfg.grad_accum == 1  # one kind of step [code]
    assert cfg.eval.prompt_style == "ctclip"  # [paper] "X is present." / "X is not present."


def test_sigvlp_card():
    cfg = get_recipe("sigvlp")
    # The text tower and eval tasks are asserted in tests/test_paper_text_towers.py / tests/test_paper_eval_tasks.py.
    v = cfg.model.vision
    assert isinstance(v, ViT3dConfig)
    assert (v.width, v.depth, v.heads) == (792, 12, 12)  # [code] base 792 / 12 layers / 12 heads
    assert v.patch == (16, 16, 16) and v.stem == "none" and v.in_chans == 1  # [paper] 16^3 patch convolution
    assert v.pos == "rope"  # [paper] RoPE in every attention layer, no absolute positions
    assert v.rope_base == 1000.0  # [paper] ablation: b = 1000 slightly beats 10000
    assert v.rope_fraction == 1.0 and v.rope_split is None  # [ours] 3D RoPE, every dim (released kernel is broken)
    assert (v.mlp, v.mlp_ratio) == ("gelu", 4.0)  # [code] plain ViT
    assert cfg.model.embed_dim == 512 and cfg.model.image_pool == "mean"  # [ours] the paper is silent
    p = cfg.data.preprocess
    assert p.spacing == (1.5, 1.5, 1.5)  # [paper] 1.5 mm slices; [ours] 1.5 mm in-plane (256 x 1.5 = 384 mm)
    assert p.hu_window == (-1000.0, 1000.0) and p.crop_to_body  # [ours] METHODS.md's default window, body crop
    s = cfg.data.sampler
    assert (s.mode, s.chunk_depth) == ("chunk", 32)  # [paper] chunks; [ours] 32 slices (METHODS.md's default)
    assert s.padding == "repeat"  # [paper] repeat padding beats zero padding
    assert s.size == (256, 256)  # [paper] 256 x 256 in-plane
    assert s.text == "organs" and s.organ_z_prior  # [paper] organ-wise sentences; [ours] z-prior without masks
    assert (cfg.loss.name, cfg.loss.terms) == ("siglip", {"siglip": 1.0})  # [paper] pairwise sigmoid loss
    assert (cfg.model.init_logit_scale, cfg.model.init_logit_bias) == (SIGLIP_T, SIGLIP_B)  # [code] log 10, -10
    o = cfg.optim
    assert o.name == "muon" and (o.momentum, o.ns_steps, o.muon_lr) == (0.95, 5, 0.02)  # [code] Muon; lrs [ours]
    shared_optimiser(o, "muon", 1e-4)  # [code] AdamW (0.9, 0.95) for the rest; lr, schedule [ours] (paper silent)
    assert cfg.data.batch_size == 32  # [ours] the paper is silent
    assert cfg.steps == 230_000  # [paper] up to 230k steps
    assert cfg.stages == () and cfg.tasks == {}


def test_scalevlp_card():
    cfg = get_recipe("scalevlp")
    # The text tower and eval tasks are asserted in tests/test_paper_text_towers.py / tests/test_paper_eval_tasks.py.
    v = cfg.model.vision
    assert v.patch == (16, 16, 16)  # [reviews] patch 16
    assert (v.width, v.depth, v.heads) == (792, 12, 12)  # [ours] SigVLP's base (the reviews give no size)
    assert v.pos == "learned" and v.learned_grid == (8, 16, 16)  # [ours] evaluation reads up to 128 slices
    assert (cfg.model.image_pool, cfg.model.projection) == ("attention", "mlp")  # [reviews] light aggregator
    assert cfg.model.embed_dim == 512  # [ours]
    p = cfg.data.preprocess
    assert p.spacing == (1.5, 1.5, 1.5) and p.hu_window == (-1000.0, 1000.0)  # [ours] SigVLP's grid; paper silent
    s = cfg.data.sampler
    assert (s.mode, s.chunk_depth, s.size, s.padding) == ("chunk", 32, (256, 256), "repeat")  # [reviews] 256^2 x 32
    assert s.text == "report"  # [paper] CT-report pairs
    assert cfg.loss.name == "swca" and cfg.loss.terms == {"swca": 1.0}  # [paper] SWCA
    assert cfg.loss.options["swca"] == {"alpha": 0.5, "variant": "soft_targets", "eps": 0.1,
                                        "knowledge": "report_emb"}
    # ^ [ours] q = 0.9 I + 0.1 A with A unnormalised (METHODS.md's row-normalised W softened nothing); alpha 0.5
    assert (cfg.model.init_logit_scale, cfg.model.init_logit_bias) == (SIGLIP_T, SIGLIP_B)  # [ours] SigLIP's
    shared_optimiser(cfg.optim, "adamw", 1e-4)  # [ours] the paper is silent
    assert cfg.data.batch_size == 32 and cfg.steps == 100_000  # [ours] the paper is silent
    assert cfg.stages == () and cfg.tasks == {}


def test_segvl_card():
    cfg = get_recipe("segvl")
    # The text tower and eval tasks are asserted in tests/test_paper_text_towers.py / tests/test_paper_eval_tasks.py.
    v = cfg.model.vision
    assert (v.width, v.depth, v.heads, v.mlp, v.mlp_ratio) == (768, 12, 12, "gelu", 4.0)  # [paper] ViT-Base
    assert v.patch == (10, 20, 20) and v.stem == "none"  # [paper] 20 x 20 x 10 (x, y, z), no conv layers
    assert v.pos == "learned" and v.learned_grid == (24, 24, 24)  # [ours] the paper does not say
    assert cfg.model.projection == "mlp_ln"  # [paper] 2-layer heads: Linear, LeakyReLU, LayerNorm, Linear
    assert cfg.model.embed_dim == 512  # [ours] the paper is silent
    assert (cfg.model.seg.embed_dim, cfg.model.seg.hidden) == (32, 256)  # [ours] light MLP head, sizes not stated
    assert cfg.model.visual_enhancement  # [paper] z = z_img + lambda AvgPool(f_VE(X_seg)), lambda from 0
    p = cfg.data.preprocess
    assert p.spacing == (0.75, 0.75, 1.5) and not p.crop_to_body  # [ours] CT-CLIP's grid, which SegVL follows
    s = cfg.data.sampler
    assert (s.mode, s.size, s.max_slices, s.text) == ("whole", (480, 480), 240, "report")  # [ours] CT-CLIP's input
    assert s.include_masks and s.mask_names == SEGVL_MASKS
    assert (cfg.loss.name, cfg.loss.terms) == ("clip", {"clip": 1.0})  # [paper] L_IT is InfoNCE
    assert cfg.loss.gather  # [paper] appendix: CLIP loss across GPUs
    assert cfg.model.init_logit_scale == pytest.approx(CLIP_T)  # [ours] CLIP's (the paper is silent)
    masks = cfg.tasks["masks"]
    assert masks.name == "tversky" and masks.terms == {"tversky": 0.75}  # [paper] alpha_seg = 0.75 in stage 2
    ab = dict(zip(SEGVL_MASKS, zip(masks.options["tversky"]["alpha"], masks.options["tversky"]["beta"])))
    assert ab["lung_nodule"] == pytest.approx((0.3, 0.7))  # [paper] nodules
    assert ab["pleural_effusion"] == pytest.approx((0.4, 0.6))  # [paper] effusion
    assert all(ab[m] == pytest.approx((0.5, 0.5)) for m in SEGVL_MASKS if m not in ("lung_nodule", "pleural_effusion"))
    # ^ [paper] others; the standard Tversky index, not the printed Eq. 5 [ours, METHODS.md]
    one, two = cfg.stages
    assert (one.fraction, one.cycle, one.frozen) == (0.5, ("pairs",), ("seg.",))  # [paper] stage 1: alpha_seg 0
    assert (two.cycle, two.together) == (("pairs", "masks"), True)  # [paper] one update of L_IT + 0.75 L_VM
    o = cfg.optim  # [paper] AdamW, cosine from 5e-6 to 5e-8; warm-up [ours] (not stated)
    assert (o.name, o.lr, o.min_lr_ratio, o.warmup_steps) == ("adamw", 5e-6, 0.01, 1000)
    assert cfg.data.batch_size == 16 and cfg.grad_accum == 2  # [paper] stage 2: 16, accumulation 2 (stage 1: 32
    # [ours] one batch size per run: stage 1 gets stage 2's)
    assert cfg.steps == 2_000_000  # [paper] 10^6 steps per stage, two stages


def test_uniferum_card():
    cfg = get_recipe("uniferum")
    # The text tower and eval tasks are asserted in tests/test_paper_text_towers.py / tests/test_paper_eval_tasks.py.
    v = cfg.model.vision
    assert (v.width, v.depth, v.heads, v.patch) == (792, 12, 12, (16, 16, 16))  # [ours] (code: 3D EfficientNet-B0)
    assert v.pos == "rope" and v.rope_base == 1000.0  # [ours] a RoPE ViT on whole volumes
    assert v.in_chans == 2 and cfg.data.sampler.body_channel  # [seed] body mask as an extra input channel
    assert cfg.model.image_pool == "multiscale"  # [seed] multi-scale token pooling
    assert cfg.model.label_prompts  # [code] labels as prompts
    assert (cfg.model.seg.embed_dim, cfg.model.seg.hidden) == (32, 256)  # [ours] SegVL's voxel head
    p = cfg.data.preprocess
    assert p.spacing == (1.5, 2.0, 2.0)  # [code] 1 mm, crop/pad 384 x 320 x 256 resized to 256 x 160 x 128
    assert p.crop_to_body and p.body_threshold == -150.0  # [code] largest component above -150 HU
    assert p.hu_window == (-1000.0, 1000.0)  # [code] clip [-1000, 1000]
    s = cfg.data.sampler
    assert (s.mode, s.size, s.max_slices) == ("whole", (160, 256), 128)  # [code] 256 x 160 x 128 (x, y, z)
    assert s.include_masks and s.mask_names == SEGVL_MASKS
    assert cfg.loss.name == "siglip"  # [ours] report-volume term
    assert cfg.loss.terms == {"siglip": 1.0, "masked_bce": 1.0, "tversky": 1.0}
    # ^ [code] BCE on available labels; masks: [ours] Tversky weight 1 (code: sigmoid focal, weight 10)
    assert (cfg.model.init_logit_scale, cfg.model.init_logit_bias) == (SIGLIP_T, SIGLIP_B)  # [ours] SigLIP's
    o = cfg.optim  # [code] configs/CTRATE_SEG.yaml: lr 5e-5, weight decay 1e-4, 25 warm-up steps
    assert (o.name, o.lr, o.weight_decay, o.warmup_steps) == ("adamw", 5e-5, 1e-4, 25)
    assert (cfg.data.batch_size, cfg.grad_accum, cfg.steps) == (8, 8, 25_000)  # [code] 8 x 8, 25,000 steps
    assert cfg.stages == () and cfg.tasks == {}


def test_colipri_card():
    cfg = get_recipe("colipri")
    # The text tower and eval tasks are asserted in tests/test_paper_text_towers.py / tests/test_paper_eval_tasks.py.
    v = cfg.model.vision
    assert (v.width, v.depth, v.heads, v.patch) == (864, 16, 12, (8, 8, 8))  # [code] Primus-M
    assert (v.mlp, v.mlp_ratio, v.sub_norms, v.k_bias) == ("swiglu", 8 / 3, True, False)  # [code] timm Eva blocks
    assert (v.layerscale, v.drop_path) == (0.1, 0.2)  # [code] init_values 0.1, drop_path_rate 0.2
    assert v.pos == "rope" and v.rope_base == 10000.0  # [code] RotaryEmbeddingCat, base 10000, no abs. positions
    assert v.rope_split == (24, 24, 24) and v.rope_fraction == 1.0  # [code] all 72 dims (not METHODS.md's 2/3)
    m = cfg.model
    assert (m.image_pool, m.image_pool_heads, m.embed_dim) == ("projected_attention", 12, 768)  # [code] head
    assert m.text_projection == "none"  # [code] text.py: "We didn't use a projector during pre-training"
    assert m.init_logit_scale == pytest.approx(CLIP_T)  # [ours] CLIP's (the paper is silent)
    assert (m.decoder.depth, m.decoder.width, m.decoder.heads) == (4, 512, 8)  # [ours] report decoder size
    assert (m.mae.depth, m.mae.width) == (2, 256) and m.mae_ratio == 0.75  # [paper] 75 % masking; size [ours]
    p = cfg.data.preprocess
    assert p.spacing == (2.0, 2.0, 2.0) and not p.crop_to_body  # [code] 2 mm isotropic, the full field of view
    assert p.hu_window == (-1000.0, 1000.0)  # [code] clamp [-1000, 1000] -> [-1, 1]
    s = cfg.data.sampler
    assert (s.mode, s.size, s.max_slices) == ("whole", (160, 160), 160)  # [paper] 160^3 in training
    assert (cfg.eval.sampler.size, cfg.eval.sampler.max_slices) == ((192, 192), 192)  # [code] input_size 192
    assert s.text == "structured"  # [paper] structured reports (ours: rule-based)
    assert cfg.loss.name == "clip" and cfg.loss.terms == {"clip": 1.0, "osl": 0.5, "caption": 1.0}
    # ^ [paper] CLIP + OSL + report generation; OSL weight 0.5 (METHODS.md), caption weight [ours]
    assert cfg.data.osl_pairs == 8  # METHODS.md: K = 8
    assert cfg.tasks["mae"].terms == {"mae": 1.0}  # [paper] MAE on image-only batches
    (stage,) = cfg.stages
    assert stage.cycle == ("pairs", "mae") and not stage.together  # [paper] alternating batches, 1:1 (METHODS.md)
    shared_optimiser(cfg.optim, "adamw", 1e-4)  # [ours] not in the seed
    assert cfg.data.batch_size == 16 and cfg.steps == 125_000  # [paper] batch 16, 125k steps
    assert cfg.eval.prompt_style == "colipri"  # [code] short prompt pairs


def test_demo_card():
    """Our own recipe (SigVLP scaled to a 2-core CPU): its targets (mean AUROC >= 0.80, <= 10 min) rest on these."""
    cfg = get_recipe("demo")
    # The text tower and eval tasks are asserted in tests/test_paper_text_towers.py / tests/test_paper_eval_tasks.py.
    v = cfg.model.vision
    assert (v.width, v.depth, v.heads, v.patch, v.stem) == (192, 4, 3, (4, 8, 8), "conv")  # [ours] CPU-sized
    assert v.pos == "rope" and v.rope_base == 1000.0  # [ours] as SigVLP
    assert v.in_chans == len(DEMO_WINDOWS) == 4  # [ours] four HU windows (lung findings need them)
    m = cfg.model
    assert (m.embed_dim, m.image_pool, m.projection) == (256, "max", "mlp_bn")  # [ours]
    assert (m.text_input, m.sentence_match, m.sentence_logits) == ("sentences", "findings", True)  # [ours]
    assert (m.init_logit_scale, m.init_logit_bias) == (SIGLIP_T, SIGLIP_B)  # [ours] SigLIP's
    p = cfg.data.preprocess
    assert p.spacing == (3.0, 3.0, 6.0) and p.antialias  # [ours] ~14 x 24 x 32 voxels a chest
    s = cfg.data.sampler
    assert (s.mode, s.chunk_depth, s.padding, s.size, s.random_crop) == ("chunk", 16, "repeat", (32, 40), True)
    assert s.text == "organs" and s.windows == DEMO_WINDOWS  # [ours] organ sentences as SigVLP
    assert cfg.loss.name == "sentence_sigmoid" and cfg.loss.terms == {"sentence_sigmoid": 1.0, "siglip": 0.1}
    o = cfg.optim
    assert (o.name, o.lr, o.warmup_steps, o.muon_lr, o.min_lr_ratio) == ("muon", 1e-3, 20, 0.02, 0.1)  # [ours]
    assert (cfg.data.batch_size, cfg.steps) == (32, 800)  # [ours] <= 10 minutes on 2 cores
    assert cfg.eval.prompt_style == "corpus"  # [ours] the reports' own sentences
