/* magazine.c - the magazine layer (Bonwick & Adams 2001): every thread has
 * a loaded and a previous magazine per cache.  hy_cache_alloc pops from the
 * loaded one, hy_cache_free pushes onto it; when it is empty (or full) and
 * the previous one is full (or empty) the two swap; only when both are
 * useless does the thread go to the depot (alloc/depot.c) for a full (or
 * empty) magazine.  The fast path is a table lookup, a pop or push and two
 * counter stores: no lock, no atomic read-modify-write.
 *
 * Per-thread state: each thread has one table, reached through a single
 * thread-local pointer, mapping a cache's generation number (unique for
 * the life of the process, never reused) to that thread's magazines of
 * the cache (hy__mcpu), open-addressed with the generation as the hash.
 * This is the one piece of process-wide state besides the thread-exit key,
 * and it has to be: a thread's identity is process-wide.  Keying by a
 * never-reused generation (not by a cache address or a recycled index)
 * means a table entry of a destroyed cache can never be mistaken for a
 * live one; such entries are dropped when the table is rebuilt and when
 * the thread exits.
 *
 * Each hy__mcpu is also registered with its cache (under the depot lock)
 * and holds a reference on it, so hy_cache_destroy can drain every thread's
 * magazines, and a thread that exits later can still lock the (dead)
 * cache to unregister.  When a thread exits, a hook (alloc/os.h) gives its
 * magazines to the depots: a worker thread that ends leaks nothing, and
 * objects it freed are there for the other threads.
 */
#include <stdio.h>
#include <string.h>

#include "alloc/internal.h"
#include "alloc/mem.h"

typedef struct tslot {
  uint64_t gen; /* 0: free slot */
  hy__mcpu *m;
} tslot;

typedef struct ttable {
  uint64_t mask; /* capacity - 1; 0 only for the empty table */
  uint64_t used;
  tslot v[];
} ttable;

/* The table of a thread that has none yet: one slot that never matches.
 * Never written.  (A union gives the flexible array its one slot.) */
static union {
  ttable t;
  char room[sizeof(ttable) + sizeof(tslot)];
} no_table_u;
#define no_table (no_table_u.t)
/* initial-exec: a direct %fs-relative access, not a __tls_get_addr call
 * (the library is built -fPIC); one pointer of static TLS. */
#if defined(__GNUC__) && !defined(_WIN32)
#define HY__TLS_FAST __attribute__((tls_model("initial-exec")))
#else
#define HY__TLS_FAST
#endif
static _Thread_local ttable *tt HY__TLS_FAST = &no_table;

static int mag_class(uint32_t cap) {
  int k = 0;
  while ((uint32_t)HY__MAG_MIN << k < cap)
    k++;
  return k;
}

hy__mag *hy__mag_new(hy_cache_t *c, uint32_t cap) {
  int k = mag_class(cap);
  if (k >= HY__MAG_CLASSES)
    return NULL;
  cap = (uint32_t)HY__MAG_MIN << k;
  hy__oslock_lock(&c->depot_lock);
  hy_cache_t *mc = c->mags[k];
  if (!mc) {
    char name[96];
    snprintf(name, sizeof name, "%s.mag%u", c->name, (unsigned)cap);
    if (hy_cache_create(name, sizeof(hy__mag) + cap * sizeof(void *), 16,
                        NULL, NULL, NULL, HY__CACHE_INTERNAL, &mc) == 0)
      c->mags[k] = mc;
  }
  hy__oslock_unlock(&c->depot_lock);
  hy__mag *m = mc ? hy_cache_alloc(mc) : NULL;
  if (m) {
    m->next = NULL;
    m->n = 0;
    m->cap = cap;
  }
  return m;
}

void hy__mag_free(hy_cache_t *c, hy__mag *m) {
  if (m)
    hy_cache_free(c->mags[mag_class(m->cap)], m);
}

/* ------------------------------------------------ per-thread magazines */

/* The loaded magazine's count lives in the mcpu while it is loaded. */
static inline void mag_sync(hy__mcpu *m) {
  if (m->loaded)
    m->loaded->n = m->rounds;
}

