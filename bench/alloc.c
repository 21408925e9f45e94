/* bench/alloc.c - the slab-allocator family against mimalloc (mi_malloc /
 * mi_free) and glibc (__libc_malloc / __libc_free: plain malloc is
 * mimalloc's in a program linked with it) in the same run.  Prints
 * `workload<TAB>system<TAB>value<TAB>unit` lines for bench/run (group
 * bench/groups/alloc.sh); lower is better everywhere.
 *
 * Systems: hydra (object cache, Hydra's slabs), hydra-direct (object
 * cache with HY_CACHE_DIRECT: magazines straight over mimalloc object by
 * object), mimalloc, glibc; for stacks, mmap (a fresh mmap + guard page +
 * munmap of the same size).
 *
 *   alloc-pair-SIZE          alloc + write a word + free, hot loop: ns/pair
 *   alloc-batch-SIZE[-random] alloc 1,000,000 then free all (LIFO or
 *                            random order): ns per object (alloc + free)
 *   alloc-batch-64-rss-after RSS above the start after the batch is freed
 *                            and given back (reap / mi_collect /
 *                            malloc_trim): MiB, each system in a child
 *   alloc-churn-64           1,024 live, replace the oldest: ns/step
 *   alloc-xthread-64         A allocates, passes through a queue to B who
 *                            frees: ns/object
 *   alloc-task-block         448-byte objects whose set-up (lock, list
 *                            heads, zeroing) a constructor does once for
 *                            the cache and each malloc user does per
 *                            alloc; 256 live, FIFO: ns/op
 *   alloc-stack-64k          stack alloc + free (cached): ns/pair
 *
 * Which slab back end is the default was decided with the hydra and
 * hydra-direct figures of this program; the numbers are in alloc/slab.c.
 * Single-thread workloads are timed in thread CPU time (a busy machine
 * does not count against anyone), the cross-thread one in wall time.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <mimalloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hydra.h"

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);

enum { S_HY, S_HYD, S_MI, S_LIBC, S_N };
static const char *sys_name[S_N] = {"hydra", "hydra-direct", "mimalloc", "glibc"};

#define INLINE static inline __attribute__((always_inline))
#define NOINLINE static __attribute__((noinline))

INLINE void *A(int s, hy_cache_t *c, size_t sz) {
  switch (s) {
  case S_HY:
  case S_HYD:
    return hy_cache_alloc(c);
  case S_MI:
    return mi_malloc(sz);
  default:
    return __libc_malloc(sz);
  }
}

INLINE void F(int s, hy_cache_t *c, void *p) {
  switch (s) {
  case S_HY:
  case S_HYD:
    hy_cache_free(c, p);
    break;
  case S_MI:
    mi_free(p);
    break;
  default:
    __libc_free(p);
  }
}

/* Single-thread workloads are timed in the thread's CPU time, so that a
 * busy machine (other processes taking the cores) does not count; the
 * cross-thread one, whose two threads wait for each other, in wall time. */
static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double wall_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, res = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &res) != 2)
      res = 0;
    fclose(f);
  }
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static void die(const char *what) {
  fprintf(stderr, "bench/alloc: %s\n", what);
  exit(1);
}

static hy_cache_t *cache_for(int s, size_t size) {
  hy_cache_t *c = NULL;
  if (s == S_HY || s == S_HYD) {
    if (hy_cache_create("bench", size, 0, NULL, NULL, NULL,
                        s == S_HYD ? HY_CACHE_DIRECT : 0, &c) != 0)
      die("cache");
  }
  return c;
}

static void cache_done(hy_cache_t *c) {
  if (c && hy_cache_destroy(c) != 0)
    die("leak");
}

#define REPS 5

/* ------------------------------------------------------------ pair */

INLINE double pair_run(int s, hy_cache_t *c, size_t sz, long n) {
  double t0 = now_ns();
  for (long i = 0; i < n; i++) {
    void *p = A(s, c, sz);
    *(volatile long *)p = i;
    F(s, c, p);
  }
  return (now_ns() - t0) / (double)n;
}

