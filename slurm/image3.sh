#!/bin/bash
# The Image3 phase of a survey as one Slurm job: `srun dream-hpc mosaic` on all its tasks (MPI ranks),
# then the science check, summary.json and the run's page RUN/report.html, provenance.h5 and `dream-hpc audit` once. With mosaic.mode tiles the mosaic is
# a task graph (engine/mosaic_graph.py: astrometry per visit, outliers per padded visit, one task
# per tile, a merge per filter) spread over the ranks like the units were; each tile task is sized
# by the plan to fit a node's memory (`dream-hpc plan` prints it). Nodes/tasks: sbatch --nodes/--ntasks
# (or DREAM_IMAGE3_NODES/_TASKS from full_survey.sh); one task runs it without srun.
#
# slurm/full_survey.sh submits it with --dependency=afterok:<survey job>, so it starts only once
# every unit has been processed and the many-node allocation is already released. It can also be
# submitted by hand to (re)make the mosaics of a finished run:
#     DREAM_CONFIG=survey.yaml DREAM_RUN=runs/survey sbatch slurm/image3.sh
# Resources: edit the #SBATCH lines, pass sbatch options, or (from full_survey.sh) DREAM_IMAGE3_*.
# Inputs: see slurm/common.sh (DREAM_CONFIG, DREAM_RUN, DREAM_IMAGE, DREAM_BINDS, DREAM_VENV).
#SBATCH --job-name=dream-image3
#SBATCH --nodes=1
#SBATCH --ntasks=2
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
if [[ ${SLURM_NTASKS:-1} -gt 1 ]]; then
    srun_args=(--mpi="${DREAM_MPI:-pmi2}" --kill-on-bad-exit=1)
    read -r -a srun_extra <<<"${DREAM_SRUN_ARGS:-}"
    dream_log "mosaic on $SLURM_NTASKS ranks ($SLURM_JOB_NUM_NODES nodes)"
    srun "${srun_args[@]}" "${srun_extra[@]}" "${DREAM_LAUNCH[@]}" mosaic "$DREAM_CONFIG" --out "$DREAM_RUN" --quiet "${strict[@]}" \
        || rc=$?
else
    "${DREAM_LAUNCH[@]}" mosaic "$DREAM_CONFIG" --out "$DREAM_RUN" --quiet "${strict[@]}" || rc=$?
fi
dream_log "mosaic exit code $rc"
# The record and its audit are made even when a filter failed: they say what is missing.
"${DREAM_LAUNCH[@]}" provenance "$DREAM_RUN" || rc=$((rc ? rc : $?))
"${DREAM_LAUNCH[@]}" audit "$DREAM_RUN" || rc=$((rc ? rc : $?))
dream_log "done (exit code $rc); report: $DREAM_RUN/report.html; status: dream-hpc status $DREAM_RUN"
exit "$rc"
