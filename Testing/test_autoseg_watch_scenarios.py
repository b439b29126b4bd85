"""Watcher fault scenarios (issue 10 item 2): each ends with every job processed exactly once or left in the inbox.

Slow copies run on a simulated clock (``sleep``/``clock`` seams) so that "a pause longer than settle" is exact;
kill -9 and the lock run a real watcher process (Testing/autoseg_watch_driver.py); disk full is simulated with
ENOSPC (always) and, where this machine lets root mount one, on a real small tmpfs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from autoseg_support import TextBandPredictor, dice, protocol_dict, truth_masks, write_phantom_series  # noqa: E402

import OncoSegLib.autoseg.pipeline as pipeline  # noqa: E402
import OncoSegLib.autoseg.watch as watch  # noqa: E402
from OncoSegLib.autoseg.readiness import fingerprint, fingerprint_digest  # noqa: E402
from OncoSegLib.autoseg.watch import MANIFEST_NAME, REASON_NAME, WatchConfig, watch_inbox  # noqa: E402
from OncoSegLib.autoseg.watch_lock import LOCK_NAME, WatchLock  # noqa: E402
from OncoSegLib.cli import main  # noqa: E402
from OncoSegLib.errors import InputError  # noqa: E402

LIVER = protocol_dict(structures=[{"name": "Liver", "text": "liver", "type": "ORGAN"}])
DRIVER = Path(__file__).parent / "autoseg_watch_driver.py"
N_SLICES = 16


@pytest.fixture(scope="module")
def ct_master(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scen_ct") / "ct"
    write_phantom_series(folder)
    return folder


@pytest.fixture()
def proto_file(tmp_path) -> Path:
    p = tmp_path / "protocol.json"
    p.write_text(json.dumps(LIVER))
    return p


def _inbox_with(tmp: Path, ct_master: Path, jobs: list[str]) -> Path:
    inbox = tmp / "inbox"
    inbox.mkdir(exist_ok=True)
    for j in jobs:
        shutil.copytree(ct_master, inbox / j)
    return inbox


def _bad_job(inbox: Path, name: str, payload: bytes = b"not DICOM") -> Path:
    (inbox / name).mkdir(parents=True)
    (inbox / name / "notes.txt").write_bytes(payload)
    return inbox / name


def _manifest(outbox: Path) -> dict:
    p = outbox / MANIFEST_NAME
    return json.loads(p.read_text())["jobs"] if p.exists() else {}


def _liver_dice(outbox: Path, inbox: Path, job: str) -> float:
    from OncoSegLib.export.rtstruct import read_rtstruct_masks

    (spec, mask), = read_rtstruct_masks(outbox / job / "rtstruct.dcm", inbox / job)
    return dice(mask, truth_masks()["liver"]) if spec.name == "Liver" else 0.0


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def _hidden_temp(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".partial", ".moving", ".moved"))
                  or ".part" in p.name)


@pytest.fixture()
def started(monkeypatch) -> list[str]:
    names: list[str] = []
    run = watch.run_autoseg

    def counting(series_dir, *a, **k):
        names.append(Path(series_dir).name)
        return run(series_dir, *a, **k)

    monkeypatch.setattr(watch, "run_autoseg", counting)
    return names


class SimClock:
    """Simulated time: ``sleep`` advances it and runs the actions due (a copy script's next step)."""

    def __init__(self, actions: dict[float, callable]):
        self.t = 0.0
        self.actions = dict(actions)

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s
        for when in sorted(self.actions):
            if when <= self.t:
                self.actions.pop(when)()


# ------------------------------------------------------------------------------------------------ model
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from OncoSegLib.models.tiny import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.mark.parametrize("damage", ["half_downloaded_safetensors", "config_does_not_match_weights"])
def test_a_model_that_cannot_load_stops_the_loop_and_leaves_every_job(tmp_path, ct_master, tiny_model, proto_file,
                                                                     capsys, damage):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    if damage == "half_downloaded_safetensors":
        w = next(model.glob("*.safetensors"))
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    else:
        cfg = json.loads((model / "config.json").read_text())
        cfg["detector_config"]["detr_decoder_config"]["hidden_size"] = 64
        (model / "config.json").write_text(json.dumps(cfg))
    inbox = _inbox_with(tmp_path, ct_master, ["a", "b"])
    _bad_job(inbox, "c")  # a job that would fail on its own: it must not be judged with a broken model either
    before = {j: fingerprint(inbox / j) for j in ("a", "b", "c")}
    outbox = tmp_path / "outbox"
    rc = main(["autoseg", "--watch", str(inbox), "--outbox", str(outbox), "--protocol", str(proto_file),
               "--model", str(model), "--device", "cpu", "--settle", "0", "--poll", "0.01", "--error-hold", "0",
               "--timeout", "30", "--quiet"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "cannot load model" in err and str(model) in err
    assert {j: fingerprint(inbox / j) for j in ("a", "b", "c")} == before  # every job untouched in the inbox
    assert _manifest(outbox) == {} and _visible(outbox) == [] and not (outbox / ".error").exists()
    assert "FAILED" not in captured.out and "started" not in captured.out


def test_a_model_error_during_a_job_leaves_it_in_the_inbox(tmp_path, ct_master, monkeypatch):
    """A model without a text detector (found only when the first job runs) stops the loop: nothing marked failed."""
    class NoText(TextBandPredictor):
        has_text = False  # loads fine; the missing text detector shows when the first job runs

    monkeypatch.setattr(pipeline, "load_model", lambda name, device, components: NoText())
    inbox = _inbox_with(tmp_path, ct_master, ["a"])
    outbox = tmp_path / "outbox"
    with pytest.raises(watch.ModelError, match="text") as info:
        watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, model="m", settle_s=0, poll_s=0.01,
                                error_hold_s=0, timeout_s=10))
    assert "job a left in the inbox" in str(info.value) and "\n" not in str(info.value)
    assert (inbox / "a").is_dir() and _manifest(outbox) == {} and _hidden_temp(outbox) == []


# ------------------------------------------------------------------------------------------------ slow copies
def test_a_copy_pausing_longer_than_settle_is_redone_as_one_job(tmp_path, ct_master, started):
    inbox = tmp_path / "inbox"
    (inbox / "job").mkdir(parents=True)
    files = sorted(ct_master.iterdir())
    for f in files[:8]:
        shutil.copy2(f, inbox / "job" / f.name)

    def copy_rest():
        for f in files[8:]:
            shutil.copy2(f, inbox / "job" / f.name)

    sim = SimClock({6.0: copy_rest})  # settle 2 s, the copy pauses 6 s, then goes on
    outbox = tmp_path / "outbox"
    events: list[str] = []
    out = watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, settle_s=2, poll_s=1,
                                  error_hold_s=30, timeout_s=40), bundle=TextBandPredictor(), sleep=sim.sleep,
                      clock=sim.clock, on_event=events.append)
    assert [(o.job, o.ok) for o in out] == [("job", True), ("job", True)]
    assert started == ["job", "job"]  # the half series, then the whole one: redone, never split
    assert any("its files changed after it was processed" in e for e in events)
    rep = json.loads((outbox / "job" / "report.json").read_text())
    assert rep["series"]["shape_kji"][0] == N_SLICES
    assert _liver_dice(outbox, inbox, "job") >= 0.999
    jobs = _manifest(outbox)
    assert list(jobs) == ["job"] and jobs["job"]["status"] == "done"
    assert jobs["job"]["inputs"] == fingerprint_digest(fingerprint(inbox / "job"))
    assert _visible(outbox) == ["job"] and not (outbox / ".error").exists() and _hidden_temp(outbox) == []
    stamp = json.loads((outbox / "job" / watch.STAMP_NAME).read_text())
    assert stamp["inputs"] == jobs["job"]["inputs"]


