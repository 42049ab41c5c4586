"""Training beside another busy process: how much slower, with and without the thread settings of
issue 19 (a passive OpenMP wait policy, set by `multijepa` before torch loads).

Each measurement is a short `multijepa pretrain` of the demo config in a fresh process, timed from
its `metrics.jsonl` (the steps after the first logging interval, so start-up, data and tokenizer
are not counted). Three settings, each alone and beside another busy process: `python`, a loop
that keeps one core busy (what a browser does to a laptop); `torch`, another program's torch loop
(small matrix products, its own default threads and wait policy); and `training`, a second demo
pretraining with the same setting (two runs on one machine, before and after):

  spinning    OpenMP's default wait policy (torch imported before multijepa, as before issue 19)
  passive     the default now: OMP_WAIT_POLICY=PASSIVE
  threads=1   train.threads=1 (one intra-op thread), default policy

Printed per setting: steps/s alone and beside each busy process, and the slowdowns alone / busy
(1.0 = unaffected; a fair share of a 2-core machine shared with a 2-thread job is about 2). The last
lines are `slowdown_spinning_vs_training: X` and `slowdown_passive_vs_training: Y`.

    python benchmarks/busy_machine.py                  # demo config, 6 steps per measurement
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import logged_step_seconds, machine, small_demo, write_result

PRELUDE = {
    "spinning": "import torch\n",  # libgomp reads OMP_WAIT_POLICY when torch loads it: before multijepa sets it
    "passive": "",
    "threads=1": "import torch\n",
}
BUSY = {
    "python": "while True:\n    pass\n",
    "torch": "import torch\na = torch.randn(192, 192)\nwhile True:\n    b = a @ a\n",
    "training": None,  # a second pretraining, see _pretrain_code
}


def _pretrain_code(setting: str, data: Path, run: Path, steps: int, log_every: int) -> str:
    args = ["pretrain", "--config", "demo", "--data", str(data), "--out", str(run), "--max-steps", str(steps),
            "--no-progress", f"train.log_every={log_every}", "train.ckpt_every=100000"]
    if setting == "threads=1":
        args.append("train.threads=1")
    return PRELUDE[setting] + f"import sys\nfrom multijepa.cli import main\nsys.exit(main({args!r}))\n"


def steps_per_second(work: Path, data: Path, setting: str, steps: int, log_every: int, busy: str | None) -> float:
    run = work / f"run_{setting}_{busy or 'alone'}"
    code = _pretrain_code(setting, data, run, steps, log_every)
    peer = None
    if busy is not None:
        other = BUSY[busy] or _pretrain_code(setting, data, work / f"peer_{setting}", 10**6, 10**6)
        peer = subprocess.Popen([sys.executable, "-c", other], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(15 if BUSY[busy] is None else 1)  # the peer training past its start-up
    try:
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    finally:
        if peer is not None:
            peer.kill()
            peer.wait()
    return 1.0 / logged_step_seconds(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="steps per measurement [6]")
    ap.add_argument("--log-every", type=int, default=2, help="logging interval, the unit measured [2]")
    ap.add_argument("--n", type=int, default=256, help="demo scenes generated for it [256]")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = small_demo(work, args.n)
        print(f"machine: {json.dumps(machine())}; demo config, {args.steps} steps per measurement", flush=True)
        results = {}
        for setting in PRELUDE:
            rates = {busy or "alone": steps_per_second(work, data, setting, args.steps,
                                                      args.log_every, busy) for busy in (None, *BUSY)}
            results[setting] = {**{f"{k}_steps_per_s": v for k, v in rates.items()},
                                **{f"slowdown_vs_{b}": rates["alone"] / rates[b] for b in BUSY}}
            print(f"  {setting:<10} alone {rates['alone']:.3f} steps/s  "
                  + "  ".join(f"beside {b} {rates[b]:.3f} steps/s (slowdown {rates['alone'] / rates[b]:.2f}x)" for b in BUSY),
                  flush=True)
    write_result(args.json, {"machine": machine(), "steps": args.steps, "results": results})
    print(f"beside_training_steps_per_s_ratio_passive_vs_spinning: "
          f"{results['passive']['training_steps_per_s'] / results['spinning']['training_steps_per_s']:.2f}")
    for setting in ("spinning", "passive"):
        print(f"slowdown_{setting}_vs_training: {results[setting]['slowdown_vs_training']:.2f}")


if __name__ == "__main__":
    main()
