"""Region-of-interest descriptions shared by the RTSTRUCT and SEG exporters: name, colour, RT type, coded concept."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from OncoSegLib.errors import InputError
from OncoSegLib.io.labels import unique_labels

__all__ = ["RoiSpec", "RT_ROI_TYPES", "make_roi_specs", "parse_color", "DEFAULT_COLORS", "character_set_for",
           "clean_name"]


#: RT ROI Interpreted Type defined terms (DICOM PS3.3 C.8.8.8), plus a few aliases accepted on input.
RT_ROI_TYPES: tuple[str, ...] = (
    "EXTERNAL", "PTV", "CTV", "GTV", "TREATED_VOLUME", "IRRAD_VOLUME", "OAR", "BOLUS", "AVOIDANCE", "ORGAN",
    "MARKER", "REGISTRATION", "ISOCENTER", "CONTRAST_AGENT", "CAVITY", "BRACHY_CHANNEL", "BRACHY_ACCESSORY",
    "BRACHY_SRC_APP", "BRACHY_CHNL_SHLD", "SUPPORT", "FIXATION", "DOSE_REGION", "CONTROL", "DOSE_MEASUREMENT",
)
_TYPE_ALIASES = {"AVOID": "AVOIDANCE", "BODY": "EXTERNAL", "OUTLINE": "EXTERNAL", "TUMOR": "GTV",
                 "TUMOUR": "GTV", "": ""}

#: Distinct display colours (RGB 0-255) used in order when none is given.
DEFAULT_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (0, 200, 0), (0, 128, 255), (255, 200, 0), (200, 0, 255), (0, 220, 220), (255, 128, 0),
    (128, 64, 0), (255, 105, 180), (128, 128, 0), (0, 128, 128), (128, 0, 0), (0, 0, 160), (170, 255, 195),
)

#: Long ROI names: several planning systems cut ROI IDs at 16 characters.
MAX_SAFE_NAME = 16


@dataclass
class RoiSpec:
    """One structure to export.

    Attributes:
        label: value of the structure in the (K, J, I) label map (> 0).
        name: ROI name / segment label (<= 16 characters is safest for planning systems; 64 is the DICOM limit).
        color: display colour (R, G, B) 0-255; None = next default colour.
        interpreted_type: RT ROI Interpreted Type (ORGAN, GTV, CTV, PTV, AVOIDANCE, EXTERNAL, ...);
            None = guessed from the name (GTV/CTV/PTV prefixes, body/external/outline -> EXTERNAL, else ORGAN).
        description: optional free text (ROIDescription / SegmentDescription).
    """

    label: int
    name: str
    color: tuple[int, int, int] | None = None
    interpreted_type: str | None = None
    description: str | None = None


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def clean_name(name: str) -> str:
    """``name`` with every run of control characters (Unicode category Cc: C0 such as tab, newline and ESC, DEL, C1)
    replaced by one space, then stripped: DICOM LO/SH values (ROIName, SegmentLabel) may not hold them."""
    return _CONTROL.sub(" ", name).strip()


def guess_type(name: str) -> str:
    """RT ROI Interpreted Type guessed from a structure name (ORGAN when nothing matches)."""
    n = name.strip().upper()
    for t in ("GTV", "CTV", "ITV", "PTV"):
        if n.startswith(t):
            return "CTV" if t == "ITV" else t
    if re.search(r"\b(BODY|EXTERNAL|OUTLINE|SKIN_?CONTOUR)\b", n.replace("_", " ")) or n in ("BODY", "EXTERNAL"):
        return "EXTERNAL"
    if n.startswith(("TUMOR", "TUMOUR", "LESION")):
        return "GTV"
    return "ORGAN"


def normalise_type(value: str | None, name: str) -> str:
    """Validate an RT ROI Interpreted Type (aliases: AVOID, BODY, TUMOR...); None -> :func:`guess_type`."""
    if value is None:
        return guess_type(name)
    v = value.strip().upper()
    v = _TYPE_ALIASES.get(v, v)
    if v and v not in RT_ROI_TYPES:
        raise InputError(f"unknown RT ROI type {value!r} for {name!r}",
                         "use one of " + ", ".join(RT_ROI_TYPES))
    return v


def parse_color(text: str) -> tuple[int, int, int]:
    """Parse a colour: ``#RRGGBB``, ``RRGGBB`` or ``R:G:B`` / ``R/G/B`` (0-255)."""
    t = text.strip()
    m = re.fullmatch(r"#?([0-9a-fA-F]{6})", t)
    if m:
        h = m.group(1)
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    parts = re.split(r"[:/ ]", t)
    if len(parts) == 3 and all(p.isdigit() and 0 <= int(p) <= 255 for p in parts):
        return (int(parts[0]), int(parts[1]), int(parts[2]))
    raise InputError(f"cannot read colour {text!r}", "write colours as #RRGGBB or R:G:B (0-255)")