static inline void mag_load(hy__mcpu *m, hy__mag *g) {
  m->loaded = g;
  m->obj = g->obj;
  m->rounds = g->n;
  m->cap = g->cap;
}

/* loaded <-> prev */
static inline void mag_swap(hy__mcpu *m) {
  hy__mag *t = m->prev;
  mag_sync(m);
  m->prev = m->loaded;
  mag_load(m, t);
}

static hy__mcpu *mcpu_new(hy_cache_t *c) {
  hy__mcpu *m = hy__mem_calloc(1, sizeof *m);
  if (!m)
    return NULL;
  hy__oslock_lock(&c->depot_lock);
  uint32_t size = c->mag_size;
  hy__oslock_unlock(&c->depot_lock);
  hy__mag *l = hy__mag_new(c, size);
  m->prev = l ? hy__mag_new(c, size) : NULL;
  if (!m->prev) {
    hy__mag_free(c, l);
    hy__mem_free(m);
    return NULL;
  }
  mag_load(m, l);
  m->cache = c;
  atomic_fetch_add(&c->refs, 1);
  hy__oslock_lock(&c->depot_lock);
  m->rprev = NULL;
  m->rnext = c->mcpus;
  if (c->mcpus)
    c->mcpus->rprev = m;
  c->mcpus = m;
  hy__oslock_unlock(&c->depot_lock);
  return m;
}

void hy__mcpu_drain(hy__mcpu *m, hy_cache_t *c) {
  /* the objects go with the depot's magazines, which destroy takes next */
  mag_sync(m);
  if (m->loaded)
    hy__depot_put(c, m->loaded);
  if (m->prev)
    hy__depot_put(c, m->prev);
  m->loaded = m->prev = NULL;
  m->obj = NULL;
  m->rounds = m->cap = 0;
}

/* Gives m's magazines to its cache's depot, unregisters m and drops its
 * reference on the cache. */
static void mcpu_release(hy__mcpu *m) {
  hy_cache_t *c = m->cache;
  hy__oslock_lock(&c->depot_lock);
  hy__mcpu_drain(m, c); /* nothing left when a destroy drained it */
  if (m->rprev)
    m->rprev->rnext = m->rnext;
  else
    c->mcpus = m->rnext;
  if (m->rnext)
    m->rnext->rprev = m->rprev;
  c->ret_allocs += HY__CTR_GET(m->allocs);
  c->ret_frees += HY__CTR_GET(m->frees);
  c->ret_misses += HY__CTR_GET(m->misses);
  hy__oslock_unlock(&c->depot_lock);
  hy__mem_free(m);
  hy__cache_unref(c);
}

/* ------------------------------------------------------- the table */

static void table_put(ttable *t, uint64_t gen, hy__mcpu *m) {
  uint64_t i = gen & t->mask;
  while (t->v[i].gen)
    i = (i + 1) & t->mask;
  t->v[i].gen = gen;
  t->v[i].m = m;
  t->used++;
}

/* Rebuilds the calling thread's table with room for one more entry,
 * dropping entries of destroyed caches.  Returns 0 or -1 (no memory). */
static int table_grow(void) {
  ttable *old = tt;
  uint64_t live = 0;
  for (uint64_t i = 0; old->mask && i <= old->mask; i++)
    if (old->v[i].gen &&
        !atomic_load_explicit(&old->v[i].m->cache->dead, memory_order_acquire))
      live++;
  uint64_t cap = 8;
  while (cap < 4 * (live + 1))
    cap *= 2;
  ttable *t = hy__mem_alloc(sizeof *t + cap * sizeof(tslot));
  if (!t)
    return -1;
  t->mask = cap - 1;
  t->used = 0;
  memset(t->v, 0, cap * sizeof(tslot));
  if (hy__os_thread_exit_hook(t) != 0) {
    hy__mem_free(t);
    return -1;
  }
  for (uint64_t i = 0; old->mask && i <= old->mask; i++) {
    tslot *s = &old->v[i];
    if (!s->gen)
      continue;
    if (atomic_load_explicit(&s->m->cache->dead, memory_order_acquire))
      mcpu_release(s->m);
    else
      table_put(t, s->gen, s->m);
  }
  tt = t;
  if (old != &no_table)
    hy__mem_free(old);
  return 0;
}

