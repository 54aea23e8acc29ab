"""The Ray Serve graph: detector file -> preprocessing -> lattice classifier -> resolution
regressor (every hit, or single-lattice hits only on request), over HTTP.

Deployments (thin wrappers around xray_platform.core.answer, which has no Ray):
- ``Preprocessor``: decodes the upload (io/formats.py: CBF, EIGER/NeXus HDF5, SMV, .npy, also
  .gz/.bz2), maps it onto each model's reciprocal-space grid and runs the hit finder.
- ``LatticeClassifier`` / ``ResolutionRegressor``: hold a model each; calls are batched with
  ``@serve.batch``.
- ``Ingress`` (FastAPI, OpenAPI page at /docs): ``POST /v1/predict``, ``GET /healthz``,
  ``GET /v1/models``; composes the others through DeploymentHandles.

Build it with ``build_app(args)`` (``serve run xray_platform.serve.app:build_app``, the YAML files
in serve_configs/, or ``xrp serve``). Bad input never reaches a model: it gets a 4xx with a JSON
``{"error": ...}`` naming the problem, and the replicas stay up.
"""

# no `from __future__ import annotations`: FastAPI must see the endpoint's real types (string
# annotations of a class that Serve ships to its replica do not resolve there)
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from xray_platform import __version__
from xray_platform.core.schema import ALWAYS_RESOLUTION
from xray_platform.live.auth import KEY_ENV, RequireKey, clean_key
from xray_platform.live.page import router as live_router
from xray_platform.live.store import absolute_store_url
from xray_platform.serve import config as serve_config
from xray_platform.serve.body_limit import BodyLimit, too_large

DEFAULTS: dict[str, Any] = {
    "lattice_model": "champion",  # champion (else the zoo), zoo, a file, a registry ref, null
    "resolution_model": "champion",
    "mlflow_uri": None,  # default: $MLFLOW_TRACKING_URI or sqlite ./mlflow.db
    "max_upload_mb": 64.0,  # a bzip2 PILATUS 6M frame is ~2.5 MB, a raw EIGER 16M ~75 MB
    "max_batch_size": 16,
    "batch_wait_timeout_s": 0.005,
    "request_timeout_s": 60.0,  # per request: decoding, mapping and the models
    "run_store": None,  # the live page's run store (default sqlite:///xrp-runs.db, absolute)
    "geometry": None,  # a CrystFEL .geom placing uploaded HDF5 files' plain arrays (JUNGFRAU)
    "cell": None,  # a,b,c,alpha,beta,gamma: index every hit with it (a request's cell wins)
    "api_key": None,  # needed on all but /healthz and the docs; else $XRP_API_KEY (never in YAML)
}
UPLOAD_PIECE = 1 << 20  # bytes per piece of an upload on its way to the Preprocessor
_SUFFIX = re.compile(r"(\.(?:cbf|img|smv|h5|hdf5|nxs|npy))?(\.(?:gz|bz2))?$", re.IGNORECASE)


class BadInput(ValueError):
    """An upload the service cannot use: answered with ``status`` and the message."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # crosses processes as a value (Preprocessor -> Ingress)
        return (BadInput, (str(self), self.status))


class ServerFault(RuntimeError):
    """Not the input's fault: answered 500 with an id that names the logged traceback."""

    def __init__(self, fault_id: str) -> None:
        super().__init__(fault_id)
        self.fault_id = fault_id

    def __reduce__(self):
        return (ServerFault, (self.fault_id,))


_GEOMETRY_FIELDS_HINT = ("send the missing geometry as form fields (wavelength_A, distance_mm, "
                         "pixel_size_mm, beam_center_x_px, beam_center_y_px)")


def input_error(e: BaseException, tmp_path: str, filename: str) -> "BadInput | ServerFault":
    """What to answer for an exception raised while reading or mapping an upload: 413 for a
    file over a size cap, 422 for input that cannot be used (its message, with the server's
    temporary path replaced by the upload's name), or a logged server fault."""
    from xray_platform.io.compress import TooLarge
    from xray_platform.io.formats import DataFileMissing, FormatError, GeometryMissing

    msg = str(e).replace(tmp_path, filename)  # never a server path: the upload's own name,
    msg = msg.replace(str(Path(tmp_path).parent) + os.sep, "")  # files beside it by name only
    if isinstance(e, TooLarge):
        return BadInput(msg, 413)
    if isinstance(e, GeometryMissing):
        return BadInput(f"{msg}: {_GEOMETRY_FIELDS_HINT}")
    if isinstance(e, DataFileMissing):
        return BadInput(f"{msg}; upload a file that holds its pixels (an HDF5 file with the data "
                        "inline, a CBF, ...)")
    if isinstance(e, FormatError | ValueError | OSError | OverflowError | MemoryError):
        return BadInput(msg)
    if isinstance(e, RuntimeError) and "torch" in type(e).__module__ + repr(e.args):
        return BadInput(f"{filename}: the frame cannot be mapped onto the model grid ({msg})")
    return fault(e)


