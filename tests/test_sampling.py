"""Samplers: padding index maps, chunk selection, organ sentences, sample dict (in-memory fake volume)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from ctvlp.data.sampling import (SamplerConfig, VolumeRecord, chunk_start, choose_text, draw_sample,
                                 organs_in, pad_index, take_padded)


class FakeVolume:
    """In-memory stand-in for CachedVolume: slice z has HU value 10 * z everywhere."""

    def __init__(self, z: int, y: int = 6, x: int = 8, extents: dict | None = None):
        self.vid = f"fake_{z}"
        self.shape = (z, y, x)
        self.spacing_zyx = np.array([3.0, 1.5, 1.5])
        self.image = (np.arange(z, dtype=np.int16) * 10)[:, None, None] * np.ones((1, y, x), np.int16)
        self.z_extents = extents or {}
        self.mask_names = list(self.z_extents)
        self.reads: list[tuple[int, int]] = []

    def slab(self, z0: int, z1: int) -> np.ndarray:
        self.reads.append((z0, z1))
        return self.image[z0:z1].copy()

    def mask_slab(self, z0, z1, names=None):
        names = self.mask_names if names is None else list(names)
        out = np.zeros((len(names), z1 - z0, *self.shape[1:]), bool)
        for k, n in enumerate(names):
            e0, e1 = self.z_extents[n]
            out[k, max(e0 - z0, 0):max(min(e1, z1) - z0, 0)] = True
        return out


# ---------- padding index maps (golden) ----------

def test_repeat_one_slice_becomes_c_copies():
    idx, real = pad_index(1, 32, "repeat")
    assert idx.tolist() == [0] * 32
    assert real.tolist() == [True] + [False] * 31


def test_repeat_four_slices_to_32_keeps_order():
    idx, real = pad_index(4, 32, "repeat")
    assert idx.tolist() == [0] * 8 + [1] * 8 + [2] * 8 + [3] * 8
    assert np.flatnonzero(real).tolist() == [0, 8, 16, 24]


def test_repeat_uneven_matches_floor_formula():
    idx, real = pad_index(5, 8, "repeat")
    assert idx.tolist() == [0, 0, 1, 1, 2, 3, 3, 4]  # floor(arange(8) * 5 / 8)
    assert real.sum() == 5


@pytest.mark.parametrize("mode", ["repeat", "zero"])
def test_exact_depth_is_identity(mode):
    idx, real = pad_index(32, 32, mode)
    assert idx.tolist() == list(range(32)) and real.all()


def test_zero_padding_real_slices_first():
    idx, real = pad_index(3, 6, "zero")
    assert idx.tolist() == [0, 1, 2, -1, -1, -1]
    assert real.tolist() == [True] * 3 + [False] * 3


@pytest.mark.parametrize("n", [0, 33])
def test_pad_index_refuses_out_of_range(n):
    with pytest.raises(ValueError):
        pad_index(n, 32, "repeat")


def test_take_padded_fills():
    a = np.arange(6).reshape(3, 2)
    out = take_padded(a, np.array([2, 0, -1]), 0, 99)
    assert out.tolist() == [[4, 5], [0, 1], [99, 99]]


# ---------- chunk selection ----------

def test_chunk_start_longer_volume_is_uniform_and_seeded():
    starts = [chunk_start(100, 32, np.random.default_rng(s)) for s in range(400)]
    assert min(starts) == 0 and max(starts) == 68  # z0 in [0, Z - C]
    assert [chunk_start(100, 32, np.random.default_rng(7)) for _ in range(3)] == [starts[7]] * 3


def test_chunk_of_longer_volume_is_contiguous_and_reads_only_its_slices():
    vol = FakeVolume(100)
    s = draw_sample(VolumeRecord(vol), SamplerConfig(chunk_depth=32), np.random.default_rng(3))
    z0 = s["z0"]
    assert s["z1"] == z0 + 32 and vol.reads == [(z0, z0 + 32)]
    hu = (s["image"][0, :, 0, 0] + 1) * 1000 - 1000  # undo the (-1000, 1000) window
    np.testing.assert_allclose(hu, 10 * np.arange(z0, z0 + 32), atol=1e-3)
    assert s["slice_mask"].all()


@pytest.mark.parametrize("padding, expected_hu", [
    ("repeat", [0] * 8 + [10] * 8 + [20] * 8 + [30] * 8),
    ("zero", [0, 10, 20, 30] + [-1000] * 28),
])
def test_short_volume_is_padded(padding, expected_hu):
    s = draw_sample(VolumeRecord(FakeVolume(4)), SamplerConfig(padding=padding), np.random.default_rng(0))
    assert s["image"].shape == (1, 32, 6, 8) and s["image"].dtype == np.float32
    hu = (s["image"][0, :, 2, 2] + 1) * 1000 - 1000
    np.testing.assert_allclose(hu, expected_hu, atol=1e-3)
    assert s["slice_mask"].sum() == 4 and (s["z0"], s["z1"]) == (0, 4)


def test_masks_padded_like_the_image():
    vol = FakeVolume(4, extents={"lung": (1, 3)})
    cfg = SamplerConfig(padding="zero", include_masks=True, mask_names=("lung", "heart"))
    s = draw_sample(VolumeRecord(vol), cfg, np.random.default_rng(0))
    assert s["masks"].shape == (2, 32, 6, 8) and s["masks"].dtype == bool
    assert s["masks"][0, :, 0, 0].tolist() == [False, True, True] + [False] * 29
    assert not s["masks"][1].any() and s["mask_available"].tolist() == [True, False]
    s = draw_sample(VolumeRecord(vol), SamplerConfig(include_masks=True), np.random.default_rng(0))
    assert s["masks"][0, :, 0, 0].tolist() == [False] * 8 + [True] * 16 + [False] * 8


# ---------- in-plane crop / pad ----------

def test_inplane_centre_crop_and_air_pad():
    vol = FakeVolume(2, y=6, x=8)
    vol.image[:, :, :] = np.arange(8, dtype=np.int16)  # HU = x index
    s = draw_sample(VolumeRecord(vol), SamplerConfig(chunk_depth=2, size=(10, 4)), np.random.default_rng(0))
    assert s["image"].shape == (1, 2, 10, 4)
    hu = np.rint((s["image"][0, 0] + 1) * 1000 - 1000)
    assert hu[0].tolist() == [-1000] * 4 and hu[9].tolist() == [-1000] * 4  # pad rows 0-1 and 8-9
    assert hu[2].tolist() == [2, 3, 4, 5]  # centre columns of 0..7


def test_inplane_random_crop_is_seeded_and_varies():
    vol = FakeVolume(2, y=6, x=40)
    vol.image[:, :, :] = np.arange(40, dtype=np.int16)
    cfg = SamplerConfig(chunk_depth=2, size=(6, 8), random_crop=True)
    firsts = {draw_sample(VolumeRecord(vol), cfg, np.random.default_rng(s))["image"][0, 0, 0, 0] for s in range(20)}
    assert len(firsts) > 3
    a, b = (draw_sample(VolumeRecord(vol), cfg, np.random.default_rng(5))["image"] for _ in range(2))
    np.testing.assert_array_equal(a, b)


# ---------- organ sentences ----------

EXTENTS = {"lung": (10, 60), "heart": (20, 40), "thyroid": (70, 80), "liver": (0, 12)}
SENTENCES = {"heart": ["Heart is normal."], "lung": ["Nodule in the right lung.", "No effusion."],
             "thyroid": ["Thyroid normal."], "aorta": ["Aorta normal."], "liver": []}


@pytest.mark.parametrize("z0, z1, expected", [
    (0, 10, []),                         # liver overlaps but has no sentences; lung starts at 10
    (9, 11, ["lung"]),                   # one-slice overlap at the lung's first slice
    (40, 60, ["lung"]),                  # heart ends at 40 (half-open): no overlap
    (39, 71, ["heart", "lung", "thyroid"]),  # report order of organ_sentences
    (60, 70, []),                        # gap between lung and thyroid
])
def test_organs_in_against_hand_made_extents(z0, z1, expected):
    assert organs_in(EXTENTS, SENTENCES, z0, z1) == expected  # aorta has sentences but no extent


def test_choose_text_organs_and_fallbacks():
    vol = FakeVolume(100, extents=EXTENTS)
    rec = VolumeRecord(vol, findings="Findings one. Findings two.", impressions="Impression here.",
                       organ_sentences=SENTENCES)
    t = choose_text(rec, "organs", 30, 62)
    assert t["organs"] == ["heart", "lung"] and t["text_source"] == "organs"
    assert t["sentences"] == ["Heart is normal.", "Nodule in the right lung.", "No effusion."]
    assert t["text"] == "Heart is normal. Nodule in the right lung. No effusion."
    t = choose_text(rec, "organs", 62, 68)
    assert t["text_source"] == "impressions" and t["text"] == "Impression here." and t["organs"] == []
    t = choose_text(VolumeRecord(vol, findings="Only findings."), "organs", 62, 68)
    assert t["text_source"] == "report" and t["sentences"] == ["Only findings."]
    t = choose_text(rec, "report", 30, 62)
    assert t["text_source"] == "report" and t["text"] == "Findings one. Findings two. Impression here."


def test_sample_text_follows_the_chunk():
    vol = FakeVolume(100, extents=EXTENTS)
    rec = VolumeRecord(vol, impressions="Imp.", organ_sentences=SENTENCES)
    for seed in range(30):  # a volume with organ masks: the masks alone (the aorta, without one, is never placed)
        for prior in (True, False):
            s = draw_sample(rec, SamplerConfig(chunk_depth=8, organ_z_prior=prior), np.random.default_rng(seed))
            assert s["organs"] == organs_in(EXTENTS, SENTENCES, s["z0"], s["z1"])
            assert s["text_source"] == ("organs" if s["organs"] else "impressions")


# ---------- whole mode and the sample dict ----------

def test_whole_mode_keeps_all_or_centred_max_slices():
    vol = FakeVolume(50)
    s = draw_sample(VolumeRecord(vol), SamplerConfig(mode="whole"), np.random.default_rng(0))
    assert s["image"].shape == (1, 50, 6, 8) and s["slice_mask"].all()
    s = draw_sample(VolumeRecord(vol), SamplerConfig(mode="whole", max_slices=20), np.random.default_rng(0))
    assert (s["z0"], s["z1"]) == (15, 35) and s["image"].shape[1] == 20


@pytest.mark.parametrize("padding, expected_hu, real, lung", [
    ("repeat", [200] * 2 + [210] * 2 + [220] * 2 + [230] * 2, [0, 2, 4, 6], [0, 0, 1, 1, 1, 1, 1, 1]),
    ("zero", [200, 210, 220, 230] + [-1000] * 4, [0, 1, 2, 3], [0, 1, 1, 1, 0, 0, 0, 0]),
])
def test_min_depth_pads_the_centred_slices_up_to_d(padding, expected_hu, real, lung):
    """Slice-count robustness: the 4 centred slices of a 44-slice volume (z 20..23) padded to D = 8."""
    cfg = SamplerConfig(mode="whole", max_slices=4, min_depth=8, padding=padding, include_masks=True)
    vol = FakeVolume(44, extents={"lung": (21, 30)})
    s = draw_sample(VolumeRecord(vol), cfg, np.random.default_rng(0))
    assert (s["z0"], s["z1"]) == (20, 24) and s["image"].shape == (1, 8, 6, 8)
    np.testing.assert_allclose((s["image"][0, :, 3, 3] + 1) * 1000 - 1000, expected_hu, atol=1e-3)
    assert np.flatnonzero(s["slice_mask"]).tolist() == real
    assert s["masks"][0, :, 0, 0].tolist() == [bool(v) for v in lung]  # lung on z 21..29
    deep = draw_sample(VolumeRecord(vol), SamplerConfig(mode="whole", max_slices=12, min_depth=8), np.random.default_rng(0))
    assert deep["image"].shape[1] == 12 and deep["slice_mask"].all()  # deeper than D: unchanged
    chunk = draw_sample(VolumeRecord(FakeVolume(44)), SamplerConfig(chunk_depth=2, min_depth=8, padding=padding),
                        np.random.default_rng(0))
    assert chunk["image"].shape[1] == 8 and chunk["slice_mask"].sum() == 2  # chunk mode too


def test_sample_dict_keys_labels_and_window():
    rec = VolumeRecord(FakeVolume(40), labels=np.array([1, 0, 0], np.float32),
                       label_mask=np.array([True, True, False]))
    s = draw_sample(rec, SamplerConfig(windows=((-50.0, 350.0),)), np.random.default_rng(0))
    assert {"id", "image", "slice_mask", "text", "sentences", "organs", "text_source", "labels",
            "label_mask", "z0", "z1", "spacing"} <= set(s)
    assert s["labels"].dtype == np.float32 and s["label_mask"].tolist() == [True, True, False]
    assert s["image"].min() >= -1 and s["image"].max() <= 1
    assert s["spacing"].tolist() == [3.0, 1.5, 1.5]


def test_windows_give_one_channel_each_with_golden_values():
    """Slice z holds 10 z HU: (-1000, 1000) maps 200 HU to 0.2; (0, 100) maps 50 HU to 0 and clips above."""
    s = draw_sample(VolumeRecord(FakeVolume(40)), SamplerConfig(mode="whole", windows=((-1000, 1000), (0, 100))),
                    np.random.default_rng(0))
    assert s["image"].shape == (2, 40, 6, 8)
    np.testing.assert_allclose(s["image"][0, 20, 0, 0], 0.2, atol=1e-6)
    np.testing.assert_allclose(s["image"][1, [0, 5, 10, 30], 0, 0], [-1.0, 0.0, 1.0, 1.0], atol=1e-6)
    assert SamplerConfig(windows=((-1000, 1000), (0, 100))).channels == 2 and SamplerConfig().channels == 1


@pytest.mark.parametrize("kwargs", [{"windows": ((100, 0),)}, {"windows": ()}, {"mode": "slab"}, {"padding": "edge"}, {"text": "x"}, {"chunk_depth": 0}, {"min_depth": 0}])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        SamplerConfig(**kwargs)


# ---------- the organ z-prior (SigVLP on a dataset without organ masks) ----------

PRIOR_SENTENCES = {"thyroid": ["Thyroid gland is enlarged."], "heart": ["Cardiomegaly."],
                   "abdomen": ["Liver is steatotic."], "other": ["Port catheter."]}


@pytest.mark.parametrize("z0, z1, expected", [
    (0, 10, ["abdomen"]),            # abdomen [0, 30) of 100 slices
    (20, 40, ["heart", "abdomen"]),  # heart [15, 55), report order
    (55, 90, []),                    # between the heart's end and the thyroid's start [90, 100)
    (85, 95, ["thyroid"]),
])
def test_z_prior_places_organs_without_masks(z0, z1, expected):
    rec = VolumeRecord(FakeVolume(100), impressions="Impression.", organ_sentences=PRIOR_SENTENCES)
    t = choose_text(rec, "organs", z0, z1, organ_z_prior=True)
    assert t["organs"] == expected  # "other" has no prior: never placed
    if expected:
        assert t["text_source"] == "organs"
        assert t["sentences"] == [s for o in expected for s in PRIOR_SENTENCES[o]]
    off = choose_text(rec, "organs", z0, z1)  # without the prior: nothing is placed
    assert off["organs"] == [] and off["text_source"] == "impressions"


def test_organ_masks_take_precedence_over_the_z_prior():
    # A heart mask at [0, 10): the masks alone place organs (not the prior's heart [15, 55), nor its abdomen);
    # an empty thyroid mask: the thyroid is absent. A body mask alone is no organ mask: the prior applies.
    vol = FakeVolume(100, extents={"heart": (0, 10), "body": (0, 100)})
    vol.mask_names = ["heart", "thyroid", "body"]
    rec = VolumeRecord(vol, organ_sentences=PRIOR_SENTENCES)
    assert choose_text(rec, "organs", 20, 40, organ_z_prior=True)["organs"] == []
    assert choose_text(rec, "organs", 0, 5, organ_z_prior=True)["organs"] == ["heart"]
    assert choose_text(rec, "organs", 90, 100, organ_z_prior=True)["organs"] == []
    body_only = FakeVolume(100, extents={"body": (0, 100)})
    rec = VolumeRecord(body_only, organ_sentences=PRIOR_SENTENCES)
    assert choose_text(rec, "organs", 20, 40, organ_z_prior=True)["organs"] == ["heart", "abdomen"]


@pytest.mark.usefixtures("one_thread")
def test_chunks_of_a_maskless_cache_get_the_organs_in_their_z_range(tmp_path):
    """A synthetic cohort prepared without its masks (as plain CT-RATE: the parser's organ sentences, no
    organ mask): SigVLP's chunks get the sentences of exactly the organs whose prior extent overlaps
    the chunk's slices."""
    from ctvlp.cli import main
    from ctvlp.data.cache import Cache
    from ctvlp.data.loader import CTDataset
    from ctvlp.data.sampling import ORGAN_Z_PRIOR
    from ctvlp.recipes import get_recipe

    assert main(["synth", "--out", str(tmp_path / "cohort"), "--n", "6", "--matrix", "32", "--seed", "2"]) == 0
    assert main(["manifest", "ctrate", str(tmp_path / "cohort"), "--out", str(tmp_path / "m.parquet")]) == 0
    assert main(["prepare", "--manifest", str(tmp_path / "m.parquet"), "--out", str(tmp_path / "cache")]) == 0
    cache = Cache(tmp_path / "cache")
    sampler = get_recipe("sigvlp", debug=True).data.sampler
    assert sampler.mode == "chunk" and sampler.text == "organs" and sampler.organ_z_prior
    dataset = CTDataset(cache, sampler, seed=0)
    placed = 0
    for epoch in range(3):
        for i in range(len(dataset)):
            record = dataset.record(i)
            assert set(record.volume.mask_names) <= {"body"}  # no organ masks
            sample = dataset[epoch, i]
            depth = record.volume.shape[0]
            inside = [o for o, sents in record.organ_sentences.items() if sents and o in ORGAN_Z_PRIOR
                      and math.floor(ORGAN_Z_PRIOR[o][0] * depth + 1e-9) < sample["z1"]
                      and math.ceil(ORGAN_Z_PRIOR[o][1] * depth - 1e-9) > sample["z0"]]
            assert sample["organs"] == inside
            if inside:
                placed += 1
                assert sample["text_source"] == "organs"
                assert sample["sentences"] == [s for o in inside for s in record.organ_sentences[o]]
    assert placed >= len(dataset)  # most chunks get organ sentences (without the prior: none)
    off = CTDataset(cache, dataclasses.replace(sampler, organ_z_prior=False), seed=0)
    assert all(off[0, i]["organs"] == [] for i in range(len(off)))
