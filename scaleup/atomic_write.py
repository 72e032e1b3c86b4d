"""Atomic file writes: a reader (or a crash) never sees half a file, and concurrent writers never collide.

Every result file of fairdiff (``results.json``, the PNG figures, DDPM checkpoints) is written through
:func:`atomic_write`: the bytes go to a uniquely named temporary file in the destination's folder (so the final
rename stays on one file system), are flushed to disk with ``fsync``, and the temporary file is renamed over the
destination with ``os.replace``, which POSIX makes atomic. The folder is then fsynced so the rename itself survives
a power cut. Two runs writing the same file each use their own temporary file; the last rename wins whole.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

# mkstemp creates 0600 files; results should get the permissions any other new file of the user would get
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file atomically: ``write(f)`` fills a fresh temporary binary file that then replaces ``path``.

    Parameters
    ----------
    path : path-like
        The destination; its folder is created when missing.
    write : callable
        Called once with the open temporary file (binary mode); e.g. ``lambda f: torch.save(state, f)``.

    Returns
    -------
    Path
        ``path``. On any error the temporary file is removed and the destination is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the file's own fsync has already happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_replace_folder(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Make the finished folder ``tmp`` appear as ``final`` in one rename (an older ``final`` is removed first).

    Folders (checkpoints, exported weights) are filled file by file under a hidden temporary name and published by
    this one ``os.replace``, so a reader never sees half of one.
    """
    import shutil

    tmp, final = Path(tmp), Path(final)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_folder(final.parent)
    return final



class UnwritableFolderError(ValueError):
    """An output folder that cannot be created or written; the message is one line naming it and the reason."""


def check_writable_folder(folder: str | os.PathLike, *, option: str = "--out") -> Path:
    """Create ``folder`` when missing and check that a file can be written in it, before any model loads.

    Raises :class:`UnwritableFolderError` (a ``ValueError``) for a read-only folder, a file in the way or a full
    disk, naming ``option`` and the folder, instead of an ``OSError`` once the work is done."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".fairdiff-writable.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UnwritableFolderError(f"{option} {folder}: cannot create or write the folder "
                                    f"({err.strerror or err}); pass a writable folder") from None
    return folder
