"""Bad input end to end: `data check` lists every bad row, `pretrain` skips and counts them
(data.on_error=skip) or stops on the first with one line (the default, raise), and
data.max_bad_fraction stops a run whose data is mostly bad.

The rows come from `broken_inputs.make_broken_inputs`: each case has at most one bad column
with a known reason, so the expected reports are derived from the rows, not written out here.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

import pytest

from multijepa.cli import main
from multijepa.data.bad_samples import MIN_ROWS_FOR_FRACTION
from multijepa.data.sampler import MixedBatchSampler
from tests.broken_inputs import make_broken_inputs, write_manifest

BATCH = 4
FIELDS = {"source", "row", "column", "path", "reason", "message"}


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """(manifest, rows): every case of `make_broken_inputs`, then copies of good rows up to a
    multiple of BATCH, so one epoch is a whole number of steps. Bad rows keep their row numbers."""
    root = tmp_path_factory.mktemp("broken")
    rows = make_broken_inputs(root)
    good = [r for r in rows if r["bad"] is None]
    assert any(r["bad"] for r in rows) and len(good) >= 2
    rows = rows + [{**good[i % len(good)], "case": f"pad_{i}"} for i in range(-len(rows) % BATCH)]
    # A step whose batch keeps < 2 good rows trains on nothing and logs no metrics: keep the
    # last batch of the epoch good, so the last step of a one-epoch run is logged.
    assert sum(r["bad"] is None for r in rows[-BATCH:]) >= 2
    return write_manifest(rows, root / "broken.jsonl"), rows


@pytest.fixture(scope="module")
def checked(broken, tmp_path_factory):
    """`data check` of the broken manifest: (exit status, printed output, report path, problem records)."""
    manifest, _ = broken
    report = tmp_path_factory.mktemp("check") / "problems.jsonl"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["data", "check", str(manifest), "--config", "tiny", "--no-progress", "--json", str(report)])
    return code, printed.getvalue(), report, read_jsonl(report)


def bad_rows(rows: list[dict]) -> dict[int, tuple[str, str]]:
    """{row number: (column, reason)} of the bad rows."""
    return {i: (r["bad"], r["reason"]) for i, r in enumerate(rows) if r["bad"]}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pretrain(manifest: Path, out: Path, *overrides: str) -> int:
    return main(["pretrain", "--config", "tiny", "--data", str(manifest), "--out", str(out), "--no-progress",
                 f"data.batch_size={BATCH}", "data.shuffle=false", "train.log_every=1", *overrides])


def skip(steps: int, *extra: str) -> tuple[str, ...]:
    return ("data.on_error=skip", "data.max_bad_fraction=1.0", f"train.max_steps={steps}", *extra)


def reason_counts(rows: list[dict]) -> str:
    """'undecodable: 1, absurd_size: 1, ...': distinct bad rows per reason, most first (ties: row order)."""
    return ", ".join(f"{r}: {n}" for r, n in Counter(reason for _, reason in bad_rows(rows).values()).most_common())


def summary_counts(rows: list[dict], skipped: int, drawn: int) -> str:
    """The counts in the end-of-run line of a skip run."""
    return f"skipped {skipped} bad rows ({len(bad_rows(rows))} distinct; {reason_counts(rows)}) of {drawn} drawn"


# ----------------------------------------------------------------------------- data check


def test_data_check_lists_exactly_the_bad_rows(broken, checked):
    manifest, rows = broken
    code, out, report, records = checked
    assert code == 1

    assert all(FIELDS <= set(r) for r in records), records
    assert all(r["source"] == "broken" for r in records)
    assert [r["row"] for r in records] == sorted(r["row"] for r in records), "rows reported out of order"
    assert {r["row"]: (r["column"], r["reason"]) for r in records} == bad_rows(rows)
    assert len(records) == len(bad_rows(rows)), "a bad row reported twice"
    for r in records:  # the message names the row, its column, its file
        assert f"row {r['row']} " in r["message"] and f"column '{r['column']}'" in r["message"]
        if r["column"] != "text":
            assert r["path"] == rows[r["row"]][r["column"]]
            assert Path(r["path"]).name in r["message"]

    lines = out.splitlines()
    for r in records:  # printed too, one line each: reason code, then the message
        assert sum(line.startswith(r["reason"]) and line.endswith(r["message"]) for line in lines) == 1, r
    assert f"{len(records)} of {len(rows)} rows have problems ({reason_counts(rows)})" in lines
    assert f"wrote {report}" in lines


def test_data_check_with_workers_gives_the_same_report(broken, checked, tmp_path, capsys):
    manifest, _ = broken
    report = tmp_path / "problems.jsonl"
    code = main(["data", "check", str(manifest), "--config", "tiny", "--no-progress", "--json", str(report),
                 "--workers", "2"])
    assert code == 1
    assert read_jsonl(report) == checked[3]
    assert capsys.readouterr().out.replace(str(report), "") == checked[1].replace(str(checked[2]), "")


def test_data_check_passes_a_manifest_of_good_rows(broken, tmp_path, capsys):
    manifest, rows = broken
    good = write_manifest([r for r in rows if r["bad"] is None], manifest.parent / "good.jsonl")
    report = tmp_path / "problems.jsonl"
    code = main(["data", "check", str(good), "--config", "tiny", "--no-progress", "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"all {sum(r['bad'] is None for r in rows)} rows decode" in out
    assert read_jsonl(report) == []


# ----------------------------------------------------------------------------- on_error=skip


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_skip_drops_and_lists_every_bad_row_once(broken, checked, tmp_path, capsys, streaming):
    """Streaming too: with shuffle off and no workers, streamed row numbers are manifest rows."""
    manifest, rows = broken
    steps = len(rows) // BATCH  # one epoch
    out = tmp_path / "run"
    code = pretrain(manifest, out, *skip(steps, f"data.streaming={str(streaming).lower()}"))
    printed = capsys.readouterr().out
    assert code == 0

    listed = read_jsonl(out / "bad_samples.jsonl")
    assert all(FIELDS <= set(r) and r["source"] == "broken" for r in listed)
    assert [r["row"] for r in listed] == sorted(bad_rows(rows)), "bad rows missing, repeated or out of order"
    assert {r["row"]: (r["column"], r["reason"]) for r in listed} == bad_rows(rows)
    assert listed == checked[3], "skipping and `data check` disagree about a row"

    n_bad = len(bad_rows(rows))
    assert f"data: {summary_counts(rows, n_bad, len(rows))}; listed in {out / 'bad_samples.jsonl'}" in printed

    metrics = read_jsonl(out / "metrics.jsonl")
    assert metrics[-1]["step"] == steps
    assert metrics[-1]["drawn/broken"] == len(rows) and metrics[-1]["bad_rows"] == n_bad
    assert (out / "checkpoints" / f"step_{steps:08d}").is_dir()


def test_skip_counts_repeats_but_lists_distinct_rows(broken, tmp_path, capsys):
    manifest, rows = broken
    steps = 2 * len(rows) // BATCH  # two epochs
    out = tmp_path / "run"
    assert pretrain(manifest, out, *skip(steps)) == 0
    printed = capsys.readouterr().out
    n_bad = len(bad_rows(rows))

    listed = read_jsonl(out / "bad_samples.jsonl")
    assert [r["row"] for r in listed] == sorted(bad_rows(rows))
    assert summary_counts(rows, 2 * n_bad, 2 * len(rows)) in printed
    metrics = read_jsonl(out / "metrics.jsonl")
    assert metrics[-1]["step"] == steps
    assert metrics[-1]["drawn/broken"] == 2 * len(rows) and metrics[-1]["bad_rows"] == 2 * n_bad
    half = next(m for m in metrics if m["step"] == steps // 2)  # after the first epoch
    assert half["drawn/broken"] == len(rows) and half["bad_rows"] == n_bad


def test_a_step_whose_rows_are_all_bad_still_checkpoints(broken, tmp_path, capsys):
    """The last batch keeps one good row: nothing to train on, but the step counts and its
    checkpoint (here the final one) is written all the same."""
    manifest, rows = broken
    good = [r for r in rows if r["bad"] is None]
    bad = [r for r in rows if r["bad"]]
    small = write_manifest(good[:BATCH] + bad[: BATCH - 1] + good[BATCH : BATCH + 1],
                           manifest.parent / "last_batch_bad.jsonl")  # beside the media: paths are relative
    out = tmp_path / "run"
    assert pretrain(small, out, "data.on_error=skip", "data.max_bad_fraction=1.0", "train.max_steps=2",
                    "train.ckpt_every=100") == 0
    capsys.readouterr()
    assert (out / "checkpoints" / "step_00000002").is_dir(), sorted(p.name for p in (out / "checkpoints").glob("*"))
    assert [r["row"] for r in read_jsonl(out / "bad_samples.jsonl")] == list(range(BATCH, 2 * BATCH - 1))


# ----------------------------------------------------------------------------- on_error=raise


def first_bad_drawn(rows: list[dict], shuffle: bool, steps: int, seed: int = 0) -> int:
    sampler = MixedBatchSampler([len(rows)], [1.0], BATCH, seed, shuffle, 0, steps)
    return next(row for keys in sampler for *_, row in keys if rows[row]["bad"])


@pytest.mark.parametrize("workers,shuffle", [(0, False), (2, False), (2, True)])
def test_raise_stops_on_the_first_bad_row_with_one_line(broken, checked, tmp_path, capfd, workers, shuffle):
    """capfd, not capsys: a loader worker's traceback would go to the process's stderr."""
    manifest, rows = broken
    steps = len(rows) // BATCH
    if shuffle:  # a seed whose order draws a different bad row first than file order
        seed = next(s for s in range(1, 50) if first_bad_drawn(rows, True, steps, s) != min(bad_rows(rows)))
    else:
        seed = 0
    row = first_bad_drawn(rows, shuffle, steps, seed)
    assert shuffle or row == min(bad_rows(rows))
    out = tmp_path / "run"
    code = pretrain(manifest, out, f"train.max_steps={steps}", f"data.num_workers={workers}",
                    f"data.shuffle={str(shuffle).lower()}", f"train.seed={seed}")
    err = capfd.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    column, reason = bad_rows(rows)[row]
    assert line.startswith("error: source 'broken' (")
    assert f" row {row} column '{column}': " in line
    if column != "text":
        assert Path(rows[row][column]).name in line
    assert "data.on_error=skip" in line
    # the reason text: the same message `data check` gives that row
    record = next(r for r in checked[3] if r["row"] == row)
    assert record["reason"] == reason and record["message"] in line
    assert not (out / "bad_samples.jsonl").exists() or not read_jsonl(out / "bad_samples.jsonl")


# ----------------------------------------------------------------------------- max_bad_fraction


@pytest.mark.parametrize("limit,code", [(0.1, 1), (0.5, 0)])
def test_max_bad_fraction_is_judged_at_the_end_of_a_short_run(broken, tmp_path, capsys, limit, code):
    manifest, rows = broken
    share = len(bad_rows(rows)) / len(rows)
    assert 0.1 < share < 0.5 and len(rows) < MIN_ROWS_FOR_FRACTION  # only the end-of-run check applies
    steps = len(rows) // BATCH
    out = tmp_path / "run"
    got = pretrain(manifest, out, "data.on_error=skip", f"data.max_bad_fraction={limit}", f"train.max_steps={steps}")
    err = capsys.readouterr().err
    assert got == code
    if code:
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert f"{len(bad_rows(rows))} of {len(rows)} rows drawn" in err
        assert f"data.max_bad_fraction={limit}" in err and str(out / "bad_samples.jsonl") in err
    else:
        assert err == ""
    assert len(read_jsonl(out / "bad_samples.jsonl")) == len(bad_rows(rows))


def test_max_bad_fraction_stops_a_long_run_once_enough_rows_were_drawn(broken, tmp_path, capsys):
    manifest, rows = broken
    steps = 2 * MIN_ROWS_FOR_FRACTION // BATCH  # would draw 200 rows
    stop = -(-MIN_ROWS_FOR_FRACTION // BATCH)  # the batch that brings the count to 100 is judged, and stops the run
    drawn = stop * BATCH
    skipped = sum(rows[k % len(rows)]["bad"] is not None for k in range(drawn))  # shuffle off: file order
    assert skipped / drawn > 0.1
    out = tmp_path / "run"
    code = pretrain(manifest, out, "data.on_error=skip", "data.max_bad_fraction=0.1", f"train.max_steps={steps}")
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{skipped} of {drawn} rows drawn ({skipped / drawn:.1%}) were bad" in err
    assert "data.max_bad_fraction=0.1" in err
    metrics = read_jsonl(out / "metrics.jsonl")
    assert metrics and all(m["step"] < stop and m["drawn/broken"] < MIN_ROWS_FOR_FRACTION for m in metrics)
    assert all(int(p.name.split("_")[1]) < stop for p in (out / "checkpoints").iterdir())
    assert len(read_jsonl(out / "bad_samples.jsonl")) == len(bad_rows(rows))
