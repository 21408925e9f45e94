/* test-alloc.c - the slab-allocator family: object caches (constructed
 * state, magazines, depot, slabs, reap, stats, debug mode, failures) and
 * stack caches (guard pages, reuse, trim). */
#ifndef _WIN32
#define _GNU_SOURCE
#endif
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <pthread.h>
#include <unistd.h>
#include <sys/mman.h>
#endif

#include "alloc/internal.h"
#include "alloc/mem.h"
#include "hydra.h"
#include "runner.h"
#include "test.h"

/* ---------------------------------------------------------- helpers */

typedef struct thr {
#ifdef _WIN32
  HANDLE h;
#else
  pthread_t h;
#endif
  void *(*fn)(void *);
  void *arg;
} thr_t;

#ifdef _WIN32
static DWORD WINAPI thr_tramp(void *p) {
  thr_t *t = p;
  t->fn(t->arg);
  return 0;
}
#endif

static void thr_start(thr_t *t, void *(*fn)(void *), void *arg) {
  t->fn = fn;
  t->arg = arg;
#ifdef _WIN32
  t->h = CreateThread(NULL, 0, thr_tramp, t, 0, NULL);
  ASSERT(t->h != NULL);
#else
  ASSERT_EQ(pthread_create(&t->h, NULL, fn, arg), 0);
#endif
}

static void thr_join(thr_t *t) {
#ifdef _WIN32
  WaitForSingleObject(t->h, INFINITE);
  CloseHandle(t->h);
#else
  pthread_join(t->h, NULL);
#endif
}

static void thr_yield(void) {
#ifdef _WIN32
  SwitchToThread();
#else
  sched_yield();
#endif
}

/* Per-thread random numbers (test_rand is for one thread), seeded from it. */
static uint64_t xs_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x ? x : 0x9E3779B97F4A7C15ull;
}

static hy_cache_stats_t stats_of(hy_cache_t *c) {
  hy_cache_stats_t s;
  memset(&s, 0, sizeof s);
  s.size = sizeof s;
  ASSERT_OK(hy_cache_stats(c, &s));
  ASSERT_EQ(s.version, HY_CACHE_STATS_VERSION);
  return s;
}

/* The counters must always agree with each other. */
static void stats_consistent(const hy_cache_stats_t *s) {
  ASSERT_EQ(s->live, s->allocs - s->frees);
  ASSERT_LE(s->mag_trades, s->mag_hits);
  ASSERT_EQ(s->mag_hits + s->mag_misses, s->allocs + s->frees + s->failures);
}

/* Runs this test binary's test `name` in a child process with
 * HYDRA_ALLOC_CHILD set, its output into out; returns the exit code
 * (128 + signal for a signal death on POSIX). */
static int run_child(const char *name, char *out, size_t outsz) {
#ifdef _WIN32
  _putenv("HYDRA_ALLOC_CHILD=1");
#else
  setenv("HYDRA_ALLOC_CHILD", "1", 1);
#endif
  char path[1024];
  snprintf(path, sizeof path, "%s/hydra-alloc-%s-%d.out", proc_tmpdir(), name,
           (int)(proc_now_ms() % 1000000));
  proc_t p;
  ASSERT_EQ(proc_spawn(&p, test_exe(), name, NULL, path), 0);
  int code = -1;
  int64_t until = proc_now_ms() + 60000;
  while (!proc_poll(&p, &code)) {
    if (proc_now_ms() > until) {
      proc_kill(&p);
      TEST_FAIL_("child %s hung", name);
    }
    proc_sleep_ms(5);
  }
  FILE *f = fopen(path, "rb");
  ASSERT(f != NULL);
  size_t n = fread(out, 1, outsz - 1, f);
  out[n] = 0;
  fclose(f);
  remove(path);
  return code;
}

static int is_child(void) { return getenv("HYDRA_ALLOC_CHILD") != NULL; }

#ifdef __linux__
/* Resident set size in bytes, or 0 where it cannot be read. */
static size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f)
    return 0;
  unsigned long size = 0, res = 0;
  int n = fscanf(f, "%lu %lu", &size, &res);
  fclose(f);
  return n == 2 ? res * (size_t)sysconf(_SC_PAGESIZE) : 0;
}
#endif

/* ------------------------------------------------- counting objects */

#define MAGIC_BUILT 0x5EEDF00Du

typedef struct obj {
  uint32_t built;  /* set by the constructor */
  uint32_t id;     /* the constructor's serial number */
  uint64_t stamp;  /* written by users */
  uint64_t check;  /* ~stamp */
  char pad[40];
} obj_t;

typedef struct counts {
  atomic_int ctor, dtor; /* objects constructed, destructed */
  atomic_int calls;      /* constructor calls */
  atomic_int fail_at;    /* the constructor fails its nth call (0: never) */
} counts_t;

static int obj_ctor(void *p, void *arg) {
  counts_t *k = arg;
  if (atomic_fetch_add(&k->calls, 1) + 1 == atomic_load(&k->fail_at))
    return HY_ENOMEM;
  int n = atomic_fetch_add(&k->ctor, 1) + 1;
  obj_t *o = p;
  o->built = MAGIC_BUILT;
  o->id = (uint32_t)n;
  o->stamp = 0;
  o->check = ~(uint64_t)0;
  return 0;
}

static void obj_dtor(void *p, void *arg) {
  counts_t *k = arg;
  obj_t *o = p;
  ASSERT_EQ(o->built, MAGIC_BUILT);
  o->built = 0;
  atomic_fetch_add(&k->dtor, 1);
}

static hy_cache_t *new_cache(const char *name, counts_t *k, unsigned flags) {
  hy_cache_t *c = NULL;
  ASSERT_OK(hy_cache_create(name, sizeof(obj_t), 0, obj_ctor, obj_dtor, k,
                            flags, &c));
  return c;
}

/* ------------------------------------------------ constructed state */

static void ctor_dtor_counts(unsigned flags) {
  counts_t k = {0};
  hy_cache_t *c = new_cache("counts", &k, flags);
  /* Enough for more empty slabs than a cache keeps (2) of 256 KiB. */
  enum { N = 20000 };
  obj_t **v = malloc(N * sizeof *v);
  ASSERT(v);
  for (int i = 0; i < N; i++) {
    v[i] = hy_cache_alloc(c);
    ASSERT(v[i] != NULL);
    ASSERT_EQ(v[i]->built, MAGIC_BUILT);
    ASSERT_EQ((uintptr_t)v[i] % 16, 0);
  }
  /* Each object was built once (a magazine refill may build up to one
   * magazine ahead), none destroyed yet. */
  int built = atomic_load(&k.ctor);
  ASSERT_GE(built, N);
  ASSERT_LE(built, N + 512);
  ASSERT_EQ(atomic_load(&k.dtor), 0);
  for (int i = 0; i < N; i++)
    hy_cache_free(c, v[i]);
  /* With magazines the freed objects wait there, constructed; without,
   * empty slabs beyond the bound (or, direct, the objects) go back. */
  int mag = !(flags & HY_CACHE_NOMAG);
  if (mag)
    ASSERT_EQ(atomic_load(&k.dtor), 0);
  else
    ASSERT_GT(atomic_load(&k.dtor), 0);
  /* Allocating again builds nothing new while they are held. */
  for (int i = 0; i < N; i++) {
    v[i] = hy_cache_alloc(c);
    ASSERT(v[i] != NULL);
    ASSERT_EQ(v[i]->built, MAGIC_BUILT);
  }
  if (mag)
    ASSERT_EQ(atomic_load(&k.ctor), built);
  for (int i = 0; i < N; i++)
    hy_cache_free(c, v[i]);
  /* Destroy runs the destructor on every constructed object. */
  ASSERT_EQ(hy_cache_destroy(c), 0);
  ASSERT_EQ(atomic_load(&k.dtor), atomic_load(&k.ctor));
  free(v);
}

TEST_IMPL(alloc_ctor_dtor_counts) {
  ctor_dtor_counts(0);
  ctor_dtor_counts(HY_CACHE_NOMAG);
  ctor_dtor_counts(HY_CACHE_DIRECT);
  ctor_dtor_counts(HY_CACHE_DIRECT | HY_CACHE_NOMAG);
  return 0;
}

