"""scripts/window_probe.py (the supervised probe behind the demo's HU windows) runs end to end on a tiny
synthetic cache and writes one row per window set with a per-label AUROC."""

import json
import math
import subprocess
import sys
from pathlib import Path

from conftest import make_synthetic_cache
from ctvlp.recipes.demo import DEMO_WINDOWS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "window_probe.py"


def test_window_probe_writes_a_row_per_window_set(tmp_path):
    cache = make_synthetic_cache(tmp_path, 16, 7)
    out = tmp_path / "probe.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--cache", str(cache), "--steps", "2", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [tuple(map(tuple, r["windows"])) for r in rows.values()] == [DEMO_WINDOWS[:1], DEMO_WINDOWS[:2],
                                                                          DEMO_WINDOWS[:3], DEMO_WINDOWS]
    for row in rows.values():
        assert row["auroc"] and all(math.isnan(v) or 0.0 <= v <= 1.0 for v in row["auroc"].values())
    assert len(run.stdout.strip().splitlines()) == 4
