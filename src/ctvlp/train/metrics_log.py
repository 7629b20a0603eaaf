"""``OUT/metrics.jsonl`` (one JSON object per logged step) and TensorBoard event files in ``OUT/tb``.

The lines are strict JSON (what ``jq`` and browsers read): a value that is not a finite number -- a loss
term no step of the logging window computed, a window whose every step was skipped as non-finite -- is
``null``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ctvlp.eval.metrics import jsonable


class MetricsLog:
    """Appends records to metrics.jsonl and mirrors every numeric field to TensorBoard.

    On resume the file is first cut back to the records before ``resume_step``, so a run resumed
    from step S has exactly one record per logged step.
    """

    def __init__(self, out: Path, resume_step: int | None = None, tensorboard: bool = True):
        self.path = out / "metrics.jsonl"
        out.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.file = self.path.open("a")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"), purge_step=None if resume_step is None else resume_step + 1)

    def write(self, record: dict) -> None:
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


def read_metrics(out: Path) -> list[dict]:
    """The records of ``out/metrics.jsonl`` (a value no step of a window computed is None)."""
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
