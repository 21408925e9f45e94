/* magazine.c - the magazine layer (Bonwick & Adams 2001): every thread has
 * two magazines per cache, one it allocates from and one it frees into
 * (see hy__mcpu in alloc/internal.h).  hy_cache_alloc pops from the alloc
 * magazine, hy_cache_free pushes onto the free magazine; when the alloc
 * magazine is empty and the free one at least half full (or the free one
 * is full and the alloc one at most half full) the two trade places;
 * otherwise the thread goes to the depot (alloc/depot.c) for a full (or
 * empty) magazine, or to the slabs.  The fast path is inline in
 * include/hydra/alloc.h: a table lookup and a pop or push, with no call,
 * no lock, no atomic and no counter; this file is everything else.
 *
 * Per-thread state: each thread has one table, reached through a single
 * thread-local pointer (tt, and its slots and mask in hy__cache_tls for
 * the fast path), mapping a cache's generation number (unique for the
 * life of the process, never reused) to that thread's magazines of the
 * cache: a slot of one cache line holds what the fast path needs (the
 * top of each of the two magazines) and points to the rest (hy__mcpu);
 * open-addressed with the generation as the hash (a cache's key is its
 * generation times the slot size, so the fast path masks it into an
 * offset with no shift).  This is the one piece of process-wide state
 * besides the thread-exit key, and it has to be: a thread's identity is
 * process-wide.
 * Keying by a never-reused generation (not by a cache address or a
 * recycled index) means a table entry of a destroyed cache can never be
 * mistaken for a live one; such entries are dropped when the table is
 * rebuilt and when the thread exits.  A cache whose every op must take
 * the general path (debug checks, ASan) has a key no table holds.
 *
 * Each hy__mcpu is also registered with its cache (under the depot lock)
 * and holds a reference on it, so hy_cache_destroy can drain every thread's
 * magazines, and a thread that exits later can still lock the (dead)
 * cache to unregister.  When a thread exits, a hook (alloc/os.h) gives its
 * magazines to the depots: a worker thread that ends leaks nothing, and
 * objects it freed are there for the other threads.
 *
 * Magazine bounds (include/hydra/alloc.h): a magazine is 1, 2 or 4 KiB,
 * aligned to its size, with its slots at its end and a NULL word below
 * them, so the fast path needs neither a count nor a capacity: a pop that
 * reads NULL found the alloc magazine empty, a push at a 1 KiB boundary
 * found the free magazine full (in a 2 or 4 KiB magazine possibly an
 * inner boundary: hy_cache_free_general pushes there itself).  With the
 * bounds gone the fast path is a lookup, one load, one test and a store
 * each way (bench/alloc churn-64: 1.76 -> 1.16 ns per free + alloc, 0.43
 * of mimalloc's time; pair-64 1.46 -> 1.1 ns).
 */
#include <stdio.h>
#include <string.h>

#include "alloc/internal.h"
#include "alloc/mem.h"

typedef hy__tslot tslot;
typedef hy__ttable ttable;


/* The table of a thread that has none yet: one slot that never matches.
 * Never written.  (A union gives the flexible array its one slot.) */
static union {
  ttable t;
  char room[sizeof(ttable) + sizeof(tslot)];
} no_table_u;
#define no_table (no_table_u.t)
/* The calling thread's table.  The fast path reads its slots and mask
 * from hy__cache_tls, kept equal to tt->v and tt->mask by set_table: two
 * independent thread-local loads instead of a load through tt.
 * initial-exec (declared so in include/hydra/alloc.h): a direct
 * %fs-relative access, not a __tls_get_addr call (the library is built
 * -fPIC); three words of static TLS. */
static _Thread_local ttable *tt = &no_table;
#ifdef HY__CACHE_INLINE
__thread hy__cache_tlsv hy__cache_tls
    __attribute__((tls_model("initial-exec"))) = {(uintptr_t)no_table_u.t.v, 0};
#endif

/* A table's keys: a slot's offset in the table, before the mask. */
#define SLOT_SHIFT HY__SLOT_SHIFT
_Static_assert(sizeof(tslot) == (size_t)1 << SLOT_SHIFT, "a slot is one cache line");

static inline uint64_t key_of(const hy_cache_t *c) { return c->gen << SLOT_SHIFT; }

static void set_table(ttable *t) {
  tt = t;
#ifdef HY__CACHE_INLINE
  hy__cache_tls.v = (uintptr_t)t->v;
  hy__cache_tls.mask = t->mask << SLOT_SHIFT;
#endif
}

