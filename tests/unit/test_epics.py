"""`xrp watch --epics`: a real caproto channel-access server on loopback (free ports, its own
EPICS_CA_* environment) read and monitored by caproto's own threading client. The PVs follow
the answers (counts, the latest hit, a grid's best cell and centre from live/centre.py), refuse
writes, and nothing the publisher meets stops the watch loop."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
from helpers import free_port

from xray_platform.live.centre import centre
from xray_platform.live.epics import PVS, EpicsResults, free_ca_port, pv_prefix, serve_run
from xray_platform.live.publisher import GridScan, Publisher, grid_scan_frames
from xray_platform.live.store import RunStore
from xray_platform.live.stream import watch_stream


@pytest.fixture
def ca_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Channel access on loopback only, on ports no other test or IOC uses."""
    for k, v in {
        "EPICS_CA_SERVER_PORT": str(free_ca_port()),
        "EPICS_CA_REPEATER_PORT": str(free_ca_port()),
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("EPICS_CAS_INTF_ADDR_LIST", raising=False)


@pytest.fixture
def client(ca_env):
    from caproto.threading.client import Context

    ctx = Context()
    yield ctx
    ctx.disconnect()


def read(ctx, name: str):
    (pv,) = ctx.get_pvs(name, timeout=5)
    data = pv.read(timeout=5).data
    return data[0] if len(data) == 1 else data


def values(ctx, prefix: str) -> dict:
    out = {}
    for name, (kind, *_rest) in PVS.items():
        v = read(ctx, prefix + name)
        out[name] = v.decode() if kind == "str" else (int(v) if kind == "int" else float(v))
    return out


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def test_pvs_follow_the_answers_of_a_grid_run_and_refuse_writes(client) -> None:
    raster = {"rows": 3, "cols": 4, "snake": True}
    answers = [
        {
            "file": "f",
            "frame": i,
            "hit": i in (0, 1, 11),
            "n_spots": 10 * i,
            "d_min_spots_A": 1.5 + i / 10,
            "resolution_A": None if i == 11 else 2.0,
            "n_lattices_indexed": 1 + i % 2,
            "p_multi": 0.1 * (i % 3),
            **({"error": "truncated"} if i == 3 else {}),
        }
        for i in range(12)
    ]
    results = EpicsResults("TEST:XRP", "scan-1", raster=raster, step_um=(20.0, 10.0)).start()
    try:
        v = values(client, "TEST:XRP:")
        assert (v["RUN"], v["FRAMES"], v["HITS"], v["BEST_ROW"], v["N_CRYSTALS"]) == (
            "scan-1",
            0,
            0,
            -1,
            -1,
        )
        assert math.isnan(v["LAST_RES"]) and math.isnan(v["CENTRE_ROW"])
        seen: list[tuple[float, int]] = []

        def on_frames(_sub, response) -> None:
            seen.append((time.time(), int(response.data[0])))

        (pv,) = client.get_pvs("TEST:XRP:FRAMES", timeout=5)
        sub = pv.subscribe()
        sub.add_callback(on_frames)  # (caproto keeps a weak reference: on_frames stays alive)
        for k in range(0, 12, 5):  # three batches, as the watch loop hands them over
            results.answers(answers[k : k + 5])
            t0 = time.time()
            while (not seen or seen[-1][1] < min(k + 5, 12)) and time.time() - t0 < 5:
                time.sleep(0.01)
        assert seen[-1][1] == 12  # the monitor saw the count arrive
        v = values(client, "TEST:XRP:")
        assert (v["FRAMES"], v["HITS"], v["ERRORS"]) == (12, 3, 1)
        assert v["HIT_RATE"] == pytest.approx(25.0)
        assert (v["LAST_FRAME"], v["LAST_HIT"], v["LAST_HIT_FRAME"]) == (11, 1, 11)
        assert math.isnan(v["LAST_RES"]) and v["LAST_DMIN"] == pytest.approx(2.6)
        assert (v["LAST_NLAT"], v["LAST_P_MULTI"]) == (2, pytest.approx(0.2))
        want = centre(answers, 3, 4, True, (20.0, 10.0))  # the centring module's own answer
        best = want["best_cell"]
        assert (
            (v["BEST_ROW"], v["BEST_COL"], v["BEST_FRAME"])
            == (best["row"], best["col"], best["frame"])
            == (2, 3, 11)
        )
        assert v["N_CRYSTALS"] == len(want["regions"]) == 2
        assert same(v["CENTRE_ROW"], want["centre"]["row"])
        assert same(v["CENTRE_COL"], want["centre"]["col"])
        assert same(v["CENTRE_X"], want["centre_um"]["x"])
        assert same(v["CENTRE_Y"], want["centre_um"]["y"])
        (hits,) = client.get_pvs("TEST:XRP:HITS", timeout=5)
        hits.wait_for_connection(timeout=5)
        assert "WRITE" not in str(hits.access_rights)  # read-only: results, not controls
        assert results.errors == 0
    finally:
        results.close()


def test_a_stream_run_on_epics_matches_the_run_store(client, tmp_path: Path) -> None:
    scan = GridScan(rows=2, cols=3, crystal=(0.5, 1.0), radius=1.0)
    frames, geometry = grid_scan_frames(scan)
    store = RunStore(f"sqlite:///{tmp_path}/runs.db")
    url = f"tcp://127.0.0.1:{free_port()}"
    pub = Publisher(url)
    raster = {"rows": 2, "cols": 3, "snake": False}
    results = serve_run("BL:T", store, "grid", raster)
    out: dict = {}
    t = threading.Thread(
        target=lambda: out.update(
            s=watch_stream(
                url,
                store,
                "grid",
                {},
                exit_after_series=1,
                batch=2,
                raster=raster,
                on_update=results.stats,
                on_answers=results.answers,
            )
        )
    )
    t.start()
    try:
        pub.series(1, frames, geometry, version=2, encoding="lz4")
        t.join(timeout=120)
        assert not t.is_alive()
        answers = store.answers("grid")
        t0 = time.time()
        while read(client, "BL:T:FRAMES") < len(answers) and time.time() - t0 < 5:
            time.sleep(0.05)
        v = values(client, "BL:T:")
        hits = [a for a in answers if a["hit"]]
        assert v["FRAMES"] == len(answers) == scan.n
        assert v["HITS"] == len(hits) == sum(scan.is_hit(i) for i in range(scan.n)) > 0
        assert v["LAST_HIT_FRAME"] == hits[-1]["frame"]
        assert same(v["LAST_DMIN"], hits[-1]["d_min_spots_A"] or math.nan)
        assert v["LAST_NLAT"] == (
            hits[-1]["n_lattices_indexed"] if hits[-1]["n_lattices_indexed"] is not None else -1
        )
        want = centre(answers, 2, 3)
        assert (v["BEST_ROW"], v["BEST_COL"]) == (
            want["best_cell"]["row"],
            want["best_cell"]["col"],
        )
    finally:
        results.close()
        pub.close()
    resumed = serve_run("BL:T2", store, "grid", raster)  # a restart: the store's counts
    try:
        assert read(client, "BL:T2:FRAMES") == scan.n
        assert read(client, "BL:T2:HITS") == v["HITS"]
    finally:
        resumed.close()


def test_nothing_the_publisher_meets_stops_the_watch(client) -> None:
    results = EpicsResults("BAD:", "r").start()
    try:
        results.answers([{"file": "f", "frame": "not a number", "hit": True}])  # fails inside
        results.answers([{"file": "f", "frame": 1, "hit": False}])
        results.stats(object())  # no counters at all
        t0 = time.time()
        while results.errors == 0 and time.time() - t0 < 5:
            time.sleep(0.02)
        assert results.errors >= 1 and "ValueError" in results.last_error
    finally:
        results.close()
    results.answers([{"file": "f", "frame": 2, "hit": True}])  # its server gone: still quiet
    with pytest.raises(ValueError, match="prefix"):
        pv_prefix("has space")
    assert pv_prefix("BL12:XRP") == "BL12:XRP:" and pv_prefix("BL12:XRP:") == "BL12:XRP:"


def test_a_server_that_cannot_start_is_a_clear_error(ca_env, monkeypatch) -> None:
    monkeypatch.setenv("EPICS_CAS_INTF_ADDR_LIST", "192.0.2.77")  # an address not ours
    with pytest.raises(ValueError, match="EPICS server for X:\\* on 192.0.2.77 could not start"):
        EpicsResults("X", "r").start(timeout_s=10)


def test_a_scan_placed_by_motor_positions_gives_its_centre_in_absolute_um() -> None:
    from xray_platform.live.centre import centre_positions
    from xray_platform.live.positions import Positions

    # 3 x 4 raster, 10 µm apart from the stage's (500, -200); a crystal over frames 5, 6, 9, 10
    xy = {i: (500.0 + 10 * (i % 4), -200.0 + 10 * (i // 4)) for i in range(12)}
    spots = {5: 40, 6: 80, 9: 20, 10: 60}
    answers = [{"file": "f", "frame": i, "hit": i in spots, "n_spots": spots.get(i, 2)}
               for i in range(12)]
    table = Positions("pos.csv", by_index=xy)
    from_file = EpicsResults("T:P", "scan", positions=table)  # xrp watch --positions
    from_file.answers(answers)
    v = from_file._values()
    want = centre_positions(answers, [table])
    assert v["N_CRYSTALS"] == 1 and v["BEST_FRAME"] == 6
    assert (v["CENTRE_X"], v["CENTRE_Y"]) == (want["centre_um"]["x"], want["centre_um"]["y"])
    assert (v["CENTRE_X"], v["CENTRE_Y"]) == (517.0, -186.0)  # absolute, spot-weighted
    assert (v["BEST_ROW"], v["BEST_COL"]) == (1, 2)  # the positions lie on a raster
    streamed = EpicsResults("T:S", "scan")  # no file: the answers carry their positions
    streamed.answers([dict(a, x_um=xy[a["frame"]][0], y_um=xy[a["frame"]][1]) for a in answers])
    assert streamed._values()["CENTRE_X"] == v["CENTRE_X"]
    plain = EpicsResults("T:N", "scan")  # neither grid nor positions: unknown
    plain.answers(answers)
    assert math.isnan(plain._values()["CENTRE_X"]) and plain._values()["N_CRYSTALS"] == -1
