"""OSL cost benchmark: what COLIPRI's Opposite Sentence Loss adds to a CLIP training step.

    python benchmarks/osl_cost.py [--data CACHE] [--batch 32] [--repeats 5] [--threads 1] [--text trainable frozen]
                                  [--per-slot]

The model is COLIPRI at cohort size (``cohort_variant(get_recipe("colipri"))``, what `ctvlp compare`
trains: the 192-wide, 4-block Primus-like ViT over 4 x 8 x 8 patches, attention pooling for image and
text, packaged MiniLM with attention pooling, embed dim 256, AdamW), on one real batch of the cache
(whole volumes at 32 x 40 in-plane, <= 32 slices, structured reports tokenised to <= 256 tokens, as the
trainer's loader gives them). A training step is what ``Trainer`` does: forward of the groups the
objective reads, the objective, backward, gradient clipping at 1.0, ``optimizer.step()``:

* ``clip``: ``LossConfig(name="clip")``: the model computes only ``pairs``;
* ``clip_osl``: ``LossConfig(name="clip", weights={"osl": 0.5})``: ``pairs`` + ``osl``, with K = 8 pairs
  per image drawn by ``build_osl_pairs`` from the batch's reports and tokenised (``data.text.osl_tensors``:
  the trainer's collate does this in the loader's workers; timed inside the step here, an upper bound); the
  caption term is left out of both (it would only make the ratio smaller);
* ``clip_osl_per_slot`` (``--per-slot``): ``clip_osl`` with the OSL sentences encoded the way
  ``VisionLanguageModel._osl_outputs`` did up to commit a712969: every valid slot through the text tower,
  repeated sentences included (a batch's pairs repeat: a false pair's s+ is another patient's finding);
  it now encodes each distinct sentence once per batch, shortest first in chunks of 16.

The variants alternate within each repeat (one warm-up round first) and medians are reported, so the
shared machine's load hits them alike. Two text-tower configurations, both legitimate:

* ``trainable``: the MiniLM encoder trains (``text.freeze="none"``), as COLIPRI trains it; the goal
  (OSL adds <= 25 % to a CLIP step: ``clip_osl / clip <= 1.25``) is judged on this one;
* ``frozen``: the cohort variant's frozen encoder (``text.freeze="all"``; its attention-pooling head
  still trains, so ``text_frozen`` is False and the sentence memo of ``text_input="sentences"`` does
  not apply: with ``text_input="text"`` the OSL sentences go through the frozen encoder every step).

Measured (2026-11-23, 1 thread, batch 32, 5 repeats, the 2,000-volume demo cache, AMD EPYC 2 cores at load ~1):
442 of the 512 slots valid, 104 distinct sentences (<= 28 tokens) vs reports of 256 tokens.
  trainable: CLIP 10.3 s, CLIP + OSL 12.9 s -> 1.25 (1.252: at the goal, within the noise; paired
             per-repeat ratios 1.11-1.27); per-slot encoding (442 sentences) 27.8 s -> 2.69;
  frozen:    CLIP 5.2 s, CLIP + OSL 6.2 s -> 1.20; per-slot 10.1 s -> 1.95.
Rerun on a quiet machine (trainable only, 5 repeats): CLIP 14.4 s, CLIP + OSL 17.4 s -> 1.21.

Threads: 1 by default (see benchmarks/mae_step.py: on the shared 2-core machine a second torch thread
mostly waits for a core). Results: benchmarks/results/osl_cost-<date>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from machine import median_seconds, save_result

from ctvlp.data.cache import Cache
from ctvlp.data.osl_pairs import build_osl_pairs
from ctvlp.data.text import TextProducts, osl_tensors
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.recipes import get_recipe
from ctvlp.recipes.cohort import cohort_variant
from ctvlp.train.config import LossConfig
from ctvlp.data.loader import set_epoch
from ctvlp.train.data import train_loader
from ctvlp.train.objective import Objective
from ctvlp.train.optim import build_optimizer

GOAL = 1.25
K, OSL_WEIGHT = 8, 0.5
DEFAULT_DATA = Path("demo_out/cache")


def per_slot_osl_outputs(model: VisionLanguageModel, osl: dict) -> dict[str, torch.Tensor]:
    """``_osl_outputs`` as it was up to commit a712969: every valid slot's sentence encoded, repeats included."""
    valid = torch.tensor(osl["valid"], dtype=torch.bool, device=model.logit_scale.device)  # (B, K)
    b, k = valid.shape
    texts = [t for side in ("pos_texts", "neg_texts") for row in osl[side] for t in row]  # 2 B K
    flat = torch.cat((valid.flatten(), valid.flatten()))
    emb = torch.zeros(2 * b * k, model.cfg.embed_dim, device=valid.device)
    if flat.any():
        emb = emb.index_put((flat.nonzero()[:, 0],),
                            model.encode_texts([t for t, v in zip(texts, flat.tolist()) if v]).to(emb.dtype))
    pos, neg = emb.view(2, b, k, -1)
    return {"osl_pos_emb": pos, "osl_neg_emb": neg, "osl_mask": valid,
            "osl_is_true": torch.tensor(osl["is_true"], dtype=torch.bool, device=valid.device)}


