"""The run store: every answer of a run in a real database (SQLite in the working directory by
default, or any SQLAlchemy URL: postgresql://..., mysql://...), with the run's source and
geometry. No Ray.

Tables: ``runs`` (one row per run: name, source, geometry, started/updated, frames dropped) and
``answers`` (one row per frame: run, file, frame, the answer's main fields as columns for
queries, and the whole answer as JSON, core/schema.py). (run, file, frame) is unique, so a
restarted `xrp watch` never answers a frame twice. Beside them: ``live`` (the page's state),
``run_info`` (what a run was asked with) and ``positions`` (frames' motor positions).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

DEFAULT_URL = "sqlite:///xrp-runs.db"
#: Answer fields kept as columns (the rest is in the JSON).
COLUMNS = {"hit": sa.Boolean, "n_spots": sa.Integer, "ice": sa.Boolean, "p_multi": sa.Float,
           "is_multi": sa.Boolean, "resolution_A": sa.Float, "resolution_sigma_A": sa.Float,
           "d_min_spots_A": sa.Float, "error": sa.Text}

_meta = sa.MetaData()
RUNS = sa.Table(
    "runs", _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("geometry", sa.Text),  # JSON of the first frame's geometry
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("dropped", sa.Integer, nullable=False, default=0),
)
ANSWERS = sa.Table(
    "answers", _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),  # the order answers arrived in
    sa.Column("file", sa.Text, nullable=False),
    sa.Column("frame", sa.Integer, nullable=False),
    sa.Column("answered", sa.Float, nullable=False),
    *[sa.Column(k, t) for k, t in COLUMNS.items()],
    sa.Column("answer", sa.Text, nullable=False),
    sa.UniqueConstraint("run_id", "file", "frame", name="one_answer_per_frame"),
)
#: what the live page shows besides the answers: the watcher's counters, the raster of a grid
#: scan and the latest frame's thumbnail (a table of its own: older stores gain it on open)
LIVE = sa.Table(
    "live", _meta,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("received", sa.Integer, nullable=False, default=0),
    sa.Column("queued", sa.Integer, nullable=False, default=0),
    sa.Column("raster", sa.Text),  # JSON {"rows", "cols", "snake"} of a grid scan
    sa.Column("thumb", sa.LargeBinary),  # PNG of the latest frame
    sa.Column("thumb_meta", sa.Text),  # JSON: its frame, file, scale and geometry
    sa.Column("updated", sa.Float, nullable=False),
)

#: what a run was asked with, beside its answers (the crystal's cell of --cell): JSON, a table
#: of its own (older stores gain it on open)
RUN_INFO = sa.Table(
    "run_info", _meta,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("info", sa.Text, nullable=False),
)

#: motor positions of a run's frames (live/positions.py), a table of its own (older stores
#: gain it on open): ``source`` "file" (a positions file: ``file`` the name a row gives, or ""
#: for a row keyed by the frame's place in the scan) or "stream" (an image message's
#: user_data: ``file`` and ``frame`` the answer's)
POSITIONS = sa.Table(
    "positions", _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("file", sa.Text, nullable=False),
    sa.Column("frame", sa.Integer, nullable=False),
    sa.Column("x_um", sa.Float, nullable=False),
    sa.Column("y_um", sa.Float, nullable=False),
    sa.UniqueConstraint("run_id", "source", "file", "frame", name="one_position_per_frame"),
)


def absolute_store_url(url: str | None) -> str:
    """The URL with a relative SQLite path made absolute (a Serve replica's working folder
    is not the user's)."""
    url = url or DEFAULT_URL
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            return "sqlite:///" + str(Path(path).expanduser().resolve())
    return url


def _sqlite_live(dbapi_conn: Any, _record: Any) -> None:
    """SQLite for a live run: WAL, so the page reads while the watcher writes; synchronous
    NORMAL (durable at every checkpoint, no fsync per commit); wait for a busy writer."""
    cur = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000"):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _placed(run_id: int, key: tuple[str, int], a: dict[str, Any]) -> list[dict[str, Any]]:
    """The position row ("stream") of an answer that carries x_um and y_um, else none."""
    x, y = a.get("x_um"), a.get("y_um")
    if not (isinstance(x, (int, float)) and isinstance(y, (int, float))):
        return []
    return [{"run_id": run_id, "source": "stream", "file": key[0], "frame": key[1],
             "x_um": float(x), "y_um": float(y)}]


class NoStore(ValueError):
    """A read-only look at a run store that is not there (it is not created for that)."""


def shown_url(url: str) -> str:
    """The URL for messages: a password in it is hidden."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<a string that is not a database URL>"


def _sqlite_file(url: sa.engine.URL) -> Path | None:
    """The file of a SQLite URL (None: another database, or one in memory)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).expanduser()


