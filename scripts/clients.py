#!/usr/bin/env python3
"""Today's kubectl against the local cluster, with our CRDs applied (scripts/test.sh runs it):

  - the client is the cluster's own release (`kubectl version`: client == server);
  - every example (examples/evaluations/*.yaml) is applied with server-side field validation,
    `kubectl apply --dry-run=server --validate=strict` (the API server refuses unknown and
    duplicate fields), and an example given an unknown field is refused (so the check is live);
  - `kubectl explain KIND --recursive` shows every field of each CRD's schema, as read from
    the API server (nested objects, array items and map values included).

    python3 scripts/clients.py        # needs root (cluster.sh) and a running cluster

Prints one PASS/FAIL line per check and exits 1 if any failed.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "infrastructure" / "local" / "cluster.sh"
EXAMPLES = sorted((ROOT / "examples" / "evaluations").glob("*.yaml"))
GROUP, VERSION = "crucible.dev", "v1alpha1"
NAMESPACE = f"crucible-clients-{os.getpid()}"  # a namespace of an earlier run may still be terminating
TIMEOUT = 60  # seconds per kubectl call
failed = 0


def kubectl(*args, stdin=None):
    return subprocess.run(["bash", str(CLUSTER), "kubectl", *args], input=stdin, capture_output=True,
                          text=True, timeout=TIMEOUT)


def report(ok, name, detail=""):
    global failed
    print(("PASS " if ok else "FAIL ") + name)
    if not ok:
        failed += 1
        for line in detail.strip().splitlines()[-15:]:
            print("    " + line)


def schema_paths(schema, prefix=""):
    """Every field path of an OpenAPI v3 schema: `a`, `a.b`, ...; array items and map values
    add no segment (as kubectl explain shows them)."""
    paths = []
    for name, sub in sorted(schema.get("properties", {}).items()):
        path = prefix + name
        paths.append(path)
        paths += schema_paths(sub, path + ".")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            paths += schema_paths(schema[key], prefix)
    return paths


def explained_paths(text):
    """Field paths of `kubectl explain --recursive`: under FIELDS:, two spaces per level."""
    paths, stack, in_fields = [], [], False
    for line in text.splitlines():
        if line.startswith("FIELDS:"):
            in_fields = True
            continue
        if not in_fields or not line.strip() or "\t" not in line:
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2 - 1
        name = line.strip().split("\t")[0]
        stack[depth:] = [name]
        paths.append(".".join(stack))
    return paths


def check_version():
    out = kubectl("version", "-o", "json")
    if out.returncode != 0:
        return report(False, "kubectl version", out.stderr)
    v = json.loads(out.stdout)
    client, server = v["clientVersion"]["gitVersion"], v.get("serverVersion", {}).get("gitVersion")
    report(client == server, f"kubectl {client} is the cluster's release ({server})")


def check_examples():
    for path in EXAMPLES:
        out = kubectl("apply", "-n", NAMESPACE, "--dry-run=server", "--validate=strict", "-f", str(path))
        report(out.returncode == 0, f"apply --validate=strict (server): {path.name}", out.stderr)
    # the same with one unknown field must be refused by the API server
    hello = kubectl("create", "-n", NAMESPACE, "--dry-run=client", "-o", "json", "-f", str(ROOT / "examples/evaluations/hello.yaml"))
    obj = json.loads(hello.stdout)
    obj["spec"]["timeoutt"] = "1m"
    out = kubectl("apply", "-n", NAMESPACE, "--dry-run=server", "--validate=strict", "-f", "-",
                  stdin=json.dumps(obj))
    report(out.returncode != 0 and 'unknown field "spec.timeoutt"' in out.stderr,
           "apply --validate=strict refuses an unknown field (spec.timeoutt)", out.stdout + out.stderr)


def check_explain():
    out = kubectl("get", "crd", "-o", "json")
    crds = [c for c in json.loads(out.stdout)["items"] if c["spec"]["group"] == GROUP]
    report(len(crds) == len(list((ROOT / "crds").glob("*.yaml"))), f"{len(crds)} CRDs of {GROUP} served")
    for crd in crds:
        plural = crd["spec"]["names"]["plural"]
        version = next(v for v in crd["spec"]["versions"] if v["name"] == VERSION)
        wanted = [p for p in schema_paths(version["schema"]["openAPIV3Schema"])
                  if p != "metadata" and not p.startswith("metadata.")]
        out = kubectl("explain", plural, "--recursive", f"--api-version={GROUP}/{VERSION}")
        shown = set(explained_paths(out.stdout))
        missing = [p for p in wanted if p not in shown]
        report(out.returncode == 0 and len(wanted) > 10 and not missing,
               f"kubectl explain {plural} --recursive shows all {len(wanted)} fields",
               out.stderr + "\nmissing: " + " ".join(missing))


def main():
    check_version()
    out = kubectl("create", "namespace", NAMESPACE)
    if out.returncode != 0:
        report(False, f"create namespace {NAMESPACE}", out.stderr)
        return 1
    kubectl("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    try:
        check_examples()
        check_explain()
    finally:
        kubectl("delete", "namespace", NAMESPACE, "--wait=false")
    print(f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