TEST_IMPL(alloc_reuse_keeps_state) {
  unsigned modes[] = {0, HY_CACHE_NOMAG, HY_CACHE_DIRECT};
  for (int m = 0; m < 3; m++) {
    counts_t k = {0};
    hy_cache_t *c = new_cache("reuse", &k, modes[m]);
    obj_t *a = hy_cache_alloc(c);
    ASSERT(a);
    /* A magazine refill may build a batch; none is built again below. */
    int built = atomic_load(&k.ctor);
    ASSERT_GE(built, 1);
    a->stamp = 42; /* state the next user sees: objects stay constructed */
    uint32_t id = a->id;
    hy_cache_free(c, a);
    /* a comes back within a magazine's worth of allocations (it waits in
     * the free magazine while the alloc magazine's objects go first),
     * with the state its last user left and no second construction. */
    enum { BOUND = 2048 };
    obj_t **v = malloc(BOUND * sizeof *v);
    ASSERT(v);
    int n = 0;
    obj_t *b = NULL;
    while (n < BOUND && b != a) {
      b = hy_cache_alloc(c);
      ASSERT(b);
      ASSERT_EQ(b->built, MAGIC_BUILT);
      v[n++] = b;
    }
    ASSERT(b == a);
    ASSERT_EQ(b->stamp, 42);
    ASSERT_EQ(b->id, id);
    if (modes[m] & HY_CACHE_NOMAG) /* the slab's free stack is LIFO */
      ASSERT_EQ(n, 1);
    else
      ASSERT_LE(n, 512 + 1); /* a magazine at most: nothing is left behind */
    /* Allocations since the first were built at most one refill ahead. */
    ASSERT_LE(atomic_load(&k.ctor), built + n + 512);
    for (int i = 0; i < n; i++)
      hy_cache_free(c, v[i]);
    free(v);
    built = atomic_load(&k.ctor);
    ASSERT_EQ(atomic_load(&k.dtor), 0);
    ASSERT_EQ(hy_cache_destroy(c), 0);
    ASSERT_EQ(atomic_load(&k.dtor), built);
  }
  return 0;
}

TEST_IMPL(alloc_ctor_failure) {
  counts_t k = {0};
  atomic_store(&k.fail_at, 3);
  hy_cache_t *c = new_cache("ctor-fails", &k, HY_CACHE_NOMAG);
  ASSERT(hy_cache_alloc(c) != NULL);
  ASSERT(hy_cache_alloc(c) != NULL);
  ASSERT(hy_cache_alloc(c) == NULL); /* the third construction fails */
  hy_cache_stats_t s = stats_of(c);
  ASSERT_EQ(s.failures, 1);
  ASSERT_EQ(s.live, 2);
  stats_consistent(&s);
  obj_t *o = hy_cache_alloc(c); /* and the cache goes on */
  ASSERT(o);
  ASSERT_EQ(o->built, MAGIC_BUILT);
  ASSERT_EQ(hy_cache_destroy(c), 3); /* three leaked on purpose */
  /* With magazines, a failing constructor in the middle of a refill. */
  counts_t k2 = {0};
  atomic_store(&k2.fail_at, 5);
  c = new_cache("ctor-fails-mag", &k2, 0);
  int got = 0;
  void *v[100];
  for (int i = 0; i < 100; i++) {
    v[i] = hy_cache_alloc(c);
    got += v[i] != NULL;
  }
  /* The refill stopped at the failed construction and handed out what it
   * had; the next refill went on: no alloc failed, no object is broken. */
  ASSERT_EQ(got, 100);
  ASSERT_EQ(atomic_load(&k2.calls), atomic_load(&k2.ctor) + 1);
  for (int i = 0; i < 100; i++)
    if (v[i]) {
      ASSERT_EQ(((obj_t *)v[i])->built, MAGIC_BUILT);
      hy_cache_free(c, v[i]);
    }
  ASSERT_EQ(hy_cache_destroy(c), 0);
  ASSERT_EQ(atomic_load(&k2.dtor), atomic_load(&k2.ctor));
  return 0;
}

TEST_IMPL(alloc_invalid_args) {
  hy_cache_t *c = NULL;
  ASSERT_ERR(hy_cache_create("x", 0, 0, NULL, NULL, NULL, 0, &c), HY_EINVAL);
  ASSERT_ERR(hy_cache_create("x", 16, 24, NULL, NULL, NULL, 0, &c), HY_EINVAL);
  ASSERT_ERR(hy_cache_create("x", 16, 0, NULL, NULL, NULL, 0, NULL), HY_EINVAL);
  ASSERT_OK(hy_cache_create(NULL, 1, 128, NULL, NULL, NULL, 0, &c));
  void *p = hy_cache_alloc(c);
  ASSERT(p);
  ASSERT_EQ((uintptr_t)p % 128, 0);
  hy_cache_stats_t s;
  s.size = 8;
  ASSERT_ERR(hy_cache_stats(c, &s), HY_EINVAL);
  ASSERT_ERR(hy_cache_stats(NULL, &s), HY_EINVAL);
  hy_cache_free(c, NULL); /* nothing */
  hy_cache_free(c, p);
  ASSERT_EQ(hy_cache_destroy(c), 0);
  ASSERT_ERR(hy_cache_destroy(NULL), HY_EINVAL);
  hy_stack_cache_t *sc;
  ASSERT_ERR(hy_stack_cache_create(0, 0, NULL), HY_EINVAL);
  ASSERT_OK(hy_stack_cache_create(0, 0, &sc));
  ASSERT_ERR(hy_stack_alloc(sc, NULL), HY_EINVAL);
  hy_stack_cache_destroy(sc);
  return 0;
}

/* ------------------------------------------------------------ stats */

TEST_IMPL(alloc_stats_add_up) {
  counts_t k = {0};
  hy_cache_t *c = new_cache("stats", &k, 0);
  hy_cache_stats_t s = stats_of(c);
  ASSERT(strcmp(s.name, "stats") == 0);
  ASSERT_EQ(s.obj_size, sizeof(obj_t));
  ASSERT_EQ(s.allocs + s.frees + s.live + s.slabs + s.bytes_held, 0);
  enum { N = 3000 };
  void **v = malloc(N * sizeof *v);
  for (int i = 0; i < N; i++)
    ASSERT((v[i] = hy_cache_alloc(c)) != NULL);
  for (int i = 0; i < N / 2; i++)
    hy_cache_free(c, v[i]);
  s = stats_of(c);
  ASSERT_EQ(s.allocs, N);
  ASSERT_EQ(s.frees, N / 2);
  ASSERT_EQ(s.live, N - N / 2);
  ASSERT_GT(s.slabs, 0);
  ASSERT_GE(s.bytes_held, (uint64_t)N * sizeof(obj_t));
  ASSERT_EQ(s.ctor_calls, (uint64_t)atomic_load(&k.ctor));
  ASSERT_GT(s.mag_hits, 0);
  ASSERT_GT(s.mag_misses, 0);
  ASSERT_GT(s.depot_puts, 0); /* N/2 frees overflow two magazines */
  ASSERT_GT(s.mag_size, 0);
  stats_consistent(&s);
  /* Alloc again: the depot's full magazines are taken. */
  for (int i = 0; i < N / 2; i++)
    ASSERT((v[i] = hy_cache_alloc(c)) != NULL);
  s = stats_of(c);
  ASSERT_GT(s.depot_gets, 0);
  ASSERT_EQ(s.live, N);
  stats_consistent(&s);
  for (int i = 0; i < N; i++)
    hy_cache_free(c, v[i]);
  ASSERT_GT(hy_cache_reap(c), 0);
  s = stats_of(c);
  ASSERT_EQ(s.live, 0);
  ASSERT_EQ(s.slabs, 0);
  ASSERT_EQ(s.bytes_held, 0);
  ASSERT_EQ(s.reaps, 1);
  ASSERT_EQ(s.dtor_calls, s.ctor_calls); /* all given back */
  stats_consistent(&s);
  /* An older, smaller struct gets what it has and nothing beyond. */
  unsigned char buf[sizeof(hy_cache_stats_t) + 16];
  memset(buf, 0xAB, sizeof buf);
  hy_cache_stats_t *small = (hy_cache_stats_t *)buf;
  small->size = offsetof(hy_cache_stats_t, failures) + sizeof(uint64_t);
  ASSERT_OK(hy_cache_stats(c, small));
  ASSERT_EQ(small->allocs, s.allocs);
  ASSERT_EQ(buf[small->size], 0xAB);
  ASSERT_EQ(hy_cache_destroy(c), 0);
  free(v);
  return 0;
}

