"""What a pretraining run writes while it trains: one record per `train.log_every` steps to
metrics.jsonl (and TensorBoard with `train.tensorboard`), the progress bar, RUN/metrics.png, and
the monitors that read every record (a collapsing shared space, collapsed targets, a gradient clip
that acts on every step). Only rank 0 writes; the other processes keep the same counters.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import Config, ConfigError
from ..distributed import World, mean_across
from ..objective import CollapseError, rankme
from .clip_watch import ClipWatch
from .step import SUMMED_LOGS

PLOT_EVERY_S = 60  # RUN/metrics.png is redrawn at a checkpoint at most this often (and at the last one)


class RunLog:
    def __init__(self, cfg: Config, out: Path, step: int, world: World, device: torch.device, progress: bool, say):
        t = cfg.train
        self.out, self.world, self.say, self.draws_plot = out, world, say, t.plot
        self.file = open(out / "metrics.jsonl", "a") if world.main else None
        self.board = _tensorboard(out, step) if t.tensorboard and world.main else None
        self.bar = tqdm(total=t.max_steps, initial=step, desc="pretrain", unit="step",
                        disable=not (progress and world.main), dynamic_ncols=True)
        self.monitors = CollapseMonitors(cfg.loss)
        self.clip_watch = ClipWatch(cfg.optim.grad_clip, cfg.optim.warmup_steps, device)
        self.last: dict = {}  # the last record written
        self.samples, self.tic = 0, time.perf_counter()  # rows trained since the last record, and since when
        self.plotted = time.perf_counter()

    def step_done(self, result) -> None:
        """Counts a trained step (a step with no result, every row bad or no pair, trained nothing)."""
        self.bar.update(1)
        if result is not None:
            self.samples += result.rows
            self.clip_watch.count(result.grad_norm)

    def write(self, step: int, result, schedule, model, drawn: dict, bad_rows: int, no_pair_steps: int) -> dict:
        """One record: built from every process's logs (a collective), watched, written, shown on the bar."""
        rec = _log_record(step, result, mean_across(result.logs, self.world, SUMMED_LOGS), schedule, model,
                          self.samples / max(time.perf_counter() - self.tic, 1e-9), drawn, bad_rows, no_pair_steps)
        self.monitors.watch(rec, self.say)  # warns of a collapsing shared space; stops on collapsed targets
        self.clip_watch.record(rec, schedule.total, self.say)  # says when the clip rescales every step
        self.write_record(rec)
        self.bar.set_postfix(loss=f"{rec['loss']:.3f}", pred=f"{rec['loss/pred']:.3f}", bind=f"{rec['loss/bind']:.3f}")
        self.last = rec
        self.samples, self.tic = 0, time.perf_counter()
        return rec

    def leave_out(self, seconds: float) -> None:
        """Seconds that were not training (a checkpoint, a held-out evaluation): not in samples/s."""
        self.tic += seconds

    def write_record(self, rec: dict) -> None:
        """A line of metrics.jsonl (and TensorBoard scalars), rank 0: a step's record, or a held-out evaluation."""
        if self.file is not None:
            self.file.write(json.dumps(rec) + "\n")
            self.file.flush()
        if self.board is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.board.add_scalar(k, v, rec["step"])

    def plot(self, final: bool) -> None:
        """RUN/metrics.png, at a checkpoint (rank 0): at most every PLOT_EVERY_S seconds, and at the last one."""
        if self.draws_plot and (final or time.perf_counter() - self.plotted >= PLOT_EVERY_S):
            self.plotted = time.perf_counter()
            _plot(self.out, self.file)

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.board is not None:
            self.board.close()


