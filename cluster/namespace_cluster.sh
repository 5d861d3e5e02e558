#!/usr/bin/env bash
# A real three-node Ray cluster on one Linux machine: a head and two workers, each in its
# own network namespace, joined by a bridge on a private subnet. Every node has its own
# network stack, ports and Ray temporary folder, so losing a node or cutting its link is
# what it would be between machines; the namespaces share the filesystem, which stands for
# the shared storage (NFS, EFS) a cluster's results live on.
#
#   sudo cluster/namespace_cluster.sh up /tmp/mtlc      # prints the Jobs API address
#   sudo ip netns exec mtl-head env RAY_AUTH_TOKEN_PATH=/tmp/mtlc/token \
#       mtlstudy submit SPEC.yaml --address http://10.87.0.1:8265 --token-over-http \
#       --results /shared/results
#   sudo cluster/namespace_cluster.sh down /tmp/mtlc    # namespaces, processes, the folder
#
# Layout (PREFIX defaults to mtl, SUBNET to 10.87.0):
#
#   PREFIX-br    the bridge br0, and one end of each node's veth pair (v-head, v-w1, v-w2)
#   PREFIX-head  eth0 SUBNET.1: Ray's head (GCS on 6379, dashboard and Jobs API on 8265)
#   PREFIX-w1    eth0 SUBNET.2: a worker
#   PREFIX-w2    eth0 SUBNET.3: a worker
#
# Nothing outside these namespaces is changed: the bridge lives in its own namespace, so
# the machine's own interfaces, routes and addresses stay as they were. Cut a worker off
# with `ip -n PREFIX-br link set v-w2 down` (and `up` to bring it back).
#
# Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2. Environment:
#   PREFIX, SUBNET    as above
#   RAY               the `ray` to start (default: the one on PATH); its folder is put first
#                     on every node's PATH, since a Ray job runs the `python` found there
#   NUM_CPUS          CPUs each node offers Ray (default 1)
#   RAY_START_ARGS    more arguments for every `ray start`
# The token (token authentication is on) is DIR/token, mode 0600, made by `up`.
set -euo pipefail

PREFIX=${PREFIX:-mtl}
SUBNET=${SUBNET:-10.87.0}
RAY=${RAY:-$(command -v ray || true)}
NUM_CPUS=${NUM_CPUS:-1}
NODES=(head w1 w2)
# Ray's socket paths are limited to about 100 characters: keep DIR short.
MAX_DIR_CHARS=40

die() {
    echo "namespace_cluster: $*" >&2
    exit 2
}

node_ip() { # head -> SUBNET.1, w1 -> SUBNET.2, ...
    local i
    for i in "${!NODES[@]}"; do
        [[ ${NODES[$i]} == "$1" ]] && echo "$SUBNET.$((i + 1))" && return
    done
}

# Run a command on a node: in its namespace, with its own Ray folder and the token. A worker
# takes the head's temporary folder unless told its own (--temp-dir below).
on_node() {
    local node=$1 dir=$2
    shift 2
    ip netns exec "$PREFIX-$node" env \
        PATH="$(dirname "$RAY"):$PATH" \
        RAY_TMPDIR="$dir/$node" \
        RAY_AUTH_MODE=token \
        RAY_AUTH_TOKEN_PATH="$dir/token" \
        RAY_USAGE_STATS_ENABLED=0 \
        "$@"
}

network_up() {
    ip netns add "$PREFIX-br"
    ip -n "$PREFIX-br" link add br0 type bridge
    ip -n "$PREFIX-br" link set br0 up
    local node
    for node in "${NODES[@]}"; do
        ip netns add "$PREFIX-$node"
        ip -n "$PREFIX-$node" link set lo up
        # Both ends are made inside the bridge's namespace, then one end is moved.
        ip -n "$PREFIX-br" link add "v-$node" type veth peer name eth0 netns "$PREFIX-$node"
        ip -n "$PREFIX-br" link set "v-$node" master br0 up
        ip -n "$PREFIX-$node" addr add "$(node_ip "$node")/24" dev eth0
        ip -n "$PREFIX-$node" link set eth0 up
    done
}

ray_up() {
    local dir=$1 head_ip node
    head_ip=$(node_ip head)
    # shellcheck disable=SC2086  # RAY_START_ARGS is a list of words
    on_node head "$dir" "$RAY" start --head --node-ip-address "$head_ip" --port 6379 \
        --num-cpus "$NUM_CPUS" --include-dashboard true --dashboard-host "$head_ip" \
        --dashboard-port 8265 --temp-dir "$dir/head" --disable-usage-stats ${RAY_START_ARGS:-} \
        >"$dir/head.log" 2>&1 || { tail -n 30 "$dir/head.log" >&2; die "the head did not start"; }
    for node in "${NODES[@]:1}"; do
        # shellcheck disable=SC2086
        on_node "$node" "$dir" "$RAY" start --address "$head_ip:6379" \
            --node-ip-address "$(node_ip "$node")" --num-cpus "$NUM_CPUS" \
            --temp-dir "$dir/$node" --disable-usage-stats ${RAY_START_ARGS:-} >"$dir/$node.log" 2>&1 ||
            { tail -n 30 "$dir/$node.log" >&2; die "worker $node did not join"; }
    done
    # Ready when the Jobs API answers and every node is alive.
    local deadline=$((SECONDS + 180)) alive
    while ((SECONDS < deadline)); do
        alive=$(on_node head "$dir" "$RAY" list nodes --filter "state=ALIVE" \
            --address "http://$head_ip:8265" --format yaml 2>/dev/null | grep -c "node_ip:" || true)
        if ((alive == ${#NODES[@]})); then
            echo "http://$head_ip:8265"
            return
        fi
        sleep 2
    done
    die "only $alive of ${#NODES[@]} nodes alive after 180 s (logs in $dir)"
}

up() {
    local dir=$1
    ((${#dir} <= MAX_DIR_CHARS)) || die "'$dir' is longer than $MAX_DIR_CHARS characters"
    [[ -x $RAY ]] || die "no 'ray' to start: put it on PATH or set RAY"
    command -v ip >/dev/null || die "'ip' (iproute2) is not installed"
    ! ip netns list | grep -qw "^$PREFIX-head" || die "namespaces $PREFIX-* exist: '$0 down'"
    mkdir -p "$dir"
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$dir/token")
    network_up
    ray_up "$dir"
}

# Ends every process in our namespaces (what `ray start` left there, whatever it is), then
# the namespaces (which takes the veth pairs and the bridge with them), then DIR.
down() {
    local dir=$1 node pids signal
    for signal in TERM KILL; do
        for node in "${NODES[@]}"; do
            pids=$(ip netns pids "$PREFIX-$node" 2>/dev/null || true)
            [[ -n $pids ]] && kill "-$signal" $pids 2>/dev/null || true
        done
        [[ $signal == TERM ]] && sleep 3
    done
    for node in "${NODES[@]}" br; do
        ip netns del "$PREFIX-$node" 2>/dev/null || true
    done
    [[ -n $dir && -d $dir ]] && rm -rf -- "$dir"
    return 0
}

case ${1:-} in
up | down)
    [[ -n ${2:-} ]] || die "usage: $0 up|down DIR"
    "$1" "$2"
    ;;
*) die "usage: $0 up|down DIR" ;;
esac
