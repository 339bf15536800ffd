"""Deployment files validated offline, against real schemas, plus the cross-checks no schema can make.

- infra/k8s: every core object against the Kubernetes JSON schemas bundled in ``kubernetes-validate`` (strict: an
  unknown field is an error, as it would be silently dropped by the API server), for the oldest and newest
  Kubernetes we target; KEDA objects against schemas derived from KEDA's CRDs (tests/unit/data/deploy/README.md).
- docker-compose.yml against the compose-spec JSON schema (vendored); the real ``docker-compose config`` runs in
  tests/integration/test_compose_config.py.
- infra/grafana: every PromQL expression parses and uses only the metrics yoloq exports.
- Cross-checks: commands that exist, no literal secrets, only known YOLOQ_* settings, GPU reservations, Redis AOF,
  hardened pods, selectors that match, KEDA scaling on every tier and each served alias (`yoloq replica` pods: slim,
  ready when warm, time to drain, triggers on their alias's route), images built from the Dockerfiles here.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml

from infra.settings import PREFIX, Settings
from routing.tiers import TIERS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
DOCKER = ROOT / "infra" / "docker"
DATA = Path(__file__).parent / "data" / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "infra" / "grafana" / "yoloq-dashboard.json"

# Oldest Kubernetes the manifests support, and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
# The `yoloq` subcommands deployments may run, with the options they may pass (the CLI contract of issue #6).
COMMANDS: dict[str, set[str]] = {
    "worker": {"--gpu"},
    "supervisor": {"--dry-run"},
    "beat": set(),
    "flower": {"--address", "--port"},
    "api": {"--host", "--port"},
    "autoscaler": set(),
    "notifier": {"--interval", "--timeout", "--lease"},
    "replica": {"--max-batch", "--max-wait-ms", "--backend", "--ready-file"},
}
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|AUTH", re.IGNORECASE)
PLACEHOLDER = "CHANGE-ME"
# Image name → the Dockerfile that builds it.
IMAGES = {"yoloq-slim": "Dockerfile.infer", "yoloq-gpu": "Dockerfile.gpu", "yoloq-cpu": "Dockerfile.worker"}
METRICS = {
    "yoloq_queue_depth": "gauge",
    "yoloq_queue_oldest_wait_seconds": "gauge",
    "yoloq_time_to_start_seconds": "histogram",
    "yoloq_preemptions_total": "counter",
    "yoloq_checkpoint_upload_seconds": "histogram",
    "yoloq_checkpoint_upload_bytes_total": "counter",
    "yoloq_gpu_memory_used_bytes": "gauge",
    "yoloq_gpu_memory_total_bytes": "gauge",
    "yoloq_gpu_utilization_ratio": "gauge",
    "yoloq_workers": "gauge",
    "yoloq_autoscaler_decisions_total": "counter",
    "yoloq_sla_compliance_ratio": "gauge",
}
QUANTITY = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")


# ---------------------------------------------------------------- loading


@functools.cache
def load_all(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of a file (empty documents dropped); cached: tests that change one deep-copy it."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(path.read_text(), Loader=loader) if doc]


def kustomization() -> dict[str, Any]:
    return load_all(K8S / "kustomization.yaml")[0]


def k8s_docs() -> list[dict[str, Any]]:
    """The objects `kubectl apply -k infra/k8s` creates, in kustomization order."""
    return [doc for name in kustomization()["resources"] for doc in load_all(K8S / name)]


def of_kind(kind: str, docs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [doc for doc in (k8s_docs() if docs is None else docs) if doc["kind"] == kind]


def workloads() -> list[dict[str, Any]]:
    return of_kind("Deployment") + of_kind("StatefulSet")


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in workloads():
        for container in doc["spec"]["template"]["spec"]["containers"]:
            yield doc["metadata"]["name"], container


def yoloq_containers() -> list[tuple[str, dict[str, Any]]]:
    return [(name, c) for name, c in containers() if c["image"].split(":")[0] in IMAGES]


def compose() -> dict[str, Any]:
    return load_all(COMPOSE)[0]


def compose_yoloq_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if svc.get("image", "").split(":")[0] in IMAGES}


def kube_schema_errors(doc: dict[str, Any], version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path)
        return [f"{doc['kind']}/{doc['metadata']['name']} at {where}: {err.message}"]
    return []


def keda_schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads((DATA / f"keda-{doc['kind'].lower()}.schema.json").read_text())
    errors = jsonschema.Draft202012Validator(schema).iter_errors(doc)
    return [f"{doc['kind']}/{doc['metadata']['name']} at {'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in errors]  # fmt: skip


def compose_schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    errors = jsonschema.Draft202012Validator(schema).iter_errors(doc)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


# ---------------------------------------------------------------- schemas


def test_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    # secret.yaml is the operator's filled-in copy of secret.yaml.example (git-ignored), never a resource here.
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.yaml"}
    assert listed == present
    assert not [doc for doc in k8s_docs() if doc["kind"] == "Secret"], "secrets are created out of band"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_objects_match_the_kubernetes_schema(version: str) -> None:
    core = [doc for doc in k8s_docs() if not doc["apiVersion"].startswith("keda.sh/")]
    example = load_all(K8S / "secret.yaml.example")
    errors = [e for doc in core + example for e in kube_schema_errors(doc, version)]
    assert errors == []


def test_keda_objects_match_the_crd_schema() -> None:
    keda = [doc for doc in k8s_docs() if doc["apiVersion"].startswith("keda.sh/")]
    assert {doc["kind"] for doc in keda} == {"ScaledObject", "TriggerAuthentication"}
    assert [e for doc in keda for e in keda_schema_errors(doc)] == []


def test_compose_matches_the_compose_spec() -> None:
    assert compose_schema_errors(compose()) == []


# A broken file of each kind must be caught: the validators above are not vacuous.
def _unknown_container_field(docs: list[dict[str, Any]]) -> list[str]:
    deployment = of_kind("Deployment", docs)[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    return kube_schema_errors(deployment, K8S_VERSIONS[0])


def _numeric_keda_metadata(docs: list[dict[str, Any]]) -> list[str]:
    scaled = of_kind("ScaledObject", docs)[0]
    scaled["spec"]["triggers"][0]["metadata"]["targetValue"] = 1
    return keda_schema_errors(scaled)


def _misspelt_keda_field(docs: list[dict[str, Any]]) -> list[str]:
    scaled = of_kind("ScaledObject", docs)[0]
    scaled["spec"]["pollingInteval"] = scaled["spec"].pop("pollingInterval")
    return keda_schema_errors(scaled)


def _bad_compose(docs: list[dict[str, Any]]) -> list[str]:
    broken = copy.deepcopy(compose())
    broken["services"]["redis"]["stop_grace"] = "2m"
    return compose_schema_errors(broken)


@pytest.mark.parametrize(
    "breakage", [_unknown_container_field, _numeric_keda_metadata, _misspelt_keda_field, _bad_compose]
)
def test_a_broken_file_is_rejected(breakage: Any) -> None:
    assert breakage(copy.deepcopy(k8s_docs())) != []


# ---------------------------------------------------------------- commands and settings


def _subcommand(argv: list[str]) -> tuple[str, list[str]]:
    """`yoloq` subcommand and its arguments; images' ENTRYPOINT is `tini -- yoloq`, so argv is the CLI arguments."""
    assert argv and argv[0] in COMMANDS, f"{argv} does not run a known yoloq command ({sorted(COMMANDS)})"
    return argv[0], argv[1:]


