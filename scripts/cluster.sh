#!/usr/bin/env bash
# Starts a local Verbund network on loopback: three Raft voters and two
# members, with mutual TLS between nodes, an encrypted gossip ring and the
# sample data loaded through the first node. Ctrl-C (or `make cluster-stop`
# from another shell) stops every process it started.
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

#      id   role    org             http  raft  gossip peer
NODES="n1   voter   verbund-operator 18081 17001 17101 17201
n2   voter   091620000000     18082 17002 17102 17202
n3   voter   097610000000     18083 17003 17103 17203
n4   member  095640000000     18084 0     17104 17204
n5   member  091840000000     18085 0     17105 17205"

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

while read -r id role org http raft gossip peer; do
  http=$((http+OFF)); gossip=$((gossip+OFF)); peer=$((peer+OFF)); [ "$raft" != 0 ] && raft=$((raft+OFF))
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

# The operator onboards the other organisations: their nodes' public keys
# and peer endpoints go into the registry, so they can sign and receive
# handovers. Idempotent: a restart republishes the same record.
while read -r id role org http raft gossip peer; do
  [ "$id" = n1 ] && continue
  "$BIN" onboard --node "http://127.0.0.1:$((http+OFF))" --key "$DIR/n1/keys/signing.jwk" \
    --addr "http://127.0.0.1:$((18081+OFF))" --timeout 30s >> "$DIR/onboard.log" 2>&1 \
    || { echo "onboarding $org failed:"; cat "$DIR/onboard.log"; exit 1; }
done <<< "$NODES"

echo
echo "Verbund local network is running (data in $DIR, logs in $DIR/<node>.log):"
echo
printf "  %-4s %-7s %-18s %-24s %s\n" NODE ROLE ORG API PID
while read -r id role org http raft gossip peer; do
  printf "  %-4s %-7s %-18s %-24s %s\n" "$id" "$role" "$org" "http://127.0.0.1:$((http+OFF))" "$(cat "$DIR/$id.pid")"
done <<< "$NODES"
echo
echo "Try:"
echo "  $BIN members --addr http://127.0.0.1:$((18084+OFF))"
echo "  $BIN providers --addr http://127.0.0.1:$((18085+OFF)) --service 99050012104000 --area 091620000000"
echo "  $BIN watch --addr http://127.0.0.1:$((18082+OFF))"
echo "  kill <PID of the leader>   # the others elect a new leader within seconds"
echo
echo "Ctrl-C stops every node."
while :; do sleep 1; done
