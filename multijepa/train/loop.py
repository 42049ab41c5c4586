"""The pretraining loop: plain, top to bottom.

open the data -> tokenizer -> `build_training` (the model, its checkpoint weights when resuming,
checkpointing / compile / DDP / FSDP2, AdamW, schedules, objective, step) -> for each step's
micro-batches: forward, loss, backward; clip, step, EMA update -> log to metrics.jsonl every
`log_every` steps -> checkpoint every `ckpt_every` -> stop at `max_steps` or after `max_seconds`
of training (the schedules then laid out, step after step, over the steps the recent rate allows in
the time left). At `loss.pred_start` of the run the prediction phase begins. Under
torchrun, `data.batch_size` is the global batch, every process trains on its share, and only
rank 0 logs and writes.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from pathlib import Path

import torch
from tqdm import tqdm

from modalities.errors import DataError

from ..checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_train_state,
    remove_partial_checkpoints,
    save_checkpoint,
)
from ..config import Config, ConfigError, changed_keys, load_run_config, save_config
from ..data.bad_samples import BadSampleLog
from ..data.collate import move_batch
from ..data.demo_paths import resolve_manifest
from ..data.loader import build_train_data, check_training_sources, open_sources, training_texts
from ..data.pairs import with_pair_floor
from ..distributed import (
    World,
    barrier,
    broadcast_object,
    close_distributed,
    gather_counts,
    gather_objects,
    init_distributed,
    mean_across,
)
from ..interrupts import StopRequests, TrainingInterrupted
from ..model import resolve_towers
from ..objective import CollapseError, rankme
from ..processors import build_tokenizer
from ..run_folder import RunFolderError, hold_run_folder, run_files
from .builder import build_training
from .clip_watch import ClipWatch
from .model_card import model_card, write_model_card
from .parallelize import full_state, load_optimizer_state
from .step import SUMMED_LOGS

CALIBRATION_STEPS = 10  # a time-limited run measures its rate over these steps (the first two not counted)
RATE_WINDOW = 20  # ... and from then on re-estimates its length from the rate of the last this many steps
RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.png", "tokenizer.model", "checkpoints", "bad_samples.jsonl",
             "towers.json", "tensorboard", "MODEL_CARD.md")
# what --resume may change; any other model.* or data.* key would continue the run as another one
RESUMABLE_DATA_KEYS = ("data.num_workers", "data.persistent_workers", "data.prefetch_factor", "data.pin_memory",
                       "data.cache_decoded")


def _drop_metrics_after(path: Path, step: int) -> None:
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))


def _drop_bad_samples_unseen(path: Path, bad: BadSampleLog) -> None:
    """Keep the bad rows the checkpoint knew of; later ones are met (and written) again."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines()
                if line.strip() and (json.loads(line)["source"], str(json.loads(line)["row"])) in bad.seen]
        path.write_text("".join(line + "\n" for line in keep))


def optimizer_steps(loader, accum: int):
    """The loader's micro-batches grouped into optimizer steps: (micro-batches, stream position or None)."""
    group: list[dict] = []
    for item in loader:
        if "fatal" in item:  # a source could not be read at all (not one bad row)
            raise DataError(item["fatal"])
        position = item.pop("position", None)
        if "micro" in item:  # streaming with accumulation hands over a whole step at once
            yield item["micro"], position
            continue
        group.append(item)
        if len(group) == accum:
            yield group, position
            group = []


def share_bookkeeping(micro: list[dict], num_sources: int, world: World, device: torch.device) -> tuple[list, list[int]]:
    """Every process's bad-row records and per-source draws of this step, so the counts and the
    `data.max_bad_fraction` check are global (and every process stops together)."""
    errors = [e for b in micro for e in b["errors"]]
    drawn = [sum(b["drawn"][i] for b in micro) for i in range(num_sources)]
    if not world.active:
        return errors, drawn
    counts = gather_counts(torch.tensor([len(errors), *drawn]), world, device)  # (W, 1 + S)
    if int(counts[:, 0].sum()):
        errors = [e for part in gather_objects(errors, world) for e in part]
    return errors, counts[:, 1:].sum(0).tolist()


