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
 *
 * Idle trimming (Bonwick & Adams' working-set rule): the depot remembers
 * the fewest full and the fewest empty magazines it held since the last
 * tick; those many sat there the whole time, unused.  At a tick, at least
 * idle_ms after the previous one, they go back (their objects to the
 * slabs, which give empty slabs back beyond their bound) and the marks
 * start again from what is left.  Ticks come from hy_cache_trim_idle and,
 * so that a busy cache needs no caller, from every 32nd depot operation.
 * The magazines at the far end of each list are the ones taken: the depot
 * is a stack, so those are the least recently used.
 */
#include "alloc/internal.h"
#include "alloc/mem.h"

#define WINDOW 256

#define TICK_OPS 32

void hy__depot_lock(hy_cache_t *c) {
  int contended = 0;
  if (!hy__oslock_trylock(&c->depot_lock)) {
    hy__oslock_lock(&c->depot_lock);
    contended = 1;
  }
  if (++c->trim_ops >= TICK_OPS) {
    c->trim_ops = 0;
    hy__mag *idle = hy__depot_take_idle(c, hy__os_now_ms());
    if (idle) { /* freed by hy__depot_unlock, with no lock held */
      hy__mag **tail = &idle;
      while (*tail)
        tail = &(*tail)->next;
      *tail = c->trim_pending;
      c->trim_pending = idle;
    }
  }
  c->dep_ops++;
  c->dep_contended += (uint64_t)contended;
  c->depot_contended += (uint64_t)contended;
  if (c->dep_ops >= WINDOW) {
    if (c->dep_contended * 64 > c->dep_ops && c->mag_size < c->mag_max)
      c->mag_size = c->mag_size * 2 < c->mag_max ? c->mag_size * 2 : c->mag_max;
    c->dep_ops = c->dep_contended = 0;
  }
}

void hy__depot_unlock(hy_cache_t *c) {
  hy__mag *idle = c->trim_pending;
  c->trim_pending = NULL;
  hy__oslock_unlock(&c->depot_lock);
  if (idle)
    hy__mags_release(c, idle);
}

hy__mag *hy__depot_get_full(hy_cache_t *c) {
  hy__mag *m = c->full;
  if (m) {
    c->full = m->next;
    c->nfull--;
    c->depot_gets++;
    if (c->nfull < c->min_full)
      c->min_full = c->nfull;
  }
  return m;
}

hy__mag *hy__depot_get_empty(hy_cache_t *c) {
  hy__mag *m = c->empty;
  if (m) {
    c->empty = m->next;
    c->nempty--;
    if (c->nempty < c->min_empty)
      c->min_empty = c->nempty;
  }
  return m;
}

/* Cuts the last k magazines off the list at *head (of n), onto *chain. */
static void cut_tail(hy__mag **head, uint64_t n, uint64_t k, hy__mag **chain) {
  if (k == 0 || k > n)
    return;
  hy__mag **at = head;
  for (uint64_t i = 0; i < n - k; i++)
    at = &(*at)->next;
  hy__mag *cut = *at, *last = cut;
  *at = NULL;
  while (last->next)
    last = last->next;
  last->next = *chain;
  *chain = cut;
}

hy__mag *hy__depot_take_idle(hy_cache_t *c, uint64_t now_ms) {
  if (c->idle_ms == 0 || now_ms - c->trim_last_ms < c->idle_ms)
    return NULL;
  hy__mag *chain = NULL;
  uint64_t kf = c->min_full < c->nfull ? c->min_full : c->nfull;
  uint64_t ke = c->min_empty < c->nempty ? c->min_empty : c->nempty;
  cut_tail(&c->full, c->nfull, kf, &chain);
  cut_tail(&c->empty, c->nempty, ke, &chain);
  c->nfull -= kf;
  c->nempty -= ke;
  c->min_full = c->nfull;
  c->min_empty = c->nempty;
  c->trim_last_ms = now_ms;
  c->trims++;
  c->trimmed_mags += kf + ke;
  return chain;
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
  c->min_full = c->min_empty = 0;
  return chain;
}

void hy__mags_release(hy_cache_t *c, hy__mag *m) {
  while (m) {
    hy__mag *next = m->next;
    if (m->n)
      hy__slab_put(c, hy__mag_obj(m), (int)m->n);
    hy__mag_free(c, m);
    m = next;
  }
}
