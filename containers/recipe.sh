#!/bin/sh
# The image's build steps: one recipe, two builders.
#
#   apptainer build (make container): containers/dream-hpc.def's %post runs this file on the
#       definition's base image (python:3.11.12-slim-bookworm, pinned by digest).
#   containers/build-rootfs.sh (make container-rootfs): runs the same %post, with chroot, in a
#       Debian 12 root filesystem made by `debootstrap --variant=minbase bookworm`.
#
# Both bases are Debian 12 (bookworm) with Python 3.11; the identity written at the end
# (/opt/dream-hpc/meta/image.json) says which builder and base made the image, and what went in.
# Before this runs, the definition's %files are in place under /opt/dream-hpc (the lock, the
# source, config/, the staged references, meta/git_commit, this recipe and image_identity.py).
#
# Env (set by the definition's %post):
#   DREAM_IMAGE_BUILDER   apptainer | debootstrap
#   DREAM_IMAGE_BASE      the base the builder started from
#   DREAM_IMAGE_CONTEXT   the CRDS context the definition pins (the staged cache must hold that one)
#   DREAM_IMAGE_LABELS    optional: where to append labels when not under Apptainer (whose
#                         $APPTAINER_LABELS is used first); build-rootfs.sh merges them into labels.json
#   PIP_CERT              optional: a CA bundle for the build's downloads (a TLS-inspecting proxy)
set -eu

builder=${DREAM_IMAGE_BUILDER:?DREAM_IMAGE_BUILDER must name the builder (apptainer or debootstrap)}
base=${DREAM_IMAGE_BASE:?DREAM_IMAGE_BASE must name the base image}
context=${DREAM_IMAGE_CONTEXT:?DREAM_IMAGE_CONTEXT must name the pinned CRDS context}
top=/opt/dream-hpc
# No pip cache in the image (and Debian 12's pip 23.0.1 silently writes none anyway).
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# 1. Python 3.11 with venv, and what the lock's source distributions need to build (nircam-gsim
#    and others compile C extensions): a C compiler and Python's headers. The definition's base
#    has Python 3.11 in /usr/local with its headers; a Debian 12 minbase gets Debian's python3.11.
#    The build tools are removed again at the end of step 2; no recommends, no documentation.
py_include=$(python3.11 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
runtime_pkgs="" build_pkgs=""
python3.11 -c 'import ensurepip, venv' 2>/dev/null || runtime_pkgs="python3.11 python3.11-venv"
[ -n "$py_include" ] && [ -f "$py_include/Python.h" ] || build_pkgs="python3.11-dev"
command -v gcc >/dev/null || build_pkgs="$build_pkgs gcc libc6-dev"
if [ -n "$runtime_pkgs$build_pkgs" ]; then
    if [ ! -e /etc/dpkg/dpkg.cfg.d/dream-hpc-nodoc ]; then
        printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
            'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' \
            'path-exclude=/usr/share/locale/*' >/etc/dpkg/dpkg.cfg.d/dream-hpc-nodoc
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086  # word lists
    apt-get install -y -qq --no-install-recommends $runtime_pkgs $build_pkgs >/dev/null
fi
case $(python3.11 -c 'import sys; print("%d.%d" % sys.version_info[:2])') in
    3.11) ;;
    *) echo "recipe: python3.11 is not Python 3.11" >&2; exit 1 ;;
esac

# 2. Exactly the lock: every package pinned and hash-checked, nothing resolved here.
python3.11 -m venv /opt/dream-hpc/venv
/opt/dream-hpc/venv/bin/python -m pip install --quiet --require-hashes --no-deps -r /opt/dream-hpc/requirements.lock
# dream-hpc itself, without letting pip touch the locked dependencies.
/opt/dream-hpc/venv/bin/python -m pip install --quiet --no-deps --no-build-isolation /opt/dream-hpc/source
rm -rf /opt/dream-hpc/source/build /opt/dream-hpc/source/src/*.egg-info
if [ -n "$build_pkgs" ]; then
    # shellcheck disable=SC2086
    apt-get purge -y -qq --auto-remove $build_pkgs >/dev/null
fi
if [ -n "$runtime_pkgs$build_pkgs" ]; then
    apt-get clean
    rm -rf /var/lib/apt/lists/*
fi

# 3. The cache was staged for one context; the image must be pinned to that same one.
staged=$(cat $top/refkit/CONTEXT)
if [ "$staged" != "$context" ]; then
    echo "build/image-refs holds context $staged but this definition pins $context (CRDS_CONTEXT, label)" >&2
    exit 1
fi
chmod -R a+rX,a-w $top/refkit

# 4. Identity: which builder and base, and the digests of what went in (lock, recipe, source, references).
python3.11 $top/image_identity.py write --builder "$builder" --base "$base" --top $top
labels=${APPTAINER_LABELS:-${SINGULARITY_LABELS:-${DREAM_IMAGE_LABELS:-}}}
if [ -n "$labels" ]; then
    echo "dream-hpc.git_commit $(cat $top/meta/git_commit)" >>"$labels"
    python3.11 $top/image_identity.py labels --top $top >>"$labels"
fi
