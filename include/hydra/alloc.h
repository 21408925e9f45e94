/* hydra/alloc.h - the slab-allocator family (Bonwick 1994; Bonwick & Adams
 * 2001) on mimalloc.
 *
 * Object caches hand out fixed-size objects that keep their constructed
 * state between free and alloc: the constructor runs when an object is first
 * built in a slab, the destructor when its slab is given back.  In front of
 * the slabs sits a magazine layer: every thread has a loaded and a previous
 * magazine per cache, so alloc and free on one thread take no lock and no
 * atomic read-modify-write; full and empty magazines are exchanged with a
 * global depot behind one lock.  A free may come from any thread: the object
 * goes into the freeing thread's magazine.
 *
 * Stack caches hand out task stacks with a guard page below each one,
 * cached for reuse and trimmed on demand.
 *
 * Allocation failure is never a crash: alloc returns NULL (callers report
 * HY_ENOMEM) and the cache stays usable.
 */
#ifndef HYDRA_ALLOC_H
#define HYDRA_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- caches */

typedef struct hy_cache hy_cache_t;

/* Constructor: builds obj in place; returns 0, or a negative HY_E* code to
 * fail the allocation.  Destructor: undoes it when the slab goes back. */
typedef int (*hy_cache_ctor_fn)(void *obj, void *arg);
typedef void (*hy_cache_dtor_fn)(void *obj, void *arg);

enum hy_cache_flags {
  /* Debug mode: red zones, double- and foreign-free checks (abort naming
   * the cache), a leak report at destroy, and poisoning: the destructor
   * runs at free, the freed object is filled with a pattern checked at the
   * next alloc, the constructor runs at alloc.  Builds with HY_DEBUG >= 2
   * (debug, asan) turn on everything but poisoning for every cache. */
  HY_CACHE_DEBUG = 1 << 0,
  HY_CACHE_NOMAG = 1 << 1, /* no magazine layer: every op goes to the slabs */
  /* No slabs of our own: objects come from the general heap (mimalloc)
   * one by one; constructed on arrival, destructed when they go back.
   * Objects too big for eight to a slab are always handled this way. */
  HY_CACHE_DIRECT = 1 << 2
};

/* Creates a cache of objects of `size` bytes aligned to `align` (0: natural,
 * at least 16).  `name` is copied.  ctor/dtor may be NULL.
 * Returns 0, HY_EINVAL or HY_ENOMEM. */
int hy_cache_create(const char *name, size_t size, size_t align,
                    hy_cache_ctor_fn ctor, hy_cache_dtor_fn dtor, void *arg,
                    unsigned flags, hy_cache_t **out);

/* Returns a constructed object, or NULL when memory (or the constructor)
 * failed.  Safe from any thread.  (Defined inline below with gcc and clang
 * outside Windows.) */
static inline void *hy_cache_alloc(hy_cache_t *c);

/* Gives an object back, still constructed.  Safe from any thread.  In debug
 * mode a double free or an object of another cache aborts with a message
 * naming the cache. */
static inline void hy_cache_free(hy_cache_t *c, void *obj);

/* The general paths of the two: what the inline fast paths fall back to
 * (and all there is where they are not inline).  Same contracts. */
void *hy_cache_alloc_general(hy_cache_t *c);
void hy_cache_free_general(hy_cache_t *c, void *obj);

/* Gives back to the system every slab with no live object, after moving
 * to the slabs what the depot and the calling thread's magazines hold
 * (other threads' magazines are theirs until they exit or flush), then
 * asks the general heap to return its free pages.  Returns the bytes of
 * slabs (or objects, for HY_CACHE_DIRECT) released. */
size_t hy_cache_reap(hy_cache_t *c);

