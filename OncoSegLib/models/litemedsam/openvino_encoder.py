"""LiteMedSAM's image encoder compiled by OpenVINO for the CPU (optional: ``pip install 'oncoseg[openvino]'``).

Why: the encoder is 75 GFLOP per 256 x 256 slice and bound by the CPU's float32 arithmetic. PyTorch eager (the
reference implementation) reaches ~80 GFLOP/s on two cores here, OncoSeg's PyTorch fast path (:mod:`.fast`) ~160,
OpenVINO's CPU plugin ~230 (measured: ``benchmarks/lite.py``; docs/engine.md). Same float32 maths: the embedding
differs from the eager network's by ~4e-6.

How:

1. the strictly loaded network's encoder (BatchNorm folded, plain attention) is captured with ``torch.export`` and
   converted by ``openvino.convert_model`` into OpenVINO IR, weights kept in float32 (``compress_to_fp16=False``);
2. the IR is checked against the PyTorch encoder on a fixed input (max |difference| <= :data:`PARITY_ATOL`), then
   cached in ``<cache_dir>/<key>/`` (``encoder.xml``, ``encoder.bin``, ``manifest.json`` with their SHA-256), the key
   naming the IR layout version, the OpenVINO version and a digest of the network's tensors: other weights or another
   OpenVINO never reuse it. Later processes verify the two hashes on the bytes they hand to OpenVINO (no re-read
   after the check) and skip the 4 s conversion. A cache that cannot be written costs only the conversion;
3. compiled for the CPU with ``INFERENCE_NUM_THREADS`` = torch's thread count and precision ``f32`` (default) or
   ``bf16`` (opt-in: AMX / AVX512-BF16 CPUs run it ~2.5x faster again, but the embedding moves by ~3e-2 and masks
   by boundary pixels: measured mask Dice in docs/engine.md).

Frames: input (B, 3, 256, 256) float32 model pixels in [0, 1]; output (B, 256, 64, 64) float32, as
:meth:`LiteMedSAM.encode`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from OncoSegLib.errors import ModelError
from OncoSegLib.models.litemedsam.model import LiteMedSAM

log = logging.getLogger(__name__)

#: bump when the exported graph changes (the cache key includes it)
IR_LAYOUT = 1
PARITY_ATOL = 1e-3
INSTALL_HINT = "install it with `python3 -m pip install 'oncoseg[openvino]'` (or `pip install openvino`)"
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def openvino_version() -> str | None:
    """The installed OpenVINO version, or None when it cannot be imported."""
    try:
        import openvino as ov
    except Exception:  # noqa: BLE001 - any import failure (missing, broken wheel) means "not available"
        return None
    return str(getattr(ov, "__version__", "unknown"))


def tensor_digest(net: LiteMedSAM) -> str:
    """SHA-256 over the image encoder's tensors (names, shapes, float32 bytes, in name order): the cache key's weights part."""
    h = hashlib.sha256()
    for name, t in sorted(net.image_encoder.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _parity_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(20261201)
    return torch.rand(1, 3, 256, 256, generator=g)


def _export_model(net: LiteMedSAM) -> Any:
    """The OpenVINO model (``ov.Model``) of ``net``'s encoder, float32 (torch.export -> openvino.convert_model)."""
    import openvino as ov

    from OncoSegLib.models.litemedsam.fast import FastOptions, optimise

    plain = optimise(net.to("cpu"), FastOptions(channels_last=False, fused_attention=False, fused_gelu=False))
    with torch.no_grad(), warnings.catch_warnings():
        # torch.export's own deprecation notice (LeafSpec) is not the user's business: keep it off their screen
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\..*|copyreg")
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
        program = torch.export.export(plain.image_encoder.eval(), (_parity_input(),))
        return ov.convert_model(program)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_cache(model: Any, dest: Path, manifest: dict[str, Any]) -> None:
    """Save ``model`` as IR into ``dest`` (staged beside it, then renamed into place)."""
    import openvino as ov

    from OncoSegLib.io.atomic import atomic_write_text, make_temp_dir, replace_dir

    staging = make_temp_dir(dest.parent, f".{dest.name}.")
    try:
        ov.save_model(model, str(staging / "encoder.xml"), compress_to_fp16=False)
        manifest = dict(manifest, xml_sha256=_sha256((staging / "encoder.xml").read_bytes()),
                        bin_sha256=_sha256((staging / "encoder.bin").read_bytes()))
        atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2))
        replace_dir(staging, dest)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise


