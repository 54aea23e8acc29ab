"""The zoo recipes: the commands that reproduce each shipped (or planned) model."""

from __future__ import annotations

from pathlib import Path

from xray_platform.zoo import zoo_model
from xray_platform.zoo.recipes import RECIPES


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_lattice_trunk_is_the_zoo_run_or_else_the_shipped_resolution_model(tmp_path: Path) -> None:
    r = RECIPES["lattice"]
    cmd = r.train_command("data", str(tmp_path), "zoo-lattice")
    assert _arg(cmd, "--init") == "transfer" and _arg(cmd, "--label") == "is_multi_hits"
    assert _arg(cmd, "--transfer-from") == str(zoo_model("resolution").file)
    run = tmp_path / "zoo-resolution" / "model.pt"
    run.parent.mkdir()
    run.write_bytes(b"")
    assert _arg(r.train_command("data", str(tmp_path), "x"), "--transfer-from") == str(run)


def test_every_recipe_names_its_grid_and_seeded_data_sets() -> None:
    for task, r in RECIPES.items():
        cmd = r.train_command("data", "runs", f"zoo-{task}")
        assert cmd[:2] == ["train", task]
        assert _arg(cmd, "--grid-size") == str(r.grid_size)
        assert _arg(cmd, "--d-min") == str(r.d_min_A)
        seeds = [_arg(c, "--seed") for c in r.simulate_commands("data")]
        assert seeds[:2] == ["0", "1"] and set(seeds[2:]) <= {"2"}
