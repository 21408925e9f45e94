/* cache.c - object caches: create, reap, stats, destroy (Bonwick 1994).
 * The alloc/free paths are in alloc/magazine.c, the depot in
 * alloc/depot.c, the slabs in alloc/slab.c, debug mode in alloc/debug.c.
 *
 * Each cache gets a generation number from a process-wide counter (the
 * key of the threads' magazine tables, see alloc/magazine.c); it is the
 * only process-wide variable of the cache layer.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "alloc/internal.h"
#include "alloc/mem.h"
#include "hydra/error.h"

static _Atomic uint64_t next_gen = 1;

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

int hy_cache_create(const char *name, size_t size, size_t align,
                    hy_cache_ctor_fn ctor, hy_cache_dtor_fn dtor, void *arg,
                    unsigned flags, hy_cache_t **out) {
  if (!out || size == 0 || size > ((size_t)1 << 30) || (align & (align - 1)) ||
      align > 4096)
    return HY_EINVAL;
  if (align < 16)
    align = 16;
  hy_cache_t *c = hy__mem_calloc(1, sizeof *c);
  if (!c)
    return HY_ENOMEM;
  snprintf(c->name, sizeof c->name, "%s", name ? name : "cache");
  c->size = size;
  c->align = align;
  c->ctor = ctor;
  c->dtor = dtor;
  c->arg = arg;
  c->flags = flags;
#if defined(HY_DEBUG) && HY_DEBUG >= 2
  c->checks = !(flags & HY__CACHE_INTERNAL);
#endif
  if (flags & HY_CACHE_DEBUG)
    c->checks = c->poison = 1;
  c->direct = (flags & HY_CACHE_DIRECT) != 0;
  c->slowpath = c->checks;
#ifdef HY_ASAN
  c->slowpath = 1; /* objects are poisoned and unpoisoned on the way */
#endif
  c->offset = c->checks ? round_up(16, align) : 0;
  c->stride = round_up(c->offset + size + (c->checks ? 16 : 0), align);
  /* 124: what a 1 KiB magazine holds; up to what a 4 KiB one does */
  c->mag_size = size <= 256 ? (uint32_t)HY__MAG_CAP_MAX(0) : size <= 2048 ? 32 : 8;
  c->mag_max = size <= 256 ? (uint32_t)HY__MAG_CAP_MAX(2)
               : size <= 2048 ? (uint32_t)HY__MAG_CAP_MAX(0) : 32;
  hy__slab_init(c);
  c->idle_ms = HY_CACHE_IDLE_MS_DEFAULT;
  c->trim_last_ms = hy__os_now_ms();
  hy__oslock_init(&c->depot_lock);
  hy__oslock_init(&c->slab_lock);
  atomic_init(&c->refs, 1);
  c->gen = atomic_fetch_add(&next_gen, 1);
  c->head.key = c->slowpath ? HY__KEY_SLOW : c->gen << HY__SLOT_SHIFT;
  *out = c;
  return 0;
}

void hy__cache_unref(hy_cache_t *c) {
  if (atomic_fetch_sub(&c->refs, 1) != 1)
    return;
  hy__oslock_destroy(&c->depot_lock);
  hy__oslock_destroy(&c->slab_lock);
  hy__mem_free(c);
}

static uint64_t held(hy_cache_t *c) {
  hy__oslock_lock(&c->slab_lock);
  uint64_t b = c->bytes_held;
  hy__oslock_unlock(&c->slab_lock);
  return b;
}

size_t hy_cache_reap(hy_cache_t *c) {
  if (!c)
    return 0;
  uint64_t before = held(c);
  hy__mcpu_flush_own(c);
  hy__oslock_lock(&c->depot_lock);
  hy__mag *chain = hy__depot_take_all(c);
  hy__oslock_unlock(&c->depot_lock);
  hy__mags_release(c, chain);
  hy__slab_reap(c);
  for (int k = 0; k < HY__MAG_CLASSES; k++) {
    hy__oslock_lock(&c->depot_lock);
    hy_cache_t *mc = c->mags[k];
    hy__oslock_unlock(&c->depot_lock);
    if (mc)
      hy__slab_reap(mc);
  }
  hy__mem_collect();
  atomic_fetch_add(&c->reaps, 1);
  uint64_t after = held(c);
  return before > after ? (size_t)(before - after) : 0;
}

int hy_cache_set_idle_ms(hy_cache_t *c, uint64_t ms) {
  if (!c)
    return HY_EINVAL;
  hy__oslock_lock(&c->depot_lock);
  c->idle_ms = ms;
  c->trim_last_ms = hy__os_now_ms(); /* a new period starts */
  c->min_full = c->nfull;
  c->min_empty = c->nempty;
  hy__oslock_unlock(&c->depot_lock);
  return 0;
}

