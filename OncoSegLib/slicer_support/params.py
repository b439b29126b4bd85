"""Module settings: the choices the GUI offers, their defaults, and a string form for storage.

The Slicer module declares its ``@parameterNodeWrapper`` fields from the tuples here (one source of truth), and
uses :class:`ModuleSettings` to move settings between the parameter node, the console Logic and tests. Stored
values from an older or hand-edited scene that are no longer valid fall back to the default and are reported, never
raised: a scene must always load.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

MODALITY_CHOICES: tuple[str, ...] = ("auto", "ct", "mri", "pet", "ultrasound", "xray", "chest_xray", "mammography",
                                     "dermoscopy", "endoscopy", "srh")
DIRECTION_CHOICES: tuple[str, ...] = ("both", "forward", "backward")
METHOD_CHOICES: tuple[str, ...] = ("auto", "memory", "box3d", "medsam", "centroid", "box")  # auto: the model's default
OVERWRITE_CHOICES: tuple[str, ...] = ("protect", "overwrite", "overlap")
AXIS_CHOICES: tuple[str, ...] = ("auto", "axial", "coronal", "sagittal")
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cuda", "mps", "cpu")

#: human-readable labels for the choices (the GUI shows these; values stay the keys above)
CHOICE_LABELS: dict[str, str] = {
    "auto": "Auto", "ct": "CT", "mri": "MRI", "pet": "PET", "ultrasound": "Ultrasound", "xray": "X-ray",
    "chest_xray": "Chest X-ray", "mammography": "Mammography", "dermoscopy": "Dermoscopy",
    "endoscopy": "Endoscopy", "srh": "SRH (histology)",
    "both": "Both directions", "forward": "Forward (+k)", "backward": "Backward (-k)",
    "memory": "Memory (SAM3 tracker)", "centroid": "Centroid reseed", "box": "Previous-mask box",
    "box3d": "3D box (LiteMedSAM default)", "medsam": "MedSAM rule",
    "protect": "Keep other segments", "overwrite": "Overwrite other segments", "overlap": "Allow overlap",
    "axial": "Axial (k)", "coronal": "Coronal (j)", "sagittal": "Sagittal (i)",
    "cuda": "CUDA GPU", "mps": "Apple GPU", "cpu": "CPU",
}


@dataclass
class ModuleSettings:
    """Everything a user chooses in the module panel besides node selections and prompts.

    Attributes:
        modality: "auto" (detect from the image) or one of OncoSeg's modality names.
        model: registry name ("latest", "liver", ...) or a local file/folder path.
        propagateDirection, propagateMethod: arguments of ``SegmentationSession.propagate``.
        overwritePolicy: how new voxels treat other segments: "protect" (never take their voxels),
            "overwrite" (take them), "overlap" (both keep them).
        promptAxis: slicing axis for new prompts; "auto" = the axis of the slice view clicked in.
        device: "auto" (cuda, then mps, then cpu) or a device name.
        lowConfidence: predicted IoU below which a segment is flagged (0-1).
    """

    modality: str = "auto"
    model: str = "latest"
    propagateDirection: str = "both"
    propagateMethod: str = "auto"
    overwritePolicy: str = "protect"
    promptAxis: str = "auto"
    device: str = "auto"
    lowConfidence: float = 0.5

    _CHOICES = {
        "modality": MODALITY_CHOICES, "propagateDirection": DIRECTION_CHOICES, "propagateMethod": METHOD_CHOICES,
        "overwritePolicy": OVERWRITE_CHOICES, "promptAxis": AXIS_CHOICES, "device": DEVICE_CHOICES,
    }

    def to_strings(self) -> dict[str, str]:
        """Flat str -> str form (vtkMRMLScriptedModuleNode parameters, QSettings)."""
        return {f.name: (repr(float(getattr(self, f.name))) if f.type in ("float", float) else str(getattr(self, f.name)))
                for f in fields(self)}

    @classmethod
    def from_strings(cls, values: dict[str, Any]) -> tuple["ModuleSettings", list[str]]:
        """Parse stored strings; returns the settings and a list of warnings for values replaced by defaults."""
        out = cls()
        warnings: list[str] = []
        for f in fields(cls):
            if f.name not in values or values[f.name] is None:
                continue
            raw = values[f.name]
            default = getattr(out, f.name)
            if isinstance(default, float):
                try:
                    v = float(raw)
                except (TypeError, ValueError):
                    warnings.append(f"{f.name}={raw!r} is not a number; using {default}")
                    continue
                if not 0.0 <= v <= 1.0:
                    warnings.append(f"{f.name}={v} is outside 0..1; using {default}")
                    continue
                setattr(out, f.name, v)
                continue
            v = str(raw).strip()
            choices = cls._CHOICES.get(f.name)
            if choices is not None and v not in choices:
                warnings.append(f"{f.name}={v!r} is not one of {list(choices)}; using {default!r}")
                continue
            if f.name == "model" and not v:
                warnings.append(f"empty model; using {default!r}")
                continue
            setattr(out, f.name, v)
        return out, warnings


def resolve_modality(choice: str, detected: str | None) -> str | None:
    """The modality to run with: the user's explicit choice, else the detected one (None = let the engine decide)."""
    if choice and choice != "auto":
        return choice
    return detected


