"""Headless auto-segmentation for radiotherapy "AI nodes": CT in, organs-at-risk out as DICOM RTSTRUCT.

- :mod:`.protocol`: ``load_protocol`` — the structure list (YAML/JSON) with validation.
- :mod:`.pipeline`: ``run_autoseg(series_dir, protocol, model, out_dir=...) -> AutosegResult``.
- :mod:`.watch`: ``watch_inbox`` — poll an inbox folder, process each complete series once.
See docs/autoseg.md.
"""

from OncoSegLib.autoseg.protocol import Protocol, StructureSpec, load_protocol, parse_protocol

__all__ = ["Protocol", "StructureSpec", "load_protocol", "parse_protocol", "run_autoseg", "AutosegResult",
           "watch_inbox", "WatchConfig"]


def __getattr__(name: str):  # lazy: the pipeline imports numpy/scipy/pydicom only when used
    if name in ("run_autoseg", "AutosegResult", "StructureResult", "InstanceResult"):
        from OncoSegLib.autoseg import pipeline

        return getattr(pipeline, name)
    if name in ("watch_inbox", "WatchConfig", "JobOutcome"):
        from OncoSegLib.autoseg import watch

        return getattr(watch, name)
    raise AttributeError(name)