/* What an alloc magazine of none points into: a NULL word, never written. */
static void *no_objs[1];
#define NO_ATOP (&no_objs[1])

static int mag_class(size_t cap) {
  int k = 0;
  while (k + 1 < HY__MAG_CLASSES && cap > HY__MAG_CAP_MAX(k))
    k++;
  return k;
}

static int bytes_class(uint32_t bytes) {
  int k = 0;
  while (((uint32_t)HY__MAG_ALIGN << k) < bytes)
    k++;
  return k;
}

hy__mag *hy__mag_new(hy_cache_t *c, uint32_t cap) {
  int k = mag_class(cap);
  if (cap > HY__MAG_CAP_MAX(k))
    cap = (uint32_t)HY__MAG_CAP_MAX(k);
  if (cap == 0)
    cap = 1;
  size_t bytes = (size_t)HY__MAG_ALIGN << k;
  hy__oslock_lock(&c->depot_lock);
  hy_cache_t *mc = c->mags[k];
  if (!mc) {
    char name[96];
    snprintf(name, sizeof name, "%s.mag%zuk", c->name, bytes / 1024);
    /* aligned to their size, so the slots end on a HY__MAG_ALIGN boundary */
    if (hy_cache_create(name, bytes, bytes, NULL, NULL, NULL,
                        HY__CACHE_INTERNAL, &mc) == 0)
      c->mags[k] = mc;
  }
  hy__oslock_unlock(&c->depot_lock);
  hy__mag *m = mc ? hy_cache_alloc(mc) : NULL;
  if (m) {
    m->next = NULL;
    m->n = 0;
    m->cap = cap;
    m->bytes = (uint32_t)bytes;
    hy__mag_obj(m)[-1] = NULL;
  }
  return m;
}

void hy__mag_free(hy_cache_t *c, hy__mag *m) {
  if (m)
    hy_cache_free(c->mags[bytes_class(m->bytes)], m);
}

/* ------------------------------------------------ per-thread magazines */

void hy__mcpu_fold(hy__mcpu *m) {
  m->allocs += (uint64_t)(m->abase - m->slot->atop);
  m->frees += (uint64_t)(m->slot->ftop - m->fbase);
  m->abase = m->slot->atop;
  m->fbase = m->slot->ftop;
  atomic_store_explicit(&m->pub_allocs, m->allocs, memory_order_relaxed);
  atomic_store_explicit(&m->pub_frees, m->frees, memory_order_relaxed);
  atomic_store_explicit(&m->pub_misses, m->misses, memory_order_relaxed);
  atomic_store_explicit(&m->pub_trades, m->trades, memory_order_relaxed);
}

/* After the counts changed off the fast path (m folded before). */
static inline void rebase(hy__mcpu *m) {
  m->abase = m->slot->atop;
  m->fbase = m->slot->ftop;
}

/* Objects in the loaded magazines. */
static inline uint32_t a_count(const hy__mcpu *m) {
  return (uint32_t)(m->slot->atop - hy__mag_obj(m->amag));
}
static inline uint32_t f_count(const hy__mcpu *m) {
  return (uint32_t)(m->slot->ftop - hy__mag_obj(m->fmag));
}

/* The loaded magazines' counts live in the slot while they are loaded. */
static inline void mag_sync(hy__mcpu *m) {
  if (m->amag)
    m->amag->n = a_count(m);
  if (m->fmag)
    m->fmag->n = f_count(m);
}

static inline void load_alloc(hy__mcpu *m, hy__mag *g) {
  m->amag = g;
  m->slot->atop = hy__mag_obj(g) + g->n;
}

static inline void load_free(hy__mcpu *m, hy__mag *g) {
  m->fmag = g;
  m->slot->ftop = hy__mag_obj(g) + g->n;
}

/* alloc <-> free magazine (m folded before, rebased after) */
static inline void mag_swap(hy__mcpu *m) {
  hy__mag *a = m->amag, *f = m->fmag;
  m->trades++;
  mag_sync(m);
  load_alloc(m, f);
  load_free(m, a);
}

/* Two empty magazines of the cache's current size, for a thread's alloc
 * and free sides.  Returns 0, or -1 with neither taken. */
static int mag_pair_new(hy_cache_t *c, hy__mag **a, hy__mag **f) {
  hy__oslock_lock(&c->depot_lock);
  uint32_t size = c->mag_size;
  hy__oslock_unlock(&c->depot_lock);
  *a = hy__mag_new(c, size);
  *f = *a ? hy__mag_new(c, size) : NULL;
  if (!*f) {
    hy__mag_free(c, *a);
    return -1;
  }
  return 0;
}

