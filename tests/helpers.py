"""Helpers the tests share: paths of the checkout and of the reference data beside it, the
`xrp` runner, free ports, and a Ray head node that is stopped without touching other Ray
instances on the machine (`ray stop` would kill every Ray of the user)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
REAL = SHARED / "real"
NANOBRAGG = SHARED / "nanobragg-ref"
RAY = str(Path(sys.executable).with_name("ray"))
#: loopback-only Ray for one-node clusters, and the venv's tools on PATH (`ray job submit`)
LOOPBACK_ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="real detector data not available")
needs_nanobragg = pytest.mark.skipif(not NANOBRAGG.is_dir(),
                                     reason="nanoBragg reference data not available")


def xrp(*args: str, cwd: Path | None = None, env: dict | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `xrp ARGS` as a user would (a fresh interpreter), capturing its output."""
    return subprocess.run([sys.executable, "-m", "xray_platform.cli", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def xrp_here(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`xrp ARGS` in this interpreter (typer's CliRunner): for commands that stop at argument
    checks, where a fresh interpreter would spend seconds importing torch and Ray."""
    from contextlib import chdir, nullcontext

    from typer.testing import CliRunner

    from xray_platform.cli import app

    with chdir(cwd) if cwd else nullcontext():
        r = CliRunner().invoke(app, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return subprocess.CompletedProcess(["xrp", *args], r.exit_code, r.stdout, r.stderr)


def sigint_default() -> None:
    """``preexec_fn`` for a process the test stops with SIGINT (Ctrl-C): a test run started in
    the background of a non-interactive shell inherits SIGINT *ignored*, and Python then never
    raises KeyboardInterrupt; a terminal's Ctrl-C reaches a foreground process."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes(pattern: str) -> list[tuple[int, int, int, str]]:
    """(pid, ppid, RSS kB, command line) of processes whose command line matches ``pattern``."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,rss=,args="], capture_output=True,
                         text=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.strip().split(None, 3)
        if len(parts) == 4 and re.search(pattern, parts[3]) and int(parts[0]) != os.getpid():
            rows.append((int(parts[0]), int(parts[1]), int(parts[2]), parts[3]))
    return rows


def descendants(roots: set[int]) -> set[int]:
    """The pids ``roots`` and every process they started, recursively."""
    table = [(int(p), int(pp)) for p, pp in (ln.split() for ln in subprocess.run(
        ["ps", "-ww", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.splitlines())]
    found, grew = set(roots), True
    while grew:
        new = {p for p, pp in table if pp in found} - found
        found |= new
        grew = bool(new)
    return found


def kill_ray_cluster(temp_dir: str) -> None:
    """SIGKILL the processes of the Ray cluster whose temp dir is ``temp_dir`` (and every
    process they started); other Ray instances keep running."""
    roots = {pid for pid, *_ in processes(re.escape(temp_dir))}
    for pid in descendants(roots):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.5)


@contextmanager
def ray_head(*args: str, env: dict, timeout: float = 180) -> Iterator[subprocess.CompletedProcess]:
    """`ray start --head ARGS` with a temp dir of its own; the cluster is stopped afterwards."""
    temp = tempfile.mkdtemp(prefix="xrp-ray-", dir="/tmp")
    # a port of its own for the dashboard agent (the job server): the default 52365 may be
    # held by another Ray on the machine, and then `ray job submit` finds "No available agent"
    agent = [] if any("agent-listen-port" in a for a in args) else [
        f"--dashboard-agent-listen-port={free_port()}"]
    start = subprocess.run([RAY, "start", "--head", f"--temp-dir={temp}",
                            "--disable-usage-stats", *agent, *args], env=env, capture_output=True,
                           text=True, timeout=timeout)
    start.temp_dir = temp  # for nodes that join it (`ray start --address --temp-dir`)
    try:
        yield start
    finally:
        kill_ray_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def raw_upload(port: int, mib: int, chunked: bool) -> tuple[int | None, dict | None, int]:
    """(status, JSON answer, bytes sent) of a multipart upload of ``mib`` MiB of zeros to
    127.0.0.1:PORT/v1/predict, in chunks (no Content-Length) or with its length declared; the
    sending stops where the server closes the connection."""
    import http.client
    import json

    boundary = "xrpboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"frame.cbf\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    piece = bytes(64 << 10)
    n_pieces = (mib << 20) // len(piece)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/v1/predict")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
    else:
        conn.putheader("Content-Length", str(len(head) + n_pieces * len(piece) + len(tail)))
    conn.endheaders()
    sent = 0
    try:
        for part in (head, *(piece for _ in range(n_pieces)), tail):
            conn.send(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            sent += len(part)
        if chunked:
            conn.send(b"0\r\n\r\n")
    except OSError:  # the server answered and closed while we were still sending
        pass
    try:
        r = conn.getresponse()
        return r.status, json.loads(r.read()), sent
    except (OSError, http.client.HTTPException):
        return None, None, sent
    finally:
        conn.close()


@contextmanager
def served(app) -> Iterator[str]:
    """An ASGI ``app`` on a free loopback port in a uvicorn thread; yields its base URL."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.time()
    while not server.started:
        assert time.time() - t0 < 10 and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def at_random_azimuths(spots, geom, seed: int):
    """The spots (core/spots.Spots) of a flat detector moved to random azimuths at their own
    distance from the beam: the null an indexer must find no lattice in."""
    from dataclasses import replace

    import numpy as np

    from xray_platform.core.spots import d_spacing, lab_position

    bx, by = geom.beam_center_px
    radius = np.hypot(spots.slow - by, spots.fast - bx)
    phi = np.random.default_rng(seed).uniform(0, 2 * np.pi, len(radius))
    s, f = by + radius * np.sin(phi), bx + radius * np.cos(phi)
    xyz = lab_position(geom, spots.panel, s, f)
    return replace(spots, slow=s, fast=f, xyz_mm=xyz, d_A=d_spacing(xyz, geom.wavelength_A))


def nxmx_groups(f) -> tuple:
    """The groups of an NXmx master in the open h5py file ``f``, each with its NX_class:
    (/entry, /entry/instrument/beam, /entry/instrument/detector, /entry/data)."""
    def group(parent, name: str, nx_class: str):
        g = parent.create_group(name)
        g.attrs["NX_class"] = nx_class
        return g

    entry = group(f, "entry", "NXentry")
    inst = group(entry, "instrument", "NXinstrument")
    return (entry, group(inst, "beam", "NXbeam"), group(inst, "detector", "NXdetector"),
            group(entry, "data", "NXdata"))


def nxmx_master(path: Path, frames, wavelength_A: float, distance_mm: float, pixel_mm: float,
                beam_center_px: tuple[float, float], description: bytes = b"Dectris Eiger test",
                **compression) -> None:
    """A small EIGER-style NXmx master holding ``frames`` inline (``compression``: h5py
    dataset options, e.g. ``**hdf5plugin.Bitshuffle()``); beam centre in pixels from the
    first pixel's centre, as xrp reads it."""
    import h5py

    with h5py.File(path, "w") as f:
        _, beam, det, data = nxmx_groups(f)
        beam.create_dataset("incident_wavelength", data=wavelength_A)
        beam["incident_wavelength"].attrs["units"] = "angstrom"
        for name, value, units in (("detector_distance", distance_mm / 1e3, "m"),
                                   ("x_pixel_size", pixel_mm / 1e3, "m"),
                                   ("y_pixel_size", pixel_mm / 1e3, "m"),
                                   ("beam_center_x", beam_center_px[0] + 0.5, "pixel"),
                                   ("beam_center_y", beam_center_px[1] + 0.5, "pixel")):
            det.create_dataset(name, data=value)
            det[name].attrs["units"] = units
        det.create_dataset("description", data=description)
        data.create_dataset("data", data=frames, chunks=(1, *frames.shape[1:]), **compression)
