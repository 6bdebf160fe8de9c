"""Writing a file so that a reader sees either the old or the new one, never half of one.

Temp file in the same folder, fsync, os.replace, then fsync the folder. Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Writes:
    """A file object that remembers the OSError a write raised: a writer that wraps it in
    its own error (torch.save: "unexpected pos") still lets the real cause be told."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call write(fileobj) on a temp file beside `path`, fsync it, then rename it over `path`.

    A failed write leaves the previous file and no temp file; an OSError names `path`
    (a full disk: errno ENOSPC, whatever the writer made of it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fh = None
    try:
        with open(tmp, "wb") as raw:
            fh = _Writes(raw)
            write(fh)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = err if isinstance(err, OSError) else fh.error if fh is not None else None
        if cause is not None:
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from None
        raise
    fsync_dir(path.parent)
