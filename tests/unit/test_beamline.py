"""Closing the loop at the beamline (issue 32, items 1, 2, 5): grid-scan centring on simulated
grids with a known crystal position (cells and µm, snake order, two crystals apart), served by
`xrp runs centre` and GET /v1/runs/{run}/centre over a real SQLite store and a real HTTP
server; hit lists whose listed frames read back with xrp's own frame reader; `--save-hits` of a
streamed run over a real ZeroMQ socket, and a full disk counted while the run goes on."""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import free_port, nxmx_master, served, xrp_here

from xray_platform.io.cbf import write_cbf
from xray_platform.io.formats import read_frame, read_info
from xray_platform.live import page
from xray_platform.live.centre import cell_of, centre, parse_step
from xray_platform.live.hits import SaveHits, read_crystfel_list, write_frame_cbf
from xray_platform.live.publisher import GridScan, Publisher, grid_scan_frames
from xray_platform.live.store import RunStore
from xray_platform.live.stream import watch_stream
from xray_platform.live.watch import answerer, watch_folder


def _disc_spots(rows: int, cols: int, crystals: list[tuple[float, float, float]],
                peak: float = 400.0) -> np.ndarray:
    """Spots per cell of a grid over spherical crystals (row, col, radius in cells): ``peak``
    times the crystal volume the cell's beam crosses (its thickness sqrt(R² - d²) / R, averaged
    over 16 x 16 points of the cell)."""
    k = 16
    sub = (np.arange(k) + 0.5) / k - 0.5
    rr = np.arange(rows)[:, None, None, None] + sub[None, None, :, None]
    cc = np.arange(cols)[None, :, None, None] + sub[None, None, None, :]
    thick = np.zeros((rows, cols, k, k))
    for r0, c0, rad in crystals:
        d2 = (rr - r0) ** 2 + (cc - c0) ** 2
        thick += np.sqrt(np.clip(rad ** 2 - d2, 0, None)) / rad
    return peak * thick.mean(axis=(2, 3))


def _answers(spots: np.ndarray, snake: bool, file: str = "tcp://dcu:9999#series-1") -> list:
    """The answers a watcher stores for the grid, frame i at cell_of(i) (hit: >= 15 spots)."""
    rows, cols = spots.shape
    out = []
    for i in range(rows * cols):
        n = int(round(spots[cell_of(i, cols, snake)]))
        out.append({"file": file, "frame": i, "hit": n >= 15, "n_spots": n,
                    "resolution_A": 2.0 if n >= 15 else None})
    return out


def test_a_known_crystal_is_found_in_cells_and_um_in_a_snake_grid() -> None:
    truth = (3.3, 6.6, 2.0)  # row, col, radius (cells)
    answers = _answers(_disc_spots(8, 10, [truth]), snake=True)
    c = centre(answers, 8, 10, snake=True, step_um=(20.0, 15.0))
    (g,) = c["regions"]
    err = np.hypot(g["centre"]["row"] - truth[0], g["centre"]["col"] - truth[1])
    assert err < 0.15, g["centre"]  # cells
    err_um = np.hypot(g["centre_um"]["x"] - truth[1] * 20, g["centre_um"]["y"] - truth[0] * 15)
    assert err_um < 3.0, g["centre_um"]  # µm, on a 20 x 15 µm grid
    e = g["extent"]  # a crystal 4 cells across; its thin edge may diffract too few spots
    assert (e["row_min"], e["row_max"], e["col_min"], e["col_max"]) in [
        (r0, r1, c0, c1) for r0 in (1, 2) for r1 in (4, 5) for c0 in (5, 6) for c1 in (8, 9)]
    assert g["extent_um"] == {"x": 20.0 * e["cols"], "y": 15.0 * e["rows"]}
    assert (c["best_cell"]["row"], c["best_cell"]["col"]) == (3, 7)  # its cell holds the centre
    assert c["best_cell"]["frame"] == 3 * 10 + (10 - 1 - 7)  # an odd row runs backwards
    assert c["best_cell"]["um"] == {"x": 140.0, "y": 45.0}
    wrong = centre(answers, 8, 10, snake=False)  # read as a raster scan: the crystal is torn
    assert len(wrong["regions"]) > 1 or abs(wrong["centre"]["col"] - truth[1]) > 0.5
    assert (c["weighting"], c["connectivity"]) == ("n_spots", 8)