def alternate(fns: dict[str, Callable[[int], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each function per repeat, the functions called in turn (one warm-up round)."""
    for fn in fns.values():
        fn(-1)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            times[name].append(median_seconds(lambda: fn(r), 1))
            print(f"  repeat {r}: {name} {times[name][-1]:.2f} s", flush=True)
    return times


def first_batch(cfg, data: Path, batch: int, tokenizer) -> dict:
    data_cfg = dataclasses.replace(cfg.data, batch_size=batch, num_workers=0)
    text = TextProducts(tokenizer, cfg.model.text_input, data_cfg.max_text_tokens, cfg.model.text.max_length)
    loader = train_loader(Cache(data), data_cfg, text, cfg.seed)
    set_epoch(loader, 0, 0)
    return next(iter(loader))


def bench(text: str, data: Path, batch_size: int, repeats: int, per_slot: bool) -> dict:
    cfg = cohort_variant(get_recipe("colipri"))
    freeze = {"trainable": "none", "frozen": "all"}[text]
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, text=dataclasses.replace(cfg.model.text, freeze=freeze)))
    torch.manual_seed(cfg.seed)
    model = VisionLanguageModel(cfg.model).train()
    model.logit_bias.requires_grad_(False)  # the softmax loss has no bias (as the trainer does)
    optimizer = build_optimizer(model, cfg.optim)
    batch = first_batch(cfg, data, batch_size, model.text.tokenizer)
    inputs = {k: batch[k] for k in ("image", "slice_mask", "input_ids", "attention_mask") if k in batch}
    objectives = {"clip": Objective(LossConfig(name="clip")),
                  "clip_osl": Objective(LossConfig(name="clip", weights={"osl": OSL_WEIGHT}))}

    def step(kind: str, r: int, osl_fn=None) -> None:
        objective = objectives[kind]
        extra, pairs = {}, None
        if "osl" in objective.outputs:  # the collate's work (data.text.TextProducts), timed inside the step here
            rng = np.random.default_rng([cfg.seed, r + 1, 0])
            pairs = build_osl_pairs(batch["text"], K, rng)
            extra = osl_tensors(pairs, model.text.tokenizer, model.text.cfg.max_length)
        if osl_fn is not None:
            model._osl_outputs = lambda **_: osl_fn(model, pairs._asdict())  # instance attribute shadows the method
        try:
            out = model(**inputs, **extra, outputs=objective.outputs)
        finally:
            model.__dict__.pop("_osl_outputs", None)
        parts = objective(**out)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    fns = {"clip": lambda r: step("clip", r), "clip_osl": lambda r: step("clip_osl", r)}
    if per_slot:
        fns["clip_osl_per_slot"] = lambda r: step("clip_osl", r, per_slot_osl_outputs)
    print(f"text tower {text}: {len(fns)} variants x ({repeats} + 1 warm-up) steps", flush=True)
    times = alternate(fns, repeats)
    med = {name: statistics.median(t) for name, t in times.items()}

    # what the OSL sentences are: slots, valid slots, distinct sentences, tokens
    pairs = [build_osl_pairs(batch["text"], K, np.random.default_rng([cfg.seed, r + 1, 0])) for r in range(repeats)]
    valid = [[t for side in (p.pos_texts, p.neg_texts) for row, ok in zip(side, p.valid) for t, v in zip(row, ok) if v]
             for p in pairs]
    lengths = [model.text.tokenize(v)["attention_mask"].shape[1] for v in valid]
    start = time.perf_counter()
    for r in range(repeats):
        build_osl_pairs(batch["text"], K, np.random.default_rng([cfg.seed, r + 1, 0]))
    build_seconds = (time.perf_counter() - start) / repeats
    row = {"text_tower": text, "text_freeze": freeze, "batch": batch_size,
           "image_shape": list(batch["image"].shape), "report_tokens_shape": list(batch["input_ids"].shape),
           "report_tokens_real_mean": float(batch["attention_mask"].sum(1).float().mean()),
           "osl_slots": 2 * batch_size * K,
           "osl_valid_sentences_median": statistics.median(len(v) for v in valid),
           "osl_distinct_sentences_median": statistics.median(len(set(v)) for v in valid),
           "osl_padded_length_median": statistics.median(lengths),
           "build_osl_pairs_seconds": build_seconds,
           "text_parameters_trainable": sum(p.numel() for p in model.text.parameters() if p.requires_grad),
           "parameters": sum(p.numel() for p in model.parameters()),
           **{f"{k}_seconds": v for k, v in med.items()},
           "ratio": med["clip_osl"] / med["clip"], "all_seconds": times}
    if per_slot:
        row["ratio_per_slot"] = med["clip_osl_per_slot"] / med["clip"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a prepared cache with reports (default: the one `make demo` writes)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--text", nargs="+", default=["trainable", "frozen"], choices=["trainable", "frozen"])
    parser.add_argument("--per-slot", action="store_true", help="also time the per-slot OSL encoding (up to a712969)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, batch {args.batch}, data {args.data}")
    rows = [bench(text, args.data, args.batch, args.repeats, args.per_slot) for text in args.text]
    print(f"{'text tower':10} {'clip s':>7} {'+osl s':>7} {'ratio':>6} {'per-slot s':>10} {'ratio':>6} "
          f"{'valid':>5} {'distinct':>8}")
    for r in rows:
        slot = (f"{r['clip_osl_per_slot_seconds']:>10.2f} {r['ratio_per_slot']:>6.2f}" if "ratio_per_slot" in r
                else f"{'-':>10} {'-':>6}")
        print(f"{r['text_tower']:10} {r['clip_seconds']:>7.2f} {r['clip_osl_seconds']:>7.2f} {r['ratio']:>6.2f} {slot} "
              f"{r['osl_valid_sentences_median']:>5} {r['osl_distinct_sentences_median']:>8}")
    judged = next((r for r in rows if r["text_tower"] == "trainable"), None)
    if judged is not None:
        print(f"goal: clip_osl / clip <= {GOAL} on the trainable text tower: {judged['ratio']:.2f} -> "
              f"{'met' if judged['ratio'] <= GOAL else 'missed'}")
    save_result("osl_cost", {"goal": GOAL, "goal_judged_on": "trainable", "recipe": "cohort_variant(colipri)",
                             "k": K, "osl_weight": OSL_WEIGHT, "data": str(args.data), "repeats": args.repeats,
                             "goal_met": None if judged is None else judged["ratio"] <= GOAL, "rows": rows})


if __name__ == "__main__":
    main()