/* ------------------------------------------------------ reclamation */

TEST_IMPL(alloc_reap_returns_memory) {
#ifndef __linux__
  RETURN_SKIP("RSS is read from /proc");
#else
#ifdef HY_ASAN
  /* The shadow pages ASan wrote when objects were poisoned stay. */
  RETURN_SKIP("ASan keeps the shadow of unmapped slabs resident");
#endif
  enum { N = 1000000 };
  void **v = malloc(N * sizeof *v);
  ASSERT(v);
  memset(v, 0, N * sizeof *v);
  hy_cache_t *c;
  ASSERT_OK(hy_cache_create("burst", 64, 0, NULL, NULL, NULL, 0, &c));
  void *warm = hy_cache_alloc(c); /* magazines and tables exist */
  hy_cache_free(c, warm);
  hy_cache_reap(c);
  size_t start = rss_bytes();
  ASSERT_GT(start, 0);
  for (int i = 0; i < N; i++) {
    v[i] = hy_cache_alloc(c);
    ASSERT(v[i] != NULL);
    memset(v[i], 0x5A, 64);
  }
  size_t peak = rss_bytes();
  ASSERT_GT(peak, start + (size_t)N * 64 / 2);
  for (int i = 0; i < N; i++) /* random order: slabs empty late */
    {
      size_t j = (size_t)(test_rand() % (uint64_t)(N - i)) + (size_t)i;
      void *t = v[i];
      v[i] = v[j];
      v[j] = t;
      hy_cache_free(c, v[i]);
    }
  size_t released = hy_cache_reap(c);
  ASSERT_GE(released, (size_t)N * 64);
  size_t after = rss_bytes();
  fprintf(stderr, "rss: start %zu KiB, peak %zu KiB, after reap %zu KiB\n",
          start / 1024, peak / 1024, after / 1024);
  ASSERT_LE(after, start + start / 10);
  hy_cache_stats_t s = stats_of(c);
  ASSERT_EQ(s.slabs, 0);
  /* The reap took this thread's magazines too (their slab goes back); the
   * next op brings new ones: the ops after it are magazine hits again. */
  for (int i = 0; i < 1000; i++) {
    void *p = hy_cache_alloc(c);
    ASSERT(p != NULL);
    hy_cache_free(c, p);
  }
  hy_cache_stats_t s2 = stats_of(c);
  ASSERT_LE(s2.mag_misses - s.mag_misses, 4);
  ASSERT_EQ(s2.live, 0);
  stats_consistent(&s2);
  ASSERT_EQ(hy_cache_destroy(c), 0);
  free(v);
  return 0;
#endif
}

/* Empty slabs beyond the cache's bound go back without a reap. */
/* Trips off the fast path (magazine trades, depot and slab visits) are at
 * least half a magazine of operations apart whatever the pattern: no
 * pattern makes a thread's two magazines trade places on every call. */
static void trips_bounded(int pattern, int param) {
  hy_cache_t *c;
  ASSERT_OK(hy_cache_create("trips", 64, 0, NULL, NULL, NULL, 0, &c));
  enum { OPS = 200000, MAXLIVE = 4096 };
  void **v = malloc(MAXLIVE * sizeof *v);
  ASSERT(v);
  long ops = 0;
  int live = 0, head = 0;
  uint64_t rnd = test_rand() | 1;
  while (ops < OPS) {
    switch (pattern) {
    case 0: /* FIFO churn with param objects live */
      if (live < param) {
        ASSERT((v[(head + live) % MAXLIVE] = hy_cache_alloc(c)) != NULL);
        live++;
        ops++;
        break;
      }
      hy_cache_free(c, v[head]);
      ASSERT((v[head] = hy_cache_alloc(c)) != NULL);
      head = (head + 1) % param;
      ops += 2;
      break;
    case 1: /* bursts: param allocations, then their frees (LIFO) */
      for (int i = 0; i < param; i++)
        ASSERT((v[i] = hy_cache_alloc(c)) != NULL);
      for (int i = param - 1; i >= 0; i--)
        hy_cache_free(c, v[i]);
      ops += 2L * param;
      break;
    case 3: /* a burst, then alloc-free pairs (the magazines are full) */
      for (int i = 0; i < param; i++)
        ASSERT((v[i] = hy_cache_alloc(c)) != NULL);
      for (int i = param - 1; i >= 0; i--)
        hy_cache_free(c, v[i]);
      for (int i = 0; i < 1000; i++) {
        void *p = hy_cache_alloc(c);
        ASSERT(p);
        hy_cache_free(c, p);
      }
      ops += 2L * param + 2000;
      break;
    default: { /* a random walk of up to param objects live */
      int r = (int)(xs_next(&rnd) % 2);
      if (live == param || (r == 0 && live > 0)) {
        int k = (int)(xs_next(&rnd) % (uint64_t)live);
        hy_cache_free(c, v[k]);
        v[k] = v[--live];
      } else {
        ASSERT((v[live++] = hy_cache_alloc(c)) != NULL);
      }
      ops++;
      break;
    }
    }
  }
  hy_cache_stats_t s = stats_of(c);
  uint64_t half = s.mag_size / 2, trips = s.mag_trades + s.mag_misses;
  ASSERT_GT(half, 0);
  if (trips > s.allocs + s.frees) /* a report that names the pattern */
    fprintf(stderr, "pattern %d/%d: %llu trips\n", pattern, param,
            (unsigned long long)trips);
  ASSERT_LE(trips, (s.allocs + s.frees) / half + 2);
  ASSERT_LE(s.mag_trades, s.mag_hits);
  stats_consistent(&s);
  for (int i = 0; (pattern == 0 || pattern == 2) && i < live; i++)
    hy_cache_free(c, v[i]);
  ASSERT_EQ(hy_cache_destroy(c), 0);
  free(v);
}

TEST_IMPL(alloc_magazine_trips_bounded) {
  int sizes[] = {1, 2, 63, 64, 65, 127, 128, 129, 191, 192, 255, 256, 257, 1000};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    trips_bounded(0, sizes[i]);
    trips_bounded(1, sizes[i]);
    trips_bounded(2, sizes[i]);
    trips_bounded(3, sizes[i]);
  }
  return 0;
}

/* The fast path finds a magazine's ends without loading a bound: a NULL
 * word below the slots (empty) and the slots' end on a HY__MAG_ALIGN
 * boundary (full); a magazine bigger than that sends a push to the general
 * path at each inner boundary, which pushes there and goes on.  Magazines
 * of every class and of sizes whose slots start on, cross or stop short
 * of an inner boundary, at every fill level: no object is handed out twice
 * or lost, and nothing but objects is handed out (a push past the end
 * would overwrite the next magazine's header, a pop past the NULL would
 * hand out a header word). */
