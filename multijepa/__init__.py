"""MultiJEPA: joint-embedding predictive architectures over text, image and audio.

    from multijepa import MultiJEPA
    model = MultiJEPA.from_pretrained("runs/demo")
"""

import os

# OpenMP threads that wait for work spin on a core by default: beside any other busy process that
# made training 10-20x slower (issue 19). Passive waiting yields the core. Set before torch is
# imported (libgomp reads it when it loads), and only when the user has not chosen a policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.2.0"
__all__ = ["MultiJEPA", "load_config", "pretrain"]


def __getattr__(name: str):
    # lazy, so `multijepa --help` does not pay for importing torch, timm and open_clip
    if name == "MultiJEPA":
        from .model import MultiJEPA

        return MultiJEPA
    if name == "load_config":
        from .config import load_config

        return load_config
    if name == "pretrain":
        from .train.loop import pretrain

        return pretrain
    raise AttributeError(f"module 'multijepa' has no attribute {name!r}")
