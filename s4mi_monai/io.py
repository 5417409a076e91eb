"""Crash-safe file writing shared by the whole package.

Every file is written to a temporary file in the target folder, flushed to disk and renamed over the
target, so a run killed mid-write leaves the previous file intact, never a truncated one.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _RecordingWriter:
    """A binary file that remembers the first ``OSError`` of a write (torch.save turns it into an unclear RuntimeError)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._out.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)


def _write_failure(path: Path, cause: OSError) -> OSError:
    """The error of a failed write: the path, the reason, what was kept, and what to do when the disk is full."""
    kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
    advice = ""
    if cause.errno == errno.ENOSPC:
        advice = "; the disk is full: free space there and run the same command again (a training resumes from its last checkpoint)"
    return OSError(cause.errno, f"could not write {path}: {cause.strerror or cause}; {kept}{advice}")


@contextmanager
def _named_failures(path: Path, recorder: list[_RecordingWriter]) -> Iterator[None]:
    try:
        yield
    except BaseException as err:
        cause = next((writer.error for writer in recorder if writer.error is not None), err if isinstance(err, OSError) else None)
        if cause is None:
            raise
        raise _write_failure(path, cause) from err


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary binary file beside ``path``, flush it to disk, then rename it to ``path``.

    A failed write (a full disk, no permission) raises ``OSError`` naming ``path``, the reason and that the
    previous file is unchanged; the temporary file is removed.
    """
    path = Path(path)
    recorder: list[_RecordingWriter] = []
    with _named_failures(path, recorder):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result gets the permissions of any new file
            with os.fdopen(handle, "wb") as out:
                recorder.append(_RecordingWriter(out))
                write(recorder[0])
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name beside ``path`` for writers that need a name, not a stream; renamed to ``path`` on success."""
    path = Path(path)
    with _named_failures(path, []):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        try:
            os.chmod(tmp, 0o666 & ~_umask())
            yield Path(tmp)
            with open(tmp, "rb+") as written:
                os.fsync(written.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write(path, lambda out: out.write(text.encode("utf-8")))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a partial file at ``path``."""
    atomic_write(path, lambda out: torch.save(obj, out))


def to_json_safe(value: Any) -> Any:
    """A copy of ``value`` that ``json.dump`` writes as valid JSON: NaN/inf -> None, numpy/torch -> Python."""
    if isinstance(value, Mapping):
        return {str(key): to_json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(item) for item in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return to_json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, value: Any, indent: int = 2) -> None:
    """Write ``value`` as JSON atomically (made JSON-safe first)."""
    atomic_write_text(path, json.dumps(to_json_safe(value), indent=indent, allow_nan=False) + "\n")
