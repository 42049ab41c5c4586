"""RUN/MODEL_CARD.md holds the run's real figures: its steps, data rows, last logged numbers."""

import json


def test_a_pretrain_run_folder_has_a_model_card_with_its_own_figures(run, demo):
    card = (run / "MODEL_CARD.md").read_text()
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    rows = len((demo / "train.jsonl").read_text().splitlines())
    assert f"# Model card: {run.name}" in card
    assert f"- Steps: {last['step']} of `train.max_steps` 4" in card
    assert f"| {rows:,} | 1 |" in card  # the source's row count and weight
    assert f"| `loss` | {last['loss']:.4g} |" in card and f"| `rankme/image` | {last['rankme/image']:.4g} |" in card
    assert "Modalities: image, text, audio" in card and "Hardware: CPU" in card
    assert f'MultiJEPA.from_pretrained("{run}")' in card
    assert not list(run.glob(".MODEL_CARD.md.tmp"))  # written atomically
