"""The typed configuration of training: model, data, objective, optimiser, schedule, checkpoints.

How the trained model is evaluated is ``ctvlp.eval.config.EvalConfig``, a sibling that this layer does not
import: a run's complete config, the one recipes return and checkpoints save, is
:class:`ctvlp.recipes.run.RunConfig`, a :class:`TrainConfig` with an ``eval`` field, composed above both."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.sampling import SamplerConfig
from ctvlp.losses.registry import CONTRASTIVE, LOSS_NAMES, loss_class
from ctvlp.models.vlp import ModelConfig
from ctvlp.train.optim import OptimConfig


@dataclass
class DataConfig:
    """What a training step reads from the cache."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    """How the cache must have been prepared (spacing, HU window, body crop): `ctvlp prepare --recipe NAME`
    makes it, and `ctvlp train` refuses a cache prepared otherwise before loading any weights."""
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
    osl_pairs: int = 8
    """K sentence pairs per image for the Opposite Sentence Loss, drawn from each batch's reports
    (``ctvlp.data.osl_pairs``; ceil(K/2) true, floor(K/2) false)."""
    max_bad_samples: int = 10
    """Cached training volumes whose files are missing or damaged (found before step 1 from their headers
    and sizes, the same on every process) that are left out and listed in OUT/bad_samples.csv; more stop
    the run with an error naming them."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.num_workers < 0 or self.pool_batches < 1 or self.max_text_tokens < 8 \
                or self.osl_pairs < 1 or self.max_bad_samples < 0:
            raise ValueError("batch_size, pool_batches, osl_pairs >= 1, num_workers, max_bad_samples >= 0, "
                             "max_text_tokens >= 8")


@dataclass
class LossConfig:
    """An objective: a main term plus weighted extra terms, each a loss of ``ctvlp.losses``."""

    name: str = "siglip"
    """Main term, a name of ``ctvlp.losses.registry.LOSSES``: ``siglip`` pairwise sigmoid, ``clip``
    symmetric InfoNCE, ``sentence_sigmoid`` images against the batch's distinct report sentences, ``swca``
    SCALE-VLP; the objectives of other kinds of step (``TrainConfig.tasks``) may have a non-contrastive main
    term (``tversky``, ``mae``, ...)."""
    weights: dict[str, float] = field(default_factory=dict)
    """Term weights, e.g. ``{sentence_sigmoid: 1.0}`` (names from ``ctvlp.losses.registry.LOSSES``); the
    main term has weight 1 unless listed here (SegVL's mask steps: ``{tversky: 0.75}``)."""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Keyword arguments of a term's loss module, e.g. ``{swca: {alpha: 0.3, variant: soft_targets}}``."""
    gather: bool = True
    """Under torch.distributed, score local samples against every process's (all-gather with gradients)."""

    def __post_init__(self) -> None:
        if self.name not in LOSS_NAMES:
            raise ValueError(f"loss.name must be one of {', '.join(LOSS_NAMES)}; got {self.name!r}")
        for term, weight in self.weights.items():
            if term not in LOSS_NAMES:
                raise ValueError(f"loss.weights: unknown term {term!r}; terms: {', '.join(LOSS_NAMES)}")
            if weight < 0:
                raise ValueError(f"loss.weights.{term} must be >= 0, got {weight}")
        if not self.terms:
            raise ValueError(f"loss: every term has weight 0 ({self.name!r} included)")
        for term in self.options:
            if term not in self.terms:
                raise ValueError(f"loss.options: {term!r} is not a term of this objective ({', '.join(self.terms)})")

    @property
    def terms(self) -> dict[str, float]:
        """Every term with a positive weight, the main one first."""
        weights = {self.name: 1.0, **self.weights}
        return {k: v for k, v in weights.items() if v > 0}


@dataclass
class StageConfig:
    """A stretch of training with its own cycle of step kinds (SegVL: stage 1 image-report steps only,
    stage 2 one update of L_IT + 0.75 L_VM per step, ``together``; COLIPRI: alternating image-report
    and MAE steps)."""

    fraction: float = 0.0
    """Share of ``TrainConfig.steps`` in this stage (so ``--steps`` scales every stage); 0 (allowed for
    the last stage only): until the end."""
    cycle: tuple[str, ...] = ("pairs",)
    """Step kinds taken in turn: ``pairs`` is the image-report objective ``TrainConfig.loss``, any other
    name a key of ``TrainConfig.tasks``; ``(pairs, masks)`` alternates one step of each."""
    frozen: tuple[str, ...] = ()
    """Parameter-name prefixes that do not train in this stage (``seg.``: SegVL's heads in stage 1)."""
    together: bool = False
    """False: the cycle's kinds take whole optimiser steps in turn (COLIPRI's 1:1 image-report / MAE
    alternation). True: every optimiser step takes one micro-batch of each kind of the cycle and
    back-propagates the sum of their (weighted) objectives, one update (SegVL's stage 2: L_IT + 0.75
    L_VM from one image-report and one image-mask micro-batch); ``grad_accum`` repeats that."""

    def __post_init__(self) -> None:
        self.cycle, self.frozen = tuple(self.cycle), tuple(self.frozen)
        if not 0.0 <= self.fraction <= 1.0 or not self.cycle:
            raise ValueError(f"a stage needs 0 <= fraction <= 1 and a non-empty cycle; got {self.fraction}, {self.cycle}")
        if self.together and len(set(self.cycle)) != len(self.cycle):
            raise ValueError(f"a stage with together=true sums each kind of its cycle once; got {self.cycle}")


