"""Inbox/outbox loop for an AI node: every complete series subfolder of the inbox is segmented once.

Layout:
- ``INBOX/<job>/``: one folder per incoming series (as a DICOM receiver or a copy script drops it); files may sit in
  sub-folders. Hidden entries (``.name``) of the inbox are never jobs.
- ``OUTBOX/<job>/``: the results of :func:`~OncoSegLib.autoseg.pipeline.run_autoseg` (``rtstruct.dcm``,
  ``report.json``, ...) plus ``.oncoseg-job.json`` (the digest of the inputs they were made from).
- ``OUTBOX/.oncoseg-autoseg.json``: the manifest of jobs done or failed, with the digest of their inputs.
- ``ERROR_DIR/<job>/`` (default ``OUTBOX/.error``, outside the job namespace: a job is never hidden): the input of a
  failed job with ``REASON.txt`` (one-line error, hint, time, tool version; no patient data).

Guarantees (each one tested in ``Testing/test_autoseg_watch_*.py``):
- Complete series only: a job is processed when its file set (relative paths, sizes, modification times) has not
  changed for ``settle_s`` seconds AND every DICOM file in it is whole (parses; all Pixel Data bytes present, see
  :mod:`.readiness`). If its files change while it is processed, the results are discarded and it waits again.
- A job whose files change after it was processed (a copy that paused longer than ``settle_s``, then went on) is
  detected from the input digest and processed again; its results are replaced as a whole. Never two jobs from one
  folder; never a half RTSTRUCT marked done (the manifest's digest would no longer match). A done job costs one
  folder-mtime check per poll (files added/removed/renamed) and a full compare every ``recheck_s`` seconds.
- Results appear at once and complete: ``run_autoseg`` writes into a hidden ``OUTBOX/.<job>.<random>.partial``
  folder, which is renamed to ``OUTBOX/<job>`` (a previous result is first moved aside, then deleted); the manifest
  is written atomically after the rename. Folders are created with the umask's mode (``0o777 & ~umask``).
- A failed job stays in the inbox until it has been unchanged for ``error_hold_s`` seconds more (a copy that paused
  is never moved mid-copy; if it changes it is simply tried again), then it moves to the error folder with
  ``REASON.txt``: the folder appears there complete (renamed, or copied to a hidden ``.partial`` folder first when
  the error folder is on another filesystem), or the job stays in the inbox.
- A model that cannot be loaded (corrupt or half-downloaded weights, wrong config, no text detector) stops the loop
  with a :class:`ModelError`: no job is marked failed, every job stays in the inbox. Models named by the config or
  the protocol are loaded before the first job.
- Disk full (``ENOSPC``/``EDQUOT``) anywhere stops the loop with one line (:class:`WatchStopped`); the job being
  processed stays in the inbox, its staging folder is removed.
- One watcher per inbox, per outbox and per error folder (:class:`~.watch_lock.WatchLock`, an ``flock`` the kernel
  drops on any exit, ``kill -9`` included); a second one raises :class:`InputError` naming the PID of the first.
- A restart first removes the temporary files of an interrupted run (``.*.partial`` / ``.*.part*`` in the outbox
  and the error folder), puts back a job caught between the inbox and the error folder, and recognises results
  whose rename finished before the manifest was written (``.oncoseg-job.json`` matches the inputs): after
  ``kill -9`` every job is processed exactly once or is still in the inbox.

Inputs of successful jobs stay in the inbox (never deleted by OncoSeg). The loop stops after ``max_jobs`` jobs
and/or ``timeout_s`` seconds (checked between jobs and polls), on ``cancel``, or runs until interrupted.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from OncoSegLib import __version__
from OncoSegLib.autoseg import pipeline as _pipeline
from OncoSegLib.autoseg.pipeline import REPORT_NAME, run_autoseg
from OncoSegLib.autoseg.protocol import Protocol, load_protocol
from OncoSegLib.autoseg.readiness import (Fingerprint, fingerprint, fingerprint_digest, incomplete_reason,
                                          tree_signature)
from OncoSegLib.autoseg.watch_lock import WatchLock
from OncoSegLib.cancel import CancelToken
from OncoSegLib.errors import Cancelled, InputError, ModelError, OncoSegError
from OncoSegLib.io.atomic import atomic_write_text, make_temp_dir

log = logging.getLogger(__name__)

MANIFEST_NAME = ".oncoseg-autoseg.json"
REASON_NAME = "REASON.txt"
STAMP_NAME = ".oncoseg-job.json"
ERROR_DIR_NAME = ".error"
_TEMP_RE = re.compile(r"^\..+(\.partial|\.part(\.[^/]*)?)$")  # staging folders and atomic writers' temp files
_MOVING_RE = re.compile(r"^\.(?P<job>.+)\.[0-9a-f]{8}\.moving$")  # a job renamed into the error folder, no REASON yet
_MOVED_RE = re.compile(r"^\..+\.[0-9a-f]{8}\.moved$")  # an inbox original already copied to the error folder
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class WatchStopped(OncoSegError):
    """The loop stopped for a reason that would fail every job alike (disk full); the job stays in the inbox."""


@dataclass
class WatchConfig:
    """Settings of :func:`watch_inbox`.

    Attributes:
        inbox, outbox: folders (the outbox is created); error_dir: where failed jobs go (default ``outbox/.error``;
            inside the outbox only under a hidden name, so that no job's results can collide with it).
        protocol: protocol file or :class:`Protocol`; model: model name/path for ``run_autoseg`` (None = routing).
        device, seg, nifti, allow_modality_mismatch: passed to ``run_autoseg``.
        settle_s: seconds a job's file set must stay unchanged (and whole) before it is processed.
        poll_s: seconds between scans of the inbox.
        error_hold_s: seconds a failed (or never whole) job must stay unchanged in the inbox before it is moved to
            the error folder; 0 = at once.
        recheck_s: a job already done is looked at cheaply at each poll (its folders' mtimes: files added, removed,
            renamed); every ``recheck_s`` seconds all its files are compared (a file rewritten in place).
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
    error_hold_s: float = 60.0
    recheck_s: float = 300.0


@dataclass
class JobOutcome:
    """One processed job: its folder name, success, where its results (or failed input) went, a one-line message."""

    job: str
    ok: bool
    path: Path
    message: str
    found: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ small helpers
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


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) is "no space left" / "quota exceeded"."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return True
        if any(os.strerror(code) in str(e) for code in _DISK_FULL):  # wrapped without errno (OutputPathError)
            return True
        e = e.__cause__ or e.__context__
    return False