/* A thread's magazines of c, not yet in its table nor registered. */
static hy__mcpu *mcpu_new(hy_cache_t *c) {
  hy__mcpu *m = hy__mem_calloc(1, sizeof *m);
  if (!m)
    return NULL;
  if (mag_pair_new(c, &m->amag, &m->fmag) < 0) {
    hy__mem_free(m);
    return NULL;
  }
  m->cache = c;
  return m;
}

/* m has its slot: loads its magazines there and registers it with its
 * cache (from then on a destroy may drain it). */
static void mcpu_start(hy__mcpu *m) {
  hy_cache_t *c = m->cache;
  load_alloc(m, m->amag);
  load_free(m, m->fmag);
  rebase(m);
  atomic_fetch_add(&c->refs, 1);
  hy__oslock_lock(&c->depot_lock);
  m->rprev = NULL;
  m->rnext = c->mcpus;
  if (c->mcpus)
    c->mcpus->rprev = m;
  c->mcpus = m;
  hy__oslock_unlock(&c->depot_lock);
}

void hy__mcpu_drain(hy__mcpu *m, hy_cache_t *c) {
  /* the objects go with the depot's magazines, which destroy takes next */
  hy__mcpu_fold(m);
  mag_sync(m);
  if (m->amag)
    hy__depot_put(c, m->amag);
  if (m->fmag)
    hy__depot_put(c, m->fmag);
  m->amag = m->fmag = NULL;
  m->slot->atop = NO_ATOP;
  m->slot->ftop = NULL;
  rebase(m);
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
  c->ret_allocs += m->allocs;
  c->ret_frees += m->frees;
  c->ret_misses += m->misses;
  c->ret_trades += m->trades;
  hy__oslock_unlock(&c->depot_lock);
  hy__mem_free(m);
  hy__cache_unref(c);
}

/* ------------------------------------------------------- the table */

static inline hy__mcpu *slot_mcpu(const tslot *s) { return s->m; }

/* Claims a free slot of t for key. */
static tslot *table_slot(ttable *t, uint64_t key) {
  uint64_t i = (key >> SLOT_SHIFT) & t->mask;
  while (t->v[i].key)
    i = (i + 1) & t->mask;
  t->v[i].key = key;
  t->used++;
  return &t->v[i];
}

/* Rebuilds the calling thread's table with room for one more entry,
 * dropping entries of destroyed caches.  Returns 0 or -1 (no memory). */
static int table_grow(void) {
  ttable *old = tt;
  uint64_t live = 0;
  for (uint64_t i = 0; old->mask && i <= old->mask; i++)
    if (old->v[i].key &&
        !atomic_load_explicit(&slot_mcpu(&old->v[i])->cache->dead,
                              memory_order_acquire))
      live++;
  uint64_t cap = 8;
  while (cap < 4 * (live + 1))
    cap *= 2;
  ttable *t = hy__mem_aligned(sizeof *t + cap * sizeof(tslot), 64);
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
    if (!s->key)
      continue;
    hy__mcpu *m = slot_mcpu(s);
    hy_cache_t *c = m->cache;
    if (atomic_load_explicit(&c->dead, memory_order_acquire)) {
      mcpu_release(m);
      continue;
    }
    /* Moved under the cache's depot lock: a destroy drains m through
     * m->slot under that lock, so it sees the old slot (still there) or
     * the new one, never a freed table. */
    hy__oslock_lock(&c->depot_lock);
    tslot *ns = table_slot(t, s->key);
    *ns = *s;
    m->slot = ns;
    hy__oslock_unlock(&c->depot_lock);
  }
  set_table(t);
  if (old != &no_table)
    hy__mem_free(old);
  return 0;
}

static tslot *table_find(ttable *t, uint64_t key) {
  if (!t->mask)
    return NULL;
  for (uint64_t i = (key >> SLOT_SHIFT) & t->mask;; i = (i + 1) & t->mask) {
    if (t->v[i].key == key)
      return &t->v[i];
    if (!t->v[i].key)
      return NULL;
  }
}

hy__mcpu *hy__mcpu_own(hy_cache_t *c) {
  tslot *s = table_find(tt, key_of(c));
  return s ? slot_mcpu(s) : NULL;
}

/* The calling thread's magazines of c, made on first use; NULL when there
 * is no memory for them (the caller then goes to the slab layer). */
