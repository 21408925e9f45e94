/* test-sched-search.c - idle workers that search (spin) before they sleep,
 * and wakes that are skipped while one searches: no wake may be lost.
 *
 * Each round leaves the other workers at a random point of their idle
 * path - still running, searching, between searching and sleeping, asleep
 * - before it makes work that only they can run.  A lost wake shows as a
 * round that does not finish within a generous bound (never a timing
 * assert on how fast it finishes).
 */
#define _GNU_SOURCE
#include <stdatomic.h>

#include "hydra.h"
#include "compat.h"
#include "rt_util.h"
#include "test.h"
#include "runtime/sys.h"

#ifdef HY_TSAN
enum { SCALE = 8 }; /* TSan runs the same rounds ~10x slower */
#else
enum { SCALE = 1 };
#endif

#define LOST_BOUND HY_MS(10000) /* far above any stall of a loaded machine */

/* Busy for about ns without yielding: the worker stays taken. */
static void busy(int64_t ns) {
  hy_time_t until = hy_now() + ns;
  while (hy_now() < until) {
  }
}

/* Per-thread random numbers (test_rand is for the test's own thread),
 * seeded from test_rand so that HYDRA_TEST_SEED replays the run. */
static uint64_t rnd(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static uint64_t seed(void) { return test_rand() | 1; }

/* A random idle gap: none, inside the search window, around its end, or
 * long enough for the idle workers to be asleep. */
static int64_t random_gap(uint64_t *s) {
  switch (rnd(s) % 4) {
  case 0:
    return 0;
  case 1:
    return (int64_t)(rnd(s) % 8000);
  case 2:
    return 8000 + (int64_t)(rnd(s) % 8000);
  default:
    return HY_US(30) + (int64_t)(rnd(s) % HY_US(300));
  }
}

/* ------------------------------------------- work only a thief can run */

typedef struct {
  atomic_int done;
} flag_t;

static void *set_flag(void *p) {
  atomic_store(&((flag_t *)p)->done, 1);
  return NULL;
}

typedef struct {
  hy_runtime_t *rt;
  int rounds;
  int lost; /* rounds whose child no other worker ran */
  uint64_t rng;
} steal_arg;

/* Spawns two children and then holds its worker without yielding until
 * the first has run: only another worker can run it, which must be
 * searching already or be woken by the spawn. */
static void *steal_root(void *p) {
  steal_arg *a = p;
  for (int i = 0; i < a->rounds; i++) {
    int64_t gap = random_gap(&a->rng);
    if (gap > HY_US(30) && rnd(&a->rng) % 2)
      ASSERT_OK(hy_sleep(a->rt, gap)); /* this worker idles too */
    else
      busy(gap);
    /* A spawned task takes this worker's LIFO slot, which only this
     * worker runs; the second spawn moves the first into the queue that
     * thieves take from (and wakes one). */
    flag_t f, g;
    atomic_init(&f.done, 0);
    atomic_init(&g.done, 0);
    hy_task_t c, d;
    ASSERT_OK(hy_task_spawn(a->rt, set_flag, &f, NULL, &c));
    ASSERT_OK(hy_task_spawn(a->rt, set_flag, &g, NULL, &d));
    hy_time_t until = hy_now() + LOST_BOUND;
    while (!atomic_load(&f.done) && hy_now() < until) {
    }
    if (!atomic_load(&f.done)) {
      a->lost++;
      return NULL; /* the child may still run later: f must stay valid */
    }
    ASSERT_OK(hy_task_join(a->rt, c, NULL));
    ASSERT_OK(hy_task_join(a->rt, d, NULL));
    ASSERT_EQ(atomic_load(&g.done), 1);
  }
  return NULL;
}

static int steal_rounds(int workers, int rounds) {
  hy_runtime_t *rt = test_rt_new(workers);
  steal_arg a = {rt, rounds, 0, seed()};
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, steal_root, &a, NULL, &t));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_EQ(a.lost, 0);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

TEST_IMPL(sched_thief_wake_never_lost) {
  steal_rounds(2, 3000 / SCALE);
  steal_rounds(4, 1500 / SCALE);
  return 0;
}

/* --------------------------------------------- wakes from foreign threads */

typedef struct {
  hy_runtime_t *rt;
  int rounds;
  atomic_int ran;
  int timeouts;
  uint64_t rng;
} foreign_arg;

