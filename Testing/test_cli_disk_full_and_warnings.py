"""Disk full on export (ENOSPC simulated inside the writer, and a real 64 KiB tmpfs where one can be mounted), library
warnings held back until success (never printed before the error line) and a malicious adapter `.bin` refused as
one line through `oncoseg segment`."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from OncoSegLib.cli import main
from OncoSegLib.errors import InputError
from OncoSegLib.io.dicom_write import write_dicom_series
from OncoSegLib.io.geometries import example_volume
from OncoSegLib.io.nifti import write_nifti


def _one_line_error(capsys, verb: str, rc: int, needle: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(f"oncoseg {verb}: error:") and len(err.strip().splitlines()) == 1, err
    assert needle in err and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    vol = example_volume("oblique", (5, 20, 16))
    write_dicom_series(vol, d / "ct")
    from OncoSegLib.io.dicom_series import read_dicom_series

    ct = read_dicom_series(d / "ct")
    lab = np.zeros(ct.shape_kji, np.uint8)
    lab[1:4, 5:12, 4:10] = 1
    write_nifti(ct.with_array(lab), d / "lab.nii.gz")
    return d


def _enospc_after_partial_write(real):
    """Wrap a writer so that it writes part of the file, then fails as a full disk does."""
    def writer(*args, **kwargs):
        target = args[1] if len(args) > 1 else kwargs.get("filename") or kwargs.get("fp")
        Path(target).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return writer


@pytest.mark.parametrize("verb", ["export rtstruct", "export seg", "convert", "import rtstruct"])
def test_disk_full_is_one_line_and_leaves_nothing(case, tmp_path: Path, verb: str, monkeypatch, capsys) -> None:
    d = case
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if verb == "import rtstruct":
        assert main(["export", "rtstruct", "--mask", str(d / "lab.nii.gz"), "--dicom", str(d / "ct"), "--out",
                     str(tmp_path / "rt.dcm")]) == 0
        capsys.readouterr()
    out = out_dir / ("o.dcm" if verb.startswith("export") else "o.nii.gz")
    out.write_bytes(b"previous result")  # replaced only by a complete new file
    if verb.startswith("export"):
        monkeypatch.setattr(pydicom.dataset.Dataset, "save_as",
                            lambda self, filename, *a, **k: _enospc_after_partial_write(None)(self, filename))
        argv = verb.split() + ["--mask", str(d / "lab.nii.gz"), "--dicom", str(d / "ct"), "--out", str(out)]
    else:
        import nibabel

        monkeypatch.setattr(nibabel, "save", lambda img, filename: _enospc_after_partial_write(None)(img, filename))
        argv = (["convert", str(d / "ct"), str(out)] if verb == "convert" else
                ["import", "rtstruct", str(tmp_path / "rt.dcm"), "--dicom", str(d / "ct"), "--out", str(out)])
    rc = main(argv + ["--overwrite"])
    _one_line_error(capsys, verb.split()[0], rc, "disk is full")
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in out_dir.iterdir()) == ["o.dcm" if verb.startswith("export") else "o.nii.gz"]


def test_library_writer_raises_project_error_on_disk_full(case, tmp_path: Path, monkeypatch) -> None:
    import nibabel

    from OncoSegLib.io.loader import load_volume

    vol = load_volume(case / "ct")
    monkeypatch.setattr(nibabel, "save", lambda img, filename: _enospc_after_partial_write(None)(img, filename))
    with pytest.raises(InputError, match="disk is full"):
        write_nifti(vol, tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def _tmpfs_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-r", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def test_disk_full_on_a_real_small_tmpfs(case, tmp_path: Path) -> None:
    if not _tmpfs_available():
        if os.environ.get("CI"):
            pytest.fail("CI must allow `unshare -r -m` + a tmpfs mount for the disk-full check")
        pytest.skip("cannot mount a tmpfs here (unshare -r -m not permitted)")
    d = case
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (f"mount -t tmpfs -o size=64k tmpfs {mnt} && head -c 60000 /dev/zero > {mnt}/fill && "
              f"{sys.executable} -m OncoSegLib export seg --mask {d / 'lab.nii.gz'} --dicom {d / 'ct'} "
              f"--out {mnt}/seg.dcm; echo rc=$?; ls -A {mnt}")
    res = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    err_lines = res.stderr.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith("oncoseg export: error:"), res.stderr
    assert "disk is full" in err_lines[0]
    assert res.stdout.split() == ["rc=2", "fill"]  # nothing but the filler: no partial or temporary file


_DRIVER = """
import sys, warnings
import OncoSegLib.cli.convert as convert_cli
from OncoSegLib.cli import main
from OncoSegLib.errors import InputError

