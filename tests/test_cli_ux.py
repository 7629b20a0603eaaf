"""What a user meets before anything runs: help that answers at once and names the registries' choices,
bad values refused in one line with exit code 2, `--device`, progress bars on stderr, and `ctvlp config`."""

from __future__ import annotations

import dataclasses
import json
import pkgutil
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from ctvlp.cli import main
from ctvlp.cli._model import device
from ctvlp.config import field_help, to_dict
import ctvlp.recipes
from ctvlp.recipes import NAMES, get_recipe
from ctvlp.train.optim import OptimConfig
from conftest import stderr_terminal


# ---------------------------------------------------------------- help


def test_help_of_every_command_imports_no_torch_and_shows_no_rest_markup():
    """In a fresh interpreter: building the parser loads neither torch nor numpy, no command's help loads
    torch (only synth's, whose choices come from numpy code, loads numpy), and no help shows reST."""
    code = textwrap.dedent("""
        import contextlib, io, re, sys
        from ctvlp.cli import SUBCOMMANDS, build_parser, main
        build_parser()
        assert not {"torch", "numpy"} & set(sys.modules), "building the parser"
        commands = [[], *([c] for c in SUBCOMMANDS if c != "synth"), ["manifest", "ctrate"], ["index", "build"],
                    ["synth"]]
        for command in commands:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert main([*command, "--help"]) == 0, command
            heavy = {"torch"} if command == ["synth"] else {"torch", "numpy"}
            assert not heavy & set(sys.modules), (command, heavy & set(sys.modules))
            markup = re.findall(r"``|:(?:func|class|data|mod|meth):`", out.getvalue())
            assert not markup, (command, markup)
            assert out.getvalue().startswith(f"usage: ctvlp {' '.join(command)}".rstrip()), command
        print(len(commands))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 19


def test_the_names_the_help_lists_are_those_the_code_runs(capsys):
    from ctvlp.data.prompt_names import CORPUS, LABEL_HEAD, prompt_style_names
    from ctvlp.data.prompts import load_prompts
    from ctvlp.eval.names import EVAL_TASKS
    from ctvlp.eval.suite import EXTRA_TASKS

    recipe_files = {m.name for m in pkgutil.iter_modules(ctvlp.recipes.__path__)} - {"common", "debug", "cohort", "run"}
    assert recipe_files == set(NAMES) and all(get_recipe(name).recipe == name for name in NAMES)
    assert set(EVAL_TASKS) == set(EXTRA_TASKS)
    assert set(prompt_style_names()) == {*load_prompts().styles, LABEL_HEAD, CORPUS}
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--recipe {" + ",".join(NAMES) + "}" in text and "--keep-last" not in text


# ---------------------------------------------------------------- bad values: one line, exit 2

EVAL = ["eval", "--checkpoint", "run", "--data", "cache", "--out", "ev"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--recipe", "sigvlpp", "--data", "c", "--out", "o"],
     "argument --recipe: invalid choice: 'sigvlpp' (choose from 'demo', 'ctclip', 'sigvlp', 'scalevlp', 'segvl', "
     "'uniferum', 'colipri')"),
    (["config", "sigvlpp"], "argument recipe: invalid choice: 'sigvlpp' (choose from 'demo', 'ctclip'"),
    (["config", "demo", "--set", "optim.lr=fast"], "optim.lr: 'fast' is not a float"),
    (["config", "demo", "--set", "optim.lrr=1"],
     "--set 'optim.lrr=1': optim.lrr is not a config field; fields here: ['betas'"),
    (EVAL + ["--tasks", "zeroshot,dance"],
     "argument --tasks: unknown task(s) dance in 'zeroshot,dance'; tasks: zeroshot, retrieval, probe, organs, "
     "segmentation, generation, robustness, seg_probe, real_masks"),
    (EVAL + ["--protocol", "17"], "argument --protocol: invalid choice: '17' (choose from '18', '16')"),
    (EVAL + ["--prompt-style", "fancy"], "--prompt-style 'fancy' is not a style of the packaged prompts; styles: "
                                         "ctclip, colipri, ensemble, report, organs, label_head, corpus"),
    (["synth", "--out", "o", "--n", "2", "--difficulty", "extreme"],
     "argument --difficulty: invalid choice: 'extreme' (choose from 'large', 'easy', 'medium', 'hard')"),
    (["train", "--data", "c"], "the following arguments are required: --recipe, --out"),
], ids=["recipe", "config-recipe", "set-type", "set-field", "tasks", "protocol", "prompt-style", "difficulty",
        "missing"])
def test_bad_value_is_one_line_naming_the_choices(argv, message, capsys):
    command = " ".join(argv[:1])
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"ctvlp {command}: error: {message}"), captured.err
    assert captured.err.count("\n") == 1 and captured.out == ""


MODEL_COMMANDS = {
    "zeroshot": ["zeroshot", "scan.nii.gz", "--checkpoint", "run"],
    "segment": ["segment", "scan.nii.gz", "--checkpoint", "run", "--prompt", "aorta", "--out", "h.nii.gz"],
    "generate": ["generate", "scan.nii.gz", "--checkpoint", "run"],
    "embed": ["embed", "scans", "--checkpoint", "run", "--out", "e.parquet"],
    "index build": ["index", "build", "scans", "--checkpoint", "run", "--out", "idx"],
    "retrieve": ["retrieve", "idx", "pleural effusion"],
    "eval": EVAL,
}


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_device_this_machine_lacks_or_a_bogus_one_is_refused(command, capsys):
    cases = [("nonsense", "'nonsense' is not a device; use auto, cpu, cuda, cuda:N or mps")]
    if torch.cuda.is_available():
        cases.append((f"cuda:{torch.cuda.device_count()}", f"this machine has {torch.cuda.device_count()} CUDA device"))
    else:
        cases.append(("cuda", "'cuda': CUDA is not available on this machine"))
    for name, message in cases:
        assert main([*MODEL_COMMANDS[command], "--device", name]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ctvlp {command}: error: argument --device: ") and message in err, err
        assert err.count("\n") == 1


def test_auto_device_is_cuda_when_torch_sees_a_gpu():
    assert device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert device("cpu") == torch.device("cpu")


# ---------------------------------------------------------------- progress


def test_synth_progress_bar_counts_the_volumes_on_stderr_only(tmp_path, capsys):
    argv = ["synth", "--n", "3", "--matrix", "32", "--seed", "1"]
    with stderr_terminal() as terminal:
        assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert "synth: 100%" in terminal.getvalue() and "| 3/3 [" in terminal.getvalue()
    assert capsys.readouterr().out.startswith("wrote 3 volumes")  # the bar never reaches stdout
    with stderr_terminal() as terminal:
        assert main([*argv, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert terminal.getvalue() == ""


# ---------------------------------------------------------------- ctvlp config


@pytest.mark.parametrize("name", NAMES)
def test_config_prints_every_field_with_help_as_yaml_that_reads_back(name, capsys):
    for debug in (False, True):
        assert main(["config", name, *(["--debug"] if debug else [])]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert yaml.safe_load("\n".join(lines)) == to_dict(get_recipe(name, debug=debug))
        assert lines[0].startswith("# ctvlp train --recipe " + name)
        assert all("  # " in line for line in lines[1:]), [line for line in lines if "  # " not in line]


def test_config_shows_the_set_values_a_fields_own_help_and_json(capsys):
    argv = ["config", "demo", "--debug", "--steps", "7", "--set", "optim.lr=0.02",
            "--set", "model.vision.rope_base=1e4"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    data = yaml.safe_load(text)
    assert (data["steps"], data["optim"]["lr"], data["model"]["vision"]["rope_base"]) == (7, 0.02, 10000.0)
    lines = text.splitlines()
    assert "--steps 7 --set optim.lr=0.02 --set model.vision.rope_base=1e4" in lines[0]
    assert f"  lr: 0.02  # {field_help(OptimConfig)['lr']}" in lines
    assert "steps: 7  # Optimiser steps." in lines
    assert "model:  # A vision tower, a text tower and the heads that join them." in lines  # no own doc: the class's
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == data


@dataclasses.dataclass
class _Base:
    a: int = 1
    """The ``a`` of :class:`~ctvlp.train.config.TrainConfig`,
    over two lines; see :func:`ctvlp.config.to_dict`."""
    b: int = 2


@dataclasses.dataclass
class _Child(_Base):
    c: str = "x"
    """Own field."""
    d: float = 0.5


def test_field_help_is_the_docstring_under_each_field_as_plain_text():
    assert field_help(_Child) == {"a": "The `a` of `TrainConfig`, over two lines; see `ctvlp.config.to_dict`.",
                                  "c": "Own field."}
