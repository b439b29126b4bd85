"""Synthetic abdominal CT phantoms with exact ground truth (for the demo, training tests and benchmarks).

A phantom is an axial CT stack in Hounsfield units: air around an elliptic body with a fat rim, muscle/soft tissue,
a liver on the patient's right, two kidneys posteriorly, a vertebral body with a cortical shell, and 1-3 lesions in
the liver of varied size and contrast (hypo- or hyper-dense), plus smooth organ-shape perturbations and noise.

Anatomy is laid out in *fractions of the field of view*, so any grid size gives a plausible picture; the spacing
(default 0.8 x 0.8 x 2.5 mm, a typical abdominal CT slice spacing) is carried in the returned :class:`Volume`.
Arrays are (K, J, I) = (slice, row, column); with the identity direction, +i points to the patient's Left and +j
Posterior (LPS), so the liver (patient's right) appears on the image's left as radiologists expect.

Everything is deterministic given ``seed`` (numpy ``default_rng``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from OncoSegLib.io.volume import Volume

# Label values of :func:`make_ct_phantom` and their concept names (used as text prompts).
LABEL_NAMES: dict[int, str] = {
    1: "liver",
    2: "right kidney",
    3: "left kidney",
    4: "vertebra",
    5: "liver tumor",
}
# Mean HU per tissue (portal-venous phase CT); lesions draw their own contrast.
HU = {"air": -1000.0, "fat": -100.0, "muscle": 50.0, "bowel": 10.0, "liver": 105.0, "kidney": 190.0,
      "cortical_bone": 750.0, "trabecular_bone": 250.0}


@dataclass
class Phantom:
    """A synthetic CT with ground truth.

    Attributes:
        volume: CT in HU (int16 array (K, J, I)), spacing (si, sj, sk) mm, modality "CT".
        labels: uint8 label map (K, J, I) on the same grid; 0 = background, values as in :data:`LABEL_NAMES`.
        names: label value -> concept name for the labels present.
        lesions: per lesion its centre (k, j, i) in voxels, radius in mm and HU contrast against the liver.
    """

    volume: Volume
    labels: np.ndarray
    names: dict[int, str]
    lesions: list[dict] = field(default_factory=list)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (Gaussian-filtered white noise)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-8)


def _ellipsoid(grid: tuple[np.ndarray, np.ndarray, np.ndarray], centre, radii, warp=None) -> np.ndarray:
    """Boolean ellipsoid over a (z, y, x) grid in mm; ``warp`` (same shape) perturbs the level set."""
    z, y, x = grid
    r = ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2
    if warp is not None:
        r = r + warp
    return r <= 1.0


def make_ct_phantom(seed: int = 0, shape_kji: tuple[int, int, int] = (48, 128, 128),
                    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5), noise_hu: float = 12.0,
                    n_lesions: tuple[int, int] = (1, 3)) -> Phantom:
    """Make one deterministic synthetic abdominal CT.

    Args:
        seed: random seed; the same seed gives the same phantom bit for bit.
        shape_kji: grid size (K slices, J rows, I columns).
        spacing: voxel size (si, sj, sk) in mm along i, j, k.
        noise_hu: standard deviation of the (slightly correlated) image noise in HU.
        n_lesions: inclusive range of the number of liver lesions.

    Returns:
        A :class:`Phantom` whose volume origin centres the grid on LPS (0, 0, 0).
    """
    rng = np.random.default_rng(seed)
    nk, nj, ni = (int(n) for n in shape_kji)
    si, sj, sk = (float(s) for s in spacing)
    # Normalised coordinates in [-1, 1] per axis, scaled into mm by each axis' half field of view.
    hx, hy, hz = ni * si / 2.0, nj * sj / 2.0, nk * sk / 2.0
    z = (np.arange(nk) + 0.5) * sk - hz
    y = (np.arange(nj) + 0.5) * sj - hy
    x = (np.arange(ni) + 0.5) * si - hx
    grid = np.meshgrid(z, y, x, indexing="ij")
    Z, Y, X = grid

    def jitter(scale: float) -> float:
        return float(rng.uniform(1.0 - scale, 1.0 + scale))

    warp_body = 0.05 * _smooth_field(rng, (nk, nj, ni), sigma=6)
    warp_liver = 0.15 * _smooth_field(rng, (nk, nj, ni), sigma=5)
    warp_kidney = 0.08 * _smooth_field(rng, (nk, nj, ni), sigma=3)

    # Body: elliptic cylinder with a subcutaneous fat rim.
    body_rx, body_ry = 0.88 * hx * jitter(0.05), 0.70 * hy * jitter(0.05)
    body_r = (X / body_rx) ** 2 + (Y / body_ry) ** 2 + warp_body
    body = body_r <= 1.0
    wall = body_r <= 0.80
    inner = body_r <= 0.72
    # Liver: large ellipsoid in the patient's right (image left = low i) anterior abdomen, upper slices.
    liver_c = (-0.25 * hz * jitter(0.2), -0.10 * hy * jitter(0.3), -0.38 * hx * jitter(0.1))
    liver_r = (0.80 * hz * jitter(0.1), 0.42 * hy * jitter(0.1), 0.36 * hx * jitter(0.1))
    liver = _ellipsoid(grid, liver_c, liver_r, warp_liver) & inner
    # Kidneys: posterior, either side of the spine, lower slices.
    kid_r = (0.40 * hz * jitter(0.1), 0.16 * hy * jitter(0.1), 0.11 * hx * jitter(0.1))
    kid_z = 0.35 * hz * jitter(0.2)
    kid_y = 0.30 * hy * jitter(0.1)
    right_kidney = _ellipsoid(grid, (kid_z, kid_y, -0.40 * hx * jitter(0.05)), kid_r, warp_kidney) & inner
    left_kidney = _ellipsoid(grid, (kid_z * jitter(0.1), kid_y, 0.40 * hx * jitter(0.05)), kid_r, warp_kidney) & inner
    right_kidney &= ~liver
    # Vertebra: a cylinder along z, posterior midline, cortical shell around trabecular bone.
    vert_c = (0.42 * hy, 0.0)
    vert_r = (0.14 * hy * jitter(0.05), 0.12 * hx * jitter(0.05))
    vert_d = ((Y - vert_c[0]) / vert_r[0]) ** 2 + ((X - vert_c[1]) / vert_r[1]) ** 2
    vertebra = (vert_d <= 1.0) & body
    trabecular = vert_d <= 0.6

    labels = np.zeros((nk, nj, ni), dtype=np.uint8)
    labels[liver] = 1
    labels[right_kidney] = 2
    labels[left_kidney] = 3
    labels[vertebra] = 4

    hu = np.full((nk, nj, ni), HU["air"], dtype=np.float64)
    hu[body] = HU["fat"]
    hu[wall] = HU["muscle"]
    # Abdominal content: bowel/mesentery texture with fat patches.
    texture = _smooth_field(rng, (nk, nj, ni), sigma=3)
    content = np.where(texture > 0.6, HU["fat"], HU["bowel"] + 15.0 * texture)
    hu[inner] = content[inner]
    hu[liver] = HU["liver"]
    hu[right_kidney | left_kidney] = HU["kidney"]
    hu[vertebra] = HU["cortical_bone"]
    hu[vertebra & trabecular] = HU["trabecular_bone"]

    # Lesions inside the liver: varied size (radius 4-14 mm) and contrast (hypo -45..-20 or hyper +25..+50 HU).
    lesions: list[dict] = []
    liver_idx = np.argwhere(ndimage.binary_erosion(liver, iterations=4))
    n_les = int(rng.integers(n_lesions[0], n_lesions[1] + 1)) if len(liver_idx) else 0
    for _ in range(n_les):
        kc, jc, ic = liver_idx[int(rng.integers(len(liver_idx)))]
        radius_mm = float(rng.uniform(4.0, 14.0)) * min(hx, hy) / 51.2  # scaled to the field of view
        contrast = float(rng.choice([-1, 1])) * float(rng.uniform(20.0, 50.0))
        warp = 0.2 * _smooth_field(rng, (nk, nj, ni), sigma=2)
        lesion = _ellipsoid(grid, (Z[kc, jc, ic], Y[kc, jc, ic], X[kc, jc, ic]),
                            (radius_mm * jitter(0.2), radius_mm * jitter(0.2), radius_mm * jitter(0.2)), warp)
        lesion &= liver
        if not lesion.any():
            continue
        labels[lesion] = 5
        hu[lesion] = HU["liver"] + contrast
        lesions.append({"centre_kji": [int(kc), int(jc), int(ic)], "radius_mm": round(radius_mm, 2),
                        "contrast_hu": round(contrast, 1)})

    # Partial-volume blur, then correlated noise (CT noise is not white).
    hu = ndimage.gaussian_filter(hu, sigma=(0.3, 0.6, 0.6))
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape), sigma=(0.0, 0.7, 0.7))
    noise *= noise_hu / (noise.std() + 1e-8)
    hu = np.clip(hu + noise, -1024, 3071)
    volume = Volume(
        array=np.round(hu).astype(np.int16),
        spacing=(si, sj, sk),
        origin=(float(x[0]), float(y[0]), float(z[0])),
        direction=np.eye(3),
        modality="CT",
        metadata={"phantom_seed": int(seed), "description": "OncoSeg synthetic CT phantom"},
    )
    present = {int(v) for v in np.unique(labels) if v}
    names = {v: LABEL_NAMES[v] for v in sorted(present)}
    return Phantom(volume=volume, labels=labels, names=names, lesions=lesions)
