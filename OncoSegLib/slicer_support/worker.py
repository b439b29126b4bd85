"""One long-lived worker thread for all model work, with results handed back to the main thread.

Why one thread: CUDA/cuDNN handles and autotuning caches are per thread, so a fresh thread per click re-pays their
set-up (SlicerNNInteractive measured 1.2 s vs 0.11 s per click). Why a queue back: MRML and Qt may only be touched
on the main thread, so jobs never call the GUI; they return values, and their progress/done/error events wait in an
outbox that the main thread drains with :meth:`ModelWorker.poll` (from a QTimer in Slicer, or a loop in tests and
the console Logic).

Rules enforced here:
- jobs run one at a time, in submission order, all on the same thread;
- an interactive prompt submitted with ``drop_if_busy=True`` while another job is queued or running is dropped
  (returns None): clicks made during inference do not pile up;
- an exception in a job is delivered to its ``on_error`` (never lost, never kills the thread);
- cancel sets the job's CancelToken (the job polls it); a queued job that is cancelled never starts and reports
  :class:`~OncoSegLib.errors.Cancelled`.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from OncoSegLib.cancel import CancelToken, ProgressCallback
from OncoSegLib.errors import Cancelled

#: a job body: fn(cancel_token, progress) -> result; runs on the worker thread, must not touch MRML/Qt
JobFn = Callable[[CancelToken, ProgressCallback], Any]


@dataclass
class Job:
    """A submitted unit of model work and its main-thread callbacks."""

    id: int
    kind: str
    fn: JobFn
    on_done: Optional[Callable[[Any], None]] = None
    on_error: Optional[Callable[[BaseException], None]] = None
    on_progress: Optional[Callable[[int, int, str], None]] = None
    cancel: CancelToken = field(default_factory=CancelToken)
    state: str = "queued"  # queued, running, done, error, cancelled
    result: Any = None
    error: Optional[BaseException] = None
    finished: threading.Event = field(default_factory=threading.Event)


class ModelWorker:
    """A single daemon thread running submitted jobs in order; events are delivered by :meth:`poll`."""

    def __init__(self, name: str = "OncoSeg-model") -> None:
        self._name = name
        self._inbox: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._outbox: "queue.Queue[tuple[str, Job, Any]]" = queue.Queue()
        self._lock = threading.Lock()
        self._pending: list[Job] = []  # queued or running, in order
        self._ids = itertools.count(1)
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    # ----- main thread API -----
    @property
    def thread_ident(self) -> Optional[int]:
        """The worker thread's ident once started (every job runs there)."""
        return None if self._thread is None else self._thread.ident

    @property
    def busy(self) -> bool:
        """True while a job is queued or running."""
        with self._lock:
            return bool(self._pending)

    @property
    def current(self) -> Optional[Job]:
        """The running (or next) job, if any."""
        with self._lock:
            return self._pending[0] if self._pending else None

    def submit(self, fn: JobFn, *, kind: str = "job", drop_if_busy: bool = False,
               on_done: Optional[Callable[[Any], None]] = None,
               on_error: Optional[Callable[[BaseException], None]] = None,
               on_progress: Optional[Callable[[int, int, str], None]] = None) -> Optional[Job]:
        """Queue ``fn``; returns the Job, or None when ``drop_if_busy`` and another job is pending."""
        if self._closed:
            raise RuntimeError("the worker was shut down")
        with self._lock:
            if drop_if_busy and self._pending:
                return None
            job = Job(next(self._ids), kind, fn, on_done, on_error, on_progress)
            self._pending.append(job)
        self._ensure_thread()
        self._inbox.put(job)
        return job

    def cancel_all(self) -> int:
        """Cancel the running job and every queued one; returns how many were signalled."""
        with self._lock:
            jobs = list(self._pending)
        for j in jobs:
            j.cancel.cancel()
        return len(jobs)

    def poll(self, max_events: int = 1000) -> int:
        """Deliver pending events (progress, done, error) by calling the callbacks; main thread only.

        Returns the number of events delivered. Callback exceptions propagate to the caller (the GUI shows them).
        """
        n = 0
        while n < max_events:
            try:
                kind, job, payload = self._outbox.get_nowait()
            except queue.Empty:
                break
            n += 1
            if kind == "progress":
                if job.on_progress is not None:
                    job.on_progress(*payload)
            elif kind == "done":
                if job.on_done is not None:
                    job.on_done(payload)
            elif kind == "error":
                if job.on_error is not None:
                    job.on_error(payload)
        return n

    def run_sync(self, fn: JobFn, *, kind: str = "job", pump: Optional[Callable[[], None]] = None,
                 on_progress: Optional[Callable[[int, int, str], None]] = None,
                 interval_s: float = 0.03, timeout_s: Optional[float] = None) -> Any:
        """Run ``fn`` on the worker thread and wait for it from the calling (main) thread.

        While waiting it delivers events and calls ``pump`` (``slicer.app.processEvents`` in Slicer) so the
        application stays responsive. Returns the result or raises the job's exception.
        """
        job = self.submit(fn, kind=kind, on_progress=on_progress)
        assert job is not None
        start = time.monotonic()
        while not job.finished.wait(interval_s):
            self.poll()
            if pump is not None:
                pump()
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                job.cancel.cancel()
                raise TimeoutError(f"job {kind} did not finish within {timeout_s} s")
        self.poll()
        if job.error is not None:
            raise job.error
        return job.result

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Block until no job is pending (tests); returns False on timeout."""
        end = time.monotonic() + timeout_s
        while self.busy:
            if time.monotonic() > end:
                return False
            time.sleep(0.005)
        return True

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Cancel everything and stop the thread (module cleanup)."""
        self._closed = True
        self.cancel_all()
        if self._thread is not None:
            self._inbox.put(None)
            self._thread.join(timeout_s)

    # ----- worker thread -----
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def _finish(self, job: Job, state: str, event: str, payload: Any) -> None:
        job.state = state
        with self._lock:
            if job in self._pending:
                self._pending.remove(job)
        self._outbox.put((event, job, payload))
        job.finished.set()

    def _loop(self) -> None:
        while True:
            job = self._inbox.get()
            if job is None:
                return
            if job.cancel.cancelled:
                job.error = Cancelled("cancelled before it started")
                self._finish(job, "cancelled", "error", job.error)
                continue
            job.state = "running"

            def progress(done: int, total: int, message: str = "", _job: Job = job) -> None:
                self._outbox.put(("progress", _job, (int(done), int(total), str(message))))

            try:
                job.result = job.fn(job.cancel, progress)
            except BaseException as e:  # delivered to the GUI, never kills the thread
                job.error = e
                self._finish(job, "cancelled" if isinstance(e, Cancelled) else "error", "error", e)
            else:
                self._finish(job, "done", "done", job.result)