static tslot *table_find(ttable *t, uint64_t gen) {
  if (!t->mask)
    return NULL;
  for (uint64_t i = gen & t->mask;; i = (i + 1) & t->mask) {
    if (t->v[i].gen == gen)
      return &t->v[i];
    if (!t->v[i].gen)
      return NULL;
  }
}

/* The calling thread's magazines of c, made on first use; NULL when there
 * is no memory for them (the caller then goes to the slab layer). */
static hy__mcpu *mcpu_slow(hy_cache_t *c) {
  tslot *s = table_find(tt, c->gen);
  if (s)
    return s->m;
  if (c->flags & (HY_CACHE_NOMAG | HY__CACHE_INTERNAL))
    return NULL;
  if ((tt->used + 1) * 2 > tt->mask + 1 && table_grow() != 0)
    return NULL;
  hy__mcpu *m = mcpu_new(c);
  if (m)
    table_put(tt, c->gen, m);
  return m;
}

static inline hy__mcpu *mcpu_of(hy_cache_t *c) {
  ttable *t = tt;
  tslot *s = &t->v[c->gen & t->mask];
  return HY__LIKELY(s->gen == c->gen) ? s->m : mcpu_slow(c);
}

void hy__mcpu_flush_own(hy_cache_t *c) {
  tslot *s = table_find(tt, c->gen);
  hy__mcpu *m = s ? s->m : NULL;
  if (!m || !m->loaded)
    return;
  hy__slab_put(c, m->obj, (int)m->rounds);
  m->rounds = 0;
  hy__slab_put(c, m->prev->obj, (int)m->prev->n);
  m->prev->n = 0;
}

static void table_release(ttable *t) {
  for (uint64_t i = 0; t->mask && i <= t->mask; i++)
    if (t->v[i].gen)
      mcpu_release(t->v[i].m);
  if (t != &no_table)
    hy__mem_free(t);
}

void hy__mag_thread_exit(void *table) {
  ttable *t = table;
  if (tt == t)
    tt = &no_table;
  table_release(t);
}

void hy_cache_thread_flush(void) {
  ttable *t = tt;
  if (t == &no_table)
    return;
  tt = &no_table;
  hy__os_thread_exit_hook(NULL);
  table_release(t);
}

/* ------------------------------------------------------ alloc / free */

static void *alloc_slow(hy_cache_t *c, hy__mcpu *m) {
  void *p;
  if (!m) {
    atomic_fetch_add_explicit(&c->slow_misses, 1, memory_order_relaxed);
    if (hy__slab_get(c, &p, 1) == 1) {
      atomic_fetch_add_explicit(&c->slow_allocs, 1, memory_order_relaxed);
      return p;
    }
    atomic_fetch_add_explicit(&c->failures, 1, memory_order_relaxed);
    return NULL;
  }
  if (m->prev->n) { /* the full previous magazine is loaded: still a hit */
    mag_swap(m);
  } else {
    HY__CTR_INC(m->misses);
    hy__depot_lock(c);
    hy__mag *full = hy__depot_get_full(c);
    if (full) {
      hy__depot_put(c, m->prev); /* empty */
      mag_sync(m);
      m->prev = m->loaded;
      mag_load(m, full);
    }
    hy__depot_unlock(c);
    if (!full) { /* fill the loaded one from the slabs */
      int n = hy__slab_get(c, m->obj, (int)m->cap);
      if (n <= 0) {
        atomic_fetch_add_explicit(&c->failures, 1, memory_order_relaxed);
        return NULL;
      }
      /* pops come from the top: put the lowest address there, so a
       * fresh slab is handed out in ascending order (prefetch-friendly) */
      for (int i = 0, j = n - 1; i < j; i++, j--) {
        void *t = m->obj[i];
        m->obj[i] = m->obj[j];
        m->obj[j] = t;
      }
      m->rounds = (uint32_t)n;
    }
  }
  HY__CTR_INC(m->allocs);
  return m->obj[--m->rounds];
}

