"""pytest configuration shared by every test area.

Tests never touch the network: the Hugging Face hub runs offline and any cache the tests use is one they made.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ONCOSEG_LOG_LEVEL", "WARNING")

try:  # one torch thread per test process: tests must not oversubscribe the 2 CI cores
    import torch

    torch.set_num_threads(1)  # tiny test models gain nothing from a second thread
except ImportError:  # pragma: no cover
    pass


# ---------------------------------------------------------------- LiteMedSAM real weights (one fixture for all tests)
# The store is resolved now, at import, so tests that later point ONCOSEG_HOME at a temporary folder still find it.
# CI fetches the weights first (`python3 -m OncoSegLib models download litemedsam`); there a missing store fails.
import pytest  # noqa: E402

from OncoSegLib.models.litemedsam import weights as _litemedsam_weights  # noqa: E402

LITEMEDSAM_STORE = _litemedsam_weights.store_dir()


@pytest.fixture(scope="session")
def litemedsam_model():
    """A :class:`LiteMedSamPredictor` with the real weights (CPU, strict load, SHA-256 re-verified)."""
    if not _litemedsam_weights.is_installed(LITEMEDSAM_STORE):
        msg = (f"LiteMedSAM weights are not in {LITEMEDSAM_STORE}: run "
               "`python3 -m OncoSegLib models download litemedsam`")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    from OncoSegLib.models.litemedsam.predictor import load_litemedsam

    return load_litemedsam(LITEMEDSAM_STORE, device="cpu")
