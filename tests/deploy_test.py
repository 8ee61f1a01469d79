#!/usr/bin/env python3
"""deploy/ against the real binaries: the Kubernetes overlays rendered by `kubectl kustomize`,
every container's flags and ports checked against the binary's `--help`, probes, volumes, GPU
limits, security contexts; `promtool check config|rules`; every metric of the dashboard and
the alert rules documented in docs/metrics.md (and so exported by a process).

Usage: deploy_test.py SOURCE_DIR BUILD_DIR
"""
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

SRC, BUILD = sys.argv[1], sys.argv[2]
BINARIES = {
    "mfpo-coordinator": os.path.join(BUILD, "coordinator", "mfpo-coordinator"),
    "mfpo-worker": os.path.join(BUILD, "worker", "mfpo-worker"),
    "mfpo-datagen": os.path.join(BUILD, "datagen", "mfpo-datagen"),
}
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what)


def help_flags(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60).stdout
    return {m.replace("-", "_") for m in re.findall(r"^  --([a-z0-9-]+)", out, re.M)}


FLAGS = {name: help_flags(path) for name, path in BINARIES.items()}


def render(overlay):
    out = subprocess.run(["kubectl", "kustomize", os.path.join(SRC, "deploy", "overlays", overlay)],
                         capture_output=True, text=True, timeout=120)
    check(out.returncode == 0, f"kubectl kustomize {overlay}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def check_overlay(overlay, gpu):
    objects = render(overlay)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for want in [("Deployment", "mfpo-coordinator"), ("Service", "mfpo-coordinator"), ("StatefulSet", "mfpo-trainer"),
                 ("Service", "mfpo-trainer"), ("Deployment", "mfpo-datagen"), ("PersistentVolumeClaim", "mfpo-data"),
                 ("PersistentVolumeClaim", "mfpo-coordinator-db"), ("ServiceMonitor", "mfpo")]:
        check(want in kinds, f"{overlay}: {want} missing")
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    pvcs = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PersistentVolumeClaim"}
    check("ReadWriteMany" in pvcs.get("mfpo-data", {}).get("spec", {}).get("accessModes", []),
          f"{overlay}: the data volume is not ReadWriteMany")
    for o in objects:
        if o["kind"] not in ("Deployment", "StatefulSet"):
            continue
        name = o["metadata"]["name"]
        spec = o["spec"]["template"]["spec"]
        if name == "mfpo-coordinator":
            check(o["spec"].get("replicas") == 1, f"{overlay}: coordinator replicas != 1")
            check(o["spec"].get("strategy", {}).get("type") == "Recreate", f"{overlay}: coordinator not Recreate")
        if o["kind"] == "StatefulSet":
            svc = services.get(o["spec"]["serviceName"])
            check(svc is not None and svc["spec"].get("clusterIP") == "None",
                  f"{overlay}: {name} is not behind a headless Service")
        check(spec.get("securityContext", {}).get("runAsNonRoot") is True, f"{overlay}: {name} may run as root")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            binary = os.path.basename(c["command"][0])
            check(binary in FLAGS, f"{overlay}: {name} runs {binary}, not one of the project's binaries")
            if binary not in FLAGS:
                continue
            args = {}
            for a in c.get("args", []):
                check(a.startswith("--") and "=" in a, f"{overlay}: {name}: argument '{a}' is not --flag=value")
                flag, _, value = a[2:].partition("=")
                args[flag.replace("-", "_")] = value
                check(flag.replace("-", "_") in FLAGS[binary], f"{overlay}: {name}: {binary} has no flag --{flag}")
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for flag in ("address", "health_address", "metrics_address"):
                if flag in args:
                    check(port_of(args[flag]) in ports.values(),
                          f"{overlay}: {name}: --{flag} port {port_of(args[flag])} is not a containerPort")
            # Probes: on a declared port; the coordinator's gRPC probes on its plaintext health port.
            for probe in ("livenessProbe", "readinessProbe"):
                p = c.get(probe)
                check(p is not None, f"{overlay}: {name} has no {probe}")
                if not p:
                    continue
                if "grpc" in p:
                    check("health_address" in args and p["grpc"]["port"] == port_of(args["health_address"]),
                          f"{overlay}: {name}: gRPC {probe} is not on --health_address's port")
                if "httpGet" in p:
                    port = p["httpGet"]["port"]
                    number = ports.get(port, port)
                    check("metrics_address" in args and number == port_of(args["metrics_address"]),
                          f"{overlay}: {name}: HTTP {probe} is not on --metrics_address's port")
            # Files named by flags lie in mounted volumes; mounts name real volumes.
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            for m in mounts.values():
                check(m in volumes, f"{overlay}: {name} mounts '{m}', which is not a volume")
            for flag in ("database", "tls_cert", "tls_key", "tls_ca", "token_file", "work_dir"):
                if flag in args:
                    check(any(args[flag].startswith(path.rstrip("/") + "/") for path in mounts),
                          f"{overlay}: {name}: --{flag}={args[flag]} is not under a mounted volume")
            check("/data" in mounts and volumes.get(mounts["/data"], {}).get("persistentVolumeClaim", {}).get(
                "claimName") == "mfpo-data", f"{overlay}: {name} does not mount the shared data volume at /data")
            if binary in ("mfpo-worker", "mfpo-datagen"):
                check("coordinator" in args, f"{overlay}: {name} has no --coordinator")
            limits = c.get("resources", {}).get("limits", {})
            check(bool(c.get("resources", {}).get("requests")) and bool(limits), f"{overlay}: {name} lacks requests/limits")
            if binary == "mfpo-worker":
                shm = volumes.get(mounts.get("/dev/shm", ""), {})
                check(shm.get("emptyDir", {}).get("medium") == "Memory", f"{overlay}: {name}: /dev/shm is not memory-backed")
                if gpu:
                    check(int(limits.get("nvidia.com/gpu", 0)) >= 1, f"{overlay}: {name} has no nvidia.com/gpu limit")
                    check(args.get("device") == "cuda", f"{overlay}: {name} is not --device=cuda")
                    env = {e["name"] for e in c.get("env", [])}
                    check(any(e.startswith("NCCL_") for e in env), f"{overlay}: {name} sets no NCCL variable")
                else:
                    check("nvidia.com/gpu" not in limits, f"{overlay}: {name} asks for a GPU on the CPU overlay")
    # Services point at declared ports; the ServiceMonitor at the metrics ports.
    for o in objects:
        if o["kind"] == "ServiceMonitor":
            for e in o["spec"]["endpoints"]:
                check(all(any(p.get("name") == e["port"] for p in s["spec"]["ports"]) for s in services.values()),
                      f"{overlay}: ServiceMonitor port '{e['port']}' is missing on a Service")


check_overlay("cpu", gpu=False)
check_overlay("gpu", gpu=True)

# Prometheus configuration and rules.
promtool = shutil.which("promtool")
check(promtool is not None, "promtool is not installed (Debian package prometheus; scripts/install-deps.sh)")
if promtool:
    for what, path in (("config", "prometheus.yml"), ("rules", "rules.yml")):
        r = subprocess.run([promtool, "check", what, os.path.join(SRC, "deploy", "prometheus", path)],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, f"promtool check {what}: {r.stdout} {r.stderr}")

# Every mfpo_ metric of the dashboard and the rules is documented (and so exported).
documented = set(re.findall(r"`(mfpo_[a-z0-9_]+)`", open(os.path.join(SRC, "docs", "metrics.md")).read()))
exprs = [t["expr"] for p in json.load(open(os.path.join(SRC, "deploy", "grafana", "dashboards", "mfpo.json")))["panels"]
         for t in p["targets"]]
exprs += [r["expr"] for g in yaml.safe_load(open(os.path.join(SRC, "deploy", "prometheus", "rules.yml")))["groups"]
          for r in g["rules"]]
for e in exprs:
    for m in re.findall(r"\b(mfpo_[a-z0-9_]+)", e):
        base = re.sub(r"_(bucket|sum|count)$", "", m)
        check(m in documented or base in documented, f"'{m}' in '{e}' is not in docs/metrics.md")

# The images: built with the README's install script (CPU), holding the binaries the manifests
# run, from paths the build really produces, as a non-root user, with a health check that works.
commands = set()
for overlay in ("cpu", "gpu"):
    for o in render(overlay):
        if o["kind"] in ("Deployment", "StatefulSet"):
            commands.update(c["command"][0] for c in o["spec"]["template"]["spec"]["containers"])
presets = {p["name"] for p in json.load(open(os.path.join(SRC, "CMakePresets.json")))["configurePresets"]}
for dockerfile, build_dir in (("Dockerfile", "build"), ("Dockerfile.cuda", "build-nccl")):
    text = open(os.path.join(SRC, "docker", dockerfile)).read()
    if dockerfile == "Dockerfile":
        check("bash scripts/install-deps.sh" in text, f"{dockerfile}: not built with scripts/install-deps.sh")
    else:
        check(re.search(r"cmake --preset (\w+)", text) and re.search(r"cmake --preset (\w+)", text).group(1) in presets,
              f"{dockerfile}: its cmake preset is not in CMakePresets.json")
    check(text.count("\nFROM ") + text.startswith("FROM ") >= 2 or len(re.findall(r"^FROM ", text, re.M)) >= 2,
          f"{dockerfile}: not multi-stage")
    check(re.search(r"^USER 10001", text, re.M) is not None, f"{dockerfile}: the runtime does not run as a non-root user")
    for command in commands:
        binary = os.path.basename(command)
        check(f"/{binary} " in text or f"/{binary}\n" in text, f"{dockerfile}: does not ship {binary} (run by the manifests)")
    for path in re.findall(r"build(?:-nccl)?/([a-z]+/mfpo[a-z-]*)", text):
        check(os.path.exists(os.path.join(BUILD, path)), f"{dockerfile}: copies {path}, which the build does not make")
    hc = re.search(r'HEALTHCHECK .*CMD \[(.*)\]', text)
    check(hc is not None, f"{dockerfile}: no HEALTHCHECK")
    if hc:
        args = [a.strip().strip('"') for a in hc.group(1).split(",")]
        check(args[:2] == ["/usr/local/bin/mfpoctl", "health"], f"{dockerfile}: HEALTHCHECK is not mfpoctl health")
        out = subprocess.run([os.path.join(BUILD, "cli", "mfpoctl"), "health", "--help"], capture_output=True, text=True)
        known = {m.replace("-", "_") for m in re.findall(r"^  --([a-z0-9-]+)", out.stdout, re.M)}
        for a in args[2:]:
            if a.startswith("--"):
                check(a[2:].split("=")[0] in known, f"{dockerfile}: mfpoctl health has no flag {a}")

print("deploy_test:", "FAILED" if failures else "ok", f"({len(failures)} problems)")
sys.exit(1 if failures else 0)
