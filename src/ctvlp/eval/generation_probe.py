"""Report generation from a decoder trained on the frozen encoder (SCALE-VLP's report-generation transfer).

SCALE-VLP reports ROUGE-L 0.44 and BERT-F1 0.89 on CT-RATE from a report decoder put on its pre-trained,
frozen encoder; the paper's abstract and reviews do not describe that decoder, so ours is ctvlp's own
:class:`ctvlp.models.decoder.ReportDecoder` (COLIPRI's: causal transformer cross-attending to the
vision tokens), trained here from a random initialisation while the model stays frozen.

Decoder. ``DecoderConfig(width=gen_probe_width, depth=gen_probe_depth, heads=8,
max_length=gen_probe_max_length)``, vocabulary the model's text tokenizer, memory the vision tower's
tokens (B, N, C) with their ``token_mask`` (:meth:`VisionLanguageModel.image_features`, computed
without gradients in eval mode).

Training. ``gen_probe_steps`` AdamW steps (lr ``gen_probe_lr``, cosine decay to 0, weight decay 0.01,
gradient norm clipped at 1) on batches of ``gen_probe_batch_size`` volumes of ``probe_split`` drawn
by the evaluation sampler (no random crop, fresh draws per step seeded by (step, index); samples in a
seeded random order, reshuffled each pass). Target: the volume's report as the model trained on it
(:func:`ctvlp.data.sampling.report_text`), tokenised by the text tower's tokenizer ([CLS] report
[SEP], truncated to ``gen_probe_max_length`` tokens); loss :func:`ctvlp.losses.caption.caption_loss`
(token cross-entropy over the real next tokens).

Scoring. Exactly the ``generation`` task (:func:`ctvlp.eval.generation.evaluate_generation`, greedy) with
this decoder: BLEU-1..4, ROUGE-L (rouge-score), BERTScore F1 (bert-score with the packaged MiniLM layer 6:
the number is not comparable to the paper's, whose scorer model is not stated; bert-score's English
default is roberta-large), METEOR, label F1, on ``test_split``'s first ``task_volumes`` volumes.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from ctvlp.data.loader import Collate, split_dataset
from ctvlp.data.sampling import report_text
from ctvlp.eval.config import EvalConfig
from ctvlp.eval.generation import evaluate_generation
from ctvlp.eval.probe import shuffled_batches
from ctvlp.losses.caption import caption_loss
from ctvlp.models.decoder import DecoderConfig, ReportDecoder, next_token_targets, special_token_ids

HEADS = 8
"""Attention heads of the probe decoder (``gen_probe_width`` is a multiple of it)."""


def probe_decoder_config(model, cfg: EvalConfig) -> DecoderConfig:
    """The decoder of the module docstring for ``model`` (its tokenizer's vocabulary, its tower's width)."""
    return DecoderConfig(vocab_size=len(model.text.tokenizer), width=cfg.gen_probe_width, depth=cfg.gen_probe_depth,
                         heads=HEADS, max_length=cfg.gen_probe_max_length, memory_width=model.vision.width)


def _tokens(tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([CLS] text [SEP] ids (B, L) right-padded, attention mask (B, L)), at most ``max_length`` tokens."""
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@torch.enable_grad()  # callers may run under no_grad
def train_decoder(model, cache, cfg: EvalConfig, device: torch.device | str = "cpu", seed: int = 0
                  ) -> tuple[ReportDecoder, dict]:
    """Train the probe decoder on ``cfg.probe_split`` (decoder in eval mode,
    training record: ``steps``, ``lr``, ``batch_size``, ``parameters``, ``split``, ``train_volumes``,
    ``loss_first``, ``loss_last``, ``seconds``)."""
    device = torch.device(device)
    start = time.perf_counter()
    sampler = dataclasses.replace(cfg.sampler, random_crop=False, include_masks=False, mask_names=None)
    dataset = split_dataset(cache, sampler, cfg.probe_split, seed=seed)
    collate = Collate.for_dataset(dataset)
    index = dataset.index
    texts = [report_text(f, i, sampler.text) for f, i in zip(index["findings"], index["impressions"])]
    tokenizer = model.text.tokenizer
    special_token_ids(tokenizer)  # a clear error for a tokenizer without [CLS]/[SEP]/[PAD]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = ReportDecoder(probe_decoder_config(model, cfg))
    decoder = decoder.to(device).train()
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=cfg.gen_probe_lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.gen_probe_steps) / cfg.gen_probe_steps)))
    batches = shuffled_batches(len(dataset), cfg.gen_probe_batch_size, seed)
    losses = []
    was_training = model.training
    model.eval()
    try:
        for step in range(cfg.gen_probe_steps):
            rows = next(batches)
            batch = collate([dataset[(step, i)] for i in rows])
            with torch.no_grad():
                feats = model.image_features(batch["image"].to(device), batch["slice_mask"].to(device))
            ids, mask = _tokens(tokenizer, [texts[i] for i in rows], cfg.gen_probe_max_length)
            ids, mask = ids.to(device), mask.to(device)  # (B, L)
            logits = decoder(ids, feats["tokens"].float(), feats["token_mask"], mask)  # (B, L, V)
            loss = caption_loss(logits, next_token_targets(ids, mask))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
    finally:
        model.train(was_training)
    decoder.eval()
    info = {"steps": cfg.gen_probe_steps, "lr": cfg.gen_probe_lr, "batch_size": cfg.gen_probe_batch_size,
            "width": cfg.gen_probe_width, "depth": cfg.gen_probe_depth, "max_length": cfg.gen_probe_max_length,
            "parameters": sum(p.numel() for p in decoder.parameters()), "split": cfg.probe_split,
            "train_volumes": len(dataset), "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None, "seconds": time.perf_counter() - start}
    return decoder, info


def evaluate_generation_probe(model, cache, cfg: EvalConfig, device: torch.device | str = "cpu") -> dict:
    """Train the probe decoder (:func:`train_decoder`) and score its greedy reports on ``cfg.test_split``
    as the ``generation`` task does; its metrics plus ``decoder`` (the training record) and ``rule``."""
    decoder, info = train_decoder(model, cache, cfg, device)
    metrics = evaluate_generation(model, cache, cfg.sampler, cfg.test_split, device, max_volumes=cfg.task_volumes,
                                  batch_size=cfg.batch_size, decoder=decoder)
    return {**metrics, "decoder": info,
            "rule": "a ReportDecoder trained from scratch on the frozen vision tokens of probe_split's reports, "
                    "then greedy reports scored as the generation task"}