def _check_cli(argv: list[str]) -> None:
    name, args = _subcommand(argv)
    options = {a.split("=")[0] for a in args if a.startswith("-")}
    assert options <= COMMANDS[name], f"yoloq {name}: unknown options {options - COMMANDS[name]}"
    from yoloq.cli.main import cli

    command = cli.get_command(click.Context(cli), name)
    assert command is not None, f"yoloq {name} is not a command of the real CLI"
    try:  # the real parser must accept the arguments
        command.make_context(name, list(args))
    except click.ClickException as err:
        pytest.fail(f"yoloq {' '.join(argv)}: {err.format_message()}")


def test_every_container_runs_an_existing_yoloq_command() -> None:
    for _, container in yoloq_containers():
        assert "command" not in container, "keep the image's `tini -- yoloq` entrypoint; pass args only"
        _check_cli(container["args"])
    for service in compose_yoloq_services().values():
        _check_cli(service["command"])


def _env_names(container: dict[str, Any]) -> set[str]:
    return {var["name"] for var in container.get("env", [])}


def test_only_known_yoloq_settings_are_set() -> None:
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    names = {name for _, c in yoloq_containers() for name in _env_names(c)}
    names |= set(of_kind("ConfigMap")[0]["data"])
    names |= {name for svc in compose_yoloq_services().values() for name in svc["environment"]}
    assert {n for n in names if n.startswith(PREFIX)} - known == set()
    # Service links would inject YOLOQ_REDIS_PORT, YOLOQ_API_SERVICE_HOST, ... and yoloq refuses unknown keys.
    assert all(doc["spec"]["template"]["spec"].get("enableServiceLinks") is False for doc in workloads())


