"""Training beside another busy process: how much slower, with and without the thread settings of
issue 19 (a passive OpenMP wait policy, set by `multijepa` before torch loads).

Each measurement is a short `multijepa pretrain` of the demo config in a fresh process, timed from
its `metrics.jsonl` (the steps after the first logging interval, so start-up, data and tokenizer
are not counted). Four settings, each alone and beside one process that spins on a core (what a
browser or a second job does to a laptop):

  spinning    OpenMP's default wait policy (torch imported before multijepa, as before issue 19)
  passive     the default now: OMP_WAIT_POLICY=PASSIVE
  threads=1   train.threads=1 (one intra-op thread), default policy

Printed per setting: steps/s alone, beside the busy process, and `slowdown` = alone / busy (1.0 =
unaffected; the fair share of a 2-core machine with one core taken is about 2). The last lines
are `slowdown_spinning: X` and `slowdown_passive: Y`.

    python benchmarks/busy_machine.py                  # demo config, 8 steps per measurement
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine, write_result

PRELUDE = {
    "spinning": "import torch\n",  # libgomp reads OMP_WAIT_POLICY when torch loads it: before multijepa sets it
    "passive": "",
    "threads=1": "import torch\n",
}
SPIN = "while True:\n    pass\n"


def steps_per_second(work: Path, data: Path, setting: str, steps: int, log_every: int, busy: bool) -> float:
    run = work / f"run_{setting}_{'busy' if busy else 'alone'}"
    args = ["pretrain", "--config", "demo", "--data", str(data), "--out", str(run), "--max-steps", str(steps),
            "--no-progress", f"train.log_every={log_every}", "train.ckpt_every=100000"]
    if setting == "threads=1":
        args.append("train.threads=1")
    code = PRELUDE[setting] + f"import sys\nfrom multijepa.cli import main\nsys.exit(main({args!r}))\n"
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
    try:
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in logged[1:]]  # the first interval holds start-up
    batch = 64
    return sum(rates) / len(rates) / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="steps per measurement [8]")
    ap.add_argument("--log-every", type=int, default=2, help="logging interval, the unit measured [2]")
    ap.add_argument("--n", type=int, default=256, help="demo scenes generated for it [256]")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()

    from multijepa.data.demo import generate_demo

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate_demo(work / "data", n_train=args.n, n_test=8, progress=False)
        print(f"machine: {json.dumps(machine())}; demo config, {args.steps} steps per measurement", flush=True)
        results = {}
        for setting in PRELUDE:
            alone = steps_per_second(work, work / "data" / "train.jsonl", setting, args.steps, args.log_every, False)
            busy = steps_per_second(work, work / "data" / "train.jsonl", setting, args.steps, args.log_every, True)
            results[setting] = {"alone_steps_per_s": alone, "busy_steps_per_s": busy, "slowdown": alone / busy}
            print(f"  {setting:<10} alone {alone:.3f} steps/s  beside a busy process {busy:.3f} steps/s  "
                  f"slowdown {alone / busy:.2f}x", flush=True)
    write_result(args.json, {"machine": machine(), "steps": args.steps, "results": results})
    print(f"busy_steps_per_s_ratio_passive_vs_spinning: "
          f"{results['passive']['busy_steps_per_s'] / results['spinning']['busy_steps_per_s']:.2f}")
    for setting in ("spinning", "passive"):
        print(f"slowdown_{setting}: {results[setting]['slowdown']:.2f}")


if __name__ == "__main__":
    main()
