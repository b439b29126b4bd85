"""Inputs that used to end in "internal error" (exit 1) or in a silently wrong result give one line and exit 2 with no
output written: truncated RTSTRUCT / SEG imports (every cut of the file), PNG decompression bombs (refused from the
declared size, before decoding)."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from OncoSegLib.cli import main
from OncoSegLib.errors import InputError
from OncoSegLib.io.dicom_write import write_dicom_series
from OncoSegLib.io.geometries import example_volume
from OncoSegLib.io.loader import load_volume


def _one_line_error(capsys, verb: str, rc: int, needle: str = "") -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(f"oncoseg {verb}: error:") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and needle in err
    return err


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from OncoSegLib.export import write_rtstruct, write_seg
    from OncoSegLib.export.reference import load_reference

    d = tmp_path_factory.mktemp("rt")
    write_dicom_series(example_volume("oblique", (6, 24, 20)), d / "ct")
    ref = load_reference(d / "ct")
    lab = np.zeros(ref.shape_kji, np.uint8)
    lab[1:4, 6:16, 4:14] = 1
    lab[2:5, 2:5, 15:19] = 2
    write_rtstruct(lab, ref, d / "rt.dcm")
    write_seg(lab, ref, d / "seg.dcm")
    return d, ref, lab


def test_truncated_rtstruct_every_cut_refused_or_complete(exported, tmp_path: Path) -> None:
    from OncoSegLib.export import read_rtstruct

    d, ref, lab = exported
    full, rois = read_rtstruct(d / "rt.dcm", ref)
    np.testing.assert_array_equal(full, lab)  # the uncut file is right
    data = (d / "rt.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    outcomes = {"refused": 0, "complete": 0}
    for n in range(0, len(data), 2):
        cut.write_bytes(data[:n])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got, got_rois = read_rtstruct(cut, ref)
        except InputError:
            outcomes["refused"] += 1
            continue
        # a cut that pydicom reads without complaint must have lost nothing (e.g. only trailing padding)
        np.testing.assert_array_equal(got, lab, err_msg=f"cut at {n} of {len(data)} bytes read silently wrong")
        assert [r.name for r in got_rois] == [r.name for r in rois]
        outcomes["complete"] += 1
    assert outcomes["refused"] > 0.9 * len(range(0, len(data), 2))


@pytest.mark.parametrize("fmt,fraction", [("rtstruct", 0.1), ("rtstruct", 0.6), ("rtstruct", 0.9),
                                          ("seg", 0.1), ("seg", 0.6), ("seg", 0.999)])
def test_truncated_rtstruct_and_seg_import_cli(exported, tmp_path: Path, fmt: str, fraction: float, capsys) -> None:
    d, _, _ = exported
    data = (d / ("rt.dcm" if fmt == "rtstruct" else "seg.dcm")).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:int(len(data) * fraction)])  # 0.999 of a SEG: the end of its pixel data is missing
    out = tmp_path / f"{fmt}.nii.gz"
    rc = main(["import", fmt, str(cut), "--dicom", str(d / "ct"), "--out", str(out)])
    _one_line_error(capsys, "import", rc, "bytes of pixel data" if fraction == 0.999 else "")
    assert not out.exists()


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares ``width`` x ``height`` grey pixels (the data would be gigabytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("size", [(100_000, 100_000), (10_000, 10_000)])
def test_png_decompression_bomb_refused(tmp_path: Path, size, capsys) -> None:
    from PIL import Image

    png = _png_declaring(tmp_path / "bomb.png", *size)
    assert struct.unpack(">II", png.read_bytes()[16:24]) == size  # the IHDR declares it; the file is tiny
    assert png.stat().st_size < 200 and size[0] * size[1] > Image.MAX_IMAGE_PIXELS
    with pytest.raises(InputError, match="decompression-bomb"):
        load_volume(png)
    out = tmp_path / "o.nii.gz"
    rc = main(["convert", str(png), str(out)])
    _one_line_error(capsys, "convert", rc, "decompression-bomb")
    assert not out.exists()


def test_png_below_the_limit_still_reads(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.arange(12 * 9, dtype=np.uint8).reshape(9, 12)).save(tmp_path / "ok.png")
    vol = load_volume(tmp_path / "ok.png")
    assert vol.shape_kji == (1, 9, 12) and int(vol.array[0, 8, 11]) == 107
