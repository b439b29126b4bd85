"""Inbox/outbox loop for an AI node: every complete series subfolder of the inbox is segmented once.

Layout:
- ``INBOX/<job>/``: one folder per incoming series (as a DICOM receiver or a copy script drops it); files may sit in
  sub-folders. A job is *complete* when its file set (relative paths, sizes, modification times) has not changed for
  ``settle_s`` seconds. Hidden entries (``.name``) of the inbox are ignored, and so is the error folder.
- ``OUTBOX/<job>/``: the results of :func:`~OncoSegLib.autoseg.pipeline.run_autoseg` (``rtstruct.dcm``,
  ``report.json``, ...), which appears complete at once.
- ``OUTBOX/.oncoseg-autoseg.json``: the manifest of jobs done or failed (atomic JSON). A restart never reprocesses a
  job listed there, nor one whose ``OUTBOX/<job>/report.json`` exists (finished just before a crash); it is added
  to the manifest instead. To run a job again, remove its entry (or send the series under a new folder name).
- Failures: the job folder is moved to ``ERROR_DIR/<job>/`` (default ``OUTBOX/error``) with ``REASON.txt`` (one-line
  error, hint, time, tool version; no patient data), so the inbox keeps only work still to do.

Inputs of successful jobs stay in the inbox (never deleted by OncoSeg). The loop stops after ``max_jobs`` jobs
and/or ``timeout_s`` seconds (checked between jobs and polls), on ``cancel``, or runs until interrupted.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from OncoSegLib import __version__
from OncoSegLib.autoseg.pipeline import REPORT_NAME, run_autoseg
from OncoSegLib.autoseg.protocol import Protocol, load_protocol
from OncoSegLib.cancel import CancelToken
from OncoSegLib.errors import Cancelled, InputError, ModelError, OncoSegError
from OncoSegLib.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

MANIFEST_NAME = ".oncoseg-autoseg.json"
REASON_NAME = "REASON.txt"


@dataclass
class WatchConfig:
    """Settings of :func:`watch_inbox`.

    Attributes:
        inbox, outbox: folders (the outbox is created); error_dir: where failed jobs go (default ``outbox/error``).
        protocol: protocol file or :class:`Protocol`; model: model name/path for ``run_autoseg`` (None = routing).
        device, seg, nifti, allow_modality_mismatch: passed to ``run_autoseg``.
        settle_s: seconds a job's file set must stay unchanged before it is processed.
        poll_s: seconds between scans of the inbox.
        max_jobs: stop after this many jobs (done + failed); None = no limit.
        timeout_s: stop after this many seconds; None = no limit.
    """

    inbox: Path
    outbox: Path
    protocol: str | os.PathLike | Protocol
    model: str | None = None
    device: str = "auto"
    seg: bool = False
    nifti: bool = False
    allow_modality_mismatch: bool = False
    settle_s: float = 10.0
    poll_s: float = 5.0
    max_jobs: int | None = None
    timeout_s: float | None = None
    error_dir: Path | None = None


@dataclass
class JobOutcome:
    """One processed job: its folder name, success, where its results (or failed input) went, a one-line message."""

    job: str
    ok: bool
    path: Path
    message: str
    found: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(relative path, size, mtime ns) of every file under ``folder``, sorted; empty when it has no file."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for f in files:
            p = Path(root) / f
            try:
                st = p.stat()
            except OSError:  # vanished while scanning: the job is still moving
                continue
            out.append((p.relative_to(folder).as_posix(), int(st.st_size), int(st.st_mtime_ns)))
    return tuple(sorted(out))


def read_manifest(outbox: Path) -> dict[str, Any]:
    """The job manifest of ``outbox`` ({"schema": 1, "jobs": {name: {...}}}), empty when absent."""
    path = outbox / MANIFEST_NAME
    if not path.exists():
        return {"schema": 1, "jobs": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the autoseg manifest {path}: {exc}",
                         "fix or remove it (then finished jobs are recognised by their report.json)") from exc
    data.setdefault("jobs", {})
    return data


def _record(outbox: Path, manifest: dict[str, Any], job: str, entry: dict[str, Any]) -> None:
    manifest["jobs"][job] = entry
    atomic_write_text(outbox / MANIFEST_NAME, json.dumps(manifest, indent=2))


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _move_to_error(src: Path, error_dir: Path, reason: str) -> Path:
    error_dir.mkdir(parents=True, exist_ok=True)
    dst = error_dir / src.name
    n = 1
    while dst.exists():
        dst = error_dir / f"{src.name}-{n}"
        n += 1
    shutil.move(str(src), str(dst))
    atomic_write_text(dst / REASON_NAME, f"{reason}\ntime: {_now()}\ntool: OncoSeg {__version__} autoseg\n")
    return dst


def watch_inbox(config: WatchConfig, bundle: Any = None, cancel: CancelToken | None = None,
                on_event: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> list[JobOutcome]:
    """Poll ``config.inbox`` and run :func:`run_autoseg` once per complete job folder; return the jobs processed.

    ``bundle``: an already loaded model for every job (else models load once and are reused across jobs).
    ``on_event``: called with one line per event (job started/done/failed), for logs; no patient data.
    """
    inbox, outbox = Path(config.inbox), Path(config.outbox)
    if not inbox.is_dir():
        raise InputError(f"inbox folder not found: {inbox}", "create it or point --watch to the receiver's folder")
    if outbox.resolve() == inbox.resolve() or inbox.resolve() in outbox.resolve().parents:
        raise InputError("the outbox must not be inside the inbox", "choose a separate --outbox folder")
    error_dir = Path(config.error_dir) if config.error_dir else outbox / "error"
    if config.max_jobs is not None and config.max_jobs < 1:
        raise InputError(f"--max-jobs must be >= 1, got {config.max_jobs}")
    protocol = load_protocol(config.protocol)  # a bad protocol stops the loop at once, not job by job
    outbox.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(outbox)
    cache: dict[str, Any] = {}
    seen: dict[str, tuple[Any, float]] = {}
    outcomes: list[JobOutcome] = []
    start = clock()
    say = on_event or (lambda msg: log.info("%s", msg))

    def out_of_time() -> bool:
        return config.timeout_s is not None and clock() - start >= config.timeout_s

    while True:
        if cancel is not None and cancel.cancelled:
            return outcomes
        skip = {error_dir.resolve()}
        for entry in sorted(inbox.iterdir(), key=lambda p: p.name):
            if not entry.is_dir() or entry.name.startswith(".") or entry.resolve() in skip:
                continue
            job = entry.name
            if job in manifest["jobs"]:
                continue
            if (outbox / job / REPORT_NAME).exists():  # finished before a restart, manifest not yet updated
                _record(outbox, manifest, job, {"status": "done", "finished": _now(), "out": job,
                                                "note": "recovered from an existing report.json"})
                continue
            fp = fingerprint(entry)
            if not fp:
                continue
            now = clock()
            prev = seen.get(job)
            if prev is None or prev[0] != fp:
                seen[job] = (fp, now)
            if now - seen[job][1] < config.settle_s:
                continue
            outcomes.append(_process(entry, outbox, error_dir, protocol, config, bundle, cache, cancel, manifest,
                                     say))
            seen.pop(job, None)
            if config.max_jobs is not None and len(outcomes) >= config.max_jobs:
                return outcomes
            if out_of_time() or (cancel is not None and cancel.cancelled):
                return outcomes
        if out_of_time():
            return outcomes
        sleep(config.poll_s)


def _process(entry: Path, outbox: Path, error_dir: Path, protocol: Protocol, config: WatchConfig, bundle: Any,
             cache: dict[str, Any], cancel: CancelToken | None, manifest: dict[str, Any],
             say: Callable[[str], None]) -> JobOutcome:
    job = entry.name
    say(f"job {job}: started")
    t0 = time.perf_counter()
    try:
        res = run_autoseg(entry, protocol, config.model, out_dir=outbox / job, device=config.device,
                          cancel=cancel, bundle=bundle, seg=config.seg, nifti=config.nifti,
                          allow_modality_mismatch=config.allow_modality_mismatch, bundle_cache=cache)
    except (Cancelled, ModelError):  # a missing/broken model fails every job alike: stop, leave the job in the inbox
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one job goes to the error folder; the loop goes on
        if isinstance(exc, OncoSegError):
            reason = str(exc)
        else:
            reason = f"internal error: {type(exc).__name__}: {exc}"
            log.exception("job %s failed", job)
        try:
            dst = _move_to_error(entry, error_dir, reason)
        except OSError as move_exc:
            dst = entry
            reason += f" (could not move the job to {error_dir}: {move_exc})"
        _record(outbox, manifest, job, {"status": "failed", "finished": _now(), "reason": reason,
                                        "error_dir": str(dst)})
        say(f"job {job}: FAILED: {reason}")
        return JobOutcome(job, False, dst, reason)
    _record(outbox, manifest, job, {"status": "done", "finished": _now(), "out": job, "found": res.found,
                                    "not_found": res.missing, "seconds": round(time.perf_counter() - t0, 3)})
    msg = (f"found {len(res.found)}/{len(res.structures)} structure(s)"
           + (f"; not found: {', '.join(res.missing)}" if res.missing else ""))
    say(f"job {job}: done, {msg}")
    return JobOutcome(job, True, res.out_dir, msg, found=res.found, missing=res.missing)


__all__ = ["watch_inbox", "WatchConfig", "JobOutcome", "fingerprint", "read_manifest", "MANIFEST_NAME",
           "REASON_NAME"]