def _read_cache(folder: Path) -> Any | None:
    """The cached ``ov.Model`` in ``folder`` when its files match the manifest's hashes, else None."""
    import openvino as ov

    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        xml = (folder / "encoder.xml").read_bytes()
        weights = (folder / "encoder.bin").read_bytes()
    except (OSError, ValueError):
        return None
    if _sha256(xml) != manifest.get("xml_sha256") or _sha256(weights) != manifest.get("bin_sha256"):
        log.warning("OpenVINO encoder cache %s does not match its manifest: rebuilding it", folder)
        return None
    return ov.Core().read_model(model=xml.decode("utf-8"),
                                weights=ov.Tensor(np.frombuffer(weights, dtype=np.uint8).copy()))


class OpenVinoEncoder:
    """A compiled OpenVINO encoder with :meth:`encode` like :meth:`LiteMedSAM.encode` (CPU only, thread-safe).

    Build it with :func:`build_openvino_encoder`. ``name`` says what runs (reports, benchmarks).
    """

    def __init__(self, compiled: Any, precision: str, threads: int, cache: str):
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()
        self.precision = precision
        self.threads = threads
        self.cache = cache
        self.name = f"openvino {str(openvino_version()).split('-')[0]} {precision}, {threads} thread(s)"

    def encode(self, image256: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64) float32 embedding (one inference per slice)."""
        x = image256.detach().to("cpu", torch.float32).contiguous().numpy()
        out = []
        with self._lock:
            for b in range(x.shape[0]):
                res = self._request.infer([x[b:b + 1]])
                out.append(np.array(res[0], dtype=np.float32, copy=True))  # the request reuses its output buffer
        return torch.from_numpy(np.concatenate(out, axis=0))

    def to(self, device: str | torch.device) -> "OpenVinoEncoder":
        if torch.device(device).type != "cpu":
            raise ModelError(f"the OpenVINO encoder runs on the CPU, not {device}",
                             "use encoder='torch' for a GPU")
        return self


def build_openvino_encoder(net: LiteMedSAM, precision: str = "fp32", cache_dir: str | Path | None = None,
                           threads: int | None = None) -> OpenVinoEncoder:
    """Compile ``net``'s image encoder with OpenVINO (see the module docstring). ``cache_dir``: where converted IR
    is kept between processes (None: convert in memory every time, ~4 s). ``threads``: default torch's count.

    Raises :class:`ModelError` when OpenVINO is missing, the conversion fails or the compiled encoder does not match
    the PyTorch one.
    """
    if precision not in PRECISIONS:
        raise ModelError(f"encoder precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
    version = openvino_version()
    if version is None:
        raise ModelError("OpenVINO is not installed", INSTALL_HINT)
    import openvino as ov

    threads = int(threads or torch.get_num_threads())
    digest = tensor_digest(net)
    key = f"ir{IR_LAYOUT}-ov{re.sub(r'[^0-9A-Za-z._-]+', '_', version)}-{digest[:16]}"
    folder = Path(cache_dir) / key if cache_dir is not None else None
    model = _read_cache(folder) if folder is not None else None
    where = f"cache {folder}" if model is not None else "converted now"
    if model is None:
        try:
            model = _export_model(net)
        except Exception as exc:  # noqa: BLE001 - torch.export / OpenVINO frontends raise many types
            raise ModelError(f"OpenVINO could not convert the LiteMedSAM encoder: {type(exc).__name__}: {exc}",
                             "use encoder='torch'") from exc
        _check_parity(ov.Core().compile_model(model, "CPU", _config("fp32", threads)), net)
        if folder is not None:
            try:
                _write_cache(model, folder, {"layout": IR_LAYOUT, "openvino": version,
                                             "encoder_sha256": digest})
                where = f"converted now, cached in {folder}"
            except OSError as exc:  # read-only store: the next process converts again
                log.info("OpenVINO encoder not cached (%s): %s", folder, exc)
    compiled = ov.Core().compile_model(model, "CPU", _config(precision, threads))
    log.debug("LiteMedSAM encoder: OpenVINO %s %s (%s)", version, precision, where)
    return OpenVinoEncoder(compiled, precision, threads, where)


def _config(precision: str, threads: int) -> dict[str, Any]:
    return {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY"}


def _check_parity(compiled: Any, net: LiteMedSAM) -> float:
    """Max |OpenVINO - PyTorch| embedding difference on a fixed input; ModelError above :data:`PARITY_ATOL`."""
    x = _parity_input()
    with torch.inference_mode():
        want = net.to("cpu").encode(x).numpy()
    got = np.asarray(compiled([x.numpy()])[0])
    err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not err <= PARITY_ATOL:
        raise ModelError(f"the OpenVINO encoder differs from the PyTorch one by {err:.3g} (limit {PARITY_ATOL})",
                         "use encoder='torch' and report the OpenVINO version")
    return err


def default_cache_dir(store: str | Path | None) -> Path | None:
    """Where converted IR is cached: ``<store>/openvino`` when the store is writable, else None (no cache)."""
    if store is not None:
        cand = Path(store) / "openvino"
        try:
            cand.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=cand):
                pass
            return cand
        except OSError:
            pass
    return None