NOINLINE double pair_sys(int s, size_t sz, long n) {
  hy_cache_t *c = cache_for(s, sz);
  double best = 1e18, r;
  for (int k = 0; k < REPS; k++) {
    switch (s) {
    case S_HY: r = pair_run(S_HY, c, sz, n); break;
    case S_HYD: r = pair_run(S_HYD, c, sz, n); break;
    case S_MI: r = pair_run(S_MI, c, sz, n); break;
    default: r = pair_run(S_LIBC, c, sz, n); break;
    }
    if (r < best)
      best = r;
  }
  cache_done(c);
  return best;
}

/* ----------------------------------------------------------- batch */

#define BATCH 1000000L

INLINE double batch_run(int s, hy_cache_t *c, size_t sz, void **v,
                        const uint32_t *order) {
  double t0 = now_ns();
  for (long i = 0; i < BATCH; i++) {
    v[i] = A(s, c, sz);
    *(long *)v[i] = i;
  }
  if (order) {
    for (long i = 0; i < BATCH; i++)
      F(s, c, v[order[i]]);
  } else {
    for (long i = BATCH - 1; i >= 0; i--)
      F(s, c, v[i]);
  }
  return (now_ns() - t0) / (double)BATCH;
}

static uint32_t *shuffled(void) {
  uint32_t *o = malloc(BATCH * sizeof *o);
  if (!o)
    die("memory");
  for (uint32_t i = 0; i < BATCH; i++)
    o[i] = i;
  uint64_t x = 88172645463325252ull;
  for (uint32_t i = BATCH - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint32_t j = (uint32_t)(x % (i + 1));
    uint32_t t = o[i];
    o[i] = o[j];
    o[j] = t;
  }
  return o;
}

NOINLINE double batch_sys(int s, size_t sz, const uint32_t *order) {
  void **v = malloc(BATCH * sizeof *v);
  if (!v)
    die("memory");
  hy_cache_t *c = cache_for(s, sz);
  double best = 1e18, r;
  for (int k = 0; k < REPS; k++) {
    switch (s) {
    case S_HY: r = batch_run(S_HY, c, sz, v, order); break;
    case S_HYD: r = batch_run(S_HYD, c, sz, v, order); break;
    case S_MI: r = batch_run(S_MI, c, sz, v, order); break;
    default: r = batch_run(S_LIBC, c, sz, v, order); break;
    }
    if (r < best)
      best = r;
  }
  cache_done(c);
  free(v);
  return best;
}

/* RSS after one batch of 64-byte objects is freed and given back, in a
 * child process of its own so no system sees another's leftovers. */
static double rss_after_sys(int s) {
  int fd[2];
  if (pipe(fd) != 0)
    die("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    void **v = malloc(BATCH * sizeof *v);
    memset(v, 0, BATCH * sizeof *v);
    hy_cache_t *c = cache_for(s, 64);
    if (c) { /* the cache's tables and magazines exist */
      hy_cache_free(c, hy_cache_alloc(c));
      hy_cache_reap(c);
    } else {
      F(s, NULL, A(s, NULL, 64));
    }
    long start = rss_kb();
    switch (s) {
    case S_HY: batch_run(S_HY, c, 64, v, NULL); break;
    case S_HYD: batch_run(S_HYD, c, 64, v, NULL); break;
    case S_MI: batch_run(S_MI, c, 64, v, NULL); break;
    default: batch_run(S_LIBC, c, 64, v, NULL); break;
    }
    if (c)
      hy_cache_reap(c);
    if (s == S_MI || s == S_HYD)
      mi_collect(true);
    if (s == S_LIBC)
      malloc_trim(0);
    double mib = (double)(rss_kb() - start) / 1024.0;
    if (write(fd[1], &mib, sizeof mib) != sizeof mib)
      _exit(1);
    _exit(0);
  }
  close(fd[1]);
  double mib = -1;
  if (read(fd[0], &mib, sizeof mib) != sizeof mib)
    die("rss child");
  close(fd[0]);
  waitpid(pid, NULL, 0);
  return mib < 0 ? 0 : mib;
}

