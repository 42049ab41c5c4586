"""The video demo (`multijepa data demo --video`): what its clips show and sound like, that their
mean frame cannot tell left from right, its manifests and `demo:` names, the av_demo config, and
video in the search page (a video upload, a <video> player that plays in Chromium)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modalities.video import VideoPreprocessor, sound_track
from multijepa.cli import main
from multijepa.config import load_config
from multijepa.data.demo_paths import resolve_manifest
from multijepa.data.demo_video import DIRECTIONS, _frames, _sample_motion, _sound, generate_demo_video
from tests.live_server import browser as open_browser
from tests.live_server import live_server

SMALL = {"n_train": 24, "n_test": 12, "seed": 4, "size": 32, "progress": False}
TINY_AV = ["model.video.size=16", "model.video.patch=4", "model.video.frames=4", "model.video.encoder={width: 16, depth: 1, heads: 2}",
           "model.video.mask.min_keep=2", "model.text.encoder={width: 16, depth: 1, heads: 2}", "model.text.vocab_size=64",
           "model.audio.encoder={width: 16, depth: 1, heads: 2}", "model.audio.num_mel_bins=32", "model.audio.target_frames=48",
           "model.audio.patch=[8,8]", "model.predictor={width: 16, depth: 1, heads: 2}", "model.embed_dim=16",
           "data.batch_size=8", "train.max_steps=4", "train.ckpt_every=2", "train.plot=false", "loss.pred_start=0.0"]


@pytest.fixture(scope="module")
def video_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_demo")
    summary = generate_demo_video(root, **SMALL)
    return root, summary


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_manifests_clips_and_captions(video_demo):
    root, summary = video_demo
    assert summary["n_video_train"] == 24 and summary["n_video_test"] == 12
    assert (root / "directions.txt").read_text().split("\n")[:4] == [f"moving {d}" for d in DIRECTIONS]
    rows = _rows(root / "video_train.jsonl")
    proc = VideoPreprocessor(size=16, frames=4, clip_seconds=2.0)
    for r in rows[:4]:
        m = r["motion"]
        assert r["label"] == f"moving {m['direction']}" and "audio" not in r
        assert m["colour"] in r["text"] and m["shape"] in r["text"]
        words = {"right": ("right",), "left": ("left",), "up": ("up", "rising", "bottom to top"),
                 "down": ("down", "falling", "top to bottom")}[m["direction"]]
        assert any(w in r["text"] for w in words), r["text"]
        assert proc(root / r["video"]).shape == (3, 4, 16, 16)
        samples, rate = sound_track(root / r["video"])
        assert rate == 16000 and 1.9 * rate < len(samples) < 2.2 * rate
    generate_demo_video(root / "again", **SMALL)  # seeded: the same rows again
    assert _rows(root / "again" / "video_train.jsonl") == rows


def test_the_mean_frame_cannot_tell_left_from_right():
    """One path run both ways: the frames are the same ones in reverse order (pixel noise apart),
    so their means agree, while the first frames do not."""
    m = _sample_motion(np.random.default_rng(0)) | {"direction": "right", "start": 0.5, "end": 2.5}
    right = _frames(m, 16, 48, np.random.default_rng(1)).astype(float)
    left = _frames(m | {"direction": "left", "start": 2.5, "end": 0.5}, 16, 48, np.random.default_rng(1)).astype(float)
    assert np.abs(right.mean(0) - left.mean(0)).max() < 2.0
    assert np.abs(right[0] - left[0]).max() > 100
    assert np.abs(right[::-1] - left).max() <= 6  # the noise: +-3 per frame


def _pitch(x, rate):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / rate)[spec.argmax()]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_the_sound_glides_with_the_direction_and_pulses_when_vertical(direction):
    rate = 16000
    m = {"shape": "circle", "colour": "red", "size": "large", "direction": direction}
    x = _sound(m, rate, 2.0, np.random.default_rng(0))
    first, last = _pitch(x[: rate // 4], rate), _pitch(x[-rate // 4:], rate)
    semitones = 12 * np.log2(last / first)  # the windows' centres are 7/8 of the clip apart: 2.6 of the 3
    assert 2.2 < (semitones if direction in ("right", "up") else -semitones) < 3.1, (first, last)
    envelope = np.abs(x[: rate]).reshape(40, -1).max(1)  # 25 ms windows over the first second
    assert (envelope.min() < 0.2 * envelope.max()) == (direction in ("up", "down"))


def test_demo_names_and_the_av_demo_config(video_demo, monkeypatch, tmp_path):
    root, _ = video_demo
    monkeypatch.setenv("MULTIJEPA_DEMO_DIR", str(root))
    assert resolve_manifest("demo:video_test", "train") == root / "video_test.jsonl"
    assert resolve_manifest("demo:video_train.jsonl", "train") == root / "video_train.jsonl"
    with pytest.raises(FileNotFoundError, match="demo:videos: the demo has no manifest 'videos'"):
        resolve_manifest("demo:videos", "train")
    cfg = load_config("av_demo")
    assert cfg.model.modalities == ["video", "text", "audio"] and cfg.data.audio_from_video
    assert cfg.data.train == "demo:video_train"


@pytest.fixture(scope="module")
def av_run(video_demo, tmp_path_factory):
    """av_demo's data and its three pairs (video, its caption, its own sound) through a tiny
    pretraining run and an index of the held-out clips."""
    root, _ = video_demo
    tmp = tmp_path_factory.mktemp("av_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MULTIJEPA_DEMO_DIR", str(root))
        run = tmp / "run"
        assert main(["pretrain", "--config", "av_demo", "--out", str(run), "--no-progress", *TINY_AV]) == 0
        index = tmp / "index"
        assert main(["index", "--checkpoint", str(run), "--data", "demo:video_test", "--out", str(index),
                     "--no-progress"]) == 0
    return run, index


def test_av_demo_trains_the_three_pairs(av_run):
    run, _ = av_run
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"bind/video-text", "bind/video-audio", "bind/text-audio"} <= set(logged)


def test_video_everywhere_retrieval_zeroshot_probe_search_and_captions(video_demo, av_run, tmp_path, capsys,
                                                                       monkeypatch):
    """Every command that takes a modality takes video, on the demo's held-out clips."""
    root, _ = video_demo
    run, index = av_run
    monkeypatch.setenv("MULTIJEPA_DEMO_DIR", str(root))
    test = ["--data", "demo:video_test"]
    assert main(["eval", "retrieval", "--checkpoint", str(run), *test, "--json", str(tmp_path / "r.json")]) == 0
    scores = json.loads((tmp_path / "r.json").read_text())
    assert {"video->text", "video->audio", "audio->video", "text->video"} <= set(json.dumps(scores).replace('"', " ").split())
    assert main(["eval", "zeroshot", "--checkpoint", str(run), *test, "--classes", str(root / "directions.txt"),
                 "--modality", "video", "--json", str(tmp_path / "z.json")]) == 0
    zs = json.loads((tmp_path / "z.json").read_text())
    assert "video" in json.dumps(zs) and "audio" not in zs
    assert main(["eval", "probe", "--checkpoint", str(run), "--data", "demo:video_train", "--test", "demo:video_test",
                 "--modality", "video", "--json", str(tmp_path / "p.json")]) == 0
    assert "video" in json.loads((tmp_path / "p.json").read_text())
    capsys.readouterr()
    rows = _rows(root / "video_test.jsonl")
    assert main(["search", "--index", str(index), "--video", str(root / rows[5]["video"]), "--modality", "video",
                 "--top-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]["video"]
    assert len(hits) == 3 and hits[0]["row"] == 5 and hits[0]["score"] > 0.999  # the clip finds itself first
    assert main(["caption", "train", "--checkpoint", str(run), "--modality", "video", "--data", "demo:video_train",
                 "--out", str(tmp_path / "cap"), "--max-steps", "2", "--no-progress"]) == 0


def test_the_search_page_uploads_a_video_and_plays_the_clips_it_finds(video_demo, av_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, _ = video_demo
    _, index = av_run
    rows = _rows(root / "video_test.jsonl")
    with live_server(index, tmp_path / "serve.log", rows=12) as url:
        browser = open_browser()
        try:
            wait = WebDriverWait(browser, 60)
            browser.get(url + "/")
            wait.until(lambda b: b.find_elements(By.ID, "upload-video"))
            assert {e.get_attribute("id") for e in browser.find_elements(By.CSS_SELECTOR, "#uploads input")} == \
                {"upload-video", "upload-audio"}
            browser.find_element(By.ID, "upload-video").send_keys(str(root / rows[3]["video"]))
            browser.find_element(By.CSS_SELECTOR, "input[name=modality][value=video]").click()
            browser.find_element(By.ID, "go").click()
            css = ".grid[data-modality=video] .card"
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, css)) == 10)
            first = browser.find_elements(By.CSS_SELECTOR, css)[0]
            assert first.get_attribute("data-row") == "3"
            player = first.find_element(By.TAG_NAME, "video")
            assert player.get_attribute("src").endswith("/media/3/video")
            # the browser decodes it: metadata loaded, 2 s long, 32 px frames (H.264 in .mp4)
            wait.until(lambda b: b.execute_script("return arguments[0].readyState >= 1 || arguments[0].error", player))
            assert browser.execute_script("return arguments[0].error", player) is None
            assert browser.execute_script("return arguments[0].videoWidth", player) == 32
            assert abs(browser.execute_script("return arguments[0].duration", player) - 2.0) < 0.2
        finally:
            browser.quit()


def test_msrvtt_and_vggsound_in_their_published_layouts(video_demo, av_run, tmp_path):
    """MSR-VTT (its videodatainfo JSON and the 1k-A CSV) and VGGSound (its header-less CSV), with the
    demo's clips named as those datasets name theirs, through eval retrieval and zeroshot."""
    import csv
    import shutil

    from multijepa.data.benchmarks import read_benchmark

    root, _ = video_demo
    run, _ = av_run
    rows = _rows(root / "video_test.jsonl")
    (tmp_path / "videos").mkdir()
    for i, r in enumerate(rows):
        shutil.copy(root / r["video"], tmp_path / "videos" / f"video{i}.mp4")
        shutil.copy(root / r["video"], tmp_path / "videos" / f"yt{i:02d}-x_{30 + i:06d}.mp4")
    words = [r["text"].split() for r in rows]
    info = {"info": {"year": 2016}, "videos": [{"category": i % 3, "url": "", "video_id": f"video{i}", "start time": 0,
                                               "end time": 2, "split": ("train", "validate", "test")[i % 3], "id": i}
                                              for i in range(len(rows))],
            "sentences": [{"caption": c, "video_id": f"video{i}", "sen_id": 2 * i + k}
                          for i, w in enumerate(words) for k, c in enumerate([" ".join(w), " ".join(w[::-1])])]}
    (tmp_path / "train_val_videodatainfo.json").write_text(json.dumps(info))
    spec = f"msrvtt:{tmp_path}/train_val_videodatainfo.json?root={tmp_path}/videos"
    assert len(read_benchmark(spec)[0]) == 2 * len(rows)
    test = read_benchmark(spec + "&split=test")[0]
    assert len(test) == 8 and {r["video"] for r in test} == {f"video{i}.mp4" for i in range(2, 12, 3)}
    assert main(["eval", "retrieval", "--checkpoint", str(run), "--data", spec + "&split=test",
                 "--json", str(tmp_path / "m.json")]) == 0
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["text->video"]["n"] == 8 and res["text->video"]["n_items"] == 4  # 2 captions per video, one item

    with open(tmp_path / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "key", "vid_key", "video_id", "sentence"])
        for i, r in enumerate(rows):
            w.writerow([i, f"ret{i}", f"msr{i}", f"video{i}", r["text"]])
    assert main(["eval", "retrieval", "--checkpoint", str(run), "--data",
                 f"msrvtt:{tmp_path}/MSRVTT_JSFUSION_test.csv?root={tmp_path}/videos", "--json", str(tmp_path / "j.json")]) == 0
    assert json.loads((tmp_path / "j.json").read_text())["video->text"]["n"] == len(rows)

    with open(tmp_path / "vggsound.csv", "w", newline="") as f:
        csv.writer(f).writerows([f"yt{i:02d}-x", 30 + i, r["label"], "test" if i % 2 else "train"] for i, r in enumerate(rows))
    spec = f"vggsound:{tmp_path}/vggsound.csv?root={tmp_path}/videos&split=test"
    got = read_benchmark(spec)[0]
    assert [r["video"] for r in got] == [f"yt{i:02d}-x_{30 + i:06d}.mp4" for i in range(1, 12, 2)]
    assert main(["eval", "retrieval", "--checkpoint", str(run), "--data", spec, "--json", str(tmp_path / "v.json")]) == 0
    assert json.loads((tmp_path / "v.json").read_text())["video->audio"]["n"] == 6  # the clip's own sound track
    assert main(["eval", "zeroshot", "--checkpoint", str(run), "--data", spec, "--classes", str(root / "directions.txt"),
                 "--modality", "video", "--json", str(tmp_path / "z.json")]) == 0
    assert json.loads((tmp_path / "z.json").read_text())["video"]["n"] == 6
    (tmp_path / "bad.csv").write_text("yt01,30,dog\n")
    with pytest.raises(Exception, match="published vggsound layout.*line 1 has 3 fields"):
        read_benchmark(f"vggsound:{tmp_path}/bad.csv")
