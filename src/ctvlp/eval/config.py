"""The typed configuration of a model's evaluation: ``RunConfig.eval`` of a run, what ``ctvlp eval`` reads
from a checkpoint (with its overrides), and the ``cfg`` every evaluation function here takes.

The eval layer owns it (issue 18's target: ``EvalConfig`` in ``eval/``). Of ctvlp it imports only
``data.sampling`` and ``eval.names``; training's config does not import it: the run config that composes both
(a run's saved config carries how its model is evaluated) is ``ctvlp.recipes.run.RunConfig``, a layer above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.names import EVAL_TASKS


@dataclass
class EvalConfig:
    """Zero-shot classification and retrieval on held-out splits."""

    val_split: str = "valid"
    """Split whose scores choose each label's F1 threshold."""
    test_split: str = "test"
    """Split the numbers are reported on (never used to choose anything)."""
    prompt_style: str = "ctclip"
    """Prompt templates from ``ctvlp/data/resources/prompts.yaml`` (e.g. ``ctclip``, ``colipri``, ``ensemble``),
    or ``corpus``: the sentences of ``corpus_split``'s reports that state one label (``ctvlp.data.prompts``)."""
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
