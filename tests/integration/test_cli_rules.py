"""Rules every `xrp` command keeps (issue 29, items 4 and 5): exit codes, a one-line error and no
traceback for a bad option value, no store created by a command that only reads, and no
credentials in an MLflow tracking URI. Only the first test starts Ray (`xrp predict`, ~20 s);
the others stop at argument checks, in this interpreter (typer's CliRunner)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from helpers import xrp, xrp_here

SECRET = "s3cr3t-pw"


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder; no tracking URI of the user's."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    return work


def _no_stores(folder: Path) -> None:
    assert not list(folder.rglob("*.db")), "a store was created"


def _refused(r, *expect: str) -> None:
    """Exit 2, a one-line error naming ``expect``, no traceback."""
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "Traceback" not in out, out
    for text in expect:
        assert text in " ".join(out.split()), out


def test_predict_exits_1_when_no_frame_is_answered(cwd: Path, tmp_path: Path) -> None:
    bad = cwd / "x.cbf"  # looks like a CBF to the reader's sniffing, fails when decoded
    bad.write_text("###CBF: VERSION 1.5\nnot really a frame\n")
    env = {**os.environ, "XRP_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    r = xrp("predict", str(bad), "--out", "p.csv", cwd=cwd, env=env, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert "no frame answered: all 1 failed" in " ".join(r.stderr.split())
    assert "corrupt CBF" in (cwd / "p.csv").read_text()  # the table still says why
    _no_stores(cwd)


def test_predict_counts_failed_frames_but_succeeds_when_some_were_answered(
        capsys: pytest.CaptureFixture) -> None:
    from xray_platform.cli.predict import _outcome

    rows = [{"file": "a.cbf", "frame": 0}, {"file": "b.cbf", "frame": 0, "error": "corrupt"},
            {"file": "c.cbf", "frame": 0, "error": "corrupt"}]
    _outcome(rows, Path("p.csv"))  # returns: exit status 0
    assert "2 of 3 frames failed" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(typer.Exit) as e:
        _outcome(rows[1:], Path("p.csv"))
    assert e.value.exit_code == 1
    assert "exit" in xrp_here("predict", "--help").stdout.lower()  # --help says so


BAD_VALUES = [  # (arguments, what the error names)
    (["evaluate", "zoo:resolution", "--data", "quick-resolution", "-n", "-3"], "-n"),
    (["evaluate", "zoo:resolution", "--data", "quick-resolution", "--seed", "-1"], "--seed"),
    (["simulate", "quick-resolution", "--out", "d", "-n", "0"], "-n"),
    (["simulate", "quick-resolution", "--out", "d", "--num-cpus", "0"], "--num-cpus"),
    (["simulate", "quick-resolution", "--out", "d", "-n", "abc"], "-n"),
    (["show", "x.cbf", "--size", "0"], "--size"),
    (["train", "resolution", "--depth", "7"], "--depth"),
    (["train", "resolution", "--label", "foo"], "label 'foo'"),
    (["train", "resolution", "--shots-per-epoch", "0"], "--shots-per-epoch"),
    (["train", "resolution", "--grid-size", "0"], "--grid-size"),
    (["train", "resolution", "--d-min", "-1"], "--d-min"),
    (["tune", "resolution", "--samples", "0"], "samples"),
    (["tune", "resolution", "--depths", "7"], "depths"),
    (["tune", "resolution", "--val-shots", "0"], "--val-shots"),
    (["tune", "resolution", "--seed", "-1"], "--seed"),
    (["predict", "x.cbf", "--batch-size", "0"], "--batch-size"),
    (["predict", "x.cbf", "--workers", "0"], "--workers"),
    (["predict", "x.cbf", "--min-confidence", "2"], "--min-confidence"),
    (["predict", "x.cbf", "--cell", "57.8,57.8"], "--cell"),
    (["predict", "x.cbf", "--cell", "50,50,50,90,90,200"], "--cell"),
    (["predict", "x.cbf", "--cell", "a,b,c"], "--cell"),
    (["watch", ".", "--grid", "3"], "--grid"),
    (["runs", "show", "r", "--last", "0"], "--last"),
    (["runs", "export", "r", "--out", "x.txt"], "--out x.txt"),
    (["models", "list", "foo"], "task 'foo'"),
    (["models", "promote", "resolution/1", "--alias", "bad alias"], "--alias"),
]


@pytest.mark.parametrize("args,names", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_a_bad_option_value_is_a_one_line_error(cwd: Path, args: list[str], names: str) -> None:
    (cwd / "x.cbf").write_text("###CBF: VERSION 1.5\n")
    _refused(xrp_here(*args, cwd=cwd), names)
    _no_stores(cwd)


READ_ONLY = [  # (arguments, exit status, what it says)
    (["runs", "show", "nope"], 2, "no run store at"),
    (["runs", "export", "nope", "--out", "x.csv"], 2, "no run store at"),
    (["runs", "list"], 0, "no runs: no run store at"),
    (["runs", "list", "--store", "sqlite:///sub/none.db"], 0, "no run store at"),
    (["watch", "missing"], 2, "missing: no such folder"),
    (["models", "list"], 0, "no MLflow store at"),
    (["models", "show", "resolution"], 0, "zoo:"),
    (["models", "show", "resolution/3"], 2, "does not exist"),
    (["models", "promote", "resolution/3"], 2, "no MLflow store at"),
]


@pytest.mark.parametrize("args,status,says", READ_ONLY, ids=[" ".join(a) for a, *_ in READ_ONLY])
def test_a_read_only_command_creates_no_store(cwd: Path, args: list[str], status: int,
                                              says: str) -> None:
    r = xrp_here(*args, cwd=cwd)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == status, out
    assert says in out and "Traceback" not in out
    _no_stores(cwd)
    assert not (cwd / "sub").exists()


def test_the_run_store_is_read_where_there_is_one(cwd: Path) -> None:
    from xray_platform.live.store import RunStore

    rs = RunStore(f"sqlite:///{cwd}/xrp-runs.db")
    rs.add(rs.open_run("r1", "/data/r1"), [{"file": "/data/r1/a.cbf", "frame": 0, "hit": True}])
    assert "r1" in xrp_here("runs", "list", cwd=cwd).stdout
    assert "1 frames, 1 hits" in xrp_here("runs", "show", "r1", cwd=cwd).stdout
    _refused(xrp_here("runs", "show", "r2", cwd=cwd), "no run 'r2'")
    assert xrp_here("runs", "export", "r1", "--out", "t.csv", cwd=cwd).returncode == 0
    assert (cwd / "t.csv").is_file()


def test_a_run_store_url_with_a_password_is_not_echoed(cwd: Path) -> None:
    r = xrp_here("runs", "list", "--store", f"postgresql://u:{SECRET}@127.0.0.1:1/db", cwd=cwd)
    assert r.returncode == 2 and SECRET not in r.stdout + r.stderr


@pytest.mark.parametrize("args", [["models", "list"], ["models", "show", "resolution"],
                                  ["predict", "x.cbf"], ["watch", "."],
                                  ["evaluate", "zoo:resolution", "--data", "quick-resolution"],
                                  ["train", "resolution"], ["tune", "resolution"]])
@pytest.mark.parametrize("where", ["option", "environment"])
def test_credentials_in_the_tracking_uri_are_refused(cwd: Path, monkeypatch: pytest.MonkeyPatch,
                                                     args: list[str], where: str) -> None:
    (cwd / "x.cbf").write_text("###CBF: VERSION 1.5\n")
    uri = f"https://alice:{SECRET}@mlflow.example.org"
    if where == "option":
        args = [*args, "--mlflow-uri", uri]
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    r = xrp_here(*args, cwd=cwd)
    _refused(r, "holds credentials", "MLFLOW_TRACKING_USERNAME", "https://mlflow.example.org")
    assert SECRET not in r.stdout + r.stderr
    _no_stores(cwd)
