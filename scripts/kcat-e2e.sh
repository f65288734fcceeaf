#!/usr/bin/env bash
# A client not written in Go works with exactly: kcat (librdkafka) produces
# order events to a broker started by `exactly broker`, two instances of
# `exactly run orders` project them, and kcat reads order-projections with
# read_committed. Exits non-zero if the projections are not what the events
# say. Installs kcat when it is missing.
#
# EXACTLY names the exactly program to run; by default the script builds it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kcat >/dev/null 2>&1; then
  echo "installing kcat"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq kcat >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq kcat >/dev/null; }
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${EXACTLY:-}" ]; then
  go build -o "$work/exactly" ./cmd/exactly
  EXACTLY="$work/exactly"
fi

"$EXACTLY" broker --listen 127.0.0.1:0 --partitions 2 \
  --topic order-events --topic order-projections --topic order-events-dlq >"$work/broker.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  grep -q "broker listening on" "$work/broker.out" && break
  sleep 0.1
done
broker=$(sed -n 's/^broker listening on \([^ ,]*\).*/\1/p' "$work/broker.out")
[ -n "$broker" ] || { echo "broker did not start:"; cat "$work/broker.out"; exit 1; }
echo "broker $broker"

for i in 1 2; do
  "$EXACTLY" run orders --brokers "$broker" --state-dir "$work/state-$i" --instance-id "kcat-$i" \
    --http "" --partitions 2 --session-timeout 2s --log-level warn >"$work/instance-$i.log" 2>&1 &
  pids+=($!)
done

ts=1732260000000
{
  for n in 1 2 3 4 5; do
    o="o-$n"
    echo "$o|{\"metadata\":{\"eventId\":\"$o-c\",\"traceId\":\"t-$n\",\"timestamp\":$ts},\"type\":\"OrderCreated\",\"payload\":{\"orderId\":\"$o\",\"customerId\":\"c-$n\",\"createdAt\":$ts}}"
    # The shipment arrives before the update; the update comes twice.
    echo "$o|{\"metadata\":{\"eventId\":\"$o-s\",\"timestamp\":$((ts+2000))},\"type\":\"OrderShipped\",\"payload\":{\"orderId\":\"$o\",\"trackingNumber\":\"tn-$n\",\"shippedAt\":$((ts+2000))}}"
    echo "$o|{\"metadata\":{\"eventId\":\"$o-u\",\"timestamp\":$((ts+1000))},\"type\":\"OrderUpdated\",\"payload\":{\"orderId\":\"$o\",\"items\":[{\"sku\":\"s-$n\",\"quantity\":$n,\"priceCents\":100}],\"updatedAt\":$((ts+1000))}}"
    echo "$o|{\"metadata\":{\"eventId\":\"$o-u\",\"timestamp\":$((ts+1000))},\"type\":\"OrderUpdated\",\"payload\":{\"orderId\":\"$o\",\"items\":[{\"sku\":\"s-$n\",\"quantity\":$n,\"priceCents\":100}],\"updatedAt\":$((ts+1000))}}"
  done
  echo "o-9|this is not JSON"
} | kcat -P -b "$broker" -t order-events -K '|'
echo "produced 21 records with kcat"

want=15 # 5 orders x 3 distinct events
for _ in $(seq 150); do
  kcat -C -b "$broker" -t order-projections -X isolation.level=read_committed -o beginning -e -q \
    -f '%k %s\n' >"$work/projections.txt" 2>/dev/null || true
  [ "$(wc -l <"$work/projections.txt")" -ge "$want" ] && break
  sleep 0.2
done
got=$(wc -l <"$work/projections.txt")
if [ "$got" -ne "$want" ]; then
  echo "read $got projection records with read_committed, want $want"; cat "$work/projections.txt"
  tail -5 "$work"/instance-*.log; exit 1
fi
for n in 1 2 3 4 5; do
  last=$(grep "^o-$n " "$work/projections.txt" | tail -1)
  for field in '"status":"SHIPPED"' '"version":3' "\"trackingNumber\":\"tn-$n\"" "\"quantity\":$n"; do
    case "$last" in
      *"$field"*) ;;
      *) echo "o-$n: last projection lacks $field: $last"; exit 1 ;;
    esac
  done
done
dead=$(kcat -C -b "$broker" -t order-events-dlq -X isolation.level=read_committed -o beginning -e -q -f '%h\n' 2>/dev/null)
case "$dead" in
  *exactly.error.reason=malformed*) ;;
  *) echo "the malformed record is not in order-events-dlq: $dead"; exit 1 ;;
esac
echo "kcat read $got projections with read_committed: duplicates skipped, out-of-order events applied, malformed record dead-lettered"
