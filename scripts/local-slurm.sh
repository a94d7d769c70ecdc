#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for tests and for trying slurm/*.sh locally.
#
# Usage: scripts/local-slurm.sh start|stop|status DIR
#
#   start   write DIR/slurm.conf for this host (hostname -s, nproc, RealMemory = available memory
#           minus a margin, free ports), start munged if no munge daemon answers, then slurmctld
#           and slurmd with every state/spool/pid/log file under DIR, and wait (bounded) until the
#           node is idle. Prints the line to source: `. DIR/env.sh` (sets SLURM_CONF).
#   stop    stop the daemons started for DIR (by their pid files) and munged if this script
#           started it and no other local cluster still uses it.
#   status  print whether the daemons for DIR are running and the node state; exit 1 if not up.
#
# Safe to run twice: `start` on a running cluster only reports it; `stop` on a stopped one is a no-op.
# Needs root (the daemons run as root, jobs as the submitting user) and Debian's slurm-wlm + munge
# (scripts/install-sysdeps.sh). Env: LOCAL_SLURM_WAIT (seconds to wait for the node, default 60),
# LOCAL_SLURM_MEM_MARGIN_MB (memory kept back from Slurm, default 2048).
set -euo pipefail

usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd -P)
conf=$dir/slurm.conf
wait_s=${LOCAL_SLURM_WAIT:-60}

# shellcheck source=scripts/local-munge.sh
source "$(dirname "${BASH_SOURCE[0]}")/local-munge.sh"

write_conf() {
    local host cpus avail_mb margin_mb mem_mb port
    host=$(hostname -s)
    cpus=$(nproc)
    avail_mb=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
    margin_mb=${LOCAL_SLURM_MEM_MARGIN_MB:-2048}
    mem_mb=$((avail_mb - margin_mb))
    ((mem_mb >= 1024)) || die "only ${avail_mb} MiB available; Slurm needs at least 1 GiB after the ${margin_mb} MiB margin"
    port=$(pick_ports)
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
    cat >"$conf" <<EOF
# One-node Slurm written by scripts/local-slurm.sh for $dir
ClusterName=dreamlocal
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again after cred_expire seconds (default 120): short here for tests.
AuthInfo=cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
JobRequeue=1
# Keep finished jobs visible to scontrol for an hour (there is no accounting database here).
MinJobAge=3600
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    printf 'export SLURM_CONF=%q\n' "$conf" >"$dir/env.sh"
}

node_state() { sinfo -h -N -n "$(hostname -s)" -o %t 2>/dev/null | head -n1; }

do_start() {
    if alive "$dir/slurmctld.pid" slurmctld && alive "$dir/slurmd.pid" slurmd; then
        log "already running for $dir (node $(SLURM_CONF=$conf node_state)); . $dir/env.sh"
        return 0
    fi
    local t0 i state
    t0=$(date +%s.%N)
    for tool in munged slurmctld slurmd sinfo; do
        command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-sysdeps.sh (as root)"
    done
    [[ $(id -u) -eq 0 ]] || die "must run as root (slurmd starts jobs as their owner)"
    # Half-started from an earlier attempt: stop what is left before rewriting the config.
    stop_pid "$dir/slurmd.pid" slurmd
    stop_pid "$dir/slurmctld.pid" slurmctld
    write_conf
    start_munge
    export SLURM_CONF=$conf
    slurmctld -f "$conf" || die "slurmctld failed to start (see $dir/log/slurmctld.log)"
    slurmd -f "$conf" || die "slurmd failed to start (see $dir/log/slurmd.log)"
    for ((i = 0; i < wait_s * 5; i++)); do
        state=$(node_state || true)
        case $state in
            idle) break ;;
            down* | drain*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.2
    done
    if [[ $state != idle ]]; then
        die "node not idle after ${wait_s}s (state '${state:-unknown}'; see $dir/log/slurmctld.log and slurmd.log)"
    fi
    log "up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s: $(sinfo -h -N -o '%N %c CPUs %m MB %t'); . $dir/env.sh"
}

do_stop() {
    stop_pid "$dir/slurmd.pid" slurmd
    stop_pid "$dir/slurmctld.pid" slurmctld
    stop_munge
}

do_status() {
    local up=0 name
    for name in slurmctld slurmd; do
        if alive "$dir/$name.pid" "$name"; then
            log "$name running (pid $(<"$dir/$name.pid"))"
        else
            log "$name not running"
            up=1
        fi
    done
    if munge_ok; then log "munge answers"; else log "munge does not answer"; up=1; fi
    if [[ $up -eq 0 ]]; then
        log "node $(SLURM_CONF=$conf node_state); . $dir/env.sh"
    fi
    return "$up"
}

case $action in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    *) usage ;;
esac