def _disk_full(job: str, where: Path, exc: BaseException) -> WatchStopped:
    return WatchStopped(f"disk full while writing {where}: {_one_line(exc)}; job {job} left in the inbox",
                        "free space (or raise the quota), then restart the watcher")


def _check_folders(config: WatchConfig) -> tuple[Path, Path, Path]:
    inbox, outbox = Path(config.inbox), Path(config.outbox)
    if not inbox.is_dir():
        raise InputError(f"inbox folder not found: {inbox}", "create it or point --watch to the receiver's folder")
    rin, rout = inbox.resolve(), outbox.resolve()
    if rout == rin or rin in rout.parents:
        raise InputError("the outbox must not be inside the inbox", "choose a separate --outbox folder")
    if rout in rin.parents:
        raise InputError("the inbox must not be inside the outbox", "choose separate --watch and --outbox folders")
    error_dir = Path(config.error_dir) if config.error_dir else outbox / ERROR_DIR_NAME
    rerr = error_dir.resolve()
    if rerr == rin or rin in rerr.parents:
        raise InputError("the error folder must not be inside the inbox", "choose a --error-dir outside the inbox")
    if rerr == rout:
        raise InputError("the error folder must not be the outbox itself", "choose e.g. OUTBOX/.error")
    if rout in rerr.parents and not rerr.relative_to(rout).parts[0].startswith("."):
        raise InputError(f"the error folder {error_dir} could collide with the results of a job named "
                         f"'{rerr.relative_to(rout).parts[0]}'",
                         "use a hidden name inside the outbox (e.g. OUTBOX/.error) or a folder outside it")
    return inbox, outbox, error_dir


