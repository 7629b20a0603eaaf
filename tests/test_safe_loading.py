"""Nothing ctvlp loads runs code: crafted checkpoints, exports, YAML and remote-code text towers are
refused with one clear line, and the payload (which provably runs when unpickled) never runs."""

from __future__ import annotations

import builtins
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import ctvlp
from ctvlp.cli import main
from ctvlp.config import apply_overrides
from ctvlp.data.prompts import load_prompts
from ctvlp.errors import CtvlpError
from ctvlp.models.text import TINY_BERT, TextTower, TextTowerConfig, TextTowerError, minilm_dir
from ctvlp.models.store import FORMAT, FORMAT_VERSION, CheckpointError, load_checkpoint
from ctvlp.recipes import get_recipe
from ctvlp.train.checkpoint import rng_state, save_checkpoint, set_rng_state
from ctvlp.train.loop import Trainer
from ctvlp.recipes.run import load_trained
from conftest import make_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")


class Payload:
    """Unpickling this object runs ``exec``, which creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


def write_evil_checkpoint(run: Path, marker: Path) -> Path:
    """RUN/checkpoints/step-0000001.pt with the right format fields and a payload in place of the weights."""
    path = run / "checkpoints" / "step-0000001.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "ctvlp_version": ctvlp.__version__, "step": 1,
                "model": Payload(marker)}, path)
    return path


def expect_refusal(capsys, argv: list[str], *needles: str) -> str:
    """The command exits 2 with one stderr line holding every needle."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(n in err for n in needles), err
    return err


def train_argv(env: dict, out: Path, *extra: str) -> list[str]:
    return ["train", "--recipe", "demo", "--debug", "--data", env["cache"], "--out", str(out), "--no-progress",
            "--no-eval", *extra]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """A cache, a one-step demo run, its export and a volume to score."""
    root = tmp_path_factory.mktemp("safe_loading")
    cache = make_synthetic_cache(root, 12, 5)
    Trainer(apply_overrides(get_recipe("demo", debug=True), ["steps=1"]), cache, root / "run", progress=False).fit()
    assert main(["export", str(root / "run"), "--out", str(root / "export")]) == 0
    volume = next((root / "cohort" / "dataset" / "valid").rglob("*.nii.gz"))
    return {"cache": str(cache), "run": root / "run", "export": root / "export", "volume": str(volume)}


@pytest.fixture(scope="module")
def evil(tmp_path_factory) -> dict:
    """A run folder whose only checkpoint is a payload, and the marker the payload would create."""
    root = tmp_path_factory.mktemp("evil")
    marker = root / "MARKER"
    return {"run": root / "run", "file": write_evil_checkpoint(root / "run", marker), "marker": marker}


def test_the_payload_is_live(tmp_path):
    marker = tmp_path / "MARKER"
    path = write_evil_checkpoint(tmp_path / "run", marker)
    torch.load(path, weights_only=False)  # what ctvlp did before format 2
    assert marker.exists()


@pytest.mark.parametrize("command", ["eval", "zeroshot", "export", "train --resume"])
def test_a_malicious_checkpoint_is_refused_by_every_command(env, evil, capsys, tmp_path, command):
    argv = {"eval": ["eval", "--checkpoint", str(evil["run"]), "--data", env["cache"], "--out", str(tmp_path / "ev")],
            "zeroshot": ["zeroshot", env["volume"], "--checkpoint", str(evil["run"])],
            "export": ["export", str(evil["run"]), "--out", str(tmp_path / "exp")],
            "train --resume": train_argv(env, evil["run"], "--steps", "2", "--resume")}[command]
    expect_refusal(capsys, argv, str(evil["file"]), "refused: reading it would unpickle exec, which can run code")
    assert not evil["marker"].exists()


@pytest.mark.parametrize("loader", [ctvlp.load_model, load_trained, load_checkpoint])
def test_a_malicious_checkpoint_is_refused_by_the_python_api(evil, loader):
    for source in (evil["run"], evil["file"]):
        with pytest.raises(CheckpointError, match="refused: reading it would unpickle exec"):
            loader(source)
    assert not evil["marker"].exists()


def test_a_checkpoint_holds_only_tensors_and_plain_values(env):
    path = env["run"] / "checkpoints" / "step-0000001.pt"
    state = torch.load(path, weights_only=True)  # plain torch, no ctvlp allow-list
    assert state["version"] == FORMAT_VERSION == 2
    assert state["config"]["optim"]["name"] == "muon" and state["optimizer"]["state"]  # Muon + AdamW moments
    assert state["scheduler"]["last_epoch"] == 1
    json.dumps({k: state["rng"][k] for k in ("numpy", "python")})  # generator states as plain JSON values


def test_rng_state_round_trips_exactly():
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian behind in numpy's legacy state
    random.gauss(0, 1)  # and in python's
    saved = rng_state()
    draws = torch.rand(3), np.random.standard_normal(3), random.gauss(0, 1), random.random()
    set_rng_state(json.loads(json.dumps({k: saved[k] for k in ("numpy", "python")})) | {"torch": saved["torch"]})
    again = torch.rand(3), np.random.standard_normal(3), random.gauss(0, 1), random.random()
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2:] == again[2:]


