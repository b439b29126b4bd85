"""The atomic writer (OncoSegLib/io/atomic.py): temporary file beside the target, outputs on another filesystem,
nothing half-written under the final name, and permissions that honour the umask (not mkstemp's 0600)."""

import os
import stat
import tempfile
from pathlib import Path

import pytest

from OncoSegLib.io.atomic import (
    OutputPathError,
    atomic_path,
    atomic_write_text,
    current_umask,
    make_temp_dir,
    output_mode,
)


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


def _other_filesystem_dir() -> Path | None:
    """A writable folder on a filesystem other than the system temp folder (``/dev/shm`` on Linux)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != Path(tempfile.gettempdir()).stat().st_dev:
        return shm
    return None


def test_temporary_file_is_created_in_the_targets_folder(tmp_path):
    target = tmp_path / "sub" / "mask.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent  # same folder: os.replace stays on one filesystem
        assert tmp.name.startswith(".mask.nii.gz.") and tmp.name.endswith(".part.nii.gz")
        assert tmp.is_file() and not target.exists()
        tmp.write_bytes(b"abc")
        assert not target.exists()  # nothing under the final name until the writer is done
    assert target.read_bytes() == b"abc"
    assert sorted(p.name for p in target.parent.iterdir()) == ["mask.nii.gz"]


def test_output_on_another_filesystem_works():
    """An output on a filesystem other than $TMPDIR (e.g. /dev/shm): a temp file made in $TMPDIR could not be renamed
    there (EXDEV); the writer must make it beside the target."""
    other = _other_filesystem_dir()
    if other is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs /dev/shm on its own filesystem for this test")
        pytest.skip("no writable folder on a filesystem other than the temp folder")
    folder = Path(tempfile.mkdtemp(prefix="oncoseg-atomic-", dir=other))
    try:
        target = folder / "report.json"
        seen = []
        with atomic_path(target) as tmp:
            seen.append(tmp)
            tmp.write_text("{}", encoding="utf-8")
        assert seen[0].parent == folder and not seen[0].exists()  # made beside the target, renamed away
        assert target.read_text(encoding="utf-8") == "{}"
        assert target.stat().st_dev == folder.stat().st_dev != Path(tempfile.gettempdir()).stat().st_dev
        assert [p.name for p in folder.iterdir()] == ["report.json"]
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half", encoding="utf-8")
            raise RuntimeError("writer crashed")
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_unwritable_target_is_a_one_line_output_error(tmp_path):
    (tmp_path / "afolder").mkdir()
    with pytest.raises(OutputPathError) as err:
        atomic_write_text(tmp_path / "afolder", "x")
    assert isinstance(err.value, OSError) and "\n" not in str(err.value)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750),
                                                        (0o002, 0o664, 0o775), (0o077, 0o600, 0o700)])
def test_outputs_honour_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    assert current_umask() == mask  # read without changing it
    assert output_mode() == file_mode and output_mode(folder=True) == dir_mode
    f = atomic_write_text(tmp_path / "a" / "report.json", "{}")
    assert stat.S_IMODE(f.stat().st_mode) == file_mode
    d = make_temp_dir(tmp_path / "b", prefix=".job.")
    assert stat.S_IMODE(d.stat().st_mode) == dir_mode and d.parent == tmp_path / "b"
    assert d.name.startswith(".job.") and d.name.endswith(".partial")


def test_mode_is_set_even_when_the_writer_replaces_the_temporary_file(tmp_path, umask):
    """Some writers write their own temp file and rename it over ours (mode 0600): the mode is set after writing."""
    umask(0o022)
    target = tmp_path / "x.dcm"
    with atomic_path(target) as tmp:
        fd, other = tempfile.mkstemp(dir=tmp_path)
        os.write(fd, b"DICM")
        os.close(fd)
        assert stat.S_IMODE(os.stat(other).st_mode) == 0o600
        os.replace(other, tmp)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 and target.read_bytes() == b"DICM"
