"""What a modality is to MultiJEPA, and the registry of them.

A `Modality` says, in one place, everything the rest of the package needs to know about one kind
of input: how a value is decoded and checked (bad input raises `DataError`, one line), how decoded
samples become a batch, its token grid and JEPA masks, how its encoder turns the batch into tokens,
and whether its values are files that an index serves. Core, collator, objective, retrieval, serve
and the CLI ask the registry (`get_modality`, `registered_modalities`) instead of naming modalities.
The built-in image, text and audio are registered the same way (`multijepa/modality/<name>.py`).

    from multijepa.modality import Modality, register_modality

    @register_modality
    class Depth(Modality):
        name = "depth"
        ...

A modality defined outside this package is known to the `multijepa` commands once its module is
imported: name the module in the environment (MULTIJEPA_PLUGINS=my_package.depth, several separated
by commas) or declare it as an entry point of the group "multijepa.modalities" in its package.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # torch is imported where it is used: the CLI reads the registry to build --help
    import torch
    from torch import nn

_REGISTRY: dict[str, Modality] = {}
_PLUGINS_LOADED = False


class Modality:
    """One modality's definition. Subclasses set `name` and override what differs from the defaults
    (a value decoded by `decode`, batches stacked along a new first axis, no clips)."""

    name: ClassVar[str] = ""
    # values are files (a path in a manifest, bytes in shards): an index keeps their paths and the
    # search page serves them; False for values that are the data itself (text)
    media: ClassVar[bool] = True
    # file name endings that an upload of this modality may have (the search page)
    suffixes: ClassVar[tuple[str, ...]] = ()
    # the webdataset member name of a value given as bytes (a file keeps its own suffix): png, wav, txt
    shard_member: ClassVar[str] = "bin"
    # FLIP's masked binding applies (model.<name>.bind_mask_ratio): tokens can be dropped at random
    bind_masking: ClassVar[bool] = False
    # the settings dataclass of `model.<name>` (a modality that is not built in): it needs at least
    # `encoder` (an EncoderConfig) and may have `freeze`, `bind_mask_ratio` and `mask`; what it holds
    # is handed to the methods below as cfg.<name> of the model config
    config_class: ClassVar[type | None] = None
    # the modalities whose values `derive` can take one of this modality's from (audio: video)
    derived_from: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ data

    def processor(self, cfg: Any, tokenizer: Any = None) -> Any:
        """The per-run preprocessing object of this modality, from the model config (cfg.<name>)."""
        return None

    def decode(self, processor: Any, value: Any, base_dir: str | Path | None = None) -> Any:
        """One raw value -> a decoded sample (what the loader may cache). Bad input: DataError."""
        raise NotImplementedError(f"modality '{self.name}' does not say how to decode a value")

    def finish(self, processor: Any, decoded: Any, train: bool, rng: torch.Generator | None = None) -> Any:
        """A decoded sample -> the model input: where a random window or crop is drawn (at random
        from `rng` in training, deterministically at evaluation). By default the sample itself."""
        return decoded

    def needs_finish(self, decoded: Any) -> bool:
        """Whether `finish` still has work to do on a sample (the collator calls it per batch, seeded)."""
        return False

    def derive(self, processor: Any, values: dict[str, Any], base_dir: str | Path | None = None) -> Any:
        """A raw value of this modality taken from the row's values of other modalities, for a row
        that has none of its own, where the run asks for it (`data.audio_from_video`: a video file's
        sound track); None when there is nothing to take."""
        return None

    def stack(self, inputs: list) -> dict[str, torch.Tensor]:
        """Model inputs of the rows that have this modality -> {"x": (B_m, ...)} and any other
        tensors the masker or encoder needs (text: "lengths")."""
        import torch

        return {"x": torch.stack(inputs)}

    def batch(self, processor: Any, values: list) -> torch.Tensor:
        """Raw values -> one unmasked evaluation batch, as the encoder takes it."""
        return self.stack([self.finish(processor, self.decode(processor, v), train=False) for v in values])["x"]

    def clips(self, x: torch.Tensor) -> int:
        """How many clips per sample an evaluation batch holds (0: one input per sample). Their
        embeddings are averaged (ImageBind's multi-clip evaluation)."""
        return 0

    def raw_features(self, processor: Any, x: torch.Tensor) -> torch.Tensor:
        """An evaluation batch -> (B, F) with no network: the probes' floor ("the inputs, no encoder").
        By default the flattened input (clips averaged)."""
        if self.clips(x):
            x = x.float().mean(1)
        return x.flatten(1).float()

    # ------------------------------------------------------------------ tokens and masks

    def grid(self, cfg: Any) -> tuple[int, ...]:
        """The token grid of an input: (length,), (H, W) or (T, H, W)."""
        raise NotImplementedError(f"modality '{self.name}' does not say its token grid")

    def patch_shape(self, cfg: Any) -> tuple[int, ...] | None:
        """Input units (pixels, mel bins, frames) per token along each axis of `grid`, where the tokens
        are patches of an input that can be resized (CLIPA's `model.<name>.bind_scale`); else None."""
        return None

    def masker(self, cfg: Any) -> Any:
        """The JEPA masker of this modality: called (count or `mask_arg`, generator, row_keys) ->
        (context (B, Nc), targets (B, K, Nt))."""
        raise NotImplementedError(f"modality '{self.name}' has no JEPA masks")

    def mask_arg(self, entry: dict) -> Any:
        """What the masker is called with for a sub-batch: its size, or (text) its lengths."""
        return entry["x"].shape[0]

    def tower(self, spec: Any, cfg: Any) -> nn.Module:
        """The open_clip/timm encoder that `model.<name>.pretrained` (`spec`, a parsed `TowerSpec`)
        names, with random weights: the modality decides which tower class serves it."""
        raise self.no_tower(spec)

    def no_tower(self, spec: Any) -> Exception:
        from modalities.errors import DataError

        return DataError(f"model.{self.name}.pretrained: {spec.library} towers do not serve the {self.name} modality")

    def settle_tower(self, section: Any, facts: dict, key: str) -> None:
        """Write into model.<name> (`section`) what a pretrained tower decides for this modality (its
        grid, preprocessing, tokenizer), from `tower_facts`; `key` names the setting in errors."""
        from ..errors import ConfigError

        raise ConfigError(f"{key}: the {self.name} modality cannot start from an open_clip/timm tower")

    def tokens(self, cfg: Any, vocab_size: int | None = None) -> nn.Module:
        """The module that turns a batch into positioned tokens: (B, ...) -> ((B, N, D), valid or None),
        with a `grid` and a `num_tokens`. The encoder's blocks (model.<name>.encoder) come after it."""
        raise NotImplementedError(f"modality '{self.name}' does not say how to make tokens")


def register_modality(cls: type[Modality]) -> type[Modality]:
    """Class decorator: make `cls` a modality every part of MultiJEPA knows by `cls.name`."""
    if not cls.name or not cls.name.isidentifier():
        raise ValueError(f"{cls.__name__}.name must be an identifier, got {cls.name!r}")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister_modality(name: str) -> None:
    """Forget a registered modality (tests that register their own)."""
    _REGISTRY.pop(name, None)


def _load_plugins() -> None:
    """Import the modules that register modalities from outside (MULTIJEPA_PLUGINS, entry points), once."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for name in filter(None, (n.strip() for n in os.environ.get("MULTIJEPA_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(f"MULTIJEPA_PLUGINS names '{name}', which cannot be imported: {e}") from e
    for ep in entry_points(group="multijepa.modalities"):
        ep.load()


def get_modality(name: str) -> Modality:
    _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown modality '{name}' (registered: {', '.join(_REGISTRY)}; a modality of "
                         "your own is known once its module is imported, see MULTIJEPA_PLUGINS)") from None


def registered_modalities() -> list[str]:
    """Names of the registered modalities, in registration order (the built-ins first)."""
    _load_plugins()
    return list(_REGISTRY)


def is_media(name: str) -> bool:
    """Whether `name` is a registered modality whose values are files (an index serves them)."""
    return name in registered_modalities() and _REGISTRY[name].media


def media_modalities() -> list[str]:
    """The registered modalities whose values are files: what captioning describes, uploads carry."""
    return [m for m in registered_modalities() if _REGISTRY[m].media]
