#!/usr/bin/env bash
# Run a command inside a dream-hpc root filesystem (chroot), in namespaces of its own.
#
#   containers/image-chroot.sh build ROOTFS [--env NAME=VALUE]... -- CMD...
#       A build step in the (writable) root filesystem ROOTFS, with the host's network and DNS, and
#       the host's CA bundle at $PIP_CERT (a TLS-inspecting proxy), both for the build only.
#   containers/image-chroot.sh run IMAGE [--bind DIR]... [--env NAME=VALUE]... [--pwd DIR] -- CMD...
#       A run from the packed image IMAGE (SquashFS), the way `apptainer exec --cleanenv
#       --writable-tmpfs` runs a .sif: the image read-only under a tmpfs overlay (writes vanish),
#       a fresh network namespace with only loopback (nothing can reach the network, whatever the
#       code tries), each host DIR bound at its own path, and the image's environment
#       (/.singularity.d/env/*.sh, written from %environment) over a clean one. IMAGE itself is
#       bound read-only at its host path and named by DREAM_HPC_IMAGE, as APPTAINER_CONTAINER
#       names a .sif, so dream_hpc.provenance.facts records its sha256 in the run's provenance.
#
# Every mount made here (the image, overlay, proc, dev, binds) lives only in a private mount
# namespace: it disappears with the command, also when the command is killed, and never shows on
# the host. On the way out the mounts are undone in reverse order anyway, and only empty mount
# point directories are removed (rmdir): nothing here deletes a tree that could hold a bind mount.
# Kept from the host environment: LANG, TERM, TZ, OPENBLAS_* (this machine's BLAS kernel
# choice, as Apptainer would pass it), UCX_TLS; everything else comes from the image or --env.
set -euo pipefail

die() { echo "image-chroot: error: $*" >&2; exit 1; }
usage() { sed -n '4p;7p' "$0" | sed 's/^# */usage: /' >&2; exit 2; }

[[ $# -ge 2 ]] || usage
mode=$1
[[ $mode == build || $mode == run ]] || usage
[[ $(id -u) -eq 0 ]] || die "needs root (chroot, mount namespaces)"
command -v unshare >/dev/null || die "unshare not found (util-linux)"

# Re-enter in new namespaces: mount (private propagation) and PID (stray processes end with the
# command; --kill-child: killing this script's unshare, e.g. a test's timeout, ends them all); a
# run also gets a network namespace of its own.
if [[ ${DREAM_IMAGE_CHROOT_INNER:-} != 1 ]]; then
    ns=(--mount --propagation private --pid --fork --kill-child)
    [[ $mode == run ]] && ns+=(--net)
    exec unshare "${ns[@]}" env DREAM_IMAGE_CHROOT_INNER=1 "$0" "$@"
fi
unset DREAM_IMAGE_CHROOT_INNER

target=$(realpath -e "$2" 2>/dev/null) || die "$2 not found"
shift 2
binds=() envs=() pwd_in=/
while [[ $# -gt 0 ]]; do
    case $1 in
        --bind) binds+=("$(realpath -e "$2" 2>/dev/null)") || die "--bind $2: no such directory"; shift 2 ;;
        --env) [[ $2 == *=* ]] || die "--env $2: expected NAME=VALUE"; envs+=("$2"); shift 2 ;;
        --pwd) pwd_in=$2; shift 2 ;;
        --) shift; break ;;
        *) usage ;;
    esac
done
[[ $# -gt 0 ]] || usage

mounted=() made=()
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" 2>/dev/null || true
    done
    for ((i = ${#made[@]} - 1; i >= 0; i--)); do
        rmdir "${made[i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

do_mount() { # do_mount DEST mount-args...
    local dest=$1
    shift
    mount "$@" "$dest"
    mounted+=("$dest")
}

# /dev: a tmpfs with the few devices programs need, not the host's whole /dev.
setup_dev() {
    local dev=$1/dev d
    do_mount "$dev" -t tmpfs -o mode=755,nosuid tmpfs
    for d in null zero full random urandom tty; do
        : >"$dev/$d"
        do_mount "$dev/$d" --bind "/dev/$d"
    done
    mkdir -p "$dev/shm" "$dev/pts"
    do_mount "$dev/shm" -t tmpfs -o mode=1777,nosuid,nodev tmpfs  # MPICH's shared memory
    do_mount "$dev/pts" -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts  # dpkg, apt
    ln -s pts/ptmx "$dev/ptmx"
    ln -s /proc/self/fd "$dev/fd"
    ln -s /proc/self/fd/0 "$dev/stdin"
    ln -s /proc/self/fd/1 "$dev/stdout"
    ln -s /proc/self/fd/2 "$dev/stderr"
}

base_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root)
for name in LANG TERM TZ UCX_TLS ${!OPENBLAS_*}; do
    [[ -n ${!name:-} ]] && base_env+=("$name=${!name}")
done

if [[ $mode == build ]]; then
    root=$target
    [[ -x $root/bin/sh ]] || die "$root is not a root filesystem (no /bin/sh)"
    do_mount "$root/proc" -t proc proc
    setup_dev "$root"
    do_mount "$root/run" -t tmpfs -o mode=755 tmpfs
    mkdir -p "$root/run/dream-build"
    ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
    if [[ -f $ca ]]; then
        cp "$ca" "$root/run/dream-build/ca.crt"
        base_env+=(PIP_CERT=/run/dream-build/ca.crt)
    fi
    # DNS for the downloads, only while building (the image keeps an empty resolv.conf).
    [[ -e $root/etc/resolv.conf ]] || : >"$root/etc/resolv.conf"
    do_mount "$root/etc/resolv.conf" --bind -o ro /etc/resolv.conf
else
    image=$target
    [[ -f $image ]] || die "$image is not an image file"
    ip link set lo up
    work=$(mktemp -d /tmp/dream-image.XXXXXX)
    made+=("$work")
    mkdir "$work/image" "$work/rw" "$work/root"
    made+=("$work/image" "$work/rw" "$work/root")
    do_mount "$work/image" -t squashfs -o loop,ro "$image"
    do_mount "$work/rw" -t tmpfs -o mode=755 tmpfs
    mkdir "$work/rw/upper" "$work/rw/work"
    do_mount "$work/root" -t overlay \
        -o "lowerdir=$work/image,upperdir=$work/rw/upper,workdir=$work/rw/work" overlay
    root=$work/root
    do_mount "$root/proc" -t proc proc
    setup_dev "$root"
    : >"$root/etc/resolv.conf"
    for dir in "${binds[@]}"; do
        mkdir -p "$root$dir"
        do_mount "$root$dir" --bind "$dir"
    done
    mkdir -p "$root$(dirname "$image")"
    [[ -e $root$image ]] || : >"$root$image"
    do_mount "$root$image" --bind "$image"
    mount -o remount,bind,ro "$root$image"
    base_env+=("DREAM_HPC_IMAGE=$image" "DREAM_HPC_IMAGE_RUNTIME=chroot")
fi

# The image's environment as Apptainer sets it: every /.singularity.d/env/*.sh, in order.
# shellcheck disable=SC2016  # expanded inside the chroot
inner='cd "$0" 2>/dev/null || cd /
for f in /.singularity.d/env/*.sh; do [ -r "$f" ] && . "$f"; done
exec "$@"'
status=0
env -i "${base_env[@]}" "${envs[@]}" chroot "$root" /bin/sh -c "$inner" "$pwd_in" "$@" || status=$?
exit "$status"