def _log_record(step: int, result, logs: dict, schedule, model, samples_per_s: float, drawn: dict, bad_rows: int,
                no_pair_steps: int) -> dict:
    """One line of metrics.jsonl: the step's schedules, loss terms and monitors, RankMe of the shared
    embeddings (this process's last micro-batch), throughput and data counts."""
    rec = {"step": step, "lr": result.lr, "weight_decay": result.weight_decay,
           "grad_norm": float(result.grad_norm), "schedule_steps": schedule.total, "predicting": float(model.predicting)}
    if model.bind_scales:  # CLIPA: whether this step bound resized inputs (model.<m>.bind_scale)
        rec["bind_resized"] = float(model.bind_resized and not model.predicting)
    if model.target_encoders is not None and model.predicting:  # an EMA that is being applied
        rec["ema"] = schedule.ema(step - 1)
    rec.update({k: float(v) for k, v in logs.items()})
    for m, o in result.outputs.items():
        rec[f"rankme/{m}"] = rankme(o["z"])
    rec["samples_per_s"] = samples_per_s
    rec.update({f"drawn/{name}": n for name, n in drawn.items()})
    if bad_rows:
        rec["bad_rows"] = bad_rows
    if no_pair_steps:
        rec["no_pair_steps"] = no_pair_steps
    return rec


class CollapseMonitors:
    """What every log record is watched for: target features that stop varying (the run stops, after
    `loss.collapse_patience` log steps) and shared embeddings whose RankMe falls far below the highest
    it reached (a warning, in the log and the record: `_shared_space_warnings`)."""

    def __init__(self, loss):
        self.cfg, self.low_std_logs, self.rankme_peaks = loss, 0, {}

    def watch(self, rec: dict, say) -> None:
        for line in _shared_space_warnings(rec, self.rankme_peaks, self.cfg.rankme_floor):
            say(line)
        stds = [v for k, v in rec.items() if k.startswith("std_target/")]
        self.low_std_logs = self.low_std_logs + 1 if stds and min(stds) < self.cfg.collapse_std else 0
        if self.low_std_logs >= self.cfg.collapse_patience:
            raise CollapseError(
                f"step {rec['step']}: target feature std {min(stds):.2e} < loss.collapse_std={self.cfg.collapse_std} "
                f"for {self.low_std_logs} log steps: the representation collapsed. Try a higher "
                "model.ema_momentum start, a lower optim.lr, or loss.variance_weight > 0."
            )


def _shared_space_warnings(rec: dict, peaks: dict[str, float], floor: float) -> list[str]:
    """Modalities whose shared embeddings' RankMe in this log record fell below `floor` of the highest
    it reached in this run (`peaks`, updated here): flagged in the record as collapse/shared/<m> = 1
    -> one warning line each. Relative to the run's own peak, as RankMe's scale depends on the rows
    per batch: on the demo, healthy runs stay above half their peak and collapsing ones fall to a fifth."""
    lines = []
    for key, value in list(rec.items()):
        if not key.startswith("rankme/") or value != value:  # NaN: too few rows to say
            continue
        m = key.split("/", 1)[1]
        peaks[m] = max(peaks.get(m, 0.0), value)
        if value < floor * peaks[m]:
            rec[f"collapse/shared/{m}"] = 1.0
            lines.append(f"warning: step {rec['step']}: the shared embeddings of {m} are collapsing (RankMe {value:.1f}, "
                         f"below {floor:g} of its highest, {peaks[m]:.1f}: loss.rankme_floor). Check the pairs per "
                         "batch (data.min_pair_fraction) and the learning rate.")
    return lines


def _plot(out: Path, metrics_file) -> None:
    """RUN/metrics.png from what is logged so far; a figure that fails is a warning, never a stop."""
    if metrics_file is None:
        return
    metrics_file.flush()
    try:
        from ..plot import plot_runs

        plot_runs([out], out / "metrics.png")
    except Exception as e:  # matplotlib missing or broken, a full disk: training goes on
        print(f"warning: could not draw {out / 'metrics.png'} ({type(e).__name__}: {str(e)[:200]})", file=sys.stderr)


def _tensorboard(out: Path, step: int):
    """A TensorBoard writer of RUN/tensorboard (train.tensorboard=true). On resume, events past the
    checkpoint's step are purged, as metrics.jsonl's lines are: those steps are trained again."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard=true needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(out / "tensorboard"), purge_step=step + 1 if step else None)
