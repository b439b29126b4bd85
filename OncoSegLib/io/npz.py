"""CVPR 2024 / 2025 segmentation challenge ``.npz`` files (MedSAM-on-laptop, interactive 3D FM, text-guided).

Keys read:
- ``imgs``: 3D ``(z, y, x)`` = (k, j, i) volume, or a 2D ``(H, W, 3)`` RGB / ``(H, W)`` grey image.
- ``spacing``: voxel size stored **x, y, z** (mm) = (si, sj, sk); 2 values for 2D. Absent -> 1 mm.
- ``boxes``: CVPR24 ``(N, 6)`` [x_min, y_min, z_min, x_max, y_max, z_max] (3D) or ``(N, 4)`` [x_min, y_min, x_max,
  y_max] (2D) voxel indices; CVPR25 a list of dicts (``z_min``, ``z_max``, ``z_mid``, ``z_mid_x_min``, ...).
  Stored JSON-friendly in ``metadata["boxes"]`` with ``metadata["boxes_format"]`` in {"xyzxyz", "xyxy", "dict"}.
- ``gts`` (label map, same grid) -> ``metadata["gts"]`` as a numpy array (k, j, i); ``text_prompts`` ->
  ``metadata["text_prompts"]``.

The files carry no orientation: origin (0, 0, 0) and identity direction are used (``metadata["geometry"]`` says so).
CVPR25 stores boxes as pickled Python objects; they are unpickled with a restricted unpickler that only admits
numpy arrays/scalars and plain containers, because ``allow_pickle=True`` would let a crafted file run code.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume

_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "int"), ("builtins", "float"), ("builtins", "str"),
    ("builtins", "bytes"), ("builtins", "complex"), ("builtins", "bool"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _load_member(zf: zipfile.ZipFile, key: str) -> Any:
    """Load ``key`` from an open npz; object arrays go through the restricted unpickler."""
    with zf.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if not dtype.hasobject:
            data = f.read()
            arr = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)) if shape else 1)
            return arr.reshape(shape, order="F" if fortran else "C").copy()
        return _RestrictedUnpickler(f).load()


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            return [_jsonable(v) for v in x.tolist()] if x.ndim else _jsonable(x.item())
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def read_npz(path: str | os.PathLike) -> Volume:
    """Read a CVPR24/25 challenge ``.npz`` into a Volume (see the module docstring for keys and frames)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {p}")
    try:
        with zipfile.ZipFile(p) as zf:
            keys = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
            if "imgs" not in keys:
                raise InputError(f"{p} has no 'imgs' array (keys: {', '.join(sorted(keys)) or 'none'})",
                                 "expected a CVPR24/25 challenge npz with imgs, spacing, boxes")
            members = {k: _load_member(zf, k) for k in ("imgs", "spacing", "boxes", "gts", "text_prompts")
                       if k in keys}
    except InputError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, ValueError, EOFError, OSError) as exc:
        raise InputError(f"cannot read npz file {p}: {type(exc).__name__}: {exc}") from None

    imgs = np.asarray(members["imgs"])
    boxes = members.get("boxes")
    boxes_j = _jsonable(boxes) if boxes is not None else None
    boxes_format = None
    if boxes_j is not None:
        first = boxes_j[0] if isinstance(boxes_j, list) and boxes_j else None
        if isinstance(first, dict):
            boxes_format = "dict"
        elif isinstance(first, list):
            boxes_format = "xyzxyz" if len(first) == 6 else ("xyxy" if len(first) == 4 else "unknown")
        elif isinstance(boxes_j, list) and len(boxes_j) in (4, 6) and all(isinstance(v, (int, float)) for v in boxes_j):
            boxes_j = [boxes_j]
            boxes_format = "xyzxyz" if len(boxes_j[0]) == 6 else "xyxy"

    is_2d = imgs.ndim == 2 or (imgs.ndim == 3 and imgs.shape[-1] in (3, 4) and boxes_format not in ("xyzxyz", "dict")
                               and min(imgs.shape[:2]) > 4)
    if is_2d:
        array = imgs[None] if imgs.ndim == 2 else imgs[None, ..., :3]
    elif imgs.ndim == 3:
        array = imgs
    else:
        raise InputError(f"{p}: unsupported imgs shape {imgs.shape}", "expected (z, y, x) or (H, W, 3)")

    spacing = (1.0, 1.0, 1.0)
    sp = members.get("spacing")
    if sp is not None:
        sp = np.asarray(sp, dtype=float).ravel()
        if sp.size >= 3 and not is_2d:
            spacing = (float(sp[0]), float(sp[1]), float(sp[2]))
        elif sp.size >= 2:
            spacing = (float(sp[0]), float(sp[1]), 1.0)
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise InputError(f"{p}: spacing {sp.tolist()} (x, y, z mm) must be positive finite numbers",
                             "fix the 'spacing' array of the npz")

    md: dict[str, Any] = {"source": "npz", "file": str(p), "spacing_order_in_file": "xyz",
                          "geometry": "no orientation in file: origin 0, identity direction"}
    if boxes_j is not None:
        md["boxes"] = boxes_j
        md["boxes_format"] = boxes_format
    if "gts" in members:
        gts = np.asarray(members["gts"])
        gts = gts[None] if gts.ndim == 2 else gts
        if gts.shape[:3] != array.shape[:3]:
            raise InputError(f"{p}: gts shape {gts.shape} does not match imgs {imgs.shape}")
        md["gts"] = gts
    if "text_prompts" in members:
        md["text_prompts"] = _jsonable(members["text_prompts"])
    return Volume(array, spacing=spacing, metadata=md)


__all__ = ["read_npz"]
