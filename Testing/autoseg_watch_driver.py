"""A watcher process for the kill/lock scenarios of Testing/test_autoseg_watch_scenarios.py (not a test module).

    python autoseg_watch_driver.py INBOX OUTBOX MARKERS MODE

Runs ``watch_inbox`` with the deterministic ``TextBandPredictor`` (settle 0, poll 0.05 s, no time limit) and
touches ``MARKERS/<event>-<job>`` files so that the test knows when to ``kill -9`` it:

- ``slow``: ``started-<job>`` when a job starts; each text detection then takes 0.1 s (a job lasts seconds).
- ``stall-after-publish``: the results of a job are renamed into the outbox, then ``published-<job>`` is touched
  and the process sleeps before the manifest is written.
- ``stall-in-error-move``: a failing job is renamed into the error folder, then ``moving-<job>`` is touched and the
  process sleeps before REASON.txt is written.
- ``idle``: just watch (``ready-watcher`` once the lock is held).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from autoseg_support import TextBandPredictor, protocol_dict  # noqa: E402

import OncoSegLib.autoseg.watch as watch  # noqa: E402


def main() -> None:
    inbox, outbox, markers, mode = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    markers.mkdir(parents=True, exist_ok=True)

    def touch(name: str) -> None:
        (markers / name).write_text("")

    class SlowPredictor(TextBandPredictor):
        def detect_text(self, *a, **k):
            time.sleep(0.1)
            return super().detect_text(*a, **k)

    run = watch.run_autoseg

    def run_marked(series_dir, *a, **k):
        touch(f"started-{Path(series_dir).name}")
        return run(series_dir, *a, **k)

    watch.run_autoseg = run_marked
    if mode == "stall-after-publish":
        publish = watch._publish

        def publish_then_stall(result, dst, stage):
            publish(result, dst, stage)
            touch(f"published-{dst.name}")
            time.sleep(600)

        watch._publish = publish_then_stall
    if mode == "stall-in-error-move":
        write = watch.atomic_write_text

        def stall_on_reason(target, text):
            if Path(target).name == watch.REASON_NAME:
                touch(f"moving-{Path(target).parent.name}")
                time.sleep(600)
            return write(target, text)

        watch.atomic_write_text = stall_on_reason
    clean = watch.clean_leftovers

    def clean_then_ready(*a, **k):
        n = clean(*a, **k)
        touch("ready-watcher")
        return n

    watch.clean_leftovers = clean_then_ready
    protocol = protocol_dict(structures=[{"name": "Liver", "text": "liver", "type": "ORGAN"}])
    cfg = watch.WatchConfig(inbox=inbox, outbox=outbox, protocol=protocol, settle_s=0, poll_s=0.05, error_hold_s=0)
    watch.watch_inbox(cfg, bundle=SlowPredictor() if mode == "slow" else TextBandPredictor(),
                      on_event=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