typedef struct hy_cache_stats {
  size_t size;      /* sizeof(hy_cache_stats_t), set by the caller */
  int version;      /* HY_CACHE_STATS_VERSION, set by the callee */
  const char *name;
  size_t obj_size;
  uint64_t allocs, frees;   /* calls that returned an object / gave one */
  uint64_t live;            /* allocs - frees */
  uint64_t slabs;           /* slabs held now */
  uint64_t bytes_held;      /* memory held from the system, in bytes */
  uint64_t mag_hits;        /* allocs and frees served by a magazine */
  uint64_t mag_misses;      /* the rest */
  uint64_t depot_gets, depot_puts;
  uint64_t reaps;
  uint64_t ctor_calls, dtor_calls;
  uint64_t failures;        /* allocs that returned NULL */
  uint64_t mag_size;        /* objects per new magazine (grows with contention) */
  uint64_t depot_contended; /* depot lock acquisitions that had to wait */
  uint64_t depot_full, depot_empty; /* magazines in the depot now */
  /* version 2 */
  uint64_t mag_trades; /* a thread's two magazines traded places (hits) */
  uint64_t depot_trims;   /* idle-trimming ticks (hy_cache_trim_idle) */
  uint64_t depot_trimmed; /* magazines they gave back */
} hy_cache_stats_t;
#define HY_CACHE_STATS_VERSION 2

/* Magazines that sit unused in a cache's depot for a whole period are
 * given back: their objects go to the slabs and empty slabs beyond the
 * cache's bound to the system, so memory a burst left behind returns
 * without a reap.  The period is HY_CACHE_IDLE_MS_DEFAULT (15 s, as in
 * Bonwick & Adams) unless set here; 0 turns trimming off.  Setting it
 * starts a new period.  Returns 0 or HY_EINVAL. */
#define HY_CACHE_IDLE_MS_DEFAULT 15000
int hy_cache_set_idle_ms(hy_cache_t *c, uint64_t ms);

/* A trimming tick: when a period has passed since the last tick, gives
 * back the full and empty magazines that stayed in the depot through all
 * of it (the fewest it held at any time) and starts a new period.  The
 * depot ticks by itself every 32 depot operations; a cache that goes
 * quiet needs a caller (a timer of the runtime, say).  Returns the bytes
 * of slabs released. */
size_t hy_cache_trim_idle(hy_cache_t *c);

/* Copies the counters into *s (s->size must be set; a smaller, older
 * struct gets the fields it has).  Returns 0 or HY_EINVAL.  The calling
 * thread's counts and those of threads that exited (or called
 * hy_cache_thread_flush) are exact; other threads still running are read
 * without stopping them, as of their last trip off the fast path (at most
 * two magazines' worth of operations behind): a snapshot. */
int hy_cache_stats(hy_cache_t *c, hy_cache_stats_t *s);

/* Destroys the cache: every slab goes back and the destructor runs on every
 * constructed free object.  Live objects are leaks: counted, reported on
 * stderr in debug mode, and the count is returned (0 when clean). */
int hy_cache_destroy(hy_cache_t *c);

/* Gives the calling thread's magazines of every cache to the caches'
 * depots, so other threads can use the objects.  Runs by itself when a
 * thread exits; a thread may call it earlier (before a long sleep, say). */
void hy_cache_thread_flush(void);

/* ------------------------------------ the inline fast path (not API)
 *
 * What follows is internal to the library (alloc/magazine.c) and may
 * change with it; it is here only so that the common case of alloc and
 * free compiles into the caller: a thread-local table lookup and a pop or
 * push on one of the thread's two magazines, no call, no lock, no atomic
 * read-modify-write and no counter (the statistics are derived from the
 * magazines' fill when they change hands).  Each thread allocates from
 * its "alloc" magazine and frees into its "free" magazine; the two trade
 * places when one runs out, and the general path deals with the depot.
 *
 * A magazine's slots end at a multiple of HY__MAG_ALIGN and have a NULL
 * word below the first, so neither op loads a bound: a pop that reads the
 * NULL found the magazine empty, a push at a multiple of HY__MAG_ALIGN
 * found it full (or, in a magazine bigger than HY__MAG_ALIGN, at one of
 * its inner boundaries: the general path pushes there and goes on).
 */
#define HY__MAG_ALIGN 1024

typedef struct hy__cache_head {
  /* The key of a cache whose objects may take the fast path (its
   * generation times 64, the size of a slot), or a value no thread's
   * table holds (debug checks, ASan poisoning). */
  uint64_t key;
} hy__cache_head; /* the first member of every cache */

/* One thread's magazines of one cache, in the thread's table (one cache
 * line): what the fast path reads and writes, and the rest (hy__mcpu,
 * alloc/internal.h). */
