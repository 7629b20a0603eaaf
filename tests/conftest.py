from pathlib import Path

import pytest

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The real CT files shipped beside the repository (never copied into it)."""
    if not REAL.is_dir():
        pytest.fail(f"real data folder missing: {REAL}")
    return REAL