# ------------------------------------------------------------------------------------------------ entry point
def watch_inbox(config: WatchConfig, bundle: Any = None, cancel: CancelToken | None = None,
                on_event: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> list[JobOutcome]:
    """Poll ``config.inbox`` and run :func:`run_autoseg` once per complete job folder; return the jobs processed.

    ``bundle``: an already loaded model for every job (else models load once, before the first job where their
    names are known, and are reused across jobs). ``on_event``: called with one line per event (job
    started/done/failed/waiting), for logs; no patient data. ``sleep``/``clock``: seams for tests (seconds).

    Raises :class:`InputError` (bad folders, bad protocol, another watcher holds the lock), :class:`ModelError`
    (a model cannot be loaded: every job stays in the inbox), :class:`WatchStopped` (disk full), :class:`Cancelled`.
    """
    inbox, outbox, error_dir = _check_folders(config)
    if config.max_jobs is not None and config.max_jobs < 1:
        raise InputError(f"--max-jobs must be >= 1, got {config.max_jobs}")
    if config.error_hold_s < 0:
        raise InputError(f"--error-hold must be >= 0, got {config.error_hold_s}")
    protocol = load_protocol(config.protocol)  # a bad protocol stops the loop at once, not job by job
    try:
        outbox.mkdir(parents=True, exist_ok=True)  # mkdir: mode 0o777 & ~umask
    except OSError as exc:
        raise InputError(f"cannot create the outbox {outbox}: {exc.strerror}", "choose a folder you can write to") \
            from None
    say = on_event or (lambda msg: log.info("%s", msg))
    locks = [WatchLock(inbox, "watching"), WatchLock(outbox, "writing to")]
    if outbox.resolve() not in error_dir.resolve().parents:  # an error folder of its own: one watcher there too
        try:
            error_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the error folder {error_dir}: {exc.strerror}",
                             "choose a --error-dir you can write to") from None
        locks.append(WatchLock(error_dir, "moving failed jobs to"))
    with contextlib.ExitStack() as held:
        for lock in locks:
            held.enter_context(lock)
        clean_leftovers(inbox, outbox, error_dir, say)
        watcher = _Watcher(config, inbox, outbox, error_dir, protocol, bundle, cancel, say, sleep, clock)
        watcher.preload_models()
        return watcher.run()


