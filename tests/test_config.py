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
    with pytest.raises(ConfigError, match="model.image.mask.kind' must be one of blocks, random"):
        load_config("demo", ["model.image.mask.kind=grid"])
    with pytest.raises(ConfigError, match="model.audio.mask.random_ratio"):
        load_config("demo", ["model.audio.mask.random_ratio=1"])
    with pytest.raises(ConfigError, match="model.image.mask.random_ratio=0.001 of 36 patches leaves no target"):
        load_config("demo", ["model.image.mask.kind=random", "model.image.mask.random_ratio=0.001"])


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


def test_a_config_extends_another_and_its_relative_paths_start_from_its_folder(tmp_path):
    """`extends:` takes a shipped name or a path relative to the file; relative data paths in a
    config of your own are read from its folder when they are there, else from the current one."""
    from multijepa.config import ConfigError, load_config, to_dict

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pairs.csv").write_text("image,text\n")
    (tmp_path / "base.yaml").write_text("extends: demo\ndata: {train: data/pairs.csv}\ntrain: {max_steps: 7}\n")
    assert load_config(tmp_path / "base.yaml").data.train == str(tmp_path / "data" / "pairs.csv")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.yaml").write_text("extends: ../base.yaml\noptim: {lr: 2.0e-4}\n"
                                                "data:\n  train: null\n  sources:\n    - {path: ../data/pairs.csv}\n"
                                                "    - {path: org/hub_dataset}\n")
    cfg = load_config(tmp_path / "sub" / "mine.yaml", ["train.log_every=5"])
    demo = load_config("demo")
    assert (cfg.train.max_steps, cfg.optim.lr, cfg.train.log_every) == (7, 2.0e-4, 5)
    assert cfg.model == demo.model and cfg.loss == demo.loss  # the rest is the demo's
    assert cfg.data.sources[0].path == str(tmp_path / "sub" / ".." / "data" / "pairs.csv")
    assert cfg.data.sources[1].path == "org/hub_dataset"  # not a file here: a name, left as it is
    assert to_dict(load_config("mixed"))["data"]["sources"][0]["path"] == "data/demo/train.jsonl"  # shipped: as written

    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends a.yaml, which extends it again"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: [demo]\n")
    with pytest.raises(ConfigError, match="extends must be a config name"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("extends: nonesuch\n")
    with pytest.raises(ConfigError, match="no config named 'nonesuch'"):
        load_config(tmp_path / "d.yaml")


def test_the_gpu_config_keeps_its_old_name_and_the_clip_config_is_the_demo_with_clip():
    from multijepa.config import load_config, to_dict

    assert to_dict(load_config("base")) == to_dict(load_config("vit_b16_gpu"))
    clip, demo = load_config("clip_demo"), load_config("demo")
    assert clip.loss.objective == "clip" and not clip.loss.predicts and not clip.loss.masks
    clip.loss.objective = "jepa"
    assert to_dict(clip) == to_dict(demo)


def test_the_keys_a_user_changes_are_commented_in_the_shipped_run_configs():
    """The keys a user would change carry a comment in demo.yaml and vit_b16_gpu.yaml."""
    from multijepa.config import _shipped_dir

    for name in ("demo", "vit_b16_gpu"):
        lines = (_shipped_dir() / f"{name}.yaml").read_text().splitlines()
        for key in ("modalities", "embed_dim", "size", "patch", "vocab_size", "max_len", "batch_size", "lr", "max_steps"):
            line = next(x for x in lines if x.strip().startswith(f"{key}:"))
            assert "#" in line, (name, line)
