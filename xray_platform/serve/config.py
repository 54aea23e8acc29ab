"""Serve config YAMLs (serve_configs/*.yaml, the format `serve deploy` takes): the app's args,
deployment options and HTTP options, with command-line overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_HOST = "127.0.0.1"  # loopback unless --host (or the file's http_options) says otherwise
DEFAULT_PORT = 8000
#: the running Ingress's limits (bytes per upload, seconds per request) and API key, set by the
#: replica
LIMITS: dict[str, Any] = {}
STORES: dict[str | None, Any] = {}  # the live page's open run store, by URL


def load_config(path: Path | None, overrides: dict[str, Any]) -> tuple[dict, str, int]:
    """(build_app args, host, port) from a Serve config file (or none) and overrides; an
    override of 'none' for a model turns that model off."""
    cfg: dict = {}
    app_cfg: dict = {}
    if path is not None:
        if not path.is_file():
            raise ValueError(f"--config {path} does not exist")
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
            app_cfg = (cfg.get("applications") or [{}])[0]
            args = dict(app_cfg.get("args") or {})
        except (yaml.YAMLError, AttributeError, IndexError, TypeError, ValueError) as e:
            raise ValueError(f"--config {path} is not a Serve config: {e}") from None
    else:
        args = {}
    for k, v in overrides.items():
        if k in ("host", "port"):
            continue
        if v is not None:
            args[k] = None if isinstance(v, str) and v.lower() == "none" else v
    if app_cfg.get("deployments"):
        args["deployments"] = app_cfg["deployments"]
    http = cfg.get("http_options") or {}
    host = overrides.get("host") or http.get("host") or DEFAULT_HOST
    port = overrides.get("port") or int(http.get("port") or DEFAULT_PORT)
    return args, host, int(port)
