"""Files that a kill, a full disk or a second process never leave half-written where a later run trusts them.

* :func:`atomic_path` writes a file or a folder under a temporary sibling name ``.NAME.PID-RANDOM.tmp`` in the
  same folder, fsyncs it and renames it onto ``NAME`` (a rename within one file system is atomic: a reader
  sees the old content or the new, never a part of it). On any error the temporary is removed; one left by
  a killed process is removed by :func:`remove_stale_temps`, which every later write of the same name calls.
* Writing that fails with an ``OSError`` (disk full, the file-size limit of ``ulimit -f``, permission)
  raises :class:`~ctvlp.errors.WriteError` naming the file (the final name, not the temporary) and the
  operating system's reason, which the CLI prints as one line with exit code 2.
* :func:`hold_lock` holds an exclusive ``flock`` for the length of a run, so that a second run of the same
  work refuses at once, naming the holder's pid. The kernel drops the lock when its process dies, so a
  killed run never leaves a stale lock.
* :func:`jsonable` makes a result strict JSON (NaN/inf -> ``null``) before it is written; train, eval and the
  CLI share it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import numbers
import os
import re
import resource
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from ctvlp.errors import CtvlpError, WriteError

TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")
"""Name of a temporary: ``.NAME.PID-RANDOM.tmp`` (hidden, and matching no reader's pattern)."""
OS_ERROR = re.compile(r"\(os error (\d+)\)|\[errno (\d+)\]", re.IGNORECASE)
"""An errno quoted in the message of a library that wraps OSError (Rust's io::Error, Arrow's status)."""
DISK_FULL_BYTES = 1 << 20
"""Free space under which a write that failed with no errno at all (torch's writer) is put down to a full
disk."""
_WRITING: set[Path] = set()
"""Temporaries this process is writing now: not stale although they carry this process's pid."""
_LOCKS: dict[Path, int] = {}
"""Descriptors of the locks this process holds (path -> fd)."""


def temp_sibling(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (see :data:`TEMP`)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours but not in _WRITING: left by an earlier process that had the same pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps(folder: Path, names: Iterable[str] | None = None) -> int:
    """Remove the temporaries in ``folder`` of ``names`` (default: of any name) whose process is gone
    (killed); returns how many. A live process's temporary is left alone, so this is safe while other
    runs write into the same folder."""
    wanted = None if names is None else set(names)
    try:
        entries = [Path(e.path) for e in os.scandir(folder)]
    except FileNotFoundError:
        return 0
    stale = [p for p in entries if (m := TEMP.match(p.name)) and (wanted is None or m["name"] in wanted)
             and p not in _WRITING and not _alive(int(m["pid"]))]
    for path in stale:
        _remove(path)
    return len(stale)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(path: Path) -> None:
    """fsync a file, or every file and folder of a tree (its data reach the disk before the rename does)."""
    if not path.is_dir():
        _fsync(path)
        return
    for root, _, files in os.walk(path):
        for name in files:
            _fsync(Path(root) / name)
        _fsync(Path(root))


def _commit(tmp: Path, path: Path, replace: bool, durable: bool) -> None:
    if path.exists() and not replace:
        return  # another process finished the same work first: keep its result
    if path.is_dir() and not path.is_symlink():  # a folder is replaced by moving the old one aside first
        old = temp_sibling(path)
        os.rename(path, old)
        os.rename(tmp, path)
        _remove(old)
    else:
        try:
            os.rename(tmp, path)
        except OSError:
            if replace or not path.exists():
                raise
    if durable:
        _fsync(path.parent)


def _size(file: Path) -> int:
    try:
        return file.stat().st_size
    except OSError:
        return 0


def _file_size_limit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def _errno(err: Exception) -> int | None:
    if isinstance(err, OSError) and err.errno:
        return err.errno
    found = OS_ERROR.search(str(err))
    return int(found[1] or found[2]) if found else None


def _failure(err: Exception, tmp: Path) -> tuple[Path, str] | None:
    """(the file, the reason) when ``err``, raised while writing under ``tmp``, was the file system's
    refusal, else None. torch, safetensors and pyarrow wrap the OSError in their own errors (and the last
    two delete the file they were writing), so the file-size limit, an errno quoted in the message and the
    free space are looked at as well."""
    limit, code = _file_size_limit(), _errno(err)
    if limit is not None:
        files = [tmp] if tmp.is_file() else [Path(r) / f for r, _, fs in os.walk(tmp) for f in fs]
        full = [f for f in files if _size(f) >= limit]
        if full or code == errno.EFBIG:
            return (full or [tmp])[0], f"File too large: the file size limit (ulimit -f) is {limit} bytes"
    file = Path(getattr(err, "filename", None) or tmp)
    if code is not None:
        return file, os.strerror(code)
    if isinstance(err, OSError):
        return file, str(err)
    with contextlib.suppress(OSError):
        if shutil.disk_usage(tmp.parent).free < DISK_FULL_BYTES:
            return tmp, os.strerror(errno.ENOSPC)
    return None


def _final(file: str | Path, tmp: Path, path: Path) -> Path:
    """``file`` under its final name: ``tmp/a/b`` -> ``path/a/b``."""
    file = Path(file)
    return path / file.relative_to(tmp) if file.is_relative_to(tmp) else file


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, replace: bool = True, clean: bool = True,
                durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``: write a file there or make a folder there. When the block
    ends without error it is fsynced and renamed onto ``path``; on any error it is removed, and a failed
    write raises :class:`WriteError` naming the file. ``replace=False`` keeps an existing ``path`` and
    drops what was written (another process finished the same work first). ``clean=False`` skips
    :func:`remove_stale_temps` (which lists the folder) for callers that clean once for many names.
    ``durable=False`` skips the fsyncs: the rename is still atomic against a kill or a full disk, only a
    power loss may leave an empty file under the name (for outputs that a rerun writes anew anyway)."""
    path = Path(path)
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        remove_stale_temps(path.parent, [path.name])
    tmp = temp_sibling(path)
    _WRITING.add(tmp)
    try:
        yield tmp
        if durable:
            _sync_tree(tmp)
        _commit(tmp, path, replace, durable)
    except WriteError as err:  # from a file written inside this folder: name it as it would have been
        raise WriteError(_final(err.path, tmp, path), err.reason) from None
    except Exception as err:
        failure = _failure(err, tmp)
        if failure is None:
            raise
        file, reason = failure
        raise WriteError(_final(file, tmp, path), f"cannot write ({reason}); nothing half-written was kept") from None
    finally:
        _WRITING.discard(tmp)
        _remove(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_replaceable(folder: str | os.PathLike, marker: str, fmt: str) -> None:
    """Refuse to write the folder ``folder`` atomically over what it holds unless it is absent, empty or an
    earlier output of the same kind (its JSON file ``marker`` says ``"format": fmt``): the rename replaces
    the whole folder, which must not take a user's other files with it."""
    folder = Path(folder)
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if json.loads((folder / marker).read_text()).get("format") == fmt:
            return
    raise CtvlpError(folder, f"exists and is not a {fmt} folder (no {marker} of that format); give a new or "
                             "empty folder, or delete this one")


@contextlib.contextmanager
def write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` in the block (a write that is not atomic: an appended log line, a folder) into
    :class:`WriteError` naming ``path``."""
    try:
        yield
    except OSError as err:
        raise WriteError(path, f"cannot write ({err.strerror or err})") from None


class LockBusy(CtvlpError):
    """A lock that another live process holds; ``holder`` is its pid (None when it was not written yet)."""

    holder: int | None = None


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike, *, wait: bool) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created when absent) for the block; the file holds the
    holder's pid while it is held and is empty otherwise. ``wait=False``: raise :class:`LockBusy` at once
    when another process holds it. The lock covers one open file: a process forked inside the block shares
    it until it closes the descriptor (:func:`lock_fds`)."""
    path = Path(path)
    with write_errors(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            busy = LockBusy(path, f"in use by process {holder or '(unknown)'}")
            busy.holder = int(holder) if holder.isdigit() else None
            raise busy from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _LOCKS[path] = fd
        try:
            yield
        finally:
            del _LOCKS[path]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def lock_fds() -> list[int]:
    """The descriptors of the locks this process holds: a forked worker closes them so that the locks end
    with the process that took them."""
    return list(_LOCKS.values())


def jsonable(obj):
    """``obj`` with NaN/inf floats replaced by None and numpy scalars by Python numbers, so the JSON written is
    standard (``null``). Numbers are recognised through :mod:`numbers`, where numpy registers its scalar types,
    so this module stays free of numpy (``ctvlp --help`` loads it)."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj
