"""`multijepa serve`: the JSON API (FastAPI's test client), what the server refuses to read (raw
HTTP against a live server), and the search page driven in headless Chromium."""

from __future__ import annotations

import http.client
import io
import json

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from multijepa.cli import main
from multijepa.model import MultiJEPA
from multijepa.retrieval.index import EmbeddingIndex
from multijepa.serve.app import create_app
from tests.live_server import browser as open_browser
from tests.live_server import live_server


@pytest.fixture(scope="module")
def index_dir(run, demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "idx"
    assert main(["index", "--checkpoint", str(run), "--data", str(demo / "test.jsonl"), "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def client(index_dir, run):
    index = EmbeddingIndex(index_dir)
    return TestClient(create_app(index, MultiJEPA.from_pretrained(run), max_upload_mb=1))


def _cli_json(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["search", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _same_as_cli(api: dict, cli: dict) -> None:
    """The API answers what `search --json` prints, plus a `media` map per hit."""
    assert set(api["results"]) == set(cli["results"])
    for m, hits in cli["results"].items():
        got = api["results"][m]
        assert [h["row"] for h in got] == [h["row"] for h in hits]
        for g, h in zip(got, hits):
            assert set(g) == set(h) | {"media"}
            assert {k: v for k, v in g.items() if k not in ("score", "media")} == {k: v for k, v in h.items() if k != "score"}
            assert g["score"] == pytest.approx(h["score"], abs=1e-5)


def test_health_says_what_is_loaded(client):
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["rows"] == 24
    assert h["modalities"] == {"image": 24, "text": 24, "audio": 24}


def test_text_search_matches_the_search_command(client, index_dir, capsys):
    api = client.get("/api/search", params={"text": "a big red circle", "k": 5}).json()
    assert api["query"] == {"text": "a big red circle"}
    assert all(len(hits) == 5 for hits in api["results"].values())
    _same_as_cli(api, _cli_json(capsys, "--index", str(index_dir), "--text", "a big red circle", "--top-k", "5"))


def test_image_audio_and_summed_uploads_match_the_search_command(client, index_dir, demo, capsys):
    image, audio = demo / "images" / "test_00001.png", demo / "audio" / "test_00002.wav"
    for files, data, args in (
        ({"image": ("a.png", image.read_bytes(), "image/png")}, {}, ["--image", str(image)]),
        ({"audio": ("b.wav", audio.read_bytes(), "audio/wav")}, {}, ["--audio", str(audio)]),
        ({"image": ("a.png", image.read_bytes(), "image/png"), "audio": ("b.wav", audio.read_bytes(), "audio/wav")},
         {"text": "a small blue square"}, ["--image", str(image), "--audio", str(audio), "--text", "a small blue square"]),
    ):
        r = client.post("/api/search", files=files, data={**data, "k": "4"})
        assert r.status_code == 200, r.text
        _same_as_cli(r.json(), _cli_json(capsys, "--index", str(index_dir), "--top-k", "4", *args))


def test_the_modality_filter_and_k(client):
    r = client.get("/api/search", params={"text": "a red circle", "modality": "audio", "k": 3}).json()
    assert list(r["results"]) == ["audio"] and len(r["results"]["audio"]) == 3
    r = client.get("/api/search", params={"text": "a red circle", "modality": "image,text", "k": 100}).json()
    assert set(r["results"]) == {"image", "text"} and len(r["results"]["image"]) == 24  # k beyond the corpus


def test_a_caption_finds_itself_and_more_like_this_finds_the_item(client, demo):
    caption = json.loads((demo / "test.jsonl").read_text().splitlines()[5])["text"]
    hits = client.get("/api/search", params={"text": caption, "modality": "text", "k": 3}).json()["results"]["text"]
    assert hits[0]["text"] == caption and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    r = client.get("/api/search", params={"like": 7, "like_modality": "image", "k": 2}).json()
    assert r["query"] == {"like": {"row": 7, "modality": "image"}}
    assert set(r["results"]) == {"image", "text", "audio"}  # alone, "more like this" looks everywhere
    assert r["results"]["image"][0]["row"] == 7 and r["results"]["image"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert r["results"]["image"][0]["media"] == {"image": "/media/7/image", "audio": "/media/7/audio"}


def test_items_and_their_media_are_served_by_row(client, demo):
    item = client.get("/api/item/3").json()
    assert item["row"] == 3 and item["indexed"] == ["image", "text", "audio"]
    got = client.get(item["media"]["image"])
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert got.content == (demo / "images" / "test_00003.png").read_bytes()
    got = client.get(item["media"]["audio"])
    assert got.status_code == 200 and got.headers["content-type"].startswith("audio/")
    assert client.get("/").status_code == 200 and "MultiJEPA search" in client.get("/").text
    assert client.get("/static/app.js").status_code == 200


def _wav(seconds: float = 1.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, (0.1 * np.random.default_rng(0).standard_normal(int(16000 * seconds))).astype(np.float32), 16000,
             format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.mark.parametrize("how, status, says", [
    (dict(files={"image": ("notes.png", b"these are not pixels", "image/png")}), 400, "image upload 'notes.png'"),
    (dict(files={"audio": ("cut.wav", _wav()[:16000], "audio/wav")}), 400, "truncated WAV"),
    (dict(files={"audio": ("empty.wav", b"", "audio/wav")}), 400, "empty"),
    (dict(files={"image": ("big.png", b"0" * (2 << 20), "image/png")}), 413, "larger than 1 MB"),
    (dict(data={"text": "a red circle", "k": "0"}), 400, "k must be between"),
    (dict(data={"text": "a red circle", "k": "many"}), 400, "k:"),
    (dict(data={"text": "a red circle", "modality": "smell"}), 400, "no smell vectors"),
    (dict(data={"text": "   "}), 400, "give a query"),
    (dict(data={"like": "99"}), 400, "row 99"),
    (dict(data={"like": "-1"}), 400, "row -1"),
])
def test_bad_queries_get_a_one_line_4xx(client, how, status, says):
    r = client.post("/api/search", **how)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and says in detail and "\n" not in detail


@pytest.mark.parametrize("url, status", [
    ("/api/item/24", 404), ("/api/item/-1", 404), ("/api/item/x", 400),
    ("/media/3/text", 404), ("/media/24/image", 404), ("/media/-1/image", 404), ("/media/x/image", 400),
    ("/api/search?k=3", 400),
])
def test_unknown_rows_and_kinds_get_a_4xx(client, url, status):
    r = client.get(url)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str)


# ----------------------------------------------------------------------------- a live server


@pytest.fixture(scope="module")
def server(index_dir, tmp_path_factory):
    with live_server(index_dir, tmp_path_factory.mktemp("serve_log") / "serve.log", rows=24) as url:
        yield url


@pytest.mark.parametrize("path", [
    "/../../../../etc/passwd", "/static/../app.py", "/static/../../cli.py", "/static/%2e%2e/app.py",
    "/static/%2e%2e%2fapp.py", "/static/..%2F..%2Fcli.py", "/static/%252e%252e/app.py", "/static//etc/passwd",
    "/static/%2Fetc%2Fpasswd", "/media/3/..%2F..%2F..%2Fetc%2Fpasswd", "/media/../../etc/passwd",
    "/media/3/image/../../../../etc/passwd", "/media/%2Fetc%2Fpasswd/image", "/etc/passwd", "/api/item/..%2F..%2Fetc",
])
def test_nothing_outside_the_index_is_served(server, path, index_dir):
    """Raw HTTP, so the path reaches the server exactly as written (clients tidy `..` away)."""
    host, port = server.removeprefix("http://").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    assert 400 <= r.status < 500, (path, r.status)
    assert b"root:" not in body and b"def " not in body


def test_the_search_page_in_a_real_browser(server, demo, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    rows = [json.loads(line) for line in (demo / "test.jsonl").read_text().splitlines()]
    browser = open_browser()
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(server + "/")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "input[name=modality]"))
        assert "24 rows" in browser.find_element(By.ID, "status").text

        def results(modality: str, n: int):
            css = f".grid[data-modality={modality}] .card"
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, css)) == n)
            return browser.find_elements(By.CSS_SELECTOR, css)

        # a caption of the corpus, searched among the captions: it comes first
        browser.find_element(By.ID, "text").send_keys(rows[5]["text"])
        browser.find_element(By.CSS_SELECTOR, "input[name=modality][value=text]").click()
        k = browser.find_element(By.ID, "k")
        k.clear()
        k.send_keys("3")
        browser.find_element(By.ID, "go").click()
        cards = results("text", 3)
        assert cards[0].find_element(By.CLASS_NAME, "caption").text == rows[5]["text"]
        assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None

        # an uploaded image, searched among the images: the same image comes first, shown
        browser.find_element(By.ID, "clear").click()
        browser.find_element(By.ID, "upload-image").send_keys(str(demo / "images" / "test_00009.png"))
        browser.find_element(By.CSS_SELECTOR, "input[name=modality][value=image]").click()
        browser.find_element(By.ID, "go").click()
        cards = results("image", 10)
        assert cards[0].get_attribute("data-row") == "9"
        img = cards[0].find_element(By.TAG_NAME, "img")
        wait.until(lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img))
        assert img.get_attribute("src").endswith("/media/9/image")

        # a sound dropped on the page (a synthetic drop event carrying a file) becomes the audio query
        browser.find_element(By.ID, "clear").click()
        dropped = browser.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch('/media/4/audio').then(r => r.blob()).then(b => {
              const dt = new DataTransfer();
              dt.items.add(new File([b], 'dropped.wav', {type: 'audio/wav'}));
              document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
              done(document.getElementById('upload-audio').files[0].name);
            });""")
        assert dropped == "dropped.wav"
        browser.find_element(By.CSS_SELECTOR, "input[name=modality][value=audio]").click()
        browser.find_element(By.ID, "go").click()
        assert results("audio", 10)[0].get_attribute("data-row") == "4"

        # "more like this" on the third image result searches with that row
        browser.find_element(By.ID, "clear").click()
        browser.find_element(By.ID, "upload-image").send_keys(str(demo / "images" / "test_00009.png"))
        browser.find_element(By.CSS_SELECTOR, "input[name=modality][value=image]").click()
        browser.find_element(By.ID, "go").click()
        cards = results("image", 10)
        row = cards[2].get_attribute("data-row")
        cards[2].find_element(By.CLASS_NAME, "more").click()
        wait.until(lambda b: f"like row {row}" in b.find_element(By.ID, "like").text)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".grid[data-modality=image] .card")[0].get_attribute("data-row") == row)

        # a bad upload shows the server's one-line reason
        browser.find_element(By.ID, "clear").click()
        bad = tmp_path / "not_an_image.png"
        bad.write_bytes(b"hello")
        browser.find_element(By.ID, "upload-image").send_keys(str(bad))
        browser.find_element(By.ID, "go").click()
        wait.until(lambda b: "not_an_image.png" in b.find_element(By.ID, "error").text)

        shot = tmp_path / "search_page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        browser.quit()
