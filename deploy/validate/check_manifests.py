#!/usr/bin/env python3
"""Checks on rendered gapwatch manifests, run by .ci/validate-deploy.

    check_manifests.py split RENDERED CORE_OUT
        Writes the documents of RENDERED that are built-in Kubernetes kinds to
        CORE_OUT (for `kubernetes-validate --strict`) and validates the others
        (custom resources) against the schemas in this directory. A custom
        resource without a schema here is an error, never a silent pass:
        kubernetes-validate itself only warns about kinds it has no schema
        for, and exits 0.

    check_manifests.py policy RENDERED [--forbid-secrets]
        The invariants deploy/README.md promises and no schema can see: one
        replica, grace period longer than the drain, probes on the health
        port, ports and file paths consistent with gapwatch.toml, $(VAR)
        references defined earlier in env, pinned image tags, a restricted
        Pod Security namespace. --forbid-secrets: the output must hold no
        Secret (the prod overlay mounts externally managed ones).

    check_manifests.py selftest RENDERED K8S_VERSION
        Breaks copies of RENDERED on purpose and expects every check above to
        notice, so that a validator that silently passes everything fails CI.

Runs in the venv .ci/validate-deploy builds (PyYAML, jsonschema, referencing
and kubernetes-validate come with kubernetes-validate).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path, PurePosixPath

import jsonschema
import yaml
from referencing import Registry, Resource

import kubernetes_validate.utils as kv

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

HERE = Path(__file__).resolve().parent

# Custom resources and the schema each is validated against. kubernetes-validate
# bundles only the built-in kinds; the Prometheus Operator CRDs are not part of it.
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): HERE / "servicemonitor-monitoring-v1.json",
}

CONFIG_PATH = "/etc/gapwatch/gapwatch.toml"
ENV_PREFIX = "GAPWATCH__"


class Failures:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.messages.append(message)


def load(path: str) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name_of(doc: dict) -> str:
    return "%s/%s" % (doc.get("kind"), doc.get("metadata", {}).get("name"))


# --- custom resources ------------------------------------------------------

def k8s_definitions(version: str) -> Resource:
    """The strict Kubernetes definitions of kubernetes-validate, so that a CRD
    schema can $ref ObjectMeta, LabelSelector and the like."""
    schema_version = [v for v in kv.all_versions()
                      if kv.major_minor(v) <= kv.major_minor(version)][-1]
    defs = kv.schema_contents(
        "kubernetes-json-schema/v%s-local-strict/_definitions.json" % schema_version, version)
    return Resource.from_contents(defs)


def is_builtin(doc: dict, version: str) -> bool:
    try:
        kv.validate(doc, version, strict=True)
    except kv.SchemaNotFoundError:
        return False
    except Exception:
        return True  # a schema exists; kubernetes-validate reports the error
    return True


def validate_custom(doc: dict, version: str) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    schema_file = CRD_SCHEMAS.get(key)
    if schema_file is None:
        return ["%s: %s %s is neither a built-in kind nor one with a schema in %s "
                "(add a schema to check_manifests.py's CRD_SCHEMAS)"
                % (name_of(doc), key[0], key[1], HERE)]
    schema = json.loads(schema_file.read_text())
    registry = Registry().with_resources([
        (schema["$id"], Resource.from_contents(schema)),
        ("https://kubernetes.io/api/_definitions.json", k8s_definitions(version)),
    ])
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return ["%s: %s: %s" % (name_of(doc), ".".join(str(p) for p in e.absolute_path) or "(root)",
                            e.message)
            for e in validator.iter_errors(doc)]


def split(rendered: str, core_out: str, version: str) -> int:
    docs = load(rendered)
    core, errors = [], []
    for doc in docs:
        if is_builtin(doc, version):
            core.append(doc)
        else:
            doc_errors = validate_custom(doc, version)
            errors += doc_errors
            if not doc_errors:
                print("INFO %s passed for resource %s against %s"
                      % (rendered, name_of(doc), CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])].name))
    with open(core_out, "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    for e in errors:
        print("ERROR", e)
    return 1 if errors else 0


# --- policy ----------------------------------------------------------------

def env_overrides(config: dict, env: list[dict]) -> dict:
    """Applies the literal GAPWATCH__SECTION__KEY values of a container's env
    to the parsed gapwatch.toml, as gapwatch's config layering does."""
    config = copy.deepcopy(config)
    for var in env:
        name, value = var.get("name", ""), var.get("value")
        if not name.startswith(ENV_PREFIX) or value is None:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        node = config
        for part in path[:-1]:
            node = node.setdefault(part, {})
        try:
            node[path[-1]] = tomllib.loads("v = %s" % value)["v"]
        except tomllib.TOMLDecodeError:
            node[path[-1]] = value
    return config


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def under(path: str, directory: str) -> bool:
    p, d = PurePosixPath(path), PurePosixPath(directory)
    return p == d or d in p.parents


