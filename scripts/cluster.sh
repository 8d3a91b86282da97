#!/usr/bin/env bash
# Starts a local Verbund network on loopback: three Raft voters and two
# members, with mutual TLS between nodes, an encrypted gossip ring and the
# sample data loaded through the first node (the network operator's). The
# other organisations come in through the governance rules: Augsburg,
# Nuremberg and the district of Munich ask to join (`verbund join`, signed
# with their nodes' own keys) and Bayern's state agency approves them after
# comparing their keys' fingerprint; Munich, which joined in the sample
# data, is re-registered by Bayern's agency with its node's keys. Ctrl-C (or
# `make cluster-stop` from another shell) stops every process it started.
#
# For measurements (make bench-national): SAMPLE_DATA=0 starts the
# operator's node without the sample data and skips the governance steps
# (they need the sample data's Bayern agency; a load such as `verbund synth`
# brings its own organisations), and NODES_ONLY="n1 n2 n3" starts only the
# listed nodes (run again with NODES_ONLY=n4 to add a member later).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/verbund}
DIR=${CLUSTER_DIR:-.verbund/cluster}
mkdir -p "$DIR"

# node_pid ID prints the PID of node ID if it runs (its PID file names a
# live process whose command line is that node's), else nothing.
node_pid() {
  local f="$DIR/$1.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null) || return 0
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  ps -p "$pid" -o args= 2>/dev/null | grep -q -- "--node-id $1 " && echo "$pid"
  return 0
}