/* ----------------------------------------------------------- churn */

#define LIVE 1024

INLINE double churn_run(int s, hy_cache_t *c, size_t sz, long n) {
  void *ring[LIVE];
  for (int i = 0; i < LIVE; i++)
    ring[i] = A(s, c, sz);
  double t0 = now_ns();
  for (long i = 0; i < n; i++) {
    int k = (int)(i & (LIVE - 1));
    F(s, c, ring[k]);
    ring[k] = A(s, c, sz);
    *(long *)ring[k] = i;
  }
  double r = (now_ns() - t0) / (double)n;
  for (int i = 0; i < LIVE; i++)
    F(s, c, ring[i]);
  return r;
}

NOINLINE double churn_sys(int s, size_t sz, long n) {
  hy_cache_t *c = cache_for(s, sz);
  double best = 1e18, r;
  for (int k = 0; k < REPS; k++) {
    switch (s) {
    case S_HY: r = churn_run(S_HY, c, sz, n); break;
    case S_HYD: r = churn_run(S_HYD, c, sz, n); break;
    case S_MI: r = churn_run(S_MI, c, sz, n); break;
    default: r = churn_run(S_LIBC, c, sz, n); break;
    }
    if (r < best)
      best = r;
  }
  cache_done(c);
  return best;
}

/* ------------------------------------------------------ task block */

#define TB_SIZE 448
#define TB_LIVE 256

typedef struct tblock {
  pthread_mutex_t lock;
  void *next, *prev, *joiners_head, *joiners_tail;
  char rest[TB_SIZE - sizeof(pthread_mutex_t) - 4 * sizeof(void *)];
} tblock;
_Static_assert(sizeof(tblock) == TB_SIZE, "task block size");

static void tb_setup(tblock *t) {
  memset(t, 0, sizeof *t);
  pthread_mutex_init(&t->lock, NULL);
  t->next = t->prev = t;
}

static int tb_ctor(void *p, void *arg) {
  (void)arg;
  tb_setup(p);
  return 0;
}

static void tb_dtor(void *p, void *arg) {
  (void)arg;
  pthread_mutex_destroy(&((tblock *)p)->lock);
}

INLINE double tb_run(int s, hy_cache_t *c, long n) {
  tblock *ring[TB_LIVE];
  for (int i = 0; i < TB_LIVE; i++) {
    ring[i] = A(s, c, TB_SIZE);
    if (s == S_MI || s == S_LIBC)
      tb_setup(ring[i]);
  }
  double t0 = now_ns();
  for (long i = 0; i < n; i++) {
    int k = (int)(i & (TB_LIVE - 1));
    tblock *t = ring[k];
    if (s == S_MI || s == S_LIBC)
      pthread_mutex_destroy(&t->lock);
    F(s, c, t);
    t = A(s, c, TB_SIZE);
    if (s == S_MI || s == S_LIBC)
      tb_setup(t); /* a cache's objects arrive set up */
    pthread_mutex_lock(&t->lock);
    t->rest[0] = (char)i;
    pthread_mutex_unlock(&t->lock);
    ring[k] = t;
  }
  double r = (now_ns() - t0) / (double)n;
  for (int i = 0; i < TB_LIVE; i++) {
    if (s == S_MI || s == S_LIBC)
      pthread_mutex_destroy(&ring[i]->lock);
    F(s, c, ring[i]);
  }
  return r;
}

NOINLINE double tb_sys(int s, long n) {
  hy_cache_t *c = NULL;
  if (s == S_HY || s == S_HYD) {
    if (hy_cache_create("tblock", TB_SIZE, 64, tb_ctor, tb_dtor, NULL,
                        s == S_HYD ? HY_CACHE_DIRECT : 0, &c) != 0)
      die("cache");
  }
  double best = 1e18, r;
  for (int k = 0; k < REPS; k++) {
    switch (s) {
    case S_HY: r = tb_run(S_HY, c, n); break;
    case S_HYD: r = tb_run(S_HYD, c, n); break;
    case S_MI: r = tb_run(S_MI, c, n); break;
    default: r = tb_run(S_LIBC, c, n); break;
    }
    if (r < best)
      best = r;
  }
  cache_done(c);
  return best;
}