static void bounds_run(uint32_t mag_size, uint64_t seed) {
  counts_t k = {0};
  hy_cache_t *c = new_cache("bounds", &k, 0);
#ifndef HY_ASAN
  /* The inline fast path even in builds whose debug checks keep every op
   * off it (before the first op; the checks were never used). */
  c->checks = c->slowpath = 0;
  c->head.key = c->gen << HY__SLOT_SHIFT;
#endif
  c->mag_size = c->mag_max = mag_size;
  enum { N = 3000, OPS = 40000 };
  const uint64_t LIVE = 0x11FE11FE11FE11FEull;
  obj_t **v = malloc(N * sizeof *v);
  ASSERT(v);
  int live = 0;
  for (int op = 0; op < OPS; op++) {
    uint64_t r = xs_next(&seed);
    int burst = 1 + (int)(r >> 40) % (r % 7 == 0 ? 2 * (int)mag_size + 3 : 3);
    if (r % 2 && live < N) {
      for (int b = 0; b < burst && live < N; b++) {
        obj_t *o = hy_cache_alloc(c);
        ASSERT(o != NULL);
        ASSERT_EQ(o->built, MAGIC_BUILT);
        ASSERT(o->stamp != LIVE); /* not handed out twice */
        o->stamp = LIVE;
        v[live++] = o;
      }
    } else {
      for (int b = 0; b < burst && live > 0; b++) {
        int i = (r >> 20) % 3 == 0 ? (int)(xs_next(&seed) % (uint64_t)live) : live - 1;
        obj_t *o = v[i];
        v[i] = v[--live];
        ASSERT_EQ(o->stamp, LIVE);
        o->stamp = 0;
        hy_cache_free(c, o);
      }
    }
  }
  hy_cache_stats_t s = stats_of(c);
  ASSERT_EQ(s.mag_size, mag_size);
  ASSERT_EQ(s.live, (uint64_t)live);
  stats_consistent(&s);
  while (live > 0) {
    obj_t *o = v[--live];
    o->stamp = 0;
    hy_cache_free(c, o);
  }
  ASSERT_EQ(hy_cache_destroy(c), 0);
  ASSERT_EQ(atomic_load(&k.ctor), atomic_load(&k.dtor));
  free(v);
}

TEST_IMPL(alloc_magazine_bounds) {
  /* 124, 252, 508: 1, 2 and 4 KiB full; 125: a 2 KiB magazine whose
   * slots stop short of its inner boundary; 200: slots across it; 384: a
   * 4 KiB magazine whose slots start on one */
  uint32_t sizes[] = {1, 2, 7, 31, 123, 124, 125, 200, 252, 253, 384, 508};
  uint64_t seed = test_rand() | 1;
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    bounds_run(sizes[i], seed + i);
  return 0;
}

TEST_IMPL(alloc_empty_slabs_bounded) {
  counts_t k = {0};
  hy_cache_t *c = new_cache("bounded", &k, HY_CACHE_NOMAG);
  enum { N = 20000 };
  void **v = malloc(N * sizeof *v);
  for (int i = 0; i < N; i++)
    ASSERT((v[i] = hy_cache_alloc(c)) != NULL);
  hy_cache_stats_t s = stats_of(c);
  uint64_t peak_slabs = s.slabs;
  ASSERT_GT(peak_slabs, 4);
  for (int i = 0; i < N; i++)
    hy_cache_free(c, v[i]);
  s = stats_of(c);
  ASSERT_LE(s.slabs, 2); /* the bound */
  ASSERT_GT(atomic_load(&k.dtor), 0);
  ASSERT_EQ(hy_cache_destroy(c), 0);
  ASSERT_EQ(atomic_load(&k.dtor), atomic_load(&k.ctor));
  free(v);
  return 0;
}

/* ---------------------------------------------- threads and depot */

typedef struct xq { /* a bounded MPMC queue of objects, under a lock */
  atomic_flag lock;
  void *v[1024];
  int head, n;
} xq_t;

static int xq_push(xq_t *q, void *p) {
  while (atomic_flag_test_and_set(&q->lock))
    thr_yield();
  int ok = q->n < 1024;
  if (ok) {
    q->v[(q->head + q->n) % 1024] = p;
    q->n++;
  }
  atomic_flag_clear(&q->lock);
  return ok;
}

static void *xq_pop(xq_t *q) {
  while (atomic_flag_test_and_set(&q->lock))
    thr_yield();
  void *p = NULL;
  if (q->n) {
    p = q->v[q->head];
    q->head = (q->head + 1) % 1024;
    q->n--;
  }
  atomic_flag_clear(&q->lock);
  return p;
}

typedef struct stress {
  hy_cache_t *c;
  xq_t q;
  long ops_per_thread;
  atomic_long allocs, frees;
  atomic_int done;
  int nthreads;
  uint64_t seed;
} stress_t;

typedef struct sthr {
  stress_t *s;
  int id;
  uint64_t rnd;
} sthr_t;

static void stamp(obj_t *o, int id, uint64_t r) {
  ASSERT_EQ(o->built, MAGIC_BUILT);
  ASSERT_EQ(o->check, ~o->stamp); /* nobody else touched it */
  o->stamp = ((uint64_t)id << 48) ^ r;
  o->check = ~o->stamp;
  memset(o->pad, (int)(r & 0xff), sizeof o->pad);
}

static void verify(obj_t *o) {
  ASSERT_EQ(o->built, MAGIC_BUILT);
  ASSERT_EQ(o->check, ~o->stamp);
  for (size_t i = 0; i < sizeof o->pad; i++)
    ASSERT_EQ((unsigned char)o->pad[i], (unsigned char)o->pad[0]);
}

static void *stress_thread(void *arg) {
  sthr_t *t = arg;
  stress_t *s = t->s;
  obj_t *mine[64];
  int n = 0;
  long allocs = 0, frees = 0;
  for (long i = 0; i < s->ops_per_thread; i++) {
    uint64_t r = xs_next(&t->rnd);
    switch (r % 8) {
    case 0: case 1: case 2: /* alloc, keep */
      if (n < 64) {
        obj_t *o = hy_cache_alloc(s->c);
        ASSERT(o);
        allocs++;
        stamp(o, t->id, r);
        mine[n++] = o;
      }
      break;
    case 3: case 4: /* free one of mine (same thread) */
      if (n) {
        int j = (int)((r >> 8) % (uint64_t)n);
        obj_t *o = mine[j];
        mine[j] = mine[--n];
        verify(o);
        hy_cache_free(s->c, o);
        frees++;
      }
      break;
    case 5: /* hand one to another thread */
      if (n && xq_push(&s->q, mine[n - 1]))
        n--;
      break;
    case 6: { /* free one from another thread */
      obj_t *o = xq_pop(&s->q);
      if (o) {
        verify(o);
        hy_cache_free(s->c, o);
        frees++;
      }
      break;
    }
    default: /* random timing */
      if ((r >> 16) % 64 == 0)
        thr_yield();
      break;
    }
  }
  while (n) {
    verify(mine[--n]);
    hy_cache_free(s->c, mine[n]);
    frees++;
  }
  atomic_fetch_add(&s->allocs, allocs);
  atomic_fetch_add(&s->frees, frees);
  return NULL;
}

static void run_stress(int nthreads, long total_ops, unsigned flags) {
  counts_t k = {0};
  stress_t *s = calloc(1, sizeof *s);
  ASSERT(s);
  s->c = new_cache("stress", &k, flags);
  s->ops_per_thread = total_ops / nthreads;
  s->nthreads = nthreads;
  thr_t th[16];
  sthr_t ts[16];
  for (int i = 0; i < nthreads; i++) {
    ts[i].s = s;
    ts[i].id = i + 1;
    ts[i].rnd = test_rand() | 1;
    thr_start(&th[i], stress_thread, &ts[i]);
  }
  for (int i = 0; i < nthreads; i++)
    thr_join(&th[i]);
  /* What is still queued was handed over but never freed. */
  for (obj_t *o; (o = xq_pop(&s->q)) != NULL;) {
    verify(o);
    hy_cache_free(s->c, o);
    atomic_fetch_add(&s->frees, 1);
  }
  ASSERT_EQ(atomic_load(&s->allocs), atomic_load(&s->frees));
  hy_cache_stats_t st = stats_of(s->c);
  ASSERT_EQ(st.allocs, (uint64_t)atomic_load(&s->allocs));
  ASSERT_EQ(st.frees, (uint64_t)atomic_load(&s->frees));
  ASSERT_EQ(st.live, 0);
  stats_consistent(&st);
  /* The threads are gone: their magazines went to the depot, so a reap
   * gives back every slab. */
  hy_cache_reap(s->c);
  st = stats_of(s->c);
  if (!(flags & HY_CACHE_DIRECT))
    ASSERT_EQ(st.slabs, 0);
  ASSERT_EQ(st.bytes_held, 0);
  ASSERT_EQ(atomic_load(&k.dtor), atomic_load(&k.ctor));
  ASSERT_EQ(hy_cache_destroy(s->c), 0);
  free(s);
}

/* Ten million operations in every build: about 1 s in debug, under a
 * minute under TSan. */
