"""Exposed means authenticated (live/auth.py): which binds need a key, the constant-time
comparison, the middleware on a small app and on the live page's own app (headers, the browser
cookie, open routes, 401 in the error schema), and the cap on live event streams. No Ray: the
apps run in uvicorn in a thread, as `xrp watch --ui` runs the page."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from fastapi import FastAPI
from helpers import served

from xray_platform.live import auth, page
from xray_platform.live.store import RunStore

KEY = "k3y-0f-the-beamline_42"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "localhost", "LOCALHOST", "::1",
                                  "[::1]", "::ffff:127.0.0.1"])
def test_loopback_hosts(host: str) -> None:
    assert auth.is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.20", "10.0.0.1",
                                  "beamline-pc.example.org", "128.0.0.1"])
def test_exposed_hosts(host: str) -> None:
    assert not auth.is_loopback(host)


def test_bind_policy() -> None:
    assert auth.check_bind("127.0.0.1", None, False) is None
    assert auth.check_bind("localhost", KEY, False) is None
    assert auth.check_bind("0.0.0.0", KEY, False) is None  # the key is enforced
    with pytest.raises(ValueError, match=r"--ui-host 0\.0\.0\.0 .*API key.*XRP_API_KEY.*"
                                         r"--insecure") as e:
        auth.check_bind("0.0.0.0", None, False, "--ui-host")
    assert "\n" not in str(e.value)
    warning = auth.check_bind("0.0.0.0", None, True)
    assert warning and "--insecure" in warning and "anyone" in warning
    assert auth.check_bind("0.0.0.0", KEY, True) is None  # a key makes --insecure moot


def test_keys_are_cleaned_and_compared_in_constant_time(monkeypatch) -> None:
    assert auth.clean_key(None) is None and auth.clean_key("  ") is None
    assert auth.clean_key(f" {KEY}\n") == KEY
    for bad in ("two words", "schlüssel", "tab\there"):
        with pytest.raises(ValueError, match="printable ASCII"):
            auth.clean_key(bad)
    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert auth.same(KEY, KEY) and not auth.same(KEY + "x", KEY) and not auth.same("", KEY)
    assert not auth.same(None, KEY) and len(calls) == 3
    assert auth.cookie_value(KEY) != KEY and KEY not in auth.cookie_value(KEY)
    assert auth.cookie_value(KEY) != auth.cookie_value(KEY + "x")


def _tiny_app(key: str | None) -> FastAPI:
    a = FastAPI()
    for path in ("/healthz", "/v1/models", "/ui", "/ui/runs/r", "/ui/api/runs/r",
                 "/ui/runs/r/thumb.png"):
        a.add_api_route(path, lambda: {"ok": True}, methods=["GET"])
    a.add_api_route("/v1/predict", lambda: {"ok": True}, methods=["POST"])
    a.add_middleware(auth.RequireKey, key_of=lambda: key)
    return a


def _is_401(r: requests.Response) -> bool:
    ok = r.status_code == 401 and r.json() == {"error": auth.UNAUTHORIZED, "status": 401,
                                               "id": None}
    return ok and KEY not in r.text and "set-cookie" not in r.headers


def test_a_key_is_needed_on_every_route_but_the_open_ones() -> None:
    with served(_tiny_app(KEY)) as url:
        for path in ("/v1/models", "/ui", "/ui/runs/r", "/ui/api/runs/r",
                     "/ui/runs/r/thumb.png", "/nosuch"):
            assert _is_401(requests.get(url + path, timeout=5)), path
            assert _is_401(requests.get(url + path, headers={"X-API-Key": KEY[:-1]},
                                        timeout=5)), path
            for headers in ({"X-API-Key": KEY}, {"x-api-key": KEY},
                            {"Authorization": f"Bearer {KEY}"},
                            {"Authorization": f"bearer {KEY}"}):
                assert requests.get(url + path, headers=headers, timeout=5).status_code in (
                    200, 404), (path, headers)
        assert _is_401(requests.get(url + "/v1/models", headers={"Authorization": KEY},
                                    timeout=5))  # no scheme
        assert _is_401(requests.post(url + "/v1/predict", files={"file": ("a", b"x")},
                                     timeout=5))
        assert requests.post(url + "/v1/predict", files={"file": ("a", b"x")},
                             headers={"X-API-Key": KEY}, timeout=5).status_code == 200
        for path in ("/healthz", "/openapi.json", "/docs"):
            assert requests.get(url + path, timeout=5).status_code == 200, path


def test_without_a_key_everything_is_open() -> None:
    with served(_tiny_app(None)) as url:
        for path in ("/v1/models", "/ui", "/ui/api/runs/r"):
            assert requests.get(url + path, timeout=5).status_code == 200


def test_a_browser_opens_the_page_once_with_the_key_then_a_cookie_carries_it() -> None:
    with served(_tiny_app(KEY)) as url:
        browser = requests.Session()
        assert _is_401(browser.get(f"{url}/ui?key={KEY[:-1]}", timeout=5))
        assert _is_401(browser.get(f"{url}/ui/api/runs/r?key={KEY}", timeout=5))  # pages only
        r = browser.get(f"{url}/ui/runs/r?key={KEY}", timeout=5)
        assert r.status_code == 200
        cookie = r.headers["set-cookie"]
        for attr in ("HttpOnly", "SameSite=Strict", "Path=/ui"):
            assert attr in cookie
        assert KEY not in cookie and r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cache-control"] == "no-store"
        for path in ("/ui", "/ui/api/runs/r", "/ui/runs/r/thumb.png"):  # what the page fetches
            assert browser.get(url + path, timeout=5).status_code == 200, path
        # the cookie is for the page's GET routes, not for the API
        jar = {auth.COOKIE: auth.cookie_value(KEY)}
        assert _is_401(requests.get(url + "/v1/models", cookies=jar, timeout=5))
        assert _is_401(requests.get(url + "/ui", cookies={auth.COOKIE: KEY}, timeout=5))


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    s = RunStore(f"sqlite:///{tmp_path}/runs.db")
    run = s.open_run("r1", "folder:/data/r1")
    s.add(run, [{"file": "/data/r1/a.cbf", "frame": 0, "hit": True, "n_spots": 40}])
    return s


def test_the_live_page_app_of_xrp_watch_needs_its_key(store: RunStore) -> None:
    with served(page.app(store.url, KEY)) as url:
        assert _is_401(requests.get(f"{url}/ui", timeout=5))
        assert _is_401(requests.get(f"{url}/ui/api/runs/r1/events", timeout=5))
        snap = requests.get(f"{url}/ui/api/runs/r1", headers={"X-API-Key": KEY}, timeout=5)
        assert snap.status_code == 200 and snap.json()["counters"]["frames"] == 1
        browser = requests.Session()
        assert "r1" in browser.get(f"{url}/ui?key={KEY}", timeout=5).text
        with browser.get(f"{url}/ui/api/runs/r1/events", stream=True, timeout=5) as r:
            assert r.status_code == 200
            assert next(r.iter_lines()).startswith(b"data: ")
    with served(page.app(store.url)) as url:  # no key: loopback as before
        assert requests.get(f"{url}/ui/api/runs/r1", timeout=5).status_code == 200


def _open(url: str) -> requests.Response:
    """A client on a live event stream; closing the response is the client going away. (It
    keeps its line iterator: a dropped one closes the connection.)"""
    r = requests.get(f"{url}/ui/api/runs/r1/events", stream=True, timeout=5)
    if r.status_code == 200:
        r.lines = r.iter_lines()  # type: ignore[attr-defined]
        assert next(r.lines).startswith(b"data: ")  # type: ignore[attr-defined]
    return r


def test_live_event_streams_are_capped_and_a_gone_client_frees_its_slot(
        store: RunStore) -> None:
    a = FastAPI()
    a.include_router(page.router(lambda: store, max_streams=2))
    with served(a) as url:
        for _ in range(3):  # a stream refused before it started holds no slot
            assert requests.get(f"{url}/ui/api/runs/nosuch/events", timeout=5).status_code == 404
        first, second = _open(url), _open(url)
        third = requests.get(f"{url}/ui/api/runs/r1/events", timeout=5)
        assert third.status_code == 503 and "2 live event streams are open" in third.text
        first.close()  # the client goes away
        t0 = time.time()
        while (r := _open(url)).status_code == 503:
            assert time.time() - t0 < 10, "a closed stream's slot was not freed"
            time.sleep(0.2)
        r.close()
        second.close()
    assert page.MAX_EVENT_STREAMS == 32
