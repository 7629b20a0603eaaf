"""COLIPRI's image encoder (the authors' ``colipri`` package) mapped into ours, weight for weight.

Theirs: ``colipri.get_model(...).image_encoder`` = ``backbone`` (``dynamic_network_architectures``' Primus:
``down_projection.proj`` Conv3d patch embedding, ``eva`` = timm Eva blocks and final norm), ``projector``
(1x1x1 Conv3d width -> 768 with bias) and ``pooler`` (``nn.MultiheadAttention`` with the mean token as
query). Ours: :class:`~ctvlp.models.vit3d.VisionTransformer3d` with ``vit_config("primus-m")`` and
:class:`~ctvlp.models.heads.AttentionPool` with ``dim``.

Axis order: their volumes are (B, C, X, Y, Z) in RAS and their tokens x-major; ours (B, C, Z, Y, X) and
z-major. So (1) the patch kernel (C_out, C_in, kx, ky, kz) is transposed to (.., kz, ky, kx), and (2) in
each head the RoPE blocks of q and k (theirs rotate the head's dims [x | y | z], thirds of the head, by
timm's ``RotaryEmbeddingCat``; ours [z | y | x]) are swapped: rows of ``q_proj``/``k_proj`` and of the
query bias are permuted within each head. Scores q . k are sums over a head's dims, so permuting the
same dims of q and k leaves attention unchanged; v and everything else keep their order.

This is the seed of importing the public checkpoint (a later issue); tested against the authors' random
tower in ``tests/test_colipri_equivalence.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from ctvlp.models.heads import AttentionPool
from ctvlp.models.vit3d import VisionTransformer3d

IGNORED_PREFIXES = ("backbone.mask_token", "backbone.up_projection.", "backbone.eva.rope.", "text_encoder.",
                    "softmax_temperature")
"""Their keys with nothing to map: the MAE mask token, the segmentation decoder (removed by their image
encoder), cached RoPE tables (ours are computed), the text tower (another importer's job), the
zero-shot softmax temperature."""


def _strip(theirs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Their keys relative to the image encoder (a whole ``Model`` state dict has ``image_encoder.``)."""
    return {k.removeprefix("image_encoder."): v for k, v in theirs.items()}


def _rope_permutation(heads: int, head_dim: int) -> torch.Tensor:
    """Row order (heads * head_dim,) taking their per-head RoPE blocks [x | y | z] to ours [z | y | x]."""
    third = head_dim // 3
    within = torch.cat([torch.arange(a * third, (a + 1) * third) for a in (2, 1, 0)])  # (head_dim,)
    return (torch.arange(heads)[:, None] * head_dim + within).flatten()  # (heads * head_dim,)


def _check_rope(vision: VisionTransformer3d) -> None:
    """Their RoPE: every dim of a head, thirds per axis, base 10000; ours must be configured the same."""
    head_dim = vision.cfg.width // vision.cfg.heads
    want = (head_dim // 3,) * 3
    if vision.rope is None or head_dim % 6 or tuple(vision.rope.split) != want or vision.rope.base != 10000.0:
        got = "none" if vision.rope is None else f"split {tuple(vision.rope.split)}, base {vision.rope.base}"
        raise ValueError(f"COLIPRI's RoPE rotates each head's {head_dim} dims as {want} at base 10000; "
                         f"the tower's RoPE is {got} (use vit_config('primus-m'))")
    if vision.cfg.k_bias or not vision.cfg.sub_norms or vision.cfg.mlp != "swiglu":
        raise ValueError("COLIPRI's blocks are Eva blocks: the tower needs mlp='swiglu', sub_norms=True, "
                         "k_bias=False (use vit_config('primus-m'))")


def _block_map(theirs: dict[str, torch.Tensor], i: int, perm: torch.Tensor) -> dict[str, torch.Tensor]:
    """One Eva block -> our ``blocks.{i}`` keys."""
    t = f"backbone.eva.blocks.{i}."
    get = lambda name: theirs[t + name]  # noqa: E731
    return {
        "norm1.weight": get("norm1.weight"), "norm1.bias": get("norm1.bias"),
        "norm2.weight": get("norm2.weight"), "norm2.bias": get("norm2.bias"),
        "ls1.gamma": get("gamma_1"), "ls2.gamma": get("gamma_2"),
        "attn.qkv.weight": torch.cat((get("attn.q_proj.weight")[perm], get("attn.k_proj.weight")[perm],
                                      get("attn.v_proj.weight"))),
        "attn.q_bias": get("attn.q_proj.bias")[perm], "attn.v_bias": get("attn.v_proj.bias"),
        "attn.norm.weight": get("attn.norm.weight"), "attn.norm.bias": get("attn.norm.bias"),
        "attn.proj.weight": get("attn.proj.weight"), "attn.proj.bias": get("attn.proj.bias"),
        "mlp.fc12.weight": torch.cat((get("mlp.fc1_g.weight"), get("mlp.fc1_x.weight"))),
        "mlp.fc12.bias": torch.cat((get("mlp.fc1_g.bias"), get("mlp.fc1_x.bias"))),
        "mlp.norm.weight": get("mlp.norm.weight"), "mlp.norm.bias": get("mlp.norm.bias"),
        "mlp.fc3.weight": get("mlp.fc2.weight"), "mlp.fc3.bias": get("mlp.fc2.bias"),
    }


def _used_keys(depth: int) -> set[str]:
    """Their keys that the mapping reads."""
    block = ["norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "gamma_1", "gamma_2",
             "attn.q_proj.weight", "attn.q_proj.bias", "attn.k_proj.weight", "attn.v_proj.weight",
             "attn.v_proj.bias", "attn.norm.weight", "attn.norm.bias", "attn.proj.weight", "attn.proj.bias",
             "mlp.fc1_g.weight", "mlp.fc1_g.bias", "mlp.fc1_x.weight", "mlp.fc1_x.bias", "mlp.norm.weight",
             "mlp.norm.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
    head = ["backbone.down_projection.proj.weight", "backbone.down_projection.proj.bias", "backbone.eva.norm.weight",
            "backbone.eva.norm.bias", "projector.weight", "projector.bias", "pooler.attn.in_proj_weight",
            "pooler.attn.in_proj_bias", "pooler.attn.out_proj.weight", "pooler.attn.out_proj.bias"]
    return set(head) | {f"backbone.eva.blocks.{i}.{name}" for i in range(depth) for name in block}


def colipri_state_dict(theirs: Mapping[str, torch.Tensor], vision: VisionTransformer3d) -> dict[str, torch.Tensor]:
    """Their image-encoder (or whole-model) state dict -> ours: ``vision.*`` (the tower) and
    ``image_pool.*`` (:class:`AttentionPool` with ``dim``), the keys of a ``VisionLanguageModel``.

    ``vision`` gives the head count (not in the weights) and is checked for COLIPRI's RoPE and blocks.
    ValueError naming the keys when theirs has keys nothing maps (after ``IGNORED_PREFIXES``) or lacks
    keys the mapping needs."""
    _check_rope(vision)
    theirs = _strip(theirs)
    depths = {int(m.group(1)) for k in theirs if (m := re.match(r"backbone\.eva\.blocks\.(\d+)\.", k))}
    depth = max(depths) + 1 if depths else 0
    used = _used_keys(depth)
    unexpected = sorted(k for k in theirs if k not in used and not k.startswith(IGNORED_PREFIXES))
    missing = sorted(used - set(theirs))
    if unexpected or missing:
        raise ValueError(f"not a COLIPRI image encoder state dict: unexpected keys {unexpected[:8]}"
                         f"{' ...' if len(unexpected) > 8 else ''}, missing keys {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''}")
    if depth != vision.cfg.depth:
        raise ValueError(f"the COLIPRI state dict has {depth} blocks, the tower {vision.cfg.depth}")
    perm = _rope_permutation(vision.cfg.heads, vision.cfg.width // vision.cfg.heads)
    ours = {"vision.patch_embed.proj.weight": theirs["backbone.down_projection.proj.weight"].permute(0, 1, 4, 3, 2),
            "vision.patch_embed.proj.bias": theirs["backbone.down_projection.proj.bias"],
            "vision.norm.weight": theirs["backbone.eva.norm.weight"],
            "vision.norm.bias": theirs["backbone.eva.norm.bias"],
            "image_pool.proj.weight": theirs["projector.weight"].flatten(1),  # (dim, width, 1, 1, 1) -> (dim, width)
            "image_pool.proj.bias": theirs["projector.bias"]}
    for name in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
        ours[f"image_pool.attn.{name}"] = theirs[f"pooler.attn.{name}"]
    for i in range(depth):
        ours.update({f"vision.blocks.{i}.{k}": v for k, v in _block_map(theirs, i, perm).items()})
    return {k: v.detach().clone().contiguous() for k, v in ours.items()}


def load_colipri_image_encoder(vision: VisionTransformer3d, pool: AttentionPool,
                               theirs: Mapping[str, torch.Tensor]) -> None:
    """Load their image encoder's weights into our tower and pool (in place; every parameter is set).

    ValueError naming the key on a shape mismatch or a parameter the mapping does not fill."""
    if not isinstance(pool, AttentionPool) or pool.proj is None or pool.norm is not None or pool.query is not None:
        got = type(pool).__name__
        if isinstance(pool, AttentionPool):
            got = "an AttentionPool " + ("without a projection" if pool.proj is None else "with a LayerNorm or a learned query")
        raise ValueError(f"COLIPRI's image head needs image_pool='projected_attention', got {got}")
    mapped = colipri_state_dict(theirs, vision)
    for prefix, module in (("vision.", vision), ("image_pool.", pool)):
        part = {k.removeprefix(prefix): v for k, v in mapped.items() if k.startswith(prefix)}
        _load_exact(module, part, prefix)


def _load_exact(module: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> None:
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"COLIPRI weights do not fill {prefix.rstrip('.')}: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ValueError(f"COLIPRI weight {prefix}{key}: shape {tuple(value.shape)}, "
                             f"ours {tuple(own[key].shape)}")
    module.load_state_dict(state, strict=True)
