/* alloc/internal.h - the object cache's layers, shared by the files of alloc/.
 *
 *   hy_cache_alloc / hy_cache_free   alloc/magazine.c  per-thread magazines
 *   depot (full/empty magazines)     alloc/depot.c     one lock per cache
 *   slab layer                       alloc/slab.c      constructed buffers
 *   create/reap/stats/destroy        alloc/cache.c
 *   debug mode (red zones, states)   alloc/debug.c
 *
 * Lock order: depot lock, then slab lock.  The slab layer never takes the
 * depot lock; constructors and destructors run with no lock held.
 */
#ifndef HYDRA_ALLOC_INTERNAL_H
#define HYDRA_ALLOC_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc/os.h"
#include "hydra/alloc.h"

#ifdef HY_ASAN
#include <sanitizer/asan_interface.h>
#define HY__POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define HY__UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define HY__POISON(p, n) ((void)(p), (void)(n))
#define HY__UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#if defined(__GNUC__)
#define HY__LIKELY(x) __builtin_expect(!!(x), 1)
#define HY__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define HY__LIKELY(x) (x)
#define HY__UNLIKELY(x) (x)
#endif

/* A counter written by one thread and read by others: a relaxed load and
 * store, never a read-modify-write (no bus lock on the fast path). */
typedef _Atomic uint64_t hy__ctr;
#define HY__CTR_INC(x)                                                        \
  atomic_store_explicit(&(x), atomic_load_explicit(&(x), memory_order_relaxed) + 1, \
                        memory_order_relaxed)
#define HY__CTR_GET(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* Caches for the allocator's own use (magazines): no magazine layer, no
 * debug checks. */
#define HY__CACHE_INTERNAL (1u << 30)
/* Magazines are 1, 2 or 4 KiB (HY__MAG_ALIGN << class), aligned to their
 * size: a header, unused room, a NULL word, then the cap slots up to the
 * magazine's end (see the fast path in include/hydra/alloc.h). */
#define HY__MAG_CLASSES 3
#define HY__MAG_HDR 32 /* the header and the NULL word */
#define HY__MAG_CAP_MAX(k) (((size_t)HY__MAG_ALIGN << (k)) - HY__MAG_HDR) / sizeof(void *)

/* A magazine: a stack of up to cap constructed objects. */
typedef struct hy__mag {
  struct hy__mag *next;
  uint32_t n, cap; /* n: objects held (stale while a thread has it loaded) */
  uint32_t bytes;  /* HY__MAG_ALIGN << class */
  uint32_t pad_;
} hy__mag;

/* The slots of m (the NULL word is the one below), and their end. */
static inline void **hy__mag_obj(const hy__mag *m) {
  return (void **)((char *)m + m->bytes) - m->cap;
}
static inline void **hy__mag_end(const hy__mag *m) {
  return (void **)((char *)m + m->bytes);
}

/* One thread's magazines of one cache (Bonwick & Adams' per-CPU cache):
 * an alloc magazine (pops) and a free magazine (pushes), which trade
 * places when the one a call needs runs out; only then does the thread go
 * to the depot.  Keeping pops and pushes on two magazines keeps the two
 * dependency chains apart (an alloc does not wait for the free before it).
 * The fast path (include/hydra/alloc.h) sees only the slot's atop and
 * ftop, kept in the thread's table itself so that the lookup finds them
 * with no further load (the magazines' own n is stale while they are
 * loaded); the rest is here.
 *
 * Only the owning thread touches an mcpu, except hy_cache_destroy, which
 * drains it under the depot lock (no thread may use a cache being
 * destroyed), and hy_cache_stats, which reads only the pub_* counters.
 * The owner moves a slot (its table grows) under the cache's depot lock
 * too, so a destroy finds it through slot wherever it is.
 *
 * Statistics cost the fast path nothing: allocs since the alloc magazine
 * was loaded are abase - atop, frees since the free magazine was loaded
 * are ftop - fbase; hy__mcpu_fold adds them to allocs/frees whenever a
 * magazine changes hands (and before any count changes off the fast
 * path), then publishes the totals for other threads' hy_cache_stats. */
typedef struct hy__mcpu {
  hy__tslot *slot;      /* in the thread's table: slot->m == this */
  hy__mag *amag, *fmag; /* the magazines behind atop and ftop */
  void **abase, **fbase; /* atop and ftop when last folded */
  uint64_t allocs, frees, misses, trades; /* as of the last fold */
  hy__ctr pub_allocs, pub_frees, pub_misses, pub_trades; /* for readers */
  hy_cache_t *cache;
  struct hy__mcpu *rnext, *rprev; /* the cache's registry, depot lock */
} hy__mcpu;

struct hy__slab;

/* A key no table holds (a table's keys are multiples of 64): the caches
 * whose every op takes the general path. */
#define HY__KEY_SLOW UINT64_MAX
/* A cache's key in the tables: gen << HY__SLOT_SHIFT, a slot's offset
 * before the mask (a slot is one cache line). */
#define HY__SLOT_SHIFT 6

