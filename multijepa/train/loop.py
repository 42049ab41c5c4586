"""The pretraining loop: plain, top to bottom.

open the data -> tokenizer -> `build_training` (the model, its checkpoint weights when resuming,
checkpointing / compile / DDP / FSDP2, AdamW, schedules, objective, step) -> for each step's
micro-batches: forward, loss, backward; clip, step, EMA update -> log to metrics.jsonl every
`log_every` steps (`RunLog`) -> checkpoint every `ckpt_every` (`_Checkpointer`) -> stop at `max_steps` or after `max_seconds`
of training (the schedules then laid out, step after step, over the steps the recent rate allows in
the time left). At `loss.pred_start` of the run the prediction phase begins. Under
torchrun, `data.batch_size` is the global batch, every process trains on its share, and only
rank 0 logs and writes.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch

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
)
from ..interrupts import StopRequests, TrainingInterrupted
from ..model import resolve_towers
from ..processors import build_tokenizer
from ..run_folder import RunFolderError, hold_run_folder, run_files
from .builder import Training, build_training
from .heldout import HeldOutEval
from .model_card import model_card, write_model_card
from .parallelize import full_state, load_optimizer_state
from .run_log import RunLog

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


@dataclass
class _Progress:
    """Where a run stands besides its weights, optimizer and schedules: what a checkpoint keeps so
    that a resumed run goes on as the uninterrupted one would have."""

    step: int
    drawn: dict[str, int]  # rows drawn per source, bad ones included
    seconds: float = 0.0  # seconds of training before this process started
    data_position: dict | None = None  # where the data order resumes
    bad_state: dict | None = None  # the bad rows met so far (BadSampleLog.state_dict)
    streams: dict[str, dict] = field(default_factory=dict)  # streaming: each stream's position
    heldout: dict | None = None  # the best held-out evaluation so far (HeldOutEval.state_dict)


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
    sources, training = _open_training(cfg, out, resume, ckpt, world, device, say)
    model, schedule = training.model, training.schedule
    names = [s.name for s in sources]
    run = _Progress(step=0, drawn=dict.fromkeys(names, 0))
    if resume and ckpt is not None:
        run = _restore(ckpt, training, run, world, device)
        say(f"resuming {out} from step {run.step}" + (f" on {world.size} processes" if world.active else ""))
        if world.main:
            _drop_metrics_after(out / "metrics.jsonl", run.step)  # those steps are trained again
    bad = BadSampleLog(out if world.main else None, cfg.data.on_error, cfg.data.max_bad_fraction, run.bad_state)
    if world.main:
        _drop_bad_samples_unseen(out / "bad_samples.jsonl", bad)
    data = build_train_data(cfg, sources, model.processors, run.step, run.data_position, device, world.rank, world.size)
    log = RunLog(cfg, out, run.step, world, device, progress, say)
    start_step, clock = run.step, TrainingClock(run.seconds)
    heldout = HeldOutEval(t.eval_data, model, t.eval_every, out, say) if t.eval_data else None
    if heldout is not None:
        heldout.load_state_dict(run.heldout)
    saver = _Checkpointer(cfg, out, training, data, sources, bad, clock, log, world, device, heldout)

    model.train()
    try:
        for micro, position in optimizer_steps(data.loader, t.grad_accum):
            _count_data(run, bad, micro, position, names, world, device)
            step = run.step
            if _prediction_due(model, cfg, schedule, step):
                model.start_prediction()
                schedule.phase_start = step
                say(f"step {step}: prediction starts (loss.pred_start={cfg.loss.pred_start:g} of about "
                    f"{schedule.total} steps): target encoders copied from the online ones")
            model.bind_resized = step < cfg.loss.bind_scale_until * schedule.total  # model.<m>.bind_scale
            log_step = (step + 1) % t.log_every == 0 or step + 1 == t.max_steps
            result = training.step([move_batch(b, device) for b in micro], step, measure_terms=log_step)
            step = run.step = step + 1  # result None (every row bad, or no pair to bind): the step still counts
            log.step_done(result)
            allowed = clock.plan(step, step - start_step, t.max_seconds, t.max_steps)
            out_of_time, signum, allowed = _stop_reasons(clock.out_of_time(t.max_seconds), stop, world, device, allowed)
            if allowed:  # a time-limited run, past its calibration: the schedules follow the time left
                if step - start_step == CALIBRATION_STEPS:
                    say(f"train.max_seconds={t.max_seconds:g}: about {allowed} steps at the measured rate; the "
                        "schedules are laid out over the steps the time left allows, re-read every step")
                schedule.total = log.bar.total = allowed
            if result is not None and (log_step or out_of_time):
                log.write(step, result, schedule, model, run.drawn, bad.skipped, training.step.no_pair_steps)
            final = step == t.max_steps or out_of_time or bool(signum)
            if step % t.ckpt_every == 0 or final or (heldout is not None and heldout.wants_checkpoint(step)):
                saver.save(run, final)
            if out_of_time:
                say(f"train.max_seconds={t.max_seconds:g} reached at step {step}")
                break
            if signum:
                raise TrainingInterrupted(f"stopped at step {step} of {t.max_steps}; checkpoint written. "
                                          f"Continue with: multijepa pretrain --out {out} --resume", signum)
        bad.check()
    finally:
        log.close()
    if bad.skipped:
        say(f"data: {bad.summary()} of {bad.drawn} drawn; listed in {out / 'bad_samples.jsonl'}")
    if training.step.no_pair_steps:
        say(f"data: {training.step.no_pair_steps} step(s) drew no pair to bind and were skipped "
            "(see data.min_pair_fraction)")
    if heldout is not None and heldout.best_step is not None:
        say(heldout.summary())
    return log.last


def _count_data(run: _Progress, bad: BadSampleLog, micro: list[dict], position: dict | None, names: list[str],
                world: World, device: torch.device) -> None:
    """A step's draws per source and bad rows, over every process (they may stop the run:
    `data.max_bad_fraction`), and a streaming source's position after it."""
    errors, step_drawn = share_bookkeeping(micro, len(names), world, device)
    bad.update(errors, sum(step_drawn))
    for name, n in zip(names, step_drawn):
        run.drawn[name] += n
    if position is not None:
        run.streams[str(position["stream"])] = position


