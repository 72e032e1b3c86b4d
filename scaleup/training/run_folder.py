"""A run folder is a contract: one run per folder, one writer at a time, resumed only with its own settings.

Both training jobs (aDFT, PopAlign ``train``) open their output folder through :func:`claim_run_folder` before any
model loads:

- **one run per folder**: a fresh start (no ``--resume``) in a folder that already holds a run is refused; with
  ``--start-over`` the old run is first moved aside whole (to ``OUT.replaced-<UTC time>`` beside it), never mixed
  with the new one and never deleted;
- **resumed with its own settings**: the settings that change the result are written once, at the fresh start, to
  ``OUT/settings.json``; a resume compares every one of them with the stored value and refuses any difference, naming
  each setting. Settings that may change on resume (where to stop, how often to checkpoint, progress and tracking)
  are listed by the job; the iteration budget is among them only under a constant learning rate, since every other
  schedule is stretched over it;
- **one writer**: ``OUT/.fairdiff.lock`` names the process holding the folder (host, pid, job, start). A second
  job in the folder is refused while that process lives; the lock of a process that died (SIGKILL, power loss) on
  this host is taken over, since the checkpoints it left are complete or invisible to ``--resume latest``.

Nothing here loads a pickle or reads model weights; everything is JSON.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from scaleup.atomic_write import atomic_replace_folder, atomic_write_text

SETTINGS_FILE = "settings.json"
LOCK_FILE = ".fairdiff.lock"
#: What marks a folder as holding a run (of either job): settings, records, logs, weights, checkpoints.
RUN_MARKERS = ("settings.json", "run.json", "log.jsonl", "results.json", "train_results.json", "final")
#: Learning-rate schedules that do not depend on the iteration budget: under them a resumed run may extend it.
BUDGET_FREE_SCHEDULES = ("constant", "constant_with_warmup")


class RunFolderError(ValueError):
    """The output folder cannot be used as asked (occupied, held, or resumed with other settings)."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def holds_run(out: Path) -> bool:
    """True when ``out`` holds (part of) a run: any record, log, weights or checkpoint, finished or not."""
    if not out.is_dir():
        return False
    return any((out / name).exists() for name in RUN_MARKERS) or any(
        p.name.startswith(("checkpoint-", ".checkpoint-")) for p in out.iterdir())


def _json_ready(value):
    """Settings as JSON would store them (tuples as lists), so stored and current compare equal."""
    return json.loads(json.dumps(value, default=str))


