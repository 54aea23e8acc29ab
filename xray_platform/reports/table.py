"""The per-image table (`xrp predict --out`, `xrp runs export --out`): a frame's answer
(core/answer.py) flattened into the columns of core/schema.py, and the table written as CSV,
TSV or Parquet. No Ray: whatever writes a table imports this, not orchestration/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xray_platform.core.schema import COLUMNS

_INTS = ("frame", "n_spots", "n_spots_no_ice", "n_lattices_indexed")  # ints beside nulls
_BOOLS = ("hit", "is_multi", "ice", "resolution_disagrees", "indexed_with_cell")


def table_row(rec: dict[str, Any]) -> dict[str, Any]:
    """One table row (COLUMNS) of a frame's answer, or of a row already flat (the run store's
    answers may be either): nested fields become their columns, timings and model names
    theirs."""
    row = {c: rec.get(c) for c in COLUMNS}
    row.update(_nested_columns(rec))
    for k, v in (rec.get("timings_ms") or {}).items():
        if k in row:
            row[k] = v
    for t, m in (rec.get("models") or {}).items():
        row[f"{t}_model"] = f"{m['name']}/{m['version']}" if m.get("name") else m.get("source")
    return row


def _nested_columns(rec: dict[str, Any]) -> dict[str, Any]:
    """The columns an answer holds nested (beam centre, ice rings, lattices); none of a row
    that is already flat."""
    out: dict[str, Any] = {}
    if "beam_center_px" in rec or "beam_center_x_px" not in rec:  # an answer, not a row
        bc = rec.get("beam_center_px") or (None, None)
        out["beam_center_x_px"], out["beam_center_y_px"] = bc
    rings = rec.get("ice_rings")  # the table keeps the d-spacings (Å), strongest first
    if rings is not None or "ice_rings_A" not in rec:
        out["ice_rings_A"] = " ".join(f"{r['d_A']:.3f}" for r in rings) if rings else None
    lattices = rec.get("lattices")  # the table keeps the spots each lattice explains
    if lattices is not None or "lattice_spots" not in rec:
        out["lattice_spots"] = " ".join(str(x["spots"]) for x in lattices) if lattices \
            else None
    return out


def confident_rows(rows: list[dict[str, Any]], min_confidence: float) -> list[dict[str, Any]]:
    """The rows whose lattice verdict has at least ``min_confidence`` (unreadable frames stay:
    their error says why they have no answer; misses stay: they have no lattice verdict)."""
    return [r for r in rows if r.get("error") or r.get("hit") is False
            or (r.get("confidence") or 0.0) >= min_confidence]


def write_table(rows: list[dict[str, Any]], out: Path) -> Path:
    """CSV or Parquet by suffix, written atomically."""
    import pandas as pd

    from xray_platform.io.atomic import atomic_open

    df = pd.DataFrame(rows, columns=COLUMNS)
    for c in _INTS:
        df[c] = df[c].astype("Int64")
    for c in _BOOLS:
        df[c] = df[c].astype("boolean")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        with atomic_open(out, "wb") as fh:
            df.to_parquet(fh, index=False)
    elif out.suffix in (".csv", ".tsv"):
        with atomic_open(out, "w") as fh:
            df.to_csv(fh, index=False, sep="\t" if out.suffix == ".tsv" else ",")
    else:
        raise ValueError(f"--out {out}: use a .csv, .tsv or .parquet file")
    return out
