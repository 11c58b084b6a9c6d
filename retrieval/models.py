"""Loading models the way every stage does: on the GPU when there is one, from local folders only (never a
hub, even for a name that looks like a hub id), without per-load progress bars in the stage output."""

from __future__ import annotations

import os


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def offline_hub() -> None:
    """Before a transformers / sentence-transformers load: no network, no progress bars."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging

    disable_progress_bars()
    logging.disable_progress_bar()
