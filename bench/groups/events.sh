# bench/groups/events.sh - the event model against Go, with two workers
# (GOMAXPROCS 2) and with one ("-w1"): fanout-100 in ns per delivered copy
# (lower is better), unicast-workers in events per second (higher is
# better).  Each side runs each workload three times, alternating, and the
# best run counts, so that a busy machine distorts the ratio less.
bench_events() {
  local gobin=""
  if have go; then
    gobin="$OUT/go-events"
    (cd bench/ref/go/events && GOFLAGS=-mod=mod go build -o "../../../../$gobin" .) \
      || gobin=""
  else
    missing go
  fi
  local w n runs="$OUT/events-runs.txt"
  for w in 2 1; do
    for n in fanout-100 unicast-workers; do
      : >"$runs"
      for i in 1 2 3; do
        "$BIN/events" "$n" "$w" >>"$runs"
        [ -n "$gobin" ] && GOMAXPROCS=$w "$gobin" "$n" >>"$runs"
      done
      events_best hydra <"$runs"
      [ -n "$gobin" ] && events_best go <"$runs"
      grep "^# .* hydra " "$runs" | head -1
      grep "^# .* go " "$runs" | head -1
    done
  done
  return 0
}

# The best measurement line of one system: lowest ns/copy, highest events/s.
events_best() {
  awk -F'\t' -v sys="$1" '$2 == sys {
      if ($4 ~ /\/s$/) better = ($3 + 0 > v + 0); else better = ($3 + 0 < v + 0)
      if (line == "" || better) { v = $3; line = $0 } }
    END { if (line != "") print line }'
}
