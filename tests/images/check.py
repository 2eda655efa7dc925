#!/usr/bin/env python3
"""What make images built, read from its OCI archives (tests/images/run.sh).

  check.py ROOT FRESH         the checks below on ROOT/target/images/*.tar;
                              FRESH is a root filesystem rootfs.sh has just
                              written
  check.py --unpack TAR DIR   the image's root filesystem (its layers in
                              order) into DIR, for run.sh to run it

Checks, for each image:
- its archive names it with the reference that the manifests and the chart
  use, and no shipped manifest sets an imagePullPolicy that would pull it;
- its config runs the Dockerfile stage's ENTRYPOINT as 65532:65532, with
  that stage's EXPOSE and LABELs and no CMD;
- its files are exactly rootfs.sh's output (target/images/context/rootfs/
  rootfs, the directory buildah was handed) plus the binary at the
  Dockerfile's COPY destination and that destination's parent directories:
  same names, types, modes, owners (root), link targets and content. A file
  added to the Dockerfile's image stages and not to rootfs.sh shows up here.
- the directory buildah was handed holds the names, types, modes and link
  targets that rootfs.sh writes now (FRESH; contents may differ by a Debian
  update since), so nothing was added to it on the way;
- the Dockerfile's rootfs stage does nothing but run rootfs.sh, and its
  builder stage runs the cargo build that scripts/images.sh runs: the two
  stages that make images replaces with its own builder and rootfs;
- every shared object in it is the binary's interpreter or in the NEEDED
  closure of the three binaries, each NEEDED name and the interpreter are
  found in it, and nothing else in it is executable (no shell);
and once: every image the manifests use has an archive.
"""
import gzip
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import tarfile

import yaml

IMAGES = {  # Dockerfile target -> binary name (and image name)
    "adapter": "pravega-metrics-adapter",
    "generator": "generator",
    "flink-reader": "flink-reader",
}
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu",
            "usr/lib/aarch64-linux-gnu", "lib", "usr/lib", "lib64")

failures = []
passes = 0


def check(ok, what, detail=""):
    global passes
    if ok:
        passes += 1
        print(f"[images] PASS {what}")
    else:
        failures.append(what)
        print(f"[images] FAIL {what}" + (f"\n{detail}" if detail else ""), file=sys.stderr)


# ---- the OCI archive -------------------------------------------------------

class Archive:
    def __init__(self, path):
        self.tar = tarfile.open(path)
        self.index = self.json("index.json")
        self.manifests = self.index.get("manifests", [])
        self.manifest = self.blob_json(self.manifests[0]["digest"]) if len(self.manifests) == 1 else None
        self.config = self.blob_json(self.manifest["config"]["digest"]) if self.manifest else {}

    def read(self, name):
        return self.tar.extractfile(self.tar.getmember(name)).read()

    def json(self, name):
        return json.loads(self.read(name))

    def blob(self, digest):
        algo, hexd = digest.split(":", 1)
        data = self.read(f"blobs/{algo}/{hexd}")
        if hashlib.new(algo, data).hexdigest() != hexd:
            raise ValueError(f"blob {digest} does not match its digest")
        return data

    def blob_json(self, digest):
        return json.loads(self.blob(digest))

    def layers(self):
        """Each layer as an open tarfile, bottom first."""
        for layer in self.manifest["layers"]:
            data = self.blob(layer["digest"])
            if layer["mediaType"].endswith("+gzip") or data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            yield tarfile.open(fileobj=io.BytesIO(data))


def norm(name):
    """A layer member's name as a path relative to /, "" for / itself."""
    name = os.path.normpath("/" + name).lstrip("/")
    return name


def image_files(archive):
    """path -> (type, mode, uid, gid, link target, sha256) over all layers;
    whiteouts are reported as such."""
    files = {}
    for layer in archive.layers():
        for m in layer.getmembers():
            path = norm(m.name)
            if not path:
                continue
            if os.path.basename(path).startswith(".wh."):
                files[path] = ("whiteout", 0, 0, 0, "", "")
                continue
            digest = ""
            if m.isfile():
                digest = hashlib.sha256(layer.extractfile(m).read()).hexdigest()
                kind = "file"
            elif m.isdir():
                kind = "dir"
            elif m.issym():
                kind = "symlink"
            elif m.islnk():
                kind = "hardlink"
            else:
                kind = "other"
            files[path] = (kind, m.mode & 0o7777, m.uid, m.gid, m.linkname, digest)
    return files


