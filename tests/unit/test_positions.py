"""Centring from motor positions (issue 32, item 1): frames at scattered or jittered (x, y) µm,
read from a positions file or the DECTRIS stream's image user_data (live/positions.py), centred
by live/centre.py (a raster inferred from the positions, else linked by distance), kept in the
run store and served by `xrp runs centre` (typer's CliRunner) and GET /v1/runs/{run}/centre."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import free_port, served
from typer.testing import CliRunner

from xray_platform.cli import app as cli
from xray_platform.live import dectris, page
from xray_platform.live.centre import centre_at, centre_positions, infer_raster, spacing
from xray_platform.live.positions import Positions, from_user_data, read_positions
from xray_platform.live.store import RunStore
from xray_platform.live.watch import keep_positions

STEP = 20.0
STAGE = np.array([1523.7, -842.1])  # the stage position of the scan's first point (µm)


def _turn(uv: np.ndarray, deg: float) -> np.ndarray:
    """Raster coordinates (µm from the first point) turned by ``deg``, placed at STAGE."""
    t = math.radians(deg)
    return np.asarray(uv, float) @ np.array([[math.cos(t), math.sin(t)],
                                             [-math.sin(t), math.cos(t)]]) + STAGE


def _raster(rows: int, cols: int, jitter: float = 0.0, turn_deg: float = 0.0,
            seed: int = 0) -> np.ndarray:
    """(n, 2) µm positions of a raster STEP apart from STAGE, in scan order (rows of x), each
    off by up to ``jitter`` steps, the raster turned by ``turn_deg``."""
    rng = np.random.default_rng(seed)
    r, c = np.divmod(np.arange(rows * cols), cols)
    return _turn(np.stack([c, r], 1) * STEP + rng.uniform(-jitter, jitter, (r.size, 2)) * STEP,
                 turn_deg)


def _answers(xy: np.ndarray, crystals: list[tuple[float, float, float]],
             file: str = "tcp://dcu:9999#series-1") -> list[dict]:
    """Answers of beams (squares of one STEP) at ``xy`` over spheres (x, y, radius µm): spots
    are 400 x the crystal thickness the beam crosses, a hit from 15 spots."""
    k = 12
    sub = ((np.arange(k) + 0.5) / k - 0.5) * STEP
    px, py = xy[:, 0, None, None] + sub[None, :, None], xy[:, 1, None, None] + sub[None, None]
    thick = np.zeros((len(xy), k, k))
    for x0, y0, rad in crystals:
        thick += np.sqrt(np.clip(rad ** 2 - (px - x0) ** 2 - (py - y0) ** 2, 0, None)) / rad
    spots = np.round(400 * thick.mean(axis=(1, 2))).astype(int)
    return [{"file": file, "frame": i, "hit": bool(n >= 15), "n_spots": int(n),
             "resolution_A": 2.0 if n >= 15 else None} for i, n in enumerate(spots)]


def _off(g: dict, x: float, y: float) -> float:
    return math.hypot(g["centre_um"]["x"] - x, g["centre_um"]["y"] - y)


def test_a_known_crystal_on_a_jittered_raster_is_found_within_half_a_step() -> None:
    xy = _raster(8, 10, jitter=0.15, seed=1)
    truth = (STAGE[0] + 97.0, STAGE[1] + 73.0, 2.2 * STEP)
    c = centre_at(_answers(xy, [truth]), xy)
    assert c["layout"] == "raster" and c["raster"]["rows"] == 8 and c["raster"]["cols"] == 10
    assert c["step_um"] == pytest.approx([STEP, STEP], abs=1.0)
    (g,) = c["regions"]
    assert _off(g, truth[0], truth[1]) < 0.25 * STEP, g["centre_um"]  # absolute motor µm
    b = c["best_cell"]  # the best frame is one of the frames, at its own position
    assert (b["um"]["x"], b["um"]["y"]) == pytest.approx(tuple(xy[b["frame"]]), abs=0.01)
    assert math.hypot(b["um"]["x"] - truth[0], b["um"]["y"] - truth[1]) < STEP
    e = g["extent_um"]  # a crystal 4.4 steps across: its hits span 4-6 steps
    assert 3.5 * STEP < e["x"] < 6.5 * STEP and 3.5 * STEP < e["y"] < 6.5 * STEP
    assert g["bounds_um"]["x_min"] <= g["centre_um"]["x"] <= g["bounds_um"]["x_max"]
    # the same frames scattered in another order: the same answer (positions, not order)
    order = np.random.default_rng(2).permutation(len(xy))
    again = centre_at([_answers(xy, [truth])[k] for k in order], xy[order])
    assert again["regions"][0]["centre_um"] == g["centre_um"]


def test_spot_weighting_pulls_the_centre_to_where_the_crystal_is() -> None:
    xy = _raster(5, 6)
    truth = (*(STAGE + [2.35 * STEP, 2.0 * STEP]), 1.3 * STEP)  # off the middle of a cell
    answers = _answers(xy, [truth])
    (g,) = centre_at(answers, xy)["regions"]
    flat = [dict(a, n_spots=100 if a["hit"] else 0) for a in answers]  # every hit the same
    (h,) = centre_at(flat, xy)["regions"]
    assert _off(g, truth[0], truth[1]) < 0.5 * _off(h, truth[0], truth[1])
    assert _off(g, truth[0], truth[1]) < 0.05 * STEP


def test_a_turned_raster_is_centred_by_distance() -> None:
    xy = _raster(9, 9, jitter=0.05, turn_deg=25.0, seed=3)
    truth = (*(STAGE + [40.0, 90.0]), 1.8 * STEP)
    c = centre_at(_answers(xy, [truth]), xy)
    assert c["layout"] == "scattered" and c["connectivity"] == "distance"
    assert c["link_um"] == pytest.approx(1.5 * c["spacing_um"], abs=0.01)
    (g,) = c["regions"]
    assert _off(g, truth[0], truth[1]) < 0.25 * STEP, g["centre_um"]
    assert "centre" not in g  # no cells without a raster: µm only


def test_two_crystals_are_listed_apart_on_a_raster_and_scattered() -> None:
    for turn, jitter in ((0.0, 0.15), (30.0, 0.0)):  # a raster; turned: linked by distance
        xy = _raster(8, 12, jitter=jitter, turn_deg=turn, seed=4)
        where = _turn([[50.0, 60.0], [170.0, 90.0]], turn)  # 3.5 steps between their edges
        crystals = [(*where[0], 1.2 * STEP), (*where[1], 1.5 * STEP)]
        c = centre_at(_answers(xy, crystals), xy)
        assert c["layout"] == ("raster" if turn == 0 else "scattered")
        assert len(c["regions"]) == 2, c["layout"]
        big, small = c["regions"]
        assert (big["crystal"], small["crystal"]) == (1, 2) and big["spots"] > small["spots"]
        for g, (x, y, _) in zip((big, small), crystals[::-1], strict=True):
            assert _off(g, x, y) < 0.5 * STEP, (c["layout"], g["centre_um"])
        assert c["centre_um"] == big["centre_um"]


def test_only_a_filled_unstaggered_pattern_is_taken_for_a_raster() -> None:
    plain = _raster(6, 7, jitter=0.2)
    assert infer_raster(plain, spacing(plain)) is not None
    r, c = np.divmod(np.arange(42), 7)
    staggered = np.stack([c + 0.5 * (r % 2), r * math.sqrt(3) / 2], 1) * STEP
    assert infer_raster(staggered, spacing(staggered)) is None  # its rows skip places
    twice = np.vstack([plain, plain[:3]])  # a position scanned twice
    assert infer_raster(twice, spacing(twice)) is None
    # staggered rows still make one crystal
    truth = (60.0, 50.0, 1.5 * STEP)
    (g,) = centre_at(_answers(staggered, [truth]), staggered)["regions"]
    assert _off(g, truth[0], truth[1]) < 0.25 * STEP


def test_frames_without_a_position_are_counted_not_placed() -> None:
    xy = _raster(5, 5)
    answers = _answers(xy, [(*(STAGE + 40.0), 1.5 * STEP)])
    xy[[0, 12]] = np.nan  # frame 12 is the crystal's middle
    c = centre_at(answers, xy)
    assert (c["answered"], c["placed"], c["without_position"]) == (25, 23, 2)
    assert all(g["best_cell"]["frame"] != 12 for g in c["regions"])
    empty = centre_at(answers, np.full((25, 2), np.nan))
    assert empty["regions"] == [] and empty["layout"] is None and empty["best_cell"] is None


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_positions_file_is_read_by_frame_or_by_file(tmp_path: Path) -> None:
    p = read_positions(_write(tmp_path / "pos.csv", "# stage read-back\n"
                              "frame,x_um,y_um,omega\n0,10.5,-3,0\n1,30.5,-3,0\n\n2,50.5,-3.2,0\n"))
    assert p.by_index == {0: (10.5, -3.0), 1: (30.5, -3.0), 2: (50.5, -3.2)}
    mm = read_positions(_write(tmp_path / "pos.txt", "Frame\tX_MM  y_um\n0\t1.5\t20\n"))
    assert mm.by_index == {0: (1500.0, 20.0)}  # mm read as µm; white space separates
    files = read_positions(_write(tmp_path / "f.csv", "file,x_um,y_um\ng_0001.cbf,1,2\n"
                                  "./sub/g_0002.cbf,3,4\n"))
    assert files.by_file == {("g_0001.cbf", 0): (1.0, 2.0), ("sub/g_0002.cbf", 0): (3.0, 4.0)}
    answers = [{"file": f"/data/visit/{n}", "frame": 0, "hit": False, "n_spots": 1}
               for n in ("sub/g_0002.cbf", "g_0001.cbf", "g_0003.cbf", "other/g_0002.cbf")]
    c = centre_positions(answers, [files])
    assert (c["placed"], c["without_position"]) == (2, 2)
    assert c["positions_from"] == [str(tmp_path / "f.csv")]
    # by frame, frames that repeat (one-frame files) are placed in file-name order
    placed = centre_positions(answers[:3], [p], points=True)["points"]
    assert sorted((x, f) for x, _, f, _, _ in placed) == [(10.5, 0), (30.5, 0), (50.5, 0)]
    by_name = {a["file"]: k for k, a in enumerate(answers[:3])}
    assert placed[by_name["/data/visit/g_0001.cbf"]][0] == 10.5  # g_0001 < g_0003 < sub/...


@pytest.mark.parametrize("text,where,message", [
    ("", "pos.csv:", "empty"),
    ("frame,x_um\n0,1\n", "pos.csv:1:", "no y position column"),
    ("x_um,y_um\n1,2\n", "pos.csv:1:", "no 'frame' or 'file' column"),
    ("frame,x_um,x_mm,y_um\n0,1,2,3\n", "pos.csv:1:", "two x position column"),
    ("frame,x_um,y_um\n0,1,2\n1,1\n", "pos.csv:3:", "2 fields, the header has 3"),
    ("frame,x_um,y_um\n0,1,2\n1,abc,2\n", "pos.csv:3:", "x_um 'abc' is not a number"),
    ("frame,x_um,y_um\n0,1,2\n\n1,1,nan\n", "pos.csv:4:", "y_um is nan"),
    ("frame,x_um,y_um\n# c\n0,1,2\n1,1,2\n0,5,5\n", "pos.csv:5:",
     "frame 0 again (first on line 3)"),
    ("frame,x_um,y_um\n-1,1,2\n", "pos.csv:2:", "not a frame number"),
    ("frame,x_um,y_um\n", "pos.csv:", "a header but no rows"),
])
def test_a_bad_positions_file_names_its_file_and_line(tmp_path: Path, text: str, where: str,
                                                      message: str) -> None:
    with pytest.raises(ValueError) as e:
        read_positions(_write(tmp_path / "pos.csv", text))
    assert str(tmp_path / where) in str(e.value) and message in str(e.value), str(e.value)


def test_the_stream_convention_places_a_frame_from_its_user_data() -> None:
    assert from_user_data({"x_um": 10, "y_um": -2.5}) == (10.0, -2.5)
    assert from_user_data({"motors": {"x_mm": 1.25, "y_mm": 0.5}}) == (1250.0, 500.0)
    assert from_user_data(b'{"x_um": 1, "y_um": 2}') == (1.0, 2.0)  # a v1 image appendix
    for none in (None, {"x_um": 1}, {"x_um": "1", "y_um": 2}, {"x_um": float("nan"),
                                                                "y_um": 1}, b"\x00", [1, 2]):
        assert from_user_data(none) is None
    img = np.zeros((4, 5), "<u4")
    _, _, v2 = dectris.kind(dectris.image_v2(1, 7, img, None, user_data={"motors": {
        "x_um": 101.5, "y_um": 7.0}, "sample": "lyso"}))
    assert v2.position == (101.5, 7.0) and v2.frame == 7
    _, _, v1 = dectris.kind(dectris.image_v1(1, 3, img, "<", appendix={"x_um": 5, "y_um": 6}))
    assert v1.position == (5.0, 6.0)
    assert dectris.kind(dectris.image_v2(1, 8, img, None))[2].position is None


def _stored_run(url: str, xy: np.ndarray, crystals: list) -> tuple[RunStore, list[dict]]:
    store = RunStore(url)
    answers = _answers(xy, crystals)
    store.add(store.open_run("scan", "stream:tcp://dcu:9999"), answers)
    return store, answers


def test_centre_from_a_positions_file_round_trips_through_the_store_and_cli(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/runs.db"
    xy = _raster(6, 8, jitter=0.15, seed=5)
    truth = [(*(STAGE + [40.0, 30.0]), 1.3 * STEP), (*(STAGE + [120.0, 80.0]), 1.4 * STEP)]
    store, answers = _stored_run(url, xy, truth)
    pos = tmp_path / "pos.csv"
    pos.write_text("frame,x_mm,y_mm\n" + "".join(f"{i},{x / 1e3:.6f},{y / 1e3:.6f}\n"
                                                   for i, (x, y) in enumerate(xy)))
    want = centre_at(answers, np.round(xy, 3))
    run = CliRunner()
    r = run.invoke(cli, ["runs", "centre", "scan", "--store", url, "--positions", str(pos),
                         "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["mode"] == "positions" and got["positions_from"] == [str(pos)]
    assert got["regions"] == want["regions"] and len(got["regions"]) == 2
    r = run.invoke(cli, ["runs", "centre", "scan", "--store", url])  # nothing kept yet
    assert r.exit_code != 0 and "no motor positions" in r.output
    keep_positions(store, store.run("scan")["id"], read_positions(pos))  # xrp watch --positions
    r = run.invoke(cli, ["runs", "centre", "scan", "--store", url, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["regions"] == want["regions"]
    r = run.invoke(cli, ["runs", "centre", "scan", "--store", url])
    assert r.exit_code == 0 and "2 crystal(s)" in r.output and "a 6x8 raster" in r.output
    assert f"{want['regions'][0]['centre_um']['x']:.1f}" in r.output
    r = run.invoke(cli, ["runs", "centre", "scan", "--store", url, "--grid", "6x8", "--json"])
    assert r.exit_code == 0 and "mode" not in json.loads(r.output)  # --grid: the grid wins
    bad = _write(tmp_path / "bad.csv", "frame,x_um,y_um\n0,1,2\n1,1,inf\n")
    r = run.invoke(cli, ["runs", "centre", "scan", "--store", url, "--positions", str(bad)])
    assert r.exit_code != 0 and f"{bad}:3: y_um is inf" in r.output.replace("\n", "")
    other = _write(tmp_path / "other.csv", "file,x_um,y_um\nnone.cbf,1,2\n")
    r = run.invoke(cli, ["runs", "centre", "scan", "--store", url, "--positions", str(other)])
    assert r.exit_code != 0 and "none of its rows matches" in r.output.replace("\n", " ")

    with served(page.app(url)) as base:
        got = requests.get(f"{base}/v1/runs/scan/centre", timeout=10).json()
        assert got["mode"] == "positions" and got["regions"] == want["regions"]
        snap = requests.get(f"{base}/ui/api/runs/scan", timeout=10).json()
        assert snap["centre"]["regions"] == want["regions"]  # what the live page draws
        assert len(snap["centre"]["points"]) == len(xy)


def test_streamed_positions_are_kept_per_frame(tmp_path: Path) -> None:
    xy = _raster(5, 6, jitter=0.1, seed=6)
    truth = (*(STAGE + [50.0, 40.0]), 1.5 * STEP)
    answers = [dict(a, x_um=float(x), y_um=float(y)) for a, (x, y) in
               zip(_answers(xy, [truth]), xy, strict=True)]
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    rid = store.open_run("s", "stream:tcp://dcu:9999")
    store.add(rid, answers[:10])
    store.add(rid, answers)  # the first 10 again: kept once
    kept = store.positions(rid)
    assert list(kept) == ["stream"] and len(kept["stream"]) == len(xy)
    tables = [Positions.from_rows("stream", kept["stream"])]
    c = centre_positions(store.cells(rid), tables)
    assert c["positions_from"] == ["stream"] and c["placed"] == len(xy)
    assert _off(c["regions"][0], truth[0], truth[1]) < 0.25 * STEP
    # a positions file given later wins over the stream's
    store.set_positions(rid, [("", i, x + 1000.0, y) for i, (x, y) in enumerate(xy)])
    from xray_platform.live.centre import run_centre

    moved = run_centre(store, "s")
    assert moved["centre_um"]["x"] == pytest.approx(c["centre_um"]["x"] + 1000.0, abs=0.02)


def test_watch_keeps_the_positions_a_v2_stream_sends(tmp_path: Path) -> None:
    from xray_platform.live.centre import run_centre
    from xray_platform.live.publisher import GridScan, Publisher, grid_scan_frames
    from xray_platform.live.stream import watch_stream

    scan = GridScan(rows=2, cols=3, crystal=(0.5, 1.0), radius=1.0)
    frames, geometry = grid_scan_frames(scan)
    xy = [(STAGE[0] + 20.0 * scan.cell(i)[1], STAGE[1] + 15.0 * scan.cell(i)[0])
          for i in range(scan.n)]
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    url = f"tcp://127.0.0.1:{free_port()}"
    pub = Publisher(url)
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(s=watch_stream(url, store, "v2", {},
                                                                  exit_after_series=1)))
    t.start()
    pub.series(1, frames, geometry, version=2, encoding="lz4",
               user_data=lambda k: {"motors": {"x_mm": xy[k][0] / 1e3, "y_mm": xy[k][1] / 1e3}})
    t.join(timeout=120)
    pub.close()
    assert not t.is_alive() and out["s"].answered == scan.n
    answers = store.answers("v2")
    got = np.array([(a["x_um"], a["y_um"]) for a in answers])
    assert np.allclose(got, xy, atol=1e-6)  # sent in mm, kept in µm
    c = run_centre(store, "v2")
    assert c["mode"] == "positions" and c["positions_from"] == ["stream"]
    assert c["placed"] == scan.n and c["hits"] == sum(scan.is_hit(i) for i in range(scan.n))


def test_xrp_watch_keeps_a_positions_file_with_the_run(tmp_path: Path) -> None:
    from xray_platform.io.cbf import write_cbf

    folder = tmp_path / "visit"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(4):
        write_cbf(folder / f"g_{i:04d}.cbf", rng.poisson(2.0, (200, 210)).astype(np.int32),
                  wavelength_A=1.0, distance_mm=150.0, pixel_size_mm=0.172,
                  beam_center_px=(105.0, 100.0))
    pos = _write(tmp_path / "pos.csv", "file x_um y_um\n" + "".join(
        f"g_{i:04d}.cbf {100 + 20 * (i % 2)} {-50 + 20 * (i // 2)}\n" for i in range(4)))
    url = f"sqlite:///{tmp_path}/runs.db"
    base = ["watch", str(folder), "--run", "v", "--store", url, "--lattice-model", "none",
            "--resolution-model", "none", "--settle", "0", "--poll", "0.05",
            "--exit-when-idle", "0.5"]
    bad = _write(tmp_path / "bad.csv", "file,x_um,y_um\ng_0000.cbf,1,2\ng_0000.cbf,3,4\n")
    r = CliRunner().invoke(cli, [*base, "--positions", str(bad)])
    assert r.exit_code != 0 and f"{bad}:3: file g_0000.cbf frame 0 again" in \
        r.output.replace("\n", "")
    assert not (tmp_path / "runs.db").exists()  # stopped before the store was opened
    r = CliRunner().invoke(cli, [*base, "--positions", str(pos)])
    assert r.exit_code == 0, r.output
    store = RunStore(url, create=False)
    rid = store.run("v")["id"]
    assert len(store.positions(rid)["file"]) == 4
    assert store.info(rid)["positions_file"] == {"path": str(pos), "rows": 4}
    from xray_platform.live.centre import run_centre

    c = run_centre(store, "v")
    assert c["mode"] == "positions" and c["placed"] == 4 and c["positions_from"] == [str(pos)]
    assert c["layout"] == "raster" and c["raster"] == {"rows": 2, "cols": 2, "x0_um": 100.0,
                                                        "y0_um": -50.0}
