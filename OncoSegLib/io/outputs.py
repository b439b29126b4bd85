"""Outputs never replace inputs: one guard that every command writing files calls before it reads anything.

``--overwrite`` allows replacing an earlier *output*; it never allows replacing a file the same command reads. A path
is the same as an input when it names the same file (``os.path.samefile``: symbolic links, hard links, ``..`` and
relative paths all count) or resolves to the same path. An input folder (a DICOM series) also protects the DICOM
images inside it: an output may be written into the folder (and replace an earlier RTSTRUCT/SEG output there), but
not over one of its image files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from OncoSegLib.errors import InputError

PathLike = str | os.PathLike


def same_path(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file or folder (existing: samefile; else by resolved path)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def _is_dicom_image(path: Path) -> bool:
    """True for a DICOM file that a series reader would read as an image (not an RTSTRUCT/SEG/... output)."""
    import pydicom

    from OncoSegLib.io.dicom_series import NON_IMAGE_MODALITIES

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - unreadable: not a DICOM image the series is made of
        return False
    return "Rows" in ds and str(ds.get("Modality", "")).upper() not in NON_IMAGE_MODALITIES


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def refuse_input_overwrite(outputs: Iterable[tuple[str, PathLike | None]],
                           inputs: Iterable[tuple[str, PathLike | None]]) -> None:
    """Raise InputError when an output would replace an input.

    Args:
        outputs: (option name, path) of every file or folder the command may write, e.g. ``("--out", out)``;
            None paths are skipped.
        inputs: (option name, path) of every file or folder it reads; None or missing paths are skipped.

    Refused: an output that is the same file as an input (any spelling or link), an output that is an input's
    folder, and an existing DICOM image file inside an input folder.
    """
    ins = [(name, Path(p)) for name, p in inputs if p is not None and Path(p).exists()]
    for out_name, out in outputs:
        if out is None:
            continue
        o = Path(out)
        for in_name, i in ins:
            if same_path(o, i):
                raise InputError(f"{out_name} {o} is the same file as the input {in_name} {i}; refusing to replace "
                                 "an input (even with --overwrite)", f"choose another {out_name}")
            if o.exists() and i.is_dir() and o.is_file() and _inside(o, i) and _is_dicom_image(o):
                raise InputError(f"{out_name} {o} would replace a DICOM image of the input folder {in_name} {i}",
                                 f"choose another {out_name} outside the series folder")


__all__ = ["refuse_input_overwrite", "same_path"]
