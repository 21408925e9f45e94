# bench/groups/events.sh - the event model against Go: fanout-100 in ns
# per delivered copy (lower is better) with two workers (GOMAXPROCS 2: the
# headline) and with one ("-w1"), then unicast-workers in events per second
# (higher is better), two workers and one, with the spread between the
# receivers.  Each side runs each workload three times, alternating, and
# the median run counts (a busy machine moves single runs a lot).
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
  for n in fanout-100 unicast-workers; do
    for w in 2 1; do
      : >"$runs"
      for i in 1 2 3; do
        "$BIN/events" "$n" "$w" >>"$runs"
        [ -n "$gobin" ] && GOMAXPROCS=$w "$gobin" "$n" >>"$runs"
      done
      events_median hydra <"$runs"
      [ -n "$gobin" ] && events_median go <"$runs"
      events_spread hydra <"$runs"
      [ -n "$gobin" ] && events_spread go <"$runs"
    done
  done
  return 0
}

# The median measurement line of one system.
events_median() {
  awk -F'\t' -v sys="$1" '$1 !~ /^#/ && $2 == sys { print $3 "\t" $0 }' |
    sort -g | cut -f2- | awk '{ l[NR] = $0 } END { if (NR) print l[int((NR + 1) / 2)] }'
}

# The median spread between receivers of one system (unicast only), as a
# comment line.
events_spread() {
  awk -v sys="$1" '$1 == "#" && $3 == sys && $4 == "spread" {
      name = $2; v[++n] = $NF + 0 }
    END {
      if (!n) exit
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
        if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      printf "# %s %s spread (max-min)/mean %.1f%% (median of %d)\n", name, sys, v[int((n + 1) / 2)], n
    }'
}