size_t hy_cache_trim_idle(hy_cache_t *c) {
  if (!c)
    return 0;
  uint64_t before = held(c);
  hy__oslock_lock(&c->depot_lock);
  hy__mag *idle = hy__depot_take_idle(c, hy__os_now_ms());
  hy__oslock_unlock(&c->depot_lock);
  hy__mags_release(c, idle);
  uint64_t after = held(c);
  return before > after ? (size_t)(before - after) : 0;
}

static void collect(hy_cache_t *c, hy_cache_stats_t *s) {
  memset(s, 0, sizeof *s);
  s->size = sizeof *s;
  s->version = HY_CACHE_STATS_VERSION;
  s->name = c->name;
  s->obj_size = c->size;
  uint64_t allocs = 0, frees = 0, misses = 0, trades = 0;
  hy__mcpu *own = hy__mcpu_own(c);
  if (own)
    hy__mcpu_fold(own); /* this thread's counts, exact */
  hy__oslock_lock(&c->depot_lock);
  allocs = c->ret_allocs;
  frees = c->ret_frees;
  misses = c->ret_misses;
  trades = c->ret_trades;
  for (hy__mcpu *m = c->mcpus; m; m = m->rnext) {
    allocs += HY__CTR_GET(m->pub_allocs);
    frees += HY__CTR_GET(m->pub_frees);
    misses += HY__CTR_GET(m->pub_misses);
    trades += HY__CTR_GET(m->pub_trades);
  }
  s->depot_gets = c->depot_gets;
  s->depot_puts = c->depot_puts;
  s->depot_contended = c->depot_contended;
  s->depot_full = c->nfull;
  s->depot_empty = c->nempty;
  s->mag_size = c->mag_size;
  s->depot_trims = c->trims;
  s->depot_trimmed = c->trimmed_mags;
  hy__oslock_unlock(&c->depot_lock);
  hy__oslock_lock(&c->slab_lock);
  s->slabs = c->nslabs;
  s->bytes_held = c->bytes_held;
  hy__oslock_unlock(&c->slab_lock);
  allocs += atomic_load(&c->slow_allocs);
  allocs -= atomic_load(&c->alloc_undo);
  frees += atomic_load(&c->slow_frees);
  s->allocs = allocs;
  s->frees = frees;
  s->live = allocs > frees ? allocs - frees : 0; /* a snapshot of running threads */
  s->failures = atomic_load(&c->failures);
  s->mag_misses = misses + atomic_load(&c->slow_misses);
  s->mag_hits = allocs + frees + s->failures - s->mag_misses;
  s->mag_trades = trades;
  s->reaps = atomic_load(&c->reaps);
  s->ctor_calls = atomic_load(&c->ctor_calls);
  s->dtor_calls = atomic_load(&c->dtor_calls);
}

int hy_cache_stats(hy_cache_t *c, hy_cache_stats_t *s) {
  if (!c || !s || s->size < offsetof(hy_cache_stats_t, failures) + sizeof(uint64_t))
    return HY_EINVAL;
  size_t n = s->size < sizeof *s ? s->size : sizeof *s;
  hy_cache_stats_t full;
  collect(c, &full);
  full.size = n;
  memcpy(s, &full, n);
  return 0;
}

int hy_cache_destroy(hy_cache_t *c) {
  if (!c)
    return HY_EINVAL;
  hy__oslock_lock(&c->depot_lock);
  atomic_store_explicit(&c->dead, 1, memory_order_release);
  for (hy__mcpu *m = c->mcpus; m; m = m->rnext)
    hy__mcpu_drain(m, c);
  hy__mag *chain = hy__depot_take_all(c);
  hy__oslock_unlock(&c->depot_lock);
  hy__mags_release(c, chain);
  hy_cache_stats_t s;
  collect(c, &s);
  if (s.live && c->checks) {
    fprintf(stderr, "hydra: cache '%s' destroyed with %llu live object%s (leaked)\n",
            c->name, (unsigned long long)s.live, s.live == 1 ? "" : "s");
    fflush(stderr);
  }
  hy__slab_fini(c);
  for (int k = 0; k < HY__MAG_CLASSES; k++) {
    if (c->mags[k])
      hy_cache_destroy(c->mags[k]);
    c->mags[k] = NULL;
  }
  hy__cache_unref(c);
  return s.live > INT_MAX ? INT_MAX : (int)s.live;
}