/* ---------------------------------------------------- cross-thread */

#define QN 4096

typedef struct spsc {
  _Alignas(64) _Atomic unsigned long head;
  _Alignas(64) _Atomic unsigned long tail;
  _Alignas(64) void *v[QN];
} spsc;

typedef struct xarg {
  spsc *q;
  int s;
  hy_cache_t *c;
  long n;
} xarg;

static void q_push(spsc *q, void *p) {
  unsigned long t = atomic_load_explicit(&q->tail, memory_order_relaxed);
  for (int spin = 0;
       t - atomic_load_explicit(&q->head, memory_order_acquire) >= QN; spin++)
    if (spin > 64)
      sched_yield(); /* the machine may have fewer free cores than threads */
  q->v[t % QN] = p;
  atomic_store_explicit(&q->tail, t + 1, memory_order_release);
}

static void *q_pop(spsc *q) {
  unsigned long h = atomic_load_explicit(&q->head, memory_order_relaxed);
  for (int spin = 0; atomic_load_explicit(&q->tail, memory_order_acquire) == h;
       spin++)
    if (spin > 64)
      sched_yield();
  void *p = q->v[h % QN];
  atomic_store_explicit(&q->head, h + 1, memory_order_release);
  return p;
}

INLINE void consume(int s, xarg *a) {
  for (long i = 0; i < a->n; i++) {
    long *p = q_pop(a->q);
    if (*p != i)
      die("xthread: wrong object");
    if (s >= 0)
      F(s, a->c, p);
  }
}

static void *consumer(void *arg) {
  xarg *a = arg;
  switch (a->s) {
  case S_HY: consume(S_HY, a); break;
  case S_HYD: consume(S_HYD, a); break;
  case S_MI: consume(S_MI, a); break;
  case S_LIBC: consume(S_LIBC, a); break;
  default: consume(-1, a); break;
  }
  return NULL;
}

INLINE void produce(int s, xarg *a, long *fixed) {
  for (long i = 0; i < a->n; i++) {
    long *p = s >= 0 ? A(s, a->c, 64) : &fixed[(i % (2 * QN)) * 8];
    *p = i;
    q_push(a->q, p);
  }
}

/* s = -1: the queue alone, with no allocation. */
NOINLINE double xthread_sys(int s, long n) {
  spsc *q = aligned_alloc(64, sizeof *q);
  long *fixed = calloc(2 * QN, sizeof(long) * 8);
  if (!q || !fixed)
    die("memory");
  double best = 1e18;
  hy_cache_t *c = s >= 0 ? cache_for(s, 64) : NULL;
  for (int k = 0; k < REPS; k++) {
    atomic_init(&q->head, 0);
    atomic_init(&q->tail, 0);
    xarg a = {q, s, c, n};
    pthread_t th;
    double t0 = wall_ns();
    pthread_create(&th, NULL, consumer, &a);
    switch (s) {
    case S_HY: produce(S_HY, &a, fixed); break;
    case S_HYD: produce(S_HYD, &a, fixed); break;
    case S_MI: produce(S_MI, &a, fixed); break;
    case S_LIBC: produce(S_LIBC, &a, fixed); break;
    default: produce(-1, &a, fixed); break;
    }
    pthread_join(th, NULL);
    double r = (wall_ns() - t0) / (double)n;
    if (r < best)
      best = r;
  }
  cache_done(c);
  free(fixed);
  free(q);
  return best;
}

/* ----------------------------------------------------------- stacks */

NOINLINE double stack_hydra(long n) {
  hy_stack_cache_t *sc;
  if (hy_stack_cache_create(64 * 1024, 0, &sc) != 0)
    die("stack cache");
  hy_stack_t s;
  double best = 1e18;
  for (int k = 0; k < REPS; k++) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
      if (hy_stack_alloc(sc, &s) != 0)
        die("stack");
      ((volatile char *)s.base)[s.size - 1] = 1;
      hy_stack_free(sc, &s);
    }
    double r = (now_ns() - t0) / (double)n;
    if (r < best)
      best = r;
  }
  hy_stack_cache_destroy(sc);
  return best;
}

