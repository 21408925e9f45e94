# bench/groups/chan.sh - channels and select, Hydra against Go.
# Ratios (hydra/go): time per round trip / per select for chan-pingpong-w*,
# select-2+timeout and select-4 (lower is better); elements per second for
# chan-mpmc (higher is better).
bench_chan() {
  local gobin=""
  if have go; then
    gobin="$OUT/go-chan"
    (cd bench/ref/go/chan && GOFLAGS=-mod=mod go build -o "../../../../$gobin" .) \
      || gobin=""
  else
    missing go
  fi
  for w in 1 2; do
    "$BIN/chan" pingpong $w
    [ -n "$gobin" ] && GOMAXPROCS=$w "$gobin" pingpong
  done
  "$BIN/chan" select2 1
  [ -n "$gobin" ] && GOMAXPROCS=1 "$gobin" select2
  "$BIN/chan" select4 1
  [ -n "$gobin" ] && GOMAXPROCS=1 "$gobin" select4
  "$BIN/chan" mpmc 2
  [ -n "$gobin" ] && GOMAXPROCS=2 "$gobin" mpmc
  return 0
}
