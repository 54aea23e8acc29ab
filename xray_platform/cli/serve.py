"""`xrp serve`: the Ray Serve graph over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from xray_platform.cli.common import console, err, fail, positive
from xray_platform.cli.options import Address, CellOption, GeometryFile, MlflowUri, cell_option

#: shared with `xrp watch --ui` (cli/runs.py); the variable is live/auth.py's KEY_ENV
ApiKey = Annotated[str | None, typer.Option(
    "--api-key", envvar="XRP_API_KEY", show_envvar=True, show_default=False,
    help="API key every client must send (X-API-Key: KEY or Authorization: Bearer KEY); "
    "needed to bind beyond loopback. Prefer the environment variable: a command line is "
    "visible to other users.")]
Insecure = Annotated[bool, typer.Option(
    "--insecure", help="Bind beyond loopback without an API key: anyone who can reach the "
    "port may use it.")]


def checked_key(host: str, api_key: str | None, insecure: bool, option: str) -> str | None:
    """The API key to require (None: none), after the bind rule: fails (exit 2) on a host
    beyond loopback without a key unless --insecure, which prints a warning."""
    from xray_platform.live.auth import check_bind, clean_key

    try:
        key = clean_key(api_key)
        warning = check_bind(host, key, insecure, option)
    except ValueError as e:
        fail(str(e))
    if warning:
        err.print(f"[bold yellow]warning:[/] {warning}", soft_wrap=True)
    return key


def serve(
    config: Path | None = typer.Option(None, "--config", help="A Serve config YAML (e.g. "
                                       "serve_configs/local.yaml); its args and deployment "
                                       "options are used, the options below override them."),
    lattice_model: str | None = typer.Option(
        None, "--lattice-model", help="Lattice model: a file, zoo, champion (default: the "
        "registry's, else the zoo's), a registry reference (lattice/3) or none."),
    resolution_model: str | None = typer.Option(
        None, "--resolution-model", help="Resolution model: a file, zoo, champion (default), a "
        "registry reference (resolution/3) or none."),
    mlflow_uri: MlflowUri = None,
    host: str | None = typer.Option(None, "--host", help="Interface to bind (default "
                                    "127.0.0.1; 0.0.0.0 exposes the service to the network)."),
    port: int | None = typer.Option(None, "--port", min=1, max=65535,
                                    help="HTTP port (default 8000)."),
    max_upload_mb: float | None = typer.Option(None, "--max-upload-mb", help="Largest upload "
                                               "accepted (default 64 MiB)."),
    store: str | None = typer.Option(None, "--store", help="The run store the live page "
                                     "(/ui) shows: a SQLAlchemy URL (default "
                                     "sqlite:///xrp-runs.db in the working directory)."),
    geometry: GeometryFile = None,
    cell: CellOption = None,
    address: Address = None,
    api_key: ApiKey = None,
    insecure: Insecure = False,
) -> None:
    """Serve the graph over HTTP: frame -> lattice classifier -> (hits) resolution
    regressor. POST /v1/predict, GET /healthz, GET /v1/models, docs at /docs;
    the live page of `xrp watch` runs at /ui. Beyond loopback only with an API key."""
    import time

    from xray_platform.orchestration.env import prepare_ray_env
    from xray_platform.serve.config import load_config

    try:
        args, host, port = load_config(config, {
            "lattice_model": lattice_model, "resolution_model": resolution_model,
            "mlflow_uri": mlflow_uri, "max_upload_mb": max_upload_mb, "host": host,
            "port": port, "run_store": store,
            "geometry": str(geometry) if geometry is not None else None,
            "cell": cell_option(cell)})
    except ValueError as e:
        fail(str(e))
    from xray_platform.tracking.store import check_uri

    try:
        mb = args.get("max_upload_mb")
        positive(None if mb is None else float(mb), "max_upload_mb")
        check_uri(args.get("mlflow_uri"), "the config's mlflow_uri")
    except ValueError as e:
        fail(str(e))
    args["api_key"] = checked_key(host, api_key or args.get("api_key"), insecure, "--host")
    prepare_ray_env(address)  # after every check: a refusal starts nothing

    from ray import serve as ray_serve

    from xray_platform.orchestration.env import init_ray
    from xray_platform.serve.app import build_app

    try:
        application = build_app(args)
    except ValueError as e:
        fail(str(e))
    init_ray(address)
    ray_serve.start(http_options={"host": host, "port": port})
    ray_serve.run(application, name="xrp", route_prefix="/")
    url = f"http://{host}:{port}"
    auth = ' -H "X-API-Key: $XRP_API_KEY"' if args["api_key"] else ""
    console.print(f"[bold green]xrp is serving[/] at {url}  (API docs {url}/docs)", soft_wrap=True)
    console.print(f"  curl{auth} -F file=@frame.cbf {url}/v1/predict", soft_wrap=True)
    console.print(f"  curl{auth} {url}/v1/models      live page {url}/ui"
                  f"{'?key=KEY (once)' if auth else ''}      Ctrl-C stops", soft_wrap=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        ray_serve.shutdown()
