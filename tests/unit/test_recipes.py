"""The zoo recipes: the commands that reproduce each shipped (or planned) model, on the presets
its release froze."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from xray_platform.core.preprocess import BACKGROUNDS
from xray_platform.io.provenance import preset_fingerprint
from xray_platform.physics.presets import PRESETS, preset
from xray_platform.zoo import zoo_model
from xray_platform.zoo.export import card_notes
from xray_platform.zoo.recipes import RECIPES


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_lattice_trunk_is_the_zoo_run_or_else_the_shipped_resolution_model(tmp_path: Path) -> None:
    r = RECIPES["lattice"]
    cmd = r.train_command("data", str(tmp_path))
    assert _arg(cmd, "--init") == "transfer" and _arg(cmd, "--label") == "is_multi_hits"
    assert _arg(cmd, "--transfer-from") == str(zoo_model("resolution").file)
    run = tmp_path / "zoo-resolution" / "model.pt"
    run.parent.mkdir()
    run.write_bytes(b"")
    assert _arg(r.train_command("data", str(tmp_path)), "--transfer-from") == str(run)


def test_every_recipe_names_its_grid_and_seeded_data_sets() -> None:
    for task, r in RECIPES.items():
        cmd = r.train_command("data", "runs")
        assert cmd[:2] == ["train", task]
        assert _arg(cmd, "--grid-size") == str(r.grid_size)
        assert _arg(cmd, "--d-min") == str(r.d_min_A)
        seeds = [_arg(c, "--seed") for c in r.simulate_commands("data")]
        assert seeds[:2] == ["0", "1"] and set(seeds[2:]) <= {"2"}


#: the lattice recipe as a three-stage one whose last stage subtracts the background
STAGED = replace(RECIPES["lattice"], stages=3, background="radial-median", background_stage=3)


def test_a_later_stage_continues_from_the_whole_network_of_the_stage_before() -> None:
    r = STAGED
    assert r.stages >= 2 and r.run_names()[:2] == ["zoo-lattice", "zoo-lattice-2"]
    first, second = r.train_command("data", "runs", 1), r.train_command("data", "runs", 2)
    assert _arg(first, "--name") == "zoo-lattice" and _arg(second, "--name") == "zoo-lattice-2"
    assert _arg(second, "--transfer-from") == "runs/zoo-lattice/model.pt"
    assert _arg(second, "--seed") != _arg(first, "--seed")  # another shuffle and flips
    assert _arg(second, "--data") == _arg(first, "--data")


def test_the_background_subtraction_starts_at_its_stage_and_is_the_models_input() -> None:
    r = STAGED
    for stage in range(1, r.stages + 1):
        cmd = r.train_command("data", "runs", stage)
        bg = _arg(cmd, "--background") if "--background" in cmd else "none"
        assert bg == (r.background if stage >= r.background_stage else "none")
    assert r.stage_background(r.stages) == "radial-median" != r.stage_background(1)
    assert r.stage_options(r.stages).background == "radial-median"
    assert RECIPES["lattice"].stage_background(1) in BACKGROUNDS


def test_the_low_resolution_mask_is_every_stages_input() -> None:
    r = replace(STAGED, d_max_A=10.0)
    for stage in range(1, r.stages + 1):
        assert _arg(r.train_command("data", "runs", stage), "--d-max") == "10"
        assert r.stage_options(stage).d_max_A == 10.0
    assert "--d-max" not in RECIPES["resolution"].train_command("data", "runs")


#: the presets zoo release 2026.12 froze (io/provenance.preset_fingerprint): what its models
#: were trained and evaluated on. A change here means the release's shots changed: restore the
#: frozen definition in physics/presets.py instead of updating these.
FROZEN_2026_12 = {
    "zoo-resolution@2026.12": "d6ef8aa68a920572",
    "zoo-lattice@2026.12": "c3679f4efeb0765e",
    "zoo-user-sets@2026.12": "6aae1445d35bf046",
    "zoo-lattice-uniform@2026.12": "804f29df57adf00b",
    "zoo-lattice-g1@2026.12": "107a773dcd6211ef",
    "zoo-lattice-g5@2026.12": "8fc177638910c2f4",
    "zoo-lattice-g20@2026.12": "95741578c2caf00c",
}


def test_the_frozen_presets_of_release_2026_12_are_unchanged() -> None:
    frozen = {n: preset_fingerprint(p) for n, p in PRESETS.items() if n.endswith("@2026.12")}
    assert frozen == FROZEN_2026_12
    # the shipped resolution model saw two detectors; the current distribution has five
    old, now = preset("zoo-resolution@2026.12"), preset("zoo-resolution")
    assert old.sim.detectors == ("pilatus6m", "eiger16m") and len(now.sim.detectors) == 5
    assert preset_fingerprint(old) != preset_fingerprint(now)
    assert {old.params(2, i).detector for i in range(40)} == {"pilatus6m", "eiger16m"}


def test_a_preset_version_that_does_not_exist_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no version '2025\.01'; known: zoo-resolution@2026\.12"):
        preset("zoo-resolution@2025.01")
    with pytest.raises(ValueError, match="not versioned"):
        preset("quick-resolution@2026.12")


def test_a_shipped_models_recipe_and_card_name_its_releases_frozen_presets() -> None:
    for task, r in RECIPES.items():
        z = zoo_model(task)
        if z is None:
            continue
        assert r.release == z.version
        cmds = r.simulate_commands("data")
        assert all(c[1].endswith(f"@{z.version}") and preset(c[1]) for c in cmds)
        assert all(not c[-1].split("/")[-1].count("@") for c in cmds)  # folders: bare names
        card = z.card.read_text()
        assert all(" ".join(["xrp", *c]) in card for c in cmds), task
        assert card_notes(card) and "## Evaluation" not in card_notes(card)
