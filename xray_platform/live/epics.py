"""`xrp watch --epics PREFIX`: a run's results as EPICS channel-access PVs, from a pure-Python
caproto server in the watching process. No Ray.

The server runs its own asyncio loop in a daemon thread. The watch loop only hands over each
batch of stored answers (:meth:`EpicsResults.answers`: a list append and a wake-up, never a wait),
so a slow or failing server cannot stall or crash it; a failure is counted and the PVs keep their
last values. The server's writer computes the values and writes the PVs that changed, which
pushes them to every monitoring client; batches that arrive while it writes are coalesced.

PVs are ``PREFIX`` + the names in :data:`PVS` (a colon is added to a prefix that ends without
one: ``--epics BL12:XRP`` serves ``BL12:XRP:FRAMES``). All are read-only. "Unknown" is NaN for
floating-point PVs and -1 for integer ones (a miss has no resolution, a run without ``--grid``
no cell). The server listens on ``EPICS_CAS_INTF_ADDR_LIST`` when set (e.g. the beamline
network), else on loopback only; the UDP search and first TCP port is ``EPICS_CA_SERVER_PORT``
(5064), as for any channel-access server.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from xray_platform.live.positions import STREAM, Positions

log = logging.getLogger(__name__)
#: the answer fields a grid's or a positions scan's centring reads
CELL_FIELDS = ("file", "frame", "hit", "n_spots", "resolution_A", "error", "x_um", "y_um")

NAN = float("nan")
#: name -> (kind, units, meaning, unknown value); kind: "int", "float" or "str"
PVS: dict[str, tuple[str, str, str, Any]] = {
    "RUN": ("str", "", "The run's name in the run store.", ""),
    "FRAMES": ("int", "", "Frames answered in the run (hits, misses and unreadable frames).", 0),
    "HITS": ("int", "", "Hits among them.", 0),
    "HIT_RATE": ("float", "%", "HITS / FRAMES x 100.", NAN),
    "ERRORS": (
        "int",
        "",
        "Frames that could not be read or decoded (their error is their answer).",
        0,
    ),
    "DROPPED": ("int", "", "Frames dropped unanswered because the watcher fell behind.", 0),
    "LAST_FRAME": ("int", "", "Frame number of the latest answer.", -1),
    "LAST_HIT": ("int", "", "1 when the latest answer is a hit, else 0.", -1),
    "LAST_HIT_FRAME": (
        "int",
        "",
        "Frame number of the latest hit (the LAST_* values below are its).",
        -1,
    ),
    "LAST_RES": (
        "float",
        "A",
        "Resolution of the latest hit: d_vis from the resolution model "
        "(Å); NaN without a resolution model.",
        NAN,
    ),
    "LAST_DMIN": ("float", "A", "Classical d_min from the latest hit's spots (Å).", NAN),
    "LAST_NLAT": ("int", "", "Lattices indexing found in the latest hit (n_lattices_indexed).", -1),
    "LAST_P_MULTI": ("float", "", "P(two or more lattices) of the latest hit.", NAN),
    "BEST_ROW": (
        "int",
        "",
        "Grid scans (--grid): row of the best cell (the hit with the most "
        "spots; live/centre.py), from 0.",
        -1,
    ),
    "BEST_COL": ("int", "", "Grid scans: column of the best cell, from 0.", -1),
    "BEST_FRAME": ("int", "", "Grid scans: frame number of the best cell.", -1),
    "CENTRE_ROW": (
        "float",
        "",
        "Grid scans: row of the strongest crystal's centre (spot-"
        "weighted, live/centre.py), in cells from 0.",
        NAN,
    ),
    "CENTRE_COL": ("float", "", "Grid scans: column of that centre, in cells from 0.", NAN),
    "CENTRE_X": (
        "float",
        "um",
        "Grid scans with --step-um: that centre's x from the first cell's centre (µm); "
        "scans with motor positions: its absolute x (µm).",
        NAN,
    ),
    "CENTRE_Y": ("float", "um", "Grid scans with --step-um, or motor positions: that "
                 "centre's y (µm).", NAN),
    "N_CRYSTALS": ("int", "", "Grid scans: diffracting regions apart (crystals).", -1),
    "UPDATED": ("float", "s", "When these values were computed (Unix time, s).", NAN),
}


def pv_prefix(prefix: str) -> str:
    """The PV name prefix: ``prefix`` with a trailing colon unless it ends in one."""
    prefix = prefix.strip()
    if not prefix or any(ch.isspace() for ch in prefix):
        raise ValueError(
            f"EPICS prefix {prefix!r}: give a PV name prefix without spaces, e.g. BL12:XRP"
        )
    return prefix if prefix.endswith(":") else prefix + ":"


def interfaces() -> list[str]:
    """Where the server listens: EPICS_CAS_INTF_ADDR_LIST, else loopback only."""
    listed = os.environ.get("EPICS_CAS_INTF_ADDR_LIST", "").split()
    return [a.split(":")[0] for a in listed] or ["127.0.0.1"]


class _Beacons(logging.Filter):
    """Counts caproto's failed beacon sends instead of printing a traceback each time (no
    CA repeater listens on loopback, where the server runs by default)."""

    failed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Failed to send beacon"):
            _Beacons.failed += 1
            return False
        return True


def _same(a: Any, b: Any) -> bool:
    return a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )


def _num(v: Any, unknown: Any) -> Any:
    return unknown if v is None else v


class EpicsResults:
    """The PVs of run ``run`` served under ``prefix``; ``raster`` ({"rows", "cols", "snake"})
    and ``step_um`` (x, y) for a grid scan's best cell and centre; ``positions`` (a positions
    file's) or answers carrying x_um, y_um (the stream's user_data): the centre from motor
    positions (CENTRE_X/Y in absolute µm)."""

    def __init__(
        self,
        prefix: str,
        run: str,
        *,
        raster: Mapping[str, Any] | None = None,
        step_um: tuple[float, float] | None = None,
        positions: Positions | None = None,
    ) -> None:
        self.prefix = pv_prefix(prefix)
        self.run = run
        self.raster = dict(raster) if raster else None
        self.step_um = step_um
        self.positions = positions  # a positions file's (live/positions.py)
        self._placed = positions is not None  # the centring is from motor positions
        self.errors = 0  # failures inside the publisher (never raised into the watch loop)
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._dropped = 0  # dropped by this watch session
        self._dropped_before = 0  # dropped before it (a resumed run)
        self._cells: list[dict[str, Any]] = []  # every answer's grid fields (grid scans)
        self._counts = {"FRAMES": 0, "HITS": 0, "ERRORS": 0}
        self._last: dict[str, Any] = {}
        self._grid: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._ctx: Any = None
        self.pvdb: dict[str, Any] = {}
        self.port: int | None = None

    # -- the watch loop's side: cheap, never raises -----------------------------------------

    def seed(self, answers: list[Mapping[str, Any]], dropped: int = 0) -> None:
        """A resumed run: the answers (and dropped count) the store already holds."""
        self._dropped_before = int(dropped or 0)
        self.answers(list(answers))

    def answers(self, batch: list[Mapping[str, Any]]) -> None:
        """Hand over a batch of stored answers (the watch loop's ``on_answers``)."""
        try:
            with self._lock:
                self._pending.extend(batch)
            self._poke()
        except Exception as e:  # noqa: BLE001 -- the watch loop must go on whatever happens
            self._fail(e)

    def stats(self, stats: Any) -> None:
        """The watcher's counters (its ``on_update``): frames dropped."""
        try:
            dropped = int(getattr(stats, "dropped", 0) or 0)
            if dropped != self._dropped:  # this session's; the store's before it are seeded
                self._dropped = dropped
                self._poke()
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def _fail(self, e: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(e).__name__}: {e}"
        if self.errors == 1:
            log.warning(
                "EPICS results: %s (the watch goes on; PVs keep their last values)", self.last_error
            )

    # -- the server ---------------------------------------------------------------------------

    def start(self, timeout_s: float = 20.0) -> EpicsResults:
        """Start serving (a daemon thread); ValueError when the server cannot start."""
        from caproto.asyncio.server import Context

        if self.raster or self._placed:
            import scipy.ndimage  # noqa: F401 -- imported now, not at the first answer
            import scipy.spatial  # noqa: F401

        self.pvdb = _pvdb(self.prefix, self._values())
        ctx_log = logging.getLogger("caproto.ctx")
        if not any(isinstance(f, _Beacons) for f in ctx_log.filters):
            ctx_log.addFilter(_Beacons())
        where = interfaces()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop

            async def main() -> None:
                ctx = Context(self.pvdb, where)  # (made inside its loop, as caproto needs)
                self._ctx = ctx
                await ctx.run(startup_hook=self._startup(ctx))

            try:
                loop.run_until_complete(main())
            except BaseException as e:  # noqa: BLE001 -- reported by start() or counted
                self._failed = e
                self._fail(e)
            finally:
                self._ready.set()
                loop.close()

        self._thread = threading.Thread(target=serve, name="xrp-epics", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._failed is not None:
            why = self._failed or f"not ready after {timeout_s:.0f} s"
            raise ValueError(
                f"EPICS server for {self.prefix}* on {', '.join(where)} could not "
                f"start ({why}); check EPICS_CA_SERVER_PORT and "
                "EPICS_CAS_INTF_ADDR_LIST"
            )
        return self

    def _startup(self, ctx: Any):
        async def hook(_async_lib: Any) -> None:
            self._wake = asyncio.Event()
            self.port = ctx.port
            self._ready.set()
            self._wake.set()  # values handed over before the server was up
            await self._writer()

        return hook

    async def _writer(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                for name, v in self._values().items():
                    pv = self.pvdb[self.prefix + name]
                    if not _same(pv.value, v):
                        await pv.write(v)
            except Exception as e:  # noqa: BLE001 -- counted; the next batch tries again
                self._fail(e)

    def _values(self) -> dict[str, Any]:
        """Fold the pending answers in; every PV's value now."""
        with self._lock:
            batch, self._pending = self._pending, []
        c = self._counts
        for a in batch:
            c["FRAMES"] += 1
            c["HITS"] += bool(a.get("hit"))
            c["ERRORS"] += bool(a.get("error"))
            self._last["frame"] = a
            if a.get("hit") and not a.get("error"):
                self._last["hit"] = a
            self._placed = self._placed or a.get("x_um") is not None
            if self.raster or self._placed:
                self._cells.append({k: a.get(k) for k in CELL_FIELDS})
        last, hit = self._last.get("frame") or {}, self._last.get("hit") or {}
        v: dict[str, Any] = {k: u for k, (_, _, _, u) in PVS.items()}
        v.update(c, RUN=self.run, DROPPED=self._dropped_before + self._dropped, UPDATED=time.time())
        if c["FRAMES"]:
            v["HIT_RATE"] = 100.0 * c["HITS"] / c["FRAMES"]
        if last:
            v["LAST_FRAME"], v["LAST_HIT"] = int(last["frame"]), int(bool(last.get("hit")))
        if hit:
            v.update(
                LAST_HIT_FRAME=int(hit["frame"]),
                LAST_RES=float(_num(hit.get("resolution_A"), NAN)),
                LAST_DMIN=float(_num(hit.get("d_min_spots_A"), NAN)),
                LAST_NLAT=int(_num(hit.get("n_lattices_indexed"), -1)),
                LAST_P_MULTI=float(_num(hit.get("p_multi"), NAN)),
            )
        if self._placed and batch:
            self._grid = _position_values(self._cells, self.positions)
        elif self.raster and batch:
            self._grid = _grid_values(self._cells, self.raster, self.step_um)
        v.update(self._grid)
        return v

    def close(self) -> None:
        """Stop the server (the thread ends; clients see their channels disconnect)."""
        loop, ctx = self._loop, self._ctx
        if loop is not None and not loop.is_closed():

            def stop() -> None:
                for circuit in list(getattr(ctx, "circuits", ())):  # clients' connections
                    try:
                        circuit.client.close()
                    except Exception:  # noqa: BLE001,S110 -- closing anyway
                        pass
                for task in asyncio.all_tasks(loop):
                    task.cancel()

            try:
                loop.call_soon_threadsafe(stop)
            except RuntimeError:  # closed meanwhile
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)


def _grid_values(
    cells: list[dict[str, Any]], raster: Mapping[str, Any], step_um: tuple[float, float] | None
) -> dict[str, Any]:
    """BEST_* / CENTRE_* / N_CRYSTALS of a grid scan (live/centre.py)."""
    from xray_platform.live.centre import centre

    c = centre(cells, int(raster["rows"]), int(raster["cols"]), bool(raster.get("snake")), step_um)
    out: dict[str, Any] = {"N_CRYSTALS": len(c["regions"])}
    if c["best_cell"]:
        b = c["best_cell"]
        out.update(BEST_ROW=int(b["row"]), BEST_COL=int(b["col"]), BEST_FRAME=int(b["frame"]))
    if c["centre"]:
        out.update(CENTRE_ROW=float(c["centre"]["row"]), CENTRE_COL=float(c["centre"]["col"]))
    if c["centre_um"]:
        out.update(CENTRE_X=float(c["centre_um"]["x"]), CENTRE_Y=float(c["centre_um"]["y"]))
    return out


def _position_values(cells: list[dict[str, Any]], positions: Positions | None) -> dict[str, Any]:
    """BEST_FRAME / CENTRE_X, _Y (absolute µm) / N_CRYSTALS of a scan placed by motor
    positions: a positions file's, then each answer's own (live/centre.py); BEST_ROW/COL and
    CENTRE_ROW/COL too when the positions lie on a raster."""
    from xray_platform.live.centre import centre_positions

    own = Positions(STREAM, by_file={(str(a["file"]), int(a["frame"])): (a["x_um"], a["y_um"])
                                     for a in cells if a.get("x_um") is not None
                                     and a.get("y_um") is not None})
    c = centre_positions(cells, [t for t in (positions, own) if t is not None and len(t)])
    out: dict[str, Any] = {"N_CRYSTALS": len(c["regions"])}
    b = c["best_cell"]
    if b:
        out["BEST_FRAME"] = int(b["frame"])
        if "row" in b:
            out.update(BEST_ROW=int(b["row"]), BEST_COL=int(b["col"]))
    if c["centre"]:
        out.update(CENTRE_ROW=float(c["centre"]["row"]), CENTRE_COL=float(c["centre"]["col"]))
    if c["centre_um"]:
        out.update(CENTRE_X=float(c["centre_um"]["x"]), CENTRE_Y=float(c["centre_um"]["y"]))
    return out


def _pvdb(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """Read-only channels for :data:`PVS` under ``prefix``, holding ``values``."""
    from caproto import AccessRights, ChannelDouble, ChannelInteger, ChannelString

    def read_only(cls: type) -> type:
        class ReadOnly(cls):  # type: ignore[misc, valid-type]
            def check_access(self, hostname: str, username: str) -> AccessRights:
                return AccessRights.READ

        return ReadOnly

    kinds = {
        "int": read_only(ChannelInteger),
        "float": read_only(ChannelDouble),
        "str": read_only(ChannelString),
    }
    db = {}
    for name, (kind, units, _doc, _unknown) in PVS.items():
        if kind == "str":
            db[prefix + name] = kinds[kind](value=values[name], max_length=200)
        elif kind == "float":
            db[prefix + name] = kinds[kind](value=values[name], units=units, precision=3)
        else:
            db[prefix + name] = kinds[kind](value=values[name], units=units)
    return db


def free_ca_port() -> int:
    """A loopback port free for both UDP (channel-access searches) and TCP (the server's
    circuit), for a server started on a port of its own (tests, benchmarks)."""
    import socket

    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no loopback port free for both UDP and TCP")


def serve_run(
    prefix: str,
    store: Any,
    run: str,
    raster: Mapping[str, Any] | None = None,
    step_um: tuple[float, float] | None = None,
    positions: Positions | None = None,
) -> EpicsResults:
    """Start serving run ``run`` of ``store`` (live/store.py), seeded with what the store
    already holds of it (a resumed run); ValueError when the server cannot start."""
    results = EpicsResults(prefix, run, raster=raster, step_um=step_um, positions=positions)
    if store.runs(run):
        held = store.run(run)
        results.seed(store.answers(run), held["dropped"])
    return results.start()


def chained(*hooks: Any) -> Any:
    """One ``on_update`` hook calling each of ``hooks`` (None: skipped) in turn."""
    live = [h for h in hooks if h is not None]

    def call(stats: Any) -> None:
        for h in live:
            h(stats)

    return call