static hy__mcpu *mcpu_slow(hy_cache_t *c) {
  tslot *s = table_find(tt, key_of(c));
  if (s)
    return slot_mcpu(s);
  if (c->flags & (HY_CACHE_NOMAG | HY__CACHE_INTERNAL))
    return NULL;
  if ((tt->used + 1) * 2 > tt->mask + 1 && table_grow() != 0)
    return NULL;
  hy__mcpu *m = mcpu_new(c);
  if (m) {
    tslot *ns = table_slot(tt, key_of(c));
    ns->m = m;
    m->slot = ns;
    mcpu_start(m);
  }
  return m;
}

static inline hy__mcpu *mcpu_of(hy_cache_t *c) {
  ttable *t = tt;
  uint64_t k = key_of(c);
  tslot *s = &t->v[(k >> SLOT_SHIFT) & t->mask];
  return HY__LIKELY(s->key == k) ? slot_mcpu(s) : mcpu_slow(c);
}

void hy__mcpu_flush_own(hy_cache_t *c) {
  hy__mcpu *m = hy__mcpu_own(c);
  if (!m || !m->amag)
    return;
  hy__mcpu_fold(m);
  hy__slab_put(c, hy__mag_obj(m->amag), (int)a_count(m));
  m->slot->atop = hy__mag_obj(m->amag);
  hy__slab_put(c, hy__mag_obj(m->fmag), (int)f_count(m));
  m->slot->ftop = hy__mag_obj(m->fmag);
  rebase(m);
  /* The empty magazines go too (to the depot, which a reap empties), so
   * that their slab is not kept by them; the next op takes new ones
   * (mcpu_rearm). */
  hy__depot_lock(c);
  mag_sync(m);
  hy__depot_put(c, m->amag);
  hy__depot_put(c, m->fmag);
  hy__depot_unlock(c);
  m->amag = m->fmag = NULL;
  m->slot->atop = NO_ATOP;
  m->slot->ftop = NULL;
  rebase(m);
}

/* m has no magazines (its thread gave them back at a reap): new ones,
 * unless the cache is destroyed.  Returns 0, or -1 (the op then goes to
 * the slabs, or fails after a destroy). */
static int mcpu_rearm(hy_cache_t *c, hy__mcpu *m) {
  if (atomic_load_explicit(&c->dead, memory_order_acquire))
    return -1;
  hy__mag *a, *f;
  if (mag_pair_new(c, &a, &f) < 0)
    return -1;
  hy__mcpu_fold(m);
  load_alloc(m, a);
  load_free(m, f);
  rebase(m);
  return 0;
}

static void table_release(ttable *t) {
  for (uint64_t i = 0; t->mask && i <= t->mask; i++)
    if (t->v[i].key)
      mcpu_release(slot_mcpu(&t->v[i]));
  if (t != &no_table)
    hy__mem_free(t);
}

void hy__mag_thread_exit(void *table) {
  ttable *t = table;
  if (tt == t)
    set_table(&no_table);
  table_release(t);
}

void hy_cache_thread_flush(void) {
  ttable *t = tt;
  if (t == &no_table)
    return;
  set_table(&no_table);
  hy__os_thread_exit_hook(NULL);
  table_release(t);
}

/* ------------------------------------------------------ alloc / free */

#if defined(__GNUC__)
#define HY__NOINLINE __attribute__((noinline))
#else
#define HY__NOINLINE
#endif

/* The alloc magazine is empty: trade with the free one, or take a full
 * magazine from the depot, or fill from the slabs.  Returns an object
 * (counted), or NULL. */
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
  if (HY__UNLIKELY(!m->amag) && mcpu_rearm(c, m) != 0) {
    if (atomic_load_explicit(&c->dead, memory_order_acquire)) {
      /* drained by a destroy: use after destroy */
      atomic_fetch_add_explicit(&c->failures, 1, memory_order_relaxed);
      return NULL;
    }
    return alloc_slow(c, NULL); /* no memory for magazines: the slabs */
  }
  hy__mcpu_fold(m);
  /* Trade with the free magazine when it is at least half full: still a
   * hit.  With fewer, a full magazine comes in instead and the free one
   * stays, or a thread that frees one and allocates one in turn would
   * trade a one-object magazine back and forth on every call. */
  uint32_t fr = f_count(m);
  if (fr && fr >= m->fmag->cap / 2) {
    mag_swap(m);
  } else {
    m->misses++;
    hy__depot_lock(c);
    hy__mag *full = hy__depot_get_full(c);
    if (full) {
      m->amag->n = 0;
      hy__depot_put(c, m->amag); /* empty */
      load_alloc(m, full);
    }
    hy__depot_unlock(c);
    if (!full) {
      /* Fill the alloc magazine from the slabs, and put the few objects
       * of the free magazine on top (the most recently freed first), so
       * they are not left behind while the thread only allocates. */
      void **ao = hy__mag_obj(m->amag), **fo = hy__mag_obj(m->fmag);
      uint32_t cap = m->amag->cap, few = fr < cap ? fr : cap;
      int n = hy__slab_get(c, ao, (int)(cap - few));
      if (n < 0)
        n = 0;
      /* pops come from the top: put the lowest address there, so a
       * fresh slab is handed out in ascending order (prefetch-friendly) */
      for (int i = 0, j = n - 1; i < j; i++, j--) {
        void *t = ao[i];
        ao[i] = ao[j];
        ao[j] = t;
      }
      fr -= few;
      for (uint32_t i = 0; i < few; i++)
        ao[n + i] = fo[fr + i];
      m->slot->ftop = fo + fr;
      m->slot->atop = ao + n + few;
      if (n + few == 0) {
        atomic_fetch_add_explicit(&c->failures, 1, memory_order_relaxed);
        rebase(m);
        hy__mcpu_fold(m); /* the miss */
        return NULL;
      }
    }
  }
  rebase(m);
  p = *--m->slot->atop;
  hy__mcpu_fold(m); /* publish this trip's counts */
  return p;
}

