# shellcheck shell=bash
# Shared by slurm/full_survey.sh and slurm/image3.sh (sourced, not run): inputs, and how to
# launch dream-hpc (inside the Apptainer image, or from a venv / PATH).
#
# Inputs (environment; sbatch passes the submitting shell's environment by default):
#   DREAM_CONFIG  survey config (default: config/demo.yaml under the submit directory)
#   DREAM_RUN     run directory (default: runs/<config name> under the submit directory)
#   DREAM_IMAGE   .sif image; empty = no container
#   DREAM_BINDS   extra apptainer binds, comma separated (src[:dst[:opts]])
#   CRDS_PATH, MIRAGE_DATA  host copies to bind into the image (the config's own paths are bound
#                 anyway: see `dream-hpc slurm binds`)
#   DREAM_VENV    venv holding dream-hpc (no image); default: dream-hpc on PATH

dream_log() { printf '[%s dream-slurm %s] %s\n' "$(date '+%F %T')" "${SLURM_JOB_ID:-local}" "$*"; }
dream_die() { dream_log "error: $*" >&2; exit 2; }

# Resolve and export the inputs as absolute paths (the same strings inside and outside the image).
dream_inputs() {
    local submit=${SLURM_SUBMIT_DIR:-$PWD}
    DREAM_CONFIG=${DREAM_CONFIG:-$submit/config/demo.yaml}
    [[ -f $DREAM_CONFIG ]] || dream_die "DREAM_CONFIG=$DREAM_CONFIG: config file not found (export DREAM_CONFIG=path/to/survey.yaml before sbatch)"
    DREAM_CONFIG=$(realpath "$DREAM_CONFIG")
    local name
    name=$(basename "$DREAM_CONFIG")
    DREAM_RUN=${DREAM_RUN:-$submit/runs/${name%.*}}
    mkdir -p "$DREAM_RUN" || dream_die "DREAM_RUN=$DREAM_RUN: cannot create the run directory"
    DREAM_RUN=$(realpath "$DREAM_RUN")
    DREAM_IMAGE=${DREAM_IMAGE:-}
    if [[ -n $DREAM_IMAGE ]]; then
        [[ -f $DREAM_IMAGE ]] || dream_die "DREAM_IMAGE=$DREAM_IMAGE: image not found (build it with 'make container', or unset DREAM_IMAGE to run from a venv)"
        DREAM_IMAGE=$(realpath "$DREAM_IMAGE")
    fi
    export DREAM_CONFIG DREAM_RUN DREAM_IMAGE
}

# DREAM_LAUNCH: the command prefix that runs `dream-hpc ...` (array).
dream_launcher() {
    if [[ -z $DREAM_IMAGE ]]; then
        local exe
        if [[ -n ${DREAM_VENV:-} ]]; then
            exe=$DREAM_VENV/bin/dream-hpc
            [[ -x $exe ]] || dream_die "DREAM_VENV=$DREAM_VENV: no bin/dream-hpc there (make venv, or fix DREAM_VENV)"
        else
            exe=$(command -v dream-hpc) || dream_die "dream-hpc not on PATH: set DREAM_VENV=/path/to/.venv or DREAM_IMAGE=dream-hpc.sif"
        fi
        # shellcheck disable=SC2034  # used by the scripts that source this file
        DREAM_LAUNCH=("$exe")
        return
    fi
    command -v apptainer >/dev/null || dream_die "apptainer not found on $(hostname -s) (module load apptainer?), or unset DREAM_IMAGE to run from a venv"
    # Bind the directories the config names (asked inside the image: the host may have no
    # dream-hpc), plus RUN, the host CRDS/MIRAGE_DATA copies and DREAM_BINDS; only existing ones.
    local listed path binds=() extra
    listed=$(env -u PYTHONPATH -u PYTHONHOME apptainer exec --bind "$(dirname "$DREAM_CONFIG")" "$DREAM_IMAGE" \
        dream-hpc slurm binds "$DREAM_CONFIG" --run "$DREAM_RUN") || dream_die "the image could not read $DREAM_CONFIG (see above)"
    while IFS= read -r path; do
        [[ -n $path && -e $path ]] && binds+=("$path")
    done <<<"$listed"$'\n'"${CRDS_PATH:-}"$'\n'"${MIRAGE_DATA:-}"
    extra=${DREAM_BINDS:-}
    # No --cleanenv: SLURM_*, PMI_* and APPTAINER_CONTAINER must reach dream-hpc (provenance and
    # MPI wiring). Host PYTHONPATH/PYTHONHOME would shadow the image's locked packages: dropped.
    # shellcheck disable=SC2034  # used by the scripts that source this file
    DREAM_LAUNCH=(env -u PYTHONPATH -u PYTHONHOME apptainer exec
                  --bind "$(IFS=,; echo "${binds[*]}")${extra:+,$extra}" "$DREAM_IMAGE" dream-hpc)
}
