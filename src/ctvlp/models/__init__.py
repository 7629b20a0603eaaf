"""Models: the 3D vision transformer and its layers (towers, heads and the two-tower model live beside them)."""

from __future__ import annotations

from ctvlp.models.rope import Rope3d, apply_rope, rope_angles, rope_split
from ctvlp.models.vit3d import (SIZES, ViT3dConfig, VisionTransformer3d, create_vision_tower, list_sizes,
                                vit_config)

__all__ = ["SIZES", "Rope3d", "ViT3dConfig", "VisionTransformer3d", "apply_rope", "create_vision_tower",
           "list_sizes", "rope_angles", "rope_split", "vit_config"]
