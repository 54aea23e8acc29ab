"""An upload over the limit is refused while it streams, chunked bodies too (serve/body_limit.py):
a real uvicorn server on loopback, a raw HTTP client that counts what it managed to send, and
the temporary folder the multipart parser spools to."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, File, UploadFile
from fastapi.responses import JSONResponse
from helpers import free_port, raw_upload
from starlette.exceptions import HTTPException

from xray_platform.serve.body_limit import BodyLimit

LIMIT = 4 << 20


def _app() -> FastAPI:
    app = FastAPI()

    @app.exception_handler(HTTPException)
    async def _error(request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail, "status": exc.status_code, "id": None},
                            status_code=exc.status_code)

    @app.post("/v1/predict")
    async def predict(file: UploadFile = File(...)) -> dict:
        return {"size": len(await file.read())}

    app.add_middleware(BodyLimit, limit_of=lambda: LIMIT)
    return app


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    spool = tmp_path_factory.mktemp("spool")
    old, tempfile.tempdir = tempfile.tempdir, str(spool)  # where the parser spools uploads
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    yield port, spool
    srv.should_exit = True
    thread.join(10)
    tempfile.tempdir = old


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(server) -> None:
    port, spool = server
    status, answer, sent = raw_upload(port, 200, chunked=True)
    assert status == 413 and answer["status"] == 413
    assert "above the limit of 4.0 MiB" in answer["error"]
    assert sent < LIMIT + (16 << 20), f"{sent / 2**20:.0f} MiB sent of 200"  # not the whole body
    assert not list(spool.iterdir())  # nothing spooled is left behind


def test_a_declared_length_over_the_limit_is_refused_before_reading(server) -> None:
    port, _ = server
    status, answer, sent = raw_upload(port, 200, chunked=False)
    assert status == 413 and "upload of 200.0 MiB" in answer["error"]
    assert sent < LIMIT + (16 << 20)


@pytest.mark.parametrize("chunked", [True, False])
def test_uploads_under_the_limit_pass(server, chunked: bool) -> None:
    port, spool = server
    status, answer, _ = raw_upload(port, 2, chunked=chunked)
    assert status == 200 and answer == {"size": 2 << 20}
    assert not [p for p in Path(spool).iterdir()]
