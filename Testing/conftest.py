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
