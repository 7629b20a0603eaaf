"""The complete, typed configuration of a training run. Recipes (``ctvlp.recipes``) return one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.names import EVAL_TASKS
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


LOSS_NAMES = ("siglip", "clip", "sentence_sigmoid", "swca", "tversky", "masked_bce", "osl", "caption", "mae")
"""Terms a :class:`LossConfig` can name (``ctvlp.train.objective.LOSSES`` maps them to ``ctvlp.losses``)."""


CONTRASTIVE = ("siglip", "clip", "sentence_sigmoid", "swca")
"""Image-text terms; one of them is the main term of the image-report objective (``TrainConfig.loss``)."""


@dataclass
class LossConfig:
    """An objective: a main term plus weighted extra terms, each a loss of ``ctvlp.losses``."""

    name: Literal["siglip", "clip", "sentence_sigmoid", "swca", "tversky", "masked_bce", "osl", "caption",
                  "mae"] = "siglip"
    """Main term: ``siglip`` pairwise sigmoid, ``clip`` symmetric InfoNCE, ``sentence_sigmoid`` images
    against the batch's distinct report sentences, ``swca`` SCALE-VLP; the objectives of other kinds of
    step (``TrainConfig.tasks``) may have a non-contrastive main term (``tversky``, ``mae``, ...)."""
    weights: dict[str, float] = field(default_factory=dict)
    """Term weights, e.g. ``{sentence_sigmoid: 1.0}`` (names from ``LOSS_NAMES``); the main term has
    weight 1 unless listed here (SegVL's mask steps: ``{tversky: 0.75}``)."""
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
class EvalConfig:
    """Zero-shot classification and retrieval on held-out splits."""

    val_split: str = "valid"
    """Split whose scores choose each label's F1 threshold."""
    test_split: str = "test"
    """Split the numbers are reported on (never used to choose anything)."""
    prompt_style: str = "ctclip"
    """Prompt templates from ``ctvlp/data/resources/prompts.yaml`` (e.g. ``ctclip``, ``colipri``, ``ensemble``),
    or ``corpus``: the sentences of ``corpus_split``'s reports that state one label (``ctvlp.eval.prompts``)."""
    corpus_split: str = "train"
    """Split whose reports the ``corpus`` prompt style is mined from (the training split: prompts mined from
    the test split's reports would have read the reports the numbers are scored against)."""
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(mode="whole", text="report"))
    """How an evaluation volume is read (whole volume, report text)."""
    batch_size: int = 4
    """Volumes per encoder forward."""
    tasks: tuple[str, ...] = ()
    """Evaluations besides zero-shot classification and retrieval: ``organs`` (zero-shot organ
    classification of z-chunks, SigVLP), ``segmentation`` (zero-shot Dice of the mask-name anchors,
    SegVL/Uniferum), ``generation`` (greedy report generation: BLEU, ROUGE-L, label F1; COLIPRI),
    ``robustness`` (every metric again on n centred slices padded to D, ``ctvlp.eval.robustness``),
    ``seg_probe`` (a light voxel head trained on the frozen tokens, ``ctvlp.eval.seg_probe``),
    ``real_masks`` (zero-shot segmentation, and the probe with ``seg_probe``, on the real CTs of
    ``real_dir``, ``ctvlp.eval.real_masks``), ``generation_probe`` (a report decoder trained on the frozen
    vision tokens, then scored as ``generation``; SCALE-VLP, ``ctvlp.eval.generation_probe``)."""
    task_volumes: int = 200
    """Test volumes the per-volume tasks (segmentation, generation) use, the first in index order."""
    organ_chunk_depth: int = 8
    """Slices per chunk of the ``organs`` task (thresholds on ``val_split`` as for abnormalities)."""
    segmentation_hd95: bool = True
    """``segmentation``, ``seg_probe``, ``real_masks``: also the 95th-percentile Hausdorff distance (mm;
    MONAI, about as costly again as the Dice scoring: ~0.5 s per structure of a 120 x 256 x 256 volume)."""
    probe_steps: int = 200
    """``seg_probe``: optimiser steps of the probe head on ``probe_split``'s masks (the model frozen)."""
    probe_hidden: int = 64
    """``seg_probe``: hidden width of the per-token one-hidden-layer head (``models.voxel_head.VoxelHead``)."""
    probe_lr: float = 1e-3
    """``seg_probe``: AdamW learning rate of the probe head."""
    probe_batch_size: int = 2
    """``seg_probe``: samples (the eval sampler's) per probe step."""
    probe_split: str = "train"
    """``seg_probe``: split whose masks train the probe (scored on ``test_split``); ``robustness``: split the
    linear probe is fitted on."""
    gen_probe_steps: int = 1000
    """``generation_probe``: AdamW steps of the report decoder on ``probe_split``'s reports (the model frozen)."""
    gen_probe_lr: float = 3e-4
    """``generation_probe``: the decoder's learning rate (cosine decay to 0, no warm-up)."""
    gen_probe_batch_size: int = 8
    """``generation_probe``: volumes (the eval sampler's) per decoder step."""
    gen_probe_width: int = 512
    """``generation_probe``: the decoder's width (``models.decoder.DecoderConfig``; depth 4, heads 8 as COLIPRI's)."""
    gen_probe_depth: int = 4
    """``generation_probe``: decoder blocks."""
    gen_probe_max_length: int = 256
    """``generation_probe``: report tokens the decoder trains on and generates at most (bos included)."""
    real_dir: str = ""
    """``real_masks``: folder of the real CTs and their masks, laid out as ``tests/data/real`` of a ctvlp checkout
    (its README names the files); the task refuses to run while it is unset."""
    overlays: int = 0
    """``segmentation``, ``seg_probe``: draw the first this many test volumes as overlay figures (base64 PNGs
    in the task's ``overlays``; ``real_masks``: every case when > 0). ``ctvlp eval`` sets it for its report;
    0 keeps a training run's metrics.json small."""
    robustness_counts: tuple[int, ...] = (0, 64, 32, 16, 4, 1)
    """``robustness``: slice counts n, each the n centred slices of a volume (0: all slices the sampler keeps)."""
    robustness_paddings: tuple[str, ...] = ("repeat", "zero")
    """``robustness``: depth paddings to compare (``SamplerConfig.padding``)."""
    robustness_probe: bool = True
    """``robustness``: also a linear probe per cell -- logistic regressions fitted once on the whole volumes of
    ``probe_split`` (C on ``val_split``), scored on each cell's test embeddings."""
    robustness_depth: int | None = None
    """``robustness``: D, the depth n slices are padded up to: the depth the model trained on (a
    chunk-sampled recipe sets its ``chunk_depth``); None: the smallest depth the vision tower takes
    (the ViT's z patch, the ResNet's z stride)."""

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        self.robustness_counts = tuple(int(n) for n in self.robustness_counts)
        self.robustness_paddings = tuple(self.robustness_paddings)
        if not self.robustness_counts or min(self.robustness_counts) < 0 \
                or len(set(self.robustness_counts)) != len(self.robustness_counts):
            raise ValueError(f"eval.robustness_counts must be distinct slice counts >= 1 (0: all), "
                             f"got {self.robustness_counts}")
        if not self.robustness_paddings or not set(self.robustness_paddings) <= {"repeat", "zero"}:
            raise ValueError(f"eval.robustness_paddings must be 'repeat' and/or 'zero', got {self.robustness_paddings}")
        if self.probe_steps < 1 or self.probe_hidden < 1 or self.probe_batch_size < 1 or not self.probe_lr > 0:
            raise ValueError("eval.probe_steps, probe_hidden, probe_batch_size must be >= 1 and probe_lr > 0")
        if self.robustness_depth is not None and self.robustness_depth < 1:
            raise ValueError(f"eval.robustness_depth must be >= 1 (None: the tower's smallest depth), "
                             f"got {self.robustness_depth}")
        unknown = set(self.tasks) - set(EVAL_TASKS)
        if unknown:
            raise ValueError(f"eval.tasks: unknown {sorted(unknown)}; tasks: {', '.join(EVAL_TASKS)}")
        if min(self.gen_probe_steps, self.gen_probe_batch_size, self.gen_probe_width, self.gen_probe_depth,
               self.gen_probe_max_length) < 1 or not self.gen_probe_lr > 0 or self.gen_probe_width % 8:
            raise ValueError("eval.gen_probe_steps, gen_probe_batch_size, gen_probe_depth, gen_probe_max_length must "
                             "be >= 1, gen_probe_width a positive multiple of 8 (its heads) and gen_probe_lr > 0")
        if self.organ_chunk_depth < 1 or self.task_volumes < 1:
            raise ValueError("eval.organ_chunk_depth and eval.task_volumes must be >= 1")


@dataclass
class TrainConfig:
    """One training run: model, data, objective, optimiser, schedule, checkpoints, evaluation."""

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
        inputs = [(s.windows, s.body_channel) for s in (self.data.sampler, self.eval.sampler)]
        if len(set(channels.values())) > 1 or inputs[0] != inputs[1]:
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
        if "sentence_sigmoid" in self.all_terms and self.model.text_input != "sentences":
            raise ValueError("the sentence_sigmoid loss needs model.text_input='sentences'")

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