def test_every_yoloq_container_reaches_redis_and_s3() -> None:
    for name, container in yoloq_containers():
        assert {"YOLOQ_REDIS_URL", "YOLOQ_S3_ACCESS_KEY", "YOLOQ_S3_SECRET_KEY"} <= _env_names(container), name
        assert {"configMapRef": {"name": "yoloq-config"}} in container["envFrom"], name
    for name, service in compose_yoloq_services().items():
        assert {"YOLOQ_REDIS_URL", "YOLOQ_S3_ENDPOINT", "YOLOQ_S3_ACCESS_KEY"} <= set(service["environment"]), name


# ---------------------------------------------------------------- secrets


def _secret_refs() -> set[str]:
    """Keys of yoloq-secrets that the manifests read."""
    keys = {
        var["valueFrom"]["secretKeyRef"]["key"]
        for _, c in containers()
        for var in c.get("env", [])
        if "secretKeyRef" in var.get("valueFrom", {})
    }
    keys |= {ref["key"] for auth in of_kind("TriggerAuthentication") for ref in auth["spec"]["secretTargetRef"]}
    return keys


def _url_password(value: str) -> str | None:
    """The password of a URL with credentials (urlsplit cannot be used: `${X:?message}` holds a `?`)."""
    match = re.match(r"^[a-z][a-z0-9+.-]*://[^:/@]*:(.*)@[^@/]+(/.*)?$", value)
    return match.group(1) if match else None


def test_kubernetes_secrets_only_come_from_the_secret() -> None:
    for name, container in containers():
        for var in container.get("env", []):
            if SECRETISH.search(var["name"]):
                assert var["valueFrom"]["secretKeyRef"]["name"] == "yoloq-secrets", (name, var["name"])
            assert _url_password(var.get("value", "")) in (None, "$(REDIS_PASSWORD)"), (name, var["name"])
    assert not [key for key in of_kind("ConfigMap")[0]["data"] if SECRETISH.search(key)]


def test_the_secret_example_holds_placeholders_for_every_key_used() -> None:
    (example,) = load_all(K8S / "secret.yaml.example")
    assert set(example["stringData"].values()) == {PLACEHOLDER}
    assert set(example["stringData"]) == _secret_refs()


def _interpolation_only(value: str) -> bool:
    return re.fullmatch(r"\$\{[A-Z0-9_]+(:?[?-][^}]*)?\}", value) is not None