def fault(e: BaseException) -> ServerFault:
    """Log the traceback of a server fault under a fresh id (the 500 answer carries it)."""
    import traceback
    import uuid

    fault_id = uuid.uuid4().hex[:12]
    print(f"[xrp serve] fault {fault_id}:\n" + "".join(traceback.format_exception(e)),
          flush=True)
    return ServerFault(fault_id)


def _safe_suffix(filename: str | None) -> str:
    """The upload's format suffixes only (never a path from the client)."""
    m = _SUFFIX.search(Path(filename or "").name)
    return "".join(g for g in (m.groups() if m else ()) if g)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class Preprocessor:
    """Upload -> grid inputs for each model + hit decision (CPU work, one frame per call)."""

    def __init__(self, preps: list[dict], geometry: str | None = None,
                 cell: tuple[float, ...] | None = None) -> None:
        import torch

        from xray_platform.core.hitfinder import HitFinder
        from xray_platform.core.preprocess import Preprocessing

        torch.set_num_threads(1)
        self.preps = [Preprocessing.from_dict(p) for p in preps]
        self.hit_finder = HitFinder()
        self.geometry = geometry
        self.cell = cell

    def __call__(self, pieces: list, filename: str | None, index: int,
                 overrides: dict[str, Any], cell: tuple[float, ...] | None = None) -> Any:
        """A core.answer.Prepared, or a BadInput saying why the upload cannot be used (never an
        exception: whatever the input does, the answer is a 4xx, or a 500 with an id).
        ``pieces``: ObjectRefs of the upload's pieces, written to disk one at a time."""
        import ray

        from xray_platform.core.answer import prepare_frame
        from xray_platform.core.indexing import as_cell
        from xray_platform.io.formats import read_frame
        from xray_platform.io.formats.hdf5_links import check_links

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="xrp-upload-") as d:
            path = Path(d) / f"upload{_safe_suffix(filename)}"
            with open(path, "wb") as fh:
                for ref in pieces:
                    fh.write(ray.get(ref))
            try:  # an upload is data: its HDF5 links may reach only itself (formats/hdf5_links)
                check_links(path, d, upload=True, name=filename or "upload")
                if self.geometry and _needs_geometry(path):
                    overrides = {**overrides, "geometry": self.geometry}
                frame = read_frame(path, index, **overrides)
                t1 = time.perf_counter()
                cell = cell or self.cell
                prepared = prepare_frame(frame, self.preps, self.hit_finder,
                                         cell=as_cell(cell) if cell else None)
            except Exception as e:  # noqa: BLE001 (mapped to 4xx, or logged as a fault)
                return input_error(e, str(path), filename or "upload")
        prepared.info["file"] = filename
        prepared.timings_ms["decode_ms"] = 1e3 * (t1 - t0)
        return prepared


def _needs_geometry(path: Path) -> bool:
    """An HDF5 upload without its own detector geometry (no NeXus detector group)."""
    from xray_platform.io.formats.base import HDF5_MAGIC, sniff
    from xray_platform.io.formats.registry import understood_by

    return sniff(path, 8).startswith(HDF5_MAGIC) and understood_by(path) is None


class _BatchedModel:
    task = ""

    def __init__(self, spec: str, mlflow_uri: str | None, max_batch_size: int,
                 batch_wait_timeout_s: float) -> None:
        import torch

        from xray_platform.tracking.resolve import load

        torch.set_num_threads(max(1, int(os.environ.get("XRP_TORCH_THREADS", "1"))))
        self.model = load(self.task, spec, mlflow_uri)
        if torch.cuda.is_available():  # a replica given a GPU (serve_configs/gpu.yaml)
            self.model.to("cuda")
        self.run.set_max_batch_size(max_batch_size)
        self.run.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def describe(self) -> dict[str, Any]:
        return self.model.describe()


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
class LatticeClassifier(_BatchedModel):
    task = "lattice"

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def run(self, xs: list[np.ndarray]) -> list[float]:
        from xray_platform.core.answer import p_multi

        return [float(p) for p in p_multi(self.model, np.stack(xs))]


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
class ResolutionRegressor(_BatchedModel):
    task = "resolution"

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def run(self, xs: list[np.ndarray]) -> list[tuple[float, float]]:
        from xray_platform.core.answer import resolution

        d, s = resolution(self.model, np.stack(xs))
        return [(float(a), float(b)) for a, b in zip(d, s, strict=True)]


