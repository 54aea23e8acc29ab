"""The grid spec (preprocess.Preprocessing): one typed object from a recipe's argv through the
model file's metadata to the answers' input key."""

from __future__ import annotations

import json

import pytest

from xray_platform.core.answer import describe_model, input_key, key
from xray_platform.core.models import model_metadata, model_preprocessing, model_summary
from xray_platform.core.preprocess import Preprocessing
from xray_platform.physics.qgrid import QGrid
from xray_platform.zoo import zoo_model
from xray_platform.zoo.recipes import RECIPES

SPECS = [Preprocessing(64), Preprocessing(128, 2.4, d_max_A=10.0),
         Preprocessing(256, 1.5, background="radial-median"),
         Preprocessing(96, 0.8, background="radial-median", d_max_A=12.5)]


@pytest.mark.parametrize("prep", SPECS, ids=str)
def test_the_dict_and_argv_forms_read_back_exactly(prep: Preprocessing) -> None:
    assert Preprocessing.from_dict(json.loads(json.dumps(prep.to_dict()))) == prep
    assert Preprocessing.from_args(prep.to_args()) == prep
    # other arguments around the flags are skipped; --flag=value reads too
    argv = ["train", "lattice", "--epochs", "3", *prep.to_args(), "--seed", "1"]
    assert Preprocessing.from_args(argv) == prep
    assert Preprocessing.from_args([f"{a}={b}" for a, b in zip(argv[::2], argv[1::2],
                                                                 strict=True)]) == prep
    assert prep.grid == QGrid(prep.grid_size, prep.d_min_A)
    assert Preprocessing.for_grid(prep.grid, prep.options) == prep


def test_the_argv_names_background_and_d_max_only_when_set() -> None:
    assert Preprocessing(64, 1.2).to_args() == ["--grid-size", "64", "--d-min", "1.2"]
    assert Preprocessing(128, 2.4, background="radial-median", d_max_A=10.0).to_args() == [
        "--grid-size", "128", "--d-min", "2.4", "--background", "radial-median", "--d-max", "10"]
    # the flags a command leaves out are the default's
    base = Preprocessing(128, 2.4, d_max_A=10.0)
    assert Preprocessing.from_args(["--background", "radial-median"], base) == Preprocessing(
        128, 2.4, background="radial-median", d_max_A=10.0)


def test_older_model_files_read_without_background_and_d_max() -> None:
    old = {"d_min_A": 1.2, "grid_size": 64, "scale": 10.0, "transform": "log1p"}
    prep = Preprocessing.from_dict(old)
    assert (prep.background, prep.d_max_A) == ("none", None)
    assert Preprocessing.from_dict({"grid_size": 64.0, "d_min_A": 1.2}).grid_size == 64
    assert Preprocessing.from_dict({**old, "task": "resolution"}) == prep  # describe() records
    for task in RECIPES:  # the shipped files (the resolution one predates both fields)
        z = zoo_model(task)
        if z is not None:
            assert model_preprocessing(model_metadata(z.file)) == RECIPES[task].preprocessing()


def test_a_recipes_argv_carries_each_stages_spec() -> None:
    for r in RECIPES.values():
        for stage in range(1, r.stages + 1):
            cmd = r.train_command("data", "runs", stage)
            assert Preprocessing.from_args(cmd) == r.preprocessing(stage)
            assert r.stage_options(stage) == r.preprocessing(stage).options


@pytest.mark.parametrize(("record", "match"), [
    ({"grid_size": "64"}, "grid_size must be an integer, got '64'"),
    ({"grid_size": 64.5}, "grid_size must be an integer"),
    ({"grid_size": True}, "grid_size must be an integer"),
    ({"d_min_A": "1.2"}, r"d_min_A must be a number \(Å\)"),
    ({"d_max_A": "10"}, "d_max_A must be a number"),
    ({"background": "median"}, "unknown background 'median'"),
    ({"grid_size": 4}, "grid size must be >= 8"),
    ({"d_min_A": 0.0}, "grid d_min must be > 0"),
    ({"d_min_A": 2.4, "d_max_A": 2.0}, "must exceed the grid's d_min"),
    ({"transform": "sqrt"}, "unknown input transform"),
])
def test_bad_records_name_the_field(record: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Preprocessing.from_dict(record)


def test_bad_argv_and_records_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="a preprocessing record is a dict"):
        Preprocessing.from_dict([64, 1.2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--grid-size must be an integer, got 'big'"):
        Preprocessing.from_args(["--grid-size", "big"])
    with pytest.raises(ValueError, match="--d-max must be a number, got 'x'"):
        Preprocessing.from_args(["--d-max=x"])
    with pytest.raises(ValueError, match="--d-min needs a value"):
        Preprocessing.from_args(["--grid-size", "64", "--d-min"])
    with pytest.raises(ValueError, match="unknown background"):
        Preprocessing.from_args(["--background", "rolling-ball"])
    with pytest.raises(ValueError, match="no flag for"):
        Preprocessing(64, scale=5.0).to_args()


def test_the_answer_key_and_summary_come_from_the_spec() -> None:
    prep = Preprocessing(128, 2.4, background="radial-median", d_max_A=10.0)
    meta = {"preprocessing": prep.to_dict(), "depth": 18, "label": "is_multi"}
    assert key(prep) == prep.input_key == (128, 2.4, "radial-median", 10.0)
    assert input_key(describe_model("lattice", meta, "test")) == key(prep)
    assert input_key(describe_model("lattice", {**meta, "preprocessing": Preprocessing(
        128, 2.4).to_dict()}, "test")) != key(prep)
    assert "| grid=128 | background=radial-median | d_max=10A" in model_summary(meta)
    assert model_summary({"preprocessing": Preprocessing(64).to_dict()}).endswith("| grid=64")
