"""Pretraining: the loop (`loop.py`), one step (`step.py`), the builder they and the benchmarks
share (`builder.py`), schedules, and the speed and parallelism switches (`parallelize.py`).

`multijepa.train.pretrain(cfg, out_dir)` is the loop's entry point."""

__all__ = ["pretrain"]


def __getattr__(name: str):
    # lazy: importing one piece (the schedule, the builder) does not import the whole loop
    if name == "pretrain":
        from .loop import pretrain

        return pretrain
    raise AttributeError(f"module 'multijepa.train' has no attribute {name!r}")