class RunStore:
    """Runs and their answers in the database at ``url``: created on first use, or with
    ``create=False`` (read-only commands) NoStore when it is not there."""

    def __init__(self, url: str | None = None, *, create: bool = True) -> None:
        self.url = url or DEFAULT_URL
        shown = shown_url(self.url)
        try:
            parsed = sa.engine.make_url(self.url)
            self.engine = sa.create_engine(parsed)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as e:
            why = "" if isinstance(e, sa.exc.ArgumentError) else f" ({e})"
            raise ValueError(f"run store {shown!r}: not a database URL SQLAlchemy can "
                             f"open{why}") from None
        path = _sqlite_file(parsed)
        if not create and path is not None and not path.is_file():
            raise NoStore(f"no run store at {path.resolve()} (`xrp watch` or `xrp predict "
                          "--run` makes one; --store names another)")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        if parsed.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_live)
        try:
            if create:
                _meta.create_all(self.engine)
            elif not sa.inspect(self.engine).has_table(RUNS.name):
                raise NoStore(f"no run store at {shown}: the database holds no xrp runs")
        except sa.exc.DBAPIError as e:
            first = str(e.orig).strip().splitlines()[0] if str(e.orig).strip() else ""
            raise ValueError(f"run store {shown}: cannot open it ({type(e.orig).__name__}"
                             f"{': ' + first if first else ''})") from None

    def open_run(self, name: str, source: str) -> int:
        """The run's id: a new run, or the existing one of that name (resumed) if its source
        is the same; a name already used for another source is an error."""
        with self.engine.begin() as c:
            row = c.execute(sa.select(RUNS).where(RUNS.c.name == name)).mappings().first()
            if row is not None:
                if row["source"] != source:
                    raise ValueError(f"run {name!r} already exists for {row['source']}; "
                                     "choose another --run name")
                return int(row["id"])
            now = time.time()
            return int(c.execute(RUNS.insert().values(name=name, source=source, started=now,
                                                      updated=now, dropped=0)
                                 ).inserted_primary_key[0])

    def set_info(self, run_id: int, **info: Any) -> None:
        """Record what the run was asked with (merged into what it holds: a resumed run
        asked with another cell keeps the latest)."""
        with self.engine.begin() as c:
            row = c.execute(sa.select(RUN_INFO.c.info).where(RUN_INFO.c.run_id == run_id)
                            ).first()
            merged = json.dumps({**(json.loads(row[0]) if row else {}), **_clean(info)})
            if row is None:
                c.execute(RUN_INFO.insert().values(run_id=run_id, info=merged))
            else:
                c.execute(RUN_INFO.update().where(RUN_INFO.c.run_id == run_id)
                          .values(info=merged))

    def info(self, run_id: int) -> dict[str, Any]:
        """What the run was asked with (set_info), {} when nothing (or a store opened
        read-only from before the table existed)."""
        if not sa.inspect(self.engine).has_table(RUN_INFO.name):
            return {}
        with self.engine.connect() as c:
            row = c.execute(sa.select(RUN_INFO.c.info).where(RUN_INFO.c.run_id == run_id)
                            ).first()
        return json.loads(row[0]) if row else {}

    def answered(self, run_id: int) -> set[tuple[str, int]]:
        """(file, frame) of every frame the run already holds."""
        with self.engine.connect() as c:
            return {(r.file, r.frame) for r in
                    c.execute(sa.select(ANSWERS.c.file, ANSWERS.c.frame)
                              .where(ANSWERS.c.run_id == run_id))}

    def add(self, run_id: int, answers: list[dict[str, Any]], dropped: int = 0) -> int:
        """Append answers (frames already there are skipped); returns how many were new."""
        now = time.time()
        keys = list({(str(a["file"]), int(a["frame"])) for a in answers})
        with self.engine.begin() as c:
            have: set[tuple[str, int]] = set()
            for k in range(0, len(keys), 400):  # only this batch's frames, not the whole run
                have |= {(r.file, r.frame) for r in c.execute(
                    sa.select(ANSWERS.c.file, ANSWERS.c.frame).where(
                        ANSWERS.c.run_id == run_id,
                        sa.tuple_(ANSWERS.c.file, ANSWERS.c.frame).in_(keys[k:k + 400])))}
            seq = c.execute(sa.select(sa.func.count()).select_from(ANSWERS)
                            .where(ANSWERS.c.run_id == run_id)).scalar_one()
            rows, placed = [], []
            for a in answers:
                key = (str(a["file"]), int(a["frame"]))
                if key in have:
                    continue
                have.add(key)
                a = _clean(a)
                placed += _placed(run_id, key, a)
                rows.append({"run_id": run_id, "seq": seq + len(rows), "file": key[0],
                             "frame": key[1], "answered": now,
                             **{k: a.get(k) for k in COLUMNS},
                             "answer": json.dumps(a, sort_keys=True)})
            if rows:
                c.execute(ANSWERS.insert(), rows)
            if placed:
                c.execute(POSITIONS.insert(), placed)
            values: dict[str, Any] = {"updated": now, "dropped": RUNS.c.dropped + dropped}
            geom = next((r for r in answers if r.get("wavelength_A") is not None), None)
            if geom is not None:
                values["geometry"] = sa.func.coalesce(RUNS.c.geometry, json.dumps(_clean(
                    {k: geom.get(k) for k in ("detector", "wavelength_A", "distance_mm",
                                              "pixel_size_mm", "beam_center_px", "shape")})))
            c.execute(RUNS.update().where(RUNS.c.id == run_id).values(**values))
        return len(rows)

    def set_positions(self, run_id: int, rows: list[tuple[str, int, float, float]],
                      source: str = "file") -> None:
        """Replace the run's positions of ``source`` with ``rows`` (file name or "", frame,
        x_um, y_um; live/positions.Positions.rows)."""
        with self.engine.begin() as c:
            c.execute(POSITIONS.delete().where(POSITIONS.c.run_id == run_id,
                                               POSITIONS.c.source == source))
            values = [{"run_id": run_id, "source": source, "file": str(f), "frame": int(i),
                       "x_um": float(x), "y_um": float(y)} for f, i, x, y in rows]
            for k in range(0, len(values), 1000):
                c.execute(POSITIONS.insert(), values[k:k + 1000])

    def positions(self, run_id: int) -> dict[str, list[tuple[str, int, float, float]]]:
        """The run's positions by source ("file", "stream"): (file, frame, x_um, y_um) rows;
        {} when none (or a store opened read-only from before the table existed)."""
        if not sa.inspect(self.engine).has_table(POSITIONS.name):
            return {}
        p = POSITIONS.c
        out: dict[str, list[tuple[str, int, float, float]]] = {}
        with self.engine.connect() as c:
            for r in c.execute(sa.select(p.source, p.file, p.frame, p.x_um, p.y_um)
                               .where(p.run_id == run_id).order_by(p.id)):
                out.setdefault(r.source, []).append((r.file, r.frame, r.x_um, r.y_um))
        return out

    def set_live(self, run_id: int, **values: Any) -> None:
        """Update the run's live state (received, queued, raster, thumb, thumb_meta)."""
        for k in ("raster", "thumb_meta"):
            if k in values and not isinstance(values[k], (str, type(None))):
                values[k] = json.dumps(_clean(values[k]))
        values["updated"] = time.time()
        with self.engine.begin() as c:
            done = c.execute(LIVE.update().where(LIVE.c.run_id == run_id).values(**values))
            if not done.rowcount:
                c.execute(LIVE.insert().values(run_id=run_id, **{"received": 0, "queued": 0,
                                                                 **values}))

    def live(self, run_id: int) -> dict[str, Any]:
        """The run's live state (zeros where no watcher has written one)."""
        with self.engine.connect() as c:
            row = c.execute(sa.select(LIVE).where(LIVE.c.run_id == run_id)).mappings().first()
        if row is None:
            return {"received": 0, "queued": 0, "raster": None, "thumb": None,
                    "thumb_meta": None, "updated": None}
        out = dict(row)
        for k in ("raster", "thumb_meta"):
            out[k] = json.loads(out[k]) if out[k] else None
        return out

    def since(self, run_id: int, seq: int, limit: int = 5000) -> list[dict[str, Any]]:
        """The run's answers with seq > ``seq`` in arrival order, each with its seq."""
        with self.engine.connect() as c:
            q = (sa.select(ANSWERS.c.seq, ANSWERS.c.answer)
                 .where(ANSWERS.c.run_id == run_id, ANSWERS.c.seq > seq)
                 .order_by(ANSWERS.c.seq).limit(limit))
            return [json.loads(r.answer) | {"seq": int(r.seq)} for r in c.execute(q)]

    def cells(self, run_id: int) -> list[dict[str, Any]]:
        """file, frame, hit, n_spots, resolution_A and error of every answer of the run, in
        arrival order (columns only, no JSON: cheap enough for every live update)."""
        a = ANSWERS.c
        with self.engine.connect() as c:
            q = (sa.select(a.file, a.frame, a.hit, a.n_spots, a.resolution_A, a.error)
                 .where(a.run_id == run_id).order_by(a.seq))
            return [dict(r) for r in c.execute(q).mappings()]

    def rate(self, run_id: int, window_s: float = 10.0, quiet_s: float = 3.0) -> float:
        """Frames/s now: answers of the last ``window_s`` over the time they span; 0 once no
        answer came for ``quiet_s``."""
        now = time.time()
        with self.engine.connect() as c:
            n, lo, hi = c.execute(sa.select(
                sa.func.count(), sa.func.min(ANSWERS.c.answered), sa.func.max(ANSWERS.c.answered)
            ).where(ANSWERS.c.run_id == run_id, ANSWERS.c.answered > now - window_s)).one()
        if not n or now - hi > quiet_s:
            return 0.0
        return n / max(hi - lo, now - lo, 1.0)

    def runs(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every run (or the one named) with its frame, hit, multi-lattice and error counts."""
        a = ANSWERS.c
        q = (sa.select(RUNS, sa.func.count(a.id).label("frames"),
                       sa.func.sum(sa.case((a.hit.is_(True), 1), else_=0)).label("hits"),
                       sa.func.sum(sa.case((a.error.is_not(None), 1), else_=0)).label("errors"),
                       sa.func.sum(sa.case((a.is_multi.is_(True), 1), else_=0)).label("multi"))
             .select_from(RUNS.outerjoin(ANSWERS)).group_by(RUNS.c.id).order_by(RUNS.c.id))
        if name is not None:
            q = q.where(RUNS.c.name == name)
        with self.engine.connect() as c:
            return [dict(r) | {k: int(r[k] or 0) for k in ("hits", "errors", "multi")}
                    for r in c.execute(q).mappings()]

    def run(self, name: str) -> dict[str, Any]:
        found = self.runs(name)
        if not found:
            raise ValueError(f"no run {name!r} in {shown_url(self.url)} (`xrp runs list` "
                             "shows them)")
        return found[0]

    def answers(self, name: str) -> list[dict[str, Any]]:
        """The run's answers in arrival order (the full JSON of each)."""
        run_id = self.run(name)["id"]
        with self.engine.connect() as c:
            q = sa.select(ANSWERS.c.answer).where(ANSWERS.c.run_id == run_id) \
                .order_by(ANSWERS.c.seq)
            return [json.loads(r.answer) for r in c.execute(q)]
