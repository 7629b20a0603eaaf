"""The sentence-level sigmoid loss: golden numbers, reduction to SigLIP, the model's sentence outputs,
and its distributed form (2 gloo processes) against the single-process loss on the same global batch
(see test_losses_distributed.py for why the gradients compare as they do)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from ctvlp.losses import SentenceSigmoidLoss, sentence_sigmoid_loss, siglip_loss
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.data.text import sentence_id, sentence_tensors
from ctvlp.models.vlp import ModelConfig, VisionLanguageModel


def _sentences(model: VisionLanguageModel, groups: list[list[str]]) -> dict[str, torch.Tensor]:
    """The collate's sentence tensors of ``groups`` for ``model``."""
    return sentence_tensors(groups, model.text.tokenizer, model.text.cfg.max_length, model.cfg.sentence_match)


def test_golden_numbers():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sentences = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    # logits t<I,S> + b with t = 2, b = -1: [[1, 0.2, -1], [-1, 0.6, 1]]; every pair is on its correct side
    expected = 4 * math.log1p(math.exp(-1)) + math.log1p(math.exp(-0.2)) + math.log1p(math.exp(-0.6))
    loss = sentence_sigmoid_loss(image, sentences, targets, torch.tensor(2.0), torch.tensor(-1.0))
    assert loss.item() == pytest.approx(expected / 2, rel=1e-6)


def test_against_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(4, 3, generator=g), dim=1)
    sentences = F.normalize(torch.randn(6, 3, generator=g), dim=1)
    targets = (torch.rand(4, 6, generator=g) > 0.5).float()
    ref = 0.0
    for i in range(4):
        for n in range(6):
            z = 1.0 if targets[i, n] else -1.0
            ref -= math.log(torch.sigmoid(z * (3.0 * image[i] @ sentences[n] - 0.5)).item())
    loss = sentence_sigmoid_loss(image, sentences, targets, 3.0, -0.5)
    assert loss.item() == pytest.approx(ref / 4, rel=1e-5)


def test_one_sentence_per_image_is_siglip():
    g = torch.Generator().manual_seed(1)
    image = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    text = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    t, b = torch.tensor(7.0), torch.tensor(-3.0)
    torch.testing.assert_close(sentence_sigmoid_loss(image, text, torch.eye(5), t, b), siglip_loss(image, text, t, b))


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"sentence_targets must be \(B, N\) = \(2, 3\)"):
        sentence_sigmoid_loss(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(3, 2), 1.0, 0.0)
    with pytest.raises(ValueError, match="share D"):
        sentence_sigmoid_loss(torch.zeros(2, 4), torch.zeros(3, 5), torch.zeros(2, 3), 1.0, 0.0)


@pytest.fixture(scope="module")
def model() -> VisionLanguageModel:
    torch.manual_seed(0)
    cfg = ModelConfig(vision=vit_config("debug", patch=(4, 8, 8)), text=TextTowerConfig(name="tiny", freeze="all"),
                      embed_dim=8, text_input="sentences")
    return VisionLanguageModel(cfg).eval()


def test_model_returns_the_batch_distinct_sentences(model):
    groups = [["No effusion.", "Heart is normal."], ["Heart is normal.", "Nodule.", "Nodule."], []]
    out = model(torch.zeros(3, 1, 8, 16, 16), **_sentences(model, groups))
    distinct = sorted({"No effusion.", "Heart is normal.", "Nodule.", ""})
    assert out["sentence_emb"].shape == (4, 8) and out["sentence_targets"].shape == (3, 4)
    expected = torch.tensor([[t in (g or [""]) for t in distinct] for g in groups], dtype=torch.float32)
    torch.testing.assert_close(out["sentence_targets"], expected)
    assert out["sentence_ids"].tolist() == [sentence_id(t) for t in distinct]
    # a sample's text embedding is the normalised mean of its sentences' projections (repeats counted)
    texts = ["Heart is normal.", "Nodule.", "Nodule."]
    tokens = model.tokenize(texts)
    proj = model.text_proj(model._tower(tokens["input_ids"], tokens["attention_mask"],
                                        torch.tensor([sentence_id(t) for t in texts])))
    torch.testing.assert_close(out["text_emb"][1], F.normalize(proj.mean(0), dim=0))
    torch.testing.assert_close(out["sentence_emb"].norm(dim=1), torch.ones(4))