def settings_differences(stored: Mapping, current: Mapping, may_change: Iterable[str]) -> list[str]:
    """``"name: stored -> current"`` for every setting that differs, those in ``may_change`` left out."""
    free = set(may_change)
    stored, current = _json_ready(dict(stored)), _json_ready(dict(current))
    names = sorted(name for name in set(stored) | set(current) if name not in free)
    return [f"{name}: {stored.get(name, '(absent)')!r} -> {current.get(name, '(absent)')!r}"
            for name in names if stored.get(name) != current.get(name)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@dataclass
class RunFolder:
    """A claimed output folder; :meth:`release` (or leaving the ``with`` block) removes the lock."""

    path: Path
    fresh: bool
    """True when this run starts from nothing (its settings were just written)."""
    moved_aside: Path | None = None
    took_over_lock: dict | None = None
    _locked: bool = field(default=False, repr=False)

    def release(self) -> None:
        if self._locked:
            lock = self.path / LOCK_FILE
            try:
                if json.loads(lock.read_text(encoding="utf-8")).get("pid") == os.getpid():
                    lock.unlink()
            except (FileNotFoundError, ValueError):
                pass
            self._locked = False

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def check_run_folder(out: str | Path, *, settings: Mapping, resume: str | None, start_over: bool = False,
                     may_change: Iterable[str] = (), option: str = "--output-dir") -> bool:
    """Read-only part of :func:`claim_run_folder` (every process may call it): raises :class:`RunFolderError` when
    the folder cannot be used as asked; returns whether the run will start fresh (True) or continue (False)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{option} {out} is a file; pass a folder (it is created when missing)")
    if not holds_run(out):
        return True
    if resume in (None, "", "none"):
        if start_over:
            return True
        raise RunFolderError(
            f"{option} {out} already holds a run; pass --resume latest to continue it (with its own settings), "
            f"--start-over to move it aside (to {out.name}.replaced-<time>) and start anew, or another folder")
    stored_path = out / SETTINGS_FILE
    if stored_path.is_file():
        stored = json.loads(stored_path.read_text(encoding="utf-8"))["settings"]
    elif (out / "run.json").is_file():  # a run begun before settings.json existed: its recorded configuration
        stored = json.loads((out / "run.json").read_text(encoding="utf-8")).get("config", {})
    else:
        raise RunFolderError(f"{option} {out} holds a run without its settings ({SETTINGS_FILE}); it cannot be "
                             f"resumed safely: pass --start-over to move it aside, or another folder")
    differences = settings_differences(stored, settings, may_change)
    if differences:
        raise RunFolderError(
            f"--resume {resume}: the run in {out} was started with other settings, and these change the result: "
            f"{'; '.join(differences)}. Resume with the run's own settings (stored in {stored_path}), or pass "
            f"--start-over (the old run is moved aside) or another folder. Settings that may change on resume: "
            f"{', '.join(sorted(may_change)) or 'none'}")
    return False


def claim_run_folder(out: str | Path, *, job: str, settings: Mapping, resume: str | None, start_over: bool = False,
                     may_change: Iterable[str] = (), option: str = "--output-dir") -> RunFolder:
    """Check (:func:`check_run_folder`), then take the folder: its lock, the old run moved aside on
    ``start_over``, the settings written on a fresh start. Call on the main process only, after every process has
    run :func:`check_run_folder`."""
    out = Path(out)
    may_change = tuple(may_change)
    fresh = check_run_folder(out, settings=settings, resume=resume, start_over=start_over, may_change=may_change,
                             option=option)
    moved_aside = None
    if fresh and holds_run(out):  # start_over: the whole old run goes aside, unless a live job holds it
        _holder(out)
        moved_aside = atomic_replace_folder(out, out.with_name(f"{out.name}.replaced-{_now()}"))
    try:
        out.mkdir(parents=True, exist_ok=True)
        folder = RunFolder(out, fresh=fresh, moved_aside=moved_aside, took_over_lock=_lock(out, job), _locked=True)
    except OSError as err:  # read-only, a file on the way, no space: one line, not a traceback
        raise RunFolderError(f"{option} {out}: cannot create or write the folder ({err.strerror or err}); pass a "
                             f"writable folder") from None
    try:
        if fresh:
            atomic_write_text(out / SETTINGS_FILE, json.dumps(
                {"job": job, "written_utc": _now(), "settings": _json_ready(dict(settings)),
                 "may_change_on_resume": sorted(may_change)}, indent=2) + "\n")
    except OSError as err:
        folder.release()
        raise RunFolderError(f"{option} {out}: cannot write {SETTINGS_FILE} ({err.strerror or err}); pass a "
                             f"writable folder") from None
    except BaseException:
        folder.release()
        raise
    return folder


@contextlib.contextmanager
def run_folder_for(accelerator, out: str | Path, *, job: str, config_settings: Mapping, resume: str | None,
                   start_over: bool, may_change: Iterable[str], option: str = "--output-dir") -> Iterator[None]:
    """The contract for a job under accelerate: every process checks the folder (same verdict everywhere), then the
    main process claims it; the lock is released when the block ends. ``config_settings``: the job's whole
    configuration; those in ``may_change`` are not part of the stored settings."""
    may_change = tuple(may_change)
    settings = {k: v for k, v in config_settings.items() if k not in may_change}
    check_run_folder(out, settings=settings, resume=resume, start_over=start_over, may_change=may_change,
                     option=option)
    accelerator.wait_for_everyone()  # every process has checked before the main one moves or writes anything
    folder = claim_run_folder(out, job=job, settings=settings, resume=resume, start_over=start_over,
                              may_change=may_change, option=option) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    try:
        yield
    finally:
        if folder is not None:
            folder.release()


def _holder(out: Path) -> dict | None:
    """The holder named by ``out``'s lock (None without one); raises while that holder is alive."""
    lock = out / LOCK_FILE
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:  # empty or cut short: a job between creating its lock and writing it, or one that died then
        if time.time() - lock.stat().st_mtime < 10:
            raise RunFolderError(f"{out} is being claimed by another job right now ({lock}); two jobs never write "
                                 f"one folder") from None
        return {"unreadable": True}
    if holder.get("host") != socket.gethostname() or _pid_alive(int(holder.get("pid", -1))):
        raise RunFolderError(
            f"{out} is in use by {holder.get('job', 'a job')} (pid {holder.get('pid')} on {holder.get('host')}, "
            f"since {holder.get('started_utc')}); two jobs never write one folder. Wait for it, or, if that process "
            f"is gone, delete {lock}")
    return holder


def _lock(out: Path, job: str) -> dict | None:
    """Create ``out/.fairdiff.lock`` naming this process; returns the dead holder it replaced, if any."""
    lock = out / LOCK_FILE
    me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "job": job, "started_utc": _now()})
    stale = None
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            stale = _holder(out)  # raises while the holder lives
            lock.unlink(missing_ok=True)  # its holder died on this host, or the lock is unreadable: take over
            continue
        try:
            os.write(fd, me.encode("utf-8"))
        finally:
            os.close(fd)
        return stale
    raise RunFolderError(f"{out}: could not take {lock}; another job is starting in the same folder")
