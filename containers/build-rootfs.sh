#!/usr/bin/env bash
# Build the dream-hpc image without Apptainer, from the same definition: `make container-rootfs`.
#
# Usage: containers/build-rootfs.sh [--key] [OUT]        (OUT default: build/container)
#
#   1. debootstrap --variant=minbase a Debian 12 (bookworm) root filesystem: the release of the
#      definition's base image (python:3.11-slim-bookworm), so both builders give Debian 12 + Python 3.11;
#   2. copy the definition's %files into it, exactly as listed there;
#   3. run the definition's %post in it (chroot, containers/image-chroot.sh build): that is
#      containers/recipe.sh, the same steps `apptainer build` runs, installing only requirements.lock
#      with --require-hashes; the recipe records the identity (builder debootstrap, base bookworm);
#   4. write /.singularity.d/ as Apptainer does: env/90-environment.sh from %environment,
#      labels.json from %labels plus the recipe's labels, runscript, test, the definition;
#   5. pack it as SquashFS (what Apptainer runs, and what a .sif holds), run the definition's %test
#      (versions --check, cache verify, identity check) inside the packed image with no network,
#      then record its sha256 with
#      dream_hpc.core.digests.cached_sha256, the function a run inside the image uses to hash it.
#
# Out: OUT/dream-hpc.sqfs, OUT/dream-hpc.sqfs.sha256 (sha256sum format), OUT/image.json (the
# image's identity), OUT/build.json (key, times, sizes), OUT/build.log. OUT/cache/debs keeps
# debootstrap's downloads for the next build. The recipe's apt and pip downloads are not kept:
# Debian 12's pip 23.0.1 writes no cache, and the lock's ~1 GB came from PyPI in under a minute.
# The build is skipped when OUT/build.json has the same key: a sha256 over the definition,
# containers/, the lock and every %files source (the staged references by their CONTEXT and
# manifest). `--key` prints that key and exits.
#
# Needs root, debootstrap, mksquashfs, unshare (scripts/install-sysdeps.sh installs them), the
# staged references (make crds-cache) and build/image-meta/git_commit (make container-rootfs
# writes both). Env: DEBIAN_MIRROR (default: the host's apt source for bookworm, else
# debootstrap's default), DREAM_PYTHON (a python that imports dream_hpc; default .venv/bin/python),
# KEEP_ROOTFS=1 (keep the unpacked tree as OUT/rootfs).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd -P)
here=$root/containers
def=$here/dream-hpc.def
die() { echo "build-rootfs: error: $*" >&2; exit 1; }
log() { echo "build-rootfs: $*"; }

print_key=0
if [[ ${1:-} == --key ]]; then
    print_key=1
    shift
fi
out=${1:-$root/build/container}

# A section of the definition, as Apptainer reads it: the lines after `%name` up to the next `%`.
section() { awk -v want="$1" '/^%[A-Za-z]+/ { cur = substr($1, 2); next } cur == want' "$def"; }
# %files entries: "source destination", comments and blank lines skipped.
files_entries() { section files | sed -e 's/#.*//' | awk 'NF == 2 { print $1, $2 }'; }

# The cache key: everything the image is built from, by content.
image_key() {
    (
        cd "$root"
        sha256sum containers/dream-hpc.def requirements.lock
        find containers -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
        while read -r src _; do
            if [[ $src == build/image-refs ]]; then
                # 3 GB of references: their context and manifest (each file's sha256) stand for them.
                sha256sum "$src/CONTEXT" "$src"/manifest.json* 2>/dev/null || find "$src" -type f -printf '%P %s\n' | sort
            elif [[ $src == build/image-meta ]]; then
                continue  # the commit label: the same content under another commit is the same image
            elif [[ -d $src ]]; then
                find "$src" -type f ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha256sum
            else
                sha256sum "$src"
            fi
        done < <(files_entries)
        echo "debootstrap --variant=minbase bookworm"
    ) | sha256sum | cut -c1-64
}

