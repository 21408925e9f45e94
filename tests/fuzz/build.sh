#!/usr/bin/env bash
# tests/fuzz/build.sh - builds the libFuzzer targets with clang into
# build/fuzz/.  Run one:  build/fuzz/event_fuzz -max_total_time=60 \
#     tests/fuzz/corpus/event
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p build/fuzz
CC=${CC:-clang}
src=(alloc/*.c runtime/*.c runtime/linux/*.c channels/*.c)
"$CC" -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined \
  -Iinclude -I. tests/fuzz/event_fuzz.c "${src[@]}" \
  -lmimalloc -luring -lpthread -lm -o build/fuzz/event_fuzz
echo "built build/fuzz/event_fuzz"
