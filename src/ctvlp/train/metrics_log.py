"""``OUT/metrics.jsonl`` (one JSON object per logged step) and TensorBoard event files in ``OUT/tb``.

The lines are strict JSON (what ``jq`` and browsers read): a value that is not a finite number -- a loss
term no step of the logging window computed, a window whose every step was skipped as non-finite -- is
``null``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ctvlp.fsutil import atomic_write_text, jsonable, write_errors


class MetricsLog:
    """Appends records to metrics.jsonl and mirrors every numeric field to TensorBoard.

    On resume the file is first cut back to the records up to ``resume_step`` (rewritten atomically; a
    last line torn by a kill or a full disk is dropped), so a run resumed from step S has exactly one
    record per logged step. A failed write raises :class:`~ctvlp.errors.WriteError` naming the file.
    """

    def __init__(self, out: Path, resume_step: int | None = None, tensorboard: bool = True):
        self.path = out / "metrics.jsonl"
        with write_errors(self.path):
            out.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(self.path, "")
        elif self.path.is_file():
            atomic_write_text(self.path, "".join(line + "\n" for line in _lines_until(self.path, resume_step)))
        with write_errors(self.path):
            self.file = self.path.open("a")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"), purge_step=None if resume_step is None else resume_step + 1)

    def write(self, record: dict) -> None:
        with write_errors(self.path):
            self.file.write(json.dumps(jsonable(record), allow_nan=False) + "\n")
            self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _lines_until(path: Path, step: int) -> list[str]:
    """The lines of ``path`` whose record has ``step`` <= ``step``; a line that is not JSON (torn) is dropped."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    return kept


def read_metrics(out: Path) -> list[dict]:
    """The records of ``out/metrics.jsonl`` (a value no step of a window computed is None)."""
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