#define STRESS_OPS 10000000L

TEST_IMPL(alloc_stress_two_threads) {
  run_stress(2, STRESS_OPS, 0);
  return 0;
}

TEST_IMPL(alloc_stress_many_threads) {
  run_stress(8, STRESS_OPS / 2, 0);
  run_stress(8, STRESS_OPS / 10, HY_CACHE_DIRECT);
  run_stress(4, STRESS_OPS / 20, HY_CACHE_NOMAG);
  return 0;
}

/* Many threads go to the depot at once: magazines grow. */
typedef struct contend {
  hy_cache_t *c;
  atomic_int stop;
} contend_t;

static void *contend_thread(void *arg) {
  contend_t *k = arg;
  /* Far more than two magazines hold: most trips go to the depot. */
  enum { BURST = 3000 };
  void **v = malloc(BURST * sizeof *v);
  ASSERT(v);
  while (!atomic_load(&k->stop)) {
    for (int i = 0; i < BURST; i++)
      ASSERT((v[i] = hy_cache_alloc(k->c)) != NULL);
    for (int i = 0; i < BURST; i++)
      hy_cache_free(k->c, v[i]);
  }
  free(v);
  return NULL;
}

TEST_IMPL(alloc_depot_contention) {
  contend_t k;
  atomic_init(&k.stop, 0);
  ASSERT_OK(hy_cache_create("contended", 64, 0, NULL, NULL, NULL, 0, &k.c));
  uint64_t first = stats_of(k.c).mag_size;
  thr_t th[8];
  for (int i = 0; i < 8; i++)
    thr_start(&th[i], contend_thread, &k);
  /* Contention comes fast on Linux, slowly under Wine: a generous bound. */
  int64_t until = proc_now_ms() + 120000;
  hy_cache_stats_t s;
  do {
    proc_sleep_ms(20);
    s = stats_of(k.c);
  } while (s.mag_size == first && proc_now_ms() < until);
  atomic_store(&k.stop, 1);
  for (int i = 0; i < 8; i++)
    thr_join(&th[i]);
  s = stats_of(k.c);
  ASSERT_GT(s.depot_contended, 0);
  ASSERT_GT(s.mag_size, first);
  ASSERT_GT(s.depot_gets, 0);
  ASSERT_GT(s.depot_puts, 0);
  ASSERT_EQ(s.live, 0);
  stats_consistent(&s);
  ASSERT_EQ(hy_cache_destroy(k.c), 0);
  return 0;
}

/* Idle trimming: magazines that sat in the depot through a whole period
 * go back; those used during it stay. */
static void idle_fill(hy_cache_t *c, void **v, int n) {
  for (int i = 0; i < n; i++)
    ASSERT((v[i] = hy_cache_alloc(c)) != NULL);
  for (int i = 0; i < n; i++)
    hy_cache_free(c, v[i]);
  hy_cache_thread_flush(); /* this thread's magazines to the depot too */
}

static void idle_wait(int64_t since, int ms) {
  while (proc_now_ms() < since + ms)
    proc_sleep_ms(5);
}

TEST_IMPL(alloc_depot_idle_trim) {
  enum { PERIOD = 200, N = 40000, USED = 3 * 128 };
  uint64_t used_mags; /* magazines USED objects fill */
  void **v = malloc(N * sizeof *v);
  ASSERT(v);
  counts_t k = {0};
  hy_cache_t *c = new_cache("idle", &k, 0);
  idle_fill(c, v, N); /* within the default period: nothing goes */
  hy_cache_stats_t s = stats_of(c);
  uint64_t f0 = s.depot_full, held0 = s.bytes_held;
  used_mags = (USED + s.mag_size - 1) / s.mag_size;
  ASSERT_GT(f0, 10);
  ASSERT_EQ(s.depot_trims, 0);
  ASSERT_EQ(hy_cache_set_idle_ms(NULL, 1), HY_EINVAL);
  int64_t t1 = proc_now_ms();
  ASSERT_OK(hy_cache_set_idle_ms(c, PERIOD)); /* a period starts */
  /* Never early: within the period nothing goes. */
  hy_cache_trim_idle(c);
  s = stats_of(c);
  if (proc_now_ms() - t1 < PERIOD) {
    ASSERT_EQ(s.depot_trims, 0);
    ASSERT_EQ(s.depot_full, f0);
  }
  /* A few magazines are used during the period; the rest sit. */
  idle_fill(c, v, USED);
  idle_wait(t1, PERIOD + 20);
  ASSERT_GT(hy_cache_trim_idle(c), 0); /* slabs went back */
  s = stats_of(c);
  ASSERT_GE(s.depot_trims, 1);
  ASSERT_GE(s.depot_trimmed, f0 - used_mags - 1);
  ASSERT_GE(s.depot_full, 1); /* the used ones stay */
  ASSERT_LE(s.depot_full, used_mags + 1);
  ASSERT_LT(s.bytes_held, held0);
  ASSERT_GT(atomic_load(&k.dtor), 0);
  ASSERT_EQ(s.live, 0);
  stats_consistent(&s);
  /* Another period with no use: the rest go too. */
  int64_t t2 = proc_now_ms();
  idle_wait(t2, PERIOD + 20);
  hy_cache_trim_idle(c);
  s = stats_of(c);
  ASSERT_EQ(s.depot_full, 0);
  ASSERT_EQ(s.depot_empty, 0);
  /* The cache still works; everything is accounted for. */
  for (int i = 0; i < 1000; i++)
    ASSERT((v[i] = hy_cache_alloc(c)) != NULL);
  for (int i = 0; i < 1000; i++)
    hy_cache_free(c, v[i]);
  ASSERT_EQ(hy_cache_destroy(c), 0);
  ASSERT_EQ(atomic_load(&k.dtor), atomic_load(&k.ctor));

  /* With trimming off nothing goes, however long it sits. */
  c = new_cache("idle-off", &k, 0);
  ASSERT_OK(hy_cache_set_idle_ms(c, 0));
  idle_fill(c, v, N / 4);
  f0 = stats_of(c).depot_full;
  hy_cache_trim_idle(c);
  s = stats_of(c);
  ASSERT_EQ(s.depot_trims, 0);
  ASSERT_EQ(s.depot_full, f0);
  ASSERT_EQ(hy_cache_destroy(c), 0);
  free(v);
  return 0;
}

/* The depot ticks by itself as it is used: a busy cache needs no caller. */
TEST_IMPL(alloc_depot_idle_trim_auto) {
  enum { PERIOD = 100, N = 20000, BURST = 3 * 128 };
  void **v = malloc(N * sizeof *v);
  ASSERT(v);
  counts_t k = {0};
  hy_cache_t *c = new_cache("idle-auto", &k, 0);
  ASSERT_OK(hy_cache_set_idle_ms(c, PERIOD));
  idle_fill(c, v, N);
  uint64_t f0 = stats_of(c).depot_full;
  ASSERT_GT(f0, 10);
  /* Bursts that go to the depot, until two ticks have passed (the first
   * sets the marks); generous bounds, no timing asserted. */
  int64_t until = proc_now_ms() + 60000;
  hy_cache_stats_t s;
  do {
    proc_sleep_ms(10);
    idle_fill(c, v, BURST);
    s = stats_of(c);
  } while (s.depot_trimmed == 0 && proc_now_ms() < until);
  ASSERT_GE(s.depot_trims, 2);
  ASSERT_GT(s.depot_trimmed, 0);
  ASSERT_LT(s.depot_full, f0);
  ASSERT_EQ(s.live, 0);
  stats_consistent(&s);
  ASSERT_EQ(hy_cache_destroy(c), 0);
  ASSERT_EQ(atomic_load(&k.dtor), atomic_load(&k.ctor));
  free(v);
  return 0;
}

/* A cache is destroyed (its magazines drained from every thread) while a
 * thread that used it grows its table, moving its slots: the destroy
 * must see the slot where it is, never a table already freed. */
typedef struct grower {
  hy_cache_t *x[48];
  atomic_int used, stop;
} grower_t;

