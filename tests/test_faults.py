"""Faults lose nothing: a SIGKILL at a chosen point of prepare, train, embed, index build, export and synth,
then the same command again, gives what an uninterrupted run gives; two prepares on one cache; a full disk
(``ulimit -f``) mid-write is one line naming the file, exit code 2, and nothing half-written is left.

Each fault runs the CLI in a child forked from this test process (everything is imported already, so a
child costs only its work, not 3-10 s of imports): the child patches the function where it should die
with ``os.kill(os.getpid(), SIGKILL)``, or lowers RLIMIT_FSIZE. The injections live here, never in the
library. One tiny cohort, cache, run, export, embedding table and index (the uninterrupted references)
serve the whole module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import resource
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import ctvlp
from ctvlp.cli import main
from ctvlp.data.cache import Cache
from ctvlp.errors import CtvlpError
from ctvlp.fsutil import TEMP
from ctvlp.inference.batch import read_embeddings
from ctvlp.inference.index import load_index
from ctvlp.models.store import is_export, list_checkpoints, load_checkpoint
from ctvlp.train.metrics_log import MetricsLog, read_metrics

SEED = 5
TRAIN = ("train", "--recipe", "demo", "--debug", "--steps", "4", "--set", "log_every=1", "--set", "ckpt_every=2",
         "--set", "keep_last=5", "--set", "data.batch_size=2", "--no-progress", "--no-eval")


# -- the child process ------------------------------------------------------------------------------------
class Child:
    """``ctvlp ARGV`` in a forked child; ``inject`` runs in the child first (it patches where to die)."""

    live: set[Child] = set()
    """Children not waited for yet."""

    def __init__(self, argv, *, inject=None, fsize: int | None = None, cwd: Path | None = None):
        self.argv = [str(a) for a in argv]
        read, write = os.pipe()  # a pipe, not a file: RLIMIT_FSIZE does not limit it
        self.pid = os.fork()
        if self.pid == 0:
            os.close(read)
            self._child(write, inject, fsize, cwd)
        os.close(write)
        os.set_blocking(read, False)
        self.fd, self.output, self.code = read, b"", None
        Child.live.add(self)

    def _child(self, fd: int, inject, fsize, cwd) -> None:
        code = 70
        try:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)
            torch.set_num_threads(1)
            if cwd is not None:
                os.chdir(cwd)
            if fsize is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            if inject is not None:
                inject()
            code = main(self.argv)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.fd, 1 << 16):
                self.output += chunk

    def wait(self, timeout: float = 180) -> int:
        """The exit code (-9: killed by SIGKILL); the child's stdout + stderr in ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self._drain()
                os.close(self.fd)
                Child.live.discard(self)
                self.code = os.waitstatus_to_exitcode(status)
                return self.code
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                os.close(self.fd)
                Child.live.discard(self)
                pytest.fail(f"ctvlp {' '.join(self.argv)} did not end in time; its output:\n{self.text}")
            time.sleep(0.02)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")


def killed(child: Child) -> Child:
    assert child.wait() == -signal.SIGKILL, f"the child did not die of SIGKILL ({child.code}):\n{child.text}"
    return child


@pytest.fixture(autouse=True)
def _no_child_outlives_its_test():
    yield
    for child in list(Child.live):
        child.wait(timeout=0)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def half_then_die(target, data: bytes) -> None:
    """Write the first half of ``data`` to ``target`` (a path or an open binary file), then die."""
    with contextlib.ExitStack() as stack:
        f = target if hasattr(target, "write") else stack.enter_context(open(target, "wb"))
        f.write(data[: len(data) // 2])
        f.flush()
        die()


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


# -- comparing with the uninterrupted run ---------------------------------------------------------------
def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) -> its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_tree(folder: Path, reference: Path) -> None:
    got, want = tree(folder), tree(reference)
    assert sorted(got) == sorted(want)
    assert [name for name in want if got[name] != want[name]] == []


def assert_only_whole_files(folder: Path, reference: Path) -> None:
    """Every file under its final name (no hidden part in its path) is byte-identical to the reference's."""
    want = tree(reference)
    for name, data in tree(folder).items():
        if not any(part.startswith(".") for part in name.split("/")):
            assert data == want.get(name), f"{name} is not the uninterrupted run's file (half-written?)"


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP.match(p.name)]