static void *count_run(void *p) {
  atomic_fetch_add(&((foreign_arg *)p)->ran, 1);
  return NULL;
}

/* Spawns from outside the runtime (the injection queue and a wake) and
 * joins with a generous bound, at random gaps, from two threads at once so
 * that one thread's wake is skipped because of the other's. */
static void *foreign_spawner(void *p) {
  foreign_arg *a = p;
  for (int i = 0; i < a->rounds; i++) {
    int64_t gap = random_gap(&a->rng);
    if (gap > HY_US(30))
      hy__sleep_thread_until(hy_now() + gap);
    else
      busy(gap);
    hy_task_t t;
    ASSERT_OK(hy_task_spawn(a->rt, count_run, a, NULL, &t));
    int rc = hy_task_join_until(a->rt, t, hy_now() + LOST_BOUND, NULL);
    if (rc == HY_ETIMEDOUT) {
      a->timeouts++;
      return NULL;
    }
    ASSERT_OK(rc);
  }
  return NULL;
}

TEST_IMPL(sched_foreign_wake_never_lost) {
  for (int workers = 1; workers <= 3; workers++) {
    hy_runtime_t *rt = test_rt_new(workers);
    foreign_arg a[2];
    pthread_t th[2];
    for (int k = 0; k < 2; k++) {
      a[k].rt = rt;
      a[k].rounds = 2000 / SCALE;
      atomic_init(&a[k].ran, 0);
      a[k].timeouts = 0;
      a[k].rng = seed();
      ASSERT_EQ(pthread_create(&th[k], NULL, foreign_spawner, &a[k]), 0);
    }
    for (int k = 0; k < 2; k++) {
      ASSERT_EQ(pthread_join(th[k], NULL), 0);
      ASSERT_EQ(a[k].timeouts, 0);
      ASSERT_EQ(atomic_load(&a[k].ran), a[k].rounds);
    }
    test_rt_close(rt, HY_MS(100));
  }
  return 0;
}

/* ------------------------------------------------ bursts and ping-pong */

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *in, *out;
  int n;
  uint64_t rng;
} relay_arg;

/* Tasks on different workers hand one token around a ring of channels at
 * random paces: each hand-over wakes a task that may have to be stolen by
 * a worker that is searching, about to sleep or asleep. */
static void *relay(void *p) {
  relay_arg *a = p;
  for (int i = 0; i < a->n; i++) {
    intptr_t v;
    ASSERT_OK(hy_chan_recv(a->in, &v));
    if (rnd(&a->rng) % 4 == 0)
      busy(random_gap(&a->rng) % HY_US(20));
    ASSERT_OK(hy_chan_send(a->out, &v));
  }
  return NULL;
}

TEST_IMPL(sched_relay_ring_never_stalls) {
  enum { RING = 4 };
  int n = 5000 / SCALE;
  hy_runtime_t *rt = test_rt_new(3);
  hy_chan_t *ch[RING];
  for (int i = 0; i < RING; i++)
    ASSERT_OK(hy_chan_new(rt, sizeof(intptr_t), 0, &ch[i]));
  relay_arg a[RING];
  hy_task_t t[RING];
  for (int i = 0; i < RING; i++) {
    a[i] = (relay_arg){rt, ch[i], ch[(i + 1) % RING], n, seed()};
    ASSERT_OK(hy_task_spawn(rt, relay, &a[i], NULL, &t[i]));
  }
  intptr_t token = 7;
  ASSERT_OK(hy_chan_send(ch[0], &token));
  for (int i = 0; i < RING - 1; i++)
    ASSERT_OK(hy_task_join_until(rt, t[i], hy_now() + LOST_BOUND, NULL));
  /* The last relay's final send has no taker: take it, then it ends. */
  intptr_t v = 0;
  ASSERT_OK(hy_chan_recv_until(ch[0], &v, hy_now() + LOST_BOUND));
  ASSERT_EQ(v, 7);
  ASSERT_OK(hy_task_join_until(rt, t[RING - 1], hy_now() + LOST_BOUND, NULL));
  for (int i = 0; i < RING; i++)
    hy_chan_release(ch[i]);
  test_rt_close(rt, HY_MS(100));
  return 0;
}