static void *grow_thread(void *arg) {
  grower_t *g = arg;
  for (int i = 0; i < 48; i++) {
    void *p = hy_cache_alloc(g->x[i]);
    ASSERT(p);
    hy_cache_free(g->x[i], p);
  }
  atomic_store(&g->used, 1);
  /* New caches make the table grow again and again (a destroyed cache's
   * entry stays until the next growth drops it). */
  for (int j = 0; j < 400 && !atomic_load(&g->stop); j++) {
    hy_cache_t *y;
    ASSERT_OK(hy_cache_create("grow-y", 32, 0, NULL, NULL, NULL, 0, &y));
    void *p = hy_cache_alloc(y);
    ASSERT(p);
    hy_cache_free(y, p);
    ASSERT_EQ(hy_cache_destroy(y), 0);
  }
  return NULL;
}

TEST_IMPL(alloc_destroy_while_table_grows) {
  for (int round = 0; round < 10; round++) {
    grower_t g;
    atomic_init(&g.used, 0);
    atomic_init(&g.stop, 0);
    for (int i = 0; i < 48; i++)
      ASSERT_OK(hy_cache_create("grow-x", 64, 0, NULL, NULL, NULL, 0, &g.x[i]));
    thr_t t;
    thr_start(&t, grow_thread, &g);
    while (!atomic_load(&g.used))
      thr_yield();
    for (int i = 0; i < 48; i++) {
      if (test_rand() % 4 == 0)
        thr_yield();
      ASSERT_EQ(hy_cache_destroy(g.x[i]), 0); /* exact: nothing leaked */
    }
    atomic_store(&g.stop, 1);
    thr_join(&t);
  }
  return 0;
}

/* A thread that ends gives its magazines to the depot. */
typedef struct exiter {
  hy_cache_t *c;
  void *v[200];
} exiter_t;

static void *exit_thread(void *arg) {
  exiter_t *e = arg;
  for (int i = 0; i < 200; i++)
    ASSERT((e->v[i] = hy_cache_alloc(e->c)) != NULL);
  for (int i = 0; i < 200; i++)
    hy_cache_free(e->c, e->v[i]);
  return NULL; /* its magazines hold objects as it ends */
}

TEST_IMPL(alloc_thread_exit_flushes) {
  counts_t k = {0};
  exiter_t e;
  e.c = new_cache("exiting", &k, 0);
  thr_t t;
  thr_start(&t, exit_thread, &e);
  thr_join(&t);
  hy_cache_stats_t s = stats_of(e.c);
  ASSERT_EQ(s.live, 0);
  ASSERT_GT(s.depot_full, 0); /* the thread's objects are in the depot */
  /* This thread gets them from there: no new construction. */
  int built = atomic_load(&k.ctor);
  ASSERT_GE(built, 200);
  void *v[200];
  for (int i = 0; i < 200; i++)
    ASSERT((v[i] = hy_cache_alloc(e.c)) != NULL);
  ASSERT_EQ(atomic_load(&k.ctor), built);
  ASSERT_GT(stats_of(e.c).depot_gets, 0);
  for (int i = 0; i < 200; i++)
    hy_cache_free(e.c, v[i]);
  /* hy_cache_thread_flush does the same for a live thread. */
  hy_cache_thread_flush();
  s = stats_of(e.c);
  ASSERT_GT(s.depot_full, 0);
  hy_cache_reap(e.c);
  s = stats_of(e.c);
  ASSERT_EQ(s.slabs, 0);
  ASSERT_EQ(atomic_load(&k.dtor), built);
  ASSERT_EQ(hy_cache_destroy(e.c), 0);
  return 0;
}

/* Caches come and go while threads hold magazines of them. */
static void *many_caches_thread(void *arg) {
  hy_cache_t **cs = arg;
  for (int round = 0; round < 50; round++)
    for (int i = 0; i < 40; i++) {
      void *p = hy_cache_alloc(cs[i]);
      ASSERT(p);
      hy_cache_free(cs[i], p);
    }
  return NULL;
}

TEST_IMPL(alloc_many_caches) {
  for (int gen = 0; gen < 30; gen++) {
    hy_cache_t *cs[40];
    for (int i = 0; i < 40; i++)
      ASSERT_OK(hy_cache_create("many", 16 + (size_t)i * 8, 0, NULL, NULL,
                                NULL, 0, &cs[i]));
    thr_t t;
    thr_start(&t, many_caches_thread, cs);
    many_caches_thread(cs);
    thr_join(&t);
    /* Destroyed while this thread still has magazines of them. */
    for (int i = 0; i < 40; i++)
      ASSERT_EQ(hy_cache_destroy(cs[i]), 0);
  }
  return 0;
}

/* ------------------------------------------------------ debug mode */

TEST_IMPL(alloc_debug_double_free) {
  if (is_child()) {
    hy_cache_t *c;
    ASSERT_OK(hy_cache_create("dbl-cache", 48, 0, NULL, NULL, NULL,
                              HY_CACHE_DEBUG, &c));
    void *p = hy_cache_alloc(c);
    hy_cache_free(c, p);
    hy_cache_free(c, p);
    printf("not detected\n");
    return 0;
  }
  char out[4096];
  int code = run_child("alloc_debug_double_free", out, sizeof out);
  ASSERT_NE(code, 0);
  ASSERT(strstr(out, "cache 'dbl-cache': double free") != NULL);
  ASSERT(strstr(out, "not detected") == NULL);
  return 0;
}

TEST_IMPL(alloc_debug_foreign_free) {
  if (is_child()) {
    hy_cache_t *a, *b;
    ASSERT_OK(hy_cache_create("cache-a", 48, 0, NULL, NULL, NULL,
                              HY_CACHE_DEBUG, &a));
    ASSERT_OK(hy_cache_create("cache-b", 48, 0, NULL, NULL, NULL,
                              HY_CACHE_DEBUG, &b));
    void *p = hy_cache_alloc(a);
    hy_cache_free(b, p);
    printf("not detected\n");
    return 0;
  }
  char out[4096];
  int code = run_child("alloc_debug_foreign_free", out, sizeof out);
  ASSERT_NE(code, 0);
  ASSERT(strstr(out, "cache 'cache-b': free of an object of cache 'cache-a'") != NULL);
  return 0;
}

TEST_IMPL(alloc_debug_redzone) {
  if (is_child()) {
    hy_cache_t *c;
    ASSERT_OK(hy_cache_create("rz-cache", 40, 0, NULL, NULL, NULL,
                              HY_CACHE_DEBUG, &c));
    char *p = hy_cache_alloc(c);
    memset(p, 1, 41); /* one byte too many */
    hy_cache_free(c, p);
    printf("not detected\n");
    return 0;
  }
#ifdef HY_ASAN
  RETURN_SKIP("ASan does not see cache red zones as heap overflows");
#endif
  char out[4096];
  int code = run_child("alloc_debug_redzone", out, sizeof out);
  ASSERT_NE(code, 0);
  ASSERT(strstr(out, "cache 'rz-cache': red zone") != NULL);
  return 0;
}

TEST_IMPL(alloc_debug_write_after_free) {
  if (is_child()) {
    hy_cache_t *c;
    ASSERT_OK(hy_cache_create("uaf-cache", 64, 0, NULL, NULL, NULL,
                              HY_CACHE_DEBUG | HY_CACHE_NOMAG, &c));
    char *p = hy_cache_alloc(c);
    hy_cache_free(c, p);
    p[10] = 7; /* a write after free */
    void *q = hy_cache_alloc(c);
    (void)q;
    printf("not detected\n");
    return 0;
  }
#ifdef HY_ASAN
  RETURN_SKIP("ASan catches the write itself (alloc_asan_use_after_free)");
#endif
  char out[4096];
  int code = run_child("alloc_debug_write_after_free", out, sizeof out);
  ASSERT_NE(code, 0);
  ASSERT(strstr(out, "cache 'uaf-cache': object written after it was freed") != NULL);
  return 0;
}

/* In debug mode, destroy names the cache and the count of leaked objects;
 * in every mode it returns the count. */