def test_compose_secrets_only_come_from_the_environment() -> None:
    for name, service in compose()["services"].items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if SECRETISH.search(key):
                assert _interpolation_only(str(value)), (name, key)
            password = _url_password(str(value))
            assert password is None or _interpolation_only(password), (name, key)
    redis_cmd = compose()["services"]["redis"]["command"]
    assert _interpolation_only(redis_cmd[redis_cmd.index("--requirepass") + 1])


# ---------------------------------------------------------------- GPU workers, Redis, KEDA


def test_kubernetes_gpu_workers_hold_one_gpu_and_time_to_checkpoint() -> None:
    gpu = [(name, c) for name, c in yoloq_containers() if c["args"][0] == "worker"]
    assert gpu, "no GPU worker Deployment"
    for name, container in gpu:
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1, name
        assert container["args"] == ["worker", "--gpu", "0"], "the device plugin shows the pod's GPU as index 0"
    for doc in of_kind("Deployment"):
        if doc["metadata"]["name"] in {name for name, _ in gpu}:
            assert doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 120
            assert "replicas" not in doc["spec"], "KEDA owns the replica count"


def test_compose_gpu_workers_reserve_their_gpu() -> None:
    for name, service in compose_yoloq_services().items():
        if service["command"][0] != "worker":
            continue
        if service["image"].startswith("yoloq-gpu"):
            (device,) = service["deploy"]["resources"]["reservations"]["devices"]
            assert service["profiles"] == ["gpu"], name
            assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
            assert len(device["device_ids"]) == 1 and service["command"] == ["worker", "--gpu", "0"], name
            assert "YOLOQ_GPUS" not in service["environment"], name
        else:
            assert "YOLOQ_GPUS" in service["environment"], f"{name}: a CPU worker simulates its device"
        assert service["stop_grace_period"] == "2m", name


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    (redis,) = of_kind("StatefulSet")
    spec = redis["spec"]
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    mounts = spec["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": spec["volumeClaimTemplates"][0]["metadata"]["name"], "mountPath": "/data"} in mounts
    command = compose()["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in compose()["services"]["redis"]["volumes"])


def _scaled_object(name: str) -> dict[str, Any]:
    (scaled,) = [s for s in of_kind("ScaledObject") if s["metadata"]["name"] == name]
    return scaled


def test_keda_scales_the_gpu_workers_on_every_tier_through_the_api() -> None:
    scaled = _scaled_object("yoloq-gpu-worker")
    (auth,) = of_kind("TriggerAuthentication")
    (api,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "yoloq-api"]
    target = scaled["spec"]["scaleTargetRef"]["name"]
    assert target in {d["metadata"]["name"] for d in of_kind("Deployment")}
    assert {t["metadata"]["valueLocation"] for t in scaled["spec"]["triggers"]} == {f"tiers.{t}.depth" for t in TIERS}
    for trigger in scaled["spec"]["triggers"]:
        meta = trigger["metadata"]
        url = urlsplit(meta["url"])
        assert trigger["type"] == "metrics-api" and meta["authMode"] == "bearer"
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        assert url.hostname == f"yoloq-api.{kustomization()['namespace']}.svc" and url.path == "/api/v1/queues"
        assert url.port == api["spec"]["ports"][0]["port"]
        assert float(meta["targetValue"]) > 0
    assert [ref["parameter"] for ref in auth["spec"]["secretTargetRef"]] == ["token"]


def test_one_scaled_object_per_deployment_and_no_replica_count_to_fight_over() -> None:
    targets = [s["spec"]["scaleTargetRef"]["name"] for s in of_kind("ScaledObject")]
    assert len(targets) == len(set(targets)), "KEDA refuses a second ScaledObject for one Deployment"
    for doc in of_kind("Deployment"):
        if doc["metadata"]["name"] in targets:
            assert "replicas" not in doc["spec"], f"{doc['metadata']['name']}: KEDA owns the replica count"


def _serving() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(Deployment, its container) of every `yoloq replica` Deployment."""
    return [(doc, c) for doc in of_kind("Deployment") for c in doc["spec"]["template"]["spec"]["containers"]
            if c["image"].split(":")[0] in IMAGES and c["args"][0] == "replica"]  # fmt: skip


def test_serving_replicas_are_slim_pods_that_drain_and_are_ready_when_warm() -> None:
    assert _serving(), "no `yoloq replica` Deployment"
    for doc, container in _serving():
        name = doc["metadata"]["name"]
        assert container["image"].startswith("yoloq-slim:"), name
        assert _arg(container, "--backend") == "onnx", f"{name}: the slim image has ONNX Runtime, not torch"
        ready_file = _arg(container, "--ready-file")
        assert container["readinessProbe"]["exec"]["command"] == ["test", "-f", ready_file], name
        assert ready_file.startswith(tuple(m["mountPath"] + "/" for m in container["volumeMounts"])), name
        assert "livenessProbe" not in container and "ports" not in container, name
        assert doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30, f"{name}: time to drain"
        assert doc["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, f"{name}: warm up before stopping"


def test_keda_scales_each_serving_deployment_on_its_alias_through_the_api() -> None:
    from tasks.model_records import Deployment, alias_ref

    (auth,) = of_kind("TriggerAuthentication")
    (api,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "yoloq-api"]
    for doc, container in _serving():
        scaled = _scaled_object(doc["metadata"]["name"])
        alias = container["args"][1]
        assert alias == alias_ref(alias), "the canonical name@label, as the API's routes and KEDA's URL use it"
        assert scaled["spec"]["scaleTargetRef"]["name"] == doc["metadata"]["name"]
        assert scaled["spec"]["minReplicaCount"] >= 0 and scaled["spec"]["maxReplicaCount"] >= 1
        triggers = {t["name"]: t for t in scaled["spec"]["triggers"]}
        assert {n: t["metadata"]["valueLocation"] for n, t in triggers.items()} == {"queued": "scale.queued",
                                                                                    "p99": "scale.p99_ms"}  # fmt: skip
        for trigger in triggers.values():
            meta = trigger["metadata"]
            url = urlsplit(meta["url"])
            assert trigger["type"] == "metrics-api" and meta["authMode"] == "bearer"
            assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
            assert url.hostname == f"yoloq-api.{kustomization()['namespace']}.svc"
            assert url.port == api["spec"]["ports"][0]["port"] and url.path == f"/api/v1/deployments/{alias}"
        # queued requests per replica (one batch each) wakes it from zero; p99 against the deployments' target
        assert triggers["queued"]["metricType"] == "AverageValue"
        assert float(triggers["queued"]["metadata"]["targetValue"]) == float(_arg(container, "--max-batch"))
        assert float(triggers["queued"]["metadata"].get("activationTargetValue", 0)) == 0
        assert triggers["p99"]["metricType"] == "Value"
        default_p99 = Deployment.model_fields["target_p99_ms"].default
        assert float(triggers["p99"]["metadata"]["targetValue"]) == default_p99


def _arg(container: dict[str, Any], option: str) -> str:
    args: list[str] = container["args"]
    return args[args.index(option) + 1]


# ---------------------------------------------------------------- pod hardening and wiring


def test_pods_run_non_root_without_privileges_and_with_resources() -> None:
    for doc in workloads():
        pod = doc["spec"]["template"]["spec"]
        name = doc["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["capabilities"] == {"drop": ["ALL"]}, name
            resources = container["resources"]
            assert "memory" in resources["limits"] and {"cpu", "memory"} <= set(resources["requests"]), name
            quantities = [*resources["requests"].values(), *resources["limits"].values()]
            assert all(QUANTITY.match(str(q)) for q in quantities), (name, quantities)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_selectors_match_pods_and_ports_exist() -> None:
    pods = [(d["spec"]["template"]["metadata"]["labels"], d["spec"]["template"]["spec"]) for d in workloads()]
    for doc in workloads():
        assert _selects(doc["spec"]["selector"]["matchLabels"], doc["spec"]["template"]["metadata"]["labels"])
    for pdb in of_kind("PodDisruptionBudget"):
        assert any(_selects(pdb["spec"]["selector"]["matchLabels"], labels) for labels, _ in pods), pdb
    for service in of_kind("Service"):
        (spec,) = [s for labels, s in pods if _selects(service["spec"]["selector"], labels)]
        ports = {p["name"] for c in spec["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, service["metadata"]["name"]


def test_the_service_monitor_scrapes_the_api_metrics() -> None:
    (monitor,) = load_all(K8S / "monitoring" / "servicemonitor.yaml")
    assert load_all(K8S / "monitoring" / "kustomization.yaml")[0]["resources"] == ["servicemonitor.yaml"]
    (api,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "yoloq-api"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert _selects(monitor["spec"]["selector"]["matchLabels"], api["metadata"]["labels"])
    assert endpoint["port"] in {p["name"] for p in api["spec"]["ports"]} and endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"]["key"] in _secret_refs()


# ---------------------------------------------------------------- images


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", (DOCKER / name).read_text())
    lines = (line.strip() for line in text.splitlines())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and line[0] != "#"]


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_every_image_is_built_by_a_dockerfile_here() -> None:
    used = {c["image"].split(":")[0] for _, c in yoloq_containers()}
    used |= {s["image"].split(":")[0] for s in compose_yoloq_services().values()}
    assert used <= set(IMAGES)
    for service in compose_yoloq_services().values():
        assert Path(service["build"]["dockerfile"]).name == IMAGES[service["image"].split(":")[0]]


@pytest.mark.parametrize("name", sorted(set(IMAGES.values())))
def test_dockerfiles_install_yoloq_as_a_non_root_entrypoint(name: str) -> None:
    steps = dockerfile(name)
    assert steps[-1] == ("ENTRYPOINT", '["tini", "--", "yoloq"]')
    assert [args for op, args in steps if op == "USER"] == ["10001:10001"]
    for op, args in steps:
        if op == "COPY":
            assert all((ROOT / src).exists() for src in args.split()[:-1]), args
    installs = re.findall(r'pip install "?\.\[([^\]]+)\]', " ".join(args for op, args in steps if op == "RUN"))
    extras = {e.strip() for group in installs for e in group.split(",")} - {"${EXTRAS}"}
    assert installs and extras <= set(_extras()), extras


def test_the_gpu_image_is_ngc_pytorch_with_the_train_stack_minus_torch() -> None:
    steps = dockerfile("Dockerfile.gpu")
    base = dict(steps)["ARG"]
    assert base.startswith("BASE=nvcr.io/nvidia/pytorch:") and base.endswith("-py3")
    run = " ".join(args for op, args in steps if op == "RUN")
    for requirement in _extras()["train"]:
        if not requirement.startswith(("torch", "torchvision")):
            assert f'"{requirement}"' in run, f"{requirement} of the train extra is missing from Dockerfile.gpu"
    assert ("ARG", "EXTRAS=infer") in dockerfile("Dockerfile.infer"), "the slim image installs no torch"


# ---------------------------------------------------------------- Grafana


def _queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def _metric_base(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and METRICS.get(name.removesuffix(suffix)) == "histogram":
            return name.removesuffix(suffix)
    return name


def test_dashboard_queries_parse_and_use_the_exported_metrics() -> None:
    used: set[str] = set()
    for expr in _queries():
        concrete = expr.replace("$__rate_interval", "5m").replace("$tier", "critical").replace("$host", "h")
        promql_parser.parse(concrete)  # raises on a syntax error
        used |= {_metric_base(m) for m in re.findall(r"\byoloq_[a-z_]+", concrete)}
    assert used == set(METRICS)


def test_dashboard_panels_are_unique_and_use_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "tier", "host"} <= variables
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
