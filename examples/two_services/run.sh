#!/usr/bin/env bash
# Starts a nats-server with JetStream on a free loopback port, two
# fulfilment services sharing the durable consumer "fulfilment", and the
# order service exporting ORDERS orders (default 200); checks that every
# order was shipped exactly once between them, then stops the server by
# its PID.
#
#   examples/two_services/run.sh BUILD_DIR/examples [ORDERS]
set -euo pipefail
bin=${1:?usage: run.sh DIR_OF_THE_EXAMPLES [ORDERS]}
orders=${2:-200}
command -v nats-server >/dev/null || {
  echo "nats-server not found: sudo apt-get install nats-server" >&2; exit 1; }

store=$(mktemp -d)
server_pid=""
fulfilment_pids=()
cleanup() {
  for pid in "${fulfilment_pids[@]}" $server_pid; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$store"
}
trap cleanup EXIT

# A free port: one that nothing answers on.
port=""
for _ in $(seq 50); do
  candidate=$((20000 + RANDOM % 20000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then port=$candidate; break; fi
done
[ -n "$port" ] || { echo "no free port found" >&2; exit 1; }
url="nats://127.0.0.1:$port"

nats-server -js -a 127.0.0.1 -p "$port" -sd "$store" -l "$store/server.log" &
server_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

# The order service creates the stream (a run with no orders), the
# fulfilment services bind to it, then the orders go out.
"$bin/order_service" "$url" 0
out=$(mktemp -d)
"$bin/fulfilment_service" "$url" fulfilment-1 3000 > "$out/1" &
fulfilment_pids+=($!)
"$bin/fulfilment_service" "$url" fulfilment-2 3000 > "$out/2" &
fulfilment_pids+=($!)
"$bin/order_service" "$url" "$orders"
for pid in "${fulfilment_pids[@]}"; do wait "$pid"; done
fulfilment_pids=()
cat "$out/1" "$out/2"
shipped=0
for f in "$out/1" "$out/2"; do
  n=$(sed -n 's/.*shipped \([0-9]*\) orders.*/\1/p' "$f")
  shipped=$((shipped + ${n:-0}))
done
rm -rf "$out"
echo "two fulfilment services shipped $shipped of $orders orders"
[ "$shipped" -eq "$orders" ]
