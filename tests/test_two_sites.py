"""Two synthetic sites with different label sets merged into one manifest (Uniferum's data side).

Site A: a cohort in CT-RATE's layout (18 labels). Site B: another cohort written with ``--site
rad_chestct`` (RAD-ChestCT column names, no mosaic attenuation, no location of calcification), read
by the generic adapter through the packaged mapping file. After merge + prepare, every label is on
CT-RATE's vocabulary and site B's missing labels are unavailable (<NA>, label_mask False), never 0.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from ctvlp.cli import main
from ctvlp.data.adapters.labelmap import load_mapping
from ctvlp.data.cache import Cache
from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.data.loader import Collate, CTDataset
from ctvlp.data.sampling import SamplerConfig
from ctvlp.losses.masked_bce import masked_bce_loss

pytestmark = pytest.mark.usefixtures("one_thread")

SITE_B_LACKS = {"Mosaic attenuation pattern", "Arterial wall calcification", "Coronary artery wall calcification"}
PREFIX = "rad_chestct_"


def _run(*argv) -> None:
    assert main([str(a) for a in argv]) == 0, argv


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("two_sites")
    a, b = root / "A", root / "B"
    _run("synth", "--out", a, "--n", 12, "--seed", 0, "--matrix", 64)
    _run("synth", "--out", b, "--n", 12, "--seed", 1, "--matrix", 64, "--site", "rad_chestct")
    _run("manifest", "ctrate", a, "--radgenome", a / "radgenome", "--out", root / "a.parquet")
    _run("manifest", "generic", b / "rad_chestct.csv", "--label-map", "rad_chestct", "--source", "rad-chestct",
         "--out", root / "b.parquet")
    _run("manifest", "merge", root / "a.parquet", root / "b.parquet", "--out", root / "merged.parquet")
    _run("prepare", "--manifest", root / "merged.parquet", "--out", root / "cache")
    return root


def _truth(cohort: Path) -> pd.DataFrame:
    """The synthesiser's 18 labels per volume stem (its CT-RATE labels CSVs)."""
    folder = cohort / "dataset" / "multi_abnormality_labels"
    df = pd.concat([pd.read_csv(folder / f) for f in ("train_predicted_labels.csv", "valid_predicted_labels.csv")])
    return df.assign(stem=df["VolumeName"].str.replace(".nii.gz", "", regex=False)).set_index("stem")


def test_site_table_has_rad_chestct_columns_only(sites):
    table = pd.read_csv(sites / "B" / "rad_chestct.csv")
    mapping = load_mapping("rad_chestct")
    labels = [c for c in table.columns if c not in {"path", "id", "patient_id", "scan_id", "recon_id", "split",
                                                    "clinical", "technique", "findings", "impressions", "masks"}]
    assert labels and set(labels) <= set(mapping.columns)  # every label column is one the mapping knows
    assert not {c for c in labels if mapping.columns[c] in SITE_B_LACKS}  # nothing maps to what B lacks
    assert "calcification" in labels and mapping.columns["calcification"] is None  # present, unlocalised
    truth = _truth(sites / "B").loc[table["id"].str[len(PREFIX):]]
    devices = table["catheter_or_port"].to_numpy() + table["pacemaker_or_defib"].to_numpy()
    assert (devices == truth["Medical material"].to_numpy()).all()  # one device column per volume with one


def test_merged_cache_availability_and_values(sites):
    cache = Cache(sites / "cache")
    assert len(cache) == 24 and set(cache.index["source"]) == {"ct-rate", "rad-chestct"}
    ds = CTDataset(cache, SamplerConfig(mode="whole", text="report"))
    assert ds.label_names == list(CTRATE_LABELS)
    lacks = [name in SITE_B_LACKS for name in ds.label_names]  # (K,)
    truth = {"ct-rate": _truth(sites / "A"), "rad-chestct": _truth(sites / "B")}
    for i, row in ds.index.iterrows():
        site_b = row["source"] == "rad-chestct"
        expected_mask = [not lack for lack in lacks] if site_b else [True] * len(lacks)
        assert ds.label_mask[i].tolist() == expected_mask, row["id"]
        stem = row["id"][len(PREFIX):] if site_b else row["id"]
        assert site_b == row["id"].startswith(PREFIX)
        gt = truth[row["source"]].loc[stem]
        for k, name in enumerate(ds.label_names):
            assert ds.labels[i, k] == (gt[name] if ds.label_mask[i, k] else 0.0), (row["id"], name)
        assert pd.isna(row["label:Mosaic attenuation pattern"]) == site_b  # <NA> in the index, not 0


def test_site_b_samples_and_masked_loss(sites):
    """Through the sampler and collate: site B's missing labels are False in label_mask and give a
    masked BCE exactly zero gradient; site B keeps its region masks."""
    cache = Cache(sites / "cache")
    ds = CTDataset(cache, SamplerConfig(mode="whole", text="report", size=(32, 32), max_slices=8))
    b_rows = ds.index.index[ds.index["source"] == "rad-chestct"].tolist()[:4]
    batch = Collate.for_dataset(ds)([ds[i] for i in b_rows])
    missing = torch.tensor([name in SITE_B_LACKS for name in ds.label_names])
    assert (batch["label_mask"] == ~missing).all()
    logits = torch.randn(batch["labels"].shape, requires_grad=True)
    masked_bce_loss(logits, batch["labels"], batch["label_mask"]).backward()
    assert (logits.grad[:, missing] == 0).all() and (logits.grad[:, ~missing] != 0).all()
    assert all("lung" in cache.volume(ds.index.loc[i, "id"]).mask_names for i in b_rows)


def test_site_needs_hu_volumes(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "x"), "--n", "2", "--site", "rad_chestct",
                 "--raw-fraction", "0.2"]) == 2
    assert "--raw-fraction 0" in capsys.readouterr().err