#if defined(__GNUC__)
#define HY__NOINLINE __attribute__((noinline))
#else
#define HY__NOINLINE
#endif

/* Everything but the fast path: first use by a thread, empty magazines,
 * debug checks, ASan poisoning. */
static HY__NOINLINE void *alloc_general(hy_cache_t *c) {
  hy__mcpu *m = mcpu_of(c);
  void *p;
  if (m && m->rounds) {
    p = m->obj[--m->rounds];
    HY__CTR_INC(m->allocs);
  } else {
    p = alloc_slow(c, m);
    if (!p)
      return NULL;
  }
  HY__UNPOISON(p, c->size);
  if (HY__UNLIKELY(c->checks) && hy__dbg_alloc(c, p) != 0) {
    /* poison mode: the constructor failed; the object goes back */
    hy__slab_put(c, &p, 1);
    atomic_fetch_add_explicit(&c->alloc_undo, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->failures, 1, memory_order_relaxed);
    return NULL;
  }
  return p;
}

void *hy_cache_alloc(hy_cache_t *c) {
  ttable *t = tt;
  tslot *s = &t->v[c->gen & t->mask];
  if (HY__LIKELY(s->gen == c->gen && !c->slowpath)) {
    hy__mcpu *m = s->m; /* never NULL in a table */
    if (HY__LIKELY(m->rounds)) {
      HY__CTR_INC(m->allocs);
      return m->obj[--m->rounds];
    }
  }
  return alloc_general(c);
}

static void free_slow(hy_cache_t *c, hy__mcpu *m, void *obj) {
  if (!m) {
    hy__slab_put(c, &obj, 1);
    atomic_fetch_add_explicit(&c->slow_frees, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->slow_misses, 1, memory_order_relaxed);
    return;
  }
  HY__CTR_INC(m->frees);
  if (m->prev->n == 0) { /* the empty previous magazine is loaded: a hit */
    mag_swap(m);
    m->obj[m->rounds++] = obj;
    return;
  }
  HY__CTR_INC(m->misses);
  hy__depot_lock(c);
  hy__mag *e = hy__depot_get_empty(c);
  uint32_t size = c->mag_size;
  if (e && e->cap >= size) {
    hy__depot_put(c, m->prev); /* full */
    hy__depot_unlock(c);
    mag_sync(m);
    m->prev = m->loaded;
    mag_load(m, e);
    m->obj[m->rounds++] = obj;
    return;
  }
  hy__depot_unlock(c);
  hy__mag_free(c, e); /* smaller than magazines are now: replaced */
  e = hy__mag_new(c, size);
  if (!e) { /* no memory for a magazine: the object goes to its slab */
    hy__slab_put(c, &obj, 1);
    return;
  }
  hy__depot_lock(c);
  hy__depot_put(c, m->prev);
  hy__depot_unlock(c);
  mag_sync(m);
  m->prev = m->loaded;
  mag_load(m, e);
  m->obj[m->rounds++] = obj;
}

static HY__NOINLINE void free_general(hy_cache_t *c, void *obj) {
  if (!obj)
    return;
  if (HY__UNLIKELY(c->checks))
    hy__dbg_free(c, obj);
  HY__POISON(obj, c->size);
  hy__mcpu *m = mcpu_of(c);
  if (m && m->rounds < m->cap) {
    m->obj[m->rounds++] = obj;
    HY__CTR_INC(m->frees);
    return;
  }
  free_slow(c, m, obj);
}

void hy_cache_free(hy_cache_t *c, void *obj) {
  ttable *t = tt;
  tslot *s = &t->v[c->gen & t->mask];
  if (HY__LIKELY(s->gen == c->gen && !c->slowpath && obj)) {
    hy__mcpu *m = s->m;
    if (HY__LIKELY(m->rounds < m->cap)) {
      HY__CTR_INC(m->frees);
      m->obj[m->rounds++] = obj;
      return;
    }
  }
  free_general(c, obj);
}
