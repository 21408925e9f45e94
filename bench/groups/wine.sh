# bench/groups/wine.sh - the runtime workloads of bench/rt.c built for
# Windows (MinGW-w64, release) and run under Wine on the IOCP backend, next
# to the same program on Linux.  Under Wine every wake and completion goes
# through the wineserver, so these are a sanity check of the Windows build
# (it runs, and within what order of magnitude), not a target: the ratios
# hydra/wine are Linux's figure over Wine's (time per op: lower means
# Linux is faster; skynet-*-rss and idle-mem: memory).
bench_wine() {
  if ! have x86_64-w64-mingw32-gcc || ! have wine; then
    missing "mingw-w64 / wine"
    return 0
  fi
  premake4 --file=premake5.lua --os=windows gmake >/dev/null
  if ! make -C build/win config=release CC=x86_64-w64-mingw32-gcc \
         AR=x86_64-w64-mingw32-ar -j"$(nproc)" hydra rt >/dev/null 2>&1; then
    echo "# wine: the Windows build of bench/rt failed (skipped)" >&2
    premake4 --file=premake5.lua gmake >/dev/null
    return 0
  fi
  premake4 --file=premake5.lua gmake >/dev/null
  local exe=build/win/release/rt.exe
  # The program's own lines say "hydra"; Wine's are renamed "wine".
  onwine() { WINEDEBUG=-all wine "$exe" "$@" 2>/dev/null | tr -d '\r' |
               awk -F'\t' 'BEGIN { OFS = "\t" } NF >= 4 { $2 = "wine" } 1'; }
  "$BIN/rt" switch 1
  onwine switch 1
  "$BIN/rt" spawn-join 1
  onwine spawn-join 1
  "$BIN/rt" skynet 2
  onwine skynet 2
  "$BIN/rt" timers 2
  onwine timers 2
  return 0
}