def run(args):
    for _ in range(3):
        warnings.warn("invalid value encountered in divide", RuntimeWarning)  # what numpy emits
    warnings.warn("`torch.foo` is deprecated", FutureWarning)
    if args.output == "fail.nii.gz":
        raise InputError("the input is bad")
    print("wrote " + args.output)
    return 0

convert_cli.run = run
sys.exit(main(["convert", "x", sys.argv[1]]))
"""


def _driver(output: str) -> subprocess.CompletedProcess:
    """A real process (pytest itself records warnings, so only a subprocess shows what a user sees)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ONCOSEG_DEBUG", "PYTHONWARNINGS")}
    return subprocess.run([sys.executable, "-c", _DRIVER, output], capture_output=True, text=True, env=env,
                          timeout=120)


def test_warnings_never_print_before_the_error_line() -> None:
    res = _driver("fail.nii.gz")
    assert res.returncode == 2
    assert res.stderr == "oncoseg convert: error: the input is bad\n"


def test_warnings_of_a_successful_run_are_printed_after() -> None:
    res = _driver("y.nii.gz")
    assert res.returncode == 0 and res.stdout == "wrote y.nii.gz\n"
    assert res.stderr.splitlines() == ["oncoseg convert: warning: invalid value encountered in divide",  # once
                                       "oncoseg convert: warning: `torch.foo` is deprecated"]


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_malicious_adapter_bin_refused_in_one_line(tmp_path: Path) -> None:
    from OncoSegLib.io.volume import Volume
    from OncoSegLib.models.lora import LoraSettings, apply_lora, save_adapter
    from OncoSegLib.models.tiny import save_tiny_checkpoint, tiny_bundle

    ck = save_tiny_checkpoint(tmp_path / "model")
    settings = LoraSettings(r=4, alpha=8, target=("qkv", "proj"), scope="vision")
    adapter = save_adapter(apply_lora(tiny_bundle(seed=0).tracker, settings), tmp_path / "adapter", settings)
    (adapter / "adapter_model.safetensors").unlink()
    _Evil.marker = str(tmp_path / "PWNED")
    with open(adapter / "adapter_model.bin", "wb") as f:
        pickle.dump({"w": _Evil()}, f)
    write_nifti(Volume(np.zeros((3, 32, 32), np.float32)), tmp_path / "img.nii.gz")
    (tmp_path / "p.json").write_text(json.dumps({"objects": [{"name": "a", "points": [[10, 10, 1]]}]}))
    out = tmp_path / "mask.nii.gz"
    env = {k: v for k, v in os.environ.items() if k not in ("ONCOSEG_DEBUG", "PYTHONWARNINGS")}
    res = subprocess.run([sys.executable, "-m", "OncoSegLib", "segment", str(tmp_path / "img.nii.gz"), "--prompts",
                          str(tmp_path / "p.json"), "--model", str(ck), "--adapter", str(adapter), "--out", str(out),
                          "--device", "cpu", "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()  # transformers/torch warn while loading: held back, not printed
    assert len(lines) == 1 and lines[0].startswith("oncoseg segment: error:") and "pickle" in lines[0], res.stderr
    assert not (tmp_path / "PWNED").exists() and not out.exists()
