"""The production recipes of the zoo: the data sets, grid, network and schedule of each shipped
model, as the `xrp` commands that reproduce it (jobs/zoo.py runs them, resumably).

Every number here was chosen by measurement (benchmarks/grid_table.py: accuracy vs grid size vs
cost; the model cards give the figures); the data sets are fully determined by preset + seed,
and a shipped model's recipe names its release's frozen presets (zoo-resolution@2026.12), which
stay put when the current definitions move on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xray_platform.core.preprocess import InputOptions, Preprocessing


@dataclass(frozen=True)
class Recipe:
    task: str
    train: str  # data set preset, simulated with seed 0
    n_train: int
    val: str  # validation preset, seed 1 (never a training shot)
    n_val: int
    grid_size: int
    d_min_A: float
    depth: int = 18
    epochs: int = 12
    batch_size: int = 32
    calibrate: bool = False  # temperature-scale the classifier on the validation shots
    lr: float = 1e-3
    seed: int = 0
    label: str | None = None  # the training label, when not the task's default
    #: the task whose zoo run gives the initial trunk (--init transfer), or None: from scratch
    transfer_from: str | None = None
    #: training runs of ``epochs`` each, every later one starting from the whole network of
    #: the one before (a warm restart of the schedule: a run that fits in one session and
    #: continues in the next; run names zoo-<task>, zoo-<task>-2, ...)
    stages: int = 1
    #: subtracted from the inputs (preprocess.BACKGROUNDS) from stage ``background_stage`` on
    #: (earlier stages: raw inputs; a later stage then fine-tunes the network onto the new input)
    background: str = "none"
    background_stage: int = 1
    #: input cells at lower resolution than this (Å) are masked, in every stage
    d_max_A: float | None = None
    #: held-out evaluation sets (preset, shots), simulated with seed 2
    evaluations: tuple[tuple[str, int], ...] = field(default_factory=tuple)
    #: the zoo release whose frozen presets (NAME@RELEASE, physics/presets.py) the data sets
    #: are simulated from, so that they are the shots its model saw; None: the current presets
    release: str | None = None

    def preset(self, name: str) -> str:
        """The preset argument of a data set of this recipe (the folder keeps the bare name)."""
        return f"{name}@{self.release}" if self.release else name

    def simulate_commands(self, root: str) -> list[list[str]]:
        """`xrp simulate` argv of the training, validation and evaluation sets (resumable)."""
        cmds = [["simulate", self.preset(self.train), "-n", str(self.n_train), "--seed", "0",
                 "--out", f"{root}/{self.train}"],
                [*["simulate", self.preset(self.val), "-n", str(self.n_val), "--seed", "1"],
                 "--out", f"{root}/{self.val}-val"]]
        for preset, n in self.evaluations:
            cmds.append(["simulate", self.preset(preset), "-n", str(n), "--seed", "2",
                         "--out", f"{root}/{preset}-test"])
        return cmds

    def run_names(self) -> list[str]:
        """The training run of each stage; the last one gives the model."""
        return [f"zoo-{self.task}" + (f"-{k}" if k > 1 else "") for k in
                range(1, self.stages + 1)]

    def train_command(self, root: str, runs: str, stage: int = 1) -> list[str]:
        """The `xrp train` argv of a stage (add --resume to continue from its last checkpoint):
        stage 1 from the transfer trunk (or scratch), later stages from the stage before."""
        names = self.run_names()
        source = (f"{runs}/{names[stage - 2]}/model.pt" if stage > 1 else
                  self.trunk(runs) if self.transfer_from else None)
        init = ["--init", "transfer", "--transfer-from", source] if source else []
        prep = self.preprocessing(stage).to_args()  # --grid-size, --d-min, then the options
        return ["train", self.task, "--data", f"{root}/{self.train}",
                "--val-data", f"{root}/{self.val}-val", *prep[:4], "--depth", str(self.depth),
                "--epochs", str(self.epochs), "--batch-size", str(self.batch_size), "--lr",
                str(self.lr), "--seed", str(self.seed + stage - 1), "--out", runs, "--name",
                names[stage - 1], *(["--label", self.label] if self.label else []), *init,
                *prep[4:]]  # (the order the model cards quote)

    def stage_background(self, stage: int) -> str:
        """What a stage subtracts from its inputs (the last stage's: the model's)."""
        return self.background if stage >= self.background_stage else "none"

    def preprocessing(self, stage: int | None = None) -> Preprocessing:
        """A stage's model input: grid, background and d_max (default: the last stage's, the
        model's)."""
        from xray_platform.core.preprocess import Preprocessing

        bg = self.stage_background(self.stages if stage is None else stage)
        return Preprocessing(self.grid_size, self.d_min_A, background=bg, d_max_A=self.d_max_A)

    def stage_options(self, stage: int) -> InputOptions:
        """A stage's preprocess.InputOptions (the last stage's: the model's)."""
        return self.preprocessing(stage).options

    def calibrate_command(self, root: str, model: str, out: str) -> list[str]:
        """The `xrp models calibrate` argv: the temperature fitted on the validation shots."""
        return ["models", "calibrate", model, "--data", f"{root}/{self.val}-val", "--out", out]

    def trunk(self, runs: str) -> str:
        """The model giving the initial trunk: the zoo run of ``transfer_from`` under ``runs``
        (its last stage) if there is one, else the model the package ships for that task."""
        from pathlib import Path

        from xray_platform.zoo import zoo_model

        run = Path(runs) / RECIPES[str(self.transfer_from)].run_names()[-1] / "model.pt"
        shipped = zoo_model(str(self.transfer_from))
        return str(shipped.file) if not run.is_file() and shipped is not None else str(run)


#: Grids from benchmarks/grid_table.py (same CPU budget per cell): 64² to 1.2 Å gave the best
#: resolution r (0.90 vs 0.77 at 128²) and lattice AUC (0.58; 128² 0.56, 256² 0.46).
RECIPES: dict[str, Recipe] = {
    "resolution": Recipe(
        "resolution", "zoo-resolution", 30_000, "zoo-resolution", 1_500, 64, 1.2, epochs=16,
        evaluations=(("zoo-resolution", 2_000), ("zoo-user-sets", 40)), release="2026.12"),
    # 64² to 1.2 Å stayed near chance; 128² to 2.4 Å (the cells of 256² to 1.2 Å, fine
    # enough to separate lattices) learns (validation accuracy 0.710 after 5 epochs, 0.758
    # after a second 5-epoch stage). Those raw-input models called the real thaumatin hit
    # multi (p 0.66) from d > 10 Å, the beamstop's surroundings (halo, shadow, parasitic
    # scatter), which the simulation does not reproduce, so the inputs mask d > 10 Å. The hit
    # is multi-lattice in fact (core/indexing.py: four lattices 0.6-2 deg apart). Three stages
    # of 3 epochs, each fitting in a session's CPU (validation 0.628 / 0.697 / see the card)
    "lattice": Recipe(
        "lattice", "zoo-lattice", 30_000, "zoo-lattice", 1_500, 128, 2.4, epochs=3, stages=3,
        lr=5e-4, d_max_A=10.0, label="is_multi_hits", transfer_from="resolution", calibrate=True,
        evaluations=(("zoo-lattice-uniform", 1_000), ("zoo-lattice-g1", 1_000),
                     ("zoo-lattice-g5", 1_000), ("zoo-lattice-g20", 1_000)), release="2026.12"),
}
