"""Text tower: MiniLM vs sentence-transformers, pooling masks, freezing, save/load, bad names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ctvlp.models.heads import AttentionPool
from ctvlp.models.text import TextTower, TextTowerConfig, minilm_dir

SENTENCES = ["The lungs are clear.", "Small left pleural effusion with adjacent atelectasis of the lower lobe.",
             "No pericardial effusion; the heart size is normal."]


@pytest.fixture(scope="module")
def minilm() -> TextTower:
    return TextTower(TextTowerConfig(name="minilm", pooling="mean")).eval()


def trainable(tower: TextTower) -> int:
    return sum(p.numel() for p in tower.parameters() if p.requires_grad)


def test_minilm_mean_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_dir()), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    ours = minilm.encode(SENTENCES)
    assert ours.shape == (3, 384) and minilm.width == 384
    cos = F.cosine_similarity(F.normalize(ours, dim=-1), F.normalize(reference.float(), dim=-1))
    assert cos.min() > 0.999, cos


def test_mean_pooling_ignores_padding(minilm):
    alone = minilm.encode(SENTENCES[:1])
    tokens = minilm.tokenize(SENTENCES[:2])
    assert (tokens["attention_mask"][0] == 0).any()  # the short sentence really is padded
    batched = minilm.encode(SENTENCES[:2])
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)


def test_tiny_forward_backward_and_truncation():
    torch.manual_seed(0)
    tower = TextTower(TextTowerConfig(name="tiny", pooling="cls", max_length=8))
    tokens = tower.tokenize(SENTENCES)
    assert tokens["input_ids"].shape == (3, 8) and set(tokens) == {"input_ids", "attention_mask"}
    out = tower(**tokens)
    assert out.shape == (3, tower.width) == (3, 64)
    out.square().sum().backward()
    grads = [p.grad for p in tower.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert tower.model.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_attention_pooling_respects_mask():
    torch.manual_seed(0)
    pool = AttentionPool(16, heads=2, norm=True, query="learned")  # the text tower's "attention" pool
    tokens, mask = torch.randn(2, 5, 16), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    changed = tokens.clone()
    changed[0, 3:] = 100.0  # padded positions of row 0 only
    torch.testing.assert_close(pool(changed, mask), pool(tokens, mask))
    torch.testing.assert_close(pool(tokens, mask)[0], pool(tokens[:1, :3], mask[:1, :3])[0])
    assert not torch.allclose(pool(changed, torch.ones_like(mask))[0], pool(tokens, mask)[0])


def test_attention_pooled_tower_same_alone_and_batched():
    torch.manual_seed(0)
    tower = TextTower(TextTowerConfig(name="tiny", pooling="attention")).eval()
    torch.testing.assert_close(tower.encode(SENTENCES)[0], tower.encode(SENTENCES[:1])[0], atol=1e-5, rtol=1e-5)


def test_random_init_differs_from_pretrained(minilm):
    torch.manual_seed(0)
    random = TextTower(TextTowerConfig(name="minilm", pooling="mean", pretrained=False)).eval()
    assert random.width == 384 and not torch.allclose(random.encode(SENTENCES), minilm.encode(SENTENCES), atol=1e-2)


def test_freeze_options_count_trainable_parameters():
    torch.manual_seed(0)
    full = TextTower(TextTowerConfig(name="tiny", pooling="attention"))
    pool = sum(p.numel() for p in full.pool.parameters())
    embeddings = sum(p.numel() for p in full.model.embeddings.parameters())
    per_layer = sum(p.numel() for p in full.model.encoder.layer[1].parameters())
    total = sum(p.numel() for p in full.parameters())
    assert trainable(full) == total
    expected = {("all", 0): pool, ("embeddings", 0): total - embeddings,
                ("all_but_last_n", 1): pool + per_layer, ("all_but_last_n", 0): pool,
                ("all_but_last_n", 2): pool + 2 * per_layer}
    for (freeze, n), count in expected.items():
        tower = TextTower(TextTowerConfig(name="tiny", pooling="attention", freeze=freeze, trainable_layers=n))
        assert trainable(tower) == count, (freeze, n)
    last = TextTower(TextTowerConfig(name="tiny", freeze="all_but_last_n", trainable_layers=1))
    assert not any(p.requires_grad for p in last.model.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in last.model.encoder.layer[1].parameters())
    with pytest.raises(ValueError, match="trainable_layers=3 but the encoder has 2 layers"):
        TextTower(TextTowerConfig(name="tiny", freeze="all_but_last_n", trainable_layers=3))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    tower = TextTower(TextTowerConfig(name="tiny", pooling="attention", max_length=16, freeze="embeddings")).eval()
    tower.save_pretrained(tmp_path / "tower")
    assert {"config.json", "model.safetensors", "tokenizer.json", "text_tower.json"} <= {
        p.name for p in (tmp_path / "tower").iterdir()}
    loaded = TextTower.from_pretrained(tmp_path / "tower").eval()
    assert loaded.cfg.pooling == "attention" and loaded.cfg.max_length == 16
    assert trainable(loaded) == trainable(tower)
    assert torch.equal(loaded.tokenize(SENTENCES)["input_ids"], tower.tokenize(SENTENCES)["input_ids"])
    torch.testing.assert_close(loaded.encode(SENTENCES), tower.encode(SENTENCES), atol=0, rtol=0)
    encoder_only = TextTower(TextTowerConfig(name=str(tmp_path / "tower"), pooling="mean")).eval()
    torch.testing.assert_close(encoder_only.model.embeddings.word_embeddings.weight,
                               tower.model.embeddings.word_embeddings.weight, atol=0, rtol=0)


def test_unknown_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="'no-such-org/no-such-text-model' is not in the Hugging Face cache.*"
                                         "HF_HUB_OFFLINE is set.*--set model.text.name=minilm"):
        TextTower(TextTowerConfig(name="no-such-org/no-such-text-model"))


@pytest.mark.parametrize("bad", [{"pooling": "max"}, {"freeze": "some"}, {"trainable_layers": -1},
                                 {"max_length": 1}])
def test_bad_config(bad):
    with pytest.raises(ValueError):
        TextTowerConfig(**bad)


def test_max_length_beyond_positions():
    with pytest.raises(ValueError, match="exceeds the encoder's 512 positions"):
        TextTower(TextTowerConfig(name="tiny", max_length=1000))
