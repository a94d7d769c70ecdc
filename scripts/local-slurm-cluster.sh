#!/usr/bin/env bash
# A real multi-node Slurm cluster on this one machine: each compute node is a slurmd in its own
# network and UTS namespace (own address, own host name), all on one shared file system, the way a
# cluster's nodes share Lustre/GPFS. For tests of runs across nodes and of a node lost mid-run.
#
# Usage: scripts/local-slurm-cluster.sh start|stop|status DIR
#        scripts/local-slurm-cluster.sh kill-node DIR NODE     (power cut: KILL every process on NODE)
#        scripts/local-slurm-cluster.sh start-node DIR NODE    (power it on again: slurmd only)
#        scripts/local-slurm-cluster.sh exec DIR NODE CMD...   (run CMD on NODE: its network + host name)
#
#   start   make a bridge and one network namespace per node (veth pair, address on a private /24
#           that no interface of this machine uses, no default route: nothing can leave), write
#           DIR/slurm.conf (NodeName/NodeAddr per node, per-node spool, pid and log files under
#           DIR/nodes/<node>), start munged if none answers, slurmctld on the bridge address in
#           this namespace, and each node's slurmd inside its namespaces; wait (bounded) until every
#           node is idle. Prints the line to source: `. DIR/env.sh` (sets SLURM_CONF).
#   stop    stop what start started for DIR: the slurmds, every process left in the nodes'
#           namespaces, slurmctld, the namespaces and the bridge (as recorded in DIR/cluster.env),
#           and munged if it started it and no other local cluster uses it.
#   status  print the daemons and node states; exit 1 if not all up.
#
# Env: LOCAL_SLURM_NODES (default 2), LOCAL_SLURM_NODE_CPUS (CPUs each node advertises, default
# nproc / nodes, at least 1), LOCAL_SLURM_MEM_MARGIN_MB (default 2048; the rest of the available
# memory is split between the nodes), LOCAL_SLURM_WAIT (seconds to wait for the nodes, default 60),
# LOCAL_SLURMD_TIMEOUT (SlurmdTimeout: seconds before an unresponsive node is marked DOWN, default 10;
# Slurm's own default is 300).
# Needs root (network namespaces; slurmd starts jobs as their owner) and Debian's slurm-wlm, munge
# and iproute2 (scripts/install-sysdeps.sh).
set -euo pipefail

