"""infra/: KubeRay manifests, MLflow stack, cluster launcher config and Dockerfiles.

No cluster needed: every YAML is parsed and checked for the fields each kind needs, the
manifests are checked against the repository (entrypoints, options, Serve config, runtime_env,
image versions) and for credentials (only ever from Secrets). Core Kubernetes kinds, and the
pod templates inside the KubeRay resources, are validated against the Kubernetes JSON schemas
when kubernetes-validate is installed; the cluster launcher config against the schema of the
installed Ray.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

INFRA = ROOT / "infra"
KUBERAY = INFRA / "kuberay"
SERVE_CONFIGS = ROOT / "serve_configs"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
LAUNCHER = INFRA / "cluster-launcher" / "aws.yaml"
SECRETS_TEMPLATE = INFRA / "mlflow" / "secrets.example.yaml"
SHARED_PVC = "xrp-shared"
K8S_VERSION = "1.30.0"  # schemas used by kubernetes-validate

INFRA_YAMLS = sorted(INFRA.rglob("*.yaml"))
SERVE_YAMLS = sorted(SERVE_CONFIGS.glob("*.yaml"))

# Credential-like environment variable names: their values must come from a Secret.
CREDENTIAL_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|API_KEY|ACCESS_KEY|"
                             r"PRIVATE_KEY", re.IGNORECASE)
# user:password@ in a URI, where the password is not a $(VAR) reference.
URI_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:(?!\$\()[^/\s@]+@")

# Fields of the KubeRay ray.io/v1 types (KubeRay >= 1.5). The CRDs prune unknown fields
# silently, so a misspelt field would just be ignored by the operator: catch it here.
KUBERAY_FIELDS = {
    "RayClusterSpec": {
        "suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations",
        "enableInTreeAutoscaling", "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion",
        "workerGroupSpecs", "authOptions", "upgradeStrategy"},
    "HeadGroupSpec": {"template", "headService", "enableIngress", "rayStartParams",
                      "serviceType"},
    "WorkerGroupSpec": {
        "suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
        "rayStartParams", "template", "scaleStrategy", "numOfHosts"},
    "AutoscalerOptions": {
        "resources", "image", "imagePullPolicy", "securityContext", "idleTimeoutSeconds",
        "upscalingMode", "version", "env", "envFrom", "volumeMounts"},
    "AuthOptions": {"mode", "secretName", "enableK8sTokenAuth"},
    "RayJobSpec": {
        "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate",
        "metadata", "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy",
        "entrypoint", "runtimeEnvYAML", "jobId", "submissionMode", "entrypointResources",
        "entrypointNumCpus", "entrypointNumGpus", "ttlSecondsAfterFinished",
        "shutdownAfterJobFinishes", "suspend", "schedule"},
    "RayServiceSpec": {
        "serveConfigV2", "rayClusterConfig", "upgradeStrategy", "serveService",
        "excludeHeadPodFromServeSvc", "serviceUnhealthySecondThreshold",
        "deploymentUnhealthySecondThreshold", "rayClusterDeletionDelaySeconds", "managedBy"},
}


# --------------------------------------------------------------------------- helpers


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def k8s_docs() -> list[tuple[str, dict]]:
    """(file, document) for every Kubernetes object under infra/."""
    return [(rel(p), d) for p in INFRA_YAMLS for d in load_all(p)
            if isinstance(d, dict) and "apiVersion" in d and "kind" in d]


def docs_of(kind: str) -> list[tuple[str, dict]]:
    return [(f, d) for f, d in k8s_docs() if d["kind"] == kind]


def ray_cluster_specs() -> list[tuple[str, dict]]:
    """Every RayCluster spec: RayClusters, RayJob.rayClusterSpec, RayService.rayClusterConfig."""
    out = []
    for f, d in k8s_docs():
        spec = d.get("spec") or {}
        name = f"{f}:{d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "RayCluster":
            out.append((name, spec))
        elif d["kind"] == "RayJob" and "rayClusterSpec" in spec:
            out.append((name, spec["rayClusterSpec"]))
        elif d["kind"] == "RayService":
            out.append((name, spec["rayClusterConfig"]))
    return out


def pod_specs() -> Iterator[tuple[str, dict]]:
    """(where, pod spec) of every pod the manifests make, KubeRay groups included."""
    for f, d in k8s_docs():
        tmpl = (d.get("spec") or {}).get("template")
        if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet") and tmpl:
            yield f"{f}:{d['kind']}/{d['metadata']['name']}", tmpl["spec"]
    for name, spec in ray_cluster_specs():
        yield f"{name}:head", spec["headGroupSpec"]["template"]["spec"]
        for g in spec.get("workerGroupSpecs", []):
            yield f"{name}:{g['groupName']}", g["template"]["spec"]


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def ray_containers(spec: dict) -> Iterator[tuple[str, dict, dict]]:
    """(group, pod spec, Ray container) of a RayCluster spec; the Ray container is the first."""
    yield "head", spec["headGroupSpec"]["template"]["spec"], \
        spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    for g in spec.get("workerGroupSpecs", []):
        yield g["groupName"], g["template"]["spec"], g["template"]["spec"]["containers"][0]


def all_env_lists() -> Iterator[tuple[str, list[dict]]]:
    for where, pod in pod_specs():
        for c in containers(pod):
            yield f"{where}:{c['name']}", c.get("env", [])
    for name, spec in ray_cluster_specs():
        yield f"{name}:autoscaler", (spec.get("autoscalerOptions") or {}).get("env", [])


def env_map(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        buf = f"{buf} {s}" if buf else s
        if buf.endswith("\\"):
            buf = buf[:-1].rstrip()
            continue
        word, _, args = buf.partition(" ")
        out.append((word.upper(), args.strip()))
        buf = ""
    return out


def dockerfile_arg(path: Path, name: str) -> str | None:
    for ins, args in dockerfile_instructions(path):
        if ins == "ARG" and args.startswith(f"{name}="):
            return args.split("=", 1)[1].strip("\"'")
    return None


def job_command(script: Path) -> list[str]:
    """The xrp command a jobs/*.py entrypoint runs: the list passed to _entry.run([...])."""
    for node in ast.walk(ast.parse(script.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "run" and node.args and isinstance(node.args[0], ast.List)):
            return [ast.literal_eval(e) for e in node.args[0].elts]
    raise AssertionError(f"{rel(script)}: no run([...]) call")


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("path", INFRA_YAMLS + SERVE_YAMLS, ids=rel)
def test_every_yaml_parses(path):
    docs = load_all(path)
    assert docs, f"{rel(path)} is empty"
    assert all(isinstance(d, dict) for d in docs)


def test_infra_has_the_expected_files():
    for name in ("kuberay/raycluster.yaml", "kuberay/rayjob-tune.yaml", "kuberay/rayservice.yaml",
                 "kuberay/shared-storage.yaml", "mlflow/mlflow.yaml", "mlflow/secrets.example.yaml",
                 "cluster-launcher/aws.yaml", "docker/Dockerfile", "README.md"):
        assert (INFRA / name).is_file(), name


def test_readme_names_every_infra_file():
    text = (INFRA / "README.md").read_text()
    for p in sorted(INFRA.rglob("*")):
        if p.is_file() and p.name != "README.md":
            assert rel(p) in text, f"infra/README.md does not mention {rel(p)}"


def test_k8s_objects_have_kind_name_and_no_namespace():
    docs = k8s_docs()
    assert {d["kind"] for _, d in docs} >= {
        "RayCluster", "RayJob", "RayService", "Deployment", "Service", "StatefulSet", "Secret",
        "PersistentVolumeClaim"}
    for f, d in docs:
        meta = d.get("metadata") or {}
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta.get("name", "")), (f, meta)
        # One namespace for all (kubectl apply -n): Ray pods reach MLflow as http://mlflow:5000.
        assert "namespace" not in meta, f"{f}: {d['kind']} pins a namespace"
        if d["apiVersion"].startswith("ray.io"):
            assert d["apiVersion"] == "ray.io/v1", f


# --------------------------------------------------------------------------- KubeRay


def test_kuberay_fields_are_known():
    def check(obj: dict, type_name: str, where: str):
        unknown = set(obj) - KUBERAY_FIELDS[type_name]
        assert not unknown, f"{where}: unknown {type_name} fields {sorted(unknown)}"

    for f, d in k8s_docs():
        if d["kind"] == "RayJob":
            check(d["spec"], "RayJobSpec", f)
        elif d["kind"] == "RayService":
            check(d["spec"], "RayServiceSpec", f)
    for name, spec in ray_cluster_specs():
        check(spec, "RayClusterSpec", name)
        check(spec["headGroupSpec"], "HeadGroupSpec", name)
        for g in spec.get("workerGroupSpecs", []):
            check(g, "WorkerGroupSpec", f"{name}:{g.get('groupName')}")
        if "autoscalerOptions" in spec:
            check(spec["autoscalerOptions"], "AutoscalerOptions", name)
        if "authOptions" in spec:
            check(spec["authOptions"], "AuthOptions", name)


@pytest.mark.parametrize("name,spec", [pytest.param(n, s, id=n) for n, s in ray_cluster_specs()])
def test_ray_cluster_spec(name, spec):
    head = spec["headGroupSpec"]
    head_pod = head["template"]["spec"]
    head_c = head_pod["containers"][0]
    assert head_c.get("image"), name
    assert isinstance(head["rayStartParams"], dict), name
    # ray start parameters are strings in the CRD
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), name
    assert head["rayStartParams"].get("dashboard-host") == "0.0.0.0", name
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{name}: head exposed"
    head_res = head_c.get("resources", {})
    assert head_res.get("limits") and head_res.get("requests"), name
    assert "nvidia.com/gpu" not in {**head_res.get("limits", {}), **head_res.get("requests", {})}

    groups = spec["workerGroupSpecs"]
    names = [g["groupName"] for g in groups]
    assert len(set(names)) == len(names), f"{name}: duplicate groupName"
    gpu_groups = []
    for g in groups:
        lo, n, hi = g["minReplicas"], g.get("replicas", g["minReplicas"]), g["maxReplicas"]
        assert 0 <= lo <= n <= hi, f"{name}:{g['groupName']}: {lo} <= {n} <= {hi}"
        assert isinstance(g["rayStartParams"], dict)
        c = g["template"]["spec"]["containers"][0]
        assert c.get("image"), f"{name}:{g['groupName']}"
        res = c.get("resources", {})
        assert res.get("limits") and res.get("requests"), f"{name}:{g['groupName']}"
        gpus = res["limits"].get("nvidia.com/gpu")
        if gpus:
            assert int(gpus) >= 1
            # extended resources: requests, if given, must equal limits
            assert res["requests"].get("nvidia.com/gpu", gpus) == gpus
            gpu_groups.append(g["groupName"])
    assert gpu_groups, f"{name}: no worker group requests nvidia.com/gpu"
    assert spec.get("enableInTreeAutoscaling") is True, name
    assert spec.get("autoscalerOptions"), name


def test_ray_cluster_specs_agree_with_each_other_and_the_image():
    specs = ray_cluster_specs()
    assert len(specs) == 3  # raycluster, rayjob, rayservice
    ray_version = dockerfile_arg(DOCKERFILE, "RAY_VERSION")
    images = set()
    for name, spec in specs:
        assert spec.get("rayVersion") == ray_version, f"{name}: rayVersion != Dockerfile's Ray"
        assert (spec.get("authOptions") or {}).get("mode") == "token", f"{name}: no token auth"
        for group, _pod, c in ray_containers(spec):
            images.add(c["image"])
            assert not c["image"].endswith(":latest") and ":" in c["image"], c["image"]
            # Ray reads its CPU count from the limits: they must say how many
            assert "cpu" in c["resources"]["limits"], f"{name}:{group}"
    assert len(images) == 1, f"Ray pods use different images: {images}"


def test_every_ray_pod_mounts_shared_storage_and_gets_mlflow():
    pvcs = {d["metadata"]["name"]: d for _, d in docs_of("PersistentVolumeClaim")}
    assert "ReadWriteMany" in pvcs[SHARED_PVC]["spec"]["accessModes"]
    for name, spec in ray_cluster_specs():
        for group, pod, c in ray_containers(spec):
            where = f"{name}:{group}"
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/shared" in mounts, f"{where}: /shared not mounted"
            claim = volumes[mounts["/shared"]].get("persistentVolumeClaim", {}).get("claimName")
            assert claim == SHARED_PVC, where
            assert "/dev/shm" in mounts, f"{where}: no /dev/shm for the object store"
            env = env_map(c)
            assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000", where
            for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                assert env[var]["valueFrom"]["secretKeyRef"]["name"], f"{where}: {var}"
            sc = pod.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, where


def test_rayjob_runs_a_tune_entrypoint_of_this_repo():
    jobs = docs_of("RayJob")
    assert jobs
    for f, d in jobs:
        spec = d["spec"]
        argv = shlex.split(spec["entrypoint"])
        assert argv[0] in ("python", "python3"), argv
        script = argv[1]
        assert re.fullmatch(r"jobs/tune_\w+\.py", script), script
        assert (ROOT / script).is_file(), f"{f}: {script} does not exist"
        assert "--out" in argv and argv[argv.index("--out") + 1].startswith("/shared/"), \
            f"{f}: --out must be on the shared volume"
        assert spec.get("rayClusterSpec") or spec.get("clusterSelector"), f
        if spec.get("rayClusterSpec"):
            assert spec.get("shutdownAfterJobFinishes") is True, f
            assert isinstance(spec.get("ttlSecondsAfterFinished"), int), f
            assert spec["ttlSecondsAfterFinished"] >= 0
        # every option of the entrypoint is an option of the xrp command the job runs
        import typer

        import xray_platform.cli as cli
        group = typer.main.get_command(cli.app)
        command = job_command(ROOT / script)
        cmd = group.commands[command[0]]
        known = {o for p in cmd.params for o in p.opts}
        for arg in argv[2:]:
            if arg.startswith("--"):
                assert arg.split("=")[0] in known, f"{f}: xrp {command[0]} has no {arg}"


def test_rayjob_runtime_env_matches_jobs_runtime_env_and_the_image():
    repo_env = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())
    workdir = [a for i, a in dockerfile_instructions(DOCKERFILE) if i == "WORKDIR"][-1]
    for f, d in docs_of("RayJob"):
        env = yaml.safe_load(d["spec"]["runtimeEnvYAML"])
        assert env["working_dir"] == workdir, f"{f}: working_dir is not the image's {workdir}"
        assert set(env.get("excludes", [])) >= set(repo_env.get("excludes", [])), f
        for k, v in (repo_env.get("env_vars") or {}).items():
            assert env["env_vars"].get(k) == v, f"{f}: env_vars[{k}]"
        assert not set(env) - {"working_dir", "excludes", "env_vars", "py_modules", "pip",
                               "config"}, f"{f}: unexpected runtime_env keys"


def test_rayservice_serves_exactly_serve_configs_gpu_yaml():
    gpu = yaml.safe_load((SERVE_CONFIGS / "gpu.yaml").read_text())
    services = docs_of("RayService")
    assert services
    for f, d in services:
        assert isinstance(d["spec"]["serveConfigV2"], str), f"{f}: serveConfigV2 is a string"
        cfg = yaml.safe_load(d["spec"]["serveConfigV2"])
        assert cfg["applications"] == gpu["applications"], \
            f"{f}: serveConfigV2 applications differ from serve_configs/gpu.yaml"
        for key in set(cfg) - {"applications", "http_options"}:
            assert cfg[key] == gpu.get(key), f"{f}: serveConfigV2 {key} differs from gpu.yaml"
        http = {k: v for k, v in cfg["http_options"].items() if k != "host"}
        assert http == {k: v for k, v in gpu["http_options"].items() if k != "host"}, f
        assert gpu["http_options"]["host"] == "127.0.0.1"  # every config: loopback
        spec = d["spec"]["rayClusterConfig"]
        if cfg["http_options"]["host"] not in ("127.0.0.1", "localhost"):  # exposed: keyed
            pods = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
            for pod in pods:
                for c in pod["template"]["spec"]["containers"]:
                    env = {e["name"]: e for e in c.get("env", [])}
                    assert env.get("XRP_API_KEY", {}).get("valueFrom", {}).get(
                        "secretKeyRef"), f"{f}: {c['name']} binds beyond loopback without a key"
        gpu_min = sum(g["minReplicas"] for g in spec["workerGroupSpecs"]
                      if g["template"]["spec"]["containers"][0]["resources"]["limits"]
                      .get("nvidia.com/gpu"))
        need = sum(dep["ray_actor_options"].get("num_gpus", 0)
                   * dep.get("autoscaling_config", {}).get("min_replicas",
                                                          dep.get("num_replicas", 1))
                   for app in cfg["applications"] for dep in app.get("deployments", []))
        assert gpu_min >= need, f"{f}: {need} GPUs at min replicas, {gpu_min} GPU pods kept"


@pytest.mark.parametrize("path", SERVE_YAMLS + [KUBERAY / "rayservice.yaml"], ids=rel)
def test_serve_import_path_resolves(path):
    if path.name == "rayservice.yaml":
        cfg = yaml.safe_load(load_all(path)[0]["spec"]["serveConfigV2"])
    else:
        cfg = yaml.safe_load(path.read_text())
    for app in cfg["applications"]:
        module_name, _, attr = app["import_path"].partition(":")
        assert attr, app["import_path"]
        module = importlib.import_module(module_name)  # a broken import fails
        assert callable(getattr(module, attr)), app["import_path"]
        if hasattr(module, "DEFAULTS"):  # build_app refuses unknown args
            assert set(app.get("args", {})) <= set(module.DEFAULTS) | {"deployments"}
        for dep in app.get("deployments", []):
            assert hasattr(module, dep["name"]), f"{rel(path)}: no deployment {dep['name']}"
            opts = dep.get("max_ongoing_requests", 0)
            batch = app.get("args", {}).get("max_batch_size", 0)
            if dep["name"] in ("LatticeClassifier", "ResolutionRegressor"):
                assert opts >= batch, f"{rel(path)}: max_ongoing_requests < max_batch_size"


# --------------------------------------------------------------------------- core kinds


def test_workloads_select_their_pods_and_set_images_and_resources():
    workloads = docs_of("Deployment") + docs_of("StatefulSet")
    assert workloads
    services = {d["metadata"]["name"] for _, d in docs_of("Service")}
    for f, d in workloads:
        spec = d["spec"]
        labels = spec["template"]["metadata"]["labels"]
        for k, v in spec["selector"]["matchLabels"].items():
            assert labels.get(k) == v, f"{f}: selector does not match the pod labels"
        for c in containers(spec["template"]["spec"]):
            assert c.get("image"), f"{f}:{c['name']}"
            assert c.get("resources", {}).get("limits"), f"{f}:{c['name']}: no limits"
        if d["kind"] == "StatefulSet":
            assert spec["serviceName"] in services, f"{f}: no Service {spec['serviceName']}"
            assert spec.get("volumeClaimTemplates"), f


def test_services_select_a_workload():
    pod_labels = [d["spec"]["template"]["metadata"]["labels"]
                  for _, d in docs_of("Deployment") + docs_of("StatefulSet")]
    for f, d in docs_of("Service"):
        spec = d["spec"]
        assert spec.get("type", "ClusterIP") == "ClusterIP", f"{f}: exposed outside the cluster"
        assert spec["ports"], f
        sel = spec["selector"]
        assert any(all(lab.get(k) == v for k, v in sel.items()) for lab in pod_labels), \
            f"{f}: Service {d['metadata']['name']} selects no pods"
    names = {d["metadata"]["name"]: d for _, d in docs_of("Service")}
    assert names["mlflow"]["spec"]["ports"][0]["port"] == 5000  # http://mlflow:5000


def test_mlflow_server_command():
    (f, dep), = [(f, d) for f, d in docs_of("Deployment") if d["metadata"]["name"] == "mlflow"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    cmd = " ".join(c.get("command", []) + c.get("args", []))
    env = env_map(c)
    assert cmd.startswith("mlflow server")
    for flag in ("--serve-artifacts", "--artifacts-destination", "--host=0.0.0.0", "--port=5000"):
        assert flag in cmd, flag
    store = env.get("MLFLOW_BACKEND_STORE_URI", {}).get("value", "") or cmd
    assert "postgresql://" in store
    assert "$(POSTGRES_PASSWORD)" in store  # expanded from the Secret, never literal
    assert "secretKeyRef" in env["POSTGRES_PASSWORD"]["valueFrom"]


def test_secrets_are_templates_only():
    secrets = docs_of("Secret")
    assert secrets
    for f, d in secrets:
        assert f == rel(SECRETS_TEMPLATE), f"{f}: Secrets belong in the template only"
        assert "data" not in d, f"{f}: use stringData placeholders"
        values = d.get("stringData") or {}
        assert values and all(v == "CHANGE-ME" for v in values.values()), \
            f"{f}: {d['metadata']['name']} holds something other than CHANGE-ME"


def test_secret_references_exist_in_the_template():
    keys = {(d["metadata"]["name"], k) for _, d in docs_of("Secret") for k in d["stringData"]}
    refs = 0
    for where, env in all_env_lists():
        for e in env:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                refs += 1
                assert (ref["name"], ref["key"]) in keys, f"{where}: {ref} not in the template"
    assert refs


def test_no_literal_credentials_in_env():
    for where, env in all_env_lists():
        for e in env:
            if CREDENTIAL_NAME.search(e["name"]):
                assert "value" not in e, f"{where}: {e['name']} has a literal value"
                assert "secretKeyRef" in (e.get("valueFrom") or {}), \
                    f"{where}: {e['name']} must come from a Secret (secretKeyRef)"
            value = str(e.get("value", ""))
            assert not URI_WITH_PASSWORD.search(value), f"{where}: {e['name']} has a password"
    for f, d in docs_of("RayJob"):
        env_vars = yaml.safe_load(d["spec"]["runtimeEnvYAML"]).get("env_vars") or {}
        bad = [k for k in env_vars if CREDENTIAL_NAME.search(k)]
        assert not bad, f"{f}: credentials in runtimeEnvYAML: {bad}"


def test_every_container_image_is_set():
    n = 0
    for where, pod in pod_specs():
        for c in containers(pod):
            n += 1
            assert isinstance(c.get("image"), str) and c["image"].strip(), f"{where}:{c['name']}"
            assert not c["image"].endswith(":latest"), f"{where}: pin the tag"
    assert n >= 8


def test_core_kinds_validate_against_kubernetes_schemas():
    import kubernetes_validate as kv

    checked = 0
    for _f, d in k8s_docs():
        if d["apiVersion"].startswith("ray.io"):
            continue
        kv.validate(d, K8S_VERSION, strict=True)
        checked += 1
    # KubeRay kinds have no bundled schema; their pod templates are plain PodTemplateSpecs
    for where, pod in pod_specs():
        if "Ray" in where:
            kv.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                         "spec": pod}, K8S_VERSION, strict=True)
            checked += 1
    assert checked >= 15


def test_schema_validation_catches_a_typo():
    import kubernetes_validate as kv

    (_, dep), = [(f, d) for f, d in docs_of("Deployment") if d["metadata"]["name"] == "mlflow"]
    bad = json.loads(json.dumps(dep))
    bad["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)


# --------------------------------------------------------------------------- launcher


def test_cluster_launcher_config():
    cfg = yaml.safe_load(LAUNCHER.read_text())
    for key in ("cluster_name", "max_workers", "idle_timeout_minutes", "provider", "auth",
                "available_node_types", "head_node_type", "file_mounts", "setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in cfg, key
    assert cfg["provider"]["type"] == "aws" and cfg["provider"]["region"]
    assert cfg["auth"]["ssh_user"]
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    for name, t in types.items():
        assert "node_config" in t and "resources" in t, name
        assert t["node_config"].get("InstanceType"), name
        if name != cfg["head_node_type"]:
            assert 0 <= t.get("min_workers", 0) <= t["max_workers"] <= cfg["max_workers"], name
    assert types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values()), "no GPU node type"
    assert any("pip install" in c for c in cfg["setup_commands"])
    head = " ".join(cfg["head_start_ray_commands"])
    assert "ray stop" in head and "ray start --head" in head and "--port=6379" in head
    assert "--dashboard-host=0.0.0.0" in head
    worker = " ".join(cfg["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker
    # the pinned Ray of the nodes is the image's Ray
    assert f"=={dockerfile_arg(DOCKERFILE, 'RAY_VERSION')}" in " ".join(cfg["setup_commands"])
    commands = [c for k, v in cfg.items() if k.endswith("_commands") for c in v]
    for c in commands:
        assert not re.search(r"(PASSWORD|TOKEN|SECRET)\w*=(?![\"']?\$)", c), c


def test_cluster_launcher_matches_rays_schema():
    import jsonschema
    import ray.autoscaler as autoscaler

    schema_path = Path(autoscaler.__file__).parent / "ray-schema.json"
    assert schema_path.is_file(), f"this Ray has no {schema_path.name} to check against"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(yaml.safe_load(LAUNCHER.read_text()), schema)


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("path", sorted((INFRA / "docker").glob("*Dockerfile")), ids=rel)
def test_dockerfiles_run_as_non_root(path):
    ins = dockerfile_instructions(path)
    assert ins[0][0] in ("FROM", "ARG"), path
    assert any(i == "FROM" for i, _ in ins)
    users = [a for i, a in ins if i == "USER"]
    assert users, f"{rel(path)}: no USER line (runs as root)"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{rel(path)}: USER is root"
    assert any(i == "RUN" and "pip install" in a for i, a in ins), rel(path)


def test_xrp_dockerfile_installs_the_package():
    ins = dockerfile_instructions(DOCKERFILE)
    assert [a for i, a in ins if i == "WORKDIR"][-1] == "/app"
    assert any(i == "RUN" and re.search(r"pip install (\S+ )*\.(\s|$)", a) for i, a in ins)
    copied = set()
    for i, a in ins:
        if i == "COPY" and not a.startswith("--from"):
            copied.update(a.split()[:-1])
    for needed in ("pyproject.toml", "xray_platform", "jobs", "serve_configs"):
        assert needed in copied, f"Dockerfile does not copy {needed}"
    for src in copied:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
    # pyproject's readme must be in the build context too
    assert "README.md" in copied
    assert dockerfile_arg(DOCKERFILE, "RAY_VERSION")