def test_a_half_written_file_is_waited_for_not_processed(tmp_path, ct_master, started):
    inbox = tmp_path / "inbox"
    (inbox / "job").mkdir(parents=True)
    files = sorted(ct_master.iterdir())
    for f in files[:8]:
        shutil.copy2(f, inbox / "job" / f.name)
    ninth = files[8].read_bytes()
    (inbox / "job" / files[8].name).write_bytes(ninth[: len(ninth) // 2])  # the copy stalls inside a file

    def copy_rest():
        (inbox / "job" / files[8].name).write_bytes(ninth)
        for f in files[9:]:
            shutil.copy2(f, inbox / "job" / f.name)

    sim = SimClock({10.0: copy_rest})
    events: list[str] = []
    starts: list[float] = []
    outbox = tmp_path / "outbox"
    out = watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, settle_s=2, poll_s=1,
                                  error_hold_s=30, timeout_s=30), bundle=TextBandPredictor(), sleep=sim.sleep,
                      clock=sim.clock, on_event=lambda m: (events.append(m),
                                                           starts.append(sim.t) if "started" in m else None))
    assert [(o.job, o.ok) for o in out] == [("job", True)] and started == ["job"]
    assert starts == [12.0]  # complete at 10 s, unchanged (and whole) through 12 s
    assert any("waiting: file" in e and "is truncated" in e for e in events)
    assert json.loads((outbox / "job" / "report.json").read_text())["series"]["shape_kji"][0] == N_SLICES