def dir_files(root, prefix=""):
    """The same shape for a directory on disk, every owner root."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            path = os.path.join(prefix, os.path.relpath(full, root))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                entry = ("symlink", 0o777, 0, 0, os.readlink(full), "")
            elif stat.S_ISDIR(st.st_mode):
                entry = ("dir", st.st_mode & 0o7777, 0, 0, "", "")
            else:
                with open(full, "rb") as f:
                    entry = ("file", st.st_mode & 0o7777, 0, 0, "", hashlib.sha256(f.read()).hexdigest())
            files[path] = entry
    return files


def describe_diff(expected, actual, where="the image"):
    def show(e):
        kind, mode, uid, gid, link = e[:5]
        return f"{kind} {mode:04o} {uid}:{gid}" + (f" -> {link}" if link else "")
    lines = []
    for path in sorted(set(expected) | set(actual)):
        e, a = expected.get(path), actual.get(path)
        if e == a:
            continue
        if e is None:
            lines.append(f"  only in {where}: /{path} ({show(a)})")
        elif a is None:
            lines.append(f"  missing from {where}: /{path} ({show(e)})")
        elif e[:5] != a[:5]:
            lines.append(f"  /{path}: expected {show(e)}, {where} {show(a)}")
        else:
            lines.append(f"  /{path}: content differs")
    return "\n".join(lines[:40]) + ("\n  ..." if len(lines) > 40 else "")


# ---- the Dockerfile --------------------------------------------------------

def dockerfile_stages(path):
    """stage name -> (FROM argument, [instruction lines]), continuation lines
    joined, comments dropped."""
    stages, current, logical = {}, None, ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not logical and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                logical += line[:-1].strip() + " "
                continue
            logical += line.strip()
            m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?$", logical, re.I)
            if m:
                current = m.group(2) or m.group(1)
                stages[current] = (m.group(1), [])
            elif current is not None:
                stages[current][1].append(logical)
            logical = ""
    return stages


def stage_config(stages, target):
    """What the stage chain ending in target sets: user, entrypoint, exposed
    ports, labels, and the COPY lines, base first."""
    chain = []
    name = target
    while name in stages:
        chain.insert(0, name)
        name = stages[name][0]
    user, entrypoint, ports, labels, copies = None, None, set(), {}, []
    for name in chain:
        for ins in stages[name][1]:
            word, _, rest = ins.partition(" ")
            word = word.upper()
            if word == "USER":
                user = rest.strip()
            elif word == "ENTRYPOINT":
                entrypoint = json.loads(rest)
            elif word == "EXPOSE":
                ports |= {p if "/" in p else p + "/tcp" for p in rest.split()}
            elif word == "LABEL":
                for k, v in re.findall(r'(\S+?)=("(?:[^"\\]|\\.)*"|\S+)', rest):
                    labels[k] = json.loads(v) if v.startswith('"') else v
            elif word == "COPY":
                copies.append(rest.split())
            else:
                copies.append(["unexpected", ins])
    return chain, user, entrypoint, ports, labels, copies


# ---- ELF -------------------------------------------------------------------

def elf_info(path):
    """(interpreter or None, [NEEDED names]) via readelf."""
    dyn = subprocess.run(["readelf", "-dlW", path], capture_output=True, text=True, check=True).stdout
    interp = re.search(r"Requesting program interpreter: (\S+)\]", dyn)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    return (interp.group(1) if interp else None), needed


def resolve(rootfs, path, depth=0):
    """A path inside the unpacked rootfs, symbolic links followed inside it."""
    full = os.path.join(rootfs, path.lstrip("/"))
    if os.path.islink(full) and depth < 16:
        target = os.readlink(full)
        if not target.startswith("/"):
            target = os.path.join(os.path.dirname("/" + path.lstrip("/")), target)
        return resolve(rootfs, os.path.normpath(target), depth + 1)
    return full


def find_library(rootfs, soname):
    for d in LIB_DIRS:
        full = resolve(rootfs, f"/{d}/{soname}")
        if os.path.isfile(full):
            return full
    return None


# ---- the checks ------------------------------------------------------------

def manifest_refs(root):
    """Every image reference the shipped manifests and chart use, and the
    imagePullPolicy lines among them."""
    refs, policies = set(), []
    for base in ("manifests", "charts"):
        for dirpath, _, names in os.walk(os.path.join(root, base)):
            for name in names:
                if not name.endswith((".yaml", ".yml")):
                    continue
                text = open(os.path.join(dirpath, name)).read()
                refs |= set(re.findall(r"^\s*image:\s*\"?([a-z0-9.\-]+/[^\s\"{}]+:[^\s\"{}]+)", text, re.M))
                policies += re.findall(r"imagePullPolicy:\s*(\S+)", text)
    chart = os.path.join(root, "charts/pravega-metrics-adapter")
    values = yaml.safe_load(open(os.path.join(chart, "values.yaml")))
    app = yaml.safe_load(open(os.path.join(chart, "Chart.yaml")))["appVersion"]
    refs.add(f"{values['image']['repository']}:{values['image']['tag'] or app}")
    return refs, policies


def main(root, fresh):
    images = os.path.join(root, "target/images")
    rootfs = os.path.join(images, "context/rootfs/rootfs")
    dockerfile = os.path.join(root, "manifests/docker/Dockerfile")
    stages = dockerfile_stages(dockerfile)

    shape = lambda files: {p: e[:5] for p, e in files.items()}
    handed, written = shape(dir_files(rootfs)), shape(dir_files(fresh))
    check(handed == written, "the root filesystem buildah was handed is the one rootfs.sh writes "
          f"({len(written)} entries)", describe_diff(written, handed, "the handed directory"))

    # The two stages make images replaces.
    rootfs_stage = stages.get("rootfs", (None, []))
    check(rootfs_stage[0] == "debian:bookworm-slim" and rootfs_stage[1] == [
        "COPY manifests/docker/rootfs.sh /usr/local/bin/rootfs.sh",
        "RUN apt-get update && rootfs.sh /rootfs",
    ], "the Dockerfile's rootfs stage only runs rootfs.sh (what make images runs in its place)",
        f"  its lines: {rootfs_stage}")
    builder_lines = " ".join(stages.get("builder", (None, []))[1])
    script = open(os.path.join(root, "scripts/images.sh")).read()
    dockerfile_build = re.search(r"cargo build[^&\\]*?(?=\s*&&|$)", builder_lines)
    script_build = re.search(r"^\$cargo (build .*)$", script, re.M)
    # images.sh's profile is IMAGE_PROFILE, release unless set: --release.
    script_words = script_build.group(1).replace('--profile "$profile"', "--release").split() if script_build else None
    check(dockerfile_build and script_build and dockerfile_build.group(0).split()[1:] == script_words,
          "the Dockerfile's builder stage and scripts/images.sh (IMAGE_PROFILE unset) run the same cargo build",
          f"  Dockerfile: {dockerfile_build and dockerfile_build.group(0)}\n"
          f"  images.sh:  {script_build and script_build.group(1)}")

    refs, policies = manifest_refs(root)
    check(all(p in ("IfNotPresent", "Never") or p.startswith("{{") for p in policies),
          "no shipped manifest sets an imagePullPolicy that pulls", f"  {policies}")
    ours = {r for r in refs if any(r.rsplit(":", 1)[0].endswith("/" + n) for n in IMAGES.values())}

    expected_rootfs = dir_files(rootfs)
    closure, so_files, interpreters = set(), {}, set()
    for target, name in IMAGES.items():
        path = os.path.join(images, name + ".tar")
        if not os.path.isfile(path):
            check(False, f"{name}: {path} exists")
            continue
        archive = Archive(path)
        check(len(archive.manifests) == 1, f"{name}: the archive holds one image")
        if not archive.manifest:
            continue
        ref = archive.manifests[0].get("annotations", {}).get("org.opencontainers.image.ref.name")
        check(ref in ours and ref.rsplit(":", 1)[0].endswith("/" + name),
              f"{name}: the archive names it {ref}, as the manifests do",
              f"  the manifests' references: {sorted(ours)}")
        ours.discard(ref)

        chain, user, entrypoint, ports, labels, copies = stage_config(stages, target)
        cfg = archive.config.get("config", {})
        check(chain[0] == "runtime" and stages["runtime"][0] == "scratch",
              f"{name}: its Dockerfile stage builds FROM scratch", f"  stages: {chain}")
        check(cfg.get("User") == user == "65532:65532", f"{name}: runs as 65532:65532",
              f"  config {cfg.get('User')!r}, Dockerfile {user!r}")
        check(cfg.get("Entrypoint") == entrypoint == [f"/usr/local/bin/{name}"] and not cfg.get("Cmd"),
              f"{name}: entrypoint {entrypoint}, no CMD",
              f"  config {cfg.get('Entrypoint')} {cfg.get('Cmd')}, Dockerfile {entrypoint}")
        check(set(cfg.get("ExposedPorts") or {}) == ports, f"{name}: exposes {sorted(ports) or 'nothing'}",
              f"  config {cfg.get('ExposedPorts')}")
        check((cfg.get("Labels") or {}) == labels, f"{name}: the Dockerfile's labels and no other",
              f"  config {cfg.get('Labels')}, Dockerfile {labels}")
        check(archive.config.get("os") == "linux" and archive.config.get("architecture"),
              f"{name}: platform {archive.config.get('os')}/{archive.config.get('architecture')}")

        # The file set the Dockerfile's stages give: rootfs.sh's output, then
        # each COPY --from=builder /out/BIN DEST with DEST's parents.
        expected = dict(expected_rootfs)
        bad = [c for c in copies if c[:2] != ["--from=rootfs", "/rootfs/"] and not
               (len(c) == 3 and c[0] == "--from=builder" and c[1].startswith("/out/"))]
        check(not bad and ["--from=rootfs", "/rootfs/", "/"] in copies,
              f"{name}: its files come only from rootfs.sh and the builder's /out", f"  {bad}")
        for c in copies:
            if c[0] != "--from=builder":
                continue
            dest = c[2].lstrip("/")
            # What images.sh handed buildah as the builder stage: the
            # binary of the profile it built (IMAGE_PROFILE).
            binary = os.path.join(images, "context", "builder", c[1].lstrip("/"))
            with open(binary, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            expected[dest] = ("file", os.stat(binary).st_mode & 0o7777, 0, 0, "", digest)
            parent = os.path.dirname(dest)
            while parent:
                expected.setdefault(parent, ("dir", 0o755, 0, 0, "", ""))
                parent = os.path.dirname(parent)
        actual = image_files(archive)
        check(actual == expected, f"{name}: its files are rootfs.sh's output plus the binary "
              f"({len(actual)} entries)", describe_diff(expected, actual))

        # Executables and shared objects, read from the unpacked image.
        unpacked = os.path.join(images, "context", "unpacked-" + name)
        subprocess.run(["rm", "-rf", unpacked], check=True)
        unpack(path, unpacked)
        entry = resolve(unpacked, entrypoint[0])
        check(os.path.isfile(entry) and os.access(entry, os.X_OK),
              f"{name}: the entrypoint is an executable file in the image")
        interp, needed = elf_info(entry)
        interpreters.add(interp)
        check(interp and os.path.isfile(resolve(unpacked, interp)),
              f"{name}: its interpreter {interp} is in the image")
        todo, seen, missing = list(needed), set(), []
        while todo:
            so = todo.pop()
            if so in seen:
                continue
            seen.add(so)
            lib = find_library(unpacked, so)
            if lib is None:
                missing.append(so)
                continue
            todo += elf_info(lib)[1]
        closure |= seen
        check(not missing, f"{name}: every library it needs is in the image ({', '.join(sorted(seen))})",
              f"  missing: {missing}")
        stray = []
        for path_, (kind, mode, *_rest) in actual.items():
            base = os.path.basename(path_)
            if base in ("sh", "bash", "dash", "ash", "busybox", "su", "env"):
                stray.append(path_)
            elif kind == "file" and mode & 0o111 and "/" + path_ != entrypoint[0] and ".so" not in base:
                stray.append(path_)
            elif kind == "file" and ".so" in base:
                so_files[path_] = base
        check(not stray, f"{name}: no shell and no executable but its binary and shared objects",
              f"  {stray}")
        subprocess.run(["rm", "-rf", unpacked], check=True)

    unneeded = sorted(p for p, base in so_files.items()
                      if base not in closure and "/" + p not in interpreters
                      and not any(os.path.basename(i) == base for i in interpreters))
    check(not unneeded, "every shared object in the images is one the binaries need",
          f"  not needed: {unneeded}")
    check(not ours, "every image the manifests use is built", f"  not built: {sorted(ours)}")

    print(f"images: {passes} passed, {len(failures)} failed")
    return 1 if failures else 0


def unpack(path, dest):
    """The image's layers, bottom first, into dest (owners kept when root)."""
    archive = Archive(path)
    os.makedirs(dest)
    for layer in archive.layers():
        members = [m for m in layer.getmembers() if not os.path.basename(m.name).startswith(".wh.")]
        # Our own archive: links to absolute paths and /tmp's sticky bit stay.
        kwargs = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
        layer.extractall(dest, members=members, numeric_owner=True, **kwargs)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--unpack":
        unpack(sys.argv[2], sys.argv[3])
        sys.exit(0)
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