struct hy_cache {
  hy__cache_head head; /* must be first: head.key is gen * 64, or HY__KEY_SLOW */
  uint64_t gen;  /* unique, never 0: the key of the threads' tables */
  int slowpath;  /* every op takes the general path (debug checks, ASan) */
  char name[64];
  size_t size;   /* the caller's object size */
  size_t align;
  size_t stride; /* bytes per buffer, debug header and red zone included */
  size_t offset; /* object = buffer + offset */
  hy_cache_ctor_fn ctor;
  hy_cache_dtor_fn dtor;
  void *arg;
  unsigned flags;
  int checks; /* debug: states, red zones, double/foreign free */
  int poison; /* HY_CACHE_DEBUG: poison freed objects, dtor at free */
  int direct; /* slab layer is the general heap, object by object */
  _Atomic int refs;    /* the owner's + one per registered mcpu */
  _Atomic int dead;    /* destroyed; the struct lives until refs drop */

  /* depot: depot_lock */
  hy__oslock_t depot_lock;
  hy__mag *full, *empty;
  uint64_t nfull, nempty;
  uint32_t mag_size, mag_max;
  uint64_t dep_ops, dep_contended;
  hy__mcpu *mcpus;                 /* registered threads */
  hy_cache_t *mags[HY__MAG_CLASSES]; /* magazine caches, made on demand */
  uint64_t ret_allocs, ret_frees, ret_misses, ret_trades; /* threads gone */
  uint64_t depot_gets, depot_puts, depot_contended;
  /* idle trimming (alloc/depot.c): the fewest full and empty magazines
   * the depot held since the last tick, at trim_last_ms */
  uint64_t min_full, min_empty;
  uint64_t trim_last_ms, idle_ms; /* idle_ms 0: never */
  uint32_t trim_ops;              /* depot ops since the clock was read */
  hy__mag *trim_pending;          /* taken under the lock, freed after */
  uint64_t trims, trimmed_mags;

  /* slab layer: slab_lock */
  hy__oslock_t slab_lock;
  struct hy__slab *partial, *emptys, *fulls;
  uint64_t nslabs, nemptys, max_emptys;
  size_t slab_size, slab_hdr, slab_slack;
  _Atomic uint64_t color_seq;
  uint32_t per_slab;
  uint64_t bytes_held;
  uint64_t direct_objs;
  char *chunk_next;     /* slabs not yet used of the current chunk */
  uint64_t chunk_left;  /* (alloc/slab.c), and how many */

  /* slow paths (any thread): atomics */
  _Atomic uint64_t slow_allocs, slow_frees, slow_misses, ctor_calls, dtor_calls;
  _Atomic uint64_t failures, reaps, alloc_undo;
};

/* mem.c: 1 when the failure countdown says this backing allocation fails. */
int hy__mem_injected_failure(void);

/* magazine.c */
void hy__mag_thread_exit(void *table);
/* Magazines come from small caches of the cache itself, one per magazine
 * class (1, 2 and 4 KiB), so they live in slabs that a reap gives back
 * like any other.  cap is clamped to what the biggest class holds. */
hy__mag *hy__mag_new(hy_cache_t *c, uint32_t cap);
void hy__mag_free(hy_cache_t *c, hy__mag *m);
void hy__mcpu_drain(hy__mcpu *m, hy_cache_t *c); /* depot lock held */
/* Folds the counts of m's magazines into its totals and publishes them
 * (the owner, or the destroyer under the depot lock). */
void hy__mcpu_fold(hy__mcpu *m);
/* The calling thread's magazines of c, or NULL. */
hy__mcpu *hy__mcpu_own(hy_cache_t *c);
/* Gives the calling thread's magazine contents of c to the slabs. */
void hy__mcpu_flush_own(hy_cache_t *c);
void hy__cache_unref(hy_cache_t *c);

/* depot.c (depot lock taken by hy__depot_lock, with the contention count) */
void hy__depot_lock(hy_cache_t *c);
void hy__depot_unlock(hy_cache_t *c);
hy__mag *hy__depot_get_full(hy_cache_t *c);  /* NULL when none */
hy__mag *hy__depot_get_empty(hy_cache_t *c); /* NULL when none */
void hy__depot_put(hy_cache_t *c, hy__mag *m); /* on the list its n says */
/* Takes every magazine off the depot (depot lock held); then, with no
 * lock held, hy__mags_release gives a chain's objects to the slab layer
 * and frees the magazines. */
hy__mag *hy__depot_take_all(hy_cache_t *c);
/* Takes the magazines that sat in the depot through the whole period
 * ending now, when a period has passed (depot lock held); NULL if none. */
hy__mag *hy__depot_take_idle(hy_cache_t *c, uint64_t now_ms);
void hy__mags_release(hy_cache_t *c, hy__mag *chain);

/* slab.c */
int hy__slab_init(hy_cache_t *c);
/* Takes up to n constructed objects; returns how many (0: out of memory or
 * the constructor failed). */
int hy__slab_get(hy_cache_t *c, void **out, int n);
/* Gives n constructed objects back. */
void hy__slab_put(hy_cache_t *c, void *const *objs, int n);
size_t hy__slab_reap(hy_cache_t *c); /* bytes released */
void hy__slab_fini(hy_cache_t *c);   /* every slab goes back */

/* debug.c */
void hy__dbg_init(hy_cache_t *c, void *obj); /* a buffer's first build */
/* Checks an object leaving the cache; in poison mode also constructs it
 * (returns its constructor's error).  Returns 0. */
int hy__dbg_alloc(hy_cache_t *c, void *obj);
void hy__dbg_free(hy_cache_t *c, void *obj);
void hy__dbg_abort(hy_cache_t *c, const char *what, void *obj);

#endif
