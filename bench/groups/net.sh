# bench/groups/net.sh - TCP echo on loopback: Hydra's callback server
# ("hydra"; "hydra-epoll": the same on the epoll backend, which bench/run
# gives its own hydra-epoll/<ref> ratio lines) and task-per-connection server
# ("hydra-task"), 1 worker each,
# against the references in bench/ref/, each one thread: raw epoll
# ("epoll", epoll_echo.c), io_uring ("uring", uring_echo.c, liburing),
# libuv ("libuv", libuv_echo.c) and Go's net package ("go", go/net,
# GOMAXPROCS 1).  The servers run on CPU 1, the load generator
# (bench/netload.c: one thread, epoll) on CPU 0.  Every server is up for
# the whole run, and each case but idle memory is one run of the generator
# in which the servers take turns in slices of 100 ms (see bench/netload.c).
# Ratios hydra/<ref>: req/s, MB/s and conn/s higher is better; p99 us,
# us-cpu/msg and bytes/conn lower is better.  Each case also prints a "#"
# line on stderr with the server's and the load generator's CPU use over
# the server's slices (% and us per request/connection): a side near 100%
# is the bound (the generator is the same for every server and kept cheap
# per request).
# Environment: NET_BENCH_SECS (default 3) seconds measured per case;
# NET_BENCH_SYSTEMS (default all) the servers to run, space separated;
# NET_BENCH_CASES (default all) the cases to run, by name, space separated
# (many rounds of one noisy case: NET_BENCH_CASES=connect-rate);
# NET_BENCH_SLICE_MS (default 100) the length of a turn.
bench_net() {
  local secs="${NET_BENCH_SECS:-3}"
  local systems="${NET_BENCH_SYSTEMS:-hydra hydra-task epoll uring libuv go}"
  local cmd_epoll="" cmd_uring="" cmd_libuv="" cmd_go=""
  cc -O2 -o "$OUT/epoll_echo" bench/ref/epoll_echo.c &&
    cmd_epoll="$OUT/epoll_echo" || missing "cc (epoll_echo)"
  cc -O2 -o "$OUT/uring_echo" bench/ref/uring_echo.c -luring &&
    cmd_uring="$OUT/uring_echo" || missing "liburing-dev (uring_echo)"
  if pkg-config --exists libuv 2>/dev/null || [ -f /usr/include/uv.h ]; then
    cc -O2 -o "$OUT/libuv_echo" bench/ref/libuv_echo.c -luv &&
      cmd_libuv="$OUT/libuv_echo" || missing "libuv1-dev (libuv_echo)"
  else
    missing "libuv1-dev"
  fi
  if have go; then
    (cd bench/ref/go/net && GOFLAGS=-mod=mod go build -o "../../../../$OUT/go-net" .) &&
      cmd_go="$OUT/go-net" || missing "go (build of bench/ref/go/net)"
  else
    missing go
  fi
  local pin_srv="" pin_cli=""
  if have taskset && [ "$(nproc)" -ge 2 ]; then
    pin_srv="taskset -c 1"
    pin_cli="taskset -c 0"
  fi
  local port=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-)
  # Every server is started first and stays up (idle, asleep in its poll)
  # while the others are measured.  The order of the servers' turns moves
  # by one each round (bench/run's $round), so none is always first.
  local -A sport=() spid=()
  local up=()
  start_server() { # name, then the server command (the port is appended)
    local name="$1"
    shift
    local log="$OUT/net-$name.log" pid="" try
    # Twice, on a fresh port the second time: the port picked at random
    # may be taken by another program.
    for try in 1 2; do
      port=$((port + 1))
      GOMAXPROCS=1 $pin_srv "$@" "$port" >"$log" 2>&1 &
      pid=$!
      for _ in $(seq 100); do grep -q ready "$log" 2>/dev/null && break; sleep 0.05; done
      grep -q ready "$log" && break
      echo "# $name: server did not start on port $port (try $try): $(tail -c 300 "$log" | tr '\n' ' ')" >&2
      kill "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      pid=""
    done
    [ -n "$pid" ] || return 0
    sport[$name]=$port
    spid[$name]=$pid
    up+=("$name")
  }
  local sys
  for sys in $systems; do
    case "$sys" in
      hydra) start_server hydra "$BIN/net" server-cb ;;
      hydra-task) start_server hydra-task "$BIN/net" server-task ;;
      hydra-epoll) HYDRA_BACKEND=epoll start_server hydra-epoll "$BIN/net" server-cb ;;
      epoll) [ -n "$cmd_epoll" ] && start_server epoll "$cmd_epoll" ;;
      uring) [ -n "$cmd_uring" ] && start_server uring "$cmd_uring" ;;
      libuv) [ -n "$cmd_libuv" ] && start_server libuv "$cmd_libuv" ;;
      go) [ -n "$cmd_go" ] && start_server go "$cmd_go" ;;
    esac
  done
  local n=${#up[@]} turn=$(( (${round:-1} - 1) ))
  run_case() { # the load generator's arguments after the servers
    local k name want="$1" ports="" pids="" names=""
    [ "$want" = idle ] && want=conn-idle-mem # its name in the results
    [ -z "${NET_BENCH_CASES:-}" ] ||
      [[ " $NET_BENCH_CASES " == *" $want "* ]] || return 0
    for ((k = 0; k < n; k++)); do
      name="${up[(k + turn) % n]}"
      if ! kill -0 "${spid[$name]}" 2>/dev/null; then
        echo "# $name: server gone before $1: $(tail -c 300 "$OUT/net-$name.log" | tr '\n' ' ')" >&2
        continue
      fi
      if [ "$1" = idle ]; then # one server at a time
        $pin_cli "$BIN/netload" "${sport[$name]}" "${spid[$name]}" "$name" "$@"
        continue
      fi
      ports+="${ports:+,}${sport[$name]}"
      pids+="${pids:+,}${spid[$name]}"
      names+="${names:+,}$name"
    done
    # Every other case: one run in which the servers take turns in slices
    # of 100 ms (bench/netload.c), as this host's speed moves more over
    # seconds than the servers differ.
    [ -z "$names" ] || $pin_cli "$BIN/netload" "$ports" "$pids" "$names" "$@"
  }
  {
    run_case echo-64-c1 1 64 "$secs"
    run_case echo-64-c64 64 64 "$secs"
    run_case echo-64-c1000 1000 64 "$secs"
    run_case echo-16k-c64 64 16384 "$secs"
    run_case echo-64-c64-p99 64 64 "$secs"
    run_case echo-cpu-r50k 64 64 "$secs" 50000
    run_case connect-rate 50 64 "$secs"
    run_case idle 10000 0 0 | sed "s/^idle/conn-idle-mem/"
  } | tee "$OUT/net-results.tsv"
  for sys in "${up[@]}"; do
    kill -TERM "${spid[$sys]}" 2>/dev/null
    wait "${spid[$sys]}" 2>/dev/null
  done
  return 0
}
