"""The ``oncoseg`` command line.

Each verb lives in its own module ``OncoSegLib/cli/<verb>.py`` exposing ``register(subparsers)``, which adds its
parser and sets ``func=run`` (``run(args) -> int``). Errors reach the user as one line and a non-zero exit, never a
traceback (set ``ONCOSEG_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from OncoSegLib import __version__
from OncoSegLib.errors import OncoSegError, as_oncoseg_error

# Verb modules in the order `oncoseg --help` lists them. A module that is absent is skipped.
VERB_MODULES = ["demo", "convert", "metrics", "segment", "export", "import_", "models", "train", "evaluate", "autoseg"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oncoseg",
        description="OncoSeg: SAM3 + LoRA segmentation for CT, MRI, PET, US, X-ray, endoscopy and dermoscopy.",
    )
    parser.add_argument("--version", action="version", version=f"oncoseg {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(f"OncoSegLib.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"OncoSegLib.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


#: At most this many distinct library warnings are kept for the end of a run.
MAX_WARNINGS = 20


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # Library warnings (numpy, torch, transformers...) are held back: printed as "warning:" lines after a run that
    # succeeds, dropped when it fails, so that an error is the one line the user sees (ONCOSEG_DEBUG shows them).
    held: list[str] = []

    def hold(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings API
        text = f"{message}"
        if text not in held and len(held) < MAX_WARNINGS:
            held.append(text)

    with warnings.catch_warnings():
        if not os.environ.get("ONCOSEG_DEBUG"):
            warnings.showwarning = hold
        rc = _run(args)
    if rc == 0:
        for text in held:
            print(f"oncoseg {args.verb}: warning: {text}", file=sys.stderr)
    return rc


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except OncoSegError as exc:
        if os.environ.get("ONCOSEG_DEBUG"):
            raise
        print(f"oncoseg {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `oncoseg metrics ... | head`: the reader left; not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        print(f"oncoseg {args.verb}: cancelled", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"oncoseg {args.verb}: error: out of memory — use a smaller volume, crop, or a GPU "
              "(--device cuda)", file=sys.stderr)
        return 3
    except Exception as exc:  # noqa: BLE001 - the CLI promises one line, never a traceback
        if os.environ.get("ONCOSEG_DEBUG"):
            raise
        known = as_oncoseg_error(exc)  # disk full, refused pickle, damaged safetensors: not a bug of ours
        if known is not None:
            print(f"oncoseg {args.verb}: error: {known}", file=sys.stderr)
            return 2
        print(f"oncoseg {args.verb}: internal error: {type(exc).__name__}: {exc} "
              "(rerun with ONCOSEG_DEBUG=1 for details and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
