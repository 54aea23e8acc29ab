"""Ray set-up for every xrp command: the environment (set BEFORE `import ray`: Ray reads some of
it at import), connecting or starting Ray, and quiet output.

- Loopback: Ray turns 127.0.0.1 into the machine's external address unless
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; we set it for a private local Ray and for clusters
  addressed on loopback, so nothing binds to or dials another interface.
- Token auth: clusters started with `ray start` use token auth (Ray >= 2.59); a client then
  needs RAY_AUTH_MODE=token and the token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
  ~/.ray/auth_token). We set the mode when a token is available and the user set none.
- Private by default: Ray's usage statistics (RAY_USAGE_STATS_ENABLED=0) and MLflow's telemetry
  (MLFLOW_DISABLE_TELEMETRY=true) are off unless the user turns them on: a value already in the
  environment wins, and so does `ray enable-usage-stats` (~/.ray/config.json). The workers of a
  cluster get the same values through the job's runtime env (they do not inherit ours).
- Quiet by default: users see xrp's own progress; Ray's logs and messages (raylet warnings,
  Ray Train/Data chatter of the workers, the C++ core's lines on file descriptor 2) go to a log
  file, unless XRP_VERBOSE=1 (`xrp -v`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path

LOOPBACK_PREFIXES = ("127.", "localhost", "[::1]", "::1")
#: Off unless the user turns them on (module doc).
PRIVACY_DEFAULTS = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}


def _ray_usage_opted_in() -> bool:
    """Whether the user ran `ray enable-usage-stats` (Ray's own config file says so)."""
    path = os.environ.get("RAY_USAGE_STATS_CONFIG_PATH") or \
        os.path.expanduser("~/.ray/config.json")
    try:
        with open(path) as fh:
            return json.load(fh).get("usage_stats") is True
    except (OSError, ValueError, AttributeError):
        return False


def privacy_defaults() -> None:
    """Ray's usage statistics and MLflow's telemetry off unless the user turned them on; call
    before `import ray` / `import mlflow` (both read these at import)."""
    for name, value in PRIVACY_DEFAULTS.items():
        if name == "RAY_USAGE_STATS_ENABLED" and _ray_usage_opted_in():
            continue
        os.environ.setdefault(name, value)


def worker_env_vars() -> dict[str, str]:
    """The privacy settings for a cluster's workers (the job's runtime env), less those the
    submitted job's own runtime env sets (Ray refuses the same key twice)."""
    try:
        job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
        theirs = (job.get("runtime_env") or {}).get("env_vars") or {}
    except (ValueError, AttributeError):
        theirs = {}
    return {k: os.environ[k] for k in PRIVACY_DEFAULTS if k in os.environ and k not in theirs}


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    host = address.split("://", 1)[-1]
    return host.startswith(LOOPBACK_PREFIXES)


def prepare_ray_env(address: str | None) -> None:
    privacy_defaults()
    if address is None or is_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address:
        has_token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
        if has_token or (Path.home() / ".ray" / "auth_token").exists():
            os.environ.setdefault("RAY_AUTH_MODE", "token")


def verbose() -> bool:
    return os.environ.get("XRP_VERBOSE", "") not in ("", "0")


def log_path() -> Path:
    """Where a quiet command keeps what Ray printed (one file per process)."""
    from xray_platform.tracking.resolve import cache_dir

    d = cache_dir() / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"ray-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


#: Worker lines that still reach the terminal in quiet mode: xrp's own, and failures.
_KEEP = re.compile(r"\[xrp |Traceback|Error|Exception")


def _quiet_ray_output(log: Path) -> None:
    """Send Ray's driver-side printing (raylet messages, worker logs) to ``log``, keeping xrp's
    own progress lines and errors. Hooks ray._private.worker.print_to_stdstream (the one function
    both go through); if a Ray release moves it, output just stays verbose."""
    import ray._private.worker as w

    original = getattr(w, "print_to_stdstream", None)
    if original is None or getattr(original, "_xrp_quiet", False):
        return
    fh = open(log, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)

    recent: dict[tuple, float] = {}  # Ray Train forwards a worker's line twice

    def quiet(data: dict, ignore_prefix: bool) -> None:
        lines = data.get("lines") or []
        now = time.monotonic()
        keep = []
        for ln in lines:
            fh.write(f"({data.get('pid')}) {ln}\n")
            key = (data.get("pid"), ln)
            if data.get("pid") != "raylet" and _KEEP.search(ln) and now - recent.get(key, -9) > 5:
                keep.append(ln)
            recent[key] = now
        if len(recent) > 1000:
            recent.clear()
        if keep:
            original({**data, "lines": keep}, ignore_prefix)

    quiet._xrp_quiet = True
    w.print_to_stdstream = quiet
    # the driver's own Ray loggers (Ray Data configures its own when imported: import it
    # first): errors only; every Ray process's full log stays in /tmp/ray/session_*/logs
    import ray.data  # noqa: F401

    for name in ("ray", "ray.train", "ray.tune", "ray.data", "ray.serve"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _native_stderr_to(log: Path) -> None:
    """Ray's C++ core writes some warnings straight to file descriptor 2 (core_worker.cc, e.g.
    "Actor ... has constructor arguments in the object store" for every Ray Data actor pool,
    ray-project/ray#53727): point fd 2 at ``log`` and give Python's sys.stderr its own copy of
    the terminal, so xrp's errors and progress still reach the user. Only where sys.stderr is
    fd 2 itself (not under pytest's capture, not when already done)."""
    try:
        if sys.stderr.fileno() != 2:
            return
        sys.stderr.flush()
        terminal = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no real stderr (captured or closed)
        return
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding,
                           errors=sys.stderr.errors)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


def init_ray(address: str | None, num_cpus: int | None = None, *,
             log_to_driver: bool = True) -> None:
    """Connect to the cluster at ``address`` ("auto" for the one this machine belongs to) or
    start a private local Ray (default). ``log_to_driver=False`` keeps the workers' output in
    the session logs (a search prints its own progress lines)."""
    import ray

    if ray.is_initialized():
        return
    kw = {"logging_level": "INFO" if verbose() else "ERROR", "log_to_driver": log_to_driver}
    if not verbose():
        log = log_path()
        _quiet_ray_output(log)
        _native_stderr_to(log)
    if address:
        if env_vars := worker_env_vars():  # a cluster's workers do not inherit our environment
            kw["runtime_env"] = {"env_vars": env_vars}
        ray.init(address=address, **kw)
    else:
        # keep the dashboard: without it Ray Train's controller floods the logs with errors
        ray.init(address="local", num_cpus=num_cpus, **kw)
