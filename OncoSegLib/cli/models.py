"""``oncoseg models list|download NAME|import PATH [--name N]``: manage SAM3 / Onco-Seg checkpoints."""

from __future__ import annotations

import argparse
import json

from OncoSegLib.models import registry


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list, download or import models (works offline with import)",
                              description="Manage models. Storage: $ONCOSEG_HOME or the user cache "
                                          "(~/.cache/oncoseg); kept across Slicer upgrades.")
    sub = p.add_subparsers(dest="models_cmd", metavar="COMMAND")
    ls = sub.add_parser("list", help="list known models and whether they are available offline")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    dl = sub.add_parser("download", help="download a registry model (and its base) into the user cache")
    dl.add_argument("name", help="registry name (see `oncoseg models list`) or org/name repo id")
    dl.add_argument("--token", default=None, help="Hugging Face token (default: HF_TOKEN / `hf auth login`)")
    im = sub.add_parser("import", help="import a model folder or checkpoint file (offline sites)")
    im.add_argument("path", help="model folder (config.json + *.safetensors, or a LoRA adapter) or .ckpt/.pt file")
    im.add_argument("--name", default=None, help="name to register it under (default: folder name)")
    im.add_argument("--base", default=None, help="for adapters: the base model name (e.g. sam3)")
    im.add_argument("--modalities", default=None, help="comma-separated modalities it is meant for")
    im.add_argument("--overwrite", action="store_true", help="replace an earlier import of the same name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cmd = getattr(args, "models_cmd", None)
    if cmd == "list":
        rows = registry.list_models()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'name':<10} {'local':<5} {'gated':<5} {'base':<6} {'modalities':<28} source")
        for r in rows:
            print(f"{r['name']:<10} {'yes' if r['local'] else 'no':<5} {'yes' if r['gated'] else 'no':<5} "
                  f"{r['base'] or '-':<6} {','.join(r['modalities'])[:28]:<28} {r['source']}")
        print(f"\nstorage: {registry.oncoseg_home()}")
        return 0
    if cmd == "download":
        resolved = registry.download(args.name, token=args.token)
        print(f"{args.name}: {resolved.path}")
        if resolved.base is not None:
            print(f"base {resolved.base.name}: {resolved.base.path}")
        return 0
    if cmd == "import":
        mods = [m.strip() for m in args.modalities.split(",") if m.strip()] if args.modalities else None
        entry = registry.import_model(args.path, name=args.name, modalities=mods, base=args.base,
                                      overwrite=args.overwrite)
        print(f"imported '{entry.name}' -> {entry.path} ({len(entry.sha256)} files, SHA-256 recorded)")
        return 0
    print("usage: oncoseg models {list,download,import} ... (see --help)")
    return 2