def assert_same_training(out: Path, reference: Path) -> None:
    """Every logged value but the throughput, and the final weights, equal the uninterrupted run's."""
    def logged(run):
        return json.dumps([{k: v for k, v in r.items() if k != "samples_per_s"} for r in read_metrics(run)])

    assert logged(out) == logged(reference)
    got, want = (load_checkpoint(run / "checkpoints" / "step-0000004.pt")["model"] for run in (out, reference))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-0000002.pt", "step-0000004.pt"]
    assert temporaries(out) == []


def assert_same_embeddings(out: Path, reference: Path) -> None:
    """Same files, same embeddings, same other columns; ``preprocess_seconds`` is a time and differs."""
    (paths, emb), (ref_paths, ref_emb) = read_embeddings(out), read_embeddings(reference)
    assert paths == ref_paths
    np.testing.assert_array_equal(emb, ref_emb)
    columns = ["path", "model", "step", "n_slices"]
    pd.testing.assert_frame_equal(pd.read_parquet(out)[columns], pd.read_parquet(reference)[columns])


def assert_same_index(out: Path, reference: Path) -> None:
    """index.json, skipped.csv and model/ byte-identical; the embeddings table as above."""
    got, want = tree(out), tree(reference)
    assert sorted(got) == sorted(want)
    assert [n for n in want if n != "embeddings.parquet" and got[n] != want[n]] == []
    assert_same_embeddings(out / "embeddings.parquet", reference / "embeddings.parquet")


# -- the commands and their uninterrupted runs --------------------------------------------------------
class Command:
    """A command under test: its argv writing to ``out`` (``r``: the reference paths it reads), and the check
    that an output equals the reference's. synth runs in ``out``'s parent with a relative --out, because
    synth.json records --out as given (so two cohort folders compare byte for byte)."""

    def __init__(self, key: str, argv, check, relative: bool = False):
        self.key, self.argv, self.check, self.relative = key, argv, check, relative

    def cwd(self, out: Path) -> Path | None:
        return out.parent if self.relative else None

    def run(self, r: dict, out: Path, *extra: str) -> int:
        """In this process, as a user would run it (again)."""
        with contextlib.chdir(self.cwd(out) or Path.cwd()):
            return main(self.argv(r, out) + list(extra))

    def child(self, r: dict, out: Path, *extra: str, **kw) -> Child:
        return Child(self.argv(r, out) + list(extra), cwd=self.cwd(out), **kw)


def _synth(r, out):
    return ["synth", "--out", out.name, "--n", "6", "--matrix", "64", "--seed", str(SEED)]


def _train(r, out):
    return [*TRAIN, "--data", str(r["cache"]), "--out", str(out)]


def _embed(r, out):
    return ["embed", *r["files"], "--checkpoint", str(r["run"]), "--out", str(out), "--workers", "0"]


def _index(r, out):
    return ["index", "build", *r["files"], "--checkpoint", str(r["run"]), "--out", str(out), "--workers", "0"]


COMMANDS = {
    "synth": Command("cohort", _synth, assert_same_tree, relative=True),
    "prepare": Command("cache", lambda r, out: ["prepare", "--manifest", str(r["manifest"]), "--out", str(out)],
                       assert_same_tree),
    "train": Command("run", _train, assert_same_training),
    "export": Command("export", lambda r, out: ["export", str(r["run"]), "--out", str(out)], assert_same_tree),
    "embed": Command("emb", _embed, assert_same_embeddings),
    "index build": Command("index", _index, assert_same_index),
}