typedef struct hy__tslot {
  uint64_t key; /* 0: free */
  void **atop;  /* alloc magazine: the next pop is atop[-1] (NULL: empty) */
  struct hy__mcpu *m;
  /* free magazine: the next push goes to *ftop, unless ftop is a multiple
   * of HY__MAG_ALIGN (NULL: no magazine).  Not next to atop: a copy of the
   * two would be one 16-byte load, which waits for the fast path's two
   * 8-byte stores to retire instead of taking them forwarded. */
  void **ftop;
  uint64_t pad_[4];
} hy__tslot;

typedef struct hy__ttable {
  uint64_t mask; /* slots - 1 */
  uint64_t used;
  hy__tslot v[];
} hy__ttable;

/* The calling thread's table for the fast path: the address of its slots
 * (an integer, so that storing an object pointer cannot be taken to
 * change it) and (slots - 1) * 64.  Never empty: a table of one slot that
 * matches no cache until the thread first uses one. */
typedef struct hy__cache_tlsv {
  uintptr_t v;
  uint64_t mask;
} hy__cache_tlsv;

#if (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#define HY__CACHE_INLINE 1
extern __thread hy__cache_tlsv hy__cache_tls
    __attribute__((tls_model("initial-exec")));

static inline hy__tslot *hy__cache_slot(uint64_t k) {
  return (hy__tslot *)(hy__cache_tls.v + (k & hy__cache_tls.mask));
}

static inline void *hy_cache_alloc(hy_cache_t *c) {
  uint64_t k = ((const hy__cache_head *)(const void *)c)->key;
  hy__tslot *s = hy__cache_slot(k);
  if (__builtin_expect(s->key == k, 1)) {
    void **t = s->atop;
    void *p = t[-1];
    if (__builtin_expect(p != NULL, 1)) {
      s->atop = t - 1;
      return p;
    }
  }
  return hy_cache_alloc_general(c);
}

static inline void hy_cache_free(hy_cache_t *c, void *obj) {
  uint64_t k = ((const hy__cache_head *)(const void *)c)->key;
  hy__tslot *s = hy__cache_slot(k);
  if (__builtin_expect(s->key == k && obj != NULL, 1)) {
    void **t = s->ftop;
    if (__builtin_expect(((uintptr_t)t & (HY__MAG_ALIGN - 1)) != 0, 1)) {
      *t = obj;
      s->ftop = t + 1;
      return;
    }
  }
  hy_cache_free_general(c, obj);
}
#else
static inline void *hy_cache_alloc(hy_cache_t *c) {
  return hy_cache_alloc_general(c);
}
static inline void hy_cache_free(hy_cache_t *c, void *obj) {
  hy_cache_free_general(c, obj);
}
#endif

/* ---------------------------------------------------------------- stacks */

typedef struct hy_stack {
  void *base;  /* lowest usable address (the guard page sits below it) */
  size_t size; /* usable bytes; the stack grows down from base + size */
} hy_stack_t;

typedef struct hy_stack_cache hy_stack_cache_t;

/* A cache of stacks of `stack_size` bytes (rounded up to pages; 0 means
 * 64 KiB), keeping at most `max_cached` free stacks (0: 1024). */
int hy_stack_cache_create(size_t stack_size, size_t max_cached,
                          hy_stack_cache_t **out);

/* Returns 0 and a stack, or HY_ENOMEM.  Safe from any thread. */
int hy_stack_alloc(hy_stack_cache_t *c, hy_stack_t *out);

/* Returns a stack to the cache (or to the system beyond max_cached). */
void hy_stack_free(hy_stack_cache_t *c, const hy_stack_t *s);

/* Gives the memory of every cached stack back (madvise/VirtualFree decommit);
 * returns bytes released. */
size_t hy_stack_cache_trim(hy_stack_cache_t *c);

/* Unmaps every cached stack.  Stacks still out are the caller's leak. */
void hy_stack_cache_destroy(hy_stack_cache_t *c);

/* The page size of the system. */
size_t hy_page_size(void);

#ifdef __cplusplus
}
#endif
#endif /* HYDRA_ALLOC_H */
