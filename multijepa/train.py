"""The pretraining loop: plain, top to bottom.

load data -> build model -> (resume) -> for each batch: forward, loss, backward, clip, step,
EMA update -> log to metrics.jsonl every `log_every` steps -> checkpoint every `ckpt_every`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from modalities.errors import DataError

from .bad_samples import BadSampleLog
from .checkpoint import latest_checkpoint, load_train_state, load_weights, save_checkpoint
from .collate import move_batch
from .config import Config, save_config
from .demo_paths import resolve_manifest
from .loader import build_train_data, open_sources, training_texts
from .model import MultiJEPA
from .objective import MultiJEPAObjective, rankme
from .processors import Processors, build_tokenizer
from .schedule import Schedule
from .speed import apply_speed
from .train_step import TrainStep


class CollapseError(RuntimeError):
    """The target features stopped varying: the run has collapsed."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def param_groups(model: MultiJEPA) -> list[dict]:
    """AdamW groups: no weight decay on norms, biases, tokens and the temperature (ndim <= 1
    or marked tokens), decay on the rest."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(("mask_token", "null_memory")) or ".memory_type." in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]


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


def pretrain(cfg: Config, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train, writing everything to `out_dir`. Returns the last logged metrics."""
    out = Path(out_dir)
    ckpt = latest_checkpoint(out)
    if ckpt is not None and not resume:
        raise FileExistsError(f"{out} already holds a run (last checkpoint {ckpt.name}): pass --resume, or choose another --out")
    if resume and ckpt is None and (out / "config.yaml").exists():
        print(f"no checkpoint in {out} yet: starting from step 0")
    out.mkdir(parents=True, exist_ok=True)
    t = cfg.train
    torch.manual_seed(t.seed)
    if t.threads:
        torch.set_num_threads(t.threads)
    device = pick_device(t.device)

    if not cfg.data.sources:
        cfg.data.train = str(resolve_manifest(cfg.data.train, "train"))  # the demo data if none given
    sources = open_sources(cfg)
    save_config(cfg, out / "config.yaml")
    processors = Processors(cfg.model, None)
    has_text = any("text" in s.columns for s in sources)
    tokenizer = build_tokenizer(cfg.model, out, texts=(lambda: training_texts(sources)) if has_text else None)
    processors.tokenizer = tokenizer
    model = apply_speed(MultiJEPA(cfg.model, tokenizer.vocab_size if tokenizer else None).to(device), t)
    optimizer = torch.optim.AdamW(param_groups(model), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    schedule = Schedule(cfg.optim, cfg.model, t.max_steps)
    objective = MultiJEPAObjective(cfg.loss, model.modalities)

    step = 0
    data_position: dict | None = None
    bad_state: dict | None = None
    drawn = {s.name: 0 for s in sources}
    if resume and ckpt is not None:
        load_weights(model, ckpt)
        state = load_train_state(ckpt)
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"])
        data_position, bad_state = state.get("data_position"), state.get("bad_samples")
        drawn.update(state.get("drawn", {}))
        print(f"resuming {out} from step {step}")
        _drop_metrics_after(out / "metrics.jsonl", step)  # those steps are trained again
    bad = BadSampleLog(out, cfg.data.on_error, cfg.data.max_bad_fraction, bad_state)
    _drop_bad_samples_unseen(out / "bad_samples.jsonl", bad)

    train_step = TrainStep(model, objective, optimizer, schedule, t.precision, cfg.optim.grad_clip, device)
    data = build_train_data(cfg, sources, processors, step, data_position, device)
    stream_positions: dict[str, dict] = dict((data_position or {}).get("streams", {}))
    names = [s.name for s in sources]
    metrics_file = open(out / "metrics.jsonl", "a")
    bar = tqdm(total=t.max_steps, initial=step, desc="pretrain", unit="step", disable=not progress, dynamic_ncols=True)
    last: dict = {}
    low_std_logs = 0
    samples, tic = 0, time.perf_counter()

    def checkpoint(step: int) -> None:
        state = {"optimizer": optimizer.state_dict(), "step": step, "schedule": schedule.state_dict(),
                 "rng_cpu": torch.get_rng_state(), "drawn": dict(drawn), "bad_samples": bad.state_dict()}
        if data.sampler is not None:
            state["data_position"] = data.sampler.position_after(step - 1)
        else:
            workers = max(1, cfg.data.num_workers)
            state["data_position"] = {"num_streams": workers, "streams": dict(stream_positions)}
        if device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state()
        save_checkpoint(out, step, model, state, keep=t.keep_checkpoints)

    model.train()
    try:
        for batch in data.loader:
            if "fatal" in batch:  # a source could not be read at all (not one bad row)
                raise DataError(batch["fatal"])
            bad.update(batch["errors"], sum(batch["drawn"]))
            for name, n in zip(names, batch["drawn"]):
                drawn[name] += n
            if "position" in batch:
                position = batch.pop("position")
                stream_positions[str(position["stream"])] = position
            if batch["size"] == 0:  # every row of the batch was bad: nothing to learn from, keep the numbering
                step += 1
                bar.update(1)
                if step % t.ckpt_every == 0 or step == t.max_steps:
                    checkpoint(step)  # a checkpoint (the final one too) is due whatever the batch held
                continue
            result = train_step(move_batch(batch, device), step)
            step += 1
            samples += batch["size"]
            bar.update(1)

            if step % t.log_every == 0 or step == t.max_steps:
                elapsed = time.perf_counter() - tic
                rec = {"step": step, "lr": result.lr, "weight_decay": result.weight_decay, "ema": schedule.ema(step - 1),
                       "grad_norm": float(result.grad_norm)}
                rec.update({k: float(v) for k, v in result.logs.items()})
                for m, o in result.outputs.items():
                    rec[f"rankme/{m}"] = rankme(o["z"])
                rec["samples_per_s"] = samples / max(elapsed, 1e-9)
                rec.update({f"drawn/{name}": n for name, n in drawn.items()})
                if bad.skipped:
                    rec["bad_rows"] = bad.skipped
                metrics_file.write(json.dumps(rec) + "\n")
                metrics_file.flush()
                bar.set_postfix(loss=f"{rec['loss']:.3f}", pred=f"{rec['loss/pred']:.3f}", bind=f"{rec['loss/bind']:.3f}")
                last = rec
                samples, tic = 0, time.perf_counter()
                stds = [v for k, v in rec.items() if k.startswith("std_target/")]
                low_std_logs = low_std_logs + 1 if stds and min(stds) < cfg.loss.collapse_std else 0
                if low_std_logs >= cfg.loss.collapse_patience:
                    raise CollapseError(
                        f"step {step}: target feature std {min(stds):.2e} < loss.collapse_std={cfg.loss.collapse_std} "
                        f"for {low_std_logs} log steps: the representation collapsed. Try a higher "
                        "model.ema_momentum start, a lower optim.lr, or loss.variance_weight > 0."
                    )

            if step % t.ckpt_every == 0 or step == t.max_steps:
                checkpoint(step)
        bad.check()
    finally:
        bar.close()
        metrics_file.close()
    if bad.skipped:
        print(f"data: {bad.summary()} of {bad.drawn} drawn; listed in {out / 'bad_samples.jsonl'}")
    return last
