"""The complete, typed configuration of a training run. Recipes (``ctvlp.recipes``) return one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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


@dataclass
class LossConfig:
    """The contrastive objective."""

    name: Literal["siglip", "clip"] = "siglip"
    """``siglip``: pairwise sigmoid loss; ``clip``: symmetric InfoNCE."""
    gather: bool = True
    """Under torch.distributed, score local samples against every process's (all-gather with gradients)."""


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
    grad_checkpointing: bool = False
    """Recompute the vision tower's blocks in the backward pass (less memory, ~30 % more compute)."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.grad_accum < 1 or self.log_every < 1 or self.ckpt_every < 1 or self.keep_last < 1:
            raise ValueError("steps, grad_accum, log_every, ckpt_every and keep_last must be >= 1")
        if self.max_bad_steps < 0:
            raise ValueError("max_bad_steps must be >= 0")