def clean_leftovers(inbox: Path, outbox: Path, error_dir: Path, say: Callable[[str], None]) -> int:
    """Remove what an interrupted run left (staging folders, atomic writers' temp files) and put back a job caught
    between the inbox and the error folder. Touches only hidden names of our own patterns; returns the count."""
    removed = 0

    def drop(p: Path) -> None:
        nonlocal removed
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1

    folders = [outbox, error_dir] + [p for p in outbox.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if _TEMP_RE.match(p.name):
                drop(p)
    for p in inbox.iterdir():
        if _MOVED_RE.match(p.name):  # its copy in the error folder was complete before this was renamed
            drop(p)
    if error_dir.is_dir():
        for p in error_dir.iterdir():
            m = _MOVING_RE.match(p.name)
            if m and p.is_dir():
                back = inbox / m.group("job")
                if back.exists():
                    say(f"warning: {p} holds job {m.group('job')} of an interrupted run, and the inbox has a "
                        "folder of that name; left both in place")
                    continue
                os.rename(p, back)
                say(f"job {m.group('job')}: put back into the inbox (its move to the error folder was interrupted)")
    if removed:
        say(f"removed {removed} temporary file(s)/folder(s) left by an interrupted run")
    return removed


# ------------------------------------------------------------------------------------------------ the loop
class _Watcher:
    def __init__(self, config: WatchConfig, inbox: Path, outbox: Path, error_dir: Path, protocol: Protocol,
                 bundle: Any, cancel: CancelToken | None, say: Callable[[str], None],
                 sleep: Callable[[float], None], clock: Callable[[], float]):
        self.config, self.inbox, self.outbox, self.error_dir = config, inbox, outbox, error_dir
        self.protocol, self.bundle, self.cancel, self.say = protocol, bundle, cancel, say
        self.sleep, self.clock = sleep, clock
        self.manifest = read_manifest(outbox)
        self.cache: dict[str, Any] = {}
        self.seen: dict[str, tuple[Fingerprint, float]] = {}  # job -> (file set, since when unchanged)
        self.held: dict[str, float] = {}  # failed job still in the inbox -> clock time its hold started
        self.told: dict[str, str] = {}  # job -> last "waiting"/"changed" message (said once)
        self.whole: dict[str, dict[tuple[str, int, int], str | None]] = {}  # job -> (file, size, mtime) -> reason
        self.settled: dict[str, tuple[Any, float]] = {}  # job done, unchanged -> (tree signature, last full check)
        self.outcomes: list[JobOutcome] = []
        self.start = clock()

    # ---------------------------------------------------------------- models
    def preload_models(self) -> None:
        """Load every model whose name is known before the first job; any failure is a one-line ModelError."""
        from OncoSegLib.models.registry import model_for_modality

        cfg, proto = self.config, self.protocol
        names: list[str] = []
        try:
            if self.bundle is None:
                if cfg.model is not None:
                    names.append(str(cfg.model))
                else:  # the routing of the protocol's modalities (an empty list = any: loaded at the first job)
                    names += [model_for_modality(m) for m in proto.modalities]
        except Exception as exc:  # noqa: BLE001 - a broken registry manifest is a model problem
            raise ModelError(_one_line(f"cannot resolve the model for {proto.modalities}: {exc}")) from None
        names += [s.model for s in proto.structures if s.model]
        # the same components run_autoseg asks for, so that its cache lookups hit these
        needs_video = proto.strategy == "propagate" and proto.propagation in ("auto", "memory")
        components = ["tracker", "detector"] + (["video"] if needs_video else [])
        for name in dict.fromkeys(names):
            self.say(f"loading model {name}")
            try:
                self.cache[name] = _pipeline.load_model(name, cfg.device, components)
            except (Cancelled, KeyboardInterrupt):
                raise
            except OncoSegError as exc:
                raise ModelError(_one_line(f"cannot load model '{name}': {exc.message}"),
                                 exc.hint and _one_line(exc.hint)) from None
            except Exception as exc:  # noqa: BLE001 - corrupt weights raise anything; say it in one line
                raise ModelError(_one_line(f"cannot load model '{name}': {type(exc).__name__}: {exc}"),
                                 "the weights may be incomplete or not match config.json; download or convert "
                                 "the model again; every job stays in the inbox") from None

    # ---------------------------------------------------------------- loop
    def out_of_time(self) -> bool:
        return self.config.timeout_s is not None and self.clock() - self.start >= self.config.timeout_s

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.cancelled

    def run(self) -> list[JobOutcome]:
        while True:
            if self.cancelled():
                return self.outcomes
            for entry in sorted(self.inbox.iterdir(), key=lambda p: p.name):
                if not entry.is_dir() or entry.name.startswith("."):
                    continue
                if self.visit(entry):
                    if self.config.max_jobs is not None and len(self.outcomes) >= self.config.max_jobs:
                        return self.outcomes
                    if self.out_of_time() or self.cancelled():
                        return self.outcomes
            if self.out_of_time():
                return self.outcomes
            self.sleep(self.config.poll_s)

    def tell(self, job: str, msg: str) -> None:
        if self.told.get(job) != msg:
            self.told[job] = msg
            self.say(f"job {job}: {msg}")

    def visit(self, entry: Path) -> bool:
        """Look at one job folder; True when a job was processed (an outcome was added)."""
        job = entry.name
        sig = tree_signature(entry)
        known = self.settled.get(job)
        if known is not None and known[0] == sig and self.clock() - known[1] < self.config.recheck_s:
            return False  # done and nothing added, removed or renamed since the last full check
        self.settled.pop(job, None)
        fp = fingerprint(entry)
        if not fp:
            return False
        digest = fingerprint_digest(fp)
        rec = self.manifest["jobs"].get(job)
        if rec is not None and rec.get("inputs", digest) == digest:  # older entries have no digest: never redone
            if rec.get("status") == "failed" and rec.get("in_inbox"):
                self.hold(entry, rec)
            elif rec.get("status") == "done":
                self.settled[job] = (sig, self.clock())
            return False
        redo = False
        if (self.outbox / job / REPORT_NAME).exists():
            stamp = _read_stamp(self.outbox / job)
            if stamp == digest or (stamp is None and rec is None):  # renamed in just before a crash
                self.record(job, {"status": "done", "finished": _now(), "out": job, "inputs": digest,
                                  "note": "recovered from an existing report.json"})
                return False
            redo = True  # results of other inputs: replaced once this folder is complete
        if rec is not None:
            self.held.pop(job, None)
            self.tell(job, "its files changed after it " + ("was processed" if rec.get("status") == "done" else
                                                            "failed") + "; it is processed again once complete")
        now = self.clock()
        prev = self.seen.get(job)
        if prev is None or prev[0] != fp:
            self.seen[job] = (fp, now)
        since = self.seen[job][1]
        if now - since < self.config.settle_s:
            return False
        reason = self.incomplete(entry, fp)
        if reason is not None:
            if now - since < self.config.settle_s + self.config.error_hold_s:
                self.tell(job, f"waiting: {reason}")
                return False
            self.outcomes.append(self.fail(entry, digest, f"the series never became complete: {reason}",
                                           move_now=True))
            return True
        outcome = self.process(entry, fp, digest, redo)
        if outcome is None:
            return False
        self.outcomes.append(outcome)
        self.seen.pop(job, None)
        self.whole.pop(job, None)  # a long-running node must not keep one entry per file ever seen
        self.told.pop(job, None)
        return True

    def incomplete(self, entry: Path, fp: Fingerprint) -> str | None:
        """The first file of the job that is not a whole DICOM file (cached by name, size and mtime), or None."""
        known = self.whole.setdefault(entry.name, {})
        for rel, size, mtime in fp:
            key = (rel, size, mtime)
            if key not in known:
                known[key] = incomplete_reason(entry / rel)
            if known[key] is not None:
                return f"file '{rel}' {known[key]}"
        return None

    def record(self, job: str, entry: dict[str, Any]) -> None:
        """Update the manifest (atomic); disk full stops the loop."""
        self.manifest["jobs"][job] = entry
        try:
            atomic_write_text(self.outbox / MANIFEST_NAME, json.dumps(self.manifest, indent=2))
        except Exception as exc:
            if is_disk_full(exc):
                raise _disk_full(job, self.outbox / MANIFEST_NAME, exc) from None
            raise

    # ---------------------------------------------------------------- one job
    def process(self, entry: Path, fp: Fingerprint, digest: dict[str, Any], redo: bool) -> JobOutcome | None:
        job, cfg = entry.name, self.config
        self.say(f"job {job}: started" + (" again (its files changed)" if redo else ""))
        self.told.pop(job, None)
        t0 = time.perf_counter()
        try:
            stage = make_temp_dir(self.outbox, prefix=f".{job[:64]}.")  # hidden, ".partial", mode 0o777 & ~umask
        except Exception as exc:
            if is_disk_full(exc):
                raise _disk_full(job, self.outbox, exc) from None
            raise
        try:
            try:
                res = run_autoseg(entry, self.protocol, cfg.model, out_dir=stage / "result", device=cfg.device,
                                  cancel=self.cancel, bundle=self.bundle, seg=cfg.seg, nifti=cfg.nifti,
                                  allow_modality_mismatch=cfg.allow_modality_mismatch, bundle_cache=self.cache)
            except Cancelled:
                raise
            except ModelError as exc:  # a broken model fails every job alike: stop, leave the job in the inbox
                raise ModelError(_one_line(exc.message) + f" (job {job} left in the inbox)",
                                 exc.hint and _one_line(exc.hint)) from None
            except Exception as exc:  # noqa: BLE001 - one job's failure; the loop goes on
                if is_disk_full(exc):
                    raise _disk_full(job, self.outbox, exc) from None
                if fingerprint(entry) != fp:  # it was still being written: not a failure of the series
                    self.seen[job] = (fingerprint(entry), self.clock())
                    self.tell(job, "its files changed while it was processed; waiting for it to settle")
                    return None
                if isinstance(exc, OncoSegError):
                    reason = _one_line(str(exc))
                else:
                    reason = _one_line(f"internal error: {type(exc).__name__}: {exc}")
                    log.exception("job %s failed", job)
                return self.fail(entry, digest, reason, move_now=cfg.error_hold_s == 0)
            if fingerprint(entry) != fp:
                self.seen[job] = (fingerprint(entry), self.clock())
                self.tell(job, "its files changed while it was processed; results discarded, waiting for it "
                          "to settle")
                return None
            try:
                (stage / "result" / STAMP_NAME).write_text(json.dumps({"inputs": digest}), encoding="utf-8")
                _publish(stage / "result", self.outbox / job, stage)
            except OSError as exc:
                if is_disk_full(exc):
                    raise _disk_full(job, self.outbox, exc) from None
                raise
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        self.held.pop(job, None)
        self.record(job, {"status": "done", "finished": _now(), "out": job, "inputs": digest, "found": res.found,
                          "not_found": res.missing, "seconds": round(time.perf_counter() - t0, 3)})
        msg = (f"found {len(res.found)}/{len(res.structures)} structure(s)"
               + (f"; not found: {', '.join(res.missing)}" if res.missing else ""))
        self.say(f"job {job}: done, {msg}")
        return JobOutcome(job, True, self.outbox / job, msg, found=res.found, missing=res.missing)

    def fail(self, entry: Path, digest: dict[str, Any], reason: str, move_now: bool) -> JobOutcome:
        """Record a failed job; it stays in the inbox (held) unless ``move_now``."""
        job = entry.name
        old = self.manifest["jobs"].get(job) or {}
        rec = {"status": "failed", "finished": _now(), "reason": reason, "inputs": digest, "in_inbox": True,
               "attempts": int(old.get("attempts", 0)) + 1 if old.get("status") == "failed" else 1}
        self.held[job] = self.clock()
        path = entry
        if move_now:
            path = self.move_to_error(entry, rec)
        self.record(job, rec)
        where = (f"moved to {path}" if path != entry else
                 f"left in the inbox for {self.config.error_hold_s:g} s (retried if its files change)")
        self.say(f"job {job}: FAILED: {reason} ({where})")
        return JobOutcome(job, False, path, reason)

    def hold(self, entry: Path, rec: dict[str, Any]) -> None:
        """A failed job still in the inbox, unchanged: move it to the error folder once its hold is over."""
        job = entry.name
        since = self.held.setdefault(job, self.clock())  # after a restart the hold starts again
        if self.clock() - since < self.config.error_hold_s:
            return
        path = self.move_to_error(entry, rec)
        if path != entry:
            self.record(job, rec)
            self.held.pop(job, None)
            self.say(f"job {job}: moved to {path}")
        else:
            self.held[job] = self.clock()  # could not move (reason logged): try again after another hold

    def move_to_error(self, entry: Path, rec: dict[str, Any]) -> Path:
        """Move the job to the error folder with REASON.txt, updating ``rec``; returns where the job now is."""
        job = entry.name
        text = (f"{rec['reason']}\ntime: {rec['finished']}\ntool: OncoSeg {__version__} autoseg\n"
                f"attempts: {rec.get('attempts', 1)}\n")
        try:
            dst = _move_with_reason(entry, self.error_dir, self.inbox, text)
        except Exception as exc:  # noqa: BLE001 - the job stays in the inbox, whatever went wrong
            if is_disk_full(exc):
                raise _disk_full(job, self.error_dir, exc) from None
            rec["move_error"] = _one_line(f"could not move the job to {self.error_dir}: {exc}")
            self.say(f"job {job}: {rec['move_error']}; left in the inbox")
            return entry
        rec["in_inbox"] = False
        rec["error_dir"] = str(dst)
        rec.pop("move_error", None)
        return dst


# ------------------------------------------------------------------------------------------------ file moves
def _read_stamp(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / STAMP_NAME).read_text(encoding="utf-8")).get("inputs")
    except (OSError, ValueError, AttributeError):
        return None


