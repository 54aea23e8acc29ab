"""The live page of a run: plain HTML and xrp's own small plotting script (live/static/), served
from the run store by the Serve ingress (`xrp serve`, /ui) or by `xrp watch --ui PORT`. It needs
no internet (nothing from a CDN) and no frontend build. No Ray.

- ``GET /ui``: the runs in the store; ``GET /ui/runs/{run}``: the run's page (trace of
  resolution with sigma, p_multi and spots against frame, grid-scan heat map, latest frame with
  resolution rings, counters); ``?rows=R&cols=C&snake=1`` gives a raster the run lacks.
- ``GET /ui/api/runs/{run}?after=SEQ``: counters, what the run was asked with (cell, grid
  step), a grid run's centring when rows came and the compact rows after SEQ (JSON);
  ``GET /ui/api/runs/{run}/events``: the same as Server-Sent Events, a few hundred bytes per
  frame, at most MAX_EVENT_STREAMS at a time per process (then 503); ``GET
  /ui/runs/{run}/thumb.png``: the latest frame.
- ``GET /v1/runs/{run}/centre``: a grid scan's crystal position(s) (live/centre.py; the run's
  raster and step, or ``?rows=R&cols=C&snake=1&step_um=X,Y``), from the run's motor positions
  when it keeps some (unless rows and cols are given); 404 for no such run, 422 for a run
  with neither a grid nor positions.
With an API key every route needs it (live/auth.py).
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from xray_platform.live.store import RunStore

#: answer fields the page draws (the rest stays in the store)
ROW_FIELDS = ("seq", "frame", "hit", "n_spots", "p_multi", "is_multi", "resolution_A",
              "resolution_sigma_A", "ice", "error")
EVENT_POLL_S = 0.25
RATE_WINDOW_S = 10.0
MAX_EVENT_STREAMS = 32  # open event streams per process (each polls the store 4 times a second)


def compact(a: dict[str, Any]) -> dict[str, Any]:
    out = {k: a.get(k) for k in ROW_FIELDS}
    if isinstance(out["error"], str):
        out["error"] = out["error"][:160]
    out["name"] = str(a.get("file", "")).rsplit("/", 1)[-1]
    return out


def snapshot(store: RunStore, name: str, after: int = -1) -> dict[str, Any]:
    """Counters of the run and its compact rows with seq > ``after``."""
    try:
        run = store.run(name)
    except ValueError as e:
        raise HTTPException(404, str(e)) from None
    live = store.live(run["id"])
    rows = [compact(a) for a in store.since(run["id"], after)]
    info = store.info(run["id"])
    saved = info.get("save_hits") or {}
    counters = {"frames": int(run["frames"]), "hits": int(run["hits"]),
                "multi": int(run.get("multi") or 0), "errors": int(run["errors"]),
                "frames_per_s": round(store.rate(run["id"], RATE_WINDOW_S), 2),
                "received": int(live["received"]), "queued": int(live["queued"]),
                "dropped": int(run["dropped"]), "saved": int(saved.get("written") or 0),
                "save_failed": int(saved.get("failed") or 0)}
    out = {"run": name, "source": run["source"], "counters": counters, "rows": rows,
           "raster": live["raster"], "thumb": live["thumb_meta"],
           "thumb_updated": live["updated"] if live["thumb"] else None,
           "cell": info.get("cell"), "step_um": info.get("step_um")}
    if rows or after < 0:  # the centring moves only when answers come
        from xray_platform.live.centre import centre_of_run

        c = centre_of_run(store, run["id"], points=True)  # a grid's, or from positions
        if c is not None:
            out["centre"] = c
    return out


class StreamSlots:
    """A cap on concurrent event streams; a stream holds its slot until it ends or its client
    goes (asyncio: one thread, no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.open = limit, 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self.open >= self.limit:
            raise HTTPException(503, f"{self.open} live event streams are open, the most this "
                                "server keeps: close a live page or retry later")
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


async def _then(first: str, rest: AsyncGenerator[str, None]) -> AsyncIterator[str]:
    """``first``, then the rest of a started stream (closed, freeing its slot, however this
    ends)."""
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await rest.aclose()


def _asset(name: str) -> str:
    return resources.files("xray_platform.live").joinpath("static", name).read_text()


def router(store_of: Callable[[], RunStore], max_streams: int | None = None) -> APIRouter:
    """The /ui routes over the store that ``store_of()`` returns."""
    r = APIRouter()
    slots = StreamSlots(MAX_EVENT_STREAMS if max_streams is None else max_streams)

    @r.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    def runs_page() -> str:
        items = "".join(
            f'<li><a href="/ui/runs/{html.escape(x["name"])}">{html.escape(x["name"])}</a> '
            f'{x["frames"]} frames, {x["hits"]} hits <small>{html.escape(x["source"])}'
            "</small></li>" for x in store_of().runs())
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>xrp runs</title>"
                f"<style>{_asset('live.css')}</style></head><body><h1>xrp runs</h1>"
                f"<ul id='runs'>{items or '<li>no runs yet: xrp watch ...</li>'}</ul>"
                "</body></html>")

    @r.get("/ui/runs/{name}", response_class=HTMLResponse, include_in_schema=False)
    def run_page(name: str) -> str:
        return (_asset("run.html").replace("{{RUN}}", html.escape(name))
                .replace("{{RUN_JSON}}", json.dumps(name))
                .replace("/*CSS*/", _asset("live.css")).replace("/*JS*/", _asset("live.js")))

    @r.get("/ui/api/runs/{name}", include_in_schema=False)
    def run_api(name: str, after: int = Query(-1)) -> dict[str, Any]:
        return snapshot(store_of(), name, after)

    @r.get("/ui/api/runs/{name}/events", include_in_schema=False)
    async def run_events(name: str, after: int = Query(-1)) -> StreamingResponse:
        store = store_of()

        async def events():
            with slots.hold():  # 503 beyond the cap; the slot is freed when the stream ends
                snap = await asyncio.to_thread(snapshot, store, name, after)  # 404 first
                last_counters, last_beat = None, 0.0
                while True:
                    seq = snap["rows"][-1]["seq"] if snap["rows"] else snap.get("_after", after)
                    if snap["rows"] or snap["counters"] != last_counters or \
                            time.time() - last_beat > 15:
                        last_counters, last_beat = snap["counters"], time.time()
                        yield ("data: " + json.dumps({k: v for k, v in snap.items()
                                                      if k[0] != "_"}) + "\n\n")
                    await asyncio.sleep(EVENT_POLL_S)
                    snap = await asyncio.to_thread(snapshot, store, name, seq)
                    snap["_after"] = seq

        stream = events()
        first = await stream.__anext__()  # a 503 or 404 is answered before streaming starts
        return StreamingResponse(_then(first, stream), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @r.get("/v1/runs/{name}/centre", tags=["runs"])
    def run_centre(name: str, rows: int | None = Query(None, ge=1),
                   cols: int | None = Query(None, ge=1), snake: bool = Query(False),
                   step_um: str | None = Query(None)) -> dict[str, Any]:
        """A grid-scan run's crystal position(s): the best cell and, per connected region of
        hit cells (8-connectivity: one per crystal, strongest first), its centre weighted by
        spot count and its extent, in cells (row, col from 0) and in µm with the grid step
        (x = col * step_x, y = row * step_y). The run's own raster and step unless given. A
        run with motor positions (a positions file, the stream's user_data) is centred from
        them, in absolute µm ("mode": "positions"), unless rows and cols are given."""
        from xray_platform.live.centre import parse_step
        from xray_platform.live.centre import run_centre as centring

        store = store_of()
        if (rows is None) != (cols is None):
            raise HTTPException(422, "give both rows and cols (or neither: the run's grid)")
        raster = {"rows": rows, "cols": cols, "snake": snake} if rows else None
        try:
            step = parse_step(step_um)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        try:
            store.run(name)
        except ValueError as e:
            raise HTTPException(404, str(e)) from None
        try:
            return centring(store, name, raster, step)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None

    @r.get("/ui/runs/{name}/thumb.png", include_in_schema=False)
    def thumb(name: str) -> Response:
        store = store_of()
        try:
            run = store.run(name)
        except ValueError as e:
            raise HTTPException(404, str(e)) from None
        png = store.live(run["id"])["thumb"]
        if not png:
            raise HTTPException(404, f"run {name!r} has no frame thumbnail yet")
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    return r


def app(store_url: str | None = None, api_key: str | None = None):
    """A FastAPI app of the page alone (`xrp watch --ui PORT`); with ``api_key``, every route
    needs it (live/auth.py)."""
    from fastapi import FastAPI

    from xray_platform.live.auth import RequireKey

    store = RunStore(store_url)
    a = FastAPI(title="xrp live", docs_url=None, redoc_url=None)
    a.include_router(router(lambda: store))
    a.add_middleware(RequireKey, key_of=lambda: api_key)
    return a
