"""pytest configuration shared by every test area.

Tests never touch the network: the Hugging Face hub runs offline and any cache the tests use is one they made.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ONCOSEG_LOG_LEVEL", "WARNING")

try:  # keep torch to the 2 cores CI has; tests must not oversubscribe
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
except ImportError:  # pragma: no cover
    pass