/* Everything but the fast path: first use by a thread, empty magazines,
 * debug checks, ASan poisoning. */
void *hy_cache_alloc_general(hy_cache_t *c) {
  hy__mcpu *m = mcpu_of(c);
  void *p;
  if (m && m->slot->atop[-1]) {
    p = *--m->slot->atop;
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

/* The free magazine is full (m folded): trade with the alloc magazine
 * when that is at most half full, or give it to the depot for an empty
 * one (or a new one).  Returns 0, or -1 when there is no magazine to push
 * onto.  With the rule of alloc_slow, every trip off the fast path is at
 * least half a magazine of operations from the next one, whatever the
 * pattern of calls. */
static int free_exchange(hy_cache_t *c, hy__mcpu *m) {
  if (a_count(m) <= m->amag->cap / 2) { /* the alloc magazine takes the frees */
    mag_swap(m);
    return 0;
  }
  m->misses++;
  hy__depot_lock(c);
  hy__mag *e = hy__depot_get_empty(c);
  uint32_t size = c->mag_size;
  if (e && e->cap >= size) {
    m->fmag->n = f_count(m);
    hy__depot_put(c, m->fmag); /* full */
    hy__depot_unlock(c);
    load_free(m, e);
    return 0;
  }
  hy__depot_unlock(c);
  hy__mag_free(c, e); /* smaller than magazines are now: replaced */
  e = hy__mag_new(c, size);
  if (!e)
    return -1;
  hy__depot_lock(c);
  m->fmag->n = f_count(m);
  hy__depot_put(c, m->fmag);
  hy__depot_unlock(c);
  load_free(m, e);
  return 0;
}

static void free_slow(hy_cache_t *c, hy__mcpu *m, void *obj) {
  if (!m) {
    hy__slab_put(c, &obj, 1);
    atomic_fetch_add_explicit(&c->slow_frees, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->slow_misses, 1, memory_order_relaxed);
    return;
  }
  if (HY__UNLIKELY(!m->fmag || !m->amag)) {
    if (mcpu_rearm(c, m) != 0) {
      free_slow(c, NULL, obj); /* no magazines: to the slab */
      return;
    }
    m->misses++;
    *m->slot->ftop++ = obj;
    hy__mcpu_fold(m);
    return;
  }
  hy__mcpu_fold(m);
  if (free_exchange(c, m) != 0) {
    /* no magazine (no memory, or drained by a destroy): to the slab */
    rebase(m);
    hy__slab_put(c, &obj, 1);
    m->frees++;
    hy__mcpu_fold(m);
    return;
  }
  rebase(m);
  *m->slot->ftop++ = obj;
  hy__mcpu_fold(m);
}

void hy_cache_free_general(hy_cache_t *c, void *obj) {
  if (!obj)
    return;
  if (HY__UNLIKELY(c->checks))
    hy__dbg_free(c, obj);
  HY__POISON(obj, c->size);
  hy__mcpu *m = mcpu_of(c);
  /* room left (a magazine bigger than HY__MAG_ALIGN sends the fast path
   * here at each of its inner boundaries) */
  if (m && m->fmag && m->slot->ftop != hy__mag_end(m->fmag)) {
    *m->slot->ftop++ = obj;
    return;
  }
  free_slow(c, m, obj);
}
