"""benchmarks/peer_mxspots.py without its side environment: mxspots's answers joined onto xrp's
rows and scored as lattice_verdict.py scores (num_lattices >= 2 is multi, a failed frame
counted, not scored), the caches (xrp's rows read, never made), the clear error for a
missing environment, and the worker protocol against a stand-in mxspots package (an answer,
an exception, a crash)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from lattice_verdict import score  # noqa: E402
from peer_mxspots import (  # noqa: E402
    MX,
    EnvMissing,
    Peer,
    XrpMissing,
    env_python,
    failed,
    join,
    mx_multi,
    read_cache,
    read_xrp,
)


def xrp_row(index: int, is_multi: bool) -> dict:
    return {"preset": "p", "index": index, "is_multi": is_multi, "n_lattices": 2 if is_multi
            else 1, "is_multi_visible": is_multi, "lattice_visible": True, "hit": True}


def mx_row(index: int, is_multi: bool, num_lattices: int | None) -> dict:
    answer = {"error": "ValueError: x"} if num_lattices is None else \
        {"num_lattices": num_lattices, "ms": 1.0, "error": None}
    return {"index": index, "is_multi": is_multi, "n_lattices": 2 if is_multi else 1,
            "version": "1", **answer}


def test_join_and_score() -> None:
    xrp = [xrp_row(0, True), xrp_row(1, False), xrp_row(2, False), xrp_row(3, True)]
    mx = {0: mx_row(0, True, 2), 1: mx_row(1, False, 3), 2: mx_row(2, False, None)}
    rows = join(xrp, mx)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert rows[0][MX]["num_lattices"] == 2 and rows[3][MX] is None
    assert [mx_multi(r) for r in rows] == [1.0, 1.0, None, None]
    assert [failed(r) for r in rows] == [False, False, True, True]
    s = score(rows, mx_multi, "is_multi_visible")  # the failed and unanswered are not scored
    assert s["n"] == 2 and s["accuracy"] == 0.5
    assert s["multi_recall"] == 1.0 and s["single_recall"] == 0.0


def test_join_refuses_another_shot() -> None:
    with pytest.raises(ValueError, match="not the same shot"):
        join([xrp_row(0, True)], {0: mx_row(0, False, 1)})


def test_cache_skips_cut_lines_and_other_versions(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(mx_row(0, True, 2)) + "\n"
                    + json.dumps({**mx_row(1, False, 1), "version": "0"}) + "\n{\"index\": 2,")
    assert sorted(read_cache(path, "1")) == [0]
    assert sorted(read_cache(path)) == [0, 1]


def test_missing_xrp_rows_name_the_benchmark(tmp_path: Path) -> None:
    path = tmp_path / "zoo-lattice-g5@2026.12-s2.jsonl"
    path.write_text("\n".join(json.dumps(xrp_row(i, False)) for i in range(3)))
    assert [r["index"] for r in read_xrp(path, 3)] == [0, 1, 2]
    with pytest.raises(XrpMissing, match="lattice_verdict.py --shots 4 --sets g5"):
        read_xrp(path, 4)


def test_missing_env_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(EnvMissing) as e:
        env_python(tmp_path / "nope")
    msg = str(e.value)
    assert "-m venv " + str(tmp_path / "nope") in msg
    assert str(tmp_path / "nope") + "/bin/pip install mxspots" in msg


def fake_env(tmp_path: Path, with_mxspots: bool = True) -> Path:
    """A side environment whose python is this one, with a stand-in mxspots on its path."""
    pkg = tmp_path / "site"
    if with_mxspots:
        (pkg / "mxspots").mkdir(parents=True)
        (pkg / "mxspots" / "__init__.py").write_text(
            "import os\nfrom types import SimpleNamespace\n"
            "def SpotParams(**kw):\n    return SimpleNamespace(**kw)\n"
            "def score_data(data, params):\n"
            "    if data.shape == (1, 1):\n        os._exit(3)\n"
            "    if data.shape == (2, 2):\n        raise ValueError('too small')\n"
            "    n = int((data > 0).sum())\n"
            "    return SimpleNamespace(num_lattices=n, spot_count=n, bragg_spots=n, score=1.0,"
            " d_min=params.wavelength, num_ice_rings=0)\n")
        (pkg / "mxspots-9.9.dist-info").mkdir()
        (pkg / "mxspots-9.9.dist-info" / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: mxspots\nVersion: 9.9\n")
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    py = env / "bin" / "python"
    py.write_text(f"#!/bin/sh\nPYTHONPATH={pkg} exec {sys.executable} \"$@\"\n")
    os.chmod(py, 0o755)
    return env


def test_env_without_mxspots_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EnvMissing, match="could not run mxspots(.|\n)*pip install mxspots"):
        Peer(fake_env(tmp_path, with_mxspots=False), threads=1, timeout_s=60)


def test_worker_answers_fails_and_survives_a_crash(tmp_path: Path) -> None:
    peer = Peer(fake_env(tmp_path), threads=1, timeout_s=60)
    try:
        assert peer.version == "9.9"
        geometry = {"wavelength_A": 1.0, "distance_mm": 100.0, "pixel_mm": 0.1,
                    "beam_x": 1.0, "beam_y": 2.0}

        def ask(image: np.ndarray) -> dict:
            np.save(tmp_path / "f.npy", image)
            return peer.answer({"npy": str(tmp_path / "f.npy"), **geometry})

        ok = ask(np.array([[1, -1, 5], [0, 3, -2]], np.int32))  # gaps negative, not counted
        assert ok["num_lattices"] == 3 and ok["error"] is None and ok["ms"] >= 0
        assert ask(np.zeros((2, 2))) == {"error": "ValueError: too small"}
        assert "process died" in ask(np.ones((1, 1)))["error"]
        assert ask(np.ones((1, 3)))["num_lattices"] == 3  # a fresh worker goes on
    finally:
        peer.close()
