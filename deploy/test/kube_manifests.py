#!/usr/bin/python3
"""What `kubectl apply -k deploy/kubernetes` would hand the kubelet, for `podman play kube`.

render: writes, into OUT,
  configmap.yaml  the ConfigMap kustomization.yaml's configMapGenerator makes
  secret.yaml     the Secret certgate-tls and the ConfigMap certgate-crl, as the kubectl
                  commands in secret.example.yaml make them from a PKI directory
  pod.yaml        deployment.yaml with kustomize's image rewrite, plus two changes podman
                  needs (see kube.sh): the projected tls volume becomes a hostPath directory
                  that this script fills the way the kubelet does, the certgate ports are
                  published on 127.0.0.1, and one replica (the pods would share those ports)
  probes          "<path> <host port>" for every httpGet probe of the certgate container
and projects the Secret and ConfigMap items into the tls directory.
swap: re-reads the PKI and projects it again: kubelet's atomic `..data` symlink swap.
"""

import argparse
import base64
import datetime
import os
import shutil
import sys

import yaml


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def config_map(kdir):
    kust = load_all(os.path.join(kdir, "kustomization.yaml"))[0]
    gen = kust["configMapGenerator"][0]
    data = {}
    for f in gen["files"]:
        with open(os.path.join(kdir, f)) as fh:
            data[os.path.basename(f)] = fh.read()
    return kust, {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": gen["name"]}, "data": data}


def tls_sources(pki):
    """kubectl create secret generic certgate-tls --from-file=... and the CRL ConfigMap."""
    def b64(name):
        with open(os.path.join(pki, name), "rb") as f:
            return base64.b64encode(f.read()).decode()
    with open(os.path.join(pki, "crl.pem")) as f:
        crl = f.read()
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "certgate-tls"},
              "data": {"tls.crt": b64("server.pem"), "tls.key": b64("server-key.pem"),
                       "ca.crt": b64("ca.pem")}}
    crl_map = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "certgate-crl"}, "data": {"ca.crl": crl}}
    return secret, crl_map


def pod_spec(deployment):
    return deployment["spec"]["template"]["spec"]


def tls_volume(deployment):
    return next(v for v in pod_spec(deployment)["volumes"] if "projected" in v)


def projected_files(deployment, secret, crl_map):
    """The files the kubelet writes for the projected volume: name -> bytes."""
    by_name = {("secret", secret["metadata"]["name"]): secret,
               ("configMap", crl_map["metadata"]["name"]): crl_map}
    files = {}
    for src in tls_volume(deployment)["projected"]["sources"]:
        kind = "secret" if "secret" in src else "configMap"
        obj = by_name[(kind, src[kind]["name"])]
        for item in src[kind]["items"]:
            value = obj["data"][item["key"]]
            files[item["path"]] = base64.b64decode(value) if kind == "secret" else value.encode()
    return files


def project(tls_dir, files, mode, gid):
    """The kubelet's AtomicWriter: a new timestamped directory, `..data` swapped by rename."""
    os.makedirs(tls_dir, exist_ok=True)
    stamp = "..%s" % datetime.datetime.utcnow().strftime("%Y_%m_%d_%H_%M_%S.%f")
    new = os.path.join(tls_dir, stamp)
    os.mkdir(new, 0o755)
    for name, data in files.items():
        path = os.path.join(new, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chown(path, 0, gid)
        os.chmod(path, mode)
    data_link = os.path.join(tls_dir, "..data")
    old = os.readlink(data_link) if os.path.islink(data_link) else None
    for name in files:
        link = os.path.join(tls_dir, name)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", name), link)
    tmp = os.path.join(tls_dir, "..data_tmp")
    os.symlink(stamp, tmp)
    os.rename(tmp, data_link)
    if old:
        shutil.rmtree(os.path.join(tls_dir, old))


def render(args):
    kust, cm = config_map(args.kustomize)
    secret, crl_map = tls_sources(args.pki)
    deployment = load_all(os.path.join(args.kustomize, "deployment.yaml"))[0]
    deployment["metadata"]["name"] = args.name
    # podman makes every replica a pod on this one host, and they would share the host ports.
    deployment["spec"]["replicas"] = 1
    spec = pod_spec(deployment)
    image = kust["images"][0]
    probes = []
    for c in spec["containers"]:
        if c["image"] == image["name"]:
            c["image"] = args.image       # kustomize: newName:newTag, here the image under test
        if c["name"] != "certgate":
            continue
        host = {"https": args.https_port, "admin": args.admin_port}
        named = {}
        for p in c["ports"]:
            p["hostIP"] = "127.0.0.1"
            p["hostPort"] = host[p["name"]]
            named[p["name"]] = p["hostPort"]
            named[p["containerPort"]] = p["hostPort"]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = c.get(probe, {}).get("httpGet")
            if get:
                probes.append("%s %s %s" % (probe, get["path"], named[get["port"]]))
    vol = tls_volume(deployment)
    mode = vol["projected"].get("defaultMode", 0o644)
    gid = spec.get("securityContext", {}).get("fsGroup", 0)
    files = projected_files(deployment, secret, crl_map)
    del vol["projected"]
    vol["hostPath"] = {"path": os.path.abspath(args.tls_dir), "type": "Directory"}
    project(args.tls_dir, files, mode, gid)
    os.makedirs(args.out, exist_ok=True)
    for name, docs in (("configmap.yaml", [cm]), ("secret.yaml", [secret, crl_map]),
                       ("pod.yaml", [deployment])):
        with open(os.path.join(args.out, name), "w") as f:
            yaml.safe_dump_all(docs, f, sort_keys=False)
    with open(os.path.join(args.out, "probes"), "w") as f:
        f.write("\n".join(probes) + "\n")


def swap(args):
    deployment = load_all(os.path.join(args.kustomize, "deployment.yaml"))[0]
    secret, crl_map = tls_sources(args.pki)
    vol = tls_volume(deployment)
    mode = vol["projected"].get("defaultMode", 0o644)
    gid = pod_spec(deployment).get("securityContext", {}).get("fsGroup", 0)
    project(args.tls_dir, projected_files(deployment, secret, crl_map), mode, gid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["render", "swap"])
    ap.add_argument("--kustomize", required=True)
    ap.add_argument("--pki", required=True)
    ap.add_argument("--tls-dir", required=True)
    ap.add_argument("--image")
    ap.add_argument("--out")
    ap.add_argument("--name", default="certgate-test")
    ap.add_argument("--https-port", type=int)
    ap.add_argument("--admin-port", type=int)
    args = ap.parse_args()
    (render if args.command == "render" else swap)(args)


if __name__ == "__main__":
    sys.exit(main())
