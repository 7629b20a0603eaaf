"""Issue 17 item 3: the full recipes name their papers' text encoders by hub id (CXR-BERT for CT-CLIP, SegVL and
COLIPRI, BioClinicalBERT for SCALE-VLP); without network or a local copy, building one fails at once with one line
naming the id and the `--set` that trains with the packaged MiniLM. Offline: the hub is never reached here."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
import transformers

from ctvlp.cli import main
from ctvlp.models.text import (CXR_BERT, CXR_BERT_REVISION, MINILM_POSITIONS, TINY_BERT, TRUSTED_TEXT_TOWERS, TextTower,
                               TextTowerConfig, TextTowerError, minilm_dir, recipe_trusts)
from ctvlp.recipes import NAMES, get_recipe
from ctvlp.recipes.cohort import cohort_variant

PAPER_TOWERS = {  # recipe: (hub id, pooling, max_length, trust_remote_code, revision, training token budget)
    "ctclip": (CXR_BERT, "cls", 512, True, CXR_BERT_REVISION, 512),
    "segvl": (CXR_BERT, "cls", 512, True, CXR_BERT_REVISION, 512),
    "colipri": (CXR_BERT, "mean_query", 512, True, CXR_BERT_REVISION, 256),  # 256: its decoder shares the tokens
    "scalevlp": ("emilyalsentzer/Bio_ClinicalBERT", "mean", 512, False, None, 512),
}


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache and no network (HF_HUB_OFFLINE): what a machine without the model sees."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("name", sorted(PAPER_TOWERS))
def test_full_recipes_name_their_papers_text_encoder(name):
    cfg = get_recipe(name)
    text = cfg.model.text
    assert (text.name, text.pooling, text.max_length, text.trust_remote_code, text.revision,
            cfg.data.max_text_tokens) == PAPER_TOWERS[name]
    assert text.freeze == ("all" if name == "scalevlp" else "none")  # SCALE-VLP's BioClinicalBERT is frozen
    assert CXR_BERT == "microsoft/BiomedVLP-CXR-BERT-specialized" and len(CXR_BERT_REVISION) == 40


def test_the_trusted_towers_are_exactly_the_recipes_that_trust_one():
    """models.text.TRUSTED_TEXT_TOWERS (what a stored model's recipe may trust) lists every recipe that sets
    trust_remote_code, with exactly its hub id and pinned revision, and nothing else."""
    trusting = {name: (get_recipe(name).model.text.name, get_recipe(name).model.text.revision)
                for name in NAMES if get_recipe(name).model.text.trust_remote_code}
    assert TRUSTED_TEXT_TOWERS == trusting == {name: (CXR_BERT, CXR_BERT_REVISION) for name in ("ctclip", "segvl",
                                                                                              "colipri")}
    own = get_recipe("ctclip").model.text
    assert recipe_trusts("ctclip", own) and not recipe_trusts("custom", own) and not recipe_trusts("demo", own)
    for changed in ({"revision": "main"}, {"revision": None}, {"name": "someone/else"}, {"trust_remote_code": False}):
        assert not recipe_trusts("ctclip", TextTowerConfig(**{**own.__dict__, **changed})), changed


@pytest.mark.parametrize("name", ["sigvlp", "uniferum", "demo"])
def test_silent_papers_and_the_demo_keep_the_packaged_minilm(name):
    text = get_recipe(name).model.text
    assert (text.name, text.trust_remote_code, text.revision) == ("minilm", False, None)


@pytest.mark.parametrize("name", sorted(PAPER_TOWERS))
def test_debug_and_cohort_variants_keep_the_offline_towers(name):
    paper = get_recipe(name)
    debug, cohort = get_recipe(name, debug=True).model.text, cohort_variant(paper).model.text
    assert (debug.name, debug.trust_remote_code, debug.revision) == ("tiny", False, None)
    assert (cohort.name, cohort.trust_remote_code, cohort.revision) == ("minilm", False, None)
    assert debug.pooling == cohort.pooling == paper.model.text.pooling


@pytest.mark.parametrize("name", sorted(PAPER_TOWERS))
def test_an_uncached_hub_tower_fails_at_once_with_the_minilm_set(no_hub, name):
    text = get_recipe(name).model.text
    start = time.perf_counter()
    with pytest.raises(TextTowerError) as err:
        TextTower(text)
    elapsed = time.perf_counter() - start
    message = str(err.value)
    assert elapsed < 5, elapsed
    assert "\n" not in message and f"{text.name!r}" in message and "not in the Hugging Face cache" in message
    assert "--set model.text.name=minilm" in message
    assert ("--set model.text.trust_remote_code=false" in message) == text.trust_remote_code
    assert text.max_length <= MINILM_POSITIONS and "max_length" not in message  # 512 fits MiniLM's positions


def test_the_printed_set_is_a_minilm_that_builds(no_hub):
    from ctvlp.config import apply_overrides

    cfg = get_recipe("ctclip")
    with pytest.raises(TextTowerError) as err:
        TextTower(cfg.model.text)
    sets = [part.split(" ")[0] for part in str(err.value).split("--set ")[1:]]
    fixed = apply_overrides(cfg, sets).model.text
    tower = TextTower(fixed)  # the packaged MiniLM, offline, the recipe's CLS pooling and 512 tokens
    assert (fixed.name, fixed.pooling, fixed.max_length, tower.width) == ("minilm", "cls", 512, 384)


def test_hub_id_without_network_fails_fast_even_without_hf_hub_offline(monkeypatch, tmp_path):
    """No HF_HUB_OFFLINE: one request (no retries) finds the hub unreachable; transformers alone retried ~50 s."""
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(TextTowerError, match="neither in the Hugging Face cache nor reachable on the hub.*"
                                             "--set model.text.name=minilm"):
        TextTower(TextTowerConfig(name="emilyalsentzer/Bio_ClinicalBERT", max_length=512))
    assert time.perf_counter() - start < 10


def test_a_longer_budget_than_minilm_is_in_the_printed_set(no_hub):
    with pytest.raises(TextTowerError, match="--set model.text.max_length=512"):
        TextTower(TextTowerConfig(name="some-org/long-bert", max_length=1024))


def test_cli_train_exits_2_with_one_line_before_the_vision_tower(no_hub, tmp_path, capsys, monkeypatch):
    """`ctvlp train --recipe ctclip` on a ctclip cache: past the preprocessing check, the text tower fails before
    the (large) vision tower is allocated."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    import ctvlp.models.vlp as vlp
    from ctvlp.data.manifest import Manifest

    rows = []
    for k, split in enumerate(("train", "train", "valid", "test")):
        hu = np.full((40, 40, 12), -1000, np.int16)
        hu[8:32, 8:32, 2:10] = 40
        nib.save(nib.Nifti1Image(hu, np.diag([-1.5, -1.5, 3.0, 1.0])), tmp_path / f"v{k}.nii.gz")
        rows.append({"id": f"v{k}", "split": split, "path": str(tmp_path / f"v{k}.nii.gz"),
                     "findings": "Lungs are clear."})
    Manifest(pd.DataFrame(rows)).save(tmp_path / "m.parquet")
    cache = tmp_path / "cache"
    assert main(["prepare", "--recipe", "ctclip", "--manifest", str(tmp_path / "m.parquet"), "--out", str(cache),
                 "--no-progress"]) == 0
    capsys.readouterr()

    def no_vision(*args, **kwargs):
        raise AssertionError("the vision tower was built before the text tower was checked")

    monkeypatch.setattr(vlp, "create_vision_tower", no_vision)
    start = time.perf_counter()
    assert main(["train", "--recipe", "ctclip", "--data", str(cache), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in (repr(CXR_BERT), "not in the Hugging Face cache",
                   "--set model.text.name=minilm --set model.text.trust_remote_code=false"):
        assert needle in err, (needle, err)
    assert elapsed < 30, elapsed
    assert main(["config", "ctclip"]) == 0  # printing the config needs no network
    assert CXR_BERT in capsys.readouterr().out


def test_a_local_folder_of_the_same_architecture_loads_by_name(tmp_path):
    """A random BERT of CXR-BERT's shape class (tiny here) saved to a folder loads as the recipe's tower would."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=tokenizer.vocab_size, **TINY_BERT)).eval()
    bert.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    tower = TextTower(TextTowerConfig(name=str(tmp_path / "bert"), pooling="cls", max_length=512)).eval()
    tokens = tower.tokenize(["No pleural effusion.", "word " * 600])
    assert tokens["input_ids"].shape == (2, 512)
    with torch.no_grad():
        expected = bert(**tokens).last_hidden_state[:, 0]
    torch.testing.assert_close(tower(**tokens), expected, atol=1e-6, rtol=0)


def test_mean_query_pooling_is_colipris_attention_pool():
    """COLIPRI's AttentionPool1D: torch MHA, query = masked mean of the tokens, padding masked; no norm."""
    torch.manual_seed(0)
    tower = TextTower(TextTowerConfig(name="tiny", pooling="mean_query")).eval()
    tokens = tower.tokenize(["Small left pleural effusion.", "No nodules."])
    mask = tokens["attention_mask"].bool()
    with torch.no_grad():
        hidden = tower.model(**tokens).last_hidden_state
        out = tower(**tokens)
        for i in range(2):  # each sample alone, its padding cut off: the same vector
            h = hidden[i:i + 1, mask[i]]
            ref, _ = tower.pool.attn(h.mean(1, keepdim=True), h, h)
            torch.testing.assert_close(out[i], ref[0, 0], atol=1e-6, rtol=0)
    assert {n for n, _ in tower.pool.named_parameters()} == {"attn.in_proj_weight", "attn.in_proj_bias",
                                                             "attn.out_proj.weight", "attn.out_proj.bias"}


def wrapped_bert_model(folder, marker):
    """A local model folder shaped like CXR-BERT on the hub: config with auto_map to its own module, whose
    AutoModel class wraps a BertModel as ``.bert`` beside a head of its own (written here, not CXR-BERT's code)."""
    folder.mkdir()
    for name in ("vocab.txt", "special_tokens_map.json"):
        (folder / name).write_bytes((minilm_dir() / name).read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({  # a tokenizer class of its own, as CXR-BERT's
        "do_lower_case": True, "tokenizer_class": "WrappedTokenizer", "model_max_length": 512,
        "auto_map": {"AutoTokenizer": ["tokenization_wrapped.WrappedTokenizer", None]}}))
    (folder / "tokenization_wrapped.py").write_text(
        "from transformers import BertTokenizer\n\n\nclass WrappedTokenizer(BertTokenizer):\n"
        "    def __init__(self, **kwargs):\n        super().__init__(**kwargs)\n")
    (folder / "modeling_wrapped.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from torch import nn\n"
        "from transformers import BertConfig, BertModel, BertPreTrainedModel\n\n\n"
        "class WrappedConfig(BertConfig):\n    model_type = 'wrapped-bert'\n\n\n"
        "class WrappedModel(BertPreTrainedModel):\n    config_class = WrappedConfig\n\n"
        "    def __init__(self, config):\n        super().__init__(config)\n"
        "        self.bert = BertModel(config, add_pooling_layer=False)\n"
        "        self.head = nn.Linear(config.hidden_size, 8)\n        self.post_init()\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "wrapped-bert", "vocab_size": 30522, **TINY_BERT,
        "auto_map": {"AutoConfig": "modeling_wrapped.WrappedConfig", "AutoModel": "modeling_wrapped.WrappedModel"}}))
    return folder


def test_a_wrapped_bert_with_its_own_code_is_refused_without_trust(tmp_path):
    marker = tmp_path / "IMPORTED"
    model = wrapped_bert_model(tmp_path / "wrapped", marker)
    with pytest.raises(TextTowerError, match="ships its own Python code"):
        TextTower(TextTowerConfig(name=str(model), pretrained=False))
    assert not marker.exists()


CHILD = r'''
import dataclasses, sys, time
from pathlib import Path
import torch, transformers
import ctvlp
from ctvlp.config import to_dict
from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.inference.export import export_model
from ctvlp.models.text import TextTowerError
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.recipes import get_recipe
from ctvlp.train.checkpoint import save_checkpoint
from ctvlp.recipes.run import load_trained

out = Path(sys.argv[1])
cfg = get_recipe("ctclip", debug=True)  # tiny CTViT; the recipe's own text tower (the cached CXR-BERT stand-in)
cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, text=get_recipe("ctclip").model.text))
torch.manual_seed(0)
model = VisionLanguageModel(cfg.model).eval()
assert type(model.text.model) is transformers.BertModel and type(model.text.tokenizer) is transformers.BertTokenizer
state = {"config": to_dict(cfg), "recipe": cfg.recipe, "preprocess": to_dict(PreprocessConfig()), "label_names": [],
         "prompts": {}, "model": model.state_dict(), "step": 1}
path = save_checkpoint(out / "run" / "checkpoints", state, keep_last=1)
text = ["Mild cardiomegaly."]
trained = load_trained(path)  # no trust passed: the registered ctclip recipe pins this id and revision
same = torch.equal(trained.model.text.encode(text), model.text.encode(text))
crafted = dict(state, config=to_dict(dataclasses.replace(cfg, recipe="custom")))
try:
    load_trained(save_checkpoint(out / "crafted", crafted, keep_last=1))
    refused = False
except TextTowerError as err:
    refused = "ships its own Python code" in str(err)
exported = export_model(ctvlp.load_model(path), out / "export")
again = ctvlp.load_model(exported)  # a plain BERT folder: no trust needed
print("RESULT", same, refused, torch.allclose(again.model.text.encode(text), model.text.encode(text), atol=1e-6))
'''


def test_a_cached_cxr_bert_loads_through_the_recipe_and_its_checkpoint_and_export_load_back(tmp_path):
    """A CXR-BERT-shaped stand-in (tiny, random, its own code) in a Hugging Face cache at the recipe's pinned
    revision: the ctclip text config builds it offline; its checkpoint loads without the caller's trust (the
    recipe's), a checkpoint claiming another recipe is refused, and its export loads as plain BERT."""
    marker = tmp_path / "IMPORTED"
    snapshot = (tmp_path / "hub" / f"models--{CXR_BERT.replace('/', '--')}" / "snapshots" / CXR_BERT_REVISION)
    snapshot.parent.mkdir(parents=True)
    wrapped_bert_model(snapshot, marker)
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    weights = transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=tokenizer.vocab_size, **TINY_BERT))
    weights.save_pretrained(tmp_path / "weights")  # "bert.*" keys, as CXR-BERT's checkpoint
    (snapshot / "model.safetensors").write_bytes((tmp_path / "weights" / "model.safetensors").read_bytes())
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "RESULT True True True", done.stdout
    assert marker.exists()
    text = tmp_path / "export" / "text"  # CXRBertModel -> its BertModel, CXRBertTokenizer -> BertTokenizer
    config, tokenizer = (json.loads((text / f).read_text()) for f in ("config.json", "tokenizer_config.json"))
    assert config["model_type"] == "bert" and "auto_map" not in config and "auto_map" not in tokenizer
    assert tokenizer["tokenizer_class"] == "BertTokenizer" and not list(text.glob("*.py"))
