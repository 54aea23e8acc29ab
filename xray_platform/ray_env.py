"""Environment for Ray clients, set BEFORE `import ray` (Ray reads some of it at import).

- Loopback: Ray turns 127.0.0.1 into the machine's external address unless
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; we set it for a private local Ray and for clusters
  addressed on loopback, so nothing binds to or dials another interface.
- Token auth: clusters started with `ray start` use token auth (Ray >= 2.59); a client then
  needs RAY_AUTH_MODE=token and the token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
  ~/.ray/auth_token). We set the mode when a token is available and the user set none.
"""

from __future__ import annotations

import os
from pathlib import Path

LOOPBACK_PREFIXES = ("127.", "localhost", "[::1]", "::1")


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    host = address.split("://", 1)[-1]
    return host.startswith(LOOPBACK_PREFIXES)


def prepare_ray_env(address: str | None) -> None:
    if address is None or is_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address:
        has_token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
        if has_token or (Path.home() / ".ray" / "auth_token").exists():
            os.environ.setdefault("RAY_AUTH_MODE", "token")
