/* depot.c - the depot (Bonwick & Adams 2001, section 3): the full and empty
 * magazines of one cache behind one lock.  A thread goes to the depot only
 * when both of its magazines are empty (alloc) or full (free), so the lock
 * is taken once per magazine's worth of objects.
 *
 * Magazine size adapts to contention: the lock is first tried; when the
 * try fails often (more than 1 in 64 depot operations over a window of
 * 256), new magazines are made twice as big, up to mag_max, so that each
 * thread comes to the depot half as often.  Magazines of the old size are
 * used until they come back empty, then freed and replaced.
 */
#include "alloc/internal.h"
#include "alloc/mem.h"

#define WINDOW 256

void hy__depot_lock(hy_cache_t *c) {
  int contended = 0;
  if (!hy__oslock_trylock(&c->depot_lock)) {
    hy__oslock_lock(&c->depot_lock);
    contended = 1;
  }
  c->dep_ops++;
  c->dep_contended += (uint64_t)contended;
  c->depot_contended += (uint64_t)contended;
  if (c->dep_ops >= WINDOW) {
    if (c->dep_contended * 64 > c->dep_ops && c->mag_size < c->mag_max)
      c->mag_size *= 2;
    c->dep_ops = c->dep_contended = 0;
  }
}

void hy__depot_unlock(hy_cache_t *c) { hy__oslock_unlock(&c->depot_lock); }

hy__mag *hy__depot_get_full(hy_cache_t *c) {
  hy__mag *m = c->full;
  if (m) {
    c->full = m->next;
    c->nfull--;
    c->depot_gets++;
  }
  return m;
}

hy__mag *hy__depot_get_empty(hy_cache_t *c) {
  hy__mag *m = c->empty;
  if (m) {
    c->empty = m->next;
    c->nempty--;
  }
  return m;
}

void hy__depot_put(hy_cache_t *c, hy__mag *m) {
  if (m->n) {
    m->next = c->full;
    c->full = m;
    c->nfull++;
    c->depot_puts++;
  } else {
    m->next = c->empty;
    c->empty = m;
    c->nempty++;
  }
}

hy__mag *hy__depot_take_all(hy_cache_t *c) {
  hy__mag *chain = c->full;
  hy__mag **tail = &chain;
  while (*tail)
    tail = &(*tail)->next;
  *tail = c->empty;
  c->full = c->empty = NULL;
  c->nfull = c->nempty = 0;
  return chain;
}

void hy__mags_release(hy_cache_t *c, hy__mag *m) {
  while (m) {
    hy__mag *next = m->next;
    if (m->n)
      hy__slab_put(c, m->obj, (int)m->n);
    hy__mag_free(c, m);
    m = next;
  }
}
