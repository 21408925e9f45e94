# bench/groups/hub.sh - hub events: latency from hy_hub_set until each
# consumer's task runs (p50/p99 per consumer, and until all of 10,000 have
# run), and the cost of a set per idle consumer.  No reference system: a
# plain event cannot release N waiters exactly once.  Lower is better.
bench_hub() {
  "$BIN/hub" latency 1 1
  "$BIN/hub" latency 1 2
  "$BIN/hub" latency 10000 1
  "$BIN/hub" latency 10000 2
  "$BIN/hub" idle-set 1
  "$BIN/hub" idle-set 10000
  return 0
}
