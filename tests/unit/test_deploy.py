"""The deployment files agree with the code: every service, port, probe path, command and
environment variable in deploy/ is one the code really has (no Docker engine here, so the
files are parsed, not run)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from services.common.settings import SERVICE_NAMES, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
FIELDS = set(Settings.model_fields)
DEFAULTS = Settings()


def setting_of(variable: str) -> str:
    assert variable.startswith("CRM_"), variable
    name = variable.removeprefix("CRM_").lower()
    assert name in FIELDS, f"{variable} is not a setting (services/common/settings.py)"
    return name


def routes_of(service: str) -> set[str]:
    if service == "scoring":  # faust web pages
        source = (ROOT / "services" / "scoring" / "api.py").read_text()
        return set(re.findall(r'@app\.page\("([^"]+)"\)', source))
    app = importlib.import_module(f"services.{service}.main").create_app(Settings())
    return set(app.openapi()["paths"])


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict]:
    docs = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and doc["kind"] != "Kustomization":
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def test_compose_runs_every_service_on_its_port_with_real_settings(compose):
    services = compose["services"]
    assert {"kafka", "mongo", "mongo-init", "prometheus", "grafana", *SERVICE_NAMES} <= set(services)
    for name in SERVICE_NAMES:
        spec = services[name]
        port = DEFAULTS.port_of(name)
        assert spec["command"] == ["python", "-m", f"services.{name}"]
        assert (ROOT / "services" / name / "__main__.py").exists()
        assert spec["ports"] == [f"{port}:{port}"]
        env = spec["environment"]
        assert int(env[f"CRM_{name.upper()}_PORT"]) == port
        assert f"127.0.0.1:{port}/healthz" in " ".join(spec["healthcheck"]["test"])
        assert "/healthz" in routes_of(name)
        for variable in env:
            setting_of(variable)
        for peer in SERVICE_NAMES:
            assert env[f"CRM_{peer.upper()}_URL"].endswith(f":{DEFAULTS.port_of(peer)}")
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert "--replSet" in services["mongo"]["command"]
    assert "rs.initiate" in " ".join(services["mongo-init"]["command"])
    assert services["topics"]["command"] == ["crm", "topics"]
    mounts = " ".join(services["prometheus"]["volumes"])
    assert "./prometheus/rules" in mounts and "./prometheus/prometheus.yml" in mounts
    assert any("dashboards" in v for v in services["grafana"]["volumes"])


def test_the_dockerfile_builds_every_service():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for part in ("requirements.lock", "COPY services", "COPY schemas", "CRM_HOST=0.0.0.0"):
        assert part in dockerfile
    exposed = {int(p) for p in re.search(r"EXPOSE ([\d ]+)", dockerfile).group(1).split()}
    assert exposed == {DEFAULTS.port_of(s) for s in SERVICE_NAMES}


def test_kubernetes_deployments_probe_real_paths_with_config_from_a_configmap_and_keys_from_a_secret(k8s):
    config = k8s[("ConfigMap", "crm-config")]["data"]
    for variable in config:
        setting_of(variable)
    keys_dir = str(Path(config["CRM_API_KEYS_FILE"]).parent)
    for name in SERVICE_NAMES:
        port = DEFAULTS.port_of(name)
        deployment = k8s[("Deployment", f"crm-{name}")]
        pod = deployment["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        assert container["command"] == ["python", "-m", f"services.{name}"]
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        assert {"name": f"CRM_{name.upper()}_PORT", "value": str(port)} in container["env"]
        for variable in container["env"]:
            setting_of(variable["name"])
        assert container["envFrom"] == [{"configMapRef": {"name": "crm-config"}}]
        routes = routes_of(name)
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" in routes
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" in routes
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
        assert mount["mountPath"] == keys_dir
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "api-keys")
        assert volume["secret"]["secretName"] == "crm-api-keys"
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        service = k8s[("Service", f"crm-{name}")]
        assert service["spec"]["ports"][0]["port"] == port
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert config[f"CRM_{name.upper()}_URL"] == f"http://crm-{name}.crm.svc:{port}"
    assert k8s[("Secret", "crm-api-keys")]["stringData"]["api-keys.hashed"]


def test_the_scorer_scales_by_replicas_up_to_the_partition_count(k8s):
    partitions = int(k8s[("ConfigMap", "crm-config")]["data"]["CRM_TOPIC_PARTITIONS"])
    autoscaler = k8s[("HorizontalPodAutoscaler", "crm-scoring")]["spec"]
    assert autoscaler["scaleTargetRef"]["name"] == "crm-scoring"
    assert 1 < autoscaler["minReplicas"] <= autoscaler["maxReplicas"] == partitions
    assert k8s[("Deployment", "crm-scoring")]["spec"]["replicas"] <= partitions


def test_every_manifest_is_in_the_kustomization():
    listed = set(yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {
        "kustomization.yaml",
        "secret.example.yaml",
    }
    assert listed == present


def test_the_metric_table_documents_exactly_the_metrics_the_processes_export():
    for module in (
        "services.common.metrics",
        "services.common.erasure",
        "services.orders.service",
        "services.complaints.service",
        "services.loyalty.service",
        "services.profiles.service",
        "services.common.peers",
        "services.scoring.metrics",
        "services.engagement.service",
        "services.reports.service",
    ):
        importlib.import_module(module)
    exported = {}
    for collector in list(REGISTRY._collector_to_names):
        name = getattr(collector, "_name", "")
        if name.startswith("crm_"):
            kind = collector._type
            exported[name + ("_total" if kind == "counter" else "")] = (kind, tuple(collector._labelnames))
    table = (DEPLOY / "README.md").read_text()
    documented = dict(
        (m.group(1), (m.group(2), tuple(x.strip() for x in m.group(3).split(",") if x.strip() != "-")))
        for m in re.finditer(r"^\| `(crm_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \|", table, re.M)
    )
    assert documented == exported
    for name, (kind, _) in exported.items():  # Prometheus conventions
        assert (kind == "counter") == name.endswith("_total"), name
        if re.search(r"_(duration|age)(_|$)", name):  # words of the name, not "engagement"
            assert name.endswith("_seconds"), name
