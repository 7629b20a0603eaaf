"""A batch's text as tensors: everything the model and the losses need from report text, made once, in
the collate (the loader's workers), so that the model's forward never parses or tokenises a report.

- :func:`text_tokens`: a sample's whole text, tokenised (``input_ids``, ``attention_mask``);
- :func:`sentence_tensors`: each sample's sentences (``ModelConfig.text_input="sentences"``) as the batch's
  distinct sentences, tokenised, with their stable ids, their match keys, which sample owns which sentence
  and the sentence-level targets;
- :func:`osl_tensors`: COLIPRI's opposite-sentence pairs (``ctvlp.data.osl_pairs``) as the distinct
  sentences of the valid slots, tokenised, and each slot's row;
- :func:`label_tensors`: the label targets and availability under the names the label loss reads.

:class:`TextProducts` says which of these a run's objective needs and makes them for a batch of samples.
Sentence ids (:func:`sentence_id`) are a stable hash of the text (the same on every process and run),
so that the distributed sentence loss can match sentences across ranks and the frozen text tower's memo
can key by them.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ctvlp.data.osl_pairs import OslPairs, build_osl_pairs
from ctvlp.data.reports import sentence_findings, split_sentences

OSL_STREAM = 7
"""Last entry of the OSL pairs' seed ``[seed, epoch, batch, OSL_STREAM]``: a stream of its own, apart from
the samples' ``[seed, epoch, index]`` and the batch order's ``[seed, epoch, 1]``."""
SENTENCE_INPUTS = ("sentence_input_ids", "sentence_attention_mask", "sentence_ids", "sentence_keys",
                   "sentence_owner", "sentence_index", "sentence_targets")
"""The keys of :func:`sentence_tensors` (the model's ``_sentence_outputs`` arguments)."""
OSL_INPUTS = ("osl_input_ids", "osl_attention_mask", "osl_ids", "osl_index", "osl_mask", "osl_is_true")
"""The keys of :func:`osl_tensors` (the model's ``_osl_outputs`` arguments)."""
MODEL_TEXT = ("input_ids", "attention_mask", *SENTENCE_INPUTS, *OSL_INPUTS)
"""Every text tensor a batch may hand the model."""
OSL_CHUNK = 16
"""The model encodes the distinct OSL sentences in chunks of this many, shortest first (see
``VisionLanguageModel._osl_outputs``): a chunk pads to its own longest sentence, not the batch's."""


def sentence_id(text: str) -> int:
    """A stable 62-bit hash of a sentence (the same on every process and run)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 2


@functools.lru_cache(maxsize=65536)
def sentence_key(text: str, match: str) -> int:
    """Id of what a sentence counts as in the sentence-level loss: its text, or (``match="findings"``)
    the findings it states when it states any (the rule-based parser's ``sentence_findings``)."""
    findings = sentence_findings(text) if match == "findings" else ()
    return sentence_id(repr(findings) if findings else text)


def text_sentences(texts: Sequence[str]) -> list[list[str]]:
    """Each text's sentences (``reports.split_sentences``): plain strings for ``text_input="sentences"``."""
    return [split_sentences(t) for t in texts]


def tokens(tokenizer, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``texts`` tokenised as ``TextTower.tokenize`` does: right-padded to the longest, truncated at
    ``max_length``; (input_ids, attention_mask), both (T, L) int64."""
    out = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return out["input_ids"], out["attention_mask"]


def text_tokens(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """A sample's whole text per row: ``input_ids``, ``attention_mask`` (B, L)."""
    ids, mask = tokens(tokenizer, texts, max_length)
    return {"input_ids": ids, "attention_mask": mask}


def sentence_tensors(groups: Sequence[Sequence[str]], tokenizer, max_length: int,
                     match: str = "text") -> dict[str, torch.Tensor]:
    """Each sample's sentences as the batch's N distinct sentences (sorted; a sample without any gets the
    empty string):

    - ``sentence_input_ids``, ``sentence_attention_mask`` (N, L): the distinct sentences, tokenised;
    - ``sentence_ids`` (N,) int64: :func:`sentence_id` of each; ``sentence_keys`` (N,): :func:`sentence_key`
      with ``match`` (``ModelConfig.sentence_match``);
    - ``sentence_owner``, ``sentence_index`` (T,) int64: for each of the T sentences of the batch (repeats
      kept, sample by sample), its sample and its row among the distinct ones;
    - ``sentence_targets`` (B, N) float: 1 where the sentence's key is one of the sample's own keys.
    """
    groups = [list(g) if g else [""] for g in groups]
    distinct = sorted({t for g in groups for t in g})
    column = {t: n for n, t in enumerate(distinct)}
    keys = torch.tensor([sentence_key(t, match) for t in distinct], dtype=torch.int64)  # (N,)
    own = [torch.tensor([column[t] for t in set(g)]) for g in groups]
    targets = torch.stack([torch.isin(keys, keys[cols]) for cols in own]).float()  # (B, N)
    index = torch.tensor([column[t] for g in groups for t in g], dtype=torch.int64)  # (T,)
    owner = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor([len(g) for g in groups]))  # (T,)
    ids, mask = tokens(tokenizer, distinct, max_length)
    return {"sentence_input_ids": ids, "sentence_attention_mask": mask,
            "sentence_ids": torch.tensor([sentence_id(t) for t in distinct], dtype=torch.int64),
            "sentence_keys": keys, "sentence_owner": owner, "sentence_index": index, "sentence_targets": targets}


def osl_tensors(pairs: OslPairs, tokenizer, max_length: int) -> dict[str, torch.Tensor]:
    """OSL pairs as tensors: the U distinct sentences of the valid slots, shortest first (then by text),
    ``osl_input_ids``/``osl_attention_mask`` (U, L) and ``osl_ids`` (U,) (:func:`sentence_id`);
    ``osl_index`` (2, B, K) int64: the row of each slot's s+ (``[0]``) and s- (``[1]``), 0 where invalid;
    ``osl_mask`` (B, K) bool (valid slots) and ``osl_is_true`` (B, K) bool."""
    valid = torch.tensor(pairs.valid, dtype=torch.bool)  # (B, K)
    kept = [t for side in (pairs.pos_texts, pairs.neg_texts) for row, ok in zip(side, pairs.valid)
            for t, v in zip(row, ok) if v]
    distinct = sorted(set(kept), key=lambda t: (len(t), t))  # by length: the model's chunks pad little
    row = {t: n for n, t in enumerate(distinct)}
    index = torch.tensor([[[row[t] if v else 0 for t, v in zip(r, ok)] for r, ok in zip(side, pairs.valid)]
                          for side in (pairs.pos_texts, pairs.neg_texts)], dtype=torch.int64)  # (2, B, K)
    ids, mask = tokens(tokenizer, distinct, max_length) if distinct else (torch.zeros(0, 1, dtype=torch.int64),) * 2
    return {"osl_input_ids": ids, "osl_attention_mask": mask,
            "osl_ids": torch.tensor([sentence_id(t) for t in distinct], dtype=torch.int64), "osl_index": index,
            "osl_mask": valid, "osl_is_true": torch.tensor(pairs.is_true, dtype=torch.bool)}


def label_tensors(labels: torch.Tensor, label_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """``label_targets`` (B, K) and ``label_available`` (B, K), the label loss's names for a batch's
    ``labels`` and ``label_mask``."""
    return {"label_targets": labels, "label_available": label_mask}


@dataclass
class TextProducts:
    """Which text-derived tensors a training batch carries (what the run's model and objective read) and
    how they are made; called by the training collate on each batch."""

    tokenizer: object
    """The text tower's tokenizer (``model.text.tokenizer``)."""
    text_input: str = "text"
    """``ModelConfig.text_input``: ``text`` tokenises each sample's whole text (``input_ids``),
    ``sentences`` its sentences (:func:`sentence_tensors`)."""
    max_text_tokens: int = 128
    """Token budget of a sample's whole text (``DataConfig.max_text_tokens``)."""
    max_sentence_tokens: int = 128
    """Token budget of one sentence, pairs' and OSL's (the text tower's ``max_length``)."""
    sentence_match: str = "text"
    """``ModelConfig.sentence_match``."""
    osl_pairs: int = 0
    """K slots per image of COLIPRI's opposite-sentence pairs; 0: the objective reads none."""
    seed: int = 0
    """The run's seed: OSL pairs are drawn from ``[seed, epoch, batch, OSL_STREAM]``."""

    def __call__(self, batch: dict, epoch: int, index: int) -> dict[str, torch.Tensor]:
        """The text tensors of ``batch`` (the padding collate's output), batch ``index`` of ``epoch``."""
        out = label_tensors(batch["labels"], batch["label_mask"])
        if self.text_input == "sentences":
            out.update(sentence_tensors(batch["sentences"], self.tokenizer, self.max_sentence_tokens,
                                        self.sentence_match))
        else:  # the caption decoder reads these too
            out.update(text_tokens(self.tokenizer, batch["text"], self.max_text_tokens))
        if self.osl_pairs:  # from the plain findings, never the structured text ("Heart: positive: ...")
            if index < 0:
                raise ValueError("OSL pairs are seeded by the batch's position in its epoch; the batch sampler "
                                 "gave none (yield ctvlp.data.loader.SampleKey with its batch)")
            rng = np.random.default_rng([self.seed, int(epoch), int(index), OSL_STREAM])
            out.update(osl_tensors(build_osl_pairs(batch["findings"], self.osl_pairs, rng), self.tokenizer,
                                   self.max_sentence_tokens))
        return out
