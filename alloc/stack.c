/* stack.c - stack caches: task stacks straight from the OS (alloc/os.h),
 * each with an inaccessible guard page below it, so an overflow faults
 * instead of writing over a neighbour.
 *
 * Stacks are carved from chunks: one mapping holds up to CHUNK_STACKS
 * stacks, each below its own guard, so a thousand new stacks cost a few
 * dozen mmap calls instead of a thousand.  The guard is installed when a
 * stack is carved, with hy__os_stack_guard_light where the system has it
 * (Linux >= 6.13, MADV_GUARD_INSTALL: a marker in the page table that does
 * not split the mapping), so that the number of stacks is not bounded by
 * the kernel's mapping limit (vm.max_map_count, where a protected page per
 * stack costs two mappings).  Where the system refuses, the cache falls
 * back to mprotect for good; HYDRA_STACK_GUARD=mprotect in the environment
 * forces that fallback (tests run the overflow checks in both modes).
 *
 * Freed stacks are kept (up to max_cached, "warm") in a LIFO array and
 * handed out again: a cached stack costs a lock and an array pop instead
 * of system calls.  A stack is never unmapped on its own (that would split
 * its chunk): when a stack is freed into a full warm list, the coldest
 * quarter of the list (its bottom) gives its memory back
 * (madvise(MADV_DONTNEED) / VirtualFree(MEM_DECOMMIT)) and moves to a
 * second, "cold" list, used before a new stack is carved.  They go in
 * address order, neighbours in one call where the guards survive it
 * (page-table guards do): a few system calls, and a few TLB shootdowns,
 * for hundreds of stacks.  Trimming gives
 * back the memory of the warm stacks too; a trimmed stack is recommitted
 * when it is handed out again (a no-op on Linux, where the pages come back
 * zero-filled on first touch).  Chunks are unmapped when the cache is
 * destroyed.
 */
#include <stdlib.h>
#include <string.h>

#include "alloc/internal.h"
#include "alloc/mem.h"
#include "hydra/error.h"

#define CHUNK_STACKS 64
#define CHUNK_BYTES ((size_t)8 << 20) /* fewer stacks per chunk when large */

typedef struct cached {
  char *base;
  int trimmed;
} cached;

typedef struct stack_list {
  size_t n, cap;
  cached *v;
} stack_list;

typedef struct chunk {
  char *base;
  size_t len;
} chunk;

struct hy_stack_cache {
  hy__oslock_t lock;
  size_t size, guard, max;
  size_t per_chunk;   /* stacks carved from one mapping */
  int light;          /* guards by hy__os_stack_guard_light, not mprotect */
  stack_list warm;    /* at most max, memory kept */
  stack_list cold;    /* memory given back */
  char *carve;        /* next stack's guard in the newest chunk */
  size_t carve_left;  /* stacks left to carve there */
  size_t nchunks, chunks_cap;
  chunk *chunks;
};

size_t hy_page_size(void) { return hy__os_page_size(); }

int hy_stack_cache_create(size_t stack_size, size_t max_cached,
                          hy_stack_cache_t **out) {
  if (!out)
    return HY_EINVAL;
  size_t pg = hy__os_page_size();
  if (stack_size == 0)
    stack_size = 64 * 1024;
  if (stack_size > ((size_t)1 << 40))
    return HY_EINVAL;
  hy_stack_cache_t *c = hy__mem_calloc(1, sizeof *c);
  if (!c)
    return HY_ENOMEM;
  hy__oslock_init(&c->lock);
  c->size = (stack_size + pg - 1) / pg * pg;
  c->guard = pg * hy__os_stack_guard_pages();
  c->max = max_cached ? max_cached : 1024;
  size_t per = CHUNK_BYTES / (c->size + c->guard);
  c->per_chunk = per < 1 ? 1 : per > CHUNK_STACKS ? CHUNK_STACKS : per;
  const char *g = getenv("HYDRA_STACK_GUARD");
  c->light = !(g && strcmp(g, "mprotect") == 0);
  *out = c;
  return 0;
}

static int list_push(stack_list *l, char *base, int trimmed) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    cached *v = hy__mem_realloc(l->v, cap * sizeof *v);
    if (!v)
      return -1;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n].base = base;
  l->v[l->n].trimmed = trimmed;
  l->n++;
  return 0;
}

/* Maps a new chunk to carve from.  Pre: lock held. */
static int new_chunk(hy_stack_cache_t *c) {
  if (c->nchunks == c->chunks_cap) {
    size_t cap = c->chunks_cap ? c->chunks_cap * 2 : 16;
    chunk *v = hy__mem_realloc(c->chunks, cap * sizeof *v);
    if (!v)
      return -1;
    c->chunks = v;
    c->chunks_cap = cap;
  }
  size_t len = c->per_chunk * (c->size + c->guard);
  char *p = hy__os_map(len);
  if (!p)
    return -1;
  c->chunks[c->nchunks].base = p;
  c->chunks[c->nchunks].len = len;
  c->nchunks++;
  c->carve = p;
  c->carve_left = c->per_chunk;
  return 0;
}

