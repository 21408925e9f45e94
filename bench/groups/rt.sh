# bench/groups/rt.sh - runtime workloads, Hydra against Go (GOMAXPROCS 1, 2).
# Ratios (hydra/go): time per switch, per task, skynet time, p99 lateness
# and bytes per parked task: lower is better for all of them.
bench_rt() {
  local gobin=""
  if have go; then
    gobin="$OUT/go-rt"
    (cd bench/ref/go/rt && GOFLAGS=-mod=mod go build -o "../../../../$gobin" .) \
      || gobin=""
  else
    missing go
  fi
  "$BIN/rt" switch 1
  [ -n "$gobin" ] && GOMAXPROCS=1 "$gobin" switch
  for w in 1 2; do
    "$BIN/rt" spawn-join $w
    [ -n "$gobin" ] && GOMAXPROCS=$w "$gobin" spawn-join
    "$BIN/rt" skynet $w
    [ -n "$gobin" ] && GOMAXPROCS=$w "$gobin" skynet
  done
  "$BIN/rt" timers 2
  [ -n "$gobin" ] && GOMAXPROCS=2 "$gobin" timers
  "$BIN/rt" idle-mem 1
  [ -n "$gobin" ] && GOMAXPROCS=1 "$gobin" idle-mem
  return 0
}
