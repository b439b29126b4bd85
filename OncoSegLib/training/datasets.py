"""Training datasets: MSD task folders, 2D image/mask folders, CVPR challenge npz, synthetic phantoms.

Each dataset becomes a list of :class:`CaseRef` (lazy: the image is read when first sampled, then kept in a small
LRU cache). :class:`SliceIndex` lists every (case, slice k, label) with foreground - every label of an image is a
training target - and every slice without any foreground, which the sampler uses for empty-target samples.

Arrays are (K, J, I); 2D images are single-slice volumes (K = 1).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from OncoSegLib.errors import InputError
from OncoSegLib.io.volume import Volume
from OncoSegLib.training.config import DatasetSpec

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")

# Modality names dataset.json files use -> OncoSeg modality.
_MSD_MODALITY = {"ct": "ct", "mri": "mri", "mr": "mri", "flair": "mri", "t1w": "mri", "t1gd": "mri", "t2w": "mri",
                 "t2": "mri", "adc": "mri", "pet": "pet", "us": "ultrasound"}


@dataclass
class CaseRef:
    """One training case, loaded on demand.

    ``load()`` returns (image Volume, labels (K, J, I) integer array on the same grid).
    ``names``: label value -> concept name (text prompt). ``modality``: an OncoSeg modality name.
    """

    name: str
    dataset: str
    modality: str
    names: dict[int, str]
    load: Callable[[], tuple[Volume, np.ndarray]]
    window: tuple[float, float] | None = None


def _strip_nifti(name: str) -> str:
    for s in NIFTI_SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return Path(name).stem


def _read_labels_volume(path: Path) -> np.ndarray:
    from OncoSegLib.io.nifti import read_nifti

    vol = read_nifti(path)
    arr = np.asarray(vol.array)
    if arr.ndim == 4:
        arr = arr[..., 0]
    return np.rint(arr).astype(np.int32)


def msd_cases(spec: DatasetSpec) -> list[CaseRef]:
    """Cases of a Medical Segmentation Decathlon task folder (dataset.json + imagesTr/ + labelsTr/)."""
    root = Path(spec.path or "")
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise InputError(f"{root} has no dataset.json", "point 'path' at an MSD task folder (e.g. Task03_Liver)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    names = {int(k): str(v) for k, v in (meta.get("labels") or {}).items() if int(k) != 0}
    if spec.labels:
        names = dict(spec.labels)
    modality = spec.modality
    if modality is None:
        mods = [str(v).lower() for v in (meta.get("modality") or {}).values()]
        modality = _MSD_MODALITY.get(mods[0], "mri") if mods else "ct"
    pairs = []
    for item in meta.get("training") or []:
        img, lab = root / item["image"], root / item["label"]
        if img.is_file() and lab.is_file():
            pairs.append((img, lab))
    if not pairs:  # dataset.json without a usable list: match files by name
        for img in sorted((root / "imagesTr").glob("*.nii*")):
            if img.name.startswith("."):
                continue
            stem = _strip_nifti(img.name)
            stem_label = stem[:-5] if stem.endswith("_0000") else stem
            for suf in NIFTI_SUFFIXES:
                lab = root / "labelsTr" / (stem_label + suf)
                if lab.is_file():
                    pairs.append((img, lab))
                    break
    if not pairs:
        raise InputError(f"no image/label pairs found in {root}", "expected imagesTr/*.nii.gz with labelsTr/ twins")
    if spec.max_cases:
        pairs = pairs[: spec.max_cases]
    window = tuple(spec.window) if spec.window else None
    ds_name = spec.name or root.name

    def make_loader(img: Path, lab: Path) -> Callable[[], tuple[Volume, np.ndarray]]:
        def load() -> tuple[Volume, np.ndarray]:
            from OncoSegLib.io.nifti import read_nifti

            vol = read_nifti(img)
            if spec.channel is not None and vol.array.ndim == 4:
                vol = vol.with_array(vol.array[..., int(spec.channel)])
            labels = _read_labels_volume(lab)
            if labels.shape != vol.shape_kji:
                raise InputError(f"{lab.name}: label shape {labels.shape} differs from image {vol.shape_kji}")
            return vol, labels
        return load

    return [CaseRef(_strip_nifti(img.name), ds_name, modality, names, make_loader(img, lab), window)
            for img, lab in pairs]


def _find_mask(img: Path, mask_dir: Path, suffix: str) -> Path | None:
    for cand_suffix in ([suffix] if suffix else []) + ["", "_mask", "_segmentation", "_Segmentation"]:
        for ext in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
            p = mask_dir / f"{img.stem}{cand_suffix}{ext}"
            if p.is_file() and p != img:
                return p
    return None


def folder2d_cases(spec: DatasetSpec) -> list[CaseRef]:
    """2D image/mask pairs: ``images/`` + ``masks/`` (Kvasir-SEG, ISIC with ``_segmentation``) or one folder with
    ``<name>_mask.png`` twins (BUSI). Every mask > 0 is ``label_name`` (label 1)."""
    root = Path(spec.path or "")
    if not root.is_dir():
        raise InputError(f"dataset folder {root} not found")
    img_dir = root / "images" if (root / "images").is_dir() else root
    mask_dir = next((root / d for d in ("masks", "labels", "ground_truth") if (root / d).is_dir()), img_dir)
    suffix = spec.mask_suffix or ("_mask" if mask_dir == img_dir else "")
    pairs = []
    for img in sorted(img_dir.rglob("*") if img_dir == root and mask_dir == root else img_dir.iterdir()):
        if not img.is_file() or img.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if mask_dir == img_dir and any(img.stem.endswith(s) for s in (suffix, "_mask", "_segmentation")
                                       if s):
            continue  # a mask, not an image
        mask = _find_mask(img, mask_dir if mask_dir != img_dir else img.parent, suffix)
        if mask is not None:
            pairs.append((img, mask))
    if not pairs:
        raise InputError(f"no image/mask pairs found in {root}",
                         "use images/ + masks/ with matching names, or <name>_mask.png beside each image")
    if spec.max_cases:
        pairs = pairs[: spec.max_cases]
    modality = spec.modality or "endoscopy"
    names = dict(spec.labels) if spec.labels else {1: spec.label_name}

    def make_loader(img: Path, mask: Path) -> Callable[[], tuple[Volume, np.ndarray]]:
        def load() -> tuple[Volume, np.ndarray]:
            from OncoSegLib.io.image2d import read_image

            vol = read_image(img)
            m = np.asarray(read_image(mask).array)
            if m.ndim == 4:
                m = m.max(axis=-1)
            labels = (m > (127 if m.max() > 1 else 0)).astype(np.int32)
            if labels.shape != vol.shape_kji:
                raise InputError(f"{mask.name}: mask size {labels.shape[1:]} differs from image {vol.shape_kji[1:]}")
            return vol, labels
        return load

    return [CaseRef(img.stem, spec.name or root.name, modality, names, make_loader(img, mask),
                    tuple(spec.window) if spec.window else None) for img, mask in pairs]


def npz_cases(spec: DatasetSpec) -> list[CaseRef]:
    """CVPR challenge ``.npz`` cases (``imgs``, ``gts``, ``spacing``) in a folder (searched recursively)."""
    root = Path(spec.path or "")
    files = sorted(root.rglob("*.npz")) if root.is_dir() else ([root] if root.is_file() else [])
    if not files:
        raise InputError(f"no .npz files found under {root}")
    if spec.max_cases:
        files = files[: spec.max_cases]
    names = dict(spec.labels) if spec.labels else {}

    def make_loader(path: Path) -> Callable[[], tuple[Volume, np.ndarray]]:
        def load() -> tuple[Volume, np.ndarray]:
            from OncoSegLib.io.npz import read_npz

            vol = read_npz(path)
            with np.load(path, allow_pickle=False) as data:
                if "gts" not in data.files:
                    raise InputError(f"{path.name} has no 'gts': training needs labelled npz files")
                gts = np.asarray(data["gts"]).astype(np.int32)
            if gts.ndim == 2:
                gts = gts[None]
            return vol, gts
        return load

    modality = spec.modality or _npz_modality(files[0])
    out = []
    for f in files:
        case_names = names or {}
        out.append(CaseRef(f.stem, spec.name or root.name, modality, case_names, make_loader(f),
                           tuple(spec.window) if spec.window else None))
    return out


def _npz_modality(path: Path) -> str:
    """Guess from the CVPR file-name convention (``CT_...``, ``MR_...``, ``US_...``, ``Endoscopy_...``)."""
    head = path.name.split("_")[0].lower()
    return {"ct": "ct", "mr": "mri", "pet": "pet", "us": "ultrasound", "x-ray": "xray", "xray": "xray",
            "endoscopy": "endoscopy", "dermoscopy": "dermoscopy", "mammo": "mammography",
            "mammography": "mammography"}.get(head, "ct")


def phantom_cases(spec: DatasetSpec) -> list[CaseRef]:
    """``n_cases`` synthetic CT phantoms, seeds ``seed .. seed + n_cases - 1``."""
    from OncoSegLib.phantoms import LABEL_NAMES, make_ct_phantom

    shape = tuple(int(s) for s in spec.shape)
    spacing = tuple(float(s) for s in spec.spacing)
    if len(shape) != 3 or len(spacing) != 3:
        raise InputError("phantom dataset: 'shape' is [K, J, I] and 'spacing' [si, sj, sk]")
    names = dict(spec.labels) if spec.labels else dict(LABEL_NAMES)

    def make_loader(seed: int) -> Callable[[], tuple[Volume, np.ndarray]]:
        def load() -> tuple[Volume, np.ndarray]:
            ph = make_ct_phantom(seed=seed, shape_kji=shape, spacing=spacing)  # type: ignore[arg-type]
            labels = ph.labels.astype(np.int32)
            if spec.labels:  # keep only the labels the config names
                labels = np.where(np.isin(labels, list(spec.labels)), labels, 0)
            return ph.volume, labels
        return load

    return [CaseRef(f"phantom_{spec.seed + n:04d}", spec.name or "phantom", spec.modality or "ct", names,
                    make_loader(spec.seed + n), tuple(spec.window) if spec.window else None)
            for n in range(int(spec.n_cases))]


def build_cases(specs: list[DatasetSpec]) -> list[CaseRef]:
    """All cases of a list of dataset specs, in order."""
    out: list[CaseRef] = []
    for spec in specs:
        fn = {"msd": msd_cases, "folder2d": folder2d_cases, "npz": npz_cases, "phantom": phantom_cases}[spec.kind]
        refs = fn(spec)
        if spec.remap:
            for ref in refs:
                ref.load = _remapped(ref.load, spec.remap)
                ref.names = {k: v for k, v in ref.names.items() if spec.remap.get(k, k) == k and k != 0}
        out.extend(refs)
    return out


def _remapped(load: Callable[[], tuple[Volume, np.ndarray]], remap: dict[int, int]
              ) -> Callable[[], tuple[Volume, np.ndarray]]:
    def wrapped() -> tuple[Volume, np.ndarray]:
        vol, labels = load()
        out = labels.copy()
        for src, dst in remap.items():
            out[labels == src] = dst
        return vol, out
    return wrapped


# --------------------------------------------------------------------------------------------- loaded slices
@dataclass
class LoadedCase:
    """A case in memory: normalised image (K, J, I, 3) float16 in [0, 1] and labels (K, J, I)."""

    ref: CaseRef
    image01: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]


class CaseCache:
    """Loads and normalises cases on demand, keeping the ``capacity`` most recently used ones."""

    def __init__(self, cases: list[CaseRef], capacity: int = 8):
        self.cases = cases
        self.capacity = max(1, int(capacity))
        self._cache: OrderedDict[int, LoadedCase] = OrderedDict()

    def get(self, idx: int) -> LoadedCase:
        if idx in self._cache:
            self._cache.move_to_end(idx)
            return self._cache[idx]
        from OncoSegLib.preprocessing import fit_normalizer

        ref = self.cases[idx]
        vol, labels = ref.load()
        norm = fit_normalizer(vol, ref.modality, window=ref.window)
        image01 = norm(vol.array).astype(np.float16)
        loaded = LoadedCase(ref, image01, np.asarray(labels), vol.spacing)
        self._cache[idx] = loaded
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return loaded


@dataclass
class SliceIndex:
    """Where the training targets are.

    ``foreground``: (case, k, label) for every label present on slice k (so every label of an image is used);
    ``background``: (case, k) for slices without any foreground; ``label_names``: (case, label) -> concept name.
    """

    foreground: list[tuple[int, int, int]] = field(default_factory=list)
    background: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def build(cls, cache: CaseCache, min_pixels: int = 4) -> "SliceIndex":
        """Scan every case's labels once (labels only; images are normalised lazily by the cache)."""
        idx = cls()
        for c in range(len(cache.cases)):
            labels = cache.get(c).labels
            for k in range(labels.shape[0]):
                sl = labels[k]
                values, counts = np.unique(sl, return_counts=True)
                fg = [int(v) for v, n in zip(values, counts) if v != 0 and n >= min_pixels]
                if fg:
                    idx.foreground.extend((c, k, v) for v in fg)
                elif not np.any(sl):
                    idx.background.append((c, k))
        if not idx.foreground:
            raise InputError("the training data contain no labelled foreground",
                             "check the label files / mask folders of the configured datasets")
        return idx
