"""Autoseg protocols: the list of structures an AI node segments from text prompts, read from YAML or JSON.

A protocol names what to look for (per structure: ROI name, text prompt, RT ROI Interpreted Type, colour, optional
model, minimum detection score, largest instance or all instances) and how (3D strategy, probe slices, propagation
method, CT window, the modalities it is meant for). See ``docs/autoseg.md`` and ``configs/autoseg_example.yaml``.

Validation is strict: unknown keys (typos) are refused, every error names the file and the field
(``structures[2].keep``) and says what to write instead.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from OncoSegLib.errors import InputError

STRATEGIES = ("propagate", "every_slice")
KEEP = ("largest", "all")
PROPAGATION = ("auto", "memory", "centroid", "box", "medsam", "box3d")
#: Names longer than this may be cut by treatment planning systems (a warning, not an error).
MAX_SAFE_NAME = 16
#: Default candidates propagated per structure: keep=largest compares a few, keep=all keeps up to ten.
DEFAULT_MAX_INSTANCES = {"largest": 3, "all": 10}

_TOP_KEYS = {"name", "description", "version", "modalities", "strategy", "probe_slices", "propagation", "window",
             "low_confidence_score", "structures"}
_STRUCT_KEYS = {"name", "text", "type", "color", "colour", "model", "min_score", "keep", "max_instances",
                "description"}


@dataclass
class StructureSpec:
    """One structure of a protocol.

    Attributes:
        name: ROI name written to the RTSTRUCT (<= 16 characters advisable; 64 is the DICOM limit).
        text: the text prompt given to SAM3's detector, e.g. "liver".
        roi_type: RT ROI Interpreted Type (ORGAN, AVOIDANCE, GTV, EXTERNAL, ...); guessed from the name when absent.
        color: display colour (R, G, B) 0-255.
        model: registry name or path of a model for this structure only (None = the run's model).
        min_score: detections scoring below this (0..1) are ignored.
        keep: "largest" keeps the largest instance (one organ), "all" keeps every instance (e.g. lymph nodes).
        max_instances: most candidate instances examined (propagate) or kept (keep=all).
        description: free text (ROIDescription).
    """

    name: str
    text: str
    roi_type: str
    color: tuple[int, int, int]
    model: str | None = None
    min_score: float = 0.5
    keep: str = "largest"
    max_instances: int = 3
    description: str | None = None


@dataclass
class Protocol:
    """A validated autoseg protocol.

    Attributes:
        name: protocol name (goes into report.json and the RTSTRUCT's description).
        structures: the structures, in output order.
        modalities: modalities the protocol is meant for (preprocessing names: "ct", "mri", ...); empty = any.
        strategy: "propagate" (detect on probe slices, propagate each instance in 3D) or "every_slice" (detect on
            every axial slice, 3D connected components are the instances).
        probe_slices: number of evenly spaced axial slices searched by the propagate strategy.
        propagation: "auto" (memory when the model has a video tracker, else centroid), "memory", "centroid", "box",
            "medsam", "box3d" (see :mod:`OncoSegLib.propagation`).
        window: CT window (low, high) in HU, None = the preprocessing default.
        low_confidence_score: an instance scoring below this is flagged low-confidence in the report.
        source: the file it was read from ("" when built in code).
    """

    name: str
    structures: list[StructureSpec]
    modalities: list[str] = field(default_factory=list)
    strategy: str = "propagate"
    probe_slices: int = 8
    propagation: str = "auto"
    window: tuple[float, float] | None = None
    low_confidence_score: float = 0.6
    description: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (what report.json records)."""
        d = asdict(self)
        d["structures"] = [asdict(s) for s in self.structures]
        return d


def _err(where: str, message: str, hint: str | None = None) -> InputError:
    return InputError(f"protocol {where}: {message}", hint)


def _number(value: Any, where: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(where, f"must be a number, got {value!r}")
    v = float(value)
    if not lo <= v <= hi:
        raise _err(where, f"must lie in [{lo:g}, {hi:g}], got {v:g}")
    return v


def _integer(value: Any, where: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _err(where, f"must be an integer >= {lo}, got {value!r}")
    return int(value)


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    v = str(value).strip().lower()
    if v not in choices:
        raise _err(where, f"unknown value {value!r}", f"use one of: {', '.join(choices)}")
    return v


def _color(value: Any, where: str) -> tuple[int, int, int]:
    from OncoSegLib.export.roi import parse_color

    if isinstance(value, (list, tuple)):
        if len(value) != 3 or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255
                                      for c in value):
            raise _err(where, f"colour {list(value)} is not three integers 0-255", "write [R, G, B] or '#RRGGBB'")
        return (int(value[0]), int(value[1]), int(value[2]))
    try:
        return parse_color(str(value))
    except InputError as exc:
        raise _err(where, exc.message, exc.hint) from None


def _unknown_keys(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        import difflib

        hints = []
        for k in extra:
            close = difflib.get_close_matches(str(k), sorted(allowed), n=1)
            hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise _err(where, f"unknown key(s) {', '.join(hints)}", f"allowed keys: {', '.join(sorted(allowed))}")


def _structure(d: Any, n: int, used: set[str]) -> StructureSpec:
    from OncoSegLib.export.roi import DEFAULT_COLORS, normalise_type

    where = f"structures[{n}]"
    if not isinstance(d, Mapping):
        raise _err(where, f"must be a mapping with at least 'name' and 'text', got {type(d).__name__}")
    _unknown_keys(d, _STRUCT_KEYS, where)
    if "color" in d and "colour" in d:
        raise _err(where, "give either 'color' or 'colour', not both")
    name = d.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _err(f"{where}.name", "is required and must be non-empty text")
    name = name.strip()
    where = f"structures[{n}] ('{name}')"
    if len(name) > 64:
        raise _err(f"{where}.name", f"has {len(name)} characters; DICOM allows 64", "shorten it (<= 16 advisable)")
    if "\\" in name:
        raise _err(f"{where}.name", "contains a backslash", "remove it")
    if len(name) > MAX_SAFE_NAME:
        warnings.warn(f"structure name '{name}' has {len(name)} characters; some planning systems cut ROI names at "
                      f"{MAX_SAFE_NAME}", UserWarning, stacklevel=4)
    if name.lower() in used:
        raise _err(f"{where}.name", "is used twice", "give every structure its own name")
    used.add(name.lower())
    text = d.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _err(f"{where}.text", "is required: the text prompt, e.g. 'liver'")
    try:
        roi_type = normalise_type(d.get("type"), name)
    except InputError as exc:
        raise _err(f"{where}.type", exc.message, exc.hint) from None
    raw_color = d.get("color", d.get("colour"))
    color = DEFAULT_COLORS[n % len(DEFAULT_COLORS)] if raw_color is None else _color(raw_color, f"{where}.color")
    model = d.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise _err(f"{where}.model", "must be a registry name or a model path")
    min_score = _number(d.get("min_score", 0.5), f"{where}.min_score", 0.0, 1.0)
    keep = _choice(d.get("keep", "largest"), f"{where}.keep", KEEP)
    max_inst = _integer(d.get("max_instances", DEFAULT_MAX_INSTANCES[keep]), f"{where}.max_instances", 1)
    desc = d.get("description")
    return StructureSpec(name=name, text=text.strip(), roi_type=roi_type, color=tuple(color),  # type: ignore[arg-type]
                         model=model.strip() if model else None, min_score=min_score, keep=keep,
                         max_instances=max_inst, description=None if desc is None else str(desc))


def parse_protocol(data: Any, source: str = "") -> Protocol:
    """Validate a protocol given as a dictionary (the parsed YAML/JSON) and return a :class:`Protocol`."""
    from OncoSegLib.preprocessing import canonical_modality

    if not isinstance(data, Mapping):
        raise _err("file" if not source else source, "must be a mapping with a 'structures' list",
                   "see configs/autoseg_example.yaml")
    _unknown_keys(data, _TOP_KEYS, "top level")
    structs = data.get("structures")
    if not isinstance(structs, list) or not structs:
        raise _err("structures", "must be a non-empty list", "list at least one structure with a name and a text")
    used: set[str] = set()
    structures = [_structure(d, n, used) for n, d in enumerate(structs)]
    mods_raw = data.get("modalities", [])
    if isinstance(mods_raw, str):
        mods_raw = [mods_raw]
    if not isinstance(mods_raw, list):
        raise _err("modalities", "must be a list such as [ct]")
    mods = []
    for m in mods_raw:
        try:
            mods.append(canonical_modality(m))
        except InputError as exc:
            raise _err("modalities", exc.message, exc.hint) from None
    window = data.get("window")
    if window is not None:
        if (not isinstance(window, (list, tuple)) or len(window) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in window)
                or not float(window[0]) < float(window[1])):
            raise _err("window", f"must be [low, high] HU with low < high, got {window!r}")
        if mods and mods != ["ct"]:
            raise _err("window", "a CT window needs modalities: [ct]")
        window = (float(window[0]), float(window[1]))
    name = data.get("name") or (Path(source).stem if source else "protocol")
    return Protocol(
        name=str(name), structures=structures, modalities=mods,
        strategy=_choice(data.get("strategy", "propagate"), "strategy", STRATEGIES),
        probe_slices=_integer(data.get("probe_slices", 8), "probe_slices", 1),
        propagation=_choice(data.get("propagation", "auto"), "propagation", PROPAGATION),
        window=window,
        low_confidence_score=_number(data.get("low_confidence_score", 0.6), "low_confidence_score", 0.0, 1.0),
        description=str(data.get("description") or ""), source=source)


def load_protocol(path: str | os.PathLike | Protocol | Mapping[str, Any]) -> Protocol:
    """Read and validate a protocol file (``.yaml``/``.yml``/``.json``); a Protocol or a dict passes through."""
    if isinstance(path, Protocol):
        return path
    if isinstance(path, Mapping):
        return parse_protocol(path)
    p = Path(path)
    if not p.is_file():
        raise InputError(f"protocol file not found: {p}", "pass --protocol PROTOCOL.yaml (see configs/)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read protocol {p}: {exc}") from exc
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - json.JSONDecodeError / yaml.YAMLError: one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"protocol {p} is not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: "
                         f"{first}", "fix the syntax (indentation, quotes, colons)") from None
    try:
        return parse_protocol(data, source=str(p))
    except InputError as exc:
        raise InputError(f"{p}: {exc.message}", exc.hint) from None


__all__ = ["Protocol", "StructureSpec", "load_protocol", "parse_protocol", "STRATEGIES", "KEEP", "PROPAGATION"]
