"""Exposed means authenticated, as users meet it: `xrp serve --host 0.0.0.0` and `xrp watch --ui
--ui-host 0.0.0.0` refuse to start without an API key before anything starts (no Ray), start with
a warning under --insecure, and the Serve ingress's own FastAPI app answers 401 without the key
(checked before the upload limit), 200 with it, and keeps /healthz and the docs open."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import torch
from helpers import free_port, served, sigint_default, xrp, xrp_here

from xray_platform.core.models import build_model, save_model
from xray_platform.core.preprocess import Preprocessing

KEY = "serve-test-key_0123456789"
NO_KEY_ENV = {k: v for k, v in os.environ.items() if k != "XRP_API_KEY"}


def test_xrp_serve_on_all_interfaces_without_a_key_refuses_before_ray(tmp_path: Path) -> None:
    t0 = time.time()
    r = xrp("serve", "--host", "0.0.0.0", "--port", str(free_port()), cwd=tmp_path,
            env=NO_KEY_ENV, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    err = " ".join(r.stderr.split())
    assert "error: --host 0.0.0.0 is reachable from other machines: give an API key" in err
    assert "XRP_API_KEY" in err and "--insecure" in err
    assert "ray" not in (r.stdout + r.stderr).lower().replace("xrp_api_key", "")
    assert time.time() - t0 < 60  # an import of the CLI, not a Ray start


@pytest.fixture
def stops_at_ray(monkeypatch) -> list:
    """`prepare_ray_env` (the first step that starts anything) records its call and stops the
    command there (exit 3); build_app records its args and stops it too (exit 2)."""
    import typer

    from xray_platform.orchestration import env
    from xray_platform.serve import app as serve_app

    calls: list = []

    def stop(address):
        calls.append("prepare_ray_env")
        raise typer.Exit(3)

    monkeypatch.setattr(env, "prepare_ray_env", stop)
    def build_app(args):
        calls.append(args)
        raise ValueError("stopped by the test")

    monkeypatch.setattr(serve_app, "build_app", build_app)
    return calls


def test_the_bind_rule_of_xrp_serve(stops_at_ray: list, monkeypatch) -> None:
    monkeypatch.delenv("XRP_API_KEY", raising=False)
    r = xrp_here("serve", "--host", "0.0.0.0")
    assert r.returncode == 2 and "API key" in r.stderr and stops_at_ray == []  # nothing started
    r = xrp_here("serve", "--host", "::", "--config", "serve_configs/local.yaml")
    assert r.returncode == 2 and stops_at_ray == []
    r = xrp_here("serve", "--host", "0.0.0.0", "--insecure")
    assert r.returncode == 3 and "warning:" in r.stderr and "--insecure" in r.stderr
    assert "anyone who can reach this port" in " ".join(r.stderr.split())
    for args in (("--host", "0.0.0.0", "--api-key", KEY), ("--host", "127.0.0.1"),
                 ("--host", "localhost"), ("--config", "serve_configs/gpu.yaml")):
        r = xrp_here("serve", *args)
        assert r.returncode == 3 and "warning" not in r.stderr and KEY not in r.stdout + r.stderr
    monkeypatch.setenv("XRP_API_KEY", KEY)
    assert xrp_here("serve", "--host", "0.0.0.0").returncode == 3  # the key from the env
    monkeypatch.setenv("XRP_API_KEY", "two words")
    r = xrp_here("serve", "--host", "0.0.0.0")
    assert r.returncode == 2 and "printable ASCII" in r.stderr


def test_the_key_travels_to_build_app(stops_at_ray: list, monkeypatch) -> None:
    from xray_platform.orchestration import env

    monkeypatch.setattr(env, "prepare_ray_env", lambda address: None)
    monkeypatch.setenv("XRP_API_KEY", KEY)
    r = xrp_here("serve", "--host", "0.0.0.0")
    assert r.returncode == 2 and "stopped by the test" in r.stderr
    assert stops_at_ray[-1]["api_key"] == KEY
    assert KEY not in r.stdout + r.stderr


def test_the_bind_rule_of_xrp_watch_ui(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("XRP_API_KEY", raising=False)
    r = xrp_here("watch", str(tmp_path), "--ui", str(free_port()), "--ui-host", "0.0.0.0",
                 "--store", f"sqlite:///{tmp_path}/runs.db")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--ui-host 0.0.0.0 is reachable from other machines" in " ".join(r.stderr.split())
    assert "watching" not in r.stdout  # refused before models, store or page


def test_the_serve_ingress_app_needs_the_key(tmp_path: Path, monkeypatch) -> None:
    """The ingress's FastAPI app as its replica runs it: the key and limits in serve/config.py
    LIMITS, where Ingress.__init__ puts them (the class-based routes need Serve; the middleware
    and the /ui routes do not)."""
    from xray_platform.serve import config as serve_config
    from xray_platform.serve.app import api

    monkeypatch.setitem(serve_config.LIMITS, "api_key", KEY)
    monkeypatch.setitem(serve_config.LIMITS, "bytes", 1 << 20)
    monkeypatch.setitem(serve_config.LIMITS, "run_store", f"sqlite:///{tmp_path}/runs.db")
    h = {"X-API-Key": KEY}
    with served(api) as url:
        for path in ("/v1/models", "/ui", "/ui/api/runs/r", "/ui/api/runs/r/events"):
            r = requests.get(url + path, timeout=10)
            assert r.status_code == 401 and r.json()["status"] == 401, path
            assert r.json()["id"] is None and KEY not in r.text
        big = b"x" * (2 << 20)  # above the limit: 401 first, the limit only for a client
        assert requests.post(f"{url}/v1/predict", files={"file": ("a.cbf", big)},
                             timeout=10).status_code == 401
        r = requests.post(f"{url}/v1/predict", files={"file": ("a.cbf", big)}, headers=h,
                          timeout=10)
        assert r.status_code == 413 and "max_upload_mb" in r.json()["error"]
        assert requests.get(f"{url}/ui", headers=h, timeout=10).status_code == 200
        assert requests.get(f"{url}/ui", headers={"Authorization": f"Bearer {KEY}"},
                            timeout=10).status_code == 200
        assert requests.get(f"{url}/ui/api/runs/r", headers=h, timeout=10).status_code == 404
        for path in ("/docs", "/openapi.json"):
            assert requests.get(url + path, timeout=10).status_code == 200, path
        monkeypatch.setitem(serve_config.LIMITS, "api_key", None)  # no key: as before
        assert requests.get(f"{url}/ui", timeout=10).status_code == 200


def test_a_service_on_all_interfaces_with_a_key(tmp_path: Path) -> None:
    """A real `xrp serve --host 0.0.0.0` with $XRP_API_KEY (~40 s): the key reaches the Ingress
    replica (401 without it, 200 with it), /healthz stays open, the key is not in the output."""
    torch.manual_seed(0)
    model = tmp_path / "lattice.pt"
    save_model(model, build_model("lattice", 18), {"depth": 18, "init": "scratch", "task":
               "lattice", "label": "is_multi", "preprocessing": Preprocessing(64).to_dict()})
    port, log = free_port(), tmp_path / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "xray_platform.cli", "serve", "--host", "0.0.0.0", "--port",
         str(port), "--lattice-model", str(model), "--resolution-model", "none"],
        cwd=tmp_path, env={**NO_KEY_ENV, "XRP_API_KEY": KEY, "PYTHONUNBUFFERED": "1"},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT, preexec_fn=sigint_default)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.time() - t0 < 240, log.read_text()
            time.sleep(0.5)
        r = requests.get(f"{url}/v1/models", timeout=10)
        assert r.status_code == 401 and r.json() == {
            "error": r.json()["error"], "status": 401, "id": None} and KEY not in r.text
        assert requests.get(f"{url}/v1/models", headers={"X-API-Key": "wrong"},
                            timeout=10).status_code == 401
        r = requests.get(f"{url}/v1/models", headers={"X-API-Key": KEY}, timeout=10)
        assert r.status_code == 200 and "lattice" in r.json()["models"]
        assert requests.get(f"{url}/ui", headers={"Authorization": f"Bearer {KEY}"},
                            timeout=10).status_code == 200
        assert requests.get(f"{url}/ui", timeout=10).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert KEY not in log.read_text()
