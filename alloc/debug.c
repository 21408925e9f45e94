/* debug.c - the object cache's debug mode.
 *
 * With checks on (HY_CACHE_DEBUG, or any cache in a build with HY_DEBUG >= 2)
 * each buffer carries a 16-byte header just below the object (a state word,
 * a magic number and the owning cache) and a red zone after it:
 *   - free of an object whose state is already FREE: double free;
 *   - free of an object whose header names another cache: foreign free;
 *   - a red zone byte changed: the object was overrun;
 * each aborts with a message naming the cache (programming errors, not
 * conditions to handle).  With HY_CACHE_DEBUG the cache also poisons freed
 * objects: the destructor runs at free, the object is filled with a
 * pattern that is checked at the next alloc (a write after free aborts),
 * and the constructor runs at alloc (Bonwick's debugging mode; constructed
 * state is not kept between free and alloc then).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/internal.h"

#define ST_LIVE 0xA11C0A7Eu
#define ST_FREE 0xF4EEF4EEu
#define MAGIC 0x48594452u /* "HYDR" */
#define REDZONE 0xB5
#define POISON 0xDB

typedef struct dbg_hdr {
  _Atomic uint32_t state;
  uint32_t magic;
  hy_cache_t *cache;
} dbg_hdr;

_Static_assert(sizeof(dbg_hdr) == 16, "debug header is 16 bytes");

static dbg_hdr *hdr_of(void *obj) { return (dbg_hdr *)((char *)obj - 16); }

static size_t tail_len(hy_cache_t *c) { return c->stride - c->offset - c->size; }

void hy__dbg_abort(hy_cache_t *c, const char *what, void *obj) {
  fprintf(stderr, "hydra: cache '%s': %s (object %p)\n", c->name, what, obj);
  fflush(stderr);
  abort();
}

void hy__dbg_init(hy_cache_t *c, void *obj) {
  dbg_hdr *h = hdr_of(obj);
  atomic_store_explicit(&h->state, ST_FREE, memory_order_relaxed);
  h->magic = MAGIC;
  h->cache = c;
  memset((char *)obj + c->size, REDZONE, tail_len(c));
  if (c->poison)
    memset(obj, POISON, c->size);
}

static void check_redzone(hy_cache_t *c, void *obj) {
  const unsigned char *t = (const unsigned char *)obj + c->size;
  for (size_t i = 0; i < tail_len(c); i++)
    if (t[i] != REDZONE)
      hy__dbg_abort(c, "red zone after the object overwritten (buffer overrun)",
                    obj);
}

int hy__dbg_alloc(hy_cache_t *c, void *obj) {
  dbg_hdr *h = hdr_of(obj);
  if (h->magic != MAGIC || h->cache != c)
    hy__dbg_abort(c, "header of a cached object overwritten", obj);
  if (atomic_exchange(&h->state, ST_LIVE) != ST_FREE)
    hy__dbg_abort(c, "object handed out while live (state overwritten)", obj);
  check_redzone(c, obj);
  if (!c->poison)
    return 0;
  const unsigned char *p = obj;
  for (size_t i = 0; i < c->size; i++)
    if (p[i] != POISON)
      hy__dbg_abort(c, "object written after it was freed", obj);
  if (c->ctor) {
    atomic_fetch_add_explicit(&c->ctor_calls, 1, memory_order_relaxed);
    int rc = c->ctor(obj, c->arg);
    if (rc != 0) {
      memset(obj, POISON, c->size);
      atomic_store(&h->state, ST_FREE);
      return rc;
    }
  }
  return 0;
}

void hy__dbg_free(hy_cache_t *c, void *obj) {
  dbg_hdr *h = hdr_of(obj);
  if (h->magic != MAGIC) {
    hy__dbg_abort(c, "free of a pointer that is not a cache object "
                     "(or whose header was overwritten)", obj);
  }
  if (h->cache != c) {
    char what[160];
    snprintf(what, sizeof what, "free of an object of cache '%s' (foreign free)",
             h->cache->name);
    hy__dbg_abort(c, what, obj);
  }
  if (atomic_exchange(&h->state, ST_FREE) == ST_FREE)
    hy__dbg_abort(c, "double free", obj);
  check_redzone(c, obj);
  if (c->poison) {
    if (c->dtor) {
      c->dtor(obj, c->arg);
      atomic_fetch_add_explicit(&c->dtor_calls, 1, memory_order_relaxed);
    }
    memset(obj, POISON, c->size);
  }
}