def test_a_failure_mid_copy_is_held_and_retried_a_lasting_one_moves_to_error(tmp_path, ct_master, started):
    inbox = tmp_path / "inbox"
    _bad_job(inbox, "bad")  # stays bad
    _bad_job(inbox, "job")  # the copy script sends a README first, then pauses longer than settle

    def copy_series():
        for f in sorted(ct_master.iterdir()):
            shutil.copy2(f, inbox / "job" / f.name)

    sim = SimClock({8.0: copy_series})
    outbox = tmp_path / "outbox"
    events: list[str] = []
    out = watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, settle_s=2, poll_s=1,
                                  error_hold_s=20, timeout_s=40), bundle=TextBandPredictor(), sleep=sim.sleep,
                      clock=sim.clock, on_event=events.append)
    assert [(o.job, o.ok) for o in out] == [("bad", False), ("job", False), ("job", True)]
    assert _visible(inbox) == ["job"] and _visible(outbox / ".error") == ["bad"]  # job was never moved
    reason = (outbox / ".error" / "bad" / REASON_NAME).read_text()
    assert reason.startswith("no DICOM image series found") and "attempts: 1" in reason
    assert (outbox / ".error" / "bad" / "notes.txt").read_text() == "not DICOM"
    jobs = _manifest(outbox)
    assert jobs["job"]["status"] == "done" and jobs["bad"]["status"] == "failed" and not jobs["bad"]["in_inbox"]
    assert _liver_dice(outbox, inbox, "job") >= 0.999
    moved_at = [e for e in events if e.startswith("job bad: moved to")]
    assert len(moved_at) == 1


def test_inputs_changing_while_processed_discard_the_results(tmp_path, ct_master, started):
    inbox = _inbox_with(tmp_path, ct_master, ["job"])
    victim = sorted((inbox / "job").iterdir())[3]

    class Toucher(TextBandPredictor):
        def detect_text(self, *a, **k):
            if len(self.detect_calls) == 0 and len(started) == 1:  # first attempt: the sender rewrites a file
                st = victim.stat()
                os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
            return super().detect_text(*a, **k)

    outbox = tmp_path / "outbox"
    events: list[str] = []
    out = watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, settle_s=0, poll_s=0.01,
                                  max_jobs=1, timeout_s=30), bundle=Toucher(), on_event=events.append)
    assert started == ["job", "job"] and [(o.job, o.ok) for o in out] == [("job", True)]
    assert any("changed while it was processed" in e for e in events)
    assert _manifest(outbox)["job"]["inputs"] == fingerprint_digest(fingerprint(inbox / "job"))
    assert _hidden_temp(outbox) == []


def test_a_job_is_redone_when_its_files_change_and_never_when_unchanged(tmp_path, ct_master, started):
    inbox = _inbox_with(tmp_path, ct_master, ["job"])
    outbox = tmp_path / "outbox"
    cfg = dict(inbox=inbox, outbox=outbox, protocol=LIVER, settle_s=0, poll_s=0.01, timeout_s=0.5)
    watch_inbox(WatchConfig(**cfg), bundle=TextBandPredictor())
    watch_inbox(WatchConfig(**cfg), bundle=TextBandPredictor())  # restart, nothing changed
    assert started == ["job"]
    first_uid = json.loads((outbox / "job" / "report.json").read_text())["rtstruct"]["sop_instance_uid"]
    (inbox / "job" / "extra.txt").write_text("a late file")
    watch_inbox(WatchConfig(**cfg), bundle=TextBandPredictor())
    assert started == ["job", "job"]
    rep = json.loads((outbox / "job" / "report.json").read_text())
    assert rep["rtstruct"]["sop_instance_uid"] != first_uid  # the results were replaced as a whole
    assert _manifest(outbox)["job"]["inputs"] == fingerprint_digest(fingerprint(inbox / "job"))
    assert _hidden_temp(outbox) == [] and _visible(outbox) == ["job"]


