"""`CtvlpModel`: a trained model applied to any CT file, with the preprocessing its checkpoint carries.

Every method reads the input as evaluation reads a cached volume: :func:`~ctvlp.inference.inputs.read_ct`
(checks), ``ctvlp.data.preprocess.preprocess(volume, {}, preprocess_config)`` (RAS, spacing, body crop),
then :func:`ctvlp.data.sampling.draw_sample` with the checkpoint's evaluation sampler (HU windows, body
channel, in-plane size, depth; seeded, so the same file always gives the same input). The numbers are
therefore those of ``ctvlp.eval`` for the same volume in a prepared cache:

* ``encode_volume``: ``model.encode_image`` as ``ctvlp.eval.run.encode_split`` calls it;
* ``zero_shot``: the label's (positive, negative) prompt pair in the checkpoint's prompt style
  (:func:`ctvlp.data.prompts.build_prompts`), p = softmax over the pair at the model's logit scale
  (:func:`ctvlp.models.prompting.prompt_scorer`), as the evaluator (``ctvlp.eval.suite.run_suite``);
* ``segment``: SegVL's P = (cos(voxel embedding, anchor of "This is <prompt>.") + 1) / 2 on the windows
  of ``ctvlp.eval.segmentation`` (:func:`ctvlp.data.sampling.volume_windows`), mapped back onto the input's grid (:mod:`ctvlp.inference.geometry`);
* ``generate_report``: the report decoder (greedy or beam search) on the vision tokens.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ctvlp.data.preprocess import PreprocessConfig, PreprocessedVolume, preprocess
from ctvlp.data.prompts import prompt_set
from ctvlp.data.sampling import (SamplerConfig, VolumeRecord, draw_sample, fit_axis, volume_windows, window_depth,
                                 window_sample)
from ctvlp.data.volumes import MemoryVolume
from ctvlp.errors import InferenceError
from ctvlp.inference.geometry import inplane_affine, to_grid
from ctvlp.inference.inputs import read_ct
from ctvlp.io.volume import Volume
from ctvlp.models.decoder import special_token_ids
from ctvlp.models.prompting import encode_texts, prompt_scorer
from ctvlp.models.store import ModelSpec
from ctvlp.models.voxel_head import zero_shot_segment

VolumeInput = str | os.PathLike | Volume


@dataclass
class Encoding:
    """``encode_volume(..., patches=True)``: the global embedding and the vision tower's patch tokens."""

    embedding: torch.Tensor
    """(D,) L2-normalised, in the joint image-text space."""
    patches: torch.Tensor
    """(gz, gy, gx, C) vision-tower token features (before pooling and projection)."""
    patch_mask: torch.Tensor
    """(gz, gy, gx) bool: tokens of real slices (False on depth padding)."""


@dataclass(frozen=True)
class InputPipeline:
    """A file -> the model's input, as evaluation draws it; picklable, so DataLoader workers run it
    (``ctvlp embed``) with exactly the steps :class:`CtvlpModel` uses."""

    preprocess: PreprocessConfig
    sampler: SamplerConfig
    """The evaluation sampler without random crops or masks."""
    max_voxels: int | None = None

    def prepare(self, volume: VolumeInput) -> tuple[Volume, PreprocessedVolume]:
        """(the checked input Volume, the volume on the model's grid)."""
        volume = read_ct(volume, self.max_voxels)
        return volume, preprocess(volume, {}, self.preprocess)

    def sample(self, prepared: PreprocessedVolume) -> dict:
        """The evaluation sample of a preprocessed volume (``draw_sample``, seeded as evaluation's first volume)."""
        record = VolumeRecord(volume=MemoryVolume.from_prepared(prepared))
        return draw_sample(record, self.sampler, np.random.default_rng([0, 0, 0]), tuple(self.preprocess.hu_window))


def _distinct(names: Sequence[str], what: str) -> list[str]:
    if isinstance(names, str):
        names = [names]
    names = [str(n) for n in names]
    if not names or any(not n.strip() for n in names):
        raise InferenceError(None, f"no {what} given (empty list or empty string): name at least one")
    if len(set(names)) != len(names):
        raise InferenceError(None, f"{what} must be distinct, got {names}")
    return names