def modality_status(choice: str, guess_modality: str | None, guess_confidence: float | None,
                    guess_reason: str | None) -> str:
    """One line for the GUI: what modality will be used and why (detected reason, or the user's override)."""
    det = CHOICE_LABELS.get(guess_modality or "", guess_modality or "unknown")
    if choice and choice != "auto":
        chosen = CHOICE_LABELS.get(choice, choice)
        if guess_modality and guess_modality != choice:
            return f"Using {chosen} (set by you; detected {det})"
        return f"Using {chosen} (set by you)"
    if not guess_modality:
        return "Modality: not detected yet (select an input volume)"
    conf = "" if guess_confidence is None else f", {100 * guess_confidence:.0f}%"
    return f"Detected {det}{conf}: {guess_reason or 'no reason given'}"


#: keyboard shortcuts of the module panel (active while the module is shown): action -> Qt key sequence
SHORTCUTS: dict[str, str] = {"positive": "P", "negative": "N", "box": "B", "next_segment": "Shift+N",
                             "undo": "Ctrl+Z"}


def next_segment_name(existing: list[str], current: str) -> str:
    """The name "next segment" switches to: ``Segment_3`` -> ``Segment_4`` (the first free number at or after the
    current one + 1); a name without a trailing number gets ``_2``."""
    import re

    m = re.match(r"^(.*?)(?:[_ ](\d+))?$", current.strip() or "Segment")
    stem = m.group(1) if m else current
    n = int(m.group(2)) + 1 if m and m.group(2) else 2
    taken = set(existing)
    while f"{stem}_{n}" in taken:
        n += 1
    return f"{stem}_{n}"


#: registry name of the CPU-sized model offered when there is no GPU or no SAM3 weights
CPU_MODEL = "litemedsam"


@dataclass
class ModelAdvice:
    """What the panel says before loading a model: ``message`` ("" = nothing to say) and ``suggested`` (a model to
    offer instead, or None)."""

    message: str = ""
    suggested: str | None = None


def model_advice(model: str, device: str, cuda: bool, mps: bool, weights_local: bool | None,
                 fallback_notice: str | None = None) -> ModelAdvice:
    """CPU-mode and missing-weights advice for ``model`` on ``device``.

    Args:
        model: the chosen model (registry name or path); device: the chosen device ("auto", "cpu", "cuda", ...).
        cuda, mps: whether a CUDA / Apple GPU is usable in this Slicer's torch.
        weights_local: whether the model's weights (and its base's) are on this machine (None = unknown, e.g. a path).
        fallback_notice: the registry's notice when the model routed for the image cannot be had
            (``OncoSegLib.models.registry.resolve_model``).
    """
    if model == CPU_MODEL:
        return ModelAdvice()
    gpu = (cuda or mps) and device != "cpu"
    if weights_local is False:
        return ModelAdvice(fallback_notice or f"The weights of '{model}' are not on this computer (SAM3 weights need "
                           f"approved access on Hugging Face). '{CPU_MODEL}' works offline on any computer.", CPU_MODEL)
    if not gpu:
        return ModelAdvice(f"CPU mode: no GPU is usable{' (device set to CPU)' if device == 'cpu' else ''}. SAM3 models "
                           f"take several seconds per slice on a CPU; '{CPU_MODEL}' is made for CPUs.", CPU_MODEL)
    return ModelAdvice()


def advise(model: str, device: str = "auto") -> ModelAdvice:
    """:func:`model_advice` for this computer: GPUs from this Python's torch, weights from the model registry."""
    import torch

    from OncoSegLib.errors import OncoSegError
    from OncoSegLib.models import registry

    local = None
    try:
        manifest = registry.load_manifest()
        entry = manifest.models.get(model)
        if entry is not None:
            base = manifest.models.get(entry.base) if entry.base else None
            local = registry.is_available_locally(entry) and (base is None or registry.is_available_locally(base))
    except OncoSegError:  # unreadable registry: say nothing about weights
        local = None
    mps = getattr(torch.backends, "mps", None)
    return model_advice(model, device, torch.cuda.is_available(), bool(mps and mps.is_available()), local)


#: the markups nodes prompts are placed into: parameter-node field, node class, name, colour (RGB 0-1)
PROMPT_NODES: tuple[tuple[str, str, str, tuple[float, float, float]], ...] = (
    ("positivePoints", "vtkMRMLMarkupsFiducialNode", "OncoSeg +", (0.1, 0.8, 0.1)),
    ("negativePoints", "vtkMRMLMarkupsFiducialNode", "OncoSeg -", (0.9, 0.1, 0.1)),
    ("boxROI", "vtkMRMLMarkupsROINode", "OncoSeg box", (0.9, 0.8, 0.1)),
    ("scribble", "vtkMRMLMarkupsCurveNode", "OncoSeg scribble", (0.1, 0.6, 0.9)),
)
