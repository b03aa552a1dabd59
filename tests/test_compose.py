"""docker-compose.yml agrees with the code's defaults (ports, topics, mounts, settings)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streams.contracts.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _host_port(service: str, container_port: int) -> int:
    for mapping in SERVICES[service]["ports"]:
        host, container = str(mapping).split(":")
        if int(container) == container_port:
            return int(host)
    raise AssertionError(f"{service} does not publish {container_port}")


def test_services_present():
    assert {"kafka", "kafka-init", "influxdb", "grafana", "worker", "worker-gpu"} <= set(SERVICES)
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper


def test_host_ports_match_the_code_defaults():
    defaults = Settings()
    assert defaults.kafka.broker == f"kafka://localhost:{_host_port('kafka', 9092)}"
    assert "EXTERNAL://localhost:9092" in SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert defaults.influx.url == f"http://localhost:{_host_port('influxdb', 8086)}"
    assert _host_port("grafana", 3000) == 3000


def test_topics_created_by_compose_are_the_default_topics():
    script = SERVICES["kafka-init"]["command"][0]
    t = Settings().topics
    for name in (t.news, t.social, t.scores, t.dead_letter, t.mentions, t.alerts):
        assert name in script


def test_influx_org_bucket_and_dbrp_match_defaults():
    env = SERVICES["influxdb"]["environment"]
    defaults = Settings().influx
    assert env["DOCKER_INFLUXDB_INIT_ORG"] == defaults.org
    assert env["DOCKER_INFLUXDB_INIT_BUCKET"] == defaults.bucket
    dbrp = (ROOT / "scripts/influxdb-init/10-dbrp.sh").read_text()
    assert f"--db {defaults.db}" in dbrp


def test_worker_environment_is_valid_settings(monkeypatch):
    for key in list(os.environ):
        if key.startswith("FINSENTRY_"):
            monkeypatch.delenv(key)
    for name, value in SERVICES["worker"]["environment"].items():
        assert name.startswith("FINSENTRY_")
        default = re.fullmatch(r"\$\{\w+:-(.*)\}", str(value))  # ${VAR:-default}: what compose uses when unset
        monkeypatch.setenv(name, default.group(1) if default else "x-token" if "${" in str(value) else str(value))
    s = Settings()
    assert s.kafka.bootstrap_servers == ["kafka:19092"]
    assert s.topics.model_dump(exclude={"partitions"}) == \
        Settings.model_fields["topics"].default.model_dump(exclude={"partitions"})
    assert s.topics.partitions == 3  # the table's partitions follow the compose topics
    assert s.alerts.webhook_url is None  # unset webhook file: no webhook
    assert str(s.alerts.rules_file) == "/etc/finsentry/alert_rules.yaml"
    assert str(s.model_dir) == "/models/current"


def test_mounts_point_at_files_in_the_repo():
    for service in ("grafana", "influxdb", "worker", "prometheus"):
        for volume in SERVICES[service]["volumes"]:
            source = re.sub(r"^\$\{\w+:-([^}]*)\}", r"\1", volume).split(":")[0]  # ${VAR:-default}: the default
            if source.startswith("./") and not source.startswith("./artifacts"):  # artifacts: built by the user
                assert (ROOT / source).exists(), f"{service} mounts missing {source}"
    assert any(v.startswith("./dashboards/provisioning:") for v in SERVICES["grafana"]["volumes"])


def test_prometheus_scrapes_every_worker_on_its_web_port():
    config = yaml.safe_load((ROOT / "dashboards" / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    port = SERVICES["worker"]["environment"]["FINSENTRY_WEB_PORT"]
    assert job["metrics_path"] == "/metrics" and targets == {f"worker:{port}", f"worker-gpu:{port}"}
    assert SERVICES["worker"]["environment"]["FINSENTRY_WEB_BIND"] == "0.0.0.0"


def test_gpu_profile_reserves_an_nvidia_device():
    gpu = SERVICES["worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["args"]["ORT_EXTRA"] == "gpu"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


def test_no_secret_values_in_compose():
    text = (ROOT / "docker-compose.yml").read_text()
    for var in ("FINSENTRY_INFLUX_TOKEN", "FINSENTRY_INFLUX_ADMIN_PASSWORD", "FINSENTRY_GRAFANA_ADMIN_PASSWORD"):
        assert f"${{{var}" in text


@pytest.mark.skipif(not (shutil.which("docker-compose") or shutil.which("docker")), reason="no compose client")
def test_compose_client_accepts_the_file(tmp_path):
    env = {**os.environ, "FINSENTRY_INFLUX_TOKEN": "t", "FINSENTRY_INFLUX_ADMIN_PASSWORD": "p",
           "FINSENTRY_GRAFANA_ADMIN_PASSWORD": "g"}
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cmd in candidates:
        probe = subprocess.run(cmd + ["version"], capture_output=True, text=True)
        if probe.returncode != 0:
            continue
        result = subprocess.run(cmd + ["-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                                capture_output=True, text=True, env=env, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        return
    pytest.skip("compose client present but not usable")