NOINLINE double stack_mmap(long n) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE), sz = 64 * 1024;
  double best = 1e18;
  for (int k = 0; k < REPS; k++) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
      char *p = mmap(NULL, sz + pg, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED || mprotect(p, pg, PROT_NONE) != 0)
        die("mmap");
      ((volatile char *)p)[pg + sz - 1] = 1;
      munmap(p, sz + pg);
    }
    double r = (now_ns() - t0) / (double)n;
    if (r < best)
      best = r;
  }
  return best;
}

/* ------------------------------------------------------------- main */

static int want(int argc, char **argv, const char *w) {
  if (argc < 2)
    return 1;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "all") == 0 || strncmp(w, argv[i], strlen(argv[i])) == 0)
      return 1;
  return 0;
}

/* HYDRA_BENCH_SYSTEMS=hydra,mimalloc runs only those systems. */
static int sys_on(int s) {
  const char *e = getenv("HYDRA_BENCH_SYSTEMS");
  if (!e || !*e)
    return 1;
  size_t n = strlen(sys_name[s]);
  for (const char *p = e; (p = strstr(p, sys_name[s])) != NULL; p += n)
    if ((p == e || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
      return 1;
  return 0;
}

static void line(const char *w, int s, double v, const char *unit) {
  printf("%s\t%s\t%.2f\t%s\n", w, sys_name[s], v, unit);
  fflush(stdout);
}

int main(int argc, char **argv) {
  long pairs = 10000000, steps = 10000000;
  size_t sizes[2] = {64, 256};
  for (int z = 0; z < 2; z++) {
    char w[64];
    snprintf(w, sizeof w, "alloc-pair-%zu", sizes[z]);
    if (want(argc, argv, w))
      for (int s = 0; s < S_N; s++)
        if (sys_on(s))
          line(w, s, pair_sys(s, sizes[z], pairs), "ns/pair");
  }
  uint32_t *order = shuffled();
  for (int z = 0; z < 2; z++)
    for (int rnd = 0; rnd < 2; rnd++) {
      char w[64];
      snprintf(w, sizeof w, "alloc-batch-%zu%s", sizes[z], rnd ? "-random" : "");
      if (want(argc, argv, w))
        for (int s = 0; s < S_N; s++)
          if (sys_on(s))
            line(w, s, batch_sys(s, sizes[z], rnd ? order : NULL), "ns/op");
    }
  free(order);
  if (want(argc, argv, "alloc-batch-64-rss-after"))
    for (int s = 0; s < S_N; s++)
      if (sys_on(s))
        line("alloc-batch-64-rss-after", s, rss_after_sys(s), "MiB");
  if (want(argc, argv, "alloc-churn-64"))
    for (int s = 0; s < S_N; s++)
      if (sys_on(s))
        line("alloc-churn-64", s, churn_sys(s, 64, steps), "ns/step");
  if (want(argc, argv, "alloc-task-block"))
    for (int s = 0; s < S_N; s++)
      if (sys_on(s))
        line("alloc-task-block", s, tb_sys(s, steps), "ns/op");
  if (want(argc, argv, "alloc-xthread-64")) {
    long n = 2000000;
    printf("# alloc-xthread-64: the queue alone %.1f ns/object\n",
           xthread_sys(-1, n));
    for (int s = 0; s < S_N; s++)
      if (sys_on(s))
        line("alloc-xthread-64", s, xthread_sys(s, n), "ns/object");
  }
  if (want(argc, argv, "alloc-stack-64k")) {
    printf("alloc-stack-64k\thydra\t%.2f\tns/pair\n", stack_hydra(1000000));
    printf("alloc-stack-64k\tmmap\t%.2f\tns/pair\n", stack_mmap(20000));
  }
  return 0;
}
