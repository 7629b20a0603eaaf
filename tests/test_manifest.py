import numpy as np
import pandas as pd
import pytest

from ctvlp.data.manifest import Manifest
from ctvlp.errors import BadDatasetError


def _frame():
    return pd.DataFrame({
        "id": ["a", "b", "c"], "split": ["train", "train", "test"], "path": ["x", "y", "z"],
        "label:Cardiomegaly": [1, None, 0], "label:Emphysema": ["0", "1", ""],
    })


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_roundtrip_keeps_missing_labels_missing(tmp_path, suffix):
    m = Manifest(_frame())
    back = Manifest.load(m.save(tmp_path / f"m{suffix}"))
    values, available = back.labels()
    assert back.label_names == ["Cardiomegaly", "Emphysema"]
    np.testing.assert_array_equal(available, [[True, True], [False, True], [True, False]])
    np.testing.assert_array_equal(values, [[1, 0], [0, 1], [0, 0]])
    assert list(back.df["patient_id"]) == ["a", "b", "c"]  # defaults to the id


def test_duplicate_ids_and_missing_columns_are_refused(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        Manifest(pd.DataFrame({"id": ["a", "a"], "split": ["t", "t"], "path": ["x", "y"]}))
    bad = tmp_path / "bad.csv"
    bad.write_text("id,path\na,x\n")
    with pytest.raises(BadDatasetError, match="split"):
        Manifest.load(bad)
    with pytest.raises(BadDatasetError, match="not found"):
        Manifest.load(tmp_path / "none.parquet")


def test_split_selects_rows():
    assert list(Manifest(_frame()).split("train").df["id"]) == ["a", "b"]
