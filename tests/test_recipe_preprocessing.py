"""Issue 17 item 2: the recipe owns its preprocessing. `ctvlp prepare --recipe NAME` makes the cache the recipe
trains on; `ctvlp train` refuses a cache prepared otherwise, before any weights are built or loaded, with one
line naming both settings and the command that makes the right cache."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from ctvlp.cli import main
from ctvlp.config import apply_overrides
from ctvlp.data.cache import Cache
from ctvlp.data.manifest import Manifest
from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.errors import BadDatasetError
from ctvlp.recipes import NAMES, get_recipe
from ctvlp.recipes.cohort import cohort_variant
from ctvlp.train.requirements import check_preprocessing


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Two small chest-like NIfTI volumes at 0.8 x 0.8 x 2.5 mm (LPS), each with a report."""
    root = tmp_path_factory.mktemp("prep")
    rows = []
    for k in range(2):
        x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in (48, 40, 16)], indexing="ij")
        hu = np.full(x.shape, -1000, np.int16)
        hu[(x / 0.8) ** 2 + (y / 0.7) ** 2 < 1] = 40
        hu[((x - 0.3) / 0.25) ** 2 + (y / 0.3) ** 2 < 1] = -850
        nib.save(nib.Nifti1Image(hu, np.diag([-0.8, -0.8, 2.5, 1.0])), root / f"v{k}.nii.gz")
        rows.append({"id": f"v{k}", "split": "train", "path": str(root / f"v{k}.nii.gz"),
                     "findings": "Lungs are clear."})
    path = root / "m.parquet"
    Manifest(pd.DataFrame(rows)).save(path)
    return path


def recorded(cache) -> dict:
    return json.loads((cache / "preprocessing.json").read_text())["preprocess"]


@pytest.mark.parametrize("name", NAMES)
def test_prepare_with_recipe_records_exactly_the_recipes_preprocessing(manifest, tmp_path, name):
    out = tmp_path / name
    assert main(["prepare", "--recipe", name, "--manifest", str(manifest), "--out", str(out), "--no-progress",
                 "--limit", "1"]) == 0
    assert recorded(out) == get_recipe(name).data.preprocess.to_dict()


def test_recipe_grids_are_the_papers():
    spacing = {name: get_recipe(name).data.preprocess.spacing for name in NAMES}
    assert spacing["ctclip"] == spacing["segvl"] == (0.75, 0.75, 1.5)  # CT-CLIP's grid; SegVL takes its input
    assert spacing["colipri"] == (2.0, 2.0, 2.0)
    assert spacing["sigvlp"][2] == 1.5 and spacing["demo"] == (3.0, 3.0, 6.0)
    assert not get_recipe("ctclip").data.preprocess.crop_to_body  # centre crop/pad of the full field of view
    # the in-plane crop covers what the paper's does: 480 x 0.75 = 360 mm, 160 x 2 = 320 mm, 256 x 1.5 = 384 mm
    for name, mm in (("ctclip", 360.0), ("colipri", 320.0), ("sigvlp", 384.0)):
        cfg = get_recipe(name)
        assert cfg.data.sampler.size[0] * cfg.data.preprocess.spacing[1] == mm
    assert get_recipe("sigvlp").data.sampler.chunk_depth * spacing["sigvlp"][2] == 48.0  # a 48 mm chunk


def test_debug_and_cohort_variants_declare_their_own():
    for name in NAMES:
        assert get_recipe(name, debug=True).data.preprocess == PreprocessConfig()
        assert cohort_variant(get_recipe(name)).data.preprocess == get_recipe("demo").data.preprocess


def test_explicit_flags_override_the_recipe(manifest, tmp_path):
    out = tmp_path / "c"
    assert main(["prepare", "--recipe", "ctclip", "--spacing", "2,2,4", "--window=-500,500", "--manifest",
                 str(manifest), "--out", str(out), "--no-progress", "--limit", "1"]) == 0
    assert recorded(out) == {**get_recipe("ctclip").data.preprocess.to_dict(), "spacing": [2.0, 2.0, 4.0],
                             "hu_window": [-500.0, 500.0]}


def test_debug_without_recipe_is_refused(manifest, tmp_path, capsys):
    assert main(["prepare", "--debug", "--manifest", str(manifest), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--debug needs --recipe" in err


@pytest.fixture(scope="module")
def default_cache(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("default") / "cache"
    assert main(["prepare", "--manifest", str(manifest), "--out", str(out), "--no-progress"]) == 0
    return out


def test_train_refuses_another_grid_before_building_any_weights(default_cache, tmp_path, capsys, monkeypatch):
    import ctvlp.train.loop as loop

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the cache was checked")

    monkeypatch.setattr(loop, "VisionLanguageModel", no_model)
    assert main(["train", "--recipe", "ctclip", "--data", str(default_cache), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in (str(default_cache), "prepared with spacing 1.5,1.5,3, crop_to_body true",
                   "recipe 'ctclip' needs spacing 0.75,0.75,1.5, crop_to_body false",
                   "`ctvlp prepare --recipe ctclip --manifest MANIFEST --out NEW_CACHE`",
                   "--set 'data.preprocess.spacing=[1.5,1.5,3]' --set data.preprocess.crop_to_body=true"):
        assert needle in err, (needle, err)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_debug_variant_names_its_own_prepare_command(tmp_path, manifest, capsys):
    cache = tmp_path / "demo-cache"
    assert main(["prepare", "--recipe", "demo", "--manifest", str(manifest), "--out", str(cache),
                 "--no-progress"]) == 0
    assert main(["train", "--recipe", "demo", "--debug", "--data", str(cache), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "needs spacing 1.5,1.5,3" in err and "`ctvlp prepare --recipe demo --debug --manifest" in err, err


def test_the_printed_set_accepts_the_cache_and_custom_grids_print_explicit_flags(default_cache):
    cache = Cache(default_cache)
    cfg = get_recipe("colipri")
    with pytest.raises(BadDatasetError) as err:
        check_preprocessing(cfg, cache)
    message = str(err.value)
    assert "`ctvlp prepare --spacing 2,2,2 --window=-1000,1000 --no-crop --manifest" in message
    sets = [part.split(" ")[0].strip("'") for part in message.split("--set ")[1:]]
    check_preprocessing(apply_overrides(cfg, sets), cache)  # accepted: no error
