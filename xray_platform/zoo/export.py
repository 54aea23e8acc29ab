"""Put a trained model into the zoo: fp16 weights, its metadata, and a model card.

    python -m xray_platform.zoo.export resolution runs/zoo-resolution/model.pt \\
        --version 2026.12 --report runs/zoo-resolution/eval-zoo-resolution/report.md ...
    python -m xray_platform.zoo.export resolution --card-only --report ...  # new reports only

The card says what the model was trained on, how to reproduce it (the recipe's commands), and
carries its evaluation reports and plots (copied next to it, cards/<task>/).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from xray_platform.core.models import (
    load_model,
    model_metadata,
    model_summary,
    provenance_summary,
    save_model,
)
from xray_platform.core.preprocess import Preprocessing
from xray_platform.io.atomic import atomic_open
from xray_platform.zoo import INDEX, ZOO_DIR, zoo_model
from xray_platform.zoo.recipes import RECIPES


def _background(r, meta: dict) -> str:
    """The card's words for what the model subtracts from its input (its file's record)."""
    bg = Preprocessing.from_dict(meta.get("preprocessing", {})).background
    if bg == "none":
        return ""
    since = f" from stage {r.background_stage} on" if r.background_stage > 1 else ""
    return f"each ring's median count subtracted ({bg}{since}), "


def _low_res_mask(meta: dict) -> str:
    """The card's words for the input's low-resolution mask (its file's record)."""
    d_max = Preprocessing.from_dict(meta.get("preprocessing", {})).d_max_A
    return "" if d_max is None else f"cells at d > {d_max:g} Å masked, "


def _card(task: str, name: str, version: str, meta: dict, reports: list[Path],
          notes: str) -> str:
    r = RECIPES[task]
    cmds = [" ".join(["xrp", *c]) for c in r.simulate_commands("data")]  # (paths in the
    # package are written relative to the repository, not to this machine)
    cmds += [" ".join(["xrp", *r.train_command("data", "runs", k)])
             for k in range(1, r.stages + 1)]
    last = f"runs/{r.run_names()[-1]}"
    if r.calibrate:
        cmds.append(" ".join(["xrp", *r.calibrate_command(
            "data", f"{last}/model.pt", f"{last}/model-calibrated.pt")]))
    data = meta.get("training_data", {})
    init = f"trunk from the {r.transfer_from} model" if r.transfer_from else "from scratch"
    lines = [f"# {name} {version}", "", f"**{model_summary(meta)}**", "",
             "## What it answers", "",
             ("P(multi-lattice): the probability that a still shows two or more crystal "
              "lattices (threshold 0.5)." if task == "lattice" else
              "The visible resolution d_vis of a hit (Å, design.md: the 98th percentile of 1/d "
              "over reflections with I/sigma >= 3) with a per-shot sigma (Å)."), "",
             "## Trained on", "",
             f"- data: `{data.get('path', '?')}` ({data.get('n_shots', '?')} shots; preset "
             f"`{r.preset(r.train)}`, seed 0), validation `{data.get('val_data', '?')}` (seed 1)",
             f"- input: {r.grid_size} x {r.grid_size} reciprocal-space grid to "
             f"{r.d_min_A} Å, {_low_res_mask(meta)}{_background(r, meta)}log1p(counts)/10, "
             "random flips",
             f"- ResNet-{r.depth} {init}{', label ' + r.label if r.label else ''}, "
             f"AdamW lr {r.lr} (warm-up + cosine), batch "
             f"{r.batch_size}, {r.epochs} epochs"
             f"{f' x {r.stages} stages (warm restarts)' if r.stages > 1 else ''} (the weights "
             f"of epoch {meta.get('epoch', '?')}{' of the last stage' if r.stages > 1 else ''}"
             f", the best on validation), seed {r.seed}",
             f"- MLflow run {meta.get('mlflow_run_id', '?')}",
             *([f"- made by: {provenance_summary(meta)}"] if "provenance" in meta else []),
             *([f"- calibrated: temperature {cal['temperature']:.3f} fitted on {cal['n']} "
                f"validation shots (expected calibration error {cal['ece_before']:.3f} -> "
                f"{cal['ece_after']:.3f}, log-loss {cal['nll_before']:.3f} -> "
                f"{cal['nll_after']:.3f})"] if (cal := meta.get("calibration")) else []), "",
             "## Reproduce it", "", "```bash", *cmds, "```", "",
             "(or `python jobs/zoo.py " + task + "`, which runs these and resumes an "
             "interrupted run)", ""]
    lines = [ln.replace(str(ZOO_DIR), "xray_platform/zoo") for ln in lines]
    if notes:
        lines += ["## Notes", "", notes, ""]
    if (ZOO_DIR / "cards" / task / "learning_curve.png").is_file():
        lines += ["## Learning curve", "", "Validation metrics after each epoch "
                  "(`python benchmarks/learning_curve.py RUN_DIR --mlflow-uri URI`):", "",
                  f"![learning curve](cards/{task}/learning_curve.png)", ""]
    for rep in reports:
        lines += [f"## Evaluation: {rep.parent.name}", ""]
        body = rep.read_text().split("\n", 1)[-1]  # drop the report's own title
        lines += [body.replace("](", f"](cards/{task}/{rep.parent.name}/"), ""]
    return "\n".join(lines)


def _copy_reports(task: str, reports: list[Path]) -> list[Path]:
    """Copy each report's folder (markdown, JSON, plots) to cards/<task>/, replacing the
    report folders there; other files (the learning curve) stay."""
    cards = ZOO_DIR / "cards" / task
    cards.mkdir(parents=True, exist_ok=True)
    for old in [d for d in cards.iterdir() if d.is_dir()]:
        shutil.rmtree(old)
    copied = []
    for rep in reports:
        dst = cards / rep.parent.name
        dst.mkdir()
        for f in rep.parent.iterdir():
            if f.suffix in (".md", ".json", ".png"):
                shutil.copy2(f, dst / f.name)
        copied.append(dst / rep.name)
    return copied


def _write_card(task: str, name: str, version: str, meta: dict, reports: list[Path],
                notes: str) -> Path:
    card = ZOO_DIR / f"{name}.md"
    with atomic_open(card, "w") as fh:
        fh.write(_card(task, name, version, meta, reports, notes))
    return card


def card_notes(card: str) -> str:
    """The notes section of a card (what export's --notes gave it), or ''."""
    if "\n## Notes\n\n" not in card:
        return ""
    return card.split("\n## Notes\n\n", 1)[1].split("\n\n## ", 1)[0].rstrip()


def export(task: str, model: Path, version: str, reports: list[Path], notes: str = "") -> Path:
    """Write zoo/<name>.pt (fp16), cards/<task>/ (reports + plots), <name>.md and index.json."""
    net, meta = load_model(model)
    if net.task != task:
        raise ValueError(f"{model} is a {net.task} model, not {task}")
    name = f"xrp-zoo-{task}"
    meta = {**meta, "zoo": {"name": name, "version": version}}
    out = save_model(ZOO_DIR / f"{name}.pt", net, meta, dtype=torch.float16)
    cards = ZOO_DIR / "cards" / task
    if cards.exists():
        shutil.rmtree(cards)
    copied = _copy_reports(task, reports)
    curve = model.parent / "learning_curve.png"  # benchmarks/learning_curve.py, if run
    if curve.is_file():
        shutil.copy2(curve, cards / curve.name)
    card = _write_card(task, name, version, meta, copied, notes)
    index = json.loads(INDEX.read_text()) if INDEX.is_file() else {}
    index[task] = {"name": name, "version": version, "file": out.name, "card": card.name}
    with atomic_open(INDEX, "w") as fh:
        fh.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return out


def refresh_card(task: str, reports: list[Path]) -> Path:
    """Rewrite the shipped model's card around new evaluation reports (today's `xrp evaluate`
    on its recipe's test sets), keeping its notes and learning curve; the model file stays."""
    z = zoo_model(task)
    if z is None:
        raise ValueError(f"the zoo ships no {task} model")
    notes = card_notes(z.card.read_text()) if z.card and z.card.is_file() else ""
    return _write_card(task, z.name, z.version, model_metadata(z.file),
                       _copy_reports(task, reports), notes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=sorted(RECIPES))
    ap.add_argument("model", type=Path, nargs="?", help="the trained model (not with "
                    "--card-only)")
    ap.add_argument("--version", help="the zoo release (needed with a model)")
    ap.add_argument("--report", type=Path, action="append", default=[],
                    help="an `xrp evaluate` report.md (repeatable)")
    ap.add_argument("--notes", default="", help="markdown for the card's notes section")
    ap.add_argument("--card-only", action="store_true", help="rewrite the shipped model's "
                    "card with these reports, keeping its notes (no model, no version)")
    a = ap.parse_args()
    if a.card_only:
        print(refresh_card(a.task, a.report))
    elif a.model is None or a.version is None:
        ap.error("a model and --version are needed (or --card-only)")
    else:
        print(export(a.task, a.model, a.version, a.report, a.notes))


if __name__ == "__main__":
    main()