class CtvlpModel:
    """A :class:`~ctvlp.models.vlp.VisionLanguageModel` in eval mode plus its
    :class:`~ctvlp.models.store.ModelSpec`."""

    def __init__(self, model, spec: ModelSpec, device: torch.device | str = "cpu", max_voxels: int | None = None):
        self.model = model.to(device).eval()
        self.spec = spec
        self.device = torch.device(device)
        self.sampler = dataclasses.replace(spec.sampler, random_crop=False, include_masks=False)
        self.inputs = InputPipeline(spec.preprocess, self.sampler, max_voxels)

    def __repr__(self) -> str:
        return f"CtvlpModel(recipe={self.spec.recipe!r}, step={self.spec.step}, path={self.spec.path!r})"

    def prepare(self, volume: VolumeInput) -> tuple[Volume, PreprocessedVolume]:
        """(the checked input Volume, the volume on the model's grid): :meth:`InputPipeline.prepare`."""
        return self.inputs.prepare(volume)

    def sample(self, prepared: PreprocessedVolume) -> dict:
        """The evaluation sample of a preprocessed volume: :meth:`InputPipeline.sample`."""
        return self.inputs.sample(prepared)

    def _inputs(self, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(sample["image"])[None].to(self.device)  # (1, C, D, H, W)
        return image, torch.from_numpy(sample["slice_mask"])[None].to(self.device)  # (1, D)

    @torch.no_grad()
    def encode_samples(self, images: torch.Tensor, slice_masks: torch.Tensor) -> torch.Tensor:
        """(B, D) L2-normalised embeddings of a batch of samples of one shape: images (B, C, D, H, W),
        slice masks (B, D); at B = 1 exactly :meth:`encode_volume`."""
        return self.model.encode_image(images.to(self.device), slice_masks.to(self.device)).float().cpu()

    @torch.no_grad()
    def encode_volume(self, volume: VolumeInput, patches: bool = False) -> torch.Tensor | Encoding:
        """(D,) L2-normalised image embedding; with ``patches`` an :class:`Encoding` that adds the tokens."""
        image, slice_mask = self._inputs(self.sample(self.prepare(volume)[1]))
        if not patches:
            return self.encode_samples(image, slice_mask)[0]
        feats = self.model.image_features(image, slice_mask)
        emb = torch.nn.functional.normalize(self.model.image_proj(feats["pooled"]), dim=-1)[0]
        grid = tuple(int(g) for g in feats["grid"])
        return Encoding(embedding=emb.float().cpu(), patches=feats["tokens"][0].reshape(*grid, -1).float().cpu(),
                        patch_mask=feats["token_mask"][0].reshape(grid).cpu())

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) L2-normalised text embeddings."""
        return encode_texts(self.model, _distinct_or_list(texts))

    @torch.no_grad()
    def zero_shot(self, volume: VolumeInput, labels: Sequence[str] | None = None) -> dict[str, float]:
        """{label: probability that the finding is present}; default labels: the checkpoint's."""
        if labels is None and not self.spec.label_names:
            raise InferenceError(self.spec.path, "the checkpoint records no label names: pass the labels")
        labels = _distinct(self.spec.label_names if labels is None else labels, "labels")
        emb = self.encode_volume(volume)
        style = self.spec.prompt_style
        prompts = prompt_set(style, labels, stored=self.model.prompts)  # the mined corpus style travels with the model
        prob = prompt_scorer(self.model, labels, style, prompts)(emb[None])[0]  # (L,), as run_suite
        return {label: float(p) for label, p in zip(labels, prob)}

    @torch.no_grad()
    def segment(self, volume: VolumeInput, prompts: Sequence[str]) -> dict[str, Volume]:
        """{prompt: float32 probability Volume on the input's own grid and affine} (0 outside the field of view)."""
        if self.model.cfg.seg is None:
            raise InferenceError(self.spec.path, f"recipe {self.spec.recipe!r} has no voxel head: zero-shot "
                                                 "segmentation needs one (recipes segvl, uniferum)")
        prompts = _distinct(prompts, "prompts")
        original, prepared = self.prepare(volume)
        source = MemoryVolume.from_prepared(prepared)
        anchors = self.model.encode_anchors(prompts).float()  # (K, E)
        z_count, y_count, x_count = source.shape
        size = self.sampler.size or (y_count, x_count)
        (y0, y1, v0, v1), (x0, x1, u0, u1) = fit_axis(y_count, size[0], None), fit_axis(x_count, size[1], None)
        probs = np.zeros((len(prompts), z_count, y1 - y0, x1 - x0), np.float32)  # (K, Z, y, x) real voxels only
        hu_window = tuple(self.spec.preprocess.hu_window)
        for z0, z1 in volume_windows(z_count, window_depth(self.sampler)):
            sample = window_sample(source, self.sampler, z0, z1, hu_window)
            image, slice_mask = self._inputs(sample)
            voxel_emb = self.model.image_features(image, slice_mask, voxels=True)["voxel_emb"]  # (1, E, D, H, W)
            window = zero_shot_segment(voxel_emb.float(), anchors.to(self.device))[0].cpu().numpy()  # (K, D, H, W)
            probs[:, z0:z1] = window[:, sample["slice_mask"]][:, :, v0:v1, u0:u1]
        affine = inplane_affine(prepared.affine_zyx, y0, x0)
        return {p: Volume(to_grid(probs[k], affine, original.shape, original.affine), original.affine.copy(),
                          meta={"prompt": p, "source": original.path})
                for k, p in enumerate(prompts)}

    @torch.no_grad()
    def generate_report(self, volume: VolumeInput, beam: int = 1, max_new_tokens: int | None = None) -> str:
        """The report decoder's text for ``volume`` (greedy for ``beam=1``, else beam search)."""
        decoder = getattr(self.model, "decoder", None)
        if self.model.cfg.decoder is None or decoder is None:
            raise InferenceError(self.spec.path, f"recipe {self.spec.recipe!r} has no report decoder: report "
                                                 "generation needs one (recipe colipri)")
        if beam < 1:
            raise InferenceError(None, f"beam must be at least 1, got {beam}")
        image, slice_mask = self._inputs(self.sample(self.prepare(volume)[1]))
        feats = self.model.image_features(image, slice_mask)
        special = special_token_ids(self.model.text.tokenizer)
        limit = decoder.cfg.max_length if max_new_tokens is None else int(max_new_tokens)
        seq = decoder.generate(feats["tokens"], feats["token_mask"], special["bos"], special["eos"], limit,
                               num_beams=beam)[0]
        return self.model.text.tokenizer.decode(seq, skip_special_tokens=True).strip()


def _distinct_or_list(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise InferenceError(None, "no texts given: encode at least one")
    return [str(t) for t in texts]