def test_spot_weighting_pulls_the_centre_to_where_the_crystal_is() -> None:
    truth = (2.0, 2.35, 1.3)  # off-centre in its cell: the edge cells diffract less
    answers = _answers(_disc_spots(5, 6, [truth]), snake=False)
    (g,) = centre(answers, 5, 6)["regions"]
    flat = [dict(a, n_spots=100 if a["hit"] else 0) for a in answers]  # every hit the same
    (h,) = centre(flat, 5, 6)["regions"]
    assert abs(g["centre"]["col"] - truth[1]) < abs(h["centre"]["col"] - truth[1])
    assert abs(g["centre"]["col"] - truth[1]) < 0.1


def test_two_crystals_in_one_grid_are_listed_apart() -> None:
    crystals = [(1.5, 1.5, 1.2), (5.4, 7.2, 1.7)]
    c = centre(_answers(_disc_spots(8, 10, crystals), snake=True), 8, 10, snake=True,
               step_um=(10.0, 10.0))
    assert len(c["regions"]) == 2 and c["hits"] == sum(g["n_cells"] for g in c["regions"])
    big, small = c["regions"]  # the strongest first
    assert (big["crystal"], small["crystal"]) == (1, 2) and big["spots"] > small["spots"]
    for g, (r0, c0, _) in zip((big, small), crystals[::-1], strict=True):
        assert np.hypot(g["centre"]["row"] - r0, g["centre"]["col"] - c0) < 0.15
        assert np.hypot(g["centre_um"]["x"] - c0 * 10, g["centre_um"]["y"] - r0 * 10) < 1.5
    assert c["centre"] == big["centre"]
    # cells touching only at a corner are one crystal (8-connectivity)
    diag = [{"file": "f", "frame": i, "hit": i in (0, 4), "n_spots": 50} for i in range(9)]
    assert len(centre(diag, 3, 3)["regions"]) == 1
    blank = centre([{"file": "f", "frame": i, "hit": False, "n_spots": 2} for i in range(6)],
                   2, 3)
    assert blank["regions"] == [] and blank["best_cell"] is None and blank["centre"] is None


def test_a_folder_of_one_frame_files_is_placed_in_file_order() -> None:
    spots = _disc_spots(3, 4, [(1.0, 2.0, 1.0)])
    answers = [dict(a, file=f"/d/g_{a['frame']:04d}.cbf", frame=0)
               for a in _answers(spots, snake=False)]
    c = centre(answers[::-1], 3, 4)  # arrival order does not matter, file order does
    assert (c["best_cell"]["row"], c["best_cell"]["col"]) == (1, 2)
    assert c["best_cell"]["file"] == "/d/g_0006.cbf"
    with pytest.raises(ValueError, match="two positive"):
        parse_step("20,-1")
    assert parse_step("25") == (25.0, 25.0) and parse_step(None) is None


