/* stack.c - stack caches: task stacks straight from the OS (alloc/os.h),
 * each with an inaccessible guard page below it, so an overflow faults
 * instead of writing over a neighbour.
 *
 * Freed stacks are kept (up to max_cached) in a LIFO array and handed out
 * again: a cached stack costs a lock and an array pop instead of mmap +
 * mprotect + munmap.  Trimming keeps the mappings but gives their memory
 * back (madvise(MADV_DONTNEED) / VirtualFree(MEM_DECOMMIT)); a trimmed
 * stack is recommitted when it is handed out again (a no-op on Linux,
 * where the pages come back zero-filled on first touch).
 */
#include "alloc/internal.h"
#include "alloc/mem.h"
#include "hydra/error.h"

typedef struct cached {
  char *base;
  int trimmed;
} cached;

struct hy_stack_cache {
  hy__oslock_t lock;
  size_t size, guard, max;
  size_t n, cap;
  cached *v;
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
  *out = c;
  return 0;
}

int hy_stack_alloc(hy_stack_cache_t *c, hy_stack_t *out) {
  if (!c || !out)
    return HY_EINVAL;
  hy__oslock_lock(&c->lock);
  if (c->n) {
    cached e = c->v[--c->n];
    hy__oslock_unlock(&c->lock);
    if (e.trimmed && hy__os_recommit(e.base, c->size) != 0) {
      hy__os_unmap(e.base - c->guard, c->size + c->guard);
      return HY_ENOMEM;
    }
    out->base = e.base;
    out->size = c->size;
    return 0;
  }
  hy__oslock_unlock(&c->lock);
  char *p = hy__os_map(c->size + c->guard);
  if (!p)
    return HY_ENOMEM;
  if (hy__os_stack_guard(p, c->guard) != 0) {
    hy__os_unmap(p, c->size + c->guard);
    return HY_ENOMEM;
  }
  out->base = p + c->guard;
  out->size = c->size;
  return 0;
}

void hy_stack_free(hy_stack_cache_t *c, const hy_stack_t *s) {
  if (!c || !s || !s->base)
    return;
  char *base = s->base;
  hy__oslock_lock(&c->lock);
  if (c->n < c->max) {
    if (c->n == c->cap) {
      size_t cap = c->cap ? c->cap * 2 : 16;
      if (cap > c->max)
        cap = c->max;
      cached *v = hy__mem_realloc(c->v, cap * sizeof *v);
      if (v) {
        c->v = v;
        c->cap = cap;
      }
    }
    if (c->n < c->cap) {
      c->v[c->n].base = base;
      c->v[c->n].trimmed = 0;
      c->n++;
      hy__oslock_unlock(&c->lock);
      return;
    }
  }
  hy__oslock_unlock(&c->lock);
  hy__os_unmap(base - c->guard, c->size + c->guard);
}

size_t hy_stack_cache_trim(hy_stack_cache_t *c) {
  if (!c)
    return 0;
  size_t bytes = 0;
  hy__oslock_lock(&c->lock);
  for (size_t i = 0; i < c->n; i++) {
    if (c->v[i].trimmed)
      continue;
    if (hy__os_decommit(c->v[i].base, c->size) == 0) {
      c->v[i].trimmed = 1;
      bytes += c->size;
    }
  }
  hy__oslock_unlock(&c->lock);
  return bytes;
}

void hy_stack_cache_destroy(hy_stack_cache_t *c) {
  if (!c)
    return;
  for (size_t i = 0; i < c->n; i++)
    hy__os_unmap(c->v[i].base - c->guard, c->size + c->guard);
  hy__mem_free(c->v);
  hy__oslock_destroy(&c->lock);
  hy__mem_free(c);
}