def character_set_for(texts: Sequence[str], source: str | Sequence[str] | None,
                      copied: Sequence[str] = ()) -> str | list[str] | None:
    """The SpecificCharacterSet to write: the source series' one when every new text encodes in it, else UTF-8.

    Args:
        texts: the strings we add (ROI/segment names, descriptions, labels).
        source: the series' SpecificCharacterSet (None/empty = the default repertoire, ASCII).
        copied: the text values copied from the series (patient and study attributes).

    Returns ``source`` unchanged when it holds every text; else ``"ISO_IR 192"`` (UTF-8), so that a name such as
    "肝臓" is never written as "??" - but only when every copied value is ASCII, so that the patient and study
    attributes stay byte-identical to the series' (validators such as dcentvfy and planning systems compare
    them byte for byte).

    Raises:
        InputError: a text needs another character set while the copied patient/study values are not ASCII.
    """
    from pydicom.charset import convert_encodings

    values = [source] if isinstance(source, str) else [str(v) for v in (source or [])]
    try:
        codecs = convert_encodings(values or ["ISO_IR 6"])
    except Exception:  # noqa: BLE001 - an unknown character set: only ASCII is safe
        codecs = ["ascii"]
    codec = codecs[0] if len(codecs) == 1 else "ascii"  # with ISO 2022 code extensions only ASCII is plain
    bad = None
    for t in texts:
        try:
            (t or "").encode(codec)
        except (UnicodeEncodeError, LookupError):
            bad = t
            break
    if bad is None:
        return source if source else None
    if all(str(v).isascii() for v in copied):
        return "ISO_IR 192"
    shown = "\\".join(values) or "default (ASCII)"
    raise InputError(f"the name {bad!r} cannot be written in the series' character set ({shown}) without "
                     "re-encoding the copied patient attributes",
                     "use names made of characters of that set (e.g. Latin letters)")