def test_a_done_job_is_checked_cheaply_and_an_in_place_rewrite_is_seen_within_recheck(tmp_path, ct_master, started,
                                                                                     monkeypatch):
    """Inputs stay in the inbox for good: a done job costs a folder-mtime check per poll, a full compare per
    recheck_s (a file rewritten in place, same name and size, changes no folder mtime)."""
    inbox = _inbox_with(tmp_path, ct_master, ["job"])
    victim = sorted((inbox / "job").iterdir())[3]

    def rewrite_in_place():
        st = victim.stat()
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    sim = SimClock({20.0: rewrite_in_place})
    full_checks: list[float] = []
    real = watch.fingerprint
    monkeypatch.setattr(watch, "fingerprint", lambda folder: (full_checks.append(sim.t), real(folder))[1])
    starts: list[float] = []
    watch_inbox(WatchConfig(inbox=inbox, outbox=tmp_path / "outbox", protocol=LIVER, settle_s=0, poll_s=1,
                            recheck_s=50, timeout_s=80), bundle=TextBandPredictor(), sleep=sim.sleep,
                clock=sim.clock, on_event=lambda m: starts.append(sim.t) if "started" in m else None)
    assert started == ["job", "job"] and starts == [0.0, 51.0]  # last full check at t = 1, the next at 51
    assert [t for t in full_checks if 2.0 <= t < 51.0] == []  # 49 polls without a per-file stat


# ------------------------------------------------------------------------------------------------ processes
def _driver(inbox: Path, outbox: Path, markers: Path, mode: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, str(DRIVER), str(inbox), str(outbox), str(markers), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def _wait_for(markers: Path, pattern: str, proc: subprocess.Popen, timeout: float = 120.0) -> Path:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        hits = sorted(markers.glob(pattern))
        if hits:
            return hits[0]
        if proc.poll() is not None:
            raise AssertionError(f"driver exited {proc.returncode}: {proc.stdout.read().decode()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no marker {pattern} after {timeout} s")


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    proc.stdout.close()


def test_a_second_watcher_exits_2_naming_the_pid_of_the_first(tmp_path, proto_file, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "load_model", lambda name, device, components: TextBandPredictor())
    inbox, outbox, markers = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "markers"
    inbox.mkdir()
    first = _driver(inbox, outbox, markers, "idle")
    try:
        _wait_for(markers, "ready-watcher", first)
        argv = ["autoseg", "--watch", str(inbox), "--outbox", str(tmp_path / "other_outbox"), "--protocol",
                str(proto_file), "--model", "m", "--settle", "0", "--poll", "0.01", "--timeout", "1", "--quiet"]
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1
        assert f"another OncoSeg watcher (PID {first.pid} on " in err and f"is already watching {inbox}" in err
        other_inbox = tmp_path / "other_inbox"
        other_inbox.mkdir()
        rc = main(["autoseg", "--watch", str(other_inbox), "--outbox", str(outbox), *argv[5:]])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and f"(PID {first.pid} on " in err and f"is already writing to {outbox}" in err
        assert not (tmp_path / "other_outbox" / MANIFEST_NAME).exists()
    finally:
        _kill9(first)
    assert main(argv) == 0  # kill -9 released the lock
    assert "0 job(s)" in capsys.readouterr().out


def test_an_error_folder_outside_the_outbox_has_one_watcher_too(tmp_path):
    shared = tmp_path / "errors"
    shared.mkdir()
    (tmp_path / "in2").mkdir()
    with WatchLock(shared, "moving failed jobs to"):  # another watcher, with another inbox and outbox, uses it
        with pytest.raises(InputError, match=f"already moving failed jobs to {shared}") as info:
            watch_inbox(WatchConfig(inbox=tmp_path / "in2", outbox=tmp_path / "out2", protocol=LIVER,
                                    error_dir=shared, timeout_s=0.1), bundle=TextBandPredictor())
        assert f"PID {os.getpid()} on " in str(info.value)
    assert not (tmp_path / "out2" / MANIFEST_NAME).exists()


def test_kill_9_mid_job_then_restart_processes_every_job_exactly_once(tmp_path, ct_master, started):
    inbox = _inbox_with(tmp_path, ct_master, ["a", "b", "c"])
    before = {j: fingerprint(inbox / j) for j in "abc"}
    outbox, markers = tmp_path / "outbox", tmp_path / "markers"
    proc = _driver(inbox, outbox, markers, "slow")
    _wait_for(markers, "started-b", proc)
    time.sleep(0.5)  # b is being segmented (each text detection takes 0.1 s)
    _kill9(proc)
    assert list(_manifest(outbox)) == ["a"] and _visible(outbox) == ["a"]
    a_report = (outbox / "a" / "report.json").read_bytes()
    events: list[str] = []
    out = watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, settle_s=0, poll_s=0.01,
                                  max_jobs=2, timeout_s=60), bundle=TextBandPredictor(), on_event=events.append)
    assert started == ["b", "c"] and [(o.job, o.ok) for o in out] == [("b", True), ("c", True)]
    assert (outbox / "a" / "report.json").read_bytes() == a_report  # a was not redone
    assert {k: v["status"] for k, v in _manifest(outbox).items()} == {"a": "done", "b": "done", "c": "done"}
    assert all(_liver_dice(outbox, inbox, j) >= 0.999 for j in "abc")
    assert _hidden_temp(outbox) == [] and _visible(outbox) == ["a", "b", "c"]
    assert {j: fingerprint(inbox / j) for j in "abc"} == before  # inputs never touched