api = FastAPI(title="xrp", version=__version__, description=(
    "Is this X-ray diffraction frame one lattice or several, and to what resolution (Å) does "
    "it diffract? POST a detector file (CBF/miniCBF, EIGER/NeXus HDF5, SMV .img, .npy with "
    "geometry; .gz/.bz2 accepted) to /v1/predict."))
# the limits live in a module (shipped by reference): Serve sends the Ingress class to its
# replica by value, so a dict defined here would be copied apart from what the middleware reads
serve_config.LIMITS.setdefault("bytes", int(DEFAULTS["max_upload_mb"] * 2**20))
serve_config.LIMITS.setdefault("seconds", float(DEFAULTS["request_timeout_s"]))


def _run_store():
    """The run store the live page reads (its URL set by the Ingress replica)."""
    from xray_platform.live.store import RunStore

    url = serve_config.LIMITS.get("run_store")
    if serve_config.STORES.get(url) is None:
        serve_config.STORES[url] = RunStore(url)
    return serve_config.STORES[url]


api.include_router(live_router(_run_store))  # /ui: the live page of `xrp watch` runs


def _upload_bytes() -> int:
    return serve_config.LIMITS["bytes"]


api.add_middleware(BodyLimit, limit_of=_upload_bytes)  # bodies bounded while they stream


async def _call(method, *args, attempts: int = 3):
    """A handle call that survives a replica dying under it: Serve replaces the replica and
    routes the retry to a live one (requests are pure functions of their input)."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    for attempt in range(attempts):
        try:
            return await method.remote(*args)
        except (ActorDiedError, ActorUnavailableError, RayActorError):
            if attempt == attempts - 1:
                raise
    return None  # unreachable


class ErrorBody(BaseModel):
    """Every error answer of the API (4xx and 5xx): what went wrong, for the HTTP user."""

    error: str
    status: int
    id: str | None = None  # server faults: the id of the logged traceback


def _answer_model() -> type[BaseModel]:
    """The OpenAPI model of a frame's answer, from the one schema (core/schema.py)."""
    from pydantic import Field, create_model

    from xray_platform.core.schema import ANSWER

    fields = {k: (t | None, Field(None, description=d)) for k, (t, d) in ANSWER.items()}
    return create_model("FrameAnswer", __doc__="One frame's answer; null = not computed.",
                        **fields)


FrameAnswer = _answer_model()
_ERRORS = {400: {"model": ErrorBody, "description": "bad request (form fields)"},
           405: {"model": ErrorBody, "description": "method not allowed"},
           413: {"model": ErrorBody, "description": "upload or decompressed file over a limit"},
           422: {"model": ErrorBody, "description": "the upload cannot be used (names why)"},
           500: {"model": ErrorBody, "description": "server fault (with an id in the logs)"}}


def _error_response(message: str, status: int, fault_id: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status, "id": fault_id},
                        status_code=status)


def _error(e: BadInput) -> JSONResponse:
    return _error_response(str(e), e.status)


def _field_errors(errors: list[dict]) -> str:
    """FastAPI validation errors -> one sentence naming the fields."""
    parts = []
    for err in errors:
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error_response(_field_errors(exc.errors()), 422)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error_response(str(exc.detail), exc.status_code)


@api.exception_handler(Exception)
async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    return _error_response("internal error", 500, fault(exc).fault_id)


# (helpers the Ingress uses are defined above it: Serve ships the class to its replica)
async def _read_upload(file: UploadFile) -> list:
    """The upload as ObjectRefs of 1 MiB pieces, refused as soon as it passes the limit.
    Starlette spools a multipart body over 1 MB to disk; the pieces go from there to the object
    store (which spills to disk under pressure), so no replica holds a whole upload in its heap."""
    import ray

    pieces, size = [], 0
    while piece := await file.read(UPLOAD_PIECE):
        size += len(piece)
        if size > serve_config.LIMITS["bytes"]:
            raise BadInput(too_large(serve_config.LIMITS["bytes"]), 413)
        pieces.append(ray.put(piece))
        del piece
    if not size:
        raise BadInput(f"empty upload {file.filename!r}", 400)
    return pieces