/* Installs the guard below a freshly carved stack. */
static int guard(hy_stack_cache_t *c, char *p) {
  hy__oslock_lock(&c->lock);
  int light = c->light;
  hy__oslock_unlock(&c->lock);
  if (light) {
    if (hy__os_stack_guard_light(p, c->guard) == 0)
      return 0;
    /* Not supported here: protection from now on. */
    hy__oslock_lock(&c->lock);
    c->light = 0;
    hy__oslock_unlock(&c->lock);
  }
  return hy__os_stack_guard(p, c->guard);
}

int hy_stack_alloc(hy_stack_cache_t *c, hy_stack_t *out) {
  if (!c || !out)
    return HY_EINVAL;
  hy__oslock_lock(&c->lock);
  stack_list *l = c->warm.n ? &c->warm : c->cold.n ? &c->cold : NULL;
  if (l) {
    cached e = l->v[--l->n];
    if (e.trimmed && hy__os_recommit(e.base, c->size) != 0) {
      l->n++; /* stays where it was, for a later try */
      hy__oslock_unlock(&c->lock);
      return HY_ENOMEM;
    }
    hy__oslock_unlock(&c->lock);
    out->base = e.base;
    out->size = c->size;
    return 0;
  }
  if (!c->carve_left && new_chunk(c) != 0) {
    hy__oslock_unlock(&c->lock);
    return HY_ENOMEM;
  }
  char *p = c->carve;
  c->carve += c->size + c->guard;
  c->carve_left--;
  hy__oslock_unlock(&c->lock);
  if (guard(c, p) != 0) {
    /* The stack cannot be protected: give it back without memory, as a
     * stack that still needs its guard is not to be handed out. */
    hy__os_decommit(p, c->size + c->guard);
    return HY_ENOMEM;
  }
  out->base = p + c->guard;
  out->size = c->size;
  return 0;
}

static int by_base(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)((const cached *)a)->base;
  uintptr_t y = (uintptr_t)((const cached *)b)->base;
  return x < y ? -1 : x > y;
}

/* Moves the bottom quarter of the full warm list to the cold list, its
 * memory given back.  Pre: lock held. */
static void cool(hy_stack_cache_t *c) {
  size_t k = c->max / 4 ? c->max / 4 : 1;
  if (k > c->warm.n)
    k = c->warm.n;
  cached *v = c->warm.v;
  qsort(v, k, sizeof *v, by_base);
  size_t step = c->size + c->guard;
  for (size_t i = 0; i < k;) {
    size_t j = i + 1;
    while (c->light && j < k && v[j].base == v[j - 1].base + step)
      j++;
    /* One call for the run, the guards between its stacks included. */
    size_t len = (size_t)(v[j - 1].base - v[i].base) + c->size;
    int ok = hy__os_decommit(v[i].base, len) == 0;
    for (; i < j; i++) {
      v[i].trimmed = v[i].trimmed || ok;
      /* Without room in the cold list the stack stays idle in its chunk
       * (its memory given back) until destroy. */
      (void)list_push(&c->cold, v[i].base, v[i].trimmed);
    }
  }
  memmove(v, v + k, (c->warm.n - k) * sizeof *v);
  c->warm.n -= k;
}

void hy_stack_free(hy_stack_cache_t *c, const hy_stack_t *s) {
  if (!c || !s || !s->base)
    return;
  char *base = s->base;
  hy__oslock_lock(&c->lock);
  if (c->warm.n >= c->max)
    cool(c);
  if (list_push(&c->warm, base, 0) != 0) {
    (void)hy__os_decommit(base, c->size);
    (void)list_push(&c->cold, base, 1);
  }
  hy__oslock_unlock(&c->lock);
}

size_t hy_stack_cache_trim(hy_stack_cache_t *c) {
  if (!c)
    return 0;
  size_t bytes = 0;
  hy__oslock_lock(&c->lock);
  for (size_t i = 0; i < c->warm.n; i++) {
    if (c->warm.v[i].trimmed)
      continue;
    if (hy__os_decommit(c->warm.v[i].base, c->size) == 0) {
      c->warm.v[i].trimmed = 1;
      bytes += c->size;
    }
  }
  hy__oslock_unlock(&c->lock);
  return bytes;
}

void hy_stack_cache_destroy(hy_stack_cache_t *c) {
  if (!c)
    return;
  for (size_t i = 0; i < c->nchunks; i++)
    hy__os_unmap(c->chunks[i].base, c->chunks[i].len);
  hy__mem_free(c->chunks);
  hy__mem_free(c->warm.v);
  hy__mem_free(c->cold.v);
  hy__oslock_destroy(&c->lock);
  hy__mem_free(c);
}
