"""Progress bars of the long commands (synth, prepare, eval, embed, index build): tqdm on stderr, so
stdout (tables, `--json`) stays clean; shown only when stderr is a terminal (a log file or a pipe gets
none) and not turned off (`--no-progress`). `ctvlp train` draws its own bar of steps."""

from __future__ import annotations


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True):
    """A tqdm bar of ``total`` ``unit``s (disabled: a tqdm that draws nothing, with the same methods)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None if enabled else True, dynamic_ncols=True)