def test_kill_9_between_results_and_manifest_is_recovered_not_redone(tmp_path, ct_master, started):
    inbox = _inbox_with(tmp_path, ct_master, ["a"])
    outbox, markers = tmp_path / "outbox", tmp_path / "markers"
    proc = _driver(inbox, outbox, markers, "stall-after-publish")
    _wait_for(markers, "published-a", proc)
    _kill9(proc)
    assert _manifest(outbox) == {} and (outbox / "a" / "report.json").exists()
    report = (outbox / "a" / "report.json").read_bytes()
    watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, settle_s=0, poll_s=0.01, timeout_s=0.5),
                bundle=TextBandPredictor())
    assert started == []
    entry = _manifest(outbox)["a"]
    assert entry["status"] == "done" and "recovered" in entry["note"]
    assert entry["inputs"] == fingerprint_digest(fingerprint(inbox / "a"))
    assert (outbox / "a" / "report.json").read_bytes() == report and _hidden_temp(outbox) == []


def test_kill_9_while_moving_a_job_to_error_puts_it_back_then_moves_it_whole(tmp_path):
    inbox, outbox, markers = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "markers"
    _bad_job(inbox, "bad")
    proc = _driver(inbox, outbox, markers, "stall-in-error-move")
    _wait_for(markers, "moving-*", proc)
    _kill9(proc)
    assert _visible(inbox) == [] and _visible(outbox / ".error") == []  # caught between the two
    events: list[str] = []
    watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, settle_s=0, poll_s=0.01, error_hold_s=0,
                            timeout_s=0.5), bundle=TextBandPredictor(), on_event=events.append)
    assert any("put back into the inbox" in e for e in events)
    assert _visible(inbox) == [] and _visible(outbox / ".error") == ["bad"]
    assert (outbox / ".error" / "bad" / "notes.txt").read_text() == "not DICOM"
    assert (outbox / ".error" / "bad" / REASON_NAME).read_text().startswith("no DICOM image series")
    assert _hidden_temp(outbox) == []