if [[ $print_key -eq 1 ]]; then
    image_key
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot, mounts); on a machine with Apptainer use 'make container'"
for tool in debootstrap mksquashfs unshare; do
    command -v $tool >/dev/null || die "$tool not found: run scripts/install-sysdeps.sh debootstrap squashfs-tools"
done
py=${DREAM_PYTHON:-$root/.venv/bin/python}
"$py" -c 'import dream_hpc.core.digests' 2>/dev/null || die "$py cannot import dream_hpc (make venv, or set DREAM_PYTHON)"
[[ -f $root/build/image-refs/CONTEXT ]] || die "build/image-refs is not staged: run 'make crds-cache'"
[[ -f $root/build/image-meta/git_commit ]] || die "build/image-meta/git_commit is missing: run 'make container-rootfs'"

mkdir -p "$out"
out=$(cd "$out" && pwd -P)
image=$out/dream-hpc.sqfs
# One build at a time per OUT (make container-rootfs and the test may meet): the second waits, then
# finds the image up to date.
exec 9>"$out/.lock"
flock 9
key=$(image_key)
if [[ -f $image && -f $out/build.json ]] && grep -q "\"key\": \"$key\"" "$out/build.json"; then
    log "up to date: $image (key ${key:0:16}...; $(cut -c1-16 "$image.sha256")...)"
    exit 0
fi

# Never remove a tree that still has something mounted under it (a bind mount would take host
# files with it): the chroot steps mount only in private namespaces, this checks it anyway.
mounts_under() { awk -v p="$1/" 'index($5 "/", p) == 1 { print $5 }' /proc/self/mountinfo; }
safe_rm() {
    local left
    left=$(mounts_under "$1")
    if [[ -n $left ]]; then
        echo "build-rootfs: not removing $1: still mounted under it: $left" >&2
        return 1
    fi
    rm -rf --one-file-system "$1"
}

# A build killed outright (SIGKILL, power) leaves its tree: remove those, never one with a mount in it.
for stale in "$out"/rootfs.tmp-*; do
    [[ -d $stale ]] || continue
    log "removing $stale, left by an interrupted build"
    safe_rm "$stale" || die "cannot remove $stale (see above); unmount what is listed, then rerun"
