"""The shipped deployment examples hold valid corsproxy configs that match their manifests."""

from __future__ import annotations

from pathlib import Path

import yaml

from corsproxy.config import load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"


def test_kubernetes_configmap_holds_a_valid_policy() -> None:
    configmap = yaml.safe_load((K8S / "configmap.yaml").read_text())
    config = parse_config(configmap["data"]["config.yaml"], "configmap.yaml", env={})
    assert config.warnings == ()
    assert config.admin is not None and config.admin.listen.port == 9901
    assert config.listen.port == 8080


def test_kubernetes_deployment_matches_the_config() -> None:
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    proxy = next(c for c in pod["containers"] if c["name"] == "corsproxy")
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert ports == {"http": 8080, "admin": 9901}
    env = {e["name"]: e["value"] for e in proxy["env"]}
    assert env["CORSPROXY_ADMIN_LISTEN"].endswith(":9901")
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    drain = float(env["CORSPROXY_DRAIN_DELAY"]) + float(env["CORSPROXY_SHUTDOWN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > drain
    mount = proxy["volumeMounts"][0]
    assert mount["mountPath"] == "/etc/corsproxy"


def test_compose_example_config_is_valid() -> None:
    config = load_config(ROOT / "examples" / "compose" / "corsproxy.yaml", env={})
    assert config.warnings == ()
    assert str(config.upstream) == "http://127.0.0.1:9000"
