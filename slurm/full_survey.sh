#!/bin/bash
# A whole survey on a Slurm cluster:
#     DREAM_CONFIG=survey.yaml DREAM_RUN=/scratch/$USER/survey DREAM_IMAGE=dream-hpc.sif sbatch slurm/full_survey.sh
#
# 1. Queues ONE Image3 job (slurm/image3.sh: `srun dream-hpc mosaic` over its ranks, the tiles
#    of every filter in parallel, then `dream-hpc audit`) with --dependency=afterok on this job, so it waits in the queue and starts
#    once the units are done, after this many-node allocation has been released.
# 2. Runs the per-unit phase, `srun --mpi=pmi2 dream-hpc run CONFIG --out RUN --no-mosaic`,
#    inside the image when DREAM_IMAGE is set, else from DREAM_VENV / PATH.
# 3. Time limit: Slurm sends SIGUSR1 to this script --signal seconds before the limit. The script
#    then writes RUN/STOP (the engine stops handing out units; running ones finish), waits for the
#    ranks until shortly before the limit (then TERM: unfinished units are redone on resume), and
#    requeues this job (`scontrol requeue`). The requeued job reruns the same command, which
#    resumes from the journal; the queued Image3 job keeps waiting for it.
# A rerun with the same DREAM_CONFIG/DREAM_RUN (e.g. after scancel) also resumes.
#
# Every #SBATCH default below can be overridden on the sbatch command line (--nodes=8 ...) or with
# SBATCH_* variables. Inputs: DREAM_CONFIG, DREAM_RUN, DREAM_IMAGE, DREAM_BINDS, DREAM_VENV,
# CRDS_PATH, MIRAGE_DATA (slurm/common.sh); DREAM_MPI (srun --mpi, default pmi2), DREAM_SRUN_ARGS,
# DREAM_MAX_REQUEUES (default 20); Image3 job: DREAM_IMAGE3_NODES, _TASKS (default: this job's tasks
# per node), _MEM, _TIME, _CPUS, _PARTITION,
# _ACCOUNT, _ARGS (extra sbatch options), _OUTPUT. docs/cluster.md has examples.
#SBATCH --job-name=dream-survey
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=16
#SBATCH --cpus-per-task=1
#SBATCH --mem-per-cpu=8G
#SBATCH --time=12:00:00
#SBATCH --output=dream-survey-%j.out
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@900
#SBATCH --requeue
set -euo pipefail

# Under sbatch this file runs from Slurm's spool: find slurm/ via the submitted script's path.
if [[ -z ${DREAM_SLURM_DIR:-} ]]; then
    if [[ -n ${SLURM_JOB_ID:-} ]]; then
        DREAM_SLURM_DIR=$(dirname "$(scontrol show job "$SLURM_JOB_ID" | sed -n 's/^ *Command=//p' | head -n1)")
    else
        DREAM_SLURM_DIR=$(dirname "${BASH_SOURCE[0]}")
    fi
fi
DREAM_SLURM_DIR=$(realpath "$DREAM_SLURM_DIR")
export DREAM_SLURM_DIR
# shellcheck source=slurm/common.sh
source "$DREAM_SLURM_DIR/common.sh"

[[ -n ${SLURM_JOB_ID:-} ]] || dream_die "submit this script with sbatch (it needs a Slurm allocation)"
dream_inputs
dream_launcher
restarts=${SLURM_RESTART_COUNT:-0}
slurm_log=$DREAM_RUN/logs/slurm
mkdir -p "$slurm_log"
stop_file=$DREAM_RUN/STOP
stop_tag="written by slurm/full_survey.sh"
dream_log "survey job $SLURM_JOB_ID (restart $restarts) on ${SLURM_JOB_NUM_NODES:-?} node(s) ${SLURM_JOB_NODELIST:-?}," \
    "${SLURM_NTASKS:-?} tasks; config $DREAM_CONFIG; run $DREAM_RUN; image ${DREAM_IMAGE:-none}"
echo "$(date '+%F %T') job $SLURM_JOB_ID restart $restarts nodes ${SLURM_JOB_NODELIST:-?} tasks ${SLURM_NTASKS:-?}" \
    "image ${DREAM_IMAGE:-none}" >>"$slurm_log/jobs.log"

# A stop request left by an earlier attempt of this script must not stop this one.
if [[ -f $stop_file ]] && grep -q "$stop_tag" "$stop_file"; then
    rm -f "$stop_file"
fi