@pytest.fixture(scope="module")
def r(tmp_path_factory) -> dict:
    """The uninterrupted run of every command (the references), made once for the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # also keeps the forked children off a thread pool they would not own
    root = tmp_path_factory.mktemp("faults")
    r = {"root": root, "cohort": root / "ref" / "cohort", "manifest": root / "m.parquet", "cache": root / "cache",
         "run": root / "run", "export": root / "export", "emb": root / "emb.parquet", "index": root / "index"}
    r["cohort"].parent.mkdir()
    assert COMMANDS["synth"].run(r, r["cohort"]) == 0
    assert main(["manifest", "ctrate", str(r["cohort"]), "--radgenome", str(r["cohort"] / "radgenome"),
                 "--val-fraction", "0.25", "--out", str(r["manifest"])]) == 0
    r["files"] = sorted(str(p) for p in (r["cohort"] / "dataset").rglob("*.nii.gz"))[:3]
    for name in ("prepare", "train", "export", "embed", "index build"):
        assert COMMANDS[name].run(r, r[COMMANDS[name].key]) == 0
    assert read_embeddings(r["emb"])[0], "no reference volume was embedded"
    yield r
    torch.set_num_threads(threads)


# -- SIGKILL, then the same command again ------------------------------------------------------------------
def _after_second_volume() -> None:
    import ctvlp.data.prepare as prep

    real, count = prep.write_cached_volume, [0]

    def write(*args, **kwargs):
        done = real(*args, **kwargs)
        count[0] += 1
        if count[0] == 2:
            die()
        return done

    prep.write_cached_volume = write


def _mid_third_image() -> None:
    real, count = np.save, [0]

    def save(file, arr, *args, **kwargs):
        if str(file).endswith("image.npy"):
            count[0] += 1
            if count[0] == 3:
                buffer = io.BytesIO()
                real(buffer, arr, *args, **kwargs)
                half_then_die(file, buffer.getvalue())
        return real(file, arr, *args, **kwargs)

    np.save = save


def _mid_index_table() -> None:
    real = pd.DataFrame.to_parquet

    def to_parquet(self, path, *args, **kwargs):
        buffer = io.BytesIO()
        real(self, buffer, *args, **kwargs)
        half_then_die(path, buffer.getvalue())

    pd.DataFrame.to_parquet = to_parquet


@pytest.mark.parametrize("inject, volumes, half_written", [(_after_second_volume, 2, False),
                                                           (_mid_third_image, 2, True),
                                                           (_mid_index_table, 6, True)],
                         ids=["after-volume-2", "mid-volume-3-image", "mid-index-write"])
def test_prepare_killed_then_rerun_is_byte_identical(r, tmp_path, inject, volumes, half_written):
    prepare, out = COMMANDS["prepare"], tmp_path / "cache"
    killed(prepare.child(r, out, inject=inject))
    assert len([p for p in (out / "volumes").iterdir() if not p.name.startswith(".")]) == volumes
    assert len(temporaries(out)) == half_written  # a half volume or index sits only under a temporary name
    assert_only_whole_files(out, r["cache"])
    with pytest.raises(CtvlpError, match="no index"):  # the killed run's cache is not taken as one
        Cache(out)
    assert prepare.run(r, out) == 0
    assert_same_tree(out, r["cache"])


def _mid_third_step() -> None:
    from ctvlp.train.loop import Trainer

    real = Trainer._optimizer_step

    def step(self, loss):
        if self.step == 2:  # the third optimiser step, after the step-2 checkpoint
            die()
        return real(self, loss)

    Trainer._optimizer_step = step


def _mid_checkpoint_write() -> None:
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4:
            buffer = io.BytesIO()
            real(obj, buffer, *args, **kwargs)
            half_then_die(f, buffer.getvalue())
        return real(obj, f, *args, **kwargs)

    torch.save = save


@pytest.mark.parametrize("inject, half_checkpoint", [(_mid_third_step, False), (_mid_checkpoint_write, True)],
                         ids=["mid-step-3", "mid-checkpoint-4-write"])
def test_train_killed_then_resumed_equals_uninterrupted(r, tmp_path, inject, half_checkpoint):
    train, out = COMMANDS["train"], tmp_path / "run"
    killed(train.child(r, out, inject=inject))
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-0000002.pt"]
    assert len(temporaries(out)) == half_checkpoint  # half a checkpoint sits only under a temporary name
    assert load_checkpoint(out)["step"] == 2
    assert train.run(r, out, "--resume") == 0
    assert_same_training(out, r["run"])


def test_resume_drops_a_log_line_torn_by_a_kill(tmp_path):
    lines = [json.dumps({"step": step, "loss": 1.0 / step}) for step in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "lo')  # a full disk, mid-line
    MetricsLog(tmp_path, resume_step=3, tensorboard=False).close()
    assert (tmp_path / "metrics.jsonl").read_text() == "\n".join(lines) + "\n"


def _mid_parquet() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    real = pq.write_table

    def write_table(table, where, *args, **kwargs):
        sink = pa.BufferOutputStream()
        real(table, sink, *args, **kwargs)
        half_then_die(where, sink.getvalue().to_pybytes())

    pq.write_table = write_table


def test_embed_killed_mid_table_then_rerun_equals_uninterrupted(r, tmp_path):
    embed, out = COMMANDS["embed"], tmp_path / "emb.parquet"
    killed(embed.child(r, out, inject=_mid_parquet))
    assert not out.exists() and len(temporaries(tmp_path)) == 1  # the half table has only a temporary name
    assert embed.run(r, out) == 0
    assert_same_embeddings(out, r["emb"])
    assert Path(f"{out}.skipped.csv").read_bytes() == Path(f"{r['emb']}.skipped.csv").read_bytes()
    assert temporaries(tmp_path) == []


def _mid_export_weights() -> None:
    import safetensors.torch

    import ctvlp.inference.export as export

    export.save_file = lambda tensors, filename, metadata=None: half_then_die(
        filename, safetensors.torch.save(tensors, metadata))


def _own_temporaries(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if (m := TEMP.match(p.name)) and m["name"] == name]


def test_index_build_killed_mid_write_then_rerun_equals_uninterrupted(r, tmp_path):
    build, out = COMMANDS["index build"], tmp_path / "index"
    killed(build.child(r, out, inject=_mid_export_weights))
    assert not out.exists() and len(_own_temporaries(tmp_path, "index")) == 1
    with pytest.raises(CtvlpError, match="not a ctvlp index"):
        load_index(out)
    assert build.run(r, out) == 0
    assert_same_index(out, r["index"])
    assert temporaries(tmp_path) == []


def test_export_killed_mid_write_never_leaves_a_folder_that_loads(r, tmp_path):
    export = COMMANDS["export"]
    earlier = tmp_path / "earlier"
    shutil.copytree(r["export"], earlier)
    killed(export.child(r, earlier, inject=_mid_export_weights))  # writing over an earlier export
    assert_same_tree(earlier, r["export"])  # ... which stays whole
    out = tmp_path / "out"
    killed(export.child(r, out, inject=_mid_export_weights))
    assert not out.exists() and not is_export(out)
    [half] = _own_temporaries(tmp_path, "out")
    for folder in (out, half):  # neither the name nor the half folder loads as a model
        with pytest.raises(CtvlpError):
            ctvlp.load_model(folder)
    assert export.run(r, out) == 0
    assert_same_tree(out, r["export"])
    assert _own_temporaries(tmp_path, "out") == []


def test_export_refuses_to_replace_a_folder_that_is_not_an_export(r, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert COMMANDS["export"].run(r, tmp_path) == 2
    assert capsys.readouterr().err == (f"ctvlp export: error: {tmp_path}: exists and is not a ctvlp-export folder "
                                       "(no config.json of that format); give a new or empty folder, or delete "
                                       "this one\n")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def _mid_third_nifti() -> None:
    real, count = Path.write_bytes, [0]

    def write_bytes(self, data):
        if ".nii.gz" in self.name:
            count[0] += 1
            if count[0] == 3:
                half_then_die(self, data)
        return real(self, data)

    Path.write_bytes = write_bytes


def test_synth_killed_mid_file_then_rerun_is_byte_identical(r, tmp_path):
    synth, out = COMMANDS["synth"], tmp_path / "cohort"
    killed(synth.child(r, out, inject=_mid_third_nifti))
    assert_only_whole_files(out, r["cohort"])
    assert len(temporaries(out)) == 1 and not (out / "synth.json").exists()
    assert synth.run(r, out) == 0
    assert_same_tree(out, r["cohort"])


# -- two prepares on one cache -----------------------------------------------------------------------------
def _pause(flags: Path, where: str, ready: str):
    """An injection: the first call of ``ctvlp.data.prepare.<where>`` touches ``flags/ready`` and waits for
    ``flags/go``."""
    def inject() -> None:
        import ctvlp.data.prepare as prep

        real = getattr(prep, where)

        def paused(*args, **kwargs):
            if not (flags / ready).exists():
                (flags / ready).touch()
                wait_for(flags / "go")
            return real(*args, **kwargs)

        setattr(prep, where, paused)

    return inject


def test_same_shard_twice_the_second_refuses(r, tmp_path, capsys):
    prepare, out = COMMANDS["prepare"], tmp_path / "cache"
    first = prepare.child(r, out, inject=_pause(tmp_path, "write_cached_volume", "ready"))
    try:
        wait_for(tmp_path / "ready")  # the first is mid-run, holding the shard's lock
        assert prepare.run(r, out) == 2
        assert capsys.readouterr().err == (
            f"ctvlp prepare: error: {out}: shard 0/1 is being prepared by process {first.pid} (it holds "
            f"{out}/.lock-shard-0-of-1); wait for it to finish or use another --out\n")
    finally:
        (tmp_path / "go").touch()
        code = first.wait()
    assert code == 0, first.text
    assert_same_tree(out, r["cache"])


def test_two_shards_at_once_both_finish(r, tmp_path):
    out = tmp_path / "cache"
    shards = [Child(["prepare", "--manifest", r["manifest"], "--out", out, "--shard", f"{i}/2"],
                    inject=_pause(tmp_path, "check_config", f"ready-{i}")) for i in range(2)]
    try:
        for i in range(2):
            wait_for(tmp_path / f"ready-{i}")
    finally:
        (tmp_path / "go").touch()  # both record the new cache's preprocessing at the same moment
        codes = [shard.wait() for shard in shards]
    assert codes == [0, 0], [shard.text for shard in shards]
    got, want = Cache(out), Cache(r["cache"])  # Cache reads both shards' indexes
    pd.testing.assert_frame_equal(got.index.sort_values("id", ignore_index=True),
                                  want.index.sort_values("id", ignore_index=True))
    files, reference = tree(out), tree(r["cache"])
    shared = sorted(n for n in reference if n.startswith("volumes/") or n == "preprocessing.json")
    assert sorted(n for n in files if n.startswith("volumes/") or n == "preprocessing.json") == shared
    assert [n for n in shared if files[n] != reference[n]] == []


# -- a full disk mid-write ---------------------------------------------------------------------------------
FULL = {  # command -> (RLIMIT_FSIZE in bytes: below its first big file, the file the error names under OUT;
    #         safetensors deletes the file it could not finish, so an export is named as the folder)
    "synth": (16_384, r"dataset/(train|valid)/\S+\.nii\.gz"),
    "prepare": (8_192, r"volumes/\w+/image\.npy"),
    "train": (2_000_000, r"checkpoints/step-0000002\.pt"),
    "export": (2_000_000, None),
    "embed": (1_024, None),
    "index build": (2_000_000, "model"),
}


def assert_nothing_half_written(name: str, r: dict, out: Path) -> None:
    """What a run stopped by a full disk leaves: no temporary, and nothing a later run takes as complete."""
    assert temporaries(out.parent) == []
    if name == "synth":
        assert_only_whole_files(out, r["cohort"])
    elif name == "prepare":
        assert list((out / "volumes").iterdir()) == [] and not (out / "index").exists()
    elif name == "train":
        assert list_checkpoints(out / "checkpoints") == []
    else:
        assert not out.exists()


@pytest.mark.parametrize("name", list(FULL))
def test_disk_full_is_one_line_naming_the_file_and_a_rerun_completes(r, tmp_path, name):
    command, (limit, file) = COMMANDS[name], FULL[name]
    out = tmp_path / r[command.key].name
    child = command.child(r, out, fsize=limit)
    shown = re.escape(out.name if command.relative else str(out)) + ("/" + file if file else "")
    line = (rf"ctvlp {name.split()[0]}: error: {shown}: cannot write \(File too large: the file size limit \(ulimit -f\) is "
            rf"{limit} bytes\); nothing half-written was kept")
    assert child.wait() == 2 and re.fullmatch(line, child.text.strip()), child.text
    assert_nothing_half_written(name, r, out)
    assert command.run(r, out) == 0  # the same command once there is room
    command.check(out, r[command.key])