def test_leftovers_of_a_killed_run_are_cleaned_at_start_and_inputs_kept(tmp_path, ct_master):
    inbox = _inbox_with(tmp_path, ct_master, ["job"])
    (inbox / "job" / "incoming.part").write_bytes(b"a receiver's own temp file")  # inputs are never cleaned
    outbox = tmp_path / "outbox"
    leftovers = [outbox / ".job.k2j3h4.partial" / "result" / "report.json",
                 outbox / ".job.autoseg-a1b2.partial" / "rtstruct.dcm",
                 outbox / ".oncoseg-autoseg.json.x8y9.part.json",
                 outbox / "old" / ".report.json.q1w2.part.json",
                 outbox / ".error" / ".bad.0a1b2c3d.partial" / "notes.txt"]
    for p in leftovers:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    (outbox / "old" / "report.json").write_text("{}")
    events: list[str] = []
    watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, settle_s=100, poll_s=0.01, timeout_s=0.1),
                bundle=TextBandPredictor(), on_event=events.append)
    assert not any(p.exists() for p in leftovers) and _hidden_temp(outbox) == []
    assert any("removed 5 temporary" in e for e in events)
    assert (outbox / "old" / "report.json").read_text() == "{}"
    assert (inbox / "job" / "incoming.part").read_bytes() == b"a receiver's own temp file"


# ------------------------------------------------------------------------------------------------ disk full
def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_writing_results_stops_with_one_line_and_keeps_the_job(tmp_path, ct_master, proto_file,
                                                                              capsys, monkeypatch, started):
    """Simulated ENOSPC from the RTSTRUCT writer (the real thing on a tmpfs is the next test)."""
    import OncoSegLib.export.rtstruct as rtstruct

    monkeypatch.setattr(pipeline, "load_model", lambda name, device, components: TextBandPredictor())
    monkeypatch.setattr(rtstruct, "write_rtstruct", _enospc)
    inbox = _inbox_with(tmp_path, ct_master, ["a", "b"])
    outbox = tmp_path / "outbox"
    argv = ["autoseg", "--watch", str(inbox), "--outbox", str(outbox), "--protocol", str(proto_file), "--model", "m",
            "--settle", "0", "--poll", "0.01", "--error-hold", "0", "--timeout", "30", "--quiet"]
    rc = main(argv)
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in cap.err + cap.out
    assert "disk full while writing" in err and "job a left in the inbox" in err
    assert _visible(inbox) == ["a", "b"] and _manifest(outbox) == {} and _visible(outbox) == []
    assert _hidden_temp(outbox) == [] and not (outbox / ".error").exists()
    monkeypatch.undo()  # space is back: the same jobs are processed once
    monkeypatch.setattr(pipeline, "load_model", lambda name, device, components: TextBandPredictor())
    assert main(argv[:-3] + ["--max-jobs", "2", "--quiet"]) == 0
    assert {k: v["status"] for k, v in _manifest(outbox).items()} == {"a": "done", "b": "done"}


def test_disk_full_while_writing_reason_leaves_the_failed_job_in_the_inbox(tmp_path, monkeypatch):
    write = watch.atomic_write_text

    def full_for_reason(target, text):
        if Path(target).name == REASON_NAME:
            _enospc()
        return write(target, text)

    monkeypatch.setattr(watch, "atomic_write_text", full_for_reason)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    _bad_job(inbox, "bad")
    with pytest.raises(watch.WatchStopped, match="disk full .* job bad left in the inbox"):
        watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, settle_s=0, poll_s=0.01,
                                error_hold_s=0, timeout_s=5), bundle=TextBandPredictor())
    assert (inbox / "bad" / "notes.txt").read_text() == "not DICOM"
    assert list((outbox / ".error").iterdir()) == []  # nothing half-moved, no REASON-less copy


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return res.returncode == 0


def _fill(folder: Path, leave_bytes: int) -> Path:
    """Fill the filesystem of ``folder`` up to ``leave_bytes`` free."""
    st = os.statvfs(folder)
    filler = folder / ".filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_bytes))
    return filler


