"""Atomic writes: everything edgekit writes goes to a temporary name first and is renamed when complete."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def check_writable(path: str | Path) -> Path:
    """Fail now, with the OSError a write would give, where `path` cannot be written: a file stands where a folder
    must be, or the nearest existing folder is not writable. Creates nothing (so a refused command leaves nothing)."""
    path = Path(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of this folder", str(parent))
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "Permission denied", str(parent))
            break
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _clear_stale_partials(final: Path) -> None:
    """Remove what a killed writer of `final` left (`.NAME.partial-PID-…` of a process that no longer runs)."""
    prefix = f".{final.name}.partial-"
    with contextlib.suppress(OSError):
        for p in final.parent.iterdir():
            pid = p.name[len(prefix) :].split("-", 1)[0]
            if p.name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    _remove(p)


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final` (file or directory); rename it over `final` on success only."""
    final = Path(final)
    check_writable(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_partials(final)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.partial-{os.getpid()}-", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # the writer creates it (a file or a directory such as .mlpackage)
    try:
        try:
            yield tmp
        except OSError as e:
            if e.filename is None and e.errno is not None:  # a plain write: name the file it was for
                raise type(e)(e.errno, e.strerror, str(final)) from None
            raise
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp}")
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            _remove(tmp)


def write_json(path: str | Path, data: dict) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def sha256_of(path: str | Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, sorted) for bundles."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f is not path:
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_of(path: str | Path) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def package_version(dist: str) -> str | None:
    """The installed version of the distribution `dist`, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def read_json(
    path: Path,
    *,
    what: str,
    limit: int,
    too_big: str,
    fix: str,
    error: Callable[[str], Exception],
    read_fix: str | None = None,
    **loads: Any,
) -> Any:
    """A JSON file someone else wrote (a manifest, a latency report), read as data: at most `limit` bytes, UTF-8,
    not nested past Python's recursion limit. Each failure is one `error` line naming `what` and the file and
    ending with `fix`; a ValueError from a `loads` hook (NaN refused) says what the file holds."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as e:
        raise error(f"cannot read {what} '{path}' ({e.strerror or e}); {read_fix or fix}") from None
    if len(data) > limit:
        raise error(f"{what} '{path}' is larger than {limit // 2**20} MB, {too_big}; {fix}")
    try:
        return json.loads(data.decode("utf-8"), **loads)
    except UnicodeDecodeError:
        raise error(f"{what} '{path}' is not text (not UTF-8); {fix}") from None
    except json.JSONDecodeError as e:
        raise error(f"{what} '{path}' is not valid JSON ({e}); {fix}") from None
    except ValueError as e:  # from a hook: NaN, Infinity, 1e999
        raise error(f"{what} '{path}' holds {e}; {fix}") from None
    except RecursionError:
        raise error(f"{what} '{path}' is nested too deeply to be a {what}; {fix}") from None
