# bench/groups/port.sh - the completion port on each Linux backend.
# post-rtt: a posted op bounced between two threads' ports (reference: two
# eventfds); post-local: post and dequeue on one thread; pingpong: 1-byte
# loopback TCP exchange through one port (reference: the bare syscalls).
# Ratios are hydra/reference in ns: lower is better.
bench_port() {
  for b in uring epoll; do
    "$BIN/port" post-rtt $b
    "$BIN/port" post-local $b
    "$BIN/port" pingpong $b
  done
  return 0
}
