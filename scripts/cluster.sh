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
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/verbund}
DIR=${CLUSTER_DIR:-.verbund/cluster}
mkdir -p "$DIR"

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

#      id   role    org             http  raft  gossip peer  kind          name
NODES="n1   voter   verbund-operator 18081 17001 17101 17201 network-operator Verbund-local-network-operator
n2   voter   091620000000     18082 17002 17102 17202 municipality  München
n3   voter   097610000000     18083 17003 17103 17203 municipality  Augsburg
n4   member  095640000000     18084 0     17104 17204 municipality  Nürnberg
n5   member  091840000000     18085 0     17105 17205 district      Landkreis-München"

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping the cluster..."
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -f "$DIR"/*.pid
  echo "all nodes stopped"
}
trap stop EXIT
trap "stop; exit 0" INT TERM

while read -r id role org http raft gossip peer kind name; do
  http=$((http+OFF)); gossip=$((gossip+OFF)); peer=$((peer+OFF)); [ "$raft" != 0 ] && raft=$((raft+OFF))
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
        --tls-ca "$DIR/pki/ca.pem" --tls-cert "$DIR/pki/$id.pem" --tls-key "$DIR/pki/$id-key.pem"
        --gossip-label verbund-local --dead-server-grace 1m --audit-interval 10s --log-level warn)
  [ "$raft" != 0 ] && args+=(--raft-addr "127.0.0.1:$raft")
  if [ "$id" = n1 ]; then
    args+=(--bootstrap --genesis --sample-data --org-name "Verbund local network operator")
    # The operator's node is the only one that bootstraps.
  else
    args+=(--join "127.0.0.1:$((17101+OFF))")
  fi
  "$BIN" "${args[@]}" > "$DIR/$id.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  echo "$pid" > "$DIR/$id.pid"
  # Wait for the API before starting the next node.
  for _ in $(seq 1 200); do
    if grep -q "is running" "$DIR/$id.log" 2>/dev/null; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "node $id failed to start:"; cat "$DIR/$id.log"; exit 1; fi
    sleep 0.1
  done
done <<< "$NODES"

# The sample data made Bayern's state agency (land-09) with a key kept in
# the operator's data dir. It is the approver of every other organisation
# here (all in Bayern). Idempotent: a restart finds them ACTIVE.
API="http://127.0.0.1:$((18081+OFF))"
BY=(--key "$DIR/n1/keys/sample/land-09.jwk" --as land-09 --addr "$API" --timeout 30s)
gov() { "$BIN" "$@" >> "$DIR/governance.log" 2>&1 || { echo "verbund $1 $2 failed:"; tail -20 "$DIR/governance.log"; exit 1; }; }
status_of() { "$BIN" orgs get "$1" --addr "$API" --linearizable | awk -F': *' '/^Status:/ {print $2}'; }
while read -r id role org http raft gossip peer kind name; do
  [ "$id" = n1 ] && continue
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
printf "  %-4s %-7s %-18s %-24s %s\n" NODE ROLE ORG API PID
while read -r id role org http raft gossip peer kind name; do
  printf "  %-4s %-7s %-18s %-24s %s\n" "$id" "$role" "$org" "http://127.0.0.1:$((http+OFF))" "$(cat "$DIR/$id.pid")"
done <<< "$NODES"
echo
echo "Try:"
echo "  $BIN members --addr http://127.0.0.1:$((18084+OFF))"
echo "  $BIN providers --addr http://127.0.0.1:$((18085+OFF)) --service 99050012104000 --area 091620000000"
echo "  $BIN providers --addr http://127.0.0.1:$((18083+OFF)) --service 99050012104000 --area 091840148148 --verify"
echo "  $BIN history 097610000000 --addr http://127.0.0.1:$((18082+OFF))"
echo "  $BIN watch --addr http://127.0.0.1:$((18082+OFF))"
echo "  kill <PID of the leader>   # the others elect a new leader within seconds"
echo
echo "Ctrl-C stops every node."
while :; do sleep 1; done
