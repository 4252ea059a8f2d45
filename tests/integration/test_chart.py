"""The Helm chart: lint, render, server-side dry run on the real API server, RBAC and CRDs
equal to what the rest of the repository ships, alerts that Prometheus' parser accepts.

ServiceMonitor, PrometheusRule, Certificate and Issuer are kinds of the prometheus-operator and
cert-manager CRDs, which the development API server does not serve: they are checked against
the objects they point at (Service ports, Secret and Service names, the alert file) instead.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from instance_profile_operator.devenv import gotools
from instance_profile_operator.devenv import webhook as devenv_webhook

from ..support.kube import REPO, kubectl

CHART = REPO / "deploy" / "helm" / "instance-profile-operator"
ALERTS = CHART / "files" / "alerts.yaml"
NOT_SERVED_GROUPS = ("monitoring.coreos.com", "cert-manager.io")

EVERY_OPTION: dict[str, Any] = {
    "image": {"repository": "registry.example.com/ipo", "tag": "1.2.3", "pullPolicy": "Always",
              "pullSecrets": ["registry-credentials"]},
    "aws": {"region": "eu-west-1", "endpoints": {"ec2": "https://vpce-0a1b.ec2.eu-west-1.vpce.amazonaws.com",
                                                  "sts": "https://vpce-0c2d.sts.eu-west-1.vpce.amazonaws.com"}},
    "log": {"format": "text"},
    "installScope": "namespace",
    "watchNamespace": "team-a,team-b",
    "reconcile": {"defaultResyncPeriod": 120},
    "policyEnforcement": "Disabled",
    "serviceAccount": {"create": True, "name": "ipo",
                       "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ipo"}},
    "deployment": {
        "replicas": 3, "annotations": {"team": "platform"}, "labels": {"tier": "control"},
        "podAnnotations": {"example.com/scrape": "true"}, "podLabels": {"tier": "control"},
        "nodeSelector": {"kubernetes.io/os": "linux", "node-role": "system"},
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]}]}}},
        "priorityClassName": "system-cluster-critical",
        "extraEnvVars": [{"name": "IPO_WORKERS", "value": "32"}],
        "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    },
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
    "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
    "metrics": {"port": 9090, "service": {"create": True, "type": "ClusterIP"}},
    "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "grafanaDashboard": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                         "annotations": {"grafana_folder": "Operators"}},
    "webhook": {"enabled": True, "failurePolicy": "Fail", "certManager": {"enabled": True}},
}


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory):
    binary = gotools.ensure_built(gotools.HELM)
    home = tmp_path_factory.mktemp("helm")
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(binary), *args], capture_output=True, text=True, env=env, check=check, timeout=120)

    return run


def values_file(directory: Path, values: dict[str, Any]) -> str:
    path = directory / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def render(helm, tmp_path: Path, values: dict[str, Any], namespace: str = "ipo-system") -> list[dict[str, Any]]:
    done = helm("template", "ipo", str(CHART), "--namespace", namespace, "-f", values_file(tmp_path, values))
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [doc for doc in documents if doc["kind"] == kind]
    return found


def container_env(deployment: dict[str, Any]) -> dict[str, str]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"]}


def test_lint_strict_with_defaults_and_every_option(helm, tmp_path):
    assert helm("lint", "--strict", str(CHART)).returncode == 0
    done = helm("lint", "--strict", str(CHART), "-f", values_file(tmp_path, EVERY_OPTION))
    assert "0 chart(s) failed" in done.stdout


def test_default_install_runs_two_replicas_with_leader_election(helm, tmp_path):
    documents = render(helm, tmp_path, {})
    assert sorted(doc["kind"] for doc in documents) == [
        "ClusterRole", "ClusterRoleBinding", "Deployment", "PodDisruptionBudget", "Role", "RoleBinding",
        "Service", "ServiceAccount"]
    deployment = one(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert container_env(deployment) == {
        "IPO_ALL_NAMESPACES": "true", "IPO_RESYNC_SECONDS": "60", "IPO_LOG_FORMAT": "json",
        "IPO_POLICY_ENFORCEMENT": "Enforce", "IPO_LEADER_ELECT": "true", "IPO_LEADER_ELECTION_NAMESPACE": "ipo-system",
        "IPO_LIVENESS_ENDPOINT": "http://0.0.0.0:8080/healthz", "IPO_METRICS_ADDRESS": "0.0.0.0:8081"}
    assert one(documents, "Role")["metadata"]["namespace"] == "ipo-system"


def test_every_option_reaches_the_deployment(helm, tmp_path):
    documents = render(helm, tmp_path, EVERY_OPTION)
    deployment = one(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = container_env(deployment)
    assert env["IPO_NAMESPACES"] == "team-a,team-b" and "IPO_ALL_NAMESPACES" not in env
    assert env["IPO_REGION"] == "eu-west-1" and "AWS_ENDPOINT_URL" not in env  # which reaches every service
    assert (env["AWS_ENDPOINT_URL_EC2"], env["AWS_ENDPOINT_URL_STS"]) == (
        "https://vpce-0a1b.ec2.eu-west-1.vpce.amazonaws.com", "https://vpce-0c2d.sts.eu-west-1.vpce.amazonaws.com")
    assert (env["IPO_RESYNC_SECONDS"], env["IPO_LOG_FORMAT"], env["IPO_POLICY_ENFORCEMENT"]) == ("120", "text", "Disabled")
    assert env["IPO_METRICS_ADDRESS"] == "0.0.0.0:9090" and env["IPO_WORKERS"] == "32"
    assert env["IPO_WEBHOOK_ADDRESS"] == "0.0.0.0:9443"
    assert container["image"] == "registry.example.com/ipo:1.2.3" and container["imagePullPolicy"] == "Always"
    assert container["resources"] == EVERY_OPTION["resources"]
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod["serviceAccountName"] == "ipo"
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert pod[key] == EVERY_OPTION["deployment"][key]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["metadata"]["annotations"] == {"team": "platform"}
    assert deployment["spec"]["template"]["metadata"]["labels"]["tier"] == "control"
    assert {"name": "scratch", "mountPath": "/scratch"} in container["volumeMounts"]
    assert one(documents, "ServiceAccount")["metadata"]["annotations"] == EVERY_OPTION["serviceAccount"]["annotations"]


@pytest.mark.parametrize("values, error", [
    ({"leaderElection": {"enabled": False}}, "needs leaderElection.enabled"),
    ({"policyEnforcement": "Audit"}, "policyEnforcement must be Enforce or Disabled"),
    ({"installScope": "tenant"}, "installScope must be cluster or namespace"),
    ({"webhook": {"enabled": True, "certManager": {"enabled": False}}}, "webhook.tls.caBundle is required"),
    ({"webhook": {"enabled": True, "certManager": {"enabled": False}, "tls": {"caBundle": "Q0E="}}},
     "webhook.tls.secretName is required"),
    ({"serviceMonitor": {"enabled": True}, "metrics": {"service": {"create": False}}}, "needs metrics.service.create"),
    ({"aws": {"endpoint_url": "https://ec2.eu-west-1.amazonaws.com"}}, "set aws.endpoints.ec2 (AWS_ENDPOINT_URL_EC2)"),
])
def test_unsafe_values_are_refused(helm, tmp_path, values, error):
    done = helm("template", "ipo", str(CHART), "-f", values_file(tmp_path, values), check=False)
    assert done.returncode != 0 and error in done.stderr


def test_one_replica_without_leader_election_never_overlaps(helm, tmp_path):
    documents = render(helm, tmp_path, {"leaderElection": {"enabled": False}, "deployment": {"replicas": 1}})
    deployment = one(documents, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert container_env(deployment)["IPO_LEADER_ELECT"] == "false"
    assert not [doc for doc in documents if doc["kind"] in ("Role", "PodDisruptionBudget")]


def rules_of(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return one(documents, kind)["rules"]


def test_rbac_rules_equal_deploy_rbac(helm, tmp_path):
    shipped = [doc for doc in yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text()) if doc]
    rendered = render(helm, tmp_path, {})
    for kind in ("ClusterRole", "Role"):
        assert rules_of(rendered, kind) == rules_of(shipped, kind)


def test_chart_crds_are_the_repository_crds():
    top = {path.name: path.read_bytes() for path in (REPO / "crds").glob("*.yaml")}
    chart = {path.name: path.read_bytes() for path in (CHART / "crds").glob("*.yaml")}
    assert top and chart == top


def user_secret_values(devenv) -> dict[str, Any]:
    """The webhook with a certificate the user provides (here: the development CA as its CA)."""
    ca = json.loads(Path(devenv.kubeconfig).read_text())["clusters"][0]["cluster"]["certificate-authority-data"]
    return {**EVERY_OPTION, "webhook": {"enabled": True, "certManager": {"enabled": False},
                                        "tls": {"secretName": "ipo-webhook-tls", "caBundle": ca}}}


@pytest.mark.parametrize("variant", ["defaults", "every-option", "webhook-user-secret"])
def test_rendered_chart_passes_server_side_dry_run(helm, devenv, namespace, tmp_path, variant):
    values = {"defaults": {}, "every-option": EVERY_OPTION, "webhook-user-secret": None}[variant]
    if values is None:
        values = user_secret_values(devenv)
    kubectl(devenv, "apply", "-f", str(CHART / "crds"))
    documents = render(helm, tmp_path, values, namespace=namespace)
    served = [doc for doc in documents if doc["apiVersion"].split("/")[0] not in NOT_SERVED_GROUPS]
    done = kubectl(devenv, "apply", "--dry-run=server", "-f", "-", check=False,
                   input="\n---\n".join(json.dumps(doc) for doc in served))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(server dry run)") == len(served)
    if variant == "webhook-user-secret":
        configuration = one(documents, "ValidatingWebhookConfiguration")
        assert configuration["webhooks"][0]["clientConfig"]["caBundle"] == values["webhook"]["tls"]["caBundle"]
        assert not [doc for doc in documents if doc["apiVersion"].startswith("cert-manager.io/")]


def by_kind(documents: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in documents:
        kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


def test_service_monitor_scrapes_the_metrics_port(helm, tmp_path):
    kinds = by_kind(render(helm, tmp_path, EVERY_OPTION))
    [monitor] = kinds["ServiceMonitor"]
    [metrics] = [s for s in kinds["Service"] if s["metadata"]["name"].endswith("-metrics")]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in metrics["spec"]["ports"]]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [container] = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"]
    target = metrics["spec"]["ports"][0]["targetPort"]
    assert {"name": target, "containerPort": 9090} in container["ports"]
    assert metrics["spec"]["selector"].items() <= kinds["Deployment"][0]["spec"]["template"]["metadata"]["labels"].items()


def test_prometheus_rule_carries_the_alert_file(helm, tmp_path):
    [rule] = by_kind(render(helm, tmp_path, EVERY_OPTION))["PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    assert {r["alert"] for r in rule["spec"]["groups"][0]["rules"]} == {
        "InstanceProfileBindingsStalled", "InstanceProfileOperatorEC2Throttled", "InstanceProfileOperatorAccountFailing",
        "InstanceProfileOperatorNoLeader"}


def test_webhook_certificate_serves_the_webhook_service(helm, tmp_path):
    kinds = by_kind(render(helm, tmp_path, EVERY_OPTION))
    [configuration], [certificate], [issuer] = kinds["ValidatingWebhookConfiguration"], kinds["Certificate"], kinds["Issuer"]
    [service] = [s for s in kinds["Service"] if s["metadata"]["name"].endswith("-webhook")]
    bindings, sets = configuration["webhooks"]
    namespace, name = configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
    assert (namespace, name) == (certificate["metadata"]["namespace"], certificate["metadata"]["name"])
    assert certificate["spec"]["issuerRef"] == {"name": issuer["metadata"]["name"], "kind": "Issuer"}
    assert f"{service['metadata']['name']}.{namespace}.svc" in certificate["spec"]["dnsNames"]
    for webhook in (bindings, sets):
        assert webhook["clientConfig"]["service"]["name"] == service["metadata"]["name"]
    assert [w["rules"][0]["resources"] for w in (bindings, sets)] == [["instanceprofilebindings"], ["instanceprofilebindingsets"]]
    assert sets["clientConfig"]["service"]["path"] == bindings["clientConfig"]["service"]["path"] + "-sets"
    assert bindings["failurePolicy"] == sets["failurePolicy"] == "Fail"
    # the matchConditions the integration tests prove (metadata-only updates never reach the webhook)
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text("CA")
    for webhook, devenv_entry in zip((bindings, sets), devenv_webhook.configuration("127.0.0.1:1", ca_file)["webhooks"]):
        assert webhook["matchConditions"] == devenv_entry["matchConditions"]
    pod = kinds["Deployment"][0]["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "webhook-tls"]
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "webhook-tls"]
    env = {item["name"]: item["value"] for item in pod["containers"][0]["env"]}
    assert env["IPO_WEBHOOK_CERT_FILE"] == f"{mount['mountPath']}/tls.crt"
    assert env["IPO_WEBHOOK_KEY_FILE"] == f"{mount['mountPath']}/tls.key"
    assert {"name": service["spec"]["ports"][0]["targetPort"], "containerPort": 9443} in pod["containers"][0]["ports"]


@pytest.fixture(scope="module")
def promql_check() -> Path:
    return gotools.ensure_built(gotools.PROMQL_CHECK)


def test_alert_expressions_parse_with_prometheus_parser(promql_check, helm, tmp_path):
    done = subprocess.run([str(promql_check), str(ALERTS)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "4 expressions parse" in done.stdout
    [rule] = by_kind(render(helm, tmp_path, {"prometheusRule": {"enabled": True}}))["PrometheusRule"]
    rendered = tmp_path / "rule.yaml"
    rendered.write_text(yaml.safe_dump(rule))
    done = subprocess.run([str(promql_check), str(rendered)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "4 expressions parse" in done.stdout


@pytest.mark.parametrize("expr, error", [
    ("sum by (namespace) (rate(ipo_ec2_requests_total[5m])", "unclosed left parenthesis"),
    ('ipo_bindings{stalled="true"} > ', "unexpected end of input"),
    ("rate(ipo_ec2_requests_total)", "expected type range vector"),
])
def test_a_broken_expression_fails_the_check(promql_check, tmp_path, expr, error):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "Broken", "expr": expr}]}]}))
    done = subprocess.run([str(promql_check), str(rules)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and error in done.stderr and '"Broken"' in done.stderr


def test_kustomize_install_passes_server_side_dry_run(devenv, crd):
    """`kubectl apply -k deploy/` stays a working alternative to the chart."""
    kubectl(devenv, "apply", "-f", str(REPO / "deploy" / "namespace.yaml"))
    done = kubectl(devenv, "apply", "-k", str(REPO / "deploy"), "--dry-run=server", check=False)
    assert done.returncode == 0, done.stderr
    for created in ("deployment.apps/instance-profile-operator", "role.rbac.authorization.k8s.io/"
                    "instance-profile-operator-leader-election", "clusterrole.rbac.authorization.k8s.io/instance-profile-operator"):
        assert created in done.stdout


def test_notes_say_policies_are_cluster_scoped(helm):
    notes = helm("install", "ipo", str(CHART), "--dry-run", "--namespace", "ipo-system").stdout.split("NOTES:", 1)[1]
    assert "cluster-scoped" in notes and "namespaceSelector" in notes
    assert "in each tenant namespace" not in notes


def test_kustomize_bakes_in_no_region_and_the_documented_overlay_sets_it(devenv, tmp_path):
    """deploy/ names no region (the operator's own error says so); install-eks.md's overlay adds one."""
    def env_of(directory: Path) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        built = [d for d in yaml.safe_load_all(kubectl(devenv, "kustomize", str(directory)).stdout) if d]
        return container_env(one(built, "Deployment")), one(built, "Deployment"), one(built, "ServiceAccount")

    bare, _, _ = env_of(REPO / "deploy")
    assert "IPO_REGION" not in bare and "AWS_REGION" not in bare
    doc = (REPO / "docs" / "install-eks.md").read_text()
    overlay = doc.split("# kustomization.yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "kustomization.yaml").write_text(overlay.replace(
        "https://github.com/OWNER/instance-profile-operator//deploy?ref=v0.1.0   # or a local path",
        os.path.relpath(REPO / "deploy", tmp_path)))
    env, deployment, account = env_of(tmp_path)
    assert env["IPO_REGION"] == "eu-west-1"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(".amazonaws.com/instance-profile-operator:0.1.0")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/instance-profile-operator")


def test_the_grafana_dashboard_is_a_configmap_the_sidecar_discovers(helm, tmp_path):
    assert not [d for d in render(helm, tmp_path, {}) if d["kind"] == "ConfigMap"]  # off by default
    [config_map] = [d for d in render(helm, tmp_path, EVERY_OPTION) if d["kind"] == "ConfigMap"]
    meta = config_map["metadata"]
    assert meta["labels"]["grafana_dashboard"] == "1" and meta["labels"]["release"] == "kube-prometheus-stack"
    assert (meta["namespace"], meta["annotations"]) == ("ipo-system", {"grafana_folder": "Operators"})
    elsewhere = {**EVERY_OPTION, "grafanaDashboard": {"enabled": True, "namespace": "monitoring"}}
    [moved] = [d for d in render(helm, tmp_path, elsewhere) if d["kind"] == "ConfigMap"]
    assert moved["metadata"]["namespace"] == "monitoring"  # where the sidecar's searchNamespace looks
    [(name, text)] = config_map["data"].items()
    assert name.endswith(".json") and json.loads(text) == json.loads((CHART / "files" / "dashboard.json").read_text())