# --- 1. the Image3 job, queued now, started by Slurm after this job succeeds -----------------
submit_image3() {
    local record=$slurm_log/image3.job old parent state
    if [[ -f $record ]]; then
        read -r old parent <"$record" || true
        state=$(squeue -h -j "$old" -o %T 2>/dev/null || true)
        if [[ $parent == "$SLURM_JOB_ID" && -n $state ]]; then
            dream_log "Image3 job $old already queued for this job ($state)"
            return
        fi
        if [[ -n $state && $parent != "$SLURM_JOB_ID" ]]; then
            # Waits on an earlier survey job that will never succeed: replace it.
            scancel "$old" 2>/dev/null || true
            dream_log "cancelled Image3 job $old (it waited on survey job $parent)"
        fi
    fi
    local args=(--parsable --dependency="afterok:$SLURM_JOB_ID" --kill-on-invalid-dep=yes
                --job-name="${SLURM_JOB_NAME:-dream-survey}-image3")
    [[ -n ${DREAM_IMAGE3_MEM:-} ]] && args+=(--mem="$DREAM_IMAGE3_MEM")
    [[ -n ${DREAM_IMAGE3_TIME:-} ]] && args+=(--time="$DREAM_IMAGE3_TIME")
    [[ -n ${DREAM_IMAGE3_CPUS:-} ]] && args+=(--cpus-per-task="$DREAM_IMAGE3_CPUS")
    [[ -n ${DREAM_IMAGE3_NODES:-} ]] && args+=(--nodes="$DREAM_IMAGE3_NODES")
    # Ranks of the Image3 job: DREAM_IMAGE3_TASKS, else as many as this job runs on one node (its
    # tiles run on them); image3.sh's own default (2) could ask more than a node of this partition has.
    local per_node=${SLURM_TASKS_PER_NODE:-1}
    per_node=${per_node%%[(,]*}
    args+=(--ntasks="${DREAM_IMAGE3_TASKS:-$per_node}")
    [[ -n ${DREAM_IMAGE3_OUTPUT:-} ]] && args+=(--output="$DREAM_IMAGE3_OUTPUT")
    local partition=${DREAM_IMAGE3_PARTITION:-${SLURM_JOB_PARTITION:-}}
    local account=${DREAM_IMAGE3_ACCOUNT:-${SLURM_JOB_ACCOUNT:-}}
    [[ -n $partition ]] && args+=(--partition="$partition")
    [[ -n $account ]] && args+=(--account="$account")
    local extra=()
    read -r -a extra <<<"${DREAM_IMAGE3_ARGS:-}"
    # Without this job's SLURM_*/SBATCH_* variables, which would otherwise leak into the new job's
    # options and provenance (SLURM_CONF is kept: it names the cluster).
    local clean=() var
    for var in $(compgen -e); do
        if [[ $var == SLURM_* && $var != SLURM_CONF ]] || [[ $var == SBATCH_* ]]; then
            clean+=(-u "$var")
        fi
    done
    local id
    id=$(env "${clean[@]}" sbatch "${args[@]}" "${extra[@]}" "$DREAM_SLURM_DIR/image3.sh") \
        || dream_die "could not submit the Image3 job (see the sbatch error above)"
    id=${id%%;*}
    echo "$id $SLURM_JOB_ID" >"$record"
    dream_log "queued Image3 job $id (starts after job $SLURM_JOB_ID completes successfully)"
}
submit_image3

# --- 2. the per-unit phase ---------------------------------------------------------------------
stop_requested=0
too_short=0
srun_pid=
# shellcheck disable=SC2317  # reached through trap
on_usr1() {
    if ((SECONDS < ${DREAM_MIN_ATTEMPT_S:-300})); then
        # The warning came (almost) at once: the limit is shorter than the warning lead time, and
        # requeueing would only repeat that. Stop for good with the fix instead.
        too_short=1
    fi
    stop_requested=1
    dream_log "time limit near (SIGUSR1): asking the engine to stop taking new units ($stop_file)"
    printf '%s for job %s at %s: time limit near\n' "$stop_tag" "$SLURM_JOB_ID" "$(date '+%F %T')" >"$stop_file.tmp"
    mv -f "$stop_file.tmp" "$stop_file"
}
# shellcheck disable=SC2317  # reached through trap
on_term() {
    dream_log "terminated (SIGTERM): passing it to the ranks; rerun the same command to resume"
    [[ -n $srun_pid ]] && kill -TERM "$srun_pid" 2>/dev/null
    wait "$srun_pid" 2>/dev/null
    exit 143
}
trap on_usr1 USR1
trap on_term TERM

srun_args=(--mpi="${DREAM_MPI:-pmi2}" --kill-on-bad-exit=1)
read -r -a srun_extra <<<"${DREAM_SRUN_ARGS:-}"
# Rank 0 opens a new journal file once MPI is up: none new means the ranks died in MPI start-up.
rank0_journals() {
    local files=("$DREAM_RUN"/journal/rank00000-*.jsonl)
    [[ -f ${files[0]} ]] && echo "${#files[@]}" || echo 0
}
launch() {
    journals_before=$(rank0_journals)
    # Runs in the background so the traps fire at once (bash defers them while a foreground child runs).
    srun "${srun_args[@]}" "${srun_extra[@]}" "${DREAM_LAUNCH[@]}" run "$DREAM_CONFIG" --out "$DREAM_RUN" --no-mosaic &
    srun_pid=$!
}
launch
start_retries=${DREAM_MPI_START_RETRIES:-2}

# Seconds left before Slurm's limit (from the job's end time).
seconds_left() {
    local end
    end=$(squeue -h -j "$SLURM_JOB_ID" -o %e 2>/dev/null || true)
    if [[ $end =~ ^[0-9]{4}- ]]; then
        echo $(($(date -d "$end" +%s) - $(date +%s)))
    else
        echo 999999
    fi
}

rc=0
graced=0
continue_wait=1
while ((continue_wait)); do
while true; do
    set +e
    wait "$srun_pid"
    rc=$?
    set -e
    kill -0 "$srun_pid" 2>/dev/null || break  # srun ended: rc is its exit code
    # A trapped signal interrupted `wait`. After a stop request, give the ranks until shortly
    # before the limit to finish their units, then TERM them (those units are redone on resume).
    if [[ $stop_requested -eq 1 && $graced -eq 0 ]]; then
        graced=1
        margin=${DREAM_STOP_MARGIN:-90}
        (
            while kill -0 "$srun_pid" 2>/dev/null; do
                if (($(seconds_left) <= margin)); then
                    echo "[dream-slurm] $margin s before the limit: sending TERM to the ranks"
                    kill -TERM "$srun_pid" 2>/dev/null
                    break
                fi
                sleep 5
            done
        ) &
    fi
done
# MPI start-up can fail for reasons outside the survey (e.g. a shared-memory segment left on the
# node by a killed step of the same job id before a requeue). A new srun is a new step with its
# own names: retry a few times when nothing started (exit codes 1-3 are the engine's own), before
# calling the attempt failed.
if [[ $rc -gt 3 && $stop_requested -eq 0 && $start_retries -gt 0 && $(rank0_journals) -eq $journals_before ]]; then
    start_retries=$((start_retries - 1))
    dream_log "the ranks ended (exit code $rc) before MPI start-up completed; relaunching as a new job step"
    sleep 2
    launch
    continue_wait=1
else
    continue_wait=0
fi
done
dream_log "per-unit phase ended with exit code $rc"

# The engine's last pass ended normally: rank 0's newest journal file ends with its run_end record.
pass_completed() {
    local files=("$DREAM_RUN"/journal/rank00000-*.jsonl)
    [[ -f ${files[-1]} ]] && tail -n 1 "${files[-1]}" | grep -q '"kind":"run_end"'
}

# --- 3. hand over: requeue at the time limit, else let the Image3 job start ------------------
if [[ $stop_requested -eq 1 && $rc -ne 2 ]]; then
    if [[ $too_short -eq 1 ]]; then
        dream_die "the time-limit warning (SIGUSR1) came ${SECONDS} s after the start: --time is not much longer than the --signal lead time (default 900 s); resubmit with a longer --time or e.g. --signal=B:USR1@300"
    fi
    if ((restarts >= ${DREAM_MAX_REQUEUES:-20})); then
        dream_die "not requeueing: already restarted $restarts times (DREAM_MAX_REQUEUES); give the job more time or nodes"
    fi
    dream_log "requeueing job $SLURM_JOB_ID: the restarted job resumes from the journal"
    echo "$(date '+%F %T') job $SLURM_JOB_ID requeued after restart $restarts" >>"$slurm_log/jobs.log"
    trap - TERM  # the requeue TERMs this script: that is expected, not a cancellation
    scontrol requeue "$SLURM_JOB_ID"
    sleep 60  # scontrol requeue ends this script; never fall through to a successful exit
    exit 1
fi
case $rc in
    0) dream_log "all units done; the Image3 job can start" ;;
    1)  # Exit 1 is also what a crash gives: only a pass that journaled its run_end counts as done.
        if pass_completed; then
            dream_log "some units failed (see above, or: dream-hpc status $DREAM_RUN); the Image3 job makes" \
                "the mosaics only if engine.allow_partial_mosaic allows it"
            rc=0
        else
            dream_log "the engine ended without finishing its pass (see the errors above); the Image3 job" \
                "will be cancelled by Slurm; resubmit to resume"
        fi ;;
    3)  # RUN/STOP written by someone else: the engine stopped cleanly; no automatic requeue.
        dream_log "the engine stopped on request ($stop_file); remove it and resubmit to resume" ;;
    *) dream_log "the per-unit phase failed (exit code $rc); the Image3 job will be cancelled by Slurm" ;;
esac
exit "$rc"