def _publish(result: Path, dst: Path, stage: Path) -> None:
    """Rename the complete ``result`` folder to ``dst``; an earlier result is first moved into ``stage``."""
    if dst.exists() or dst.is_symlink():
        os.rename(dst, stage / "previous")
    os.rename(result, dst)


def _move_with_reason(src: Path, error_dir: Path, inbox: Path, reason_text: str) -> Path:
    """``src`` -> ``error_dir/<name>[-n]`` with REASON.txt, appearing there complete, or left where it was."""
    error_dir.mkdir(parents=True, exist_ok=True)  # mode 0o777 & ~umask
    name = src.name
    dst, n = error_dir / name, 1
    while dst.exists():
        dst, n = error_dir / f"{name}-{n}", n + 1
    tag = uuid.uuid4().hex[:8]
    moving = error_dir / f".{name}.{tag}.moving"
    try:
        os.rename(src, moving)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        return _copy_with_reason(src, dst, error_dir / f".{name}.{tag}.partial", inbox / f".{name}.{tag}.moved",
                                 reason_text)
    try:
        atomic_write_text(moving / REASON_NAME, reason_text)
        os.rename(moving, dst)
    except BaseException:
        os.rename(moving, src)  # put the job back as it was
        raise
    return dst


def _copy_with_reason(src: Path, dst: Path, partial: Path, moved: Path, reason_text: str) -> Path:
    """Another filesystem: copy into a hidden ``.partial`` folder, add REASON.txt, rename; then drop the original."""
    try:
        shutil.copytree(src, partial, symlinks=True)
        atomic_write_text(partial / REASON_NAME, reason_text)
        os.rename(partial, dst)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    os.rename(src, moved)  # hidden in the inbox: never a job again, removed at once (or at the next start)
    shutil.rmtree(moved, ignore_errors=True)
    return dst


__all__ = ["watch_inbox", "WatchConfig", "JobOutcome", "WatchStopped", "fingerprint", "read_manifest",
           "clean_leftovers", "is_disk_full", "MANIFEST_NAME", "REASON_NAME", "STAMP_NAME", "ERROR_DIR_NAME"]
