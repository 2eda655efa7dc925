#!/usr/bin/env python3
"""Writes a one-layer OCI image archive from a directory, with no registry
and no container engine: the layer is the directory as an uncompressed tar
(files owned by root, mtime 0, sorted: the same input gives the same image
digest), then the image config, the manifest, index.json and oci-layout,
tarred as an OCI image layout. The index names the image with the
annotations `ctr images import` reads (io.containerd.image.name) and the OCI
one (org.opencontainers.image.ref.name).

  oci-image.py --name NAME --rootfs DIR --out FILE [--user UID:GID] [--env K=V]... -- ENTRYPOINT...

obtain-node.sh makes the node's pause image with it, and node-check.sh the
image of its test pod.
"""
import argparse
import hashlib
import io
import json
import os
import platform
import sys
import tarfile

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def layer_of(rootfs):
    """The directory as a tar: root-owned, mtime 0, in sorted order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                path = os.path.join(dirpath, name)
                info = tar.gettarinfo(path, arcname=os.path.relpath(path, rootfs))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def blob(tar, data):
    """Adds data as blobs/sha256/<digest>; returns its descriptor fields."""
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="image reference, e.g. localhost/x/pause:3.10")
    p.add_argument("--rootfs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--user", default="")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("entrypoint", nargs="+")
    a = p.parse_args()

    layer = layer_of(a.rootfs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": ARCH,
        "os": "linux",
        "config": {"Entrypoint": a.entrypoint, "Env": a.env, "User": a.user},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
        info = tarfile.TarInfo("oci-layout")
        info.size = len(layout)
        tar.addfile(info, io.BytesIO(layout))
        layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(tar, layer)}
        config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                       **blob(tar, json.dumps(config, sort_keys=True).encode())}
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_desc, "layers": [layer_desc]}
        manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                         **blob(tar, json.dumps(manifest, sort_keys=True).encode()),
                         "platform": {"architecture": ARCH, "os": "linux"},
                         "annotations": {"io.containerd.image.name": a.name,
                                         "org.opencontainers.image.ref.name": a.name.rpartition(":")[2]}}
        index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": [manifest_desc]}).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(index)
        tar.addfile(info, io.BytesIO(index))
    os.replace(tmp, a.out)
    print(f"oci-image: {a.name} in {a.out} (manifest {manifest_desc['digest']})", file=sys.stderr)


if __name__ == "__main__":
    main()