def test_findings_matching_pairs_sentences_that_state_the_same_findings():
    torch.manual_seed(0)
    cfg = ModelConfig(vision=vit_config("debug", patch=(4, 8, 8)), text=TextTowerConfig(name="tiny", freeze="all"),
                      embed_dim=8, text_input="sentences", sentence_match="findings")
    model = VisionLanguageModel(cfg).eval()
    groups = [["A 12 mm solid nodule is seen in the right lung upper lobe.", "Heart size is normal."],
              ["Nodule of 7 mm in the left lower lobe.", "No pleural effusion."],
              ["There is no nodule in either lung.", "Heart size is normal."]]
    out = model(torch.zeros(3, 1, 8, 16, 16), **_sentences(model, groups))
    distinct = sorted({t for g in groups for t in g})
    positives = [{distinct[n] for n in range(len(distinct)) if out["sentence_targets"][i, n]} for i in range(3)]
    nodules = {groups[0][0], groups[1][0]}
    assert positives[0] == nodules | {"Heart size is normal."}
    assert positives[1] == nodules | {"No pleural effusion."}
    assert positives[2] == {"There is no nodule in either lung.", "Heart size is normal."}
    assert out["sentence_keys"][distinct.index(groups[0][0])] == out["sentence_keys"][distinct.index(groups[1][0])]


def test_sentence_ids_are_stable():
    assert sentence_id("No pleural effusion.") == sentence_id("No pleural effusion.")
    assert sentence_id("No pleural effusion.") != sentence_id("Pleural effusion.")
    assert 0 <= sentence_id("x") < 2**62


# -- two processes ----------------------------------------------------------------------------------
WORLD, VOCAB, DIM = 2, 6, 4
# rank 0 owns images 0-1, rank 1 images 2-3; sentence 1 is shared across ranks, sentence 3 within rank 1;
# sentences 0 and 4 (on different ranks) state the same thing: same key
GROUPS = [[0, 1], [2], [1, 3], [3, 4, 5]]
KEY = {0: 0, 1: 1, 2: 2, 3: 3, 4: 0, 5: 5}


class TinySentenceModel(nn.Module):
    """Images: a Linear on fixed inputs; sentences: a learned table row per sentence index, projected."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.image = nn.Linear(5, DIM)
        self.table = nn.Parameter(torch.randn(VOCAB, DIM))
        self.log_scale = nn.Parameter(torch.tensor(1.0))
        self.bias = nn.Parameter(torch.tensor(-2.0))

    def forward(self, x: torch.Tensor, groups: list[list[int]]) -> dict[str, torch.Tensor]:
        distinct = sorted({s for g in groups for s in g})
        targets = torch.tensor([[float(KEY[s] in {KEY[t] for t in g}) for s in distinct] for g in groups])
        return {"image_emb": F.normalize(self.image(x), dim=1),
                "sentence_emb": F.normalize(self.table[distinct], dim=1), "sentence_targets": targets,
                "sentence_ids": torch.tensor([sentence_id(str(s)) for s in distinct]),
                "sentence_keys": torch.tensor([sentence_id(str(KEY[s])) for s in distinct]),
                "logit_scale": self.log_scale.exp(), "logit_bias": self.bias}


def _inputs() -> torch.Tensor:
    return torch.randn(len(GROUPS), 5, generator=torch.Generator().manual_seed(4))


def _run(rows: slice) -> dict[str, torch.Tensor]:
    model = TinySentenceModel()
    wrapped = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    loss = SentenceSigmoidLoss()(**wrapped(_inputs()[rows], GROUPS[rows]))
    loss.backward()
    return {"loss": loss.detach(), **{k: p.grad for k, p in model.named_parameters()}}


def _worker(rank: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    torch.save(_run(slice(2 * rank, 2 * rank + 2)), Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_distributed_equals_single_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    reference = _run(slice(None))
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), reference["loss"])
    for key in ("image.weight", "image.bias", "table", "log_scale", "bias"):
        for res in ranks:  # DDP averages: every rank holds the single-process gradient
            torch.testing.assert_close(res[key], reference[key], rtol=1e-5, atol=1e-6)


def test_own_sentence_logits_are_used_by_the_sentence_loss_only():
    torch.manual_seed(0)
    cfg = ModelConfig(vision=vit_config("debug", patch=(4, 8, 8)), text=TextTowerConfig(name="tiny", freeze="all"),
                      embed_dim=8, text_input="sentences", sentence_logits=True)
    model = VisionLanguageModel(cfg)
    with torch.no_grad():
        model.sentence_logit_bias.fill_(-3.0)
    out = model(torch.zeros(2, 1, 8, 16, 16), **_sentences(model, [["A."], ["B.", "A."]]))
    expected = sentence_sigmoid_loss(out["image_emb"], out["sentence_emb"], out["sentence_targets"],
                                     out["sentence_logit_scale"], torch.tensor(-3.0))
    torch.testing.assert_close(SentenceSigmoidLoss()(**out), expected)
    SentenceSigmoidLoss()(**out).backward()
    assert model.sentence_logit_bias.grad is not None and model.logit_bias.grad is None
