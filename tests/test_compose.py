"""The docker-compose stack, validated with what runs here (no Docker engine)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.prometheus import binary

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_compose_file_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)], capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_are_pinned_and_ports_are_loopback_only() -> None:
    services = _yaml(COMPOSE)["services"]
    assert {"app", "nginx", "loadgen", "otel-collector", "prometheus", "tempo", "jaeger",
            "grafana"} <= set(services)  # fmt: skip
    for name, service in services.items():
        image = service.get("image")
        if image is not None:
            assert re.search(r":v?\d+\.\d+(\.\d+)?", image), f"{name}: {image} is not pinned"
            assert not image.endswith(":latest")
        else:
            assert "build" in service, name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    dockerfile = (ROOT / "deploy/app/Dockerfile").read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-", dockerfile, re.MULTILINE)
    assert "secret" not in COMPOSE.read_text().lower()


def test_mounted_files_exist() -> None:
    for name, service in _yaml(COMPOSE)["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_config_passes_promtool() -> None:
    config = str(ROOT / "deploy/prometheus.yml")
    result = subprocess.run(
        [binary("promtool"), "check", "config", config], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_collector_pipelines_reference_defined_components() -> None:
    config = _yaml(ROOT / "deploy/otel-collector.yaml")
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{component} is not defined in {kind}"
    for protocol in config["receivers"]["otlp"]["protocols"].values():
        assert protocol["endpoint"].startswith("0.0.0.0:")  # inside compose, not localhost
    metrics = config["service"]["pipelines"]["metrics"]
    assert "memory_limiter" in metrics["processors"] and "batch" in metrics["processors"]
    assert metrics["processors"][0] == "memory_limiter"
    assert config["exporters"]["otlphttp/prometheus"]["endpoint"].endswith("/api/v1/otlp")


def test_grafana_provisioning_is_consistent() -> None:
    sources = _yaml(ROOT / "deploy/grafana/provisioning/datasources/datasources.yaml")
    uids = {d["uid"]: d["type"] for d in sources["datasources"]}
    assert set(uids.values()) == {"prometheus", "tempo", "jaeger"}
    prometheus = next(d for d in sources["datasources"] if d["type"] == "prometheus")
    for destination in prometheus["jsonData"]["exemplarTraceIdDestinations"]:
        assert uids[destination["datasourceUid"]] == "tempo"
    providers = _yaml(ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yaml")
    grafana = _yaml(COMPOSE)["services"]["grafana"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    path = providers["providers"][0]["options"]["path"]
    assert mounted[path] == "./dashboards"
    assert (ROOT / "dashboards/flowtrace.json").exists()


def test_nginx_stamps_request_start() -> None:
    config = (ROOT / "deploy/nginx/nginx.conf").read_text()
    assert 'proxy_set_header X-Request-Start "t=${msec}";' in config
