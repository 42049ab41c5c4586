import pytest

from multijepa.config import ConfigError, load_config, save_config


@pytest.mark.parametrize("name", ["demo", "tiny", "base", "imagebind"])
def test_shipped_configs_load_by_name(name):
    cfg = load_config(name)
    assert cfg.model.modalities


def test_overrides_are_parsed_as_yaml():
    cfg = load_config("tiny", ["optim.lr=3e-3", "model.modalities=[image,text]", "data.batch_size=4", "loss.bind_anchor=image"])
    assert cfg.optim.lr == pytest.approx(3e-3)
    assert cfg.model.modalities == ["image", "text"]
    assert cfg.data.batch_size == 4 and cfg.loss.bind_anchor == "image"


@pytest.mark.parametrize(
    "override, key",
    [("model.imagee.size=3", "model.imagee"), ("optim.lrr=1", "optim.lrr"), ("model.image.encoder.wdth=3", "model.image.encoder.wdth")],
)
def test_unknown_keys_are_named(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config("tiny", [override])


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="data.batch_size"):
        load_config("tiny", ["data.batch_size=many"])
    with pytest.raises(ConfigError, match="model.modalities"):
        load_config("tiny", ["model.modalities=[image,smell]"])
    with pytest.raises(ConfigError, match="no config named"):
        load_config("nope")
    with pytest.raises(ConfigError, match="model.audio.mask: full_height_prob \\+ full_width_prob = 1.25"):
        load_config("demo", ["model.audio.mask.full_width_prob=0.5"])  # full_height_prob is 0.75


def test_partly_given_section_keeps_its_field_defaults():
    # the audio mask's default is BlockMaskConfig(full_height_prob=0.75); overriding one key of it
    # must not fall back to the class default (0.0) for the others
    cfg = load_config("demo", ["model.audio.mask.num_targets=2"])
    assert cfg.model.audio.mask.num_targets == 2 and cfg.model.audio.mask.full_height_prob == 0.75
    assert load_config("demo").model.audio.mask.full_height_prob == 0.75


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("demo", ["optim.lr=0.002"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
