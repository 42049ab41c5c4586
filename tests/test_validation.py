"""Every numeric settings key has a range and every choice key its values, checked as the settings
load: a bad value is one ConfigError line naming the key, before anything heavy starts."""

from __future__ import annotations

import dataclasses
import types
import typing

import pytest

from multijepa.config import Config, ConfigError, Range, SourceConfig, load_config
from multijepa.retrieval.index import IndexConfig, index_config
from multijepa.vqa.config import VQAConfig, load_vqa_config

LOADERS = {Config: lambda o: load_config("tiny", o), VQAConfig: lambda o: load_vqa_config("vqa_tiny", o),
           IndexConfig: lambda o: index_config(o)}


def _inner(tp):
    """Optional[X] -> X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) else tp


def _keys(cls, prefix=""):
    """(owning class, field name, dotted key, type) of every leaf field, nested settings included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = _inner(hints[f.name]), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from _keys(tp, key + ".")
        else:
            yield cls, f.name, key, tp


def _numeric(tp) -> bool:
    if tp in (int, float):
        return True
    return typing.get_origin(tp) is tuple and all(a in (int, float) for a in typing.get_args(tp))


def _bad_values(rng: Range, tp, default):
    """Values just outside the range (a tuple gets them in every item), and a reversed ordered pair."""
    out = []
    if rng.lo is not None:
        out.append(rng.lo if rng.lo_open else rng.lo - 1)
    if rng.hi is not None:
        out.append(rng.hi if rng.hi_open else rng.hi + 1)
    if typing.get_origin(tp) is tuple:
        out = [[v] * len(typing.get_args(tp)) for v in out]
        if rng.ordered and default[0] != default[1]:
            out.append(sorted(default, reverse=True))
    return out


CASES = [(root, cls, name, key, tp) for root in LOADERS for cls, name, key, tp in _keys(root)]


@pytest.mark.parametrize("root,cls,name,key,tp", [c for c in CASES if _numeric(c[4])], ids=lambda x: x if isinstance(x, str) else "")
def test_every_numeric_key_has_a_range_and_keeps_to_it(root, cls, name, key, tp):
    ranges = getattr(cls, "RANGES", {})
    assert name in ranges, f"{cls.__name__}.{name} ({key}) has no Range in {cls.__name__}.RANGES"
    default = getattr(cls(), name)
    for bad in _bad_values(ranges[name], tp, default):
        with pytest.raises(ConfigError) as e:
            LOADERS[root]([f"{key}={bad}"])
        msg = str(e.value)
        assert f"'{key}'" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("root,cls,name,key,tp", [c for c in CASES if c[2] in getattr(c[1], "CHOICES", {})],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_every_choice_key_refuses_other_values(root, cls, name, key, tp):
    with pytest.raises(ConfigError) as e:
        LOADERS[root]([f"{key}=no_such_choice"])
    assert f"'{key}'" in str(e.value) and "one of" in str(e.value)


def test_source_settings_are_checked_in_the_list():
    assert set(SourceConfig.RANGES) == {"weight"}
    for bad in ("{path: a.jsonl, weight: 0}", "{path: a.jsonl, format: tsv}"):
        with pytest.raises(ConfigError, match=r"'data\.sources\[0\]\.(weight|format)'"):
            load_config("tiny", [f"data.sources=[{bad}]"])


def test_cross_key_checks():
    with pytest.raises(ConfigError, match="model.image.encoder.width=100 must be a multiple of model.image.encoder.heads=3"):
        load_config("tiny", ["model.image.encoder.width=100", "model.image.encoder.heads=3"])
    assert load_config("tiny", ["train.device=cuda:1"]).train.device == "cuda:1"


def test_shipped_configs_are_within_range():
    for name in ("base", "demo", "tiny", "mixed", "emergent", "imagebind"):
        load_config(name)
    for name in ("vqa_demo", "vqa_tiny"):
        load_vqa_config(name)
