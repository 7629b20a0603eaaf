"""Zero-shot organ classification: the containment rule, golden metrics with a fake model whose
embeddings are built from the truth, one encoding per chunk and prompt, bad input, and an
end-to-end run of a tiny random model on a tiny synthetic cache."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ctvlp.data.cache import Cache
from ctvlp.data.sampling import SamplerConfig
from ctvlp.errors import BadDatasetError
from ctvlp.eval.organs import chunk_contains, chunk_ranges, evaluate_organs, organ_extents, split_chunks
from conftest import make_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the ground-truth rule

@pytest.mark.parametrize("extents, z0, z1, fraction, expected", [
    ([(10, 12)], 0, 32, 0.5, True),     # small organ wholly inside the chunk
    ([(0, 100)], 40, 72, 0.5, True),    # chunk inside a long organ
    ([(0, 20)], 18, 50, 0.5, False),    # 2-slice sliver: 2 < 0.5 * min(20, 32)
    ([(0, 10)], 5, 37, 0.5, True),      # exactly half of the organ
    ([(0, 10)], 6, 38, 0.5, False),     # just under half
    ([(0, 40)], 24, 56, 0.5, True),     # 16 slices = exactly half of the chunk
    ([(0, 40)], 25, 57, 0.5, False),    # 15 < 16 and 15 < 20
    ([(0, 10)], 10, 20, 0.5, False),    # touching is not overlapping ([z0, z1) half-open)
    ([(0, 20)], 19, 51, 0.0, True),     # min_fraction 0: any overlap
    ([(0, 20)], 20, 52, 0.0, False),
    ([(0, 10)], 0, 32, 1.0, True),      # min_fraction 1: the whole organ ...
    ([(0, 10)], 1, 33, 1.0, False),
    ([(0, 64)], 8, 40, 1.0, True),      # ... or a chunk full of organ
    ([(0, 10), (5, 20)], 15, 47, 0.5, False),  # union = 20 slices, 5 inside
    ([(0, 4), (30, 34)], 0, 32, 0.5, True),    # union = 8 slices, 6 inside
    ([(1, 5)], 0, 3, 0.5, True),        # 3 real slices (short volume): O = 2 >= 0.5 * min(4, 3)
    ([], 0, 32, 0.5, False),            # empty mask: absent
])
def test_containment_rule_on_hand_made_extents(extents, z0, z1, fraction, expected):
    assert chunk_contains(extents, z0, z1, fraction) is expected


def test_containment_rule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="min_fraction"):
        chunk_contains([(0, 4)], 0, 4, 1.5)
    with pytest.raises(ValueError, match="empty chunk"):
        chunk_contains([(0, 4)], 3, 3)


def test_organ_extents_maps_mask_names_to_organs():
    names = ["body", "Left lung", "right lung", "trachea_bronchi", "heart", "atelectasis", "thyroid gland"]
    z = {"body": [0, 50], "Left lung": [5, 30], "right lung": [8, 35], "trachea_bronchi": [30, 50],
         "atelectasis": [10, 12]}  # heart and thyroid masks exist but are empty
    assert organ_extents(names, z) == {"lung": [(5, 30), (8, 35)], "trachea_bronchi": [(30, 50)],
                                       "heart": [], "thyroid": []}


def test_chunk_ranges_are_evenly_spaced_and_deterministic():
    chunk = SamplerConfig(mode="chunk", chunk_depth=32)
    assert chunk_ranges(100, chunk, 4) == [(0, 32), (23, 55), (45, 77), (68, 100)]
    assert chunk_ranges(100, chunk, 1) == [(34, 66)]
    assert chunk_ranges(33, chunk, 4) == [(0, 32), (1, 33)]  # only two distinct starts
    assert chunk_ranges(20, chunk, 4) == [(0, 20)]            # shallower than a chunk: padded later
    assert chunk_ranges(20, SamplerConfig(mode="whole", max_slices=16), 4) == [(2, 18)]
    assert chunk_ranges(20, SamplerConfig(mode="whole"), 4) == [(0, 20)]


# ---------------------------------------------------------------- a fake cache and a fake model

class FakeVolume:
    """Slice z of volume number k has HU 10 k at pixel (0, 0) and 10 z at (0, 1): the fake model
    reads back which chunk it was given."""

    def __init__(self, number: int, depth: int, z_extents: dict, mask_names: list[str] | None = None):
        self.vid, self.number = f"v{number}", number
        self.shape = (depth, 4, 4)
        self.spacing_zyx = np.array([1.5, 1.0, 1.0])
        self.mask_names = list(z_extents) if mask_names is None else mask_names
        self.z_extents = {k: tuple(v) for k, v in z_extents.items()}

    def slab(self, z0, z1):
        out = np.full((z1 - z0, 4, 4), -500, np.int16)
        out[:, 0, 0] = 10 * self.number
        out[:, 0, 1] = 10 * np.arange(z0, z1)
        return out

    def mask_slab(self, z0, z1, names=None):
        raise AssertionError("organ evaluation must not read mask pixels")


class FakeCache:
    def __init__(self, volumes: list[FakeVolume], splits: list[str]):
        self.root = Path("/fake/cache")
        self.config = SimpleNamespace(hu_window=(-1000.0, 1000.0))
        self.index = pd.DataFrame({"id": [v.vid for v in volumes], "split": splits})
        self._volumes = {v.vid: v for v in volumes}
        self.opened = 0

    def volume(self, vid):
        self.opened += 1
        return self._volumes[vid]


ORGANS = ["lung", "heart", "thyroid"]


def golden_cache() -> FakeCache:
    """chunk_depth 4, 2 chunks per volume; labels worked out by hand in TRUTH."""
    return FakeCache([
        FakeVolume(0, 8, {"body": [0, 8], "lung": [0, 8], "heart": [4, 7], "thyroid": [0, 1]}),
        FakeVolume(1, 6, {"lung": [1, 5], "heart": [5, 6]}, mask_names=["lung", "heart", "thyroid"]),
        FakeVolume(2, 8, {"Left lung": [0, 3], "heart": [3, 5], "thyroid_gland": [7, 8]}),
        FakeVolume(3, 3, {"lung": [0, 3], "thyroid": [0, 3]}),  # no heart mask: unavailable
        FakeVolume(4, 8, {"lung": [2, 8], "heart": [0, 8], "thyroid": [3, 4], "atelectasis": [2, 3]}),
    ], ["valid", "valid", "test", "test", "test"])


# (volume, z0) -> (lung, heart, thyroid); None = no mask of that organ
TRUTH = {
    ("v0", 0): (1, 0, 1), ("v0", 4): (1, 1, 0),
    ("v1", 0): (1, 0, 0), ("v1", 2): (1, 1, 0),  # empty thyroid mask: absent
    ("v2", 0): (1, 1, 0), ("v2", 4): (0, 1, 1),
    ("v3", 0): (1, None, 1),
    ("v4", 0): (1, 1, 1), ("v4", 4): (1, 1, 0),
}
PHRASE = {"lungs": "lung", "heart": "heart", "thyroid gland": "thyroid"}


class FakeModel(torch.nn.Module):
    """Organ l owns dims (2l, 2l+1): a chunk's embedding is e_2l when it contains organ l, else
    e_2l+1; "contains the X" is e_2l and "does not contain the X" e_2l+1 (swapped for organs in
    ``reverse``). So a perfect model gives every positive one score (POSITIVE) and every
    negative another (1 - POSITIVE), and a reversed organ the other way round."""

    def __init__(self, reverse: tuple[str, ...] = ()):
        super().__init__()
        self.reverse = set(reverse)
        self.seen: list[tuple[str, int]] = []
        self.real_slices: dict[tuple[str, int], int] = {}
        self.batches: list[tuple[int, ...]] = []
        self.text_calls: list[list[str]] = []

    def encode_image(self, image, slice_mask):
        assert not self.training
        emb = torch.zeros(image.shape[0], 2 * len(ORGANS))
        for b in range(image.shape[0]):
            hu = image[b, 0, 0, 0, :2] * 1000  # window (-1000, 1000) -> [-1, 1]
            key = (f"v{round(float(hu[0]) / 10)}", round(float(hu[1]) / 10))
            self.seen.append(key)
            self.real_slices[key] = int(slice_mask[b].sum())
            for l, present in enumerate(TRUTH[key]):
                emb[b, 2 * l + (0 if present else 1)] = 1.0
        self.batches.append(tuple(image.shape))
        return torch.nn.functional.normalize(emb, dim=-1)

    def encode_texts(self, texts):
        self.text_calls.append(list(texts))
        emb = torch.zeros(len(texts), 2 * len(ORGANS))
        for i, text in enumerate(texts):
            organ = next(o for phrase, o in PHRASE.items() if text.endswith(f" the {phrase}."))
            negative = "does not contain" in text
            l = ORGANS.index(organ)
            emb[i, 2 * l + (negative != (organ in self.reverse))] = 1.0
        return emb

    def scale(self):
        return torch.tensor(10.0)


# Every fake chunk embedding has 3 unit entries (one per organ), so cos = 1/sqrt(3) with its own prompt
# and 0 with the other: a positive scores sigmoid(t / sqrt(3)) with t = 10, a negative 1 minus that.
POSITIVE = 1 / (1 + np.exp(-10.0 / np.sqrt(3)))

SAMPLER = SamplerConfig(mode="chunk", chunk_depth=4, size=None, random_crop=True, text="organs")


def _run(model, cache=None, **kwargs):
    return evaluate_organs(model, cache or golden_cache(), SAMPLER, "valid", "test", "cpu",
                           chunks_per_volume=2, batch_size=3, **kwargs)


def test_split_labels_match_the_hand_worked_truth():
    for split, vids in (("valid", {"v0", "v1"}), ("test", {"v2", "v3", "v4"})):
        chunks, organs = split_chunks(golden_cache(), split, SAMPLER, ORGANS, chunks_per_volume=2)
        assert organs == ORGANS
        keys = [(vid, z0) for vid, (z0, _) in zip(chunks.ids, chunks.ranges)]
        assert {k[0] for k in keys} == vids
        for n, key in enumerate(keys):
            truth = TRUTH[key]
            assert chunks.available[n].tolist() == [t is not None for t in truth]
            assert chunks.labels[n].tolist() == [float(t or 0) for t in truth]


def test_perfect_model_scores_one_and_single_class_organ_is_none():
    out = _run(FakeModel())
    assert out["organs"] == ORGANS  # lexicon order, only organs with masks
    assert out["mean_auroc"] == 1.0 and out["mean_f1"] == 1.0 and out["mean_precision"] == 1.0
    assert out["organs_in_mean"] == ["lung", "thyroid"]
    # heart: every available test chunk contains it (v3 has no heart mask, so it is not a negative)
    heart = out["per_organ"]["heart"]
    assert heart["auroc"] is None and (heart["n_pos"], heart["n"]) == (4, 4)
    assert out["excluded"] == {"heart": "single class on test (4 positive of 4)"}
    lung, thyroid = out["per_organ"]["lung"], out["per_organ"]["thyroid"]
    assert (lung["n_pos"], lung["n"], lung["val_n_pos"], lung["val_n"]) == (4, 5, 4, 4)
    assert (thyroid["n_pos"], thyroid["n"], thyroid["val_n_pos"], thyroid["val_n"]) == (3, 5, 1, 4)
    assert lung["threshold"] == pytest.approx(POSITIVE)  # the validation positives' score
    assert (out["n_chunks"], out["n_val_chunks"], out["n_volumes"]) == (5, 4, {"val": 2, "test": 3})
    assert out["chunk_depth"] == 4 and out["min_fraction"] == 0.5 and "min_fraction" in out["rule"]
    json.dumps(out, allow_nan=False)


def test_reversed_prompts_score_zero_and_organs_are_not_mixed_up():
    out = _run(FakeModel(reverse=("lung", "thyroid", "heart")))
    assert out["mean_auroc"] == 0.0
    assert out["per_organ"]["lung"]["auroc"] == 0.0 and out["per_organ"]["thyroid"]["auroc"] == 0.0
    mixed = _run(FakeModel(reverse=("thyroid",)))
    assert mixed["per_organ"]["lung"]["auroc"] == 1.0 and mixed["per_organ"]["thyroid"]["auroc"] == 0.0
    assert mixed["mean_auroc"] == 0.5


def test_each_chunk_and_each_prompt_is_encoded_once():
    model, cache = FakeModel(), golden_cache()
    metrics, test, scores = _run(model, cache, details=True)
    assert sorted(model.seen) == sorted(TRUTH) and len(model.seen) == len(set(model.seen)) == 9
    # validation then test, in batches of 3, each chunk padded to chunk_depth 4; in-plane size kept
    assert model.batches == [(3, 1, 4, 4, 4), (1, 1, 4, 4, 4), (3, 1, 4, 4, 4), (2, 1, 4, 4, 4)]
    assert model.real_slices[("v3", 0)] == 3  # 3-slice volume repeat-padded to 4, 3 real slices
    assert all(n == 4 for key, n in model.real_slices.items() if key[0] != "v3")
    assert len(model.text_calls) == 1
    assert model.text_calls[0] == [
        "This region contains the lungs.", "This region does not contain the lungs.",
        "This region contains the heart.", "This region does not contain the heart.",
        "This region contains the thyroid gland.", "This region does not contain the thyroid gland."]
    assert cache.opened == 5 + 5  # each volume once for its labels, once for its pixels
    expected = np.array([[POSITIVE if t else 1 - POSITIVE for t in TRUTH[(vid, z0)]]
                         for vid, (z0, _) in zip(test.ids, test.ranges)])
    np.testing.assert_allclose(scores, expected, rtol=1e-6)  # float32 cosines


@pytest.mark.parametrize("training", [True, False])
def test_model_mode_is_restored(training):
    model = FakeModel().train(training)
    _run(model)  # encode_image asserts eval mode
    assert model.training is training


def test_explicit_organs_and_an_organ_without_any_mask():
    out = _run(FakeModel(), organs=["thyroid", "lung"])
    assert out["organs"] == ["thyroid", "lung"] and out["mean_auroc"] == 1.0
    torch.manual_seed(0)
    out = _run(RandomModel(), organs=["lung", "pleura"])  # no volume has a pleura mask
    pleura = out["per_organ"]["pleura"]
    assert (pleura["n"], pleura["val_n"], pleura["auroc"], pleura["threshold"]) == (0, 0, None, None)
    assert out["excluded"] == {"pleura": "no test volume has a mask of it"}
    assert out["organs_in_mean"] == ["lung"] and 0.0 <= out["mean_auroc"] <= 1.0


class RandomModel(torch.nn.Module):
    """Seeded random embeddings of any text."""

    def encode_image(self, image, slice_mask):
        return torch.nn.functional.normalize(torch.randn(image.shape[0], 8), dim=-1)

    def encode_texts(self, texts):
        return torch.nn.functional.normalize(torch.randn(len(texts), 8), dim=-1)

    def scale(self):
        return torch.tensor(1.0)


def test_split_without_organ_extents_is_a_clear_error():
    no_organs = FakeCache([FakeVolume(0, 8, {"body": [0, 8], "lung": [0, 8]}),
                           FakeVolume(1, 8, {"body": [0, 8], "atelectasis": [2, 4]}),
                           FakeVolume(2, 8, {"body": [0, 8]}, mask_names=["body", "heart"])],  # empty heart
                          ["valid", "test", "test"])
    with pytest.raises(BadDatasetError, match="no volume of split 'test' .2 volumes. has an organ z-extent") as err:
        _run(FakeModel(), no_organs)
    assert err.value.path == "/fake/cache" and "atelectasis, body, heart" in err.value.reason
    with pytest.raises(BadDatasetError, match="split 'nope' has no volumes .the cache's splits: .'test', 'valid'.."):
        evaluate_organs(FakeModel(), golden_cache(), SAMPLER, "valid", "nope")


# ---------------------------------------------------------------- end to end on a real cache

@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory) -> Cache:
    return Cache(make_synthetic_cache(tmp_path_factory.mktemp("organs"), 8, 3))


def test_tiny_random_model_on_a_synthetic_cache(synthetic_cache):
    from ctvlp.models.vlp import VisionLanguageModel
    from ctvlp.recipes import get_recipe

    cfg = get_recipe("demo", debug=True)
    torch.manual_seed(0)
    model = VisionLanguageModel(cfg.model)
    calls = []
    encode_image = model.encode_image
    model.encode_image = lambda image, mask: calls.append(image.shape[0]) or encode_image(image, mask)
    metrics, test, scores = evaluate_organs(model, synthetic_cache, cfg.data.sampler, "valid", "test",
                                            details=True)
    index = synthetic_cache.index
    n_val, n_test = (sum(len(chunk_ranges(int(z), cfg.data.sampler, 4)) for z in index[index.split == s].num_slices)
                     for s in ("valid", "test"))
    assert (metrics["n_val_chunks"], metrics["n_chunks"]) == (n_val, n_test) and sum(calls) == n_val + n_test
    assert scores.shape == (n_test, len(metrics["organs"])) and np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert {"lung", "heart", "trachea_bronchi", "thyroid"} <= set(metrics["organs"])
    for organ, result in metrics["per_organ"].items():
        assert result["auroc"] is None or 0.0 <= result["auroc"] <= 1.0
        assert result["auroc"] is not None or organ in metrics["excluded"]  # with the reason
    assert metrics["mean_auroc"] is None or 0.0 <= metrics["mean_auroc"] <= 1.0
    assert model.training  # a fresh model trains; restored after evaluation
    json.dumps(metrics, allow_nan=False)
    # the labels come from the cached masks by the documented rule
    for n, (vid, (z0, z1)) in enumerate(zip(test.ids, test.ranges)):
        volume = synthetic_cache.volume(vid)
        extents = organ_extents(volume.mask_names, volume.z_extents)
        assert test.labels[n].tolist() == [float(o in extents and chunk_contains(extents[o], z0, z1))
                                           for o in metrics["organs"]]
    # whole volumes: one sample per test volume
    whole = evaluate_organs(model, synthetic_cache, cfg.eval.sampler, "valid", "test")
    assert whole["n_chunks"] == int((index.split == "test").sum()) and whole["chunk_depth"] is None
