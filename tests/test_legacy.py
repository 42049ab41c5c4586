"""Folders written before the reshaping of issue 12 (tests/fixtures/legacy, made by the code of
commit c9dbdde with make.py there) still load, give the same numbers, and resume."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multijepa.cli import main
from multijepa.model import MultiJEPA
from multijepa.vqa.model import load_vqa
from tests.fixtures.legacy.make import inputs

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


@pytest.fixture(scope="module")
def expected():
    return load_file(str(LEGACY / "expected.safetensors"))


def test_an_old_run_folder_loads_and_embeds_as_before(expected):
    model = MultiJEPA.from_pretrained(LEGACY / "run")
    x = inputs(model.run_config)
    for m in model.modalities:
        assert torch.allclose(model.encode(m, x[m]), expected[f"embed/{m}"], atol=1e-6), m


@pytest.mark.parametrize("kind", ["cross", "coattention", "merged"])
def test_an_old_vqa_folder_loads_and_answers_as_before(expected, kind):
    """The fusions' layers were renamed when the attention stack became one (norm_x -> norm_q,
    separate feed-forward modules folded into the blocks): old weights still load, every one."""
    vqa = load_vqa(LEGACY / f"vqa_{kind}")
    x = inputs(MultiJEPA.from_pretrained(LEGACY / "run").run_config)
    with torch.no_grad():
        logits = vqa.model(x["image"], x["text"])
    assert torch.allclose(logits, expected[f"vqa/{kind}"], atol=1e-5)


def test_an_old_run_resumes(demo, tmp_path):
    """Optimizer state is keyed by parameter name, and the predictor's names did not change."""
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "run", run)
    config = run / "config.yaml"  # its data moved away since (a resume may follow data whose old place is gone)
    config.write_text(config.read_text().replace("/tmp/tmpnyl00l0r/demo", str(tmp_path / "moved_away")))
    assert main(["pretrain", "--out", str(run), "--resume", "--data", str(demo / "train.jsonl"),
                 "--max-steps", "3", "--no-progress"]) == 0
    assert (run / "checkpoints" / "step_00000003").is_dir()
