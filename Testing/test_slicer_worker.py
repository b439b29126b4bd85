"""The module's single model worker thread: order, one thread, dropped re-entrant prompts, errors, cancel."""

import threading
import time

import pytest

from OncoSegLib.errors import Cancelled, ModelError
from OncoSegLib.slicer_support.worker import ModelWorker


@pytest.fixture
def worker():
    w = ModelWorker()
    yield w
    w.shutdown()


def _drain(w, until, timeout=10.0):
    end = time.monotonic() + timeout
    while not until():
        w.poll()
        assert time.monotonic() < end, "worker did not deliver in time"
        time.sleep(0.002)
    w.poll()


def test_jobs_run_in_order_on_one_long_lived_thread(worker):
    seen, threads, done = [], set(), []
    for n in range(6):
        def job(cancel, progress, n=n):
            threads.add(threading.get_ident())
            seen.append(n)
            return n * n
        worker.submit(job, on_done=done.append)
    _drain(worker, lambda: len(done) == 6)
    assert seen == list(range(6)) and done == [n * n for n in range(6)]
    assert threads == {worker.thread_ident} and worker.thread_ident != threading.get_ident()
    # a later job still runs on the same thread (cuDNN/CUDA caches live per thread)
    ident = worker.run_sync(lambda c, p: threading.get_ident())
    assert ident in threads


def test_reentrant_prompt_dropped_while_one_is_in_flight(worker):
    release = threading.Event()
    started = threading.Event()

    def slow(cancel, progress):
        started.set()
        release.wait(5)
        return "first"

    results = []
    first = worker.submit(slow, kind="prompt", drop_if_busy=True, on_done=results.append)
    assert first is not None
    started.wait(5)
    assert worker.busy
    second = worker.submit(lambda c, p: "second", kind="prompt", drop_if_busy=True, on_done=results.append)
    assert second is None  # dropped, never runs
    queued = worker.submit(lambda c, p: "explicit", kind="propagate", on_done=results.append)  # not droppable: queued
    assert queued is not None
    release.set()
    _drain(worker, lambda: len(results) == 2)
    assert results == ["first", "explicit"]
    assert not worker.busy
    assert worker.submit(lambda c, p: "third", drop_if_busy=True) is not None  # idle again: accepted


def test_errors_are_delivered_and_the_thread_survives(worker):
    errors, done = [], []

    def bad(cancel, progress):
        raise ModelError("out of memory", hint="use a smaller model")

    job = worker.submit(bad, on_error=errors.append, on_done=done.append)
    worker.submit(lambda c, p: 42, on_done=done.append)
    _drain(worker, lambda: len(done) == 1)
    assert len(errors) == 1 and isinstance(errors[0], ModelError) and "smaller model" in str(errors[0])
    assert job.state == "error" and done == [42]
    with pytest.raises(ZeroDivisionError):
        worker.run_sync(lambda c, p: 1 / 0)


def test_cancel_running_and_queued_jobs(worker):
    started = threading.Event()
    progressed = []

    def long_job(cancel, progress):
        started.set()
        for i in range(1000):
            progress(i, 1000, "slice")
            cancel.raise_if_cancelled()
            time.sleep(0.002)
        return "finished"

    errors, done = [], []
    running = worker.submit(long_job, on_error=errors.append, on_done=done.append,
                            on_progress=lambda d, t, m: progressed.append(d))
    queued_ran = []
    queued = worker.submit(lambda c, p: queued_ran.append(1), on_error=errors.append)
    started.wait(5)
    _drain(worker, lambda: len(progressed) >= 3)
    assert worker.cancel_all() == 2
    _drain(worker, lambda: len(errors) == 2)
    assert done == [] and queued_ran == []
    assert all(isinstance(e, Cancelled) for e in errors)
    assert running.state == "cancelled" and queued.state == "cancelled"
    assert progressed == sorted(progressed) and progressed[-1] < 999  # in order, stopped early


def test_run_sync_pumps_the_main_thread(worker):
    pumps = []
    gate = threading.Event()

    def job(cancel, progress):
        gate.wait(5)
        return "ok"

    def pump():
        pumps.append(1)
        if len(pumps) == 3:
            gate.set()

    assert worker.run_sync(job, pump=pump, interval_s=0.005) == "ok"
    assert len(pumps) >= 3


def test_shutdown_refuses_new_jobs():
    w = ModelWorker()
    w.run_sync(lambda c, p: None)
    w.shutdown()
    with pytest.raises(RuntimeError):
        w.submit(lambda c, p: None)
