#!/usr/bin/env bash
# Stage the read-only reference data that goes into the Apptainer image (build/image-refs).
#
# Usage: scripts/make-crds-cache.sh [--sync] CONFIG OUT
#
#   (default)  copy the offline reference kit (KIT, default build/refkit, built by `make kit`):
#              crds_cache/, mirage_data/ and manifest.json, hard-linked where possible.
#   --sync     on a machine with network access: a real `crds sync` of the CONFIG's pinned context
#              (mappings) and of exactly the reference files the survey's exposures need (the list
#              `dream-hpc cache refs CONFIG` prints), into OUT/crds_cache. CRDS_SERVER_URL defaults
#              to https://jwst-crds.stsci.edu. MIRAGE_DATA is not staged: bind the site's copy.
#
# Either way OUT/CONTEXT names the context and `dream-hpc cache verify` must pass before OUT
# replaces an earlier staging (built in OUT.tmp-*, renamed at the end). The context must be the
# one containers/dream-hpc.def pins (CRDS_CONTEXT), so the image and its cache cannot disagree.
# Env: KIT, DREAM_PYTHON (python with dream_hpc installed; default .venv/bin/python).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd -P)
die() { echo "make-crds-cache: error: $*" >&2; exit 1; }
log() { echo "make-crds-cache: $*"; }

sync=0
if [[ ${1:-} == --sync ]]; then
    sync=1
    shift
fi
[[ $# -eq 2 ]] || { echo "usage: $0 [--sync] CONFIG OUT" >&2; exit 2; }
config=$1
out=$2
[[ -f $config ]] || die "$config: config file not found"
# OUT is replaced wholesale at the end: refuse anything that is not an earlier staging.
if [[ -e $out && ! -f $out/CONTEXT ]] && [[ -n "$(ls -A "$out" 2>/dev/null)" ]]; then
    die "$out exists and is not a staged cache (no CONTEXT file); choose another OUT or remove it"
fi

py=${DREAM_PYTHON:-$root/.venv/bin/python}
[[ -x $py ]] || py=$(command -v python3) || die "no python found (set DREAM_PYTHON)"
"$py" -c 'import dream_hpc' 2>/dev/null || die "$py cannot import dream_hpc (make venv, or set DREAM_PYTHON)"

context=$("$py" -c 'import sys; from dream_hpc.config import load_config; print(load_config(sys.argv[1]).references.context)' "$config")
pinned=$(sed -n 's/^[[:space:]]*export CRDS_CONTEXT=\([^[:space:]]*\).*/\1/p' "$root/containers/dream-hpc.def")
if [[ $context != "$pinned" ]]; then
    die "$config pins CRDS context $context but containers/dream-hpc.def pins ${pinned:-nothing}; change one (CRDS_CONTEXT and the dream-hpc.crds_context label in the .def)"
fi

out_parent=$(dirname "$out")
mkdir -p "$out_parent"
tmp=$(mktemp -d "$out_parent/.$(basename "$out").tmp-XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT

if [[ $sync -eq 0 ]]; then
    kit=${KIT:-$root/build/refkit}
    [[ -d $kit/crds_cache ]] || die "$kit/crds_cache: no reference kit; build it with 'make kit' (or set KIT)"
    [[ -f $kit/crds_cache/mappings/jwst/$context ]] || die "$kit has no mapping $context (the kit was built for another context)"
    # The whole kit (caches, manifest and its checksum); hard links when on the same file system
    # (no second copy of the data), else a real copy.
    for part in "$kit"/*; do
        cp -al "$part" "$tmp/" 2>/dev/null || cp -a "$part" "$tmp/"
    done
    log "staged the offline reference kit $kit ($context)"
else
    export CRDS_PATH=$tmp/crds_cache
    export CRDS_SERVER_URL=${CRDS_SERVER_URL:-https://jwst-crds.stsci.edu}
    unset CRDS_MODE CRDS_READONLY_CACHE CRDS_CONTEXT
    log "syncing the mappings of $context from $CRDS_SERVER_URL"
    "$py" -m crds.sync --contexts "$context"
    # The references the survey's exposures select under this context (same rules as jwst).
    mapfile -t refs < <("$py" - "$config" "$CRDS_PATH" <<'EOF'
import sys
from pathlib import Path

from dream_hpc.stages.preflight import survey_references
from dream_hpc.config import load_config

names, _ = survey_references(load_config(sys.argv[1]), Path(sys.argv[2]))
print("\n".join(sorted(names)))
EOF
)
    [[ ${#refs[@]} -gt 0 ]] || die "the survey selects no reference files under $context"
    log "syncing ${#refs[@]} reference files"
    "$py" -m crds.sync --contexts "$context" --files "${refs[@]}"
fi

printf '%s\n' "$context" >"$tmp/CONTEXT"
"$py" -m dream_hpc cache verify --quiet --context "$context" "$tmp/crds_cache" \
    || die "the staged cache does not verify (see the lines above); nothing was replaced"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
log "ready: $out (context $context)"
