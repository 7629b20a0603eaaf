"""The complete, typed configuration of a training run. Recipes (``ctvlp.recipes``) return one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ctvlp.data.sampling import SamplerConfig
from ctvlp.models.vlp import ModelConfig
from ctvlp.train.optim import OptimConfig


@dataclass
class DataConfig:
    """What a training step reads from the cache."""

    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """How a sample is drawn (whole volume or z-chunk, padding, in-plane size, text)."""
    batch_size: int = 16
    """Samples per step per process (before gradient accumulation)."""
    num_workers: int = 2
    """DataLoader worker processes (0: load in the training process)."""
    pool_batches: int = 4
    """Length bucketing: batches are cut from pools of this many batches of similar depth."""
    train_split: str = "train"
    """Split of the cache index the model trains on."""
    max_text_tokens: int = 128
    """Token budget of a sample's text (longer texts are truncated)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.num_workers < 0 or self.pool_batches < 1 or self.max_text_tokens < 8:
            raise ValueError("batch_size, pool_batches >= 1, num_workers >= 0, max_text_tokens >= 8")


LOSS_NAMES = ("siglip", "clip", "sentence_sigmoid", "swca", "tversky", "masked_bce", "osl", "caption", "mae")
"""Terms a :class:`LossConfig` can name (``ctvlp.train.objective.LOSSES`` maps them to ``ctvlp.losses``)."""


@dataclass
class LossConfig:
    """The objective: a main term plus weighted extra terms, each a loss of ``ctvlp.losses``."""

    name: Literal["siglip", "clip", "sentence_sigmoid", "swca"] = "siglip"
    """Main (contrastive) term, weight 1: ``siglip`` pairwise sigmoid, ``clip`` symmetric InfoNCE,
    ``sentence_sigmoid`` images against the batch's distinct report sentences, ``swca`` SCALE-VLP."""
    weights: dict[str, float] = field(default_factory=dict)
    """Extra terms and their weights, e.g. ``{sentence_sigmoid: 1.0}`` (names from ``LOSS_NAMES``)."""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Keyword arguments of a term's loss module, e.g. ``{swca: {alpha: 0.3, variant: soft_targets}}``."""
    gather: bool = True
    """Under torch.distributed, score local samples against every process's (all-gather with gradients)."""

    def __post_init__(self) -> None:
        if self.name not in ("siglip", "clip", "sentence_sigmoid", "swca"):
            raise ValueError(f"loss.name must be 'siglip', 'clip', 'sentence_sigmoid' or 'swca', got {self.name!r}")
        for term, weight in self.weights.items():
            if term not in LOSS_NAMES:
                raise ValueError(f"loss.weights: unknown term {term!r}; terms: {', '.join(LOSS_NAMES)}")
            if term == self.name:
                raise ValueError(f"loss.weights: {term!r} is already the main term (weight 1)")
            if weight < 0:
                raise ValueError(f"loss.weights.{term} must be >= 0, got {weight}")
        for term in self.options:
            if term not in self.terms:
                raise ValueError(f"loss.options: {term!r} is not a term of this objective ({', '.join(self.terms)})")

    @property
    def terms(self) -> dict[str, float]:
        """Every term with a positive weight, the main one first."""
        return {self.name: 1.0, **{k: v for k, v in self.weights.items() if v > 0}}


@dataclass
class EvalConfig:
    """Zero-shot classification and retrieval on held-out splits."""

    val_split: str = "valid"
    """Split whose scores choose each label's F1 threshold."""
    test_split: str = "test"
    """Split the numbers are reported on (never used to choose anything)."""
    prompt_style: str = "ctclip"
    """Prompt templates from ``ctvlp/data/resources/prompts.yaml`` (e.g. ``ctclip``, ``colipri``, ``ensemble``)."""
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(mode="whole", text="report"))
    """How an evaluation volume is read (whole volume, report text)."""
    batch_size: int = 4
    """Volumes per encoder forward."""
    every: int = 0
    """Evaluate every this many steps during training (0: only at the end)."""


@dataclass
class TrainConfig:
    """One training run: model, data, objective, optimiser, schedule, checkpoints, evaluation."""

    recipe: str = "custom"
    """Name of the recipe this config came from."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    steps: int = 1000
    """Optimiser steps."""
    grad_accum: int = 1
    """Batches whose gradients are summed before each optimiser step."""
    seed: int = 0
    """Seeds the model's initialisation, the batch order and every sample's randomness."""
    log_every: int = 10
    """Steps between lines of metrics.jsonl / TensorBoard points."""
    ckpt_every: int = 200
    """Steps between checkpoints (the last step is always saved)."""
    keep_last: int = 2
    """Checkpoints kept on disk (older ones are deleted)."""
    max_bad_steps: int = 10
    """Steps with a NaN/inf loss that are skipped before training stops with an error."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """``auto``: bf16 autocast on CUDA, fp32 on the CPU."""
    max_minutes: float = 0.0
    """Wall-clock budget: stop (and save) after the first step that ends past it; 0: no limit. The
    schedule still spans ``steps``: set ``steps`` to what fits (``ctvlp compare`` measures it)."""
    grad_checkpointing: bool = False
    """Recompute the vision tower's blocks in the backward pass (less memory, ~30 % more compute)."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.grad_accum < 1 or self.log_every < 1 or self.ckpt_every < 1 or self.keep_last < 1:
            raise ValueError("steps, grad_accum, log_every, ckpt_every and keep_last must be >= 1")
        if self.max_bad_steps < 0 or self.max_minutes < 0:
            raise ValueError("max_bad_steps and max_minutes must be >= 0")
        channels = {"model.vision.in_chans": self.model.vision.in_chans, "data.sampler.windows":
                    self.data.sampler.channels, "eval.sampler.windows": self.eval.sampler.channels}
        if len(set(channels.values())) > 1 or self.data.sampler.windows != self.eval.sampler.windows:
            raise ValueError(f"input channels disagree: {channels} (one channel per HU window; train and eval "
                             f"samplers need the same windows)")
        if "sentence_sigmoid" in self.loss.terms and self.model.text_input != "sentences":
            raise ValueError("the sentence_sigmoid loss needs model.text_input='sentences'")