@dataclass
class TrainConfig:
    """One training run: model, data, objective, optimiser, schedule, checkpoints (a run's evaluation settings
    are :class:`ctvlp.recipes.run.RunConfig`'s)."""

    recipe: str = "custom"
    """Name of the recipe this config came from."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    """The image-report objective (the ``pairs`` steps)."""
    tasks: dict[str, LossConfig] = field(default_factory=dict)
    """Objectives of other kinds of step by name, e.g. ``{masks: {name: tversky, weights: {tversky: 0.75}},
    mae: {name: mae}}``; ``stages`` say when each runs."""
    stages: tuple[StageConfig, ...] = ()
    """Stages in order (none: every step is a ``pairs`` step)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
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
        samplers = self.input_samplers()
        channels = {"model.vision.in_chans": self.model.vision.in_chans,
                    **{f"{path}.windows": sampler.channels for path, sampler in samplers.items()}}
        inputs = [(s.windows, s.body_channel) for s in samplers.values()]
        if len(set(channels.values())) > 1 or any(i != inputs[0] for i in inputs):
            raise ValueError(f"input channels disagree: {channels} (one channel per HU window, plus the body "
                             f"mask with body_channel; train and eval samplers need the same windows and "
                             f"body_channel)")
        if self.loss.name not in CONTRASTIVE:
            raise ValueError(f"loss.name (the image-report objective) must be one of {', '.join(CONTRASTIVE)}; "
                             f"got {self.loss.name!r} (other objectives go in tasks)")
        for i, stage in enumerate(self.stages):
            unknown = [k for k in stage.cycle if k != "pairs" and k not in self.tasks]
            if unknown:
                raise ValueError(f"stages[{i}].cycle names {unknown}, which are not in tasks ({', '.join(self.tasks)})")
            if stage.fraction == 0 and i != len(self.stages) - 1:
                raise ValueError(f"stages[{i}]: fraction 0 (until the end) is only allowed for the last stage")
        if sum(stage.fraction for stage in self.stages) > 1.0 + 1e-9:
            raise ValueError("stages: the fractions add up to more than 1")
        if "pairs" in self.tasks:
            raise ValueError("tasks: 'pairs' is the name of the image-report objective (loss)")
        for term in self.all_terms:
            if loss_class(term).text_input not in (None, self.model.text_input):
                raise ValueError(f"the {term} loss needs model.text_input={loss_class(term).text_input!r}")

    def input_samplers(self) -> dict[str, SamplerConfig]:
        """Config path -> every sampler that feeds the model, which must agree on its input channels (HU
        windows, body channel) with ``model.vision.in_chans``: training's (a run config adds evaluation's)."""
        return {"data.sampler": self.data.sampler}

    def prompt_corpus(self) -> str | None:
        """The split whose reports the model's ``corpus`` prompt style is mined from when training starts (the
        checkpoints carry it: ``ctvlp.data.prompts``), or None to mine none. Training alone mines none; a run
        config answers from its evaluation settings (``eval.prompt_style``, ``eval.corpus_split``)."""
        return None

    @property
    def objectives(self) -> dict[str, LossConfig]:
        """Every step kind's objective: ``pairs`` (``loss``) and ``tasks``."""
        return {"pairs": self.loss, **self.tasks}

    @property
    def all_terms(self) -> list[str]:
        """Every loss term some step uses, in first-use order."""
        return list(dict.fromkeys(t for objective in self.objectives.values() for t in objective.terms))

    def kinds_at(self, step: int) -> tuple[tuple[str, ...], StageConfig | None]:
        """The kinds of objective whose sum step ``step`` (0-based) back-propagates, and its stage: the
        whole cycle in a ``together`` stage, else the one kind :meth:`task_at` names."""
        kind, stage = self.task_at(step)
        return (stage.cycle if stage is not None and stage.together else (kind,)), stage

    def task_at(self, step: int) -> tuple[str, StageConfig | None]:
        """The kind of step ``step`` (0-based) and its stage (alternating stages; see :meth:`kinds_at`)."""
        start, share = 0, 0.0
        for stage in self.stages:
            share += stage.fraction
            end = round(share * self.steps)
            if stage.fraction == 0 or step < end:
                return stage.cycle[(step - start) % len(stage.cycle)], stage
            start = end
        return "pairs", None