usage() {
    echo "usage: $0 start|stop|status DIR | kill-node|start-node DIR NODE | exec DIR NODE CMD..." >&2
    exit 2
}
[[ $# -ge 2 ]] || usage
action=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd -P)
shift 2
conf=$dir/slurm.conf
record=$dir/cluster.env
wait_s=${LOCAL_SLURM_WAIT:-60}
log_name=local-slurm-cluster

# shellcheck source=scripts/local-munge.sh
source "$(dirname "${BASH_SOURCE[0]}")/local-munge.sh"

# Names unique to DIR, so two clusters (or a one-node one) can run side by side. Interface names
# have at most 15 characters: "dh" + 6 hex + a suffix.
tag=$(printf '%s' "$dir" | sha1sum | cut -c1-6)
bridge=dh${tag}br

node_netns() { echo "dh${tag}-$1"; }
node_pids() { ip netns pids "$(node_netns "$1")" 2>/dev/null || true; }

pick_subnet() {  # a 10.231.K.0/24 that no route or address of this machine overlaps
    local k start used
    used=$(ip -4 route show table all 2>/dev/null; ip -4 addr show 2>/dev/null)
    start=$((16#${tag:0:2}))
    for ((k = 0; k < 256; k++)); do
        local net=10.231.$(((start + k) % 256))
        if ! grep -q "${net//./\\.}\." <<<"$used"; then
            echo "$net"
            return 0
        fi
    done
    die "no free 10.231.K.0/24 subnet for the cluster network"
}

write_record() {  # what exists, so that stop removes exactly that even after a failed start
    {
        printf 'bridge=%q\n' "$bridge"
        printf 'subnet=%q\n' "$subnet"
        printf 'nodes=%q\n' "${nodes[*]}"
    } >"$record"
}

make_network() {
    local i node ns veth
    ip link add "$bridge" type bridge
    write_record
    ip addr add "$subnet.1/24" dev "$bridge"
    # Belt and braces: packets arriving on the bridge are never routed to another interface, even
    # if forwarding is switched on machine-wide later.
    sysctl -qw "net.ipv4.conf.$bridge.forwarding=0"
    sysctl -qw "net.ipv6.conf.$bridge.disable_ipv6=1"
    ip link set "$bridge" up
    for ((i = 1; i <= ${#nodes[@]}; i++)); do
        node=${nodes[i - 1]}
        ns=$(node_netns "$node")
        veth=dh${tag}v$i
        ip netns add "$ns"
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$bridge" up
        ip -n "$ns" link set lo up
        # IPv4 only: the nodes' only route is the cluster /24 (no default route, nothing leaves).
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
        ip -n "$ns" addr add "$subnet.$((10 + i))/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
}

remove_network() {
    local node ns pids i
    for node in "${nodes[@]}"; do
        ns=$(node_netns "$node")
        ip netns list | grep -qw "$ns" || continue
        for ((i = 0; i < 50; i++)); do
            pids=$(node_pids "$node")
            [[ -z $pids ]] && break
            # shellcheck disable=SC2086  # one pid per word
            kill -KILL $pids 2>/dev/null || true
            sleep 0.1
        done
        ip netns del "$ns"  # also removes the veth pair
    done
    if ip link show "$bridge" >/dev/null 2>&1; then
        ip link del "$bridge"
    fi
    rm -f "$record"
}

write_conf() {
    local host cpus avail_mb margin_mb mem_mb port i node names
    host=$(hostname -s)
    cpus=${LOCAL_SLURM_NODE_CPUS:-$(($(nproc) / ${#nodes[@]}))}
    ((cpus >= 1)) || cpus=1
    avail_mb=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
    margin_mb=${LOCAL_SLURM_MEM_MARGIN_MB:-2048}
    mem_mb=$(((avail_mb - margin_mb) / ${#nodes[@]}))
    ((mem_mb >= 1024)) || die "only ${avail_mb} MiB available; each of ${#nodes[@]} nodes needs at least 1 GiB after the ${margin_mb} MiB margin"
    port=$(pick_ports)
    mkdir -p "$dir/state" "$dir/log"
    for node in "${nodes[@]}"; do mkdir -p "$dir/nodes/$node/spool"; done
    names="dn[1-${#nodes[@]}]"
    cat >"$conf" <<EOF
# ${#nodes[@]}-node Slurm written by scripts/local-slurm-cluster.sh for $dir:
# slurmctld on the bridge $bridge ($subnet.1), node i in network namespace $(node_netns dn1 | sed 's/dn1$/dn<i>/') at $subnet.(10+i).
ClusterName=dreamnet
SlurmctldHost=$host($subnet.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/nodes/%n/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/nodes/%n/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/nodes/%n/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
JobRequeue=1
# A node that stops answering is DOWN after this many seconds (Slurm's default is 300 s); its jobs
# are then requeued (--requeue) or failed.
SlurmdTimeout=${LOCAL_SLURMD_TIMEOUT:-10}
MessageTimeout=5
KillWait=5
MinJobAge=3600
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
EOF
    for ((i = 1; i <= ${#nodes[@]}; i++)); do
        node=${nodes[i - 1]}
        echo "NodeName=$node NodeAddr=$subnet.$((10 + i)) NodeHostname=$node CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN" >>"$conf"
    done
    echo "PartitionName=debug Nodes=$names Default=YES MaxTime=INFINITE State=UP" >>"$conf"
    printf 'export SLURM_CONF=%q\n' "$conf" >"$dir/env.sh"
}

# `ip netns exec` gives the node a private mount namespace with its own /sys (so MPI and libfabric
# see only the node's interfaces in /sys/class/net); that /sys lacks this machine's cgroup mounts,
# which slurmd needs: the same hierarchies are mounted again inside (only that mount namespace).
# shellcheck disable=SC2016  # expanded by the node's shell, not here
node_shell='
while read -r type path opts; do
    [ -n "$type" ] || continue
    mkdir -p "$path" && mount -t "$type" -o "$opts" "$type" "$path" || exit 1
done <<EOM
$CGROUP_MOUNTS
EOM
hostname "$1" && shift && exec "$@"'

on_node() {  # on_node NODE CMD...: CMD in the node's network namespace with host name NODE
    local node=$1
    shift
    # The UTS namespace (host name) is inherited by everything CMD starts: slurmd's job steps
    # and their ranks see `hostname` = NODE.
    CGROUP_MOUNTS=$(awk '$2 ~ "^/sys/fs/cgroup" && ($3 == "tmpfs" || $3 == "cgroup" || $3 == "cgroup2") {print $3, $2, $4}' /proc/self/mounts) \
        ip netns exec "$(node_netns "$node")" unshare --uts sh -c "$node_shell" sh "$node" "$@"
}

start_slurmd() {  # start_slurmd NODE: slurmd in the node's network namespace and a new UTS namespace
    on_node "$1" slurmd -f "$conf" -N "$1" || die "slurmd on $1 failed to start (see $dir/nodes/$1/slurmd.log)"
}

all_alive() {
    local node
    alive "$dir/slurmctld.pid" slurmctld || return 1
    for node in "${nodes[@]}"; do alive "$dir/nodes/$node/slurmd.pid" slurmd || return 1; done
}

node_states() { sinfo -h -N -o '%N %t' 2>/dev/null | sort -u; }

load_record() {
    if [[ -f $record ]]; then
        # shellcheck disable=SC1090
        source "$record"
        read -r -a nodes <<<"$nodes"
    else
        nodes=()
    fi
}

do_start() {
    load_record
    if [[ ${#nodes[@]} -gt 0 ]] && all_alive; then
        log "already running for $dir: $(SLURM_CONF=$conf node_states | tr '\n' ' '); . $dir/env.sh"
        return 0
    fi
    local t0 i n state='' tool
    t0=$(date +%s.%N)
    for tool in munged slurmctld slurmd sinfo ip unshare; do
        command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-sysdeps.sh (as root)"
    done
    [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces; slurmd starts jobs as their owner)"
    # Half-started from an earlier attempt: remove what is left before starting again.
    do_stop_daemons
    remove_network
    n=${LOCAL_SLURM_NODES:-2}
    [[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 200 ]] || die "LOCAL_SLURM_NODES=$n: give a number of nodes from 1 to 200"
    nodes=()
    for ((i = 1; i <= n; i++)); do nodes+=("dn$i"); done
    subnet=$(pick_subnet)
    trap 'start_failed' EXIT
    make_network
    write_conf
    start_munge
    export SLURM_CONF=$conf
    slurmctld -f "$conf" || die "slurmctld failed to start (see $dir/log/slurmctld.log)"
    for node in "${nodes[@]}"; do start_slurmd "$node"; done
    for ((i = 0; i < wait_s * 5; i++)); do
        state=$(node_states || true)
        if [[ $(grep -c ' idle$' <<<"$state") -eq $n ]]; then
            break
        fi
        sleep 0.2
    done
    if [[ $(grep -c ' idle$' <<<"$state") -ne $n ]]; then
        die "nodes not idle after ${wait_s}s ($(tr '\n' ' ' <<<"$state"); see $dir/log/slurmctld.log and $dir/nodes/*/slurmd.log)"
    fi
    trap - EXIT
    log "up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s: $n nodes on $subnet.0/24" \
        "($(sinfo -h -N -o '%N %c CPUs %m MB %t' | sort -u | paste -sd, -)); . $dir/env.sh"
}

start_failed() {  # EXIT trap of a start that did not finish: leave nothing behind
    log "start failed: stopping and removing what it made"
    do_stop_daemons
    remove_network
    stop_munge
}

do_stop_daemons() {
    local node
    for node in "${nodes[@]}"; do
        stop_pid "$dir/nodes/$node/slurmd.pid" slurmd
    done
    stop_pid "$dir/slurmctld.pid" slurmctld
}

do_stop() {
    load_record
    do_stop_daemons
    remove_network  # also KILLs whatever job processes are left on the nodes
    stop_munge
}

do_kill_node() {  # like pulling the power: no signal handlers run, nothing is told
    local node=${1:?usage: kill-node DIR NODE} pids i
    load_record
    [[ " ${nodes[*]} " == *" $node "* ]] || die "$node is not a node of the cluster in $dir (nodes: ${nodes[*]})"
    for ((i = 0; i < 50; i++)); do
        pids=$(node_pids "$node")
        [[ -z $pids ]] && break
        # shellcheck disable=SC2086  # one pid per word
        kill -KILL $pids 2>/dev/null || true
        sleep 0.1
    done
    [[ -z $(node_pids "$node") ]] || die "processes survive on $node: $(node_pids "$node" | tr '\n' ' ')"
    rm -f "$dir/nodes/$node/slurmd.pid"
    log "killed every process on $node"
}

do_start_node() {  # after kill-node: slurmd again; Slurm returns the node to service (ReturnToService=2)
    local node=${1:?usage: start-node DIR NODE}
    load_record
    [[ " ${nodes[*]} " == *" $node "* ]] || die "$node is not a node of the cluster in $dir (nodes: ${nodes[*]})"
    if alive "$dir/nodes/$node/slurmd.pid" slurmd; then
        log "$node is already up"
        return 0
    fi
    export SLURM_CONF=$conf
    start_slurmd "$node"
    log "started slurmd on $node"
}

do_exec() {  # run a command with the node's network and host name (e.g. to test MPI across nodes)
    local node=${1:?usage: exec DIR NODE CMD...}
    shift
    [[ $# -gt 0 ]] || usage
    load_record
    on_node "$node" "$@"
}

do_status() {
    local up=0 node
    load_record
    if alive "$dir/slurmctld.pid" slurmctld; then
        log "slurmctld running (pid $(<"$dir/slurmctld.pid"))"
    else
        log "slurmctld not running"
        up=1
    fi
    for node in "${nodes[@]}"; do
        if alive "$dir/nodes/$node/slurmd.pid" slurmd; then
            log "$node: slurmd running (pid $(<"$dir/nodes/$node/slurmd.pid")) in namespace $(node_netns "$node")"
        else
            log "$node: slurmd not running"
            up=1
        fi
    done
    [[ ${#nodes[@]} -gt 0 ]] || { log "no cluster recorded in $dir"; up=1; }
    if munge_ok; then log "munge answers"; else log "munge does not answer"; up=1; fi
    if [[ $up -eq 0 ]]; then
        log "nodes: $(SLURM_CONF=$conf node_states | tr '\n' ' '); . $dir/env.sh"
    fi
    return "$up"
}

case $action in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    kill-node) do_kill_node "$@" ;;
    start-node) do_start_node "$@" ;;
    exec) do_exec "$@" ;;
    *) usage ;;
esac