def test_a_format_1_checkpoint_is_refused_with_the_reason(env, capsys, tmp_path):
    state = load_checkpoint(env["run"])
    state.pop("path")
    legacy = {**state, "version": 1, "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                             "python": random.getstate()}}  # what format 1 stored
    path = tmp_path / "old" / "checkpoints" / "step-0000001.pt"
    path.parent.mkdir(parents=True)
    torch.save(legacy, path)
    expect_refusal(capsys, ["zeroshot", env["volume"], "--checkpoint", str(path)], str(path),
                   "would unpickle numpy.", "format 1 (older ctvlp) needs unpickling too: train it again")


def test_a_truncated_checkpoint_is_one_line_naming_the_file(env, capsys, tmp_path):
    data = (env["run"] / "checkpoints" / "step-0000001.pt").read_bytes()
    path = tmp_path / "step-0000001.pt"
    path.write_bytes(data[: len(data) // 2])
    expect_refusal(capsys, ["zeroshot", env["volume"], "--checkpoint", str(path)], str(path),
                   "not a readable checkpoint (truncated or corrupt?)")


def text_tower_copy(env, tmp_path) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(env["export"], folder)
    return folder


def test_an_export_whose_text_tower_is_a_pickle_is_refused_unread(env, capsys, tmp_path):
    folder, marker = text_tower_copy(env, tmp_path), tmp_path / "MARKER"
    (folder / "text" / "model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": Payload(marker)}, folder / "text" / "pytorch_model.bin")
    expect_refusal(capsys, ["zeroshot", env["volume"], "--checkpoint", str(folder)], str(folder),
                   "text/model.safetensors missing (text/pytorch_model.bin is a pickle file, which ctvlp never reads")
    # transformers alone would not run it either: it reads a .bin with torch.load(weights_only=True)
    with pytest.raises(TextTowerError, match="refused: its weights are a pickle file"):
        TextTower(TextTowerConfig(name=str(folder / "text")))
    assert not marker.exists()


@pytest.mark.parametrize("remove, message", [("text", "export has no text tower: text/ is missing"),
                                             ("text/model.safetensors", "text/model.safetensors missing"),
                                             ("text/config.json", "text/config.json missing")])
def test_an_export_missing_its_text_tower_is_one_line(env, capsys, tmp_path, remove, message):
    folder = text_tower_copy(env, tmp_path)
    target = folder / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    expect_refusal(capsys, ["zeroshot", env["volume"], "--checkpoint", str(folder)], str(folder), message)


def test_a_prompt_yaml_with_a_python_tag_is_refused(env, capsys, tmp_path):
    marker = tmp_path / "MARKER"
    evil_yaml = tmp_path / "evil.yaml"
    evil_yaml.write_text(f'styles: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(CtvlpError, match="bad prompt file: could not determine a constructor"):
        load_prompts(evil_yaml)
    expect_refusal(capsys, ["eval", "--checkpoint", str(env["run"]), "--data", env["cache"], "--out",
                            str(tmp_path / "ev"), "--tasks", "zeroshot", "--prompt-style", "ctclip",
                            "--prompts", str(evil_yaml)], str(evil_yaml), "python/object/apply:os.system")
    assert not marker.exists()
    yaml.unsafe_load(evil_yaml.read_text())  # the payload is live
    assert marker.exists()


def test_a_set_override_with_a_python_tag_is_refused(env, capsys, tmp_path):
    marker = tmp_path / "MARKER"
    value = f'!!python/object/apply:os.system ["touch {marker}"]'
    expect_refusal(capsys, train_argv(env, tmp_path / "o", "--set", f"recipe={value}"),
                   "--set 'recipe=!!python/object/apply:os.system", "give a plain value")
    assert not marker.exists() and not (tmp_path / "o").exists()
    yaml.unsafe_load(value)  # the payload is live
    assert marker.exists()


def remote_code_model(folder: Path, marker: Path) -> Path:
    """A local Hugging Face model folder whose config maps AutoConfig/AutoModel to its own .py file,
    which creates ``marker`` when imported."""
    folder.mkdir()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir() / name, folder / name)
    (folder / "modeling_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import BertConfig, BertModel\n\n\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evilbert'\n\n\n"
        "class EvilModel(BertModel):\n    config_class = EvilConfig\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evilbert", "vocab_size": 30522, **TINY_BERT,
        "auto_map": {"AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}}))
    return folder


def test_a_remote_code_text_tower_runs_only_when_the_user_trusts_it(env, capsys, tmp_path):
    marker = tmp_path / "MARKER"
    model = remote_code_model(tmp_path / "evil-model", marker)
    expect_refusal(capsys, train_argv(env, tmp_path / "o", "--set", f"model.text.name={model}"), str(model),
                   "ships its own Python code", "model.text.trust_remote_code=true")
    assert not marker.exists()
    # a checkpoint (or export) cannot grant itself the trust: its config asks for it, loading still refuses
    state = load_checkpoint(env["run"])
    state.pop("path")
    text = state["config"]["model"]["text"]
    text.update(name=str(model), trust_remote_code=True)
    crafted = save_checkpoint(tmp_path / "crafted", state, keep_last=1)
    with pytest.raises(TextTowerError, match="ships its own Python code"):
        ctvlp.load_model(crafted)
    assert not marker.exists()
    # the user's opt-in loads it (in a child process: transformers copies the module to HF_MODULES_CACHE)
    code = ("from ctvlp.models.text import TextTower, TextTowerConfig; import sys; "
            "t = TextTower(TextTowerConfig(name=sys.argv[1], pretrained=False, trust_remote_code=True)); "
            "print(type(t.model).__name__)")
    done = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")})
    assert done.returncode == 0 and done.stdout.strip() == "EvilModel", done.stderr
    assert marker.exists()