def policy(rendered: str, forbid_secrets: bool) -> list[str]:
    docs = load(rendered)
    f = Failures()
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)

    if forbid_secrets:
        f.check(not by_kind.get("Secret"),
                "Secrets in the output: %s (this overlay must mount externally managed Secrets)"
                % [name_of(d) for d in by_kind.get("Secret", [])])

    namespaces = by_kind.get("Namespace", [])
    f.check(len(namespaces) == 1, "expected one Namespace, found %d" % len(namespaces))
    for ns in namespaces:
        f.check(ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted",
                "%s: label pod-security.kubernetes.io/enforce=restricted missing" % name_of(ns))

    sets = by_kind.get("StatefulSet", [])
    f.check(len(sets) == 1, "expected one StatefulSet, found %d" % len(sets))
    f.check(not by_kind.get("Deployment"), "a Deployment: gapwatch must run as the StatefulSet")
    if len(sets) != 1:
        return f.messages
    sts = sets[0]
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    f.check(spec.get("replicas") == 1,
            "StatefulSet replicas is %r: must be 1 (sled allows one process per data directory)"
            % spec.get("replicas"))
    f.check(pod.get("automountServiceAccountToken") is False,
            "automountServiceAccountToken must be false on the pod")
    f.check(pod.get("serviceAccountName") not in (None, "default"), "a dedicated ServiceAccount is required")

    containers = pod.get("containers", [])
    f.check(len(containers) == 1, "expected one container, found %d" % len(containers))
    c = containers[0]

    image = c.get("image", "")
    tag = image.rsplit("/", 1)[-1].partition(":")[2].split("@")[0]
    f.check(bool(tag) and tag != "latest", "image %r is not pinned by a tag" % image)

    # Env: $(VAR) expands only variables defined earlier in the list.
    defined: set[str] = set()
    for var in c.get("env", []):
        for ref in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", var.get("value") or ""):
            f.check(ref in defined, "env %s references $(%s) before it is defined (it would not expand)"
                    % (var["name"], ref))
        defined.add(var["name"])

    # The config the pod will read: the ConfigMap mounted at CONFIG_PATH.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = c.get("volumeMounts", [])
    config_mount = [m for m in mounts if m["mountPath"] == CONFIG_PATH]
    f.check(len(config_mount) == 1, "nothing mounted at %s" % CONFIG_PATH)
    if len(config_mount) != 1:
        return f.messages
    config_volume = volumes[config_mount[0]["name"]]
    cm_name = config_volume["configMap"]["name"]
    cms = [d for d in by_kind.get("ConfigMap", []) if d["metadata"]["name"] == cm_name]
    f.check(len(cms) == 1, "ConfigMap %s (mounted at %s) is not in the output" % (cm_name, CONFIG_PATH))
    if len(cms) != 1:
        return f.messages
    toml_text = cms[0]["data"][config_mount[0].get("subPath", "gapwatch.toml")]
    config = env_overrides(tomllib.loads(toml_text), c.get("env", []))
    server = config.get("server", {})

    # Drain vs grace period.
    drain = int(server.get("shutdown_timeout_secs", 10))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    f.check(grace > drain,
            "terminationGracePeriodSeconds %d is not longer than server.shutdown_timeout_secs %d"
            % (grace, drain))

    # Ports: the container's named ports are the config's listeners.
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for port_name, key in (("grpc", "listen"), ("health", "health_listen"), ("metrics", "admin_listen")):
        f.check(key in server, "server.%s missing from gapwatch.toml" % key)
        if key in server:
            f.check(ports.get(port_name) == port_of(server[key]),
                    "container port %s=%s but server.%s=%s"
                    % (port_name, ports.get(port_name), key, server[key]))
    health_port = port_of(server["health_listen"]) if "health_listen" in server else None
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(probe_name)
        f.check(probe is not None, "%s missing" % probe_name)
        if probe is None:
            continue
        f.check("grpc" in probe, "%s is not a grpc probe" % probe_name)
        f.check(probe.get("grpc", {}).get("port") == health_port,
                "%s probes port %s, not the plaintext health port %s"
                % (probe_name, probe.get("grpc", {}).get("port"), health_port))
    liveness = c.get("livenessProbe") or {}
    window = liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3)
    f.check(window > drain,
            "liveness gives up after %d s, within the %d s drain (health is NOT_SERVING then)"
            % (window, drain))

    # Files named in the config lie on the right volumes.
    def volume_at(path: str) -> dict | None:
        best = None
        for m in mounts:
            if under(path, m["mountPath"]) and (best is None or len(m["mountPath"]) > len(best["mountPath"])):
                best = m
        return best

    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    data_dir = config.get("storage", {}).get("data_dir", "./data")
    m = volume_at(data_dir)
    f.check(m is not None and m["name"] in claims,
            "storage.data_dir %s is not on a volumeClaimTemplates volume" % data_dir)

    files = []
    tls = server.get("tls")
    if tls:
        files += [("server.tls.%s" % k, tls[k]) for k in ("cert_file", "key_file", "client_ca_file") if k in tls]
    if "tokens_file" in config.get("auth", {}):
        files.append(("auth.tokens_file", config["auth"]["tokens_file"]))
    for key, path in files:
        m = volume_at(path)
        volume = volumes.get(m["name"]) if m else None
        f.check(volume is not None and "secret" in volume,
                "%s %s is not on a Secret volume" % (key, path))
        if volume is None or "secret" not in volume:
            continue
        secret_name = volume["secret"]["secretName"]
        secret_key = str(PurePosixPath(path).relative_to(m["mountPath"]))
        for s in by_kind.get("Secret", []):
            if s["metadata"]["name"] == secret_name:
                keys = set(s.get("data", {})) | set(s.get("stringData", {}))
                f.check(secret_key in keys, "%s %s: Secret %s has no key %s"
                        % (key, path, secret_name, secret_key))

    return f.messages