def _form_cell(cell: str | None) -> tuple[float, ...] | None:
    """The form's cell as 6 numbers (None: the service's own, if any)."""
    if cell is None or not cell.strip():
        return None
    from xray_platform.core.indexing import as_cell

    try:
        return as_cell(cell).parameters
    except ValueError as e:
        raise BadInput(f"cell {cell!r}: {e}", 400) from None


def _form_overrides(frame: int, wavelength_A, distance_mm, pixel_size_mm, beam_x,
                    beam_y) -> dict[str, Any]:
    from xray_platform.io.formats import geometry_overrides

    if frame < 0:
        raise BadInput(f"frame must be >= 0, got {frame}", 400)
    if (beam_x is None) != (beam_y is None):
        raise BadInput("give both beam_center_x_px and beam_center_y_px", 400)
    centre = None if beam_x is None else (beam_x, beam_y)
    try:
        return geometry_overrides(wavelength_A, distance_mm, pixel_size_mm, centre)
    except ValueError as e:
        raise BadInput(str(e), 400) from None


def _api_key() -> str | None:
    return serve_config.LIMITS.get("api_key")


api.add_middleware(RequireKey, key_of=_api_key)  # added last: the outermost, checks first


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
@serve.ingress(api)
class Ingress:
    def __init__(self, pre: DeploymentHandle, lattice: DeploymentHandle | None,
                 resolution: DeploymentHandle | None, max_upload_mb: float,
                 models: dict[str, dict], request_timeout_s: float = 60.0,
                 run_store: str | None = None, api_key: str | None = None) -> None:
        serve_config.LIMITS["api_key"] = clean_key(api_key or os.environ.get(KEY_ENV))
        serve_config.LIMITS["bytes"] = int(max_upload_mb * 2**20)
        serve_config.LIMITS["run_store"] = run_store  # type: ignore[assignment]
        serve_config.LIMITS["seconds"] = float(request_timeout_s)
        self.pre, self.lattice, self.resolution = pre, lattice, resolution
        self.models = models  # what each model deployment serves (describe())
        self.started = time.time()

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness and what is served."""
        return {"status": "ok", "xrp_version": __version__, "models": sorted(self.models),
                "uptime_s": round(time.time() - self.started, 1)}

    @api.get("/v1/models")
    async def models_info(self) -> dict[str, Any]:
        """The loaded models: registry name and version, architecture, preprocessing, metrics."""
        return {"models": self.models}

    @api.post("/v1/predict", responses={200: {"model": FrameAnswer,
                                              "description": "the frame's answer"}, **_ERRORS})
    async def predict(
        self,
        file: UploadFile = File(..., description="A detector file (one frame is answered)."),
        frame: int = Form(0, description="Frame index in multi-frame files (HDF5, .npy)."),
        always_resolution: bool = Form(ALWAYS_RESOLUTION, description="Regress every hit "
                                       "(false: only hits the lattice verdict calls "
                                       "single-lattice)."),
        wavelength_A: float | None = Form(None, description="Override: wavelength (Å)."),
        distance_mm: float | None = Form(None, description="Override: distance (mm)."),
        pixel_size_mm: float | None = Form(None, description="Override: pixel size (mm)."),
        beam_center_x_px: float | None = Form(None, description="Override: beam centre, fast "
                                              "axis (pixels, first pixel's centre = 0)."),
        beam_center_y_px: float | None = Form(None, description="Override: beam centre, slow "
                                              "axis (pixels)."),
        cell: str | None = Form(None, description="The crystal's cell a,b,c,alpha,beta,gamma "
                                "(Å, deg): a hit's spots are indexed with it (n_lattices_indexed, "
                                "lattices, fraction_indexed); without it, from the spots alone."),
        spots: bool = Form(False, description="Also answer a hit's spots and the lattice "
                           "and indices of each (the answer's spots field)."),
    ) -> JSONResponse:
        """One frame -> hit, p_multi, is_multi, resolution_A and sigma (Å), versions, timings.
        What was not computed is null. Errors: {"error", "status", "id"} (ErrorBody)."""
        import asyncio

        t0 = time.perf_counter()
        try:
            pieces = await _read_upload(file)
            over = _form_overrides(frame, wavelength_A, distance_mm, pixel_size_mm,
                                   beam_center_x_px, beam_center_y_px)
            unit_cell = _form_cell(cell)
            return await asyncio.wait_for(
                self._answer(pieces, file.filename, frame, over, always_resolution, t0,
                             unit_cell, spots),
                timeout=serve_config.LIMITS["seconds"])
        except BadInput as e:
            return _error(e)
        except ServerFault as e:
            return _error_response("internal error", 500, e.fault_id)
        except TimeoutError:
            return _error_response(f"the frame took longer than the per-request limit of "
                                   f"{serve_config.LIMITS['seconds']:.0f} s", 422)

    async def _answer(self, pieces: list, filename: str | None, frame: int, over: dict,
                      always_resolution: bool, t0: float,
                      cell: tuple[float, ...] | None = None, spots: bool = False
                      ) -> JSONResponse:
        from xray_platform.core.answer import answer, input_key, wants_resolution

        prepared = await _call(self.pre, pieces, filename, frame, over, cell)
        del pieces
        if isinstance(prepared, BadInput | ServerFault):
            raise prepared
        t1 = time.perf_counter()
        try:
            p = None
            if self.lattice is not None:
                p = await _call(self.lattice.run,
                                prepared.inputs[input_key(self.models["lattice"])])
            t2 = time.perf_counter()
            d = s = None
            if self.resolution is not None and wants_resolution(prepared, p, always_resolution):
                d, s = await _call(self.resolution.run,
                                   prepared.inputs[input_key(self.models["resolution"])])
        except Exception as e:  # the input was checked: a model failing is the server's fault
            raise fault(e) from None
        t3 = time.perf_counter()
        return JSONResponse(answer(prepared, p, d, s, self.models, {
            "preprocess_total_ms": 1e3 * (t1 - t0), "lattice_ms": 1e3 * (t2 - t1),
            "resolution_ms": 1e3 * (t3 - t2), "total_ms": 1e3 * (time.perf_counter() - t0)},
            with_spots=spots))


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """The application from ``args`` (see DEFAULTS). Registry references are resolved here to
    concrete versions, so every replica serves the same model even if the alias moves."""
    from xray_platform.core.answer import describe_model
    from xray_platform.core.models import model_metadata
    from xray_platform.tracking.resolve import resolve

    cfg = {**DEFAULTS, **(args or {})}
    unknown = set(cfg) - set(DEFAULTS) - {"deployments"}
    if unknown:
        raise ValueError(f"unknown serve args: {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(DEFAULTS)})")
    options = {d["name"]: {k: v for k, v in d.items() if k != "name"}
               for d in cfg.get("deployments") or []}
    models: dict[str, dict] = {}  # task -> describe_model() + the pinned spec
    preps = []
    for task in ("lattice", "resolution"):
        spec = cfg[f"{task}_model"]
        if spec is None:
            continue
        try:
            r = resolve(task, str(spec), cfg["mlflow_uri"])
            meta = model_metadata(r.path)  # the weights are loaded by the model replicas
        except ValueError as e:
            if spec != "champion":
                raise
            print(f"[xrp serve] no {task} model served: {e}", flush=True)
            continue
        if meta["task"] != task:
            raise ValueError(f"{spec} is a {meta['task']} model, expected a {task} model")
        models[task] = {**describe_model(task, meta, r.source, r.name, r.version),
                        "spec": r.pinned}  # the version an alias pointed at, pinned
        preps.append(meta["preprocessing"])
    if not models:
        raise ValueError("no model to serve: give lattice_model / resolution_model (a model file "
                         "or a registry reference), or register champions with `xrp tune`")

    def dep(cls, name: str):
        return cls.options(**options.get(name, {})) if name in options else cls

    if cfg["geometry"] is not None:
        from xray_platform.io.crystfel_geom import read_geom

        cfg["geometry"] = str(Path(cfg["geometry"]).resolve())
        read_geom(cfg["geometry"])  # GeomError (a ValueError) before anything is deployed
    cell = None
    if cfg["cell"] is not None:  # checked before anything is deployed
        from xray_platform.core.indexing import as_cell

        cell = as_cell(cfg["cell"]).parameters
    pre = dep(Preprocessor, "Preprocessor").bind(preps, cfg["geometry"], cell)
    handles: dict[str, Any] = {}
    for task, cls, cls_name in (("lattice", LatticeClassifier, "LatticeClassifier"),
                                ("resolution", ResolutionRegressor, "ResolutionRegressor")):
        if task in models:
            handles[task] = dep(cls, cls_name).bind(
                models[task]["spec"], cfg["mlflow_uri"], int(cfg["max_batch_size"]),
                float(cfg["batch_wait_timeout_s"]))
    return dep(Ingress, "Ingress").bind(pre, handles.get("lattice"), handles.get("resolution"),
                                        float(cfg["max_upload_mb"]), models,
                                        float(cfg["request_timeout_s"]),
                                        absolute_store_url(cfg["run_store"]), cfg["api_key"])
