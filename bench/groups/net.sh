# bench/groups/net.sh - TCP echo on loopback: Hydra's callback server
# ("hydra") and task-per-connection server ("hydra-task"), 1 worker each,
# against a raw single-thread epoll echo server in C ("epoll",
# bench/ref/epoll_echo.c).  The server runs on CPU 1, the load generator
# (bench/net.c load: one thread, epoll) on CPU 0.
# Ratios hydra/<ref>: req/s and MB/s higher is better; p99 us, us-cpu/msg
# and bytes/conn lower is better.
# Environment: NET_BENCH_SECS (default 3) seconds measured per case.
bench_net() {
  local secs="${NET_BENCH_SECS:-3}"
  local refbin="$OUT/epoll_echo"
  cc -O2 -o "$refbin" bench/ref/epoll_echo.c || { missing "cc"; return 0; }
  local pin_srv="" pin_cli=""
  if have taskset && [ "$(nproc)" -ge 2 ]; then
    pin_srv="taskset -c 1"
    pin_cli="taskset -c 0"
  fi
  local port=$((20000 + RANDOM % 20000))
  run_cases() { # name, then the server command
    local name="$1"
    shift
    port=$((port + 1))
    local log="$OUT/net-$name.log"
    $pin_srv "$@" "$port" $( [ "$name" != epoll ] && echo 1 ) >"$log" 2>&1 &
    local spid=$!
    for _ in $(seq 100); do grep -q ready "$log" 2>/dev/null && break; sleep 0.05; done
    local L="$pin_cli $BIN/net load $port $spid $name"
    $L echo-64-c1 1 64 "$secs"
    $L echo-64-c64 64 64 "$secs"
    $L echo-64-c1000 1000 64 "$secs"
    $L echo-16k-c64 64 16384 "$secs"
    $L echo-64-c64-p99 64 64 "$secs"
    $L echo-cpu-r50k 64 64 "$secs" 50000
    $L idle 10000 0 0 | sed "s/^idle/conn-idle-mem/"
    kill -INT "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null
  }
  run_cases hydra "$BIN/net" server-cb
  run_cases hydra-task "$BIN/net" server-task
  run_cases epoll "$refbin"
  return 0
}