TEST_IMPL(alloc_destroy_reports_leaks) {
  if (is_child()) {
    hy_cache_t *c;
    ASSERT_OK(hy_cache_create("leaky", 32, 0, NULL, NULL, NULL,
                              HY_CACHE_DEBUG, &c));
    void *a = hy_cache_alloc(c), *b = hy_cache_alloc(c), *d = hy_cache_alloc(c);
    (void)a;
    (void)b;
    hy_cache_free(c, d);
    printf("destroy returned %d\n", hy_cache_destroy(c));
    return 0;
  }
  counts_t k = {0};
  hy_cache_t *c = new_cache("leaky-quiet", &k, 0);
  void *a = hy_cache_alloc(c);
  (void)a;
  ASSERT_EQ(hy_cache_destroy(c), 1);
  char out[4096];
  int code = run_child("alloc_destroy_reports_leaks", out, sizeof out);
  ASSERT_EQ(code, 0);
  ASSERT(strstr(out, "cache 'leaky' destroyed with 2 live objects") != NULL);
  ASSERT(strstr(out, "destroy returned 2") != NULL);
  return 0;
}

/* A cached free object is poisoned for ASan: touching it is reported. */
TEST_IMPL(alloc_asan_use_after_free) {
#ifndef HY_ASAN
  RETURN_SKIP("an ASan build checks this");
#else
  if (is_child()) {
    hy_cache_t *c;
    ASSERT_OK(hy_cache_create("asan-cache", 64, 0, NULL, NULL, NULL, 0, &c));
    volatile char *p = hy_cache_alloc(c);
    hy_cache_free(c, (void *)p);
    p[3] = 1;
    printf("not detected\n");
    return 0;
  }
  char out[8192];
  int code = run_child("alloc_asan_use_after_free", out, sizeof out);
  ASSERT_NE(code, 0);
  ASSERT(strstr(out, "use-after-poison") != NULL);
  return 0;
#endif
}

/* ------------------------------------------------------ out of memory */

TEST_IMPL(alloc_mem_fail_at) {
  void *a = hy__mem_alloc(10);
  ASSERT(a);
  hy__mem_fail_at(2);
  void *b = hy__mem_alloc(10);
  void *c = hy__mem_alloc(10);
  void *d = hy__mem_alloc(10);
  ASSERT(b != NULL);
  ASSERT(c == NULL); /* the second from the arming */
  ASSERT(d != NULL);
  hy__mem_fail_at(1);
  ASSERT(hy__mem_calloc(2, 8) == NULL);
  hy__mem_fail_at(1);
  ASSERT(hy__mem_aligned(64, 64) == NULL);
  hy__mem_fail_at(1);
  ASSERT(hy__mem_realloc(a, 100) == NULL); /* a is still valid */
  ((char *)a)[9] = 1;
  hy__mem_fail_at(1);
  hy__mem_fail_at(0); /* disarmed */
  ASSERT((b = hy__mem_realloc(b, 20)) != NULL);
  hy__mem_free(a);
  hy__mem_free(b);
  hy__mem_free(d);
  return 0;
}

/* hy__mem_fail_here_at counts the arming thread's allocations only:
 * another thread's allocations neither fail nor use up the countdown. */
static void *alloc_elsewhere(void *arg) {
  void **out = arg;
  for (int i = 0; i < 4; i++)
    out[i] = hy__mem_alloc(10);
  return NULL;
}

TEST_IMPL(alloc_mem_fail_here_at) {
  void *other[4];
  hy__mem_fail_here_at(2);
  thr_t t;
  thr_start(&t, alloc_elsewhere, other);
  thr_join(&t);
  for (int i = 0; i < 4; i++) {
    ASSERT(other[i] != NULL);
    hy__mem_free(other[i]);
  }
  void *a = hy__mem_alloc(10);
  void *b = hy__mem_alloc(10); /* the arming thread's second: fails */
  void *c = hy__mem_alloc(10);
  ASSERT(a != NULL);
  ASSERT(b == NULL);
  ASSERT(c != NULL);
  /* Disarming returns what was left; re-arming for every thread ends the
   * thread's scope. */
  hy__mem_fail_here_at(3);
  ASSERT_EQ(hy__mem_fail_at(1), 3);
  thr_start(&t, alloc_elsewhere, other);
  thr_join(&t);
  ASSERT(other[0] == NULL);
  for (int i = 1; i < 4; i++) {
    ASSERT(other[i] != NULL);
    hy__mem_free(other[i]);
  }
  ASSERT_EQ(hy__mem_fail_at(0), 0);
  /* A run: the 2nd, 3rd and 4th fail, the 5th does not. */
  hy__mem_fail_here_run(2, 3);
  void *r[5];
  for (int i = 0; i < 5; i++)
    r[i] = hy__mem_alloc(10);
  ASSERT(r[0] && !r[1] && !r[2] && !r[3] && r[4]);
  ASSERT_EQ(hy__mem_fail_at(0), 0);
  hy__mem_free(r[0]);
  hy__mem_free(r[4]);
  hy__mem_free(a);
  hy__mem_free(c);
  return 0;
}

/* One scenario that touches every backing allocation (cache, magazines,
 * thread table, slabs, objects of a direct cache, stacks), run with the
 * nth allocation failing for every n until a run sees no failure.  Each
 * run must fail cleanly (NULL / HY_ENOMEM), stay consistent, and leak
 * nothing (stats; LeakSanitizer in the asan build). */
static int scenario(void) {
  int failed = 0;
  counts_t k = {0};
  hy_cache_t *c = NULL, *d = NULL;
  if (hy_cache_create("oom", sizeof(obj_t), 0, obj_ctor, obj_dtor, &k, 0, &c) < 0)
    return 1;
  if (hy_cache_create("oom-direct", 200, 0, NULL, NULL, NULL, HY_CACHE_DIRECT,
                      &d) < 0) {
    ASSERT_EQ(hy_cache_destroy(c), 0);
    return 1;
  }
  enum { N = 300 };
  obj_t *v[N];
  void *w[N];
  int nv = 0, nw = 0;
  for (int i = 0; i < N; i++) {
    obj_t *o = hy_cache_alloc(c);
    if (o) {
      ASSERT_EQ(o->built, MAGIC_BUILT);
      v[nv++] = o;
    } else {
      failed = 1;
    }
    void *p = hy_cache_alloc(d);
    if (p)
      w[nw++] = p;
    else
      failed = 1;
  }
  for (int i = 0; i < nv; i += 2)
    hy_cache_free(c, v[i]);
  hy_cache_stats_t s = stats_of(c);
  stats_consistent(&s);
  ASSERT_EQ(s.live, (uint64_t)(nv - (nv + 1) / 2));
  hy_cache_reap(c);
  for (int i = 1; i < nv; i += 2)
    hy_cache_free(c, v[i]);
  for (int i = 0; i < nw; i++)
    hy_cache_free(d, w[i]);
  hy_stack_cache_t *sc = NULL;
  if (hy_stack_cache_create(16384, 4, &sc) == 0) {
    hy_stack_t st[6];
    int ns = 0;
    for (int i = 0; i < 6; i++) {
      int rc = hy_stack_alloc(sc, &st[ns]);
      if (rc == 0) {
        ((char *)st[ns].base)[0] = 1;
        ns++;
      } else {
        ASSERT_EQ(rc, HY_ENOMEM);
        failed = 1;
      }
    }
    for (int i = 0; i < ns; i++)
      hy_stack_free(sc, &st[i]);
    hy_stack_cache_destroy(sc);
  } else {
    failed = 1;
  }
  s = stats_of(c);
  ASSERT_EQ(s.live, 0);
  stats_consistent(&s);
  ASSERT_EQ(hy_cache_destroy(c), 0);
  ASSERT_EQ(hy_cache_destroy(d), 0);
  ASSERT_EQ(atomic_load(&k.dtor), atomic_load(&k.ctor));
  return failed;
}

static void *scenario_thread(void *arg) {
  *(int *)arg = scenario();
  return NULL;
}

