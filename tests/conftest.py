import contextlib
import io
import os
import sys
from pathlib import Path

import pytest
import torch

REAL = Path(__file__).resolve().parent / "data" / "real"
"""The real CT fixtures kept in the repository (TotalSegmentator's Apache-2.0 test files, see its README)."""


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The real CT files of ``tests/data/real`` (part of the repository: missing means a broken checkout)."""
    if not REAL.is_dir():
        pytest.fail(f"real data folder missing from the checkout: {REAL}")
    return REAL


CTRATE_TEXT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ctrate_text"
"""Real CT-RATE text (reports, labels, metadata; no images; see its README), kept beside the repository
(``<repo>/../shared/data/ctrate_text``), never in it (CC BY-NC-SA); ``CTVLP_CTRATE_TEXT`` points elsewhere."""


@pytest.fixture(scope="session")
def ctrate_text() -> Path:
    """The real CT-RATE text folder; the test is skipped, with the reason, where it is absent."""
    folder = Path(os.environ.get("CTVLP_CTRATE_TEXT", CTRATE_TEXT))
    if not (folder / "validation_reports.csv").is_file():
        pytest.skip(f"real CT-RATE text not found: {folder}/validation_reports.csv is absent "
                    f"(set CTVLP_CTRATE_TEXT to the folder that holds it)")
    return folder


@pytest.fixture
def one_thread():
    """Tiny tensors on one torch thread (restored afterwards): on the shared 2-core machine a second
    OpenMP thread mostly spin-waits (measured up to 70x slower when the other core is busy). Files of
    tiny-model tests use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@contextlib.contextmanager
def stderr_terminal():
    """``sys.stderr`` inside the block: a terminal that records what is written to it, so that progress
    bars, drawn only on a terminal, show up in its ``getvalue()`` (a context manager, not a fixture:
    pytest's capture would put its own stderr back before the test runs)."""
    terminal, saved = _Terminal(), sys.stderr
    sys.stderr = terminal
    try:
        yield terminal
    finally:
        sys.stderr = saved


def make_synthetic_cache(root: Path, n: int, seed: int) -> Path:
    """A prepared cache of an ``n``-volume synthetic cohort (64 x 64 matrix, a quarter of the training
    patients held out for validation) under ``root``, made by the CLI as a user would: synth ->
    manifest ctrate -> prepare. Returns the cache folder."""
    from ctvlp.cli import main

    assert main(["synth", "--out", str(root / "cohort"), "--n", str(n), "--matrix", "64", "--seed", str(seed)]) == 0
    assert main(["manifest", "ctrate", str(root / "cohort"), "--radgenome", str(root / "cohort" / "radgenome"),
                 "--val-fraction", "0.25", "--out", str(root / "m.parquet")]) == 0
    assert main(["prepare", "--manifest", str(root / "m.parquet"), "--out", str(root / "cache")]) == 0
    return root / "cache"