def run_policy(rendered: str, forbid_secrets: bool) -> int:
    messages = policy(rendered, forbid_secrets)
    for message in messages:
        print("ERROR %s: %s" % (rendered, message))
    if not messages:
        print("INFO %s passed the policy checks" % rendered)
    return 1 if messages else 0


# --- self-test ---------------------------------------------------------------

def selftest(rendered: str, version: str) -> int:
    docs = load(rendered)
    tmp = Path(rendered).with_suffix(".selftest.yaml")

    def broken(mutate) -> str:
        d = copy.deepcopy(docs)
        mutate(d)
        with open(tmp, "w") as f:
            yaml.safe_dump_all(d, f, sort_keys=False)
        return str(tmp)

    def doc(d, kind):
        return next(x for x in d if x["kind"] == kind)

    def pod(d):
        return doc(d, "StatefulSet")["spec"]["template"]["spec"]

    failures = []

    # Strict schema validation rejects an unknown field (a typo).
    d = copy.deepcopy(docs)
    pod(d)["containers"][0]["livenessProbes"] = {}
    try:
        kv.validate(doc(d, "StatefulSet"), version, strict=True)
        failures.append("kubernetes-validate --strict accepted an unknown field")
    except kv.ValidationError:
        pass

    # The ServiceMonitor schema rejects a misspelt field.
    if any(x["kind"] == "ServiceMonitor" for x in docs):
        d = copy.deepcopy(docs)
        doc(d, "ServiceMonitor")["spec"]["endpoints"][0]["intervall"] = "30s"
        if not validate_custom(doc(d, "ServiceMonitor"), version):
            failures.append("the ServiceMonitor schema accepted an unknown field")

    # An unknown custom resource is an error, not a pass.
    if not validate_custom({"apiVersion": "example.com/v1", "kind": "Unknown",
                            "metadata": {"name": "x"}}, version):
        failures.append("a custom resource without a schema passed")

    # Policy: each of these must be reported.
    cases = {
        "two replicas": lambda d: doc(d, "StatefulSet")["spec"].__setitem__("replicas", 2),
        "grace not above drain": lambda d: pod(d).__setitem__("terminationGracePeriodSeconds", 5),
        "probe on the TLS port": lambda d: pod(d)["containers"][0]["readinessProbe"]["grpc"]
        .__setitem__("port", 50051),
        "env reference before definition": lambda d: pod(d)["containers"][0]["env"].insert(
            0, {"name": "X", "value": "$(POD_NAME)"}),
        "image tag latest": lambda d: pod(d)["containers"][0].__setitem__(
            "image", "registry.example.com/gapwatch/gapwatch:latest"),
        "data_dir off the volume": lambda d: pod(d)["containers"][0]["env"].append(
            {"name": "GAPWATCH__STORAGE__DATA_DIR", "value": "/tmp/data"}),
    }
    for label, mutate in cases.items():
        if not policy(broken(mutate), forbid_secrets=False):
            failures.append("policy check missed: %s" % label)
    if not policy(broken(lambda d: d.append({"apiVersion": "v1", "kind": "Secret",
                                              "metadata": {"name": "x"}})), forbid_secrets=True):
        failures.append("policy check missed: a Secret in an output that forbids them")
    tmp.unlink(missing_ok=True)

    for failure in failures:
        print("ERROR selftest: %s" % failure)
    if not failures:
        print("INFO selftest: every deliberately broken copy was rejected")
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "split":
        version = argv[3] if len(argv) > 3 else kv.latest_version()
        return split(argv[1], argv[2], version)
    if len(argv) >= 2 and argv[0] == "policy":
        return run_policy(argv[1], "--forbid-secrets" in argv[2:])
    if len(argv) == 3 and argv[0] == "selftest":
        return selftest(argv[1], argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