done
mkdir -p "$out/cache/debs"
rootfs=$(mktemp -d "$out/rootfs.tmp-XXXXXX")
chmod 755 "$rootfs"  # it becomes the image's /: mktemp's 700 would lock out every user (and apt's _apt)
cleanup() {
    [[ -n ${rootfs:-} && -d $rootfs ]] && safe_rm "$rootfs"
    rm -f "$image.tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
exec > >(tee "$out/build.log") 2>&1
log "key $key: building in $rootfs"
t_start=$SECONDS

# 1. Debian 12 minbase, from the host's mirror when it has one for bookworm.
mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
    mirror=$(awk '/^URIs:/ { u = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm" && u != "") { print u; exit } }' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [[ -n $mirror ]] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
fi
t0=$SECONDS
debootstrap --variant=minbase --cache-dir="$out/cache/debs" bookworm "$rootfs" ${mirror:+"$mirror"} >"$out/debootstrap.log" 2>&1 \
    || { tail -20 "$out/debootstrap.log" >&2; die "debootstrap failed (full log: $out/debootstrap.log)"; }
t_debootstrap=$((SECONDS - t0))
log "debootstrap bookworm minbase: ${t_debootstrap} s ($(cat "$rootfs/etc/debian_version"))"

# 2. %files, as listed in the definition.
t0=$SECONDS
while read -r src dest; do
    [[ -e $root/$src ]] || die "%files source $src does not exist"
    mkdir -p "$rootfs$(dirname "$dest")"
    cp -a "$root/$src" "$rootfs$dest"
done < <(files_entries)
t_files=$((SECONDS - t0))

# 3. %post, with chroot: the recipe, told which builder and base this is.
labels_build=/.singularity.d/labels.build
mkdir -p "$rootfs/.singularity.d/env"
: >"$rootfs$labels_build"
t0=$SECONDS
"$here/image-chroot.sh" build "$rootfs" --env DREAM_IMAGE_BUILDER=debootstrap \
    --env "DREAM_IMAGE_BASE=debian:bookworm (debootstrap --variant=minbase)" \
    --env "DREAM_IMAGE_LABELS=$labels_build" \
    -- /bin/sh -c "$(section post)"
t_post=$((SECONDS - t0))
log "%post (containers/recipe.sh): ${t_post} s"

# 4. What Apptainer writes into every image.
t0=$SECONDS
sd=$rootfs/.singularity.d
section environment >"$sd/env/90-environment.sh"
{ echo '#!/bin/sh'; section runscript; } >"$sd/runscript"
{ echo '#!/bin/sh'; section test; } >"$sd/test"
chmod 755 "$sd/runscript" "$sd/test"
cp "$def" "$sd/Singularity"
section labels >"$rootfs$labels_build.def"
"$py" - "$sd/labels.json" "$rootfs$labels_build.def" "$rootfs$labels_build" <<'EOF'
import json
import shlex
import sys

labels = {}
for path in sys.argv[2:]:  # %labels, then what the recipe added (as Apptainer merges them)
    for line in open(path):
        parts = shlex.split(line, comments=True)
        if parts:
            labels[parts[0]] = " ".join(parts[1:])
with open(sys.argv[1], "w") as f:
    json.dump(labels, f, indent=1, sort_keys=True)
EOF
rm -f "$rootfs$labels_build" "$rootfs$labels_build.def"
# Nothing of the build host stays in the image: DNS, logs, apt lists, temporary files.
: >"$rootfs/etc/resolv.conf"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log "$rootfs"/tmp/* \
    "$rootfs"/root/.cache

t_meta=$((SECONDS - t0))

# 5. Pack, test offline, record.
t0=$SECONDS
mksquashfs "$rootfs" "$image.tmp" -noappend -comp zstd -Xcompression-level 3 -quiet -no-progress >/dev/null
t_pack=$((SECONDS - t0))
t0=$SECONDS
"$here/image-chroot.sh" run "$image.tmp" -- /bin/sh /.singularity.d/test
t_test=$((SECONDS - t0))
t0=$SECONDS
mv "$image.tmp" "$image"
sha=$("$py" -c 'import sys; from dream_hpc.core.digests import cached_sha256; print(cached_sha256(sys.argv[1]))' "$image")
echo "$sha  $(basename "$image")" >"$image.sha256"
cp "$rootfs/opt/dream-hpc/meta/image.json" "$out/image.json"
if [[ ${KEEP_ROOTFS:-} == 1 ]]; then
    [[ ! -e $out/rootfs ]] || safe_rm "$out/rootfs"
    mv "$rootfs" "$out/rootfs"
else
    safe_rm "$rootfs"
fi
rootfs=
t_record=$((SECONDS - t0))
"$py" - "$out/build.json" <<EOF
import json, sys
json.dump({"key": "$key", "image": "$image", "sha256": "$sha", "image_bytes": $(stat -c %s "$image"),
           "seconds": {"debootstrap": $t_debootstrap, "files": $t_files, "post": $t_post, "pack": $t_pack,
                       "meta": $t_meta, "test": $t_test, "record": $t_record, "total": $((SECONDS - t_start))},
           "image_id": json.load(open("$out/image.json"))["image_id"]}, open(sys.argv[1], "w"), indent=1)
EOF
log "built $image: $(du -h "$image" | cut -f1), sha256 ${sha:0:16}..., image_id $(cut -c1-16 <<<"$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["image_id"])' "$out/image.json")")..., $((SECONDS - t_start)) s"
