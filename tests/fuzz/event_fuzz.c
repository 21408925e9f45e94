/* tests/fuzz/event_fuzz.c - libFuzzer target for the event wire form:
 * every input goes through hy_event_deserialize; whatever it accepts must
 * serialize again and round-trip to the same bytes' meaning.  Built by
 * tests/fuzz/build.sh (clang -fsanitize=fuzzer,address,undefined); the
 * corpus in tests/fuzz/corpus/event also runs as the normal test
 * event_fuzz_corpus.
 *
 *   bash tests/fuzz/build.sh && build/fuzz/event_fuzz tests/fuzz/corpus/event
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hydra.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* No runtime: the built-in types only (a runtime adds registered ones). */
  hy_event_t *ev = NULL;
  int rc = hy_event_deserialize(NULL, data, size, &ev);
  if (rc != 0) {
    if (ev || (rc != HY_EPROTO && rc != HY_ENOENT && rc != HY_ENOMEM))
      abort();
    return 0;
  }
  long n = hy_event_serialize(ev, NULL, 0);
  if (n <= 0)
    abort();
  uint8_t *buf = malloc((size_t)n);
  if (!buf)
    abort();
  if (hy_event_serialize(ev, buf, (size_t)n) != n)
    abort();
  hy_event_t *again = NULL;
  if (hy_event_deserialize(NULL, buf, (size_t)n, &again) != 0)
    abort();
  size_t la, lb;
  const void *pa = hy_event_data(ev, &la);
  const void *pb = hy_event_data(again, &lb);
  if (hy_event_type_of(ev) != hy_event_type_of(again) || la != lb ||
      (hy_event_type_of(ev) != &hy_event_batch && memcmp(pa, pb, la) != 0))
    abort();
  hy_event_unref(again);
  hy_event_unref(ev);
  free(buf);
  return 0;
}