def _open_training(cfg: Config, out: Path, resume: bool, ckpt: Path | None, world: World, device: torch.device,
                   say) -> tuple[list, Training]:
    """The sources (with the pair floor), the saved config, the tokenizer, and `build_training`'s model,
    optimizer, schedules and step (the checkpoint's weights when resuming)."""
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
    model = training.model
    if world.main and model.loaded_towers:  # what the towers started from, for the record
        (out / "towers.json").write_text(json.dumps(model.loaded_towers, indent=2) + "\n")
        for m, rec in model.loaded_towers.items():
            say(f"{m} tower: {rec['spec']} ({rec['tensors']} tensors, sha256 {rec['sha256'][:12]})")
    return sources, training


def _restore(ckpt: Path, training: Training, run: _Progress, world: World, device: torch.device) -> _Progress:
    """The optimizer, schedules, random generators and progress of the run saved in `ckpt` (its weights
    are in `training.model` already)."""
    state = load_train_state(ckpt)
    load_optimizer_state(training.model, training.optimizer, state["optimizer"])
    _restore_rng(state, world, device)
    if "schedule" in state:
        training.schedule.load_state_dict(state["schedule"])
    training.step.no_pair_steps = int(state.get("no_pair_steps", 0))
    position = state.get("data_position")
    return _Progress(step=int(state["step"]), drawn={**run.drawn, **state.get("drawn", {})},
                     seconds=float(state.get("train_seconds", 0.0)), data_position=position,
                     bad_state=state.get("bad_samples"), streams=dict((position or {}).get("streams", {})),
                     heldout=state.get("heldout"))


class _Checkpointer:
    """Writes a checkpoint (atomically, rank 0; every process takes part) with all a resume needs to
    go on exactly, then the model card and the figure beside it; first, when due, the held-out
    evaluation (`train.eval_data`), whose best checkpoint is never pruned. The clock stops meanwhile."""

    def __init__(self, cfg: Config, out: Path, training: Training, data, sources: list, bad: BadSampleLog,
                 clock: TrainingClock, log: RunLog, world: World, device: torch.device, heldout: HeldOutEval | None):
        self.cfg, self.out, self.training, self.data, self.sources = cfg, out, training, data, sources
        self.bad, self.clock, self.log, self.world, self.device = bad, clock, log, world, device
        self.heldout = heldout
        self.parameters = sum(p.numel() for p in training.model.parameters() if p.requires_grad)

    def save(self, run: _Progress, final: bool) -> None:
        cfg, world, clock, step = self.cfg, self.world, self.clock, run.step
        clock.pause()
        if self.heldout is not None and self.heldout.due(step, final):
            self.log.write_record(self.heldout.evaluate(self.training.model, step, self.device))
        weights, optim_state = full_state(self.training.model, self.training.optimizer)  # a collective under FSDP
        rngs = gather_objects(_rng_state(self.device), world)  # each process's own generators
        if self.data.sampler is not None:
            position = self.data.sampler.position_after(step - 1)  # the same on every process
        else:  # every process streams its own shards: keep all their positions
            streams = {k: v for part in gather_objects(run.streams, world) for k, v in part.items()}
            position = {"num_streams": max(1, cfg.data.num_workers) * world.size, "streams": streams}
        if world.main:
            state = {"optimizer": optim_state, "step": step, "schedule": self.training.schedule.state_dict(),
                     **rngs[0], "rng_ranks": rngs, "drawn": dict(run.drawn), "bad_samples": self.bad.state_dict(),
                     "data_position": position, "world_size": world.size,
                     "train_seconds": clock.seconds(), "no_pair_steps": self.training.step.no_pair_steps}
            best = None
            if self.heldout is not None:
                state["heldout"], best = self.heldout.state_dict(), self.heldout.best_checkpoint()
            save_checkpoint(self.out, step, weights, state, keep=cfg.train.keep_checkpoints, protect=best)
            card = model_card(cfg, self.out, self.sources, step, clock.seconds(), self.device, world.size,
                              self.log.last, run.drawn, self.parameters, self.heldout and self.heldout.card())
            write_model_card(self.out / "MODEL_CARD.md", card)
            self.log.plot(final)
        barrier(world)
        self.log.leave_out(time.perf_counter() - clock.paused_at)  # samples/s: training time only
        clock.resume()


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
