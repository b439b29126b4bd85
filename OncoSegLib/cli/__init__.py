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

from OncoSegLib import __version__
from OncoSegLib.errors import OncoSegError

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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
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
        print(f"oncoseg {args.verb}: internal error: {type(exc).__name__}: {exc} "
              "(rerun with ONCOSEG_DEBUG=1 for details and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
