"""Privacy by default: Ray's usage statistics and MLflow's telemetry are off unless the user turns
them on, and an MLflow tracking URI never carries credentials (issue 29, item 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xray_platform.orchestration.env import PRIVACY_DEFAULTS, privacy_defaults, worker_env_vars
from xray_platform.tracking.store import check_uri, tracking_uri

SECRET = "s3cr3t-pw"
#: what makes MLflow switch telemetry off by itself (a test run, CI): not what we test
_CI_VARS = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
            "CIRCLECI", "TF_BUILD", "BUILDKITE", "TEAMCITY_VERSION", "DO_NOT_TRACK")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No privacy setting of the user's, and no Ray config file that opts in."""
    for name in PRIVACY_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_CONFIG_PATH", str(tmp_path / "no-ray-config.json"))
    return monkeypatch


def test_xrp_turns_ray_usage_stats_and_mlflow_telemetry_off(clean_env) -> None:
    privacy_defaults()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_a_users_explicit_choice_wins(clean_env) -> None:
    clean_env.setenv("RAY_USAGE_STATS_ENABLED", "1")
    clean_env.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    privacy_defaults()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"


def test_ray_enable_usage_stats_is_an_explicit_choice_too(clean_env, tmp_path: Path) -> None:
    config = tmp_path / "config.json"  # what `ray enable-usage-stats` writes
    config.write_text(json.dumps({"usage_stats": True}))
    clean_env.setenv("RAY_USAGE_STATS_CONFIG_PATH", str(config))
    privacy_defaults()
    assert "RAY_USAGE_STATS_ENABLED" not in os.environ
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_a_clusters_workers_get_the_settings_unless_the_job_sets_them(clean_env) -> None:
    privacy_defaults()
    assert worker_env_vars() == PRIVACY_DEFAULTS
    job = {"runtime_env": {"env_vars": {"MLFLOW_DISABLE_TELEMETRY": "false"}}}
    clean_env.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert worker_env_vars() == {"RAY_USAGE_STATS_ENABLED": "0"}  # Ray refuses a key twice


def test_importing_the_cli_switches_both_off_in_ray_and_mlflow_themselves() -> None:
    """The variable names are the ones the installed Ray and MLflow read (at import)."""
    env = {k: v for k, v in os.environ.items()
           if k not in _CI_VARS and k not in PRIVACY_DEFAULTS}
    env["RAY_USAGE_STATS_CONFIG_PATH"] = os.devnull
    code = ("import xray_platform.cli, mlflow\n"
            "from mlflow.telemetry.utils import is_telemetry_disabled\n"
            "from ray._common.usage.usage_lib import usage_stats_enabled\n"
            "print(is_telemetry_disabled(), usage_stats_enabled())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["True", "False"]


@pytest.mark.parametrize("uri", [f"http://alice:{SECRET}@mlflow.example.org:5000",
                                 f"https://{SECRET}@mlflow.example.org",
                                 f"postgresql://mlflow:{SECRET}@db/mlflow"])
def test_a_tracking_uri_with_credentials_is_refused_without_echoing_them(uri: str) -> None:
    with pytest.raises(ValueError, match="holds credentials") as e:
        check_uri(uri, "--mlflow-uri")
    assert SECRET not in str(e.value) and "alice" not in str(e.value)
    assert "--mlflow-uri" in str(e.value)
    if uri.startswith("http"):
        assert "MLFLOW_TRACKING_USERNAME" in str(e.value)
        assert "MLFLOW_TRACKING_TOKEN" in str(e.value)


@pytest.mark.parametrize("uri", ["http://mlflow:5000", "https://h/path@x", "sqlite:////a@b/m.db",
                                 "file:///runs/mlruns", "databricks://profile", None])
def test_a_tracking_uri_without_credentials_passes(uri: str | None) -> None:
    assert check_uri(uri) == uri


def test_tracking_uri_refuses_credentials_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://bob:{SECRET}@h:5000")
    with pytest.raises(ValueError, match=r"\$MLFLOW_TRACKING_URI holds credentials") as e:
        tracking_uri()
    assert SECRET not in str(e.value)
    assert tracking_uri("http://h:5000") == "http://h:5000"  # an explicit URI comes first
    with pytest.raises(ValueError, match="holds credentials"):
        tracking_uri(f"http://bob:{SECRET}@h:5000")


def test_no_model_is_resolved_with_such_a_uri_not_even_a_file(tmp_path: Path) -> None:
    """resolve() is how every command and the serve replicas find a model: a URI with
    credentials (also a serve config's mlflow_uri) is refused even when a file needs none."""
    from xray_platform.tracking.resolve import resolve
    from xray_platform.zoo import zoo_model

    z = zoo_model("resolution")
    with pytest.raises(ValueError, match="holds credentials") as e:
        resolve("resolution", str(z.file), f"http://u:{SECRET}@h:5000")
    assert SECRET not in str(e.value)
