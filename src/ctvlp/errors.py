"""Errors that reach the user as one clear line naming the file and the reason.

The CLI catches :class:`CtvlpError` (and only it) and exits with code 2 without a traceback;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from os import PathLike


class CtvlpError(Exception):
    """A problem with the user's input: a file that cannot be read, a value that makes no sense.

    ``path`` names the offending file (or None when no file is involved) and ``reason`` says
    what is wrong in words the user can act on.
    """

    def __init__(self, path: str | PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)

    def __reduce__(self):  # crosses process boundaries (a worker's error reaches the parent) as it is
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type, args: tuple, state: dict) -> CtvlpError:
    err = cls.__new__(cls, *args)
    err.args = args
    err.__dict__.update(state)
    return err


class BadVolumeError(CtvlpError):
    """A volume file or folder that cannot be turned into a CT volume in HU."""


class BadReportError(CtvlpError):
    """A report that is not text, or cannot be parsed."""


class BadDatasetError(CtvlpError):
    """A dataset tree, CSV or manifest that does not have the expected layout."""


class InferenceError(CtvlpError):
    """A request a trained model cannot serve: no labels or prompts, segmentation without a voxel head,
    report generation without a decoder, a volume the model cannot take."""


class BadIndexError(CtvlpError):
    """A folder that is not a `ctvlp index build` index, or one built by another model or format."""


class WriteError(CtvlpError):
    """A file that could not be written (disk full, file-size limit, permission): ``path`` is the file as it
    would have been named, ``reason`` the operating system's."""