class TrainingClock:
    """Seconds of training: wall time since start-up (plus a resumed run's earlier seconds), with
    checkpoint writes left out; and the rate that lays out a time-limited run's schedules."""

    def __init__(self, before: float = 0.0):
        self.before, self.start, self.paused_at = before, time.perf_counter(), None
        self.marks: deque[tuple[int, float]] = deque(maxlen=RATE_WINDOW + 1)  # (step, seconds) of recent steps

    def pause(self) -> None:
        self.paused_at = time.perf_counter()

    def resume(self) -> None:
        if self.paused_at is not None:
            self.start += time.perf_counter() - self.paused_at
            self.paused_at = None

    def seconds(self) -> float:
        now = self.paused_at if self.paused_at is not None else time.perf_counter()
        return self.before + now - self.start

    def mark(self, step: int) -> None:
        """Record that `step` steps are done now (the window the rate is read from)."""
        self.marks.append((step, self.seconds()))

    def out_of_time(self, max_seconds: float) -> bool:
        return max_seconds > 0 and self.seconds() >= max_seconds

    def plan(self, step: int, steps_here: int, max_seconds: float, max_steps: int) -> int:
        """After a step of a time-limited run (`steps_here` since this process started): record it and,
        once CALIBRATION_STEPS are done, -> the steps the schedules are laid out over; else 0."""
        if max_seconds <= 0:
            return 0
        if steps_here >= 2:  # the first two steps (warm-up, caches) say nothing of the rate
            self.mark(step)
        return max(1, self.steps_allowed(step, max_seconds, max_steps)) if steps_here >= CALIBRATION_STEPS else 0

    def steps_allowed(self, step: int, max_seconds: float, max_steps: int) -> int:
        """min(max_steps, the steps done + those the rest of the time allows at the rate of the last
        RATE_WINDOW steps): re-read every step, so the schedules follow the time actually left even
        when steps get slower (the prediction phase) or faster."""
        (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
        rate = (s1 - s0) / max(t1 - t0, 1e-9)  # steps per second
        return max(step, min(max_steps, step + int(rate * max(0.0, max_seconds - self.seconds()))))


def _stop_reasons(over_time: bool, stop: StopRequests, world: World, device: torch.device,
                  total: int = 0) -> tuple[bool, int, int]:
    """(out of time by rank 0's clock, the stop signal any process received or 0, rank 0's `total`: the
    steps a time-limited run's schedules are laid out over), the same on every process from one small
    collective per step: they must all stop, and schedule, alike."""
    if not world.active:
        return over_time, stop.signum or 0, total
    flags = gather_counts(torch.tensor([int(over_time), stop.signum or 0, total]), world, device)  # (W, 3)
    return bool(flags[0, 0]), int(flags[:, 1].max()), int(flags[0, 2])


def _log_record(step: int, result, logs: dict, schedule, model, samples_per_s: float, drawn: dict, bad_rows: int,
                no_pair_steps: int) -> dict:
    """One line of metrics.jsonl: the step's schedules, loss terms and monitors, RankMe of the shared
    embeddings (this process's last micro-batch), throughput and data counts."""
    rec = {"step": step, "lr": result.lr, "weight_decay": result.weight_decay,
           "grad_norm": float(result.grad_norm), "schedule_steps": schedule.total, "predicting": float(model.predicting)}
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


def pretrain(cfg: Config, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train, writing everything to `out_dir`. Returns the last logged metrics.
    Under torchrun every process runs this; only rank 0 logs and writes."""
    t = cfg.train
    world, device = init_distributed(t.device)
    try:
        with hold_run_folder(out_dir, "multijepa pretrain", hold=world.main, unstarted=_unstarted), \
                StopRequests() as stop:
            return _pretrain(cfg, Path(out_dir), resume, progress, world, device, stop)
    finally:
        close_distributed(world)


def _unstarted(out: Path) -> bool:
    """No checkpoint and no logged step: a run that failed while starting, nothing to keep."""
    metrics = out / "metrics.jsonl"
    return not (out / "checkpoints").exists() and (not metrics.exists() or not metrics.read_text().strip())


def _take_folder(out: Path, resume: bool, say) -> Path | None:
    """Rank 0, folder held: refuse another run's files without --resume, clear what a killed run
    left half-written. -> the checkpoint to resume from."""
    ckpt = latest_checkpoint(out)
    found = run_files(out, RUN_FILES)
    if found and not resume:
        last = f" (last checkpoint {ckpt.name})" if ckpt is not None else " (no checkpoint yet)"
        raise RunFolderError(f"{out} holds another run's files{last}: {', '.join(found)}; pass --resume to "
                             "continue it, or choose another --out")
    if n := remove_partial_checkpoints(out):
        say(f"removed {n} half-written checkpoint folder(s) of a run killed while saving")
    newer = [c for c in list_checkpoints(out) if ckpt is None or c.name > ckpt.name]
    for c in newer:  # unreadable (latest_checkpoint said why): set aside, never picked up or pruned
        c.rename(c.with_name(f"unreadable-{c.name}"))
        say(f"set aside {c} as {c.with_name(f'unreadable-{c.name}').name}")
    if resume and ckpt is None and found:
        say(f"no checkpoint in {out} yet: starting from step 0")
        for name in ("metrics.jsonl", "bad_samples.jsonl"):  # their steps are trained again
            (out / name).unlink(missing_ok=True)
    return ckpt


def _check_resumed_config(cfg: Config, out: Path, say) -> None:
    """--resume continues the run it finds: a config that changes its model or data is refused."""
    saved = out / "config.yaml"
    if not saved.exists():
        return
    before = load_run_config(saved)
    changed = [k for k in changed_keys(before, cfg)
               if k.startswith(("model.", "data.")) and not k.startswith(RESUMABLE_DATA_KEYS)]
    if "data.train" in changed and before.data.train and not Path(before.data.train).exists():
        changed.remove("data.train")  # the data moved: its old place is gone
        say(f"the run's data {before.data.train} is gone: continuing on {cfg.data.train}")
    if changed:
        raise ConfigError(f"--resume: this config changes {', '.join(changed)} of the run in {out}; resume "
                          "with its own config (drop those overrides), or start a new run in another --out")


def _pretrain(cfg: Config, out: Path, resume: bool, progress: bool, world: World, device: torch.device,
              stop: StopRequests) -> dict:
    t = cfg.train
    say = print if world.main else (lambda *a, **k: None)
    if not cfg.data.sources:
        cfg.data.train = str(resolve_manifest(cfg.data.train, "train"))  # the demo data if none given
    if resume:
        _check_resumed_config(cfg, out, say)  # before anything in the folder is touched
    ckpt = _take_folder(out, resume, say) if world.main else latest_checkpoint(out, warn=False)
    if world.active and broadcast_object(str(ckpt), world) != str(ckpt):
        raise CheckpointError(f"rank {world.rank} sees checkpoint {ckpt} in {out}, rank 0 another: "
                              "the run folder must be one folder every process sees")
    torch.manual_seed(t.seed)
    if t.threads:
        torch.set_num_threads(t.threads)

    sources = open_sources(cfg)
    check_training_sources(cfg, sources)
    sources = with_pair_floor(sources, cfg.data.min_pair_fraction)  # batches keep enough pairs to bind
    for s in sources:
        if s.row_ids is not None:
            say(f"data: source part '{s.name}': {len(s.row_ids)} rows, {s.weight:g} of the batch slots (data.min_pair_fraction)")
    resolve_towers(cfg.model)  # a pretrained tower sets its grid, width and mean/std: saved with the config
    if world.main:
        save_config(cfg, out / "config.yaml")
    has_text = any("text" in s.columns for s in sources)
    if world.main:  # rank 0 trains the tokenizer (if the run needs one); the others then read it
        tokenizer = build_tokenizer(cfg.model, out, texts=(lambda: training_texts(sources)) if has_text else None)
    barrier(world)
    if not world.main:
        tokenizer = build_tokenizer(cfg.model, out)
    partial = any(m not in s.columns for s in sources for m in cfg.model.modalities)
    training = build_training(cfg, device, tokenizer, weights=ckpt if resume else None, world=world,
                              partial_sources=partial)
    model, optimizer, schedule = training.model, training.optimizer, training.schedule
    if world.main and model.loaded_towers:  # what the towers started from, for the record
        (out / "towers.json").write_text(json.dumps(model.loaded_towers, indent=2) + "\n")
        for m, rec in model.loaded_towers.items():
            say(f"{m} tower: {rec['spec']} ({rec['tensors']} tensors, sha256 {rec['sha256'][:12]})")

    step = 0
    data_position: dict | None = None
    bad_state: dict | None = None
    drawn = {s.name: 0 for s in sources}
    trained_seconds = 0.0  # training time before this process started (a resumed run's)
    if resume and ckpt is not None:
        state = load_train_state(ckpt)
        load_optimizer_state(model, optimizer, state["optimizer"])
        step = int(state["step"])
        _restore_rng(state, world, device)
        data_position, bad_state = state.get("data_position"), state.get("bad_samples")
        drawn.update(state.get("drawn", {}))
        if "schedule" in state:
            schedule.load_state_dict(state["schedule"])
        trained_seconds = float(state.get("train_seconds", 0.0))
        training.step.no_pair_steps = int(state.get("no_pair_steps", 0))
        say(f"resuming {out} from step {step}" + (f" on {world.size} processes" if world.active else ""))
        if world.main:
            _drop_metrics_after(out / "metrics.jsonl", step)  # those steps are trained again
    bad = BadSampleLog(out if world.main else None, cfg.data.on_error, cfg.data.max_bad_fraction, bad_state)
    if world.main:
        _drop_bad_samples_unseen(out / "bad_samples.jsonl", bad)

    data = build_train_data(cfg, sources, model.processors, step, data_position, device, world.rank, world.size)
    stream_positions: dict[str, dict] = dict((data_position or {}).get("streams", {}))
    names = [s.name for s in sources]
    metrics_file = open(out / "metrics.jsonl", "a") if world.main else None
    board = _tensorboard(out, step) if t.tensorboard and world.main else None
    bar = tqdm(total=t.max_steps, initial=step, desc="pretrain", unit="step", disable=not (progress and world.main),
               dynamic_ncols=True)
    last: dict = {}
    monitors = CollapseMonitors(cfg.loss)
    clip_watch = ClipWatch(cfg.optim.grad_clip, cfg.optim.warmup_steps, device)
    samples, tic = 0, time.perf_counter()
    start_step, clock = step, TrainingClock(trained_seconds)

    plotted = [time.perf_counter()]  # when RUN/metrics.png was last drawn
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def checkpoint(step: int, final: bool = False) -> None:
        clock.pause()
        weights, optim_state = full_state(model, optimizer)  # a collective under FSDP
        rngs = gather_objects(_rng_state(device), world)  # each process's own generators
        if data.sampler is not None:
            position = data.sampler.position_after(step - 1)  # the same on every process
        else:  # every process streams its own shards: keep all their positions
            streams = {k: v for part in gather_objects(stream_positions, world) for k, v in part.items()}
            position = {"num_streams": max(1, cfg.data.num_workers) * world.size, "streams": streams}
        if world.main:
            state = {"optimizer": optim_state, "step": step, "schedule": schedule.state_dict(),
                     **rngs[0], "rng_ranks": rngs, "drawn": dict(drawn), "bad_samples": bad.state_dict(),
                     "data_position": position, "world_size": world.size,
                     "train_seconds": clock.seconds(), "no_pair_steps": training.step.no_pair_steps}
            save_checkpoint(out, step, weights, state, keep=t.keep_checkpoints)
            card = model_card(cfg, out, sources, step, clock.seconds(), device, world.size, last, drawn, parameters)
            write_model_card(out / "MODEL_CARD.md", card)
            if t.plot and (final or time.perf_counter() - plotted[0] >= 60):
                plotted[0] = time.perf_counter()
                _plot(out, metrics_file)
        barrier(world)
        clock.resume()

    model.train()
    try:
        for micro, position in optimizer_steps(data.loader, t.grad_accum):
            errors, step_drawn = share_bookkeeping(micro, len(names), world, device)
            bad.update(errors, sum(step_drawn))
            for name, n in zip(names, step_drawn):
                drawn[name] += n
            if position is not None:
                stream_positions[str(position["stream"])] = position
            if _prediction_due(model, cfg, schedule, step):
                model.start_prediction()
                schedule.phase_start = step
                say(f"step {step}: prediction starts (loss.pred_start={cfg.loss.pred_start:g} of about "
                    f"{schedule.total} steps): target encoders copied from the online ones")
            log_step = (step + 1) % t.log_every == 0 or step + 1 == t.max_steps
            result = training.step([move_batch(b, device) for b in micro], step, measure_terms=log_step)
            step += 1
            bar.update(1)
            allowed = clock.plan(step, step - start_step, t.max_seconds, t.max_steps)
            out_of_time, signum, allowed = _stop_reasons(clock.out_of_time(t.max_seconds), stop, world, device, allowed)
            if allowed:  # a time-limited run, past its calibration: the schedules follow the time left
                if step - start_step == CALIBRATION_STEPS:
                    say(f"train.max_seconds={t.max_seconds:g}: about {allowed} steps at the measured rate; the "
                        "schedules are laid out over the steps the time left allows, re-read every step")
                schedule.total = bar.total = allowed
            if result is None:  # every row of the step was bad, or no pair to bind: keep the numbering
                if step % t.ckpt_every == 0 or step == t.max_steps or out_of_time or signum:
                    checkpoint(step, step == t.max_steps or out_of_time or bool(signum))  # due whatever the batch held
                if out_of_time or signum:
                    break
                continue
            samples += result.rows
            clip_watch.count(result.grad_norm)

            if log_step or out_of_time:
                rec = _log_record(step, result, mean_across(result.logs, world, SUMMED_LOGS), schedule, model,
                                  samples / max(time.perf_counter() - tic, 1e-9), drawn, bad.skipped,
                                  training.step.no_pair_steps)
                monitors.watch(rec, say)  # warns of a collapsing shared space; stops on collapsed targets
                clip_watch.record(rec, schedule.total, say)  # says when the clip rescales every step
                if metrics_file is not None:
                    metrics_file.write(json.dumps(rec) + "\n")
                    metrics_file.flush()
                if board is not None:
                    for k, v in rec.items():
                        if k != "step":
                            board.add_scalar(k, v, step)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", pred=f"{rec['loss/pred']:.3f}", bind=f"{rec['loss/bind']:.3f}")
                last = rec
                samples, tic = 0, time.perf_counter()

            if step % t.ckpt_every == 0 or step == t.max_steps or out_of_time or signum:
                checkpoint(step, step == t.max_steps or out_of_time or bool(signum))
            if out_of_time:
                say(f"train.max_seconds={t.max_seconds:g} reached at step {step}")
                break
            if signum:
                raise TrainingInterrupted(f"stopped at step {step} of {t.max_steps}; checkpoint written. "
                                          f"Continue with: multijepa pretrain --out {out} --resume", signum)
        bad.check()
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
        if board is not None:
            board.close()
    if bad.skipped:
        say(f"data: {bad.summary()} of {bad.drawn} drawn; listed in {out / 'bad_samples.jsonl'}")
    if training.step.no_pair_steps:
        say(f"data: {training.step.no_pair_steps} step(s) drew no pair to bind and were skipped "
            "(see data.min_pair_fraction)")
    return last


def _rng_state(device: torch.device) -> dict:
    """This process's random generators (CPU, and CUDA on a GPU)."""
    state = {"rng_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state()
    return state


def _restore_rng(state: dict, world: World, device: torch.device) -> None:
    """Each process takes back its own generators when the run resumes on as many processes as it saved
    (every process draws differently: SIGReg's token samples, dropout), else rank 0's (a new split
    of the batch draws differently anyway)."""
    ranks = state.get("rng_ranks") or [state]
    own = ranks[world.rank] if len(ranks) == world.size else ranks[0]
    torch.set_rng_state(own["rng_cpu"])
    if device.type == "cuda" and "rng_cuda" in own:
        torch.cuda.set_rng_state(own["rng_cuda"])


def _prediction_due(model, cfg: Config, schedule, step: int) -> bool:
    """Whether the late prediction phase starts before step `step` (0-based): at `loss.pred_start` of
    the steps the schedules are laid out over (those a time-limited run's time allows). Decided from
    numbers every process shares, so all switch at the same step; a resumed run switches where the
    uninterrupted one did."""
    late = model.predictors is not None and not model.predicting and cfg.loss.pred_start > 0
    return late and step >= cfg.loss.pred_start * schedule.total
