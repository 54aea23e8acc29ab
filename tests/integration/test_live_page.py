"""The beamline loop for real: a DECTRIS-protocol publisher on 127.0.0.1 streams a simulated grid
scan in the real wire format, `xrp watch tcp://...` (a subprocess, as a user runs it) answers it
into a SQLite run store and serves the live page, and headless Chromium (Debian's package, driven
by Playwright) shows what a person would see. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from helpers import ROOT, free_port, sigint_default

from xray_platform.live.publisher import GridScan, Publisher, grid_scan_frames
from xray_platform.live.store import RunStore

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("XRP_TEST_ARTIFACTS", ROOT / "test-artifacts"))
# Skipped only where tests/install-browser.sh cannot install the browser (not root, or no apt):
# where it can (CI), a missing browser is a failure, so a green CI means these tests ran.
_CAN_INSTALL = os.geteuid() == 0 and shutil.which("apt-get") is not None
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not _CAN_INSTALL,
                                reason="Debian's chromium is not installed and this user cannot "
                                       "install it (as root: bash tests/install-browser.sh)")


@pytest.fixture(autouse=True)
def _browser_installed() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run bash tests/install-browser.sh (the README's "
                    "test command does)")
SCAN = GridScan(rows=4, cols=5, snake=True, distance_mm=100.0)
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _watch(port: int, ui: int, store: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "xray_platform.cli", "watch", f"tcp://127.0.0.1:{port}",
         "--run", "scan", "--store", store, "--grid", f"{SCAN.rows}x{SCAN.cols}", "--snake",
         "--lattice-model", "none", "--resolution-model", "zoo", "--ui", str(ui), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=sigint_default)


def _wait_for_page(url: str, proc: subprocess.Popen) -> None:
    t0 = time.time()
    while time.time() - t0 < 120:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            pytest.fail("xrp watch stopped:\n" + (proc.stdout.read() or ""))
        time.sleep(0.3)
    proc.kill()
    pytest.fail("the live page did not come up")


def test_a_streamed_grid_scan_on_the_live_page(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    frames, geometry = grid_scan_frames(SCAN)
    pub = Publisher(f"tcp://127.0.0.1:{free_port()}")
    port = int(pub.url.rsplit(":", 1)[1])
    ui, store = free_port(), f"sqlite:///{tmp_path}/runs.db"
    proc = _watch(port, ui, store, "--step-um", "20,25", "--save-hits", str(tmp_path / "hits"))
    page_url = f"http://127.0.0.1:{ui}/ui/runs/scan"
    try:
        _wait_for_page(f"http://127.0.0.1:{ui}/ui", proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_url)
            page.wait_for_selector("#status:has-text('live')", timeout=30_000)
            sender = threading.Thread(target=pub.series, args=(1, frames, geometry),
                                      kwargs={"rate_hz": 4.0})  # 5 s: the page sees it grow
            sender.start()
            page.wait_for_function("+document.getElementById('c-frames').dataset.value >= 3",
                                   timeout=60_000)
            early = int(page.get_attribute("#trace-spots", "data-points"))
            page.screenshot(path=str(ARTIFACTS / "live-page-during-scan.png"))
            sender.join()
            page.wait_for_function(
                f"+document.getElementById('c-frames').dataset.value === {SCAN.n}",
                timeout=60_000)
            page.wait_for_function(f"document.querySelectorAll('#heatmap rect.cell:not("
                                   f"[data-hit=pending])').length === {SCAN.n}")
            # the watcher writes its queue length at most every 0.2 s, after the answers
            page.wait_for_function("document.getElementById('c-queued').dataset.value === '0'",
                                   timeout=10_000)
            late = int(page.get_attribute("#trace-spots", "data-points"))
            hit_cells = page.eval_on_selector_all(
                "#heatmap rect.cell[data-hit=true]",
                "cells => cells.map(c => [+c.dataset.row, +c.dataset.col])")
            counters = {k: page.text_content(f"#c-{k}") for k in
                        ("frames", "hits", "dropped", "queued", "saved", "save-failed")}
            page.wait_for_function("document.getElementById('thumb').naturalWidth > 0")
            rings = page.eval_on_selector_all("#rings circle", "c => c.length")
            page.hover(f"#heatmap rect.cell[data-frame='{SCAN.n - 1}']")
            hover = page.text_content("#hover")
            page.wait_for_function("+document.getElementById('heatmap').dataset.crystals >= 1")
            marks = page.eval_on_selector_all(
                "#heatmap g.centre", "g => g.map(m => [+m.dataset.row, +m.dataset.col])")
            info, centre_text = page.text_content("#run-info"), page.text_content("#centre-text")
            page.screenshot(path=str(ARTIFACTS / "live-page-grid-scan.png"), full_page=True)
            browser.close()
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the answers so far are in the store
        assert proc.wait(timeout=60) == 0, proc.stdout.read()
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        pub.close()
    want = {SCAN.cell(i) for i in range(SCAN.n) if SCAN.is_hit(i)}
    assert {tuple(c) for c in hit_cells} == want  # the crystal, where it was
    n_saved, n_failed = counters.pop("saved"), counters.pop("save-failed")
    assert counters == {"frames": str(SCAN.n), "hits": str(len(want)), "dropped": "0",
                        "queued": "0"}
    assert 1 <= early < late == SCAN.n  # the trace grew as frames arrived
    assert rings >= 3 and f"frame {SCAN.n - 1}" in hover and not errors
    # the crystal's centre drawn on the heat map, where it was (within half a cell), and
    # the run's source, cell and grid stated
    ((row, col),) = marks
    assert abs(row - SCAN.crystal[0]) < 0.5 and abs(col - SCAN.crystal[1]) < 0.5
    assert f"source: stream:tcp://127.0.0.1:{port}" in info and "cell: not given" in info
    assert "grid: 4 x 5 snake, step 20 x 25 µm" in info
    assert "crystal 1: centre row" in centre_text and "µm" in centre_text
    answers = RunStore(store).answers("scan")
    saved = sorted((tmp_path / "hits").glob("*.cbf"))  # --save-hits: every hit as a CBF
    assert len(saved) == len(want) == int(n_saved) and n_failed == "0"
    assert {a["saved_file"] for a in answers if a["hit"]} == {str(p) for p in saved}
    assert sorted(a["frame"] for a in answers) == list(range(SCAN.n))  # each frame once
    assert all(a["resolution_A"] for a in answers if a["hit"])


def test_a_scan_placed_by_motor_positions_on_the_live_page(tmp_path: Path) -> None:
    """A run with a positions file (xrp watch --positions): the heat map is a scatter of the
    frames at their motor positions with the crystal's centre drawn where it was (µm)."""
    import numpy as np
    from helpers import served
    from playwright.sync_api import sync_playwright

    from xray_platform.live import page as live_page
    from xray_platform.live.positions import Positions
    from xray_platform.live.watch import keep_positions

    rng = np.random.default_rng(0)
    r, c = np.divmod(np.arange(42), 7)
    xy = np.stack([c, r], 1) * 20.0 + rng.uniform(-3, 3, (42, 2)) + [1500.0, -800.0]
    truth = (1560.0, -750.0)
    spots = np.round(300 * np.clip(1 - np.hypot(*(xy - truth).T) / 35.0, 0, None)).astype(int)
    url = f"sqlite:///{tmp_path}/runs.db"
    store = RunStore(url)
    rid = store.open_run("pos", "folder:/data/pos")
    keep_positions(store, rid, Positions("/data/pos.csv", by_index={
        i: (float(x), float(y)) for i, (x, y) in enumerate(xy)}))
    store.add(rid, [{"file": "/data/pos/s_master.h5", "frame": i, "hit": bool(n >= 15),
                     "n_spots": int(n)} for i, n in enumerate(spots)])
    with served(live_page.app(url)) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/ui/runs/pos")
        page.wait_for_function("document.querySelectorAll('#heatmap circle.point').length "
                               "=== 42", timeout=30_000)
        hits = page.eval_on_selector_all("#heatmap circle.point[data-hit=true]", "c => c.length")
        marks = page.eval_on_selector_all(
            "#heatmap g.centre", "g => g.map(m => [+m.dataset.x, +m.dataset.y])")
        info, text = page.text_content("#run-info"), page.text_content("#centre-text")
        page.screenshot(path=str(ARTIFACTS / "live-page-positions.png"), full_page=True)
        browser.close()
    assert hits == int((spots >= 15).sum()) and not errors
    ((x, y),) = marks
    assert abs(x - truth[0]) < 10 and abs(y - truth[1]) < 10  # within half a step
    assert "positions: from /data/pos.csv, a 6 x 7 raster, 42 placed" in info
    assert "crystal 1: centre x" in text and "best frame" in text
