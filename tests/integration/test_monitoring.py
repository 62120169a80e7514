"""Monitoring as operations run it: promtool checks the configuration and proves the alerts
fire, and a real Prometheus server (Debian's) scrapes the running platform."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from services.stack.embedded import free_port
from services.stack.harness import (
    ROOT,
    start_console,
    start_desk,
    start_platform,
    start_reports,
    stop_services,
)

DEPLOY = ROOT / "deploy"
TOOLS = ROOT / ".tools" / "prometheus" / "usr" / "bin"


@pytest.fixture(scope="module")
def promtool() -> Path:
    tool = TOOLS / "promtool"
    if not tool.exists():  # `make test` installs it; a bare pytest run does it here
        subprocess.run(["bash", str(DEPLOY / "prometheus" / "install.sh"), str(TOOLS.parents[1])], check=True)
    return tool


def run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_configurations_and_rules(promtool, tmp_path):
    rules = run(promtool, "check", "rules", DEPLOY / "prometheus" / "rules" / "crm.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = tmp_path / "prometheus.yml"
    config.write_text((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    checked = run(promtool, "check", "config", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Debian builds Prometheus without Kubernetes discovery, so promtool here cannot load the
    # cluster configuration; it must at least keep the same rules and find the annotated pods.
    k8s = yaml.safe_load(
        yaml.safe_load((DEPLOY / "k8s" / "prometheus-config.yaml").read_text())["data"]["prometheus.yml"]
    )
    assert k8s["rule_files"] == yaml.safe_load(config.read_text())["rule_files"]
    relabel = k8s["scrape_configs"][0]["relabel_configs"]
    assert relabel[0]["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    assert relabel[2]["target_label"] == "job"  # crm-<service>, as the alert rules expect


def test_promtool_rule_tests_prove_the_important_alerts_fire(promtool):
    tested = run(promtool, "test", "rules", DEPLOY / "prometheus" / "tests" / "crm.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((DEPLOY / "prometheus" / "rules" / "crm.yml").read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tests = (DEPLOY / "prometheus" / "tests" / "crm.test.yml").read_text()
    assert {a for a in alerts if f"alertname: {a}" not in tests} == set()  # every alert has a test


@pytest.fixture(scope="module")
def platform(stack, prefix, tmp_path_factory):
    started = start_platform(stack, tmp_path_factory.mktemp("faust"), CRM_TOPIC_PREFIX=prefix)
    started["console"] = start_console(stack, started)
    # Every scrape job has its process: a job left pointing elsewhere would count as up.
    started["reports"] = start_reports(stack, started, CRM_REPORTS_REFRESH_SECONDS="60")
    started["desk"] = start_desk(stack, started)
    yield started
    stop_services(started.values())


@pytest.fixture(scope="module")
def prometheus(promtool, platform, tmp_path_factory):
    """A real Prometheus scraping every process each second, with the platform's rules."""
    work = tmp_path_factory.mktemp("prometheus")
    shutil.copytree(DEPLOY / "prometheus" / "rules", work / "rules")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(work / "rules" / "*.yml")]
    port = free_port()
    for job in config["scrape_configs"]:
        name = job["job_name"].removeprefix("crm-")
        target = platform[name].url.removeprefix("http://") if name in platform else f"127.0.0.1:{port}"
        job["static_configs"] = [{"targets": [target]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (work / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            TOOLS / "prometheus",
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (work / "prometheus.log").read_text()[
            -2000:
        ]
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(10)
    log.close()


def query(url: str, expr: str) -> list[dict]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def eventually(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "never became true"
        time.sleep(0.5)


def test_a_real_prometheus_scrapes_every_process_and_finds_the_key_series(platform, prometheus):
    # Some traffic, so request and pipeline series exist.
    profiles = platform["profiles"]
    customer = profiles.post("/customers", json={"channel": "web", "name": "Mon Itor"}).json()["customer_id"]
    platform["orders"].post(
        "/orders",
        json={
            "customer_id": customer,
            "currency": "CNY",
            "items": [{"sku": "s-1", "category": "c", "brand": "b", "qty": 1, "unit_price_cents": 100}],
        },
    )
    up = eventually(
        lambda: (
            (found := query(prometheus, 'up{job=~"crm-.*"} == 1')) and len(found) == len(platform) and found
        )
    )
    assert {r["metric"]["job"] for r in up} == {f"crm-{name}" for name in platform}

    key_series = {
        "crm_http_requests_total": {"crm-orders", "crm-profiles"},
        "crm_http_request_duration_seconds_bucket": {"crm-orders", "crm-profiles"},
        "crm_outbox_pending_rows": {"crm-orders", "crm-complaints", "crm-loyalty", "crm-profiles"},
        "crm_events_published_total": {"crm-orders", "crm-profiles"},
        "crm_scoring_events_processed_total": {"crm-scoring"},
        "crm_scoring_freshness_seconds_bucket": {"crm-scoring"},
        "crm_population_job_duration_seconds": {"crm-scoring"},
        "crm_profiles": {"crm-scoring"},
    }
    for name, jobs in key_series.items():
        found = eventually(
            lambda name=name, jobs=jobs: {r["metric"]["job"] for r in query(prometheus, name)} >= jobs or None
        )
        assert found, name

    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {g["name"] for g in rules} == {"crm-availability", "crm-pipeline", "crm-business"}
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
    firing = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    assert not [a for a in firing if a["labels"]["alertname"] == "CrmServiceDown"]


def test_every_dashboard_query_is_valid_promql(prometheus):
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "crm-platform.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    for expr in exprs:
        query(prometheus, expr)  # a parse error is a failed query