def make_roi_specs(labels: np.ndarray, rois: Sequence[RoiSpec] | None = None,
                   names: Sequence[str] | None = None,
                   colors: Sequence[tuple[int, int, int] | str] | None = None,
                   types: Sequence[str] | None = None) -> list[RoiSpec]:
    """Complete ROI descriptions for a label map: one per non-zero label (ascending) unless ``rois`` is given.

    ``labels`` is a (K, J, I) label map, or an (N, K, J, I) stack of masks (ROI label n = mask n - 1, overlaps
    allowed).

    ``names``/``colors``/``types`` apply in ascending label order; missing names become ``ROI_<label>``.
    Colours and types are filled in (default palette, name-based guess) and validated; a warning is issued for
    names longer than 16 characters (planning systems may cut them).
    """
    if rois is None:
        if np.ndim(labels) == 4:  # a stack of N (possibly overlapping) masks: ROI n is mask n-1
            if not np.any(labels):
                raise InputError("all masks are empty (no non-zero voxel)", "nothing to export")
            present = list(range(1, int(np.shape(labels)[0]) + 1))
        else:
            present = [int(v) for v in unique_labels(labels) if v != 0]
        if not present:
            raise InputError("the label map is empty (no non-zero voxel)", "nothing to export")
        rois = [RoiSpec(label=v, name="") for v in present]
    elif np.ndim(labels) == 4 and any(not 1 <= int(r.label) <= np.shape(labels)[0] for r in rois):
        raise InputError("with a stack of N masks, ROI labels must be 1..N (mask index + 1)")
    rois = [RoiSpec(r.label, r.name, r.color, r.interpreted_type, r.description) for r in rois]
    for seq, what in ((names, "names"), (colors, "colours"), (types, "types")):
        if seq is not None and len(seq) > len(rois):
            raise InputError(f"{len(seq)} {what} given for {len(rois)} structures",
                             "give at most one per label, in ascending label order")
    out: list[RoiSpec] = []
    seen_names: set[str] = set()
    for n, r in enumerate(rois):
        if int(r.label) <= 0:
            raise InputError(f"ROI label values must be > 0, got {r.label}")
        given = (names[n] if names is not None and n < len(names) else r.name) or f"ROI_{r.label}"
        name = clean_name(given)
        if _CONTROL.search(given):
            warnings.warn(f"ROI name {given!r} holds control characters (not allowed in DICOM names); written as "
                          f"{name!r}", UserWarning, stacklevel=3)
        if not name:
            raise InputError(f"ROI name {given!r} is made of control characters only", "give it a readable name")
        if len(name) > 64:
            raise InputError(f"ROI name {name!r} is longer than 64 characters (the DICOM limit)")
        if "\\" in name:
            raise InputError(f"ROI name {name!r} contains a backslash", "remove it")
        if len(name) > MAX_SAFE_NAME:
            msg = (f"ROI name {name!r} has {len(name)} characters; some planning systems cut structure names "
                   f"at {MAX_SAFE_NAME}")
            warnings.warn(msg, UserWarning, stacklevel=3)
        if name in seen_names:
            raise InputError(f"ROI name {name!r} is used twice", "give each structure its own name")
        seen_names.add(name)
        col = colors[n] if colors is not None and n < len(colors) else r.color
        if isinstance(col, str):
            col = parse_color(col)
        if col is None:
            col = DEFAULT_COLORS[n % len(DEFAULT_COLORS)]
        col = tuple(int(c) for c in col)
        if len(col) != 3 or not all(0 <= c <= 255 for c in col):
            raise InputError(f"colour {col} of {name!r} is not an (R, G, B) triple in 0-255")
        typ = types[n] if types is not None and n < len(types) else r.interpreted_type
        out.append(RoiSpec(label=int(r.label), name=name, color=col,  # type: ignore[arg-type]
                           interpreted_type=normalise_type(typ, name), description=r.description))
    return out


def prepare_labels(labels: np.ndarray, ref_shape_kji: tuple[int, int, int], rois: Sequence[RoiSpec] | None = None,
                   names: Sequence[str] | None = None, colors: Sequence | None = None,
                   types: Sequence[str] | None = None) -> tuple[np.ndarray, bool, list[RoiSpec]]:
    """Check a (K, J, I) label map or an (N, K, J, I) mask stack against the series grid and build its ROI specs.

    Returns ``(labels, is_stack, specs)``: integer labels (or the untouched stack) on the series' (K, J, I) grid.
    Raises InputError when the shape does not match the series or the labels are not whole numbers.
    """
    from OncoSegLib.io.labels import integer_labels

    lab = np.asarray(labels)
    stack = lab.ndim == 4
    if lab.dtype == bool and not stack:
        lab = lab.view(np.uint8)
    if lab.ndim not in (3, 4) or tuple(lab.shape[-3:]) != tuple(ref_shape_kji):
        raise InputError(f"label map shape {tuple(lab.shape)} does not match the series (K, J, I) = "
                         f"{tuple(ref_shape_kji)}", "the label map must be on the series' voxel grid")
    if not stack:
        lab = integer_labels(lab)
    return lab, stack, make_roi_specs(lab, rois, names, colors, types)