def test_centre_from_the_store_by_cli_and_http(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/runs.db"
    store = RunStore(url)
    truth = [(1.4, 2.2, 1.1), (4.6, 6.5, 1.4)]
    answers = _answers(_disc_spots(6, 8, truth), snake=True)
    run = store.open_run("grid", "stream:tcp://dcu:9999")
    store.set_live(run, raster={"rows": 6, "cols": 8, "snake": True})
    store.set_info(run, step_um=[20.0, 20.0], cell=[78.0, 78.0, 37.0, 90, 90, 90])
    store.add(run, answers)
    plain = store.open_run("plain", "folder:/x")
    store.add(plain, answers)
    want = centre(answers, 6, 8, snake=True, step_um=(20.0, 20.0))

    r = xrp_here("runs", "centre", "grid", "--store", url, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(r.stdout)
    assert got["run"] == "grid" and got["regions"] == want["regions"]
    r = xrp_here("runs", "centre", "grid", "--store", url)
    assert r.returncode == 0 and "2 crystal(s)" in r.stdout and "step 20 x 20 µm" in r.stdout
    assert f"{want['regions'][0]['centre_um']['x']:.1f}" in r.stdout
    r = xrp_here("runs", "centre", "plain", "--store", url)
    assert r.returncode != 0 and "not a grid scan" in r.stdout + r.stderr
    r = xrp_here("runs", "centre", "plain", "--store", url, "--grid", "6x8", "--snake",
                 "--json")
    assert json.loads(r.stdout)["regions"] == centre(answers, 6, 8, snake=True)["regions"]

    with served(page.app(url)) as base:
        got = requests.get(f"{base}/v1/runs/grid/centre", timeout=10).json()
        assert got["regions"] == want["regions"] and got["step_um"] == [20.0, 20.0]
        q = requests.get(f"{base}/v1/runs/plain/centre", timeout=10,
                         params={"rows": 6, "cols": 8, "snake": 1, "step_um": "5,5"}).json()
        assert q["regions"][0]["extent_um"]["x"] == 5 * q["regions"][0]["extent"]["cols"]
        assert requests.get(f"{base}/v1/runs/plain/centre", timeout=10).status_code == 422
        assert requests.get(f"{base}/v1/runs/nosuch/centre", timeout=10).status_code == 404
        snap = requests.get(f"{base}/ui/api/runs/grid", timeout=10).json()
        assert snap["centre"]["regions"] == want["regions"]  # what the live page draws
        assert snap["cell"][:3] == [78.0, 78.0, 37.0] and snap["step_um"] == [20.0, 20.0]
        after = requests.get(f"{base}/ui/api/runs/grid", params={"after": 1000},
                             timeout=10).json()
        assert "centre" not in after  # no new answers: the centring is not recomputed


GEOM = dict(wavelength_A=1.0, distance_mm=150.0, pixel_size_mm=0.172,
            beam_center_px=(130.0, 120.0))


def test_the_hit_list_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "visit"
    folder.mkdir()
    rng = np.random.default_rng(3)
    stack = rng.poisson(2.0, (5, 240, 260)).astype(np.int32)
    for i in range(3):
        write_cbf(folder / f"g_{i:04d}.cbf", stack[i], **GEOM)
    nxmx_master(folder / "s_master.h5", stack, GEOM["wavelength_A"], GEOM["distance_mm"],
                GEOM["pixel_size_mm"], GEOM["beam_center_px"])  # 5 frames in one file
    url = f"sqlite:///{tmp_path}/runs.db"
    store = RunStore(url)
    watch_folder(folder, store, "visit", {}, poll_s=0.05, settle_s=0.0, exit_when_idle_s=0.3)
    answers = store.answers("visit")
    assert len(answers) == 8 and not any(a.get("error") for a in answers)
    # background frames are misses for the hit finder: which frames are hits is the store's
    # record; mark some (as a crystal would), the rest stays as answered
    hits = {(str(folder / "g_0001.cbf"), 0), (str(folder / "s_master.h5"), 0),
            (str(folder / "s_master.h5"), 3)}
    rid = store.run("visit")["id"]
    marked = [dict(a, hit=(a["file"], a["frame"]) in hits) for a in answers]
    hit_run = store.open_run("hits", "folder:" + str(folder))
    store.add(hit_run, marked)
    assert rid != hit_run
    lst, txt = tmp_path / "hits.lst", tmp_path / "hits.txt"
    r = xrp_here("runs", "export", "hits", "--hits", str(lst), "--store", url)
    assert r.returncode == 0 and "3 hits" in r.stdout, r.stdout + r.stderr
    lines = lst.read_text().splitlines()
    assert sorted(lines) == sorted([f"{folder}/g_0001.cbf", f"{folder}/s_master.h5 //0",
                                    f"{folder}/s_master.h5 //3"])
    listed = read_crystfel_list(lst)
    assert set(listed) == hits
    for file, frame in listed:  # each listed frame reads back, the very frame that was hit
        img = read_frame(file, frame).image
        want = stack[int(Path(file).stem.split("_")[1])] if file.endswith(".cbf") \
            else stack[frame]
        assert np.array_equal(img, want.astype(np.float32))
    r = xrp_here("runs", "export", "hits", "--hits", str(txt), "--store", url)
    assert r.returncode == 0 and "dials list" in r.stdout
    assert txt.read_text().splitlines() == list(dict.fromkeys(f for f, _ in listed))
    r = xrp_here("runs", "export", "hits", "--store", url)
    assert r.returncode != 0 and "--hits" in r.stdout + r.stderr
    r = xrp_here("runs", "export", "hits", "--hits", str(lst), "--format", "xds",
                 "--store", url)
    assert r.returncode != 0 and "crystfel, dials" in r.stdout + r.stderr


def _stream_run(tmp_path: Path, saver_of, n_series: int = 1):
    scan = GridScan(rows=2, cols=4, crystal=(0.5, 1.5), radius=1.0)
    frames, geometry = grid_scan_frames(scan)
    url = f"sqlite:///{tmp_path}/runs.db"
    store = RunStore(url)
    src = f"tcp://127.0.0.1:{free_port()}"
    pub = Publisher(src)
    saver = saver_of(store)
    out = {}
    t = threading.Thread(target=lambda: out.update(s=watch_stream(
        src, store, "scan", saver, exit_after_series=1, batch=3)))
    t.start()
    pub.series(1, frames, geometry)
    t.join(timeout=60)
    pub.close()
    assert not t.is_alive()
    return scan, frames, geometry, store, url, saver, out["s"]


def _keeper(store: RunStore):
    return lambda counts: store.set_info(store.run("scan")["id"], save_hits=counts)


def test_save_hits_writes_each_streamed_hit_as_a_cbf_with_its_geometry(tmp_path: Path) -> None:
    import fabio

    scan, frames, geometry, store, url, saver, stats = _stream_run(
        tmp_path, lambda s: SaveHits(answerer({}), tmp_path / "hits", on_counts=_keeper(s)))
    want = [i for i in range(scan.n) if scan.is_hit(i)]
    assert stats.answered == scan.n and stats.hits == len(want)
    assert saver.counts()["written"] == len(want) and saver.failed == 0
    saved = {a["frame"]: a["saved_file"] for a in store.answers("scan") if a.get("saved_file")}
    assert sorted(saved) == want and all(Path(p).parent == tmp_path / "hits"
                                         for p in saved.values())
    for i, path in saved.items():  # xrp's reader and fabio read the pixels and geometry back
        frame, info = read_frame(path), read_info(path)
        gaps = frames[i] == np.iinfo(np.uint32).max
        assert np.array_equal(frame.image[~gaps], frames[i][~gaps].astype(np.float32))
        assert (frame.image[gaps] < 0).all()
        assert info.wavelength_A == pytest.approx(geometry.wavelength_A, rel=1e-6)
        assert info.distance_mm == pytest.approx(geometry.distance_mm, rel=1e-6)
        assert info.beam_center_px == pytest.approx(geometry.beam_center_px, abs=1e-3)
        hdr = fabio.open(path).header
        assert "PILATUS_1.2" in hdr["_array_data.header_convention"]
        assert "Wavelength" in hdr["_array_data.header_contents"]
    lst = tmp_path / "scan.lst"
    r = xrp_here("runs", "export", "scan", "--hits", str(lst), "--store", url)
    assert r.returncode == 0 and "no file on disk" not in r.stdout + r.stderr
    assert [f for f, _ in read_crystfel_list(lst)] == [saved[i] for i in want]
    r = xrp_here("runs", "show", "scan", "--store", url)
    assert f"hits saved: {len(want)} in {tmp_path / 'hits'}, 0 failed" in r.stdout


def test_a_full_disk_is_counted_and_the_run_goes_on(tmp_path: Path) -> None:
    room = {"left": 1}

    def disk(path: Path, frame) -> None:  # a disk with room for one frame
        if room["left"] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        room["left"] -= 1
        write_frame_cbf(path, frame)

    scan, _, _, store, url, saver, stats = _stream_run(
        tmp_path, lambda s: SaveHits(answerer({}), tmp_path / "hits", write=disk,
                                     on_counts=_keeper(s)))
    n_hits = sum(scan.is_hit(i) for i in range(scan.n))
    assert stats.answered == scan.n  # every frame answered and stored, full disk or not
    assert len(store.answers("scan")) == scan.n
    kept = store.info(store.run("scan")["id"])["save_hits"]
    assert (kept["written"], kept["failed"]) == (1, n_hits - 1)
    assert "No space left on device" in kept["last_error"]
    assert [p.suffix for p in (tmp_path / "hits").iterdir()] == [".cbf"]  # no partial files
    r = xrp_here("runs", "show", "scan", "--store", url)
    assert f"{n_hits - 1} failed to write" in r.stdout and "No space left" in r.stdout
    lst = tmp_path / "scan.lst"
    r = xrp_here("runs", "export", "scan", "--hits", str(lst), "--store", url)
    assert r.returncode == 0 and f"{n_hits - 1} hits have no file on disk" in r.stderr
    assert len(lst.read_text().splitlines()) == 1
    with served(page.app(url)) as base:  # the live page's counters
        c = requests.get(f"{base}/ui/api/runs/scan", timeout=10).json()["counters"]
        assert (c["saved"], c["save_failed"]) == (1, n_hits - 1)


def test_a_folder_that_cannot_be_made_is_counted_not_fatal(tmp_path: Path) -> None:
    from xray_platform.io.formats import Frame, FrameInfo

    (tmp_path / "taken").write_text("a file where the folder should be")  # a real OSError,
    saver = SaveHits(lambda fs: [{"file": f.path, "frame": f.index, "hit": True}  # root or not
                                 for f in fs], tmp_path / "taken" / "hits")
    info = FrameInfo(wavelength_A=1.0, distance_mm=150.0, pixel_size_mm=0.172,
                     beam_center_px=(128.0, 128.0), n_fast=256, n_slow=256, detector="x",
                     format="npy", n_frames=1)
    img = np.random.default_rng(0).poisson(3.0, (256, 256)).astype(np.float32)
    out = saver([Frame(img, info, "tcp://h:1#series-1", i) for i in (0, 1)])
    assert [a["hit"] for a in out] == [True, True] and not any("saved_file" in a for a in out)
    assert (saver.failed, saver.written) == (2, 0) and "series-1_000001.cbf" in saver.last_error
