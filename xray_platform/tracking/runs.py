"""MLflow runs: the one door training and tuning go through to MLflow.

A :class:`Tracker` speaks for one tracking store. It opens runs (a training run, a search's
parent run, a trial's child run found again when a search resumes), logs parameters, per-epoch
metrics, artifacts and tags, closes runs with their status, reads metric histories back, and
reaches the model registry (champion, download, register, alias) for the champion decision
(champion.py). No Ray here: orchestration/ calls it from the driver and from rank 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xray_platform.tracking.registry import CHAMPION, champion, download, register
from xray_platform.tracking.store import client, experiment_id

if TYPE_CHECKING:
    from xray_platform.tracking.champion import Incumbent

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a child run under it
TRIAL_TAG = "xrp.trial_id"
PARAM_CHARS = 500  # a logged parameter value is cut to this many characters


@dataclass(frozen=True)
class ChildRun:
    """What a search reads of a trial's child run."""

    run_id: str
    name: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED
    metrics: tuple[str, ...]  # the names of the metrics it logged


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


class Tracker:
    """The runs and registered models of one tracking store (URI)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._client = client(uri)

    # runs -------------------------------------------------------------------------------
    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created if need be (in the driver, before workers)."""
        return experiment_id(self._client, name, self.uri)

    def open_run(self, experiment: str, name: str, tags: Mapping[str, str]) -> str:
        """A new run in ``experiment``; its id."""
        return self._client.create_run(experiment, run_name=name, tags=dict(tags)).info.run_id

    def reopen(self, run_id: str) -> None:
        """Mark a run running again (a resumed training or search)."""
        self._client.update_run(run_id, status="RUNNING")

    def child_run(self, experiment: str, parent: str, trial_id: str, name: str,
                  tags: Mapping[str, str]) -> str:
        """A trial's child run of ``parent``: found again (and reopened) by trial id when a
        search resumes, else opened."""
        found = self._client.search_runs(
            [experiment], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and "
            f"tags.`{PARENT_TAG}` = '{parent}'", max_results=1)
        if found:  # a resumed trial (its run was marked failed or killed when interrupted)
            self.reopen(found[0].info.run_id)
            return found[0].info.run_id
        return self.open_run(experiment, name, {PARENT_TAG: parent, TRIAL_TAG: trial_id,
                                                **tags})

    def child_runs(self, parent: str) -> dict[str | None, ChildRun]:
        """Trial id -> child run, for every child run of ``parent``."""
        exp = self._client.get_run(parent).info.experiment_id
        found = self._client.search_runs([exp], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'")
        return {r.data.tags.get(TRIAL_TAG): ChildRun(r.info.run_id, r.info.run_name,
                                                     r.info.status, tuple(r.data.metrics))
                for r in found}

    def close(self, run_id: str, status: str = "FINISHED") -> None:
        """End a run: FINISHED, FAILED or KILLED."""
        self._client.set_terminated(run_id, status)

    # logging ----------------------------------------------------------------------------
    def has_params(self, run_id: str) -> bool:
        return bool(self._client.get_run(run_id).data.params)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Each value as text, cut to PARAM_CHARS characters."""
        for k, v in params.items():
            self._client.log_param(run_id, k, str(v)[:PARAM_CHARS])

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any],
                    step: int | None = None) -> None:
        """The finite numbers of ``metrics`` (others are left out), at ``step`` (an epoch)."""
        for k, v in metrics.items():
            if _finite(v):
                self._client.log_metric(run_id, k, float(v), step=step)

    def log_artifacts(self, run_id: str, paths: Iterable[str | Path],
                      folder: str | None = None) -> None:
        """Copy files into the run's artifacts (into ``folder`` when given)."""
        for p in paths:
            self._client.log_artifact(run_id, str(p), artifact_path=folder)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self._client.set_tag(run_id, k, v)

    # reading back -----------------------------------------------------------------------
    def metric_names(self, run_id: str) -> list[str]:
        return list(self._client.get_run(run_id).data.metrics)

    def history(self, run_id: str, names: Iterable[str]) -> dict[str, dict[int, float]]:
        """Metric -> {step: value} for each of ``names`` (all epochs, across resumes)."""
        return {k: {int(m.step): m.value for m in self._client.get_metric_history(run_id, k)}
                for k in names}

    # registry and the champion decision ---------------------------------------------------
    def champion(self, task: str):
        """The model version holding @champion for ``task`` (None if there is none)."""
        return champion(self._client, task)

    def download(self, mv, dst: str | Path) -> Path:
        """A model version's model file, fetched into ``dst``."""
        return download(self._client, mv, dst)

    def incumbent(self, task: str, tmp: Path) -> Incumbent | None:
        """The model a candidate must beat (champion.py)."""
        from xray_platform.tracking.champion import incumbent

        return incumbent(self._client, task, tmp)

    def register(self, task: str, run_id: str, *, tags: dict[str, Any], description: str):
        """A new version of the task's registered model from ``run_id``'s model folder."""
        return register(self._client, task, run_id, tags=tags, description=description)

    def crown(self, mv) -> None:
        """Point @champion at model version ``mv``."""
        self._client.set_registered_model_alias(mv.name, CHAMPION, mv.version)
