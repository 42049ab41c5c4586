"""A run's curves from its metrics.jsonl, as one PNG (matplotlib, no display needed).

Twelve panels in a fixed 3 x 4 layout (1600 x 900 px), whatever the run logged, so figures of
different runs line up: the loss terms, prediction loss and binding loss per modality, target and
prediction std, RankMe, learning rate, weight decay and EMA momentum, gradient norms, the
prediction term's gradient share, samples/s, rows drawn per source, held-out retrieval
(`train.eval_data`). A panel the run did not log says so. Several runs are overlaid, one colour per run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

FIGSIZE, DPI = (16, 9), 100  # 1600 x 900 px

PANELS: list[tuple[str, Callable[[str], bool]]] = [
    ("loss terms", lambda k: k == "loss" or k.startswith("loss/")),
    ("prediction loss per modality", lambda k: k.startswith("pred/")),
    ("binding loss per pair", lambda k: k.startswith("bind/")),
    ("target and prediction std", lambda k: k.startswith(("std_target/", "std_pred/"))),
    ("RankMe of the shared embeddings", lambda k: k.startswith("rankme/")),
    ("learning rate", lambda k: k == "lr"),
    ("weight decay, EMA momentum", lambda k: k in ("weight_decay", "ema")),
    ("gradient norm (before clipping)", lambda k: k == "grad_norm" or k.startswith("grad_norm/")),
    ("prediction's share of the encoders' gradient", lambda k: k.startswith("grad_share/")),
    ("samples / s", lambda k: k == "samples_per_s"),
    ("rows drawn per source", lambda k: k.startswith("drawn/")),
    ("held-out retrieval (train.eval_data)", lambda k: k in ("heldout/R@1", "heldout/P@1")),
]


def read_metrics(run: str | Path) -> list[dict]:
    """RUN/metrics.jsonl (or a metrics file itself) -> its records; a bad line is named."""
    path = Path(run)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a run folder holds metrics.jsonl once it has logged)")
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {i}: not JSON ({e.msg})") from None
        if not isinstance(rec, dict) or "step" not in rec:
            raise ValueError(f"{path} line {i}: a record needs a 'step'")
        records.append(rec)
    return records


def plot_runs(runs: list[str | Path], out: str | Path) -> Path:
    """The figure of one or more runs -> `out` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logged = [(Path(r).name or str(r), read_metrics(r)) for r in runs]
    fig, axes = plt.subplots(3, 4, figsize=FIGSIZE, dpi=DPI)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    for ax, (title, wanted) in zip(axes.flat, PANELS):
        drawn = 0
        for r, (name, records) in enumerate(logged):
            keys = sorted({k for rec in records for k, v in rec.items() if wanted(k) and isinstance(v, (int, float))})
            for j, key in enumerate(keys):
                points = [(rec["step"], rec[key]) for rec in records if isinstance(rec.get(key), (int, float))]
                xs, ys = zip(*points)
                if len(logged) == 1:  # one run: a colour per curve
                    label, colour, style = key, colours[j % len(colours)], "-"
                else:  # several: a colour per run, a line style per curve
                    label, colour, style = f"{name}: {key}", colours[r % len(colours)], styles[j % len(styles)]
                ax.plot(xs, ys, style, color=colour, label=label, linewidth=1.2)
                drawn += 1
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if drawn:
            ax.legend(fontsize=6, loc="best")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.suptitle(" vs ".join(name for name, _ in logged), fontsize=12)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    os.replace(tmp, out)
    return out