def test_disk_full_on_a_real_tmpfs(tmp_path, ct_master, proto_file, capsys, monkeypatch, started):
    """Outbox and error folder on small tmpfs mounts (another filesystem than the inbox: the error move copies)."""
    out_fs, err_fs = tmp_path / "out_fs", tmp_path / "err_fs"
    if not _mount_tmpfs(out_fs, "4m"):
        pytest.skip("mounting a tmpfs needs root and mount(8) here; the ENOSPC simulations above still run")
    try:
        assert _mount_tmpfs(err_fs, "4m")
        monkeypatch.setattr(pipeline, "load_model", lambda name, device, components: TextBandPredictor())
        inbox = _inbox_with(tmp_path, ct_master, ["a"])
        _bad_job(inbox, "bad", payload=os.urandom(600_000))  # not DICOM: fails; 600 kB to copy to the error fs
        outbox, error_dir = out_fs / "outbox", err_fs / "errors"
        outbox.mkdir()
        error_dir.mkdir()
        filler_out = _fill(out_fs, 8_000)  # the RTSTRUCT (> 8 kB) cannot be written
        argv = ["autoseg", "--watch", str(inbox), "--outbox", str(outbox), "--error-dir", str(error_dir),
                "--protocol", str(proto_file), "--model", "m", "--settle", "0", "--poll", "0.01",
                "--error-hold", "0", "--timeout", "30", "--quiet"]
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "disk full while writing" in err
        assert _visible(inbox) == ["a", "bad"] and _visible(outbox) == [] and _hidden_temp(outbox) == []
        filler_out.unlink()
        filler_err = _fill(err_fs, 200_000)  # the failed job cannot be copied to the error folder
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and f"disk full while writing {error_dir}" in err
        assert _manifest(outbox)["a"]["status"] == "done" and _liver_dice(outbox, inbox, "a") >= 0.999
        assert (inbox / "bad" / "notes.txt").stat().st_size == 600_000  # left in place, whole
        assert [p.name for p in error_dir.rglob("*")] == [LOCK_NAME]  # no zero-byte or partial copy
        filler_err.unlink()
        assert main(argv) == 0
        assert _visible(inbox) == ["a"] and _visible(error_dir) == ["bad"]
        assert (error_dir / "bad" / "notes.txt").stat().st_size == 600_000
        assert (error_dir / "bad" / REASON_NAME).read_text().startswith("no DICOM image series")
        assert started == ["a", "a", "bad", "bad"]  # a: disk full, then done; bad: failed at each of 2 runs
    finally:
        for fs in (out_fs, err_fs):
            subprocess.run(["umount", str(fs)], capture_output=True)


# ------------------------------------------------------------------------------------------------ namespace, umask
def test_a_job_named_error_cannot_collide_with_the_error_folder(tmp_path, ct_master):
    inbox = _inbox_with(tmp_path, ct_master, ["error"])
    _bad_job(inbox, "zz_bad")
    outbox = tmp_path / "outbox"
    out = watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, settle_s=0, poll_s=0.01,
                                  error_hold_s=0, max_jobs=2), bundle=TextBandPredictor())
    assert [(o.job, o.ok) for o in out] == [("error", True), ("zz_bad", False)]
    assert sorted(p.name for p in (outbox / "error").iterdir()) == [watch.STAMP_NAME, "report.json", "rtstruct.dcm"]
    assert _visible(outbox / ".error") == ["zz_bad"] and (outbox / ".error" / "zz_bad" / REASON_NAME).exists()
    with pytest.raises(InputError, match="could collide with the results of a job named 'error'"):
        watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, error_dir=outbox / "error"))
    with pytest.raises(InputError, match="must not be inside the inbox"):
        watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, error_dir=inbox / ".err"))


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_watcher_outputs_honour_the_umask(tmp_path, ct_master, umask):
    inbox = _inbox_with(tmp_path, ct_master, ["job"])
    _bad_job(inbox, "zz_bad")
    outbox = tmp_path / "out" / "box"  # created by the watcher
    old = os.umask(umask)
    try:
        watch_inbox(WatchConfig(inbox=inbox, outbox=outbox, protocol=LIVER, settle_s=0, poll_s=0.01, nifti=True,
                                error_hold_s=0, max_jobs=2), bundle=TextBandPredictor())
    finally:
        os.umask(old)
    dirs = [tmp_path / "out", outbox, outbox / "job", outbox / ".error"]
    files = [outbox / MANIFEST_NAME, outbox / ".error" / "zz_bad" / REASON_NAME] + sorted((outbox / "job").iterdir())
    assert len(files) == 6  # manifest, REASON, rtstruct, labels, report, stamp
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in dirs} == {str(p): oct(0o777 & ~umask) for p in dirs}
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in files} == {str(p): oct(0o666 & ~umask) for p in files}
