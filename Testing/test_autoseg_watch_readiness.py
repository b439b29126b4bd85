"""The watcher's "is this DICOM file whole?" check (OncoSegLib/autoseg/readiness.py).

Oracle: a file cut at byte n < its size is, by construction, not whole; the uncut files (written by our writer, by
pydicom with encapsulated pixel data, our RTSTRUCT exporter) are whole, and pydicom reads their pixels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

sys.path.insert(0, str(Path(__file__).parent))
from autoseg_support import write_phantom_series  # noqa: E402

from OncoSegLib.autoseg.readiness import fingerprint, fingerprint_digest, incomplete_reason  # noqa: E402


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ready") / "ct"
    write_phantom_series(folder)
    return sorted(folder.iterdir())[0]


def _cut(data: bytes, n: int, path: Path) -> Path:
    path.write_bytes(data[:n])
    return path


def test_every_prefix_of_a_ct_file_is_incomplete_and_the_whole_file_is_not(ct_file, tmp_path):
    data = ct_file.read_bytes()
    assert pydicom.dcmread(ct_file).pixel_array.shape == (112, 112)  # the oracle reads the whole file
    assert incomplete_reason(ct_file) is None
    # every cut inside the header and the Pixel Data element header, then a stride through the pixel bytes
    start = data.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data, little endian
    cuts = list(range(1, start + 40)) + list(range(start + 40, len(data), 97)) + [len(data) - 1]
    judged_whole = [n for n in cuts if incomplete_reason(_cut(data, n, tmp_path / "x.dcm")) is None]
    assert judged_whole == []
    # the same without a DICOM suffix (receivers often write bare UIDs as names)
    judged_whole = [n for n in cuts[::5] if incomplete_reason(_cut(data, n, tmp_path / "1.2.3")) is None]
    assert judged_whole == []
    assert "Pixel Data bytes" in incomplete_reason(_cut(data, len(data) - 1, tmp_path / "y.dcm"))


def test_compressed_pixel_data_needs_its_closing_delimiter(ct_file, tmp_path):
    ds = pydicom.dcmread(ct_file)
    ds.PixelData = encapsulate([b"\x01" * 1000, b"\x02" * 998])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    whole = tmp_path / "rle.dcm"
    ds.save_as(whole, enforce_file_format=True)
    assert incomplete_reason(whole) is None
    data = whole.read_bytes()
    for n in (len(data) - 1, len(data) - 8, len(data) - 9, len(data) - 1500):
        assert "compressed Pixel Data" in incomplete_reason(_cut(data, n, tmp_path / "c.dcm"))


def test_short_declared_pixel_data_and_non_dicom_files(ct_file, tmp_path):
    ds = pydicom.dcmread(ct_file)
    ds.PixelData = ds.PixelData[: 112 * 112]  # half the bytes 112 x 112 x 16 bits need, declared as such
    short = tmp_path / "short.dcm"
    ds.save_as(short, enforce_file_format=True)
    assert incomplete_reason(short) == f"declares {112 * 112} Pixel Data bytes, its image needs {112 * 112 * 2}"
    (tmp_path / "notes.txt").write_text("not DICOM")
    assert incomplete_reason(tmp_path / "notes.txt") is None  # not DICOM: left to the series reader
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert incomplete_reason(tmp_path / "empty.dcm") == "is empty"
    (tmp_path / "pre").write_bytes(b"\0" * 100)
    assert "preamble" in incomplete_reason(tmp_path / "pre")


def test_rtstruct_without_pixels_is_whole(tmp_path):
    from OncoSegLib.export.rtstruct import write_rtstruct

    vol = write_phantom_series(tmp_path / "ct")
    labels = np.zeros(vol.shape_kji, np.uint8)
    labels[4:8, 40:60, 40:60] = 1
    write_rtstruct(labels, vol, tmp_path / "rt.dcm")
    assert incomplete_reason(tmp_path / "rt.dcm") is None


def test_fingerprint_digest_changes_with_names_sizes_and_mtimes(tmp_path):
    (tmp_path / "SMITH_JOHN.dcm").write_bytes(b"12")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"3")
    fp = fingerprint(tmp_path)
    assert [(r, s) for r, s, _ in fp] == [("SMITH_JOHN.dcm", 2), ("sub/b", 1)]
    d0 = fingerprint_digest(fp)
    assert d0["files"] == 2 and d0["bytes"] == 3 and "SMITH" not in str(d0)  # no file names in the manifest
    st = (tmp_path / "SMITH_JOHN.dcm").stat()
    import os

    os.utime(tmp_path / "SMITH_JOHN.dcm", ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    assert fingerprint_digest(fingerprint(tmp_path))["sha256"] != d0["sha256"]
