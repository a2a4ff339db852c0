#!/usr/bin/env python3
"""Turns the chart's StatefulSet, as `helm template` rendered it, into the Pod
the StatefulSet controller would make as its first replica (<name>-0), for
`podman kube play` (podman 4.3, Debian 12). Used by tools/ci/pod-test.sh.

What podman kube play cannot express is handled here the way Kubernetes
would, or left as it is, and said in one NOTE line each on stdout (the test
prints them); nothing is dropped without a NOTE.

Usage: chart-pod.py RENDERED.yaml OUTDIR
Writes to OUTDIR:
  pod.yaml             the Pod for podman kube play
  secret-<name>.json   each Secret the pod refers to, as the JSON map of
                       base64 values podman's secret store takes
  expected-env.json    every environment variable the process must get,
                       and its value (after the kubelet's $(VAR) expansion)
  probes.json          [{"kind", "path", "port"}] with named ports resolved
  facts.json           the pod's name, container, securityContext, ...
"""
import base64
import json
import os
import re
import sys

import yaml

# Kubernetes lets an annotation's value be large; podman 4.3 refuses values
# over 63 characters (it applies the label limit to annotations).
PODMAN_ANNOTATION_MAX = 63


def note(msg):
    print("NOTE: " + msg)


def expand(value, env):
    """The kubelet's $(VAR) expansion: a variable defined earlier in the list
    is replaced, $$ escapes a $, anything else is left as it is."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def main():
    rendered, outdir = sys.argv[1], sys.argv[2]
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    sts = [d for d in docs if d.get("kind") == "StatefulSet"]
    if len(sts) != 1:
        sys.exit("chart-pod: expected one StatefulSet in %s, found %d" % (rendered, len(sts)))
    sts = sts[0]
    secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}
    tmpl = sts["spec"]["template"]
    spec = tmpl["spec"]
    name = sts["metadata"]["name"] + "-0"
    meta = {
        "name": name,
        "labels": dict(tmpl["metadata"].get("labels") or {}),
        "annotations": dict(tmpl["metadata"].get("annotations") or {}),
    }
    # What the StatefulSet controller adds to each of its pods.
    meta["labels"]["statefulset.kubernetes.io/pod-name"] = name
    meta["labels"]["apps.kubernetes.io/pod-index"] = "0"
    note("StatefulSet %s: the test runs its first replica as the Pod %s (replicas, "
         "serviceName, podManagementPolicy and updateStrategy belong to the controller "
         "and have no counterpart in podman)" % (sts["metadata"]["name"], name))

    for key, value in list(meta["annotations"].items()):
        if len(str(value)) > PODMAN_ANNOTATION_MAX:
            del meta["annotations"][key]
            note("annotation %s dropped: podman kube play refuses annotation values "
                 "over %d characters (Kubernetes takes them)" % (key, PODMAN_ANNOTATION_MAX))

    if len(spec["containers"]) != 1:
        sys.exit("chart-pod: expected one container, found %d" % len(spec["containers"]))
    ctr = spec["containers"][0]

    # ---- environment: what the kubelet would hand the process.
    expected = {}
    used_secrets = set()
    expanded = []
    for ev in ctr.get("env") or []:
        src = ev.get("valueFrom")
        if src is None:
            value = ev.get("value", "")
            new = expand(value, expected)
            if new != value:
                expanded.append("%s=%s" % (ev["name"], value))
                ev["value"] = new
            expected[ev["name"]] = new
        elif "fieldRef" in src:
            path = src["fieldRef"]["fieldPath"]
            if path == "metadata.name":
                expected[ev["name"]] = name
            elif path == "metadata.namespace":
                note("%s: metadata.namespace has no meaning for podman; not checked" % ev["name"])
            else:
                note("%s: fieldRef %s not checked" % (ev["name"], path))
        elif "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            used_secrets.add(ref["name"])
            sec = secrets.get(ref["name"])
            data = (sec or {}).get("data") or {}
            if ref["key"] in data:
                expected[ev["name"]] = base64.b64decode(data[ref["key"]]).decode()
            elif not ref.get("optional"):
                sys.exit("chart-pod: %s needs key %s of Secret %s, which the chart did not render"
                         % (ev["name"], ref["key"], ref["name"]))
        else:
            note("%s: valueFrom %s not checked" % (ev["name"], ", ".join(src)))
    if expanded:
        note("podman kube play does not expand $(VAR) in env values; expanded here as the "
             "kubelet does: " + "; ".join(expanded))

    for sname in sorted(used_secrets):
        sec = secrets.get(sname)
        if sec is None:
            sys.exit("chart-pod: Secret %s is referred to but not rendered" % sname)
        with open(os.path.join(outdir, "secret-%s.json" % sname), "w") as f:
            json.dump(sec.get("data") or {}, f)
    if used_secrets:
        note("podman kube play 4.3 takes no Secret objects: each Secret the pod refers to "
             "(%s) is loaded into podman's secret store under its name, as the JSON map of "
             "its data, which is where kube play looks up secretKeyRef" % ", ".join(sorted(used_secrets)))

    # ---- probes: the kubelet requests them on the pod's IP; resolve named ports.
    ports = {p.get("name"): p["containerPort"] for p in ctr.get("ports") or []}
    probes = []
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = ctr.get(kind)
        if not probe:
            continue
        if "httpGet" not in probe:
            sys.exit("chart-pod: %s is not an httpGet probe; the test knows only those" % kind)
        port = probe["httpGet"]["port"]
        probes.append({"kind": kind, "path": probe["httpGet"]["path"],
                       "port": ports.get(port, port) if isinstance(port, str) else port})
    if probes:
        note("probes are not run by podman kube play here: a livenessProbe becomes a podman "
             "healthcheck that runs curl inside the container (the image has no curl; a named "
             "port becomes port 0) on a systemd timer (no systemd here), a readinessProbe is "
             "ignored; the test requests each probe's path on the pod's port instead")

    # ---- what has no counterpart here: said, left in the manifest.
    if ctr.get("lifecycle", {}).get("preStop"):
        note("lifecycle.preStop is not run by podman kube play 4.3: on stop the gateway gets "
             "SIGTERM at once, without the %s pause" % " ".join(ctr["lifecycle"]["preStop"]
                                                                 .get("exec", {}).get("command", [])))
    if "terminationGracePeriodSeconds" in spec:
        note("terminationGracePeriodSeconds (%s) is not taken by podman kube play 4.3: the "
             "test stops the container with the same grace itself"
             % spec["terminationGracePeriodSeconds"])
    if spec.get("serviceAccountName"):
        note("serviceAccountName %s: no API server, nothing to mount (the chart sets "
             "automountServiceAccountToken: %s)" % (spec["serviceAccountName"],
                                                    spec.get("automountServiceAccountToken")))
    if spec.get("affinity"):
        note("affinity: one machine, no scheduler; not applied")
    for v in spec.get("volumes") or []:
        if "emptyDir" in v and v["emptyDir"].get("sizeLimit"):
            note("volume %s: emptyDir becomes an anonymous podman volume; its sizeLimit %s "
                 "is not enforced" % (v["name"], v["emptyDir"]["sizeLimit"]))
    req = (ctr.get("resources") or {}).get("requests")
    if req:
        note("resources.requests (%s): no scheduler; limits are applied and checked"
             % ", ".join("%s=%s" % kv for kv in sorted(req.items())))

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    with open(os.path.join(outdir, "pod.yaml"), "w") as f:
        yaml.safe_dump(pod, f, sort_keys=False)
    with open(os.path.join(outdir, "expected-env.json"), "w") as f:
        json.dump(expected, f, indent=1)
    with open(os.path.join(outdir, "probes.json"), "w") as f:
        json.dump(probes, f)
    facts = {
        "pod": name,
        "container": ctr["name"],
        "podSecurityContext": spec.get("securityContext") or {},
        "securityContext": ctr.get("securityContext") or {},
        "limits": (ctr.get("resources") or {}).get("limits") or {},
        "terminationGracePeriodSeconds": spec.get("terminationGracePeriodSeconds", 30),
        "volumeMounts": [m["mountPath"] for m in ctr.get("volumeMounts") or []],
    }
    with open(os.path.join(outdir, "facts.json"), "w") as f:
        json.dump(facts, f, indent=1)


if __name__ == "__main__":
    main()
