#!/usr/bin/env bash
# tests/readme-snippets.sh LIBDIR - compiles every ```c block of README.md
# against the library in LIBDIR (e.g. build/release): a block with a main()
# is linked and run, any other block is compiled only.  Prints one ok/FAIL
# line per block and exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
lib="${1:-build/release}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk -v dir="$tmp" '
  /^```c[[:space:]]*$/ { n++; f = sprintf("%s/snippet-%02d.c", dir, n); inb = 1; next }
  /^```/ && inb { inb = 0; close(f); next }
  inb { print > f }
' README.md
fails=0
for f in "$tmp"/snippet-*.c; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .c)
  if grep -q 'int main' "$f"; then
    if cc -std=c11 -Wall -Wextra -Werror -Iinclude "$f" -o "$tmp/$name" \
         "$lib/libhydra.a" -lmimalloc -luring -pthread -lm 2>"$tmp/$name.log" \
       && timeout 60 "$tmp/$name" >"$tmp/$name.out" 2>&1; then
      echo "ok   readme_$name"
    else
      echo "FAIL readme_$name"; cat "$tmp/$name.log" "$tmp/$name.out" 2>/dev/null
      fails=$((fails + 1))
    fi
  elif cc -std=c11 -Wall -Wextra -Werror -Wno-unused-function -Iinclude -c "$f" \
         -o "$tmp/$name.o" 2>"$tmp/$name.log"; then
    echo "ok   readme_$name"
  else
    echo "FAIL readme_$name"; cat "$tmp/$name.log"; fails=$((fails + 1))
  fi
done
[ "$fails" = 0 ]
