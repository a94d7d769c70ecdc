#!/usr/bin/env bash
# Shared by scripts/local-slurm.sh and scripts/local-slurm-cluster.sh (sourced, not run): the
# daemon helpers and munged, started once for all local clusters and stopped by the last of them.
#
# munged is one per machine (its socket is /run/munge/munge.socket.2, reached by path, so also
# from inside network namespaces). A cluster directory registers itself in $munge_users; munged is
# stopped only when this script started it ($munge_owner) and no registered cluster is left.
# The caller sets `dir` (its cluster directory) before sourcing.
# shellcheck shell=bash

munge_dir=/run/munge
munge_owner=$munge_dir/dream-hpc-started.pid   # munged pid, when one of these scripts started it
munge_users=$munge_dir/dream-hpc-users         # one file per cluster dir that relies on it
user_tag=$(printf '%s' "${dir:?set dir before sourcing local-munge.sh}" | tr '/' '_')

log() { echo "${log_name:-local-slurm}: $*"; }
die() { echo "${log_name:-local-slurm}: error: $*" >&2; exit 1; }

alive() {  # alive PIDFILE NAME: the pid in PIDFILE is a running process called NAME
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && [[ "$(ps -o comm= -p "$pid" 2>/dev/null)" == "$2" ]]
}

stop_pid() {  # stop_pid PIDFILE NAME: TERM, wait up to 20 s, then KILL
    local pid i
    alive "$1" "$2" || { rm -f "$1"; return 0; }
    pid=$(<"$1")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        alive "$1" "$2" || break
        sleep 0.1
    done
    if alive "$1" "$2"; then
        log "$2 (pid $pid) did not stop after TERM; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
    log "stopped $2 (pid $pid)"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_ports() {  # two consecutive free ports from 6817 up (another local cluster may hold 6817/6818)
    local p
    for ((p = 6817; p < 6917; p += 2)); do
        if port_free "$p" && port_free $((p + 1)); then
            echo "$p"
            return 0
        fi
    done
    die "no free port pair in 6817..6917 for slurmctld/slurmd"
}

start_munge() {
    mkdir -p "$munge_users"
    touch "$munge_users/$user_tag"
    if munge_ok; then
        return 0
    fi
    [[ -r /etc/munge/munge.key ]] || die "/etc/munge/munge.key is missing (reinstall munge or run 'mungekey --create')"
    mkdir -p "$munge_dir" /var/log/munge /var/lib/munge
    chown munge:munge "$munge_dir" /var/log/munge /var/lib/munge
    chmod 0755 "$munge_dir"
    su -s /bin/sh munge -c "/usr/sbin/munged --pid-file=$munge_dir/munged.pid"
    local i
    for ((i = 0; i < 100; i++)); do
        munge_ok && break
        sleep 0.1
    done
    munge_ok || die "munged did not come up (see /var/log/munge/munged.log)"
    cp "$munge_dir/munged.pid" "$munge_owner"
    log "started munged (pid $(<"$munge_owner"))"
}

stop_munge() {
    rm -f "$munge_users/$user_tag"
    [[ -e $munge_owner ]] || return 0  # not started by these scripts: leave it alone
    if compgen -G "$munge_users/*" >/dev/null; then
        log "munged left running: another local cluster still uses it ($(ls "$munge_users"))"
        return 0
    fi
    stop_pid "$munge_owner" munged
}
