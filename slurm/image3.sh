#!/bin/bash
# The Image3 phase of a survey as one Slurm job: a single large-memory task runs
# `dream-hpc mosaic` (one Image3 per filter, then the science check, summary.json and the run's page
# RUN/report.html), rebuilds provenance.h5 and runs `dream-hpc audit`.
#
# slurm/full_survey.sh submits it with --dependency=afterok:<survey job>, so it starts only once
# every unit has been processed and the many-node allocation is already released. It can also be
# submitted by hand to (re)make the mosaics of a finished run:
#     DREAM_CONFIG=survey.yaml DREAM_RUN=runs/survey sbatch slurm/image3.sh
# Resources: edit the #SBATCH lines, pass sbatch options, or (from full_survey.sh) DREAM_IMAGE3_*.
# Inputs: see slurm/common.sh (DREAM_CONFIG, DREAM_RUN, DREAM_IMAGE, DREAM_BINDS, DREAM_VENV).
#SBATCH --job-name=dream-image3
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=64G
#SBATCH --time=12:00:00
#SBATCH --output=dream-image3-%j.out
#SBATCH --open-mode=append
set -euo pipefail

# Under sbatch this file runs from Slurm's spool: find slurm/ via the submitted script's path.
if [[ -z ${DREAM_SLURM_DIR:-} ]]; then
    if [[ -n ${SLURM_JOB_ID:-} ]]; then
        DREAM_SLURM_DIR=$(dirname "$(scontrol show job "$SLURM_JOB_ID" | sed -n 's/^ *Command=//p' | head -n1)")
    else
        DREAM_SLURM_DIR=$(dirname "${BASH_SOURCE[0]}")
    fi
fi
# shellcheck source=slurm/common.sh
source "$DREAM_SLURM_DIR/common.sh"

dream_inputs
dream_launcher
dream_log "image3 on $(hostname -s): config $DREAM_CONFIG, run $DREAM_RUN, image ${DREAM_IMAGE:-none}"

rc=0
# DREAM_STRICT=1: a failed science check (summary.json science_passed false) fails the job (exit 4)
strict=()
[[ ${DREAM_STRICT:-0} == 1 ]] && strict=(--strict)
"${DREAM_LAUNCH[@]}" mosaic "$DREAM_CONFIG" --out "$DREAM_RUN" --quiet "${strict[@]}" || rc=$?
dream_log "mosaic exit code $rc"
# The record and its audit are made even when a filter failed: they say what is missing.
"${DREAM_LAUNCH[@]}" provenance "$DREAM_RUN" || rc=$((rc ? rc : $?))
"${DREAM_LAUNCH[@]}" audit "$DREAM_RUN" || rc=$((rc ? rc : $?))
dream_log "done (exit code $rc); report: $DREAM_RUN/report.html; status: dream-hpc status $DREAM_RUN"
exit "$rc"
