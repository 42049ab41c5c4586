"""A live `multijepa serve` and headless Chromium, for the tests that drive the search page."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(index_dir: Path, log: Path, rows: int):
    """`multijepa serve` in a subprocess, as a user starts it; -> its base URL."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "multijepa", "serve", "--index", str(index_dir), "--port", str(port)],
                                stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 120
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/api/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"multijepa serve did not come up:\n{log.read_text()}")
            time.sleep(0.3)
        assert f"serving {rows} rows" in log.read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def browser():
    """Headless Chromium through Selenium with Debian's chromium and chromium-driver (no download)."""
    from selenium import webdriver  # only the browser tests need it
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    assert chromium and driver, "the browser test needs Chromium: apt-get install chromium chromium-driver"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)