# stop_nodes ID... sends SIGTERM to the named running nodes, waits up to
# STOP_WAIT seconds (default 40) for them to exit, removes the PID files of
# the stopped ones and reports any that would not stop (exit status 1).
stop_nodes() {
  local id pid left=() failed=0
  for id in "$@"; do
    pid=$(node_pid "$id")
    if [ -z "$pid" ]; then
      if [ -f "$DIR/$id.pid" ]; then echo "  $id: not running (stale PID file removed)"; rm -f "$DIR/$id.pid"; fi
      continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    left+=("$id:$pid")
  done
  local deadline=$((SECONDS + ${STOP_WAIT:-40})) e
  for e in "${left[@]}"; do
    id=${e%%:*}; pid=${e#*:}
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "  $id (PID $pid) did NOT stop within ${STOP_WAIT:-40}s; see $DIR/$id.log; kill -9 $pid to force it"
      failed=1
    else
      # Only our own PID file: a newer process may have replaced it.
      [ "$(cat "$DIR/$id.pid" 2>/dev/null)" = "$pid" ] && rm -f "$DIR/$id.pid"
      echo "  $id (PID $pid) stopped"
    fi
  done
  return $failed
}

ALL_IDS="n1 n2 n3 n4 n5"
if [ "${1:-}" = stop ]; then
  any=0
  for id in $ALL_IDS; do [ -n "$(node_pid "$id")" ] && any=1; done
  if [ $any = 0 ]; then
    for id in $ALL_IDS; do [ -f "$DIR/$id.pid" ] && { rm -f "$DIR/$id.pid"; echo "  $id: not running (stale PID file removed)"; }; done
    echo "no node of the local cluster is running"
    exit 0
  fi
  echo "stopping the local cluster..."
  if stop_nodes $ALL_IDS; then echo "all nodes stopped"; else echo "some nodes did not stop"; exit 1; fi
  exit 0
fi

# One CA and gossip key per local network, made on first start.
if [ ! -f "$DIR/pki/ca.pem" ]; then
  "$BIN" certs init-ca --dir "$DIR/pki" --cn "Verbund local network CA" >/dev/null
fi
if [ ! -f "$DIR/gossip.key" ]; then
  (umask 077; "$BIN" certs gossip-key > "$DIR/gossip.key")
fi
# Passed through the environment, not argv (which ps shows to everyone).
export VERBUND_GOSSIP_KEY=$(cat "$DIR/gossip.key")
# Ports are the table's plus PORT_OFFSET (tests run a second cluster).
OFF=${PORT_OFFSET:-0}

# admin: each node's admin listener (pprof and Prometheus /metrics).
#      id   role    org             http  raft  gossip peer  admin kind          name
NODES="n1   voter   verbund-operator 18081 17001 17101 17201 18091 network-operator Verbund-local-network-operator
n2   voter   091620000000     18082 17002 17102 17202 18092 municipality  München
n3   voter   097610000000     18083 17003 17103 17203 18093 municipality  Augsburg
n4   member  095640000000     18084 0     17104 17204 18094 municipality  Nürnberg
n5   member  091840000000     18085 0     17105 17205 18095 district      Landkreis-München"

started=() # node ids this run started (Ctrl-C stops these)
stop() {
  trap - INT TERM EXIT
  echo
  if [ ${#started[@]} -gt 0 ]; then
    echo "stopping the nodes this run started (${started[*]})..."
    if stop_nodes "${started[@]}"; then echo "all nodes stopped"; else echo "some nodes did not stop"; fi
  fi
}
trap stop EXIT
trap "stop; exit 0" INT TERM

# A data dir with Raft state is a restart: every node rejoins its own
# configuration, so all are started together (a quorum of voters must run
# before any of them has a leader). A fresh network starts one node after
# the other: n1 bootstraps and registers the operator before the others join.
resume=0
[ -d "$DIR/n1/raft" ] && resume=1

# wait_running ID PID waits until node ID reports running (60 s at most).
wait_running() {
  for _ in $(seq 1 600); do
    if grep -q "is running" "$DIR/$1.log" 2>/dev/null; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then echo "node $1 failed to start:"; tail -30 "$DIR/$1.log"; exit 1; fi
    sleep 0.1
  done
  echo "node $1 did not report running within 60 s:"; tail -30 "$DIR/$1.log"; exit 1
}

[ $resume = 1 ] && echo "resuming the local network from $DIR"
SAMPLE_DATA=${SAMPLE_DATA:-1}
only() { [ -z "${NODES_ONLY:-}" ] || [[ " $NODES_ONLY " == *" $1 "* ]]; }
while read -r id role org http raft gossip peer admin kind name; do
  only "$id" || continue
  http=$((http+OFF)); gossip=$((gossip+OFF)); peer=$((peer+OFF)); admin=$((admin+OFF)); [ "$raft" != 0 ] && raft=$((raft+OFF))
  # Each organisation's data dir: its keys and config (verbund init keeps
  # existing keys on a restart). The operator's also gets its offline
  # recovery key (in a real network: moved offline at once).
  "$BIN" init --org "$org" --kind "$kind" --name "${name//-/ }" --data "$DIR/$id" \
    --endpoint "https://127.0.0.1:$peer" >> "$DIR/init.log" 2>&1 \
    || { echo "verbund init for $org failed:"; cat "$DIR/init.log"; exit 1; }
  if [ ! -f "$DIR/pki/$id.pem" ]; then
    "$BIN" certs issue --ca-dir "$DIR/pki" --node "$id" --host 127.0.0.1 --host localhost --out "$DIR/pki" >/dev/null
  fi
  args=(node --node-id "$id" --org "$org" --role "$role" --data-dir "$DIR/$id"
        --http-addr "127.0.0.1:$http" --gossip-addr "127.0.0.1:$gossip" --peer-addr "127.0.0.1:$peer"
        --admin-addr "127.0.0.1:$admin" --tls-ca "$DIR/pki/ca.pem" --tls-cert "$DIR/pki/$id.pem" --tls-key "$DIR/pki/$id-key.pem"
        --gossip-label verbund-local --dead-server-grace 1m --audit-interval 10s --log-level warn)
  [ "$raft" != 0 ] && args+=(--raft-addr "127.0.0.1:$raft")
  # NODE_FLAGS: extra flags for every node (e.g. "--rate-limits off" for
  # scripts that hit the API hard from this one address).
  # shellcheck disable=SC2206
  [ -n "${NODE_FLAGS:-}" ] && args+=(${NODE_FLAGS})
  if [ "$id" = n1 ]; then
    args+=(--bootstrap --genesis --org-name "Verbund local network operator")
    [ "$SAMPLE_DATA" = 0 ] || args+=(--sample-data)
    # The operator's node is the only one that bootstraps.
  else
    args+=(--join "127.0.0.1:$((17101+OFF))")
  fi
  if running=$(node_pid "$id") && [ -n "$running" ]; then
    echo "  $id already running (PID $running)"
    continue
  fi
  [ -f "$DIR/$id.log" ] && mv -f "$DIR/$id.log" "$DIR/$id.log.1"
  "$BIN" "${args[@]}" > "$DIR/$id.log" 2>&1 &
  pid=$!
  started+=("$id")
  echo "$pid" > "$DIR/$id.pid"
  # On a fresh network, wait for the API before starting the next node.
  [ $resume = 1 ] || wait_running "$id" "$pid"
done <<< "$NODES"
if [ $resume = 1 ]; then
  for id in "${started[@]}"; do wait_running "$id" "$(cat "$DIR/$id.pid")"; done
fi

# The sample data made Bayern's state agency (land-09) with a key kept in
# the operator's data dir. It is the approver of every other organisation
# here (all in Bayern). Idempotent: a restart finds them ACTIVE.
API="http://127.0.0.1:$((18081+OFF))"
BY=(--key "$DIR/n1/keys/sample/land-09.jwk" --as land-09 --addr "$API" --timeout 30s)
gov() { "$BIN" "$@" >> "$DIR/governance.log" 2>&1 || { echo "verbund $1 $2 failed:"; tail -20 "$DIR/governance.log"; exit 1; }; }
status_of() { "$BIN" orgs get "$1" --addr "$API" --linearizable | awk -F': *' '/^Status:/ {print $2}'; }
while read -r id role org http raft gossip peer admin kind name; do
  [ "$SAMPLE_DATA" = 0 ] && break # no Bayern agency to approve anyone
  [ "$id" = n1 ] && continue
  only "$id" || continue
  if [ "$org" = 091620000000 ]; then
    # Munich joined in the sample data (with a key of the operator's
    # demo); its node takes over: Bayern registers it with the node's keys
    # and endpoint (the sample key stays in the record, revoked).
    if ! "$BIN" orgs get "$org" --addr "$API" --linearizable | grep -q "^API endpoint: *https://127.0.0.1:$((peer+OFF))"; then
      gov org register "$org" --node "http://127.0.0.1:$((http+OFF))" "${BY[@]}"
    fi
    continue
  fi
  # The others ask to join, signed with their own keys, and Bayern's agency
  # approves after comparing the fingerprint of the keys they sent.
  gov join --network "$API" --data "$DIR/$id" --timeout 30s
  if [ "$(status_of "$org")" = pending ]; then
    fp=$("$BIN" orgs get "$org" --addr "$API" --linearizable | awk '/^Keys SHA-256:/ {print $3}')
    gov org approve "$org" --fingerprint "$fp" --reason "local cluster: keys compared" "${BY[@]}"
  fi
done <<< "$NODES"

echo
echo "Verbund local network is running (data in $DIR, logs in $DIR/<node>.log):"
echo
# Which node leads, as each node sees it (members follow the servers).
state_of() { "$BIN" status --addr "$1" --timeout 3s 2>/dev/null | awk -F': *' '/^Raft state:/ {print $2}'; }
printf "  %-4s %-7s %-9s %-18s %-24s %-17s %s\n" NODE ROLE RAFT ORG API ADMIN PID
while read -r id role org http raft gossip peer admin kind name; do
  only "$id" || continue
  api="http://127.0.0.1:$((http+OFF))"
  st=$(state_of "$api"); [ -n "$st" ] || st="-"
  printf "  %-4s %-7s %-9s %-18s %-24s %-17s %s\n" "$id" "$role" "$st" "$org" "$api" "127.0.0.1:$((admin+OFF))" "$(node_pid "$id")"
done <<< "$NODES"
echo
echo "Try:"
echo "  $BIN members --addr http://127.0.0.1:$((18084+OFF))"
echo "  $BIN providers --addr http://127.0.0.1:$((18085+OFF)) --service 99050012104000 --area 091620000000"
echo "  $BIN providers --addr http://127.0.0.1:$((18083+OFF)) --service 99050012104000 --area 091840148148 --verify"
echo "  $BIN history 097610000000 --addr http://127.0.0.1:$((18082+OFF))"
echo "  $BIN watch --addr http://127.0.0.1:$((18082+OFF))"
echo "  curl -s http://127.0.0.1:$((18092+OFF))/metrics | grep ^verbund_   # metrics (and /debug/pprof/) on a node's admin listener"
echo "  kill <PID of the leader>   # the others elect a new leader within seconds"
echo
if [ ${#started[@]} -eq 0 ]; then
  echo "Every node was already running; stop them with: make cluster-stop"
  trap - EXIT INT TERM
  exit 0
fi
echo "Ctrl-C stops every node this run started (${started[*]}); make cluster-stop stops all."
# Exit once none of them runs any more (make cluster-stop from another shell).
while :; do
  alive=0
  for id in "${started[@]}"; do [ -n "$(node_pid "$id")" ] && alive=1; done
  [ $alive = 1 ] || { trap - EXIT INT TERM; echo "all nodes stopped"; exit 0; }
  sleep 1
done
