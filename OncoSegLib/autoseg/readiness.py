"""Is an inbox job folder complete? File-set fingerprints and a cheap "this DICOM file is whole" check.

A DICOM receiver or a copy script writes a series file by file, and each file from its first byte to its last. So a
job is taken as complete only when (1) its file set (relative paths, sizes, modification times) has stayed the same
for the settle time, which the watch loop measures with :func:`fingerprint`, and (2) every file that is, or may be
becoming, a DICOM Part-10 file parses and holds all its pixel bytes (:func:`incomplete_reason`).

The pixel check reads the header with pydicom (``stop_before_pixels``) and then only the Pixel Data element header
(and, for compressed data, the fragment item headers) with seeks. Hand-written because pydicom either reads all pixel
bytes (slow for a 500-slice CT at every scan) or, with ``stop_before_pixels``, never looks at them.
"""

from __future__ import annotations

import hashlib
import os
import struct
import warnings
from pathlib import Path

#: (relative POSIX path, size in bytes, modification time in ns) of every file of a job folder, sorted.
Fingerprint = tuple[tuple[str, int, int], ...]

_PREAMBLE = 128
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}  # Pixel Data, Float / Double Float Pixel Data
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"}
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def fingerprint(folder: Path) -> Fingerprint:
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


def tree_signature(folder: Path) -> tuple[tuple[str, int], ...]:
    """(folder path, mtime ns) of ``folder`` and every sub-folder: a cheap change check (no per-file stat).

    Adding, removing or renaming a file changes its folder's mtime; rewriting a file in place does not (only
    :func:`fingerprint` sees that). About 40 times cheaper than :func:`fingerprint` for a 500-file series.
    """
    out, stack = [], [str(folder)]
    while stack:
        d = stack.pop()
        try:
            out.append((d, os.stat(d).st_mtime_ns))
            with os.scandir(d) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except OSError:  # vanished while scanning
            continue
    return tuple(sorted(out))


def fingerprint_digest(fp: Fingerprint) -> dict[str, int | str]:
    """What the manifest stores: file count, total bytes and a SHA-256 of the fingerprint (no file names kept)."""
    h = hashlib.sha256()
    for rel, size, mtime in fp:
        h.update(f"{rel}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return {"files": len(fp), "bytes": sum(s for _, s, _ in fp), "sha256": h.hexdigest()}


def incomplete_reason(path: Path) -> str | None:
    """Why ``path`` is not (yet) a whole DICOM file, or None when it is whole or is not a DICOM file at all.

    Not a DICOM file (left to the series reader, which ignores it): no ``DICM`` marker after the 128-byte preamble
    and no DICOM suffix, or a file under 132 bytes whose first bytes are not a zero preamble. Incomplete: an empty
    file, a zero preamble still being written, a header pydicom cannot parse, an image whose Pixel Data element is
    missing or shorter than it declares, or compressed pixel data without its closing delimiter.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(_PREAMBLE + 4)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    if size == 0:
        return "is empty"
    part10 = len(head) >= _PREAMBLE + 4 and head[_PREAMBLE:] == b"DICM"
    if not part10:
        if len(head) < _PREAMBLE + 4 and (b"\0" * _PREAMBLE + b"DICM").startswith(head):
            return f"holds only the first {size} byte(s) of a DICOM preamble"
        if path.suffix.lower() not in _DICOM_SUFFIXES:
            return None
    return _dicom_reason(path, size, force=not part10)


def _dicom_reason(path: Path, size: int, force: bool) -> str | None:
    with warnings.catch_warnings():  # pydicom warns while converting values of a cut header
        warnings.simplefilter("ignore")
        return _dicom_reason_quiet(path, size, force)


def _dicom_reason_quiet(path: Path, size: int, force: bool) -> str | None:
    import pydicom

    try:
        with path.open("rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, force=force)
            pos = fh.tell()  # pydicom leaves the file at the Pixel Data element header when it stops there
            head = fh.read(12)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not whole (yet)"
        return f"does not parse as DICOM ({type(exc).__name__})"
    meta = getattr(ds, "file_meta", None)
    if not force and not (getattr(meta, "TransferSyntaxUID", None) and "SOPClassUID" in ds):
        return "ends inside its header"
    if "Rows" not in ds and not _image_storage(ds):
        return None  # not an image (RT object, SR, ...): the header parsed, nothing more to check
    if len(head) < 8:
        return "ends before its Pixel Data"
    little = head[:4] != b"\x7f\xe0\x00\x10"
    order = "<" if little else ">"
    group, elem = struct.unpack(order + "HH", head[:4])
    if (group, elem) not in _PIXEL_TAGS:
        return "ends before its Pixel Data"
    # explicit VR: tag, VR, 2 reserved bytes, 4-byte length. An implicit-VR length cannot look like that: these VR
    # codes read as odd little-endian lengths, and Pixel Data lengths are even.
    if head[4:6] in _LONG_VRS and head[6:8] == b"\x00\x00":
        if len(head) < 12:
            return "ends inside its Pixel Data header"
        (length,), start = struct.unpack(order + "I", head[8:12]), pos + 12
    else:  # implicit VR: tag, 4-byte length
        (length,), start = struct.unpack(order + "I", head[4:8]), pos + 8
    if length == 0xFFFFFFFF:
        return _encapsulated_reason(path, start, size, order)
    if start + length > size:
        return f"is truncated: {size - start} of {length} Pixel Data bytes"
    expected = _native_bytes(ds)
    if expected is not None and length < expected:
        return f"declares {length} Pixel Data bytes, its image needs {expected}"
    return None


def _image_storage(ds) -> bool:
    """The file meta says an image SOP class (a header cut before Rows still says so)."""
    from pydicom.uid import UID

    sop = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None) or ds.get("SOPClassUID")
    return bool(sop) and "Image Storage" in UID(str(sop)).name


def _native_bytes(ds) -> int | None:
    try:
        bits = int(ds.BitsAllocated)
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(
            ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return (n * bits + 7) // 8


def _encapsulated_reason(path: Path, offset: int, size: int, order: str) -> str | None:
    """Walk the fragment items of compressed Pixel Data (headers only) up to the Sequence Delimitation Item."""
    with path.open("rb") as fh:
        while True:
            if offset + 8 > size:
                return "is truncated inside its compressed Pixel Data"
            fh.seek(offset)
            group, elem, length = struct.unpack(order + "HHI", fh.read(8))
            if (group, elem) == (0xFFFE, 0xE0DD):
                return None
            if (group, elem) != (0xFFFE, 0xE000):
                return "has a malformed compressed Pixel Data item"
            offset += 8 + length
            if offset > size:
                return "is truncated inside its compressed Pixel Data"


__all__ = ["Fingerprint", "fingerprint", "fingerprint_digest", "tree_signature", "incomplete_reason"]