TEST_IMPL(alloc_enomem_every_step) {
  long n;
  int failures_seen = 0;
  for (n = 1; n < 100000; n++) {
    /* A fresh thread each time, so its table and magazines are made (and
     * can fail) in every run. */
    int failed = 0;
    hy__mem_fail_at(n);
    thr_t t;
    thr_start(&t, scenario_thread, &failed);
    thr_join(&t);
    failures_seen += failed;
    if (hy__mem_fail_at(0) > 0) /* the nth allocation never came: done */
      break;
  }
  /* The scenario has many steps that can fail; some failures are absorbed
   * (a missing magazine sends objects to the slabs), others are seen. */
  ASSERT_GT(n, 20);
  ASSERT_GT(failures_seen, 5);
  ASSERT_LT(n, 100000);
  return 0;
}

/* --------------------------------------------------------- stacks */

TEST_IMPL(alloc_stack_reuse_and_trim) {
  hy_stack_cache_t *sc;
  ASSERT_OK(hy_stack_cache_create(10000, 3, &sc));
  size_t pg = hy_page_size();
  hy_stack_t a, b;
  ASSERT_OK(hy_stack_alloc(sc, &a));
  ASSERT_EQ(a.size % pg, 0);
  ASSERT_GE(a.size, 10000);
  ASSERT_EQ((uintptr_t)a.base % pg, 0);
  memset(a.base, 0x11, a.size); /* all of it is usable */
  hy_stack_free(sc, &a);
  ASSERT_OK(hy_stack_alloc(sc, &b));
  ASSERT(b.base == a.base); /* cached, handed out again */
  hy_stack_free(sc, &b);
  /* Trimming gives the memory back; the stack is still usable. */
  ASSERT_EQ(hy_stack_cache_trim(sc), a.size);
  ASSERT_EQ(hy_stack_cache_trim(sc), 0); /* nothing left to trim */
  ASSERT_OK(hy_stack_alloc(sc, &b));
  ASSERT(b.base == a.base);
#ifdef __linux__
  ASSERT_EQ(((unsigned char *)b.base)[100], 0); /* fresh zero pages */
#endif
  memset(b.base, 0x22, b.size);
  /* Beyond max_cached, stacks go back to the system. */
  hy_stack_t v[6];
  for (int i = 0; i < 6; i++)
    ASSERT_OK(hy_stack_alloc(sc, &v[i]));
  for (int i = 0; i < 6; i++)
    hy_stack_free(sc, &v[i]);
  ASSERT_EQ(hy_stack_cache_trim(sc), 3 * b.size);
  hy_stack_free(sc, &b);
  hy_stack_cache_destroy(sc);
  return 0;
}

TEST_IMPL(alloc_stack_trim_returns_rss) {
#ifndef __linux__
  RETURN_SKIP("RSS is read from /proc");
#else
#ifdef HY_TSAN
  /* madvise gives the pages back, not the sanitizer's shadow of them. */
  RETURN_SKIP("the sanitizer's shadow of trimmed pages stays resident");
#endif
  hy_stack_cache_t *sc;
  ASSERT_OK(hy_stack_cache_create(256 * 1024, 64, &sc));
  hy_stack_t v[64];
  size_t start = rss_bytes();
  for (int i = 0; i < 64; i++) {
    ASSERT_OK(hy_stack_alloc(sc, &v[i]));
    memset(v[i].base, 1, v[i].size);
  }
  for (int i = 0; i < 64; i++)
    hy_stack_free(sc, &v[i]);
  size_t full = rss_bytes();
  ASSERT_GT(full, start + 32 * 256 * 1024);
  ASSERT_EQ(hy_stack_cache_trim(sc), 64 * 256 * 1024);
  size_t after = rss_bytes();
  size_t slack = 8 * 256 * 1024;
#ifdef HY_ASAN
  /* ASan's shadow of the stacks (an eighth of their 16 MiB), faulted in
   * by its checks of the writes above, stays resident (2.2 MiB grown in
   * every run on one host, 0 on another): the pages given back are the
   * stacks' own. */
  slack += 64 * 256 * 1024 / 8;
#endif
  ASSERT_LT(after, start + slack);
  hy_stack_cache_destroy(sc);
  return 0;
#endif
}

/* The child touches the guard below a stack that was freed beyond the
 * cache's bound (its memory given back) and handed out again: the guard
 * must survive that, in both guard modes (HYDRA_STACK_GUARD=mprotect
 * forces the protection fallback). */
static void guard_faults_in_child(const char *mode) {
  char out[8192];
#ifdef _WIN32
  (void)mode;
#else
  if (mode)
    setenv("HYDRA_STACK_GUARD", mode, 1);
  else
    unsetenv("HYDRA_STACK_GUARD");
#endif
  int code = run_child("alloc_stack_guard_faults", out, sizeof out);
  ASSERT_NE(code, 0);
  ASSERT(strstr(out, "stack usable") != NULL);
  ASSERT(strstr(out, "guard missed") == NULL);
}

TEST_IMPL(alloc_stack_guard_faults) {
  if (is_child()) {
    /* Nine stacks into a cache of eight: the ninth free gives back the
     * memory of the coldest two (neighbours: one call over both stacks
     * and the guard between them), which come out again after the warm
     * ones. */
    hy_stack_cache_t *sc;
    ASSERT_OK(hy_stack_cache_create(0, 8, &sc));
    hy_stack_t s[9], again;
    for (int i = 0; i < 9; i++)
      ASSERT_OK(hy_stack_alloc(sc, &s[i]));
    for (int i = 0; i < 9; i++)
      hy_stack_free(sc, &s[i]);
    for (int i = 0; i < 7; i++)
      ASSERT_OK(hy_stack_alloc(sc, &again)); /* the warm ones */
    ASSERT_OK(hy_stack_alloc(sc, &again));
    ASSERT(again.base == s[0].base || again.base == s[1].base);
    volatile char *p = again.base;
    p[0] = 1;
    p[again.size - 1] = 1;
    printf("stack usable\n");
    fflush(stdout);
    p[-1] = 1; /* the guard page below the stack */
    printf("guard missed\n");
    return 0;
  }
  guard_faults_in_child(NULL);
#ifndef _WIN32
  guard_faults_in_child("mprotect");
#endif
  return 0;
}

#ifdef __linux__
static int count_mappings(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  ASSERT(f != NULL);
  int n = 0, c;
  while ((c = fgetc(f)) != EOF)
    n += c == '\n';
  fclose(f);
  return n;
}

/* Whether this kernel has page-table guards (MADV_GUARD_INSTALL). */
static int light_guards(void) {
  size_t pg = hy_page_size();
  void *p = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT(p != MAP_FAILED);
  int ok = madvise(p, pg, 102 /* MADV_GUARD_INSTALL */) == 0;
  munmap(p, 2 * pg);
  return ok;
}

static int mappings_for_stacks(int n) {
  hy_stack_cache_t *sc;
  ASSERT_OK(hy_stack_cache_create(16 * 1024, 0, &sc));
  hy_stack_t *v = calloc((size_t)n, sizeof *v);
  ASSERT(v != NULL);
  int before = count_mappings();
  for (int i = 0; i < n; i++) {
    ASSERT_OK(hy_stack_alloc(sc, &v[i]));
    ((volatile char *)v[i].base)[v[i].size - 1] = 1;
  }
  int added = count_mappings() - before;
  for (int i = 0; i < n; i++)
    hy_stack_free(sc, &v[i]);
  hy_stack_cache_destroy(sc);
  free(v);
  return added;
}
#endif

/* Stacks are carved from shared mappings.  With page-table guards the
 * guards do not split them: the number of stacks is not bounded by
 * vm.max_map_count.  HYDRA_STACK_GUARD=mprotect (or a kernel without the
 * guards) protects each guard page instead, one mapping split per stack. */
TEST_IMPL(alloc_stack_guard_modes) {
#ifndef __linux__
  RETURN_SKIP("mappings are counted from /proc");
#else
  enum { N = 2000 };
  unsetenv("HYDRA_STACK_GUARD");
  int light = mappings_for_stacks(N);
  setenv("HYDRA_STACK_GUARD", "mprotect", 1);
  int heavy = mappings_for_stacks(N);
  unsetenv("HYDRA_STACK_GUARD");
  ASSERT_GE(heavy, N); /* every guard page is a mapping of its own */
  if (light_guards())
    ASSERT_LT(light, N / 10); /* a handful of chunk mappings */
  else
    ASSERT_GE(light, N); /* the fallback, chosen by itself */
  return 0;
#endif
}
