/* test-runtime.c - tasks, scheduler, timers, embedding, blocking pool. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>

#include "hydra.h"
#include "compat.h"
#include "rt_util.h"
#include "test.h"
#include "alloc/mem.h"
#ifdef __linux__
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#endif

static void *ret_arg(void *arg) { return arg; }

TEST_IMPL(rt_spawn_join) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_task_t t[100];
  for (intptr_t i = 0; i < 100; i++)
    ASSERT_OK(hy_task_spawn(rt, ret_arg, (void *)i, NULL, &t[i]));
  for (intptr_t i = 0; i < 100; i++) {
    void *r = NULL;
    ASSERT_OK(hy_task_join(rt, t[i], &r));
    ASSERT_EQ((intptr_t)r, i);
  }
  /* The handles are stale now. */
  ASSERT_ERR(hy_task_join(rt, t[0], NULL), HY_ESTALE);
  ASSERT_ERR(hy_task_cancel(rt, t[5]), HY_ESTALE);
  hy_task_t bogus = {12345678901ULL};
  ASSERT_ERR(hy_task_join(rt, bogus, NULL), HY_ESTALE);
  hy_task_t none = {0};
  ASSERT_ERR(hy_task_detach(rt, none), HY_ESTALE);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ------------------------------------------------------------ yield */

typedef struct {
  hy_runtime_t *rt;
  atomic_int *log;
  atomic_int *pos;
  int id;
} yarg_t;

static void *yielder(void *p) {
  yarg_t *a = p;
  for (int i = 0; i < 5; i++) {
    a->log[atomic_fetch_add(a->pos, 1)] = a->id;
    ASSERT_OK(hy_yield(a->rt));
  }
  return NULL;
}

static void *yield_root(void *p) {
  yarg_t *a = p;
  hy_task_t ta, tb;
  ASSERT_OK(hy_task_spawn(a[0].rt, yielder, &a[0], NULL, &ta));
  ASSERT_OK(hy_task_spawn(a[0].rt, yielder, &a[1], NULL, &tb));
  ASSERT_OK(hy_task_join(a[0].rt, ta, NULL));
  ASSERT_OK(hy_task_join(a[0].rt, tb, NULL));
  return NULL;
}

TEST_IMPL(rt_yield_interleaves) {
  hy_runtime_t *rt = test_rt_new(1);
  atomic_int log[10], pos = 0;
  yarg_t a[2] = {{rt, log, &pos, 1}, {rt, log, &pos, 2}};
  hy_task_t root;
  ASSERT_OK(hy_task_spawn(rt, yield_root, a, NULL, &root));
  ASSERT_OK(hy_task_join(rt, root, NULL));
  ASSERT_EQ(pos, 10);
  /* With one worker, two yielding tasks alternate. */
  int switches = 0;
  for (int i = 1; i < 10; i++)
    switches += log[i] != log[i - 1];
  ASSERT_GE(switches, 7);
  ASSERT_ERR(hy_yield(rt), HY_EINVAL); /* not a task */
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ------------------------------------------------------------ sleep */

typedef struct {
  hy_runtime_t *rt;
  int64_t ns;
  int64_t late;
} sarg_t;

static void *sleeper(void *p) {
  sarg_t *a = p;
  hy_time_t d = hy_deadline_in(a->ns);
  ASSERT_OK(hy_sleep_until(a->rt, d));
  a->late = hy_now() - d;
  return NULL;
}

/* Sleeps are never early, and each one is ended by its own timer: not by
 * some later, unrelated event (that would show as a lateness bound on a quiet
 * machine, which a loaded one cannot keep; here it is checked by cause). */
TEST_IMPL(rt_sleep_never_early) {
  hy_runtime_t *rt = test_rt_new(2);
  enum { N = 200 };
  static sarg_t a[N];
  hy_task_t t[N];
  hy_runtime_stats_t st0 = {.size = sizeof st0}, st1 = {.size = sizeof st1};
  ASSERT_OK(hy_runtime_stats(rt, &st0));
  for (int i = 0; i < N; i++) {
    a[i].rt = rt;
    a[i].ns = HY_MS(1) + (int64_t)(test_rand() % (uint64_t)HY_MS(30));
    ASSERT_OK(hy_task_spawn(rt, sleeper, &a[i], NULL, &t[i]));
  }
  for (int i = 0; i < N; i++) {
    ASSERT_OK(hy_task_join(rt, t[i], NULL));
    ASSERT_GE(a[i].late, 0); /* never early */
  }
  /* No timer fired but the sleepers' (the joins above have no deadline),
   * and none twice: a sleeper whose deadline passed before it parked needs
   * none, so at most N. */
  ASSERT_OK(hy_runtime_stats(rt, &st1));
  ASSERT_LE(st1.timers_fired - st0.timers_fired, (uint64_t)N);
  ASSERT_GT(st1.timers_fired - st0.timers_fired, 0);
  /* One sleeper at a time on the otherwise idle runtime: no other event
   * exists that could end its sleep, so a timer that is armed too late or
   * not at all leaves it asleep and the test times out. */
  for (int i = 0; i < 20; i++) {
    a[0].ns = (int64_t)(test_rand() % (uint64_t)HY_MS(20));
    ASSERT_OK(hy_task_spawn(rt, sleeper, &a[0], NULL, &t[0]));
    ASSERT_OK(hy_task_join(rt, t[0], NULL));
    ASSERT_GE(a[0].late, 0);
  }
  /* A foreign thread sleeps the thread, also never early. */
  hy_time_t d = hy_deadline_in(HY_MS(5));
  ASSERT_OK(hy_sleep_until(rt, d));
  ASSERT_GE(hy_now(), d);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* --------------------------------------------------------- join deadline */

static void *sleep_long(void *p) {
  hy_runtime_t *rt = p;
  int rc = hy_sleep(rt, HY_SEC(30));
  return (void *)(intptr_t)rc;
}

TEST_IMPL(rt_join_deadline_and_cancel) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, sleep_long, rt, NULL, &t));
  hy_time_t d = hy_deadline_in(HY_MS(20));
  ASSERT_ERR(hy_task_join_until(rt, t, d, NULL), HY_ETIMEDOUT);
  ASSERT_GE(hy_now(), d);
  /* Still joinable after a time-out; cancel ends the sleep with ECANCELED. */
  ASSERT_OK(hy_task_cancel(rt, t));
  void *r;
  ASSERT_OK(hy_task_join(rt, t, &r));
  ASSERT_EQ((intptr_t)r, HY_ECANCELED);
  ASSERT_ERR(hy_task_cancel(rt, t), HY_ESTALE);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* Cancellation is sticky and lands at every kind of await. */
static void *cancel_victim(void *p) {
  hy_runtime_t *rt = p;
  int rc1 = hy_sleep(rt, HY_SEC(30));
  int rc2 = hy_sleep(rt, HY_MS(1));
  int rc3 = hy_yield(rt);
  ASSERT_EQ(rc1, HY_ECANCELED);
  ASSERT_EQ(rc2, HY_ECANCELED);
  ASSERT_EQ(rc3, HY_ECANCELED);
  ASSERT(hy_task_cancelled(rt));
  return (void *)1;
}

static void *join_victim(void *p) {
  hy_task_t *other = p;
  (void)other;
  return NULL;
}

typedef struct {
  hy_runtime_t *rt;
  hy_task_t target;
  int rc;
} jarg_t;

static void *joiner(void *p) {
  jarg_t *a = p;
  a->rc = hy_task_join(a->rt, a->target, NULL);
  return NULL;
}

static void *blocker(void *p) {
  void *r = NULL;
  hy_blocking((hy_runtime_t *)p, sleep_long, NULL, &r);
  return r;
}

static void *slow_fn(void *p) {
  (void)p;
  usleep(50000);
  return (void *)7;
}

static void *blocking_cancelled(void *p) {
  hy_runtime_t *rt = p;
  void *r = NULL;
  return (void *)(intptr_t)hy_blocking(rt, slow_fn, NULL, &r);
}

TEST_IMPL(rt_cancel_every_await) {
  hy_runtime_t *rt = test_rt_new(2);
  (void)join_victim;
  (void)blocker;
  hy_task_t v;
  ASSERT_OK(hy_task_spawn(rt, cancel_victim, rt, NULL, &v));
  usleep(10000);
  ASSERT_OK(hy_task_cancel(rt, v));
  void *r;
  ASSERT_OK(hy_task_join(rt, v, &r));
  ASSERT_EQ((intptr_t)r, 1);

  /* A task blocked in join: the join returns ECANCELED, the target lives. */
  hy_task_t target, j;
  ASSERT_OK(hy_task_spawn(rt, sleep_long, rt, NULL, &target));
  jarg_t ja = {rt, target, 0};
  ASSERT_OK(hy_task_spawn(rt, joiner, &ja, NULL, &j));
  usleep(10000);
  ASSERT_OK(hy_task_cancel(rt, j));
  ASSERT_OK(hy_task_join(rt, j, NULL));
  ASSERT_EQ(ja.rc, HY_ECANCELED);
  ASSERT_OK(hy_task_cancel(rt, target));
  ASSERT_OK(hy_task_join(rt, target, &r));
  ASSERT_EQ((intptr_t)r, HY_ECANCELED);

  /* A task in the blocking pool: it leaves at once; the function runs on. */
  hy_task_t b;
  ASSERT_OK(hy_task_spawn(rt, blocking_cancelled, rt, NULL, &b));
  usleep(5000);
  ASSERT_OK(hy_task_cancel(rt, b));
  ASSERT_OK(hy_task_join(rt, b, &r));
  ASSERT_EQ((intptr_t)r, HY_ECANCELED);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ----------------------------------------------------- handles, detach */

static void *self_join(void *p) {
  hy_runtime_t *rt = p;
  return (void *)(intptr_t)hy_task_join(rt, hy_task_self(rt), NULL);
}

TEST_IMPL(rt_handles) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, self_join, rt, NULL, &t));
  void *r;
  ASSERT_OK(hy_task_join(rt, t, &r));
  ASSERT_EQ((intptr_t)r, HY_EDEADLK);
  /* Detach: the handle can no longer be joined, and goes stale. */
  ASSERT_OK(hy_task_spawn(rt, sleep_long, rt, NULL, &t));
  ASSERT_OK(hy_task_detach(rt, t));
  ASSERT_ERR(hy_task_join(rt, t, NULL), HY_EINVAL);
  ASSERT_OK(hy_task_cancel(rt, t));
  for (int i = 0; i < 200 && hy_task_cancel(rt, t) == 0; i++)
    usleep(1000);
  ASSERT_ERR(hy_task_cancel(rt, t), HY_ESTALE);
  ASSERT_EQ(hy_task_self(rt).id, 0);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ------------------------------------------------------ a million tasks */

static void *one(void *p) {
  (void)p;
  return (void *)1;
}

static void *million(void *p) {
  hy_runtime_t *rt = p;
#ifdef HY_TSAN
  /* Under TSan every started task is a TSan fiber (runtime/fiber.c), and a
   * batch of 10,000 exceeds TSan's limit of about 8,128 live threads and
   * fibers; the shadow bookkeeping of each switch also makes a million
   * tasks take a quarter of an hour on a loaded machine.  The races are
   * checked with 20 rounds of 2,000; debug and asan run the full million. */
  enum { BATCH = 2000, ROUNDS = 20 };
#else
  enum { BATCH = 10000, ROUNDS = 100 };
#endif
  static hy_task_t t[BATCH];
  long sum = 0;
  for (int r = 0; r < ROUNDS; r++) {
    for (int i = 0; i < BATCH; i++)
      ASSERT_OK(hy_task_spawn(rt, one, NULL, NULL, &t[i]));
    for (int i = 0; i < BATCH; i++) {
      void *res;
      ASSERT_OK(hy_task_join(rt, t[i], &res));
      sum += (intptr_t)res;
    }
  }
  ASSERT_EQ(sum, (long)BATCH * ROUNDS);
  return NULL;
}

TEST_IMPL(rt_million_tasks) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_task_t root;
  ASSERT_OK(hy_task_spawn(rt, million, rt, NULL, &root));
  ASSERT_OK(hy_task_join(rt, root, NULL));
  hy_runtime_stats_t st = {.size = sizeof st};
  ASSERT_OK(hy_runtime_stats(rt, &st));
  ASSERT_EQ(st.tasks_alive, 0);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* --------------------------------------------------- cross-worker storm */

typedef struct {
  hy_runtime_t *rt;
  atomic_long *count;
  int depth;
} tree_t;

static void *tree(void *p) {
  tree_t *a = p;
  atomic_fetch_add(a->count, 1);
  if (a->depth == 0)
    return NULL;
  tree_t kids[4];
  hy_task_t t[4];
  for (int i = 0; i < 4; i++) {
    kids[i] = *a;
    kids[i].depth = a->depth - 1;
    ASSERT_OK(hy_task_spawn(a->rt, tree, &kids[i], NULL, &t[i]));
  }
  for (int i = 0; i < 4; i++)
    ASSERT_OK(hy_task_join(a->rt, t[i], NULL));
  return NULL;
}

TEST_IMPL(rt_spawn_tree_across_workers) {
  hy_runtime_t *rt = test_rt_new(2);
  atomic_long count = 0;
#ifdef HY_TSAN
  /* Every started task is a TSan fiber (runtime/fiber.c): 21,845 tasks,
   * up to 16,384 leaves alive at once, exceed TSan's limit of about 8,128
   * live threads and fibers.  Depth 6 (5,461 tasks) stays below it; debug
   * and asan run depth 7. */
  enum { DEPTH = 6 };
#else
  enum { DEPTH = 7 };
#endif
  tree_t root = {rt, &count, DEPTH};
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, tree, &root, NULL, &t));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  long want = 0; /* 1 + 4 + ... + 4^DEPTH: 21845 at depth 7 */
  for (int d = 0, n = 1; d <= DEPTH; d++, n *= 4)
    want += n;
  ASSERT_EQ(count, want);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ------------------------------------------------ depth-first spawns */

typedef struct {
  hy_runtime_t *rt;
  atomic_int *live, *max_live;
  atomic_long *count;
  int depth, fan;
} dtree_t;

/* Counts the tasks that started and have not returned: each holds a stack. */
static void *dtree(void *p) {
  dtree_t *a = p;
  int now = atomic_fetch_add(a->live, 1) + 1;
  int m = atomic_load(a->max_live);
  while (now > m && !atomic_compare_exchange_weak(a->max_live, &m, now)) {
  }
  atomic_fetch_add(a->count, 1);
  if (a->depth > 0) {
    dtree_t kids[10];
    hy_task_t t[10];
    for (int i = 0; i < a->fan; i++) {
      kids[i] = *a;
      kids[i].depth = a->depth - 1;
      ASSERT_OK(hy_task_spawn(a->rt, dtree, &kids[i], NULL, &t[i]));
    }
    for (int i = 0; i < a->fan; i++)
      ASSERT_OK(hy_task_join(a->rt, t[i], NULL));
  }
  atomic_fetch_sub(a->live, 1);
  return NULL;
}

/* A spawn tree whose parents join their children runs depth first: the
 * tasks holding a stack at once are about those on a root-to-leaf path per
 * worker, not a whole level (here 1000 parents and 10000 leaves). */
TEST_IMPL(rt_spawn_tree_depth_first) {
#ifdef HY_TSAN
  /* Under TSan each task that runs creates and destroys a fiber of ~790 KB
   * of its own state: one round per worker count (the others run three). */
  enum { ROUNDS = 1 };
#else
  enum { ROUNDS = 3 };
#endif
  for (int workers = 1; workers <= 2; workers++) {
    for (int round = 0; round < ROUNDS; round++) {
      hy_runtime_t *rt = test_rt_new(workers);
      atomic_int live = 0, max_live = 0;
      atomic_long count = 0;
      dtree_t root = {rt, &live, &max_live, &count, 4, 10};
      hy_task_t t;
      ASSERT_OK(hy_task_spawn(rt, dtree, &root, NULL, &t));
      ASSERT_OK(hy_task_join(rt, t, NULL));
      ASSERT_EQ(count, 11111);
      ASSERT_EQ(live, 0);
      fprintf(stderr, "workers %d: at most %d tasks started at once\n",
              workers, (int)max_live);
      /* Breadth first would start all 1111 parents at once. */
      ASSERT_LE(max_live, 100 * workers);
      test_rt_close(rt, HY_MS(100));
    }
  }
  return 0;
}

/* Never-run tasks take turns with tasks that already ran: a yielding task
 * runs between the children a parent spawned, not after all of them. */
typedef struct {
  hy_runtime_t *rt;
  atomic_int stop;
  atomic_long yields;
  atomic_long seen_min, seen_max;
} turn_t;

static void *turn_yielder(void *p) {
  turn_t *a = p;
  while (!atomic_load(&a->stop)) {
    atomic_fetch_add(&a->yields, 1);
    ASSERT_OK(hy_yield(a->rt));
  }
  return NULL;
}

static void *turn_kid(void *p) {
  turn_t *a = p;
  long y = atomic_load(&a->yields);
  if (y < atomic_load(&a->seen_min))
    atomic_store(&a->seen_min, y);
  if (y > atomic_load(&a->seen_max))
    atomic_store(&a->seen_max, y);
  return NULL;
}

static void *turn_root(void *p) {
  turn_t *a = p;
  enum { N = 200 };
  hy_task_t y, kids[N];
  ASSERT_OK(hy_task_spawn(a->rt, turn_yielder, a, NULL, &y));
  while (atomic_load(&a->yields) == 0)
    ASSERT_OK(hy_yield(a->rt)); /* the yielder has run: it is in the FIFO */
  for (int i = 0; i < N; i++)
    ASSERT_OK(hy_task_spawn(a->rt, turn_kid, a, NULL, &kids[i]));
  for (int i = 0; i < N; i++)
    ASSERT_OK(hy_task_join(a->rt, kids[i], NULL));
  atomic_store(&a->stop, 1);
  ASSERT_OK(hy_task_join(a->rt, y, NULL));
  return NULL;
}

TEST_IMPL(rt_new_tasks_take_turns) {
  hy_runtime_t *rt = test_rt_new(1);
  for (int round = 0; round < 3; round++) {
    turn_t a = {.rt = rt, .seen_min = LONG_MAX};
    hy_task_t t;
    ASSERT_OK(hy_task_spawn(rt, turn_root, &a, NULL, &t));
    ASSERT_OK(hy_task_join(rt, t, NULL));
    fprintf(stderr, "kids saw %ld..%ld yields\n", (long)a.seen_min,
            (long)a.seen_max);
    /* About one yield per child: the yielder is not held back until all
     * 200 children ran (nor are the children behind the yielder). */
    ASSERT_GE(a.seen_max - a.seen_min, 100);
  }
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* --------------------------------------------------------- two runtimes */

static void *add_sleep(void *p) {
  hy_runtime_t *rt = ((void **)p)[0];
  atomic_int *n = ((void **)p)[1];
  hy_sleep(rt, HY_MS(1));
  atomic_fetch_add(n, 1);
  return NULL;
}

TEST_IMPL(rt_two_runtimes) {
  hy_runtime_t *a = test_rt_new(1), *b = test_rt_new(2);
  atomic_int na = 0, nb = 0;
  void *pa[2] = {a, &na}, *pb[2] = {b, &nb};
  hy_task_t ta[50], tb[50];
  for (int i = 0; i < 50; i++) {
    ASSERT_OK(hy_task_spawn(a, add_sleep, pa, NULL, &ta[i]));
    ASSERT_OK(hy_task_spawn(b, add_sleep, pb, NULL, &tb[i]));
  }
  for (int i = 0; i < 50; i++) {
    ASSERT_OK(hy_task_join(a, ta[i], NULL));
    ASSERT_OK(hy_task_join(b, tb[i], NULL));
  }
  ASSERT_EQ(na, 50);
  ASSERT_EQ(nb, 50);
  test_rt_close(a, HY_MS(100));
  test_rt_close(b, HY_MS(100));
  return 0;
}

/* A host thread that makes, uses and closes runtimes is never interrupted
 * by them: its blocking calls that a signal would end with EINTR (here
 * epoll_wait, and a recv with a receive timeout) just time out.  (The
 * kernel interrupts every thread listed as a user of an io_uring ring when
 * the ring goes, and lists the thread that made the ring and every thread
 * that submitted to it.) */
#ifdef __linux__
static int interrupted_waits(int ep, int sock) {
  int n = 0;
  for (int k = 0; k < 4; k++) {
    struct epoll_event ev;
    if (epoll_wait(ep, &ev, 1, 5) < 0 && errno == EINTR)
      n++;
    char c;
    if (recv(sock, &c, 1, 0) < 0 && errno == EINTR)
      n++;
  }
  return n;
}
#endif

TEST_IMPL(rt_host_thread_not_interrupted) {
#ifndef __linux__
  RETURN_SKIP("Linux only: EINTR from a ring's end is io_uring's");
#else
  int ep = epoll_create1(EPOLL_CLOEXEC);
  ASSERT(ep >= 0);
  int sv[2];
  ASSERT_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
  struct timeval tv = {0, 5000};
  ASSERT_OK(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
  int during = 0, after = 0;
  for (int i = 0; i < 20; i++) {
    hy_runtime_t *rt = test_rt_new(2);
    atomic_int n = 0;
    void *arg[2] = {rt, &n};
    hy_task_t t[8];
    for (int j = 0; j < 8; j++)
      ASSERT_OK(hy_task_spawn(rt, add_sleep, arg, NULL, &t[j]));
    during += interrupted_waits(ep, sv[0]);
    for (int j = 0; j < 8; j++)
      ASSERT_OK(hy_task_join(rt, t[j], NULL));
    ASSERT_EQ(atomic_load(&n), 8);
    test_rt_close(rt, HY_MS(100));
    after += interrupted_waits(ep, sv[0]);
  }
  close(sv[0]);
  close(sv[1]);
  close(ep);
  if (during || after)
    TEST_FAIL_("the host thread was interrupted (EINTR) %d times while "
               "its runtimes ran and %d times after they closed",
               during, after);
  return 0;
#endif
}

/* ----------------------------------------------------------- embedding */

static void bump(void *p) { atomic_fetch_add((atomic_int *)p, 1); }

static void *foreign_poster(void *p) {
  hy_runtime_t *rt = ((void **)p)[0];
  atomic_int *n = ((void **)p)[1];
  for (int i = 0; i < 1000; i++)
    ASSERT_OK(hy_runtime_post(rt, bump, n));
  return NULL;
}

TEST_IMPL(rt_embedded_run_once) {
  hy_runtime_t *rt = test_rt_new(0);
  ASSERT_EQ(hy_runtime_workers(rt), 0);
  atomic_int n = 0;
  void *p[2] = {rt, &n};
  hy_task_t t[10];
  for (int i = 0; i < 10; i++)
    ASSERT_OK(hy_task_spawn(rt, add_sleep, p, NULL, &t[i]));
  /* Nothing runs until the host calls in. */
  usleep(20000);
  ASSERT_EQ(n, 0);
  hy_time_t end = hy_deadline_in(HY_SEC(5));
  while (n < 10 && hy_now() < end)
    ASSERT_OK(hy_runtime_run_once(rt, HY_MS(2)));
  ASSERT_EQ(n, 10);
  for (int i = 0; i < 10; i++)
    ASSERT_OK(hy_task_join(rt, t[i], NULL)); /* done: no waiting needed */
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(10)));
  ASSERT_ERR(hy_runtime_run_once(rt, 0), HY_ESHUTDOWN);
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

TEST_IMPL(rt_embedded_poll_os_handle) {
  hy_runtime_t *rt = test_rt_new(0);
  intptr_t fd = hy_runtime_os_handle(rt);
  ASSERT_GE(fd, 0);
  atomic_int n = 0;
  void *p[2] = {rt, &n};
  pthread_t th[4];
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(pthread_create(&th[i], NULL, foreign_poster, p), 0);
  hy_time_t end = hy_deadline_in(HY_SEC(10));
  while (n < 4000 && hy_now() < end) {
    int k = compat_wait_handle(fd, 100);
    ASSERT_GE(k, 0);
    ASSERT_GE(hy_runtime_run_once(rt, 0), 0);
  }
  for (int i = 0; i < 4; i++)
    pthread_join(th[i], NULL);
  while (hy_runtime_run_once(rt, 0) > 0)
    ;
  ASSERT_EQ(n, 4000);
  /* Idle: the handle is not readable. */
  ASSERT_EQ(compat_wait_handle(fd, 20), 0);
  /* A task woken from another thread makes it readable. */
  ASSERT_OK(hy_runtime_post(rt, bump, &n));
  ASSERT_EQ(compat_wait_handle(fd, 1000), 1);
  ASSERT_GE(hy_runtime_run_once(rt, 0), 1);
  ASSERT_EQ(n, 4001);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

TEST_IMPL(rt_post_from_threads) {
  hy_runtime_t *rt = test_rt_new(2);
  atomic_int n = 0;
  void *p[2] = {rt, &n};
  pthread_t th[4];
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(pthread_create(&th[i], NULL, foreign_poster, p), 0);
  for (int i = 0; i < 4; i++)
    pthread_join(th[i], NULL);
  hy_time_t end = hy_deadline_in(HY_SEC(10));
  while (n < 4000 && hy_now() < end)
    usleep(1000);
  ASSERT_EQ(n, 4000);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ------------------------------------------------------------ fairness */

/* Fairness, counted in the spinner's own yields rather than in time (a
 * loaded machine stretches time, not the scheduler's decisions): once the
 * sleeper's deadline has passed, the spinner may yield only a bounded
 * number of times before the sleeper runs. */
typedef struct {
  hy_runtime_t *rt;
  hy_time_t deadline;
  atomic_int asleep, woke, stop;
  long spins, late_spins;
} fair_t;

static void *fair_spinner(void *p) {
  fair_t *f = p;
  while (!atomic_load(&f->stop)) {
    hy_yield(f->rt);
    f->spins++;
    /* Counted only once the sleeper has gone to sleep: before that (the
     * spawning thread may be held up past the deadline on a loaded
     * machine) there is no timer that could be late. */
    if (atomic_load(&f->asleep) && !atomic_load(&f->woke) &&
        hy_now() >= f->deadline)
      f->late_spins++;
  }
  return NULL;
}

static void *fair_sleeper(void *p) {
  fair_t *f = p;
  /* One worker: the spinner cannot run between this store and the park. */
  atomic_store(&f->asleep, 1);
  ASSERT_OK(hy_sleep_until(f->rt, f->deadline));
  ASSERT_GE(hy_now(), f->deadline);
  atomic_store(&f->woke, 1);
  return NULL;
}

TEST_IMPL(rt_fairness_spinner_vs_sleeper) {
  hy_runtime_t *rt = test_rt_new(1);
  /* A round in which the spinner hardly ran (the thread was held up for
   * the whole sleep: a loaded machine, a sanitizer) tests nothing: it is
   * run again, up to 20 rounds for 5 that spun. */
  int spun = 0;
  for (int round = 0; round < 20 && spun < 5; round++) {
    fair_t f = {.rt = rt, .deadline = hy_deadline_in(HY_MS(5 + spun * 5))};
    hy_task_t sp, sl;
    ASSERT_OK(hy_task_spawn(rt, fair_spinner, &f, NULL, &sp));
    ASSERT_OK(hy_task_spawn(rt, fair_sleeper, &f, NULL, &sl));
    ASSERT_OK(hy_task_join(rt, sl, NULL));
    atomic_store(&f.stop, 1);
    ASSERT_OK(hy_task_join(rt, sp, NULL));
    fprintf(stderr, "round %d: %ld spins, %ld after the deadline\n", round,
            f.spins, f.late_spins);
    /* Timers are looked at every 61 task runs: a few rounds of that. */
    ASSERT_LE(f.late_spins, 256);
    spun += f.spins > 10;
  }
  ASSERT_EQ(spun, 5);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ------------------------------------------------------------ idle CPU */

static double cpu_seconds(void) { return compat_cpu_seconds(); }

TEST_IMPL(rt_idle_uses_no_cpu) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, sleep_long, rt, NULL, &t)); /* one timer */
  usleep(100000);
  double c0 = cpu_seconds();
  usleep(2000000);
  double used = cpu_seconds() - c0;
  fprintf(stderr, "idle CPU over 2 s: %.4f s\n", used);
  ASSERT(used < 0.05); /* ~0%: no polling while idle */
  ASSERT_OK(hy_task_cancel(rt, t));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* -------------------------------------------------------- stack overflow */

static int recurse(volatile char *prev, int n) {
  volatile char buf[512];
  buf[0] = (char)n;
  buf[511] = prev ? prev[0] : 0;
  return n > 0 ? recurse(buf, n + 1) + buf[511] : 0;
}

static void *overflow(void *p) {
  (void)p;
  return (void *)(intptr_t)recurse(NULL, 1);
}

/* Runs the overflowing task in a child with `assign` in its environment
 * and checks the report. */
static void overflow_reported(const char *assign) {
  char cmd[2048];
  compat_env_cmd(cmd, sizeof cmd, assign, test_exe(),
                 "--run rt_stack_overflow_named 2>&1");
  FILE *f = popen(cmd, "r");
  ASSERT(f);
  char out[8192] = {0};
  size_t n = fread(out, 1, sizeof out - 1, f);
  (void)n;
  int st = pclose(f);
  ASSERT(WIFEXITED(st) ? WEXITSTATUS(st) != 0 : 1);
  ASSERT(strstr(out, "task 'deep-recursion'") != NULL);
  ASSERT(strstr(out, "overflowed its stack") != NULL);
}

TEST_IMPL(rt_stack_overflow_named) {
  if (getenv("HYDRA_TEST_ROLE")) {
    hy_runtime_t *rt = test_rt_new(1);
    hy_task_opts_t o = HY_TASK_OPTS_INIT;
    o.name = "deep-recursion";
    hy_task_t t;
    ASSERT_OK(hy_task_spawn(rt, overflow, NULL, &o, &t));
    hy_task_join(rt, t, NULL);
    return 0; /* not reached */
  }
#ifdef HY_ASAN
  RETURN_SKIP("ASan reports the overflow itself");
#endif
  overflow_reported("HYDRA_TEST_ROLE=child");
#ifndef _WIN32
  /* The guard made by protection, the fallback of older kernels. */
  overflow_reported("HYDRA_TEST_ROLE=child HYDRA_STACK_GUARD=mprotect");
#endif
  return 0;
}

/* ------------------------------------------- timers of a busy worker */

typedef struct {
  hy_runtime_t *rt;
  atomic_int woke;
  hy_time_t deadline;
  int64_t late_ns;
} busy_t;

static void *short_sleeper(void *p) {
  busy_t *b = p;
  b->deadline = hy_deadline_in(HY_MS(20));
  hy_sleep_until(b->rt, b->deadline);
  b->late_ns = hy_now() - b->deadline;
  atomic_store(&b->woke, 1);
  return NULL;
}

/* Spawns the sleeper (it runs next, on this worker, and arms its timer
 * here), then keeps this worker busy without a yield until the sleeper
 * has woken: only the idle worker can fire that timer. */
static void *busy_spinner(void *p) {
  busy_t *b = p;
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(b->rt, short_sleeper, b, NULL, &t));
  ASSERT_OK(hy_yield(b->rt));
  hy_time_t give_up = hy_deadline_in(HY_SEC(20));
  while (!atomic_load(&b->woke) && hy_now() < give_up) {
  }
  ASSERT_EQ(atomic_load(&b->woke), 1);
  ASSERT_OK(hy_task_join(b->rt, t, NULL));
  return NULL;
}

TEST_IMPL(rt_idle_worker_fires_busy_timers) {
  hy_runtime_t *rt = test_rt_new(2);
  for (int round = 0; round < 3; round++) {
    busy_t b = {rt, 0, 0, 0};
    hy_task_t t;
    ASSERT_OK(hy_task_spawn(rt, busy_spinner, &b, NULL, &t));
    ASSERT_OK(hy_task_join(rt, t, NULL));
    ASSERT_GE(b.late_ns, 0); /* never early */
  }
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ----------------------------------------------------- many parked tasks */

typedef struct {
  hy_runtime_t *rt;
  atomic_int started;
} parked_t;

static void *park_until_cancelled(void *p) {
  parked_t *pk = p;
  atomic_fetch_add(&pk->started, 1);
  int rc = hy_sleep(pk->rt, HY_SEC(3600));
  return (void *)(intptr_t)rc;
}

/* 100,000 tasks started (each on its own stack, with its guard page) and
 * parked at once: more than a guard made by protection allows (each costs
 * two kernel mappings, vm.max_map_count is 65530 by default), which
 * page-table guards do not split. */
TEST_IMPL(rt_many_parked_tasks) {
#ifdef __linux__
  {
    size_t pg = hy_page_size();
    void *m = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT(m != MAP_FAILED);
    int light = madvise(m, pg, 102 /* MADV_GUARD_INSTALL */) == 0;
    munmap(m, 2 * pg);
    if (!light)
      RETURN_SKIP("no page-table guards on this kernel (Linux < 6.13)");
  }
#else
  RETURN_SKIP("the mapping limit is Linux's");
#endif
#ifdef HY_TSAN
  enum { N = 4000 }; /* TSan allows about 8,128 fibers at once */
#else
  enum { N = 100000 };
#endif
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = 2;
  o.stack_size = 16 * 1024;
  hy_runtime_t *rt = NULL;
  ASSERT_OK(hy_runtime_new(&o, &rt));
  parked_t pk = {rt, 0};
  hy_task_t *t = calloc(N, sizeof *t);
  ASSERT(t != NULL);
  for (int i = 0; i < N; i++)
    ASSERT_OK(hy_task_spawn(rt, park_until_cancelled, &pk, NULL, &t[i]));
  /* Every one of them runs up to its sleep.  A task that got no stack
   * never starts: the wait is bounded (generously) so that shows. */
  for (int i = 0; i < 12000 && atomic_load(&pk.started) < N; i++)
    usleep(5000);
  ASSERT_EQ(atomic_load(&pk.started), N);
  for (int i = 0; i < N; i++)
    ASSERT_OK(hy_task_cancel(rt, t[i]));
  for (int i = 0; i < N; i++) {
    void *r = NULL;
    ASSERT_OK(hy_task_join(rt, t[i], &r));
    ASSERT_EQ((intptr_t)r, HY_ECANCELED);
  }
  free(t);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ----------------------------------------------------------- task-local */

static atomic_int freed;
static void free_local(void *v) {
  free(v);
  atomic_fetch_add(&freed, 1);
}

static void *use_local(void *p) {
  hy_runtime_t *rt = ((void **)p)[0];
  int key = *(int *)((void **)p)[1];
  ASSERT(hy_task_local_get(rt, key) == NULL);
  int *v = malloc(sizeof *v);
  *v = 42;
  ASSERT_OK(hy_task_local_set(rt, key, v));
  hy_yield(rt);
  ASSERT_EQ(*(int *)hy_task_local_get(rt, key), 42);
  return NULL;
}

TEST_IMPL(rt_task_locals) {
  hy_runtime_t *rt = test_rt_new(2);
  int key;
  ASSERT_OK(hy_task_key_new(rt, free_local, &key));
  void *p[2] = {rt, &key};
  hy_task_t t[8];
  for (int i = 0; i < 8; i++)
    ASSERT_OK(hy_task_spawn(rt, use_local, p, NULL, &t[i]));
  for (int i = 0; i < 8; i++)
    ASSERT_OK(hy_task_join(rt, t[i], NULL));
  ASSERT_EQ(freed, 8);
  ASSERT_ERR(hy_task_local_set(rt, key, NULL), HY_EINVAL); /* not a task */
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* -------------------------------------------------------- blocking pool */

typedef struct {
  hy_runtime_t *rt;
  atomic_int *ticks;
} bp_t;

static void *ticker(void *p) {
  bp_t *b = p;
  for (int i = 0; i < 20; i++) {
    hy_sleep(b->rt, HY_MS(2));
    atomic_fetch_add(b->ticks, 1);
  }
  return NULL;
}

/* Blocks its thread until the worker has ticked five times: it can only
 * return 7 if the worker goes on running tasks meanwhile (a time cap turns
 * a stalled worker into a failure, not a hang). */
static void *wait_for_ticks(void *p) {
  atomic_int *ticks = p;
  for (int i = 0; i < 30000 && atomic_load(ticks) < 5; i++)
    usleep(1000);
  return (void *)(intptr_t)(atomic_load(ticks) >= 5 ? 7 : 0);
}

static void *call_blocking(void *p) {
  bp_t *b = p;
  void *r = NULL;
  ASSERT_OK(hy_blocking(b->rt, wait_for_ticks, b->ticks, &r));
  return r;
}

TEST_IMPL(rt_blocking_pool) {
  hy_runtime_t *rt = test_rt_new(1);
  atomic_int ticks = 0;
  bp_t b = {rt, &ticks};
  hy_task_t tk, bl[4];
  ASSERT_OK(hy_task_spawn(rt, ticker, &b, NULL, &tk));
  for (int i = 0; i < 4; i++)
    ASSERT_OK(hy_task_spawn(rt, call_blocking, &b, NULL, &bl[i]));
  /* Four calls block four helper threads while the one worker ticks. */
  for (int i = 0; i < 4; i++) {
    void *r;
    ASSERT_OK(hy_task_join(rt, bl[i], &r));
    ASSERT_EQ((intptr_t)r, 7);
  }
  ASSERT_OK(hy_task_join(rt, tk, NULL));
  /* From a foreign thread it just calls the function. */
  void *r;
  ASSERT_OK(hy_blocking(rt, slow_fn, NULL, &r));
  ASSERT_EQ((intptr_t)r, 7);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ---------------------------------------------------------- stats, dump */

static void dump_to(void *rt, FILE *f) { hy_runtime_dump(rt, f); }

TEST_IMPL(rt_stats_and_dump) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.name = "napper";
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, sleep_long, rt, &o, &t));
  usleep(20000);
  char buf[4096] = {0};
  compat_capture(dump_to, rt, buf, sizeof buf);
  ASSERT(strstr(buf, "napper") != NULL);
  ASSERT(strstr(buf, "awaiting sleep") != NULL);
  hy_runtime_stats_t st = {.size = sizeof st};
  ASSERT_OK(hy_runtime_stats(rt, &st));
  ASSERT_EQ(st.version, HY_RUNTIME_STATS_VERSION);
  ASSERT_EQ(st.tasks_alive, 1);
  ASSERT_GE(st.switches, 1);
  hy_runtime_stats_t small = {.size = 8};
  ASSERT_ERR(hy_runtime_stats(rt, &small), HY_EINVAL);
  ASSERT_OK(hy_task_cancel(rt, t));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_OK(hy_runtime_stats(rt, &st));
  ASSERT_EQ(st.tasks_spawned, 1);
  ASSERT_EQ(st.tasks_cancelled, 1);
  const char *b = hy_runtime_backend_name(rt);
#ifdef _WIN32
  ASSERT(strcmp(b, "iocp") == 0);
#else
  ASSERT(strcmp(b, "uring") == 0 || strcmp(b, "epoll") == 0);
#endif
  if (test_backend() && strcmp(test_backend(), "auto") != 0)
    ASSERT(strcmp(b, test_backend()) == 0);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* The dump and the shutdown's cancel walk the task table: every task that
 * has not ended is listed (and cancelled) once, wherever its slot lies
 * among the slots of ended tasks (joined, or held by an unjoined handle,
 * or detached), and none of those is listed. */
TEST_IMPL(rt_dump_lists_only_live_tasks) {
  hy_runtime_t *rt = test_rt_new(2);
  enum { N = 40 };
  hy_task_t live[N], held[N];
  char name[32];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < N; i++) {
      hy_task_opts_t o = HY_TASK_OPTS_INIT;
      o.name = name;
      snprintf(name, sizeof name, "ended-%d", i);
      hy_task_t a;
      ASSERT_OK(hy_task_spawn(rt, ret_arg, NULL, &o, &a));
      switch ((i + round) % 3) {
      case 0:
        ASSERT_OK(hy_task_join(rt, a, NULL));
        break;
      case 1:
        ASSERT_OK(hy_task_detach(rt, a));
        break;
      default:
        held[i] = a; /* ends; its handle keeps the block */
        break;
      }
      if (round == 2) {
        snprintf(name, sizeof name, "live-%d", i);
        ASSERT_OK(hy_task_spawn(rt, sleep_long, rt, &o, &live[i]));
      }
    }
    for (int i = 0; i < N; i++)
      if ((i + round) % 3 == 2 && round < 2)
        ASSERT_OK(hy_task_join(rt, held[i], NULL));
  }
  /* Every ended task has left the alive count (bounded wait). */
  hy_runtime_stats_t st = {.size = sizeof st};
  for (int k = 0; k < 5000; k++) {
    ASSERT_OK(hy_runtime_stats(rt, &st));
    if (st.tasks_alive == N)
      break;
    usleep(1000);
  }
  ASSERT_EQ(st.tasks_alive, N);
  static char buf[65536];
  memset(buf, 0, sizeof buf);
  compat_capture(dump_to, rt, buf, sizeof buf);
  ASSERT(strstr(buf, "ended-") == NULL);
  int lines = 0;
  for (const char *p = buf; (p = strstr(p, " live-")) != NULL; p++)
    lines++;
  ASSERT_EQ(lines, N);
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, " live-%d ", i);
    ASSERT(strstr(buf, name) != NULL);
  }
  /* The held handles of the last round still join (their result). */
  for (int i = 0; i < N; i++)
    if ((i + 2) % 3 == 2)
      ASSERT_OK(hy_task_join(rt, held[i], NULL));
  /* The shutdown cancels every sleeper (a missed one would sleep 30 s and
   * hold the close), and their joins say so. */
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(20)));
  for (int i = 0; i < N; i++) {
    void *r = NULL;
    ASSERT_OK(hy_task_join(rt, live[i], &r));
    ASSERT_EQ((int)(intptr_t)r, HY_ECANCELED);
  }
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* The count of live tasks (per-worker spawn and end counts, runtime/task.c)
 * while tasks spawned on one worker end on the other: a thread reading it
 * all along never sees fewer than the one task known to live throughout
 * (nor a negative count), and once everything is joined it is exact. */
typedef struct {
  hy_runtime_t *rt;
  atomic_int stop;
  atomic_long reads, bad;
} alive_t;

static void *alive_leaf(void *p) {
  alive_t *a = p;
  hy_yield(a->rt); /* a chance for the other worker to steal it first */
  return NULL;
}

static void *alive_spawner(void *p) {
  alive_t *a = p;
  hy_time_t end = hy_deadline_in(HY_SEC(2)); /* TSan is slow */
  for (int round = 0; round < 20000 && hy_now() < end; round++) {
    hy_task_t t[8];
    int n = 1 + (int)(test_rand() % 8);
    for (int i = 0; i < n; i++)
      ASSERT_OK(hy_task_spawn(a->rt, alive_leaf, a, NULL, &t[i]));
    for (int i = 0; i < n; i++)
      ASSERT_OK(hy_task_join(a->rt, t[i], NULL));
  }
  return NULL;
}

static void *alive_keeper(void *p) {
  int rc = hy_sleep_until(p, HY_FOREVER); /* until cancelled */
  return (void *)(intptr_t)rc;
}

static void *alive_watcher(void *p) {
  alive_t *a = p;
  while (!atomic_load(&a->stop)) {
    hy_runtime_stats_t st = {.size = sizeof st};
    if (hy_runtime_stats(a->rt, &st) != 0 || (int64_t)st.tasks_alive < 1)
      atomic_fetch_add(&a->bad, 1);
    atomic_fetch_add(&a->reads, 1);
  }
  return NULL;
}

TEST_IMPL(rt_alive_count_across_workers) {
  hy_runtime_t *rt = test_rt_new(2);
  alive_t a = {.rt = rt};
  hy_task_t keeper, sp[2];
  ASSERT_OK(hy_task_spawn(rt, alive_keeper, rt, NULL, &keeper));
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, alive_watcher, &a), 0);
  for (int i = 0; i < 2; i++)
    ASSERT_OK(hy_task_spawn(rt, alive_spawner, &a, NULL, &sp[i]));
  for (int i = 0; i < 2; i++)
    ASSERT_OK(hy_task_join(rt, sp[i], NULL));
  atomic_store(&a.stop, 1);
  pthread_join(th, NULL);
  ASSERT_GE(atomic_load(&a.reads), 1);
  ASSERT_EQ(atomic_load(&a.bad), 0);
  /* Joined tasks are no longer counted, at once. */
  hy_runtime_stats_t st = {.size = sizeof st};
  ASSERT_OK(hy_runtime_stats(rt, &st));
  ASSERT_EQ(st.tasks_alive, 1);
  ASSERT_OK(hy_task_cancel(rt, keeper));
  void *r = NULL;
  ASSERT_OK(hy_task_join(rt, keeper, &r));
  ASSERT_EQ((int)(intptr_t)r, HY_ECANCELED);
  ASSERT_OK(hy_runtime_stats(rt, &st));
  ASSERT_EQ(st.tasks_alive, 0);
  /* Nothing alive: close needs no shutdown first (HY_EBUSY otherwise). */
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

/* ------------------------------------------------------------- options */

TEST_IMPL(rt_options) {
  hy_options_t o = HY_OPTIONS_INIT;
  hy_runtime_t *rt;
  o.size = 3;
  ASSERT_ERR(hy_runtime_new(&o, &rt), HY_EINVAL);
  o = (hy_options_t)HY_OPTIONS_INIT;
  o.workers = -5;
  ASSERT_ERR(hy_runtime_new(&o, &rt), HY_EINVAL);
  ASSERT_OK(hy_runtime_new(NULL, &rt));
  ASSERT_GE(hy_runtime_workers(rt), 1);
  /* close refuses while a task is alive and no shutdown ran */
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, sleep_long, rt, NULL, &t));
  ASSERT_ERR(hy_runtime_close(rt), HY_EBUSY);
  ASSERT_OK(hy_task_detach(rt, t));
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ------------------------------------------------------ timer heap */

#include "runtime/internal.h"

TEST_IMPL(rt_timer_heap_million) {
  enum { N = 1000000 };
  hy__timer *t = calloc(N, sizeof *t);
  ASSERT(t);
  hy__heap h = {0};
  for (int i = 0; i < N; i++) {
    t[i].deadline = (int64_t)(test_rand() % 1000000007u);
    ASSERT_OK(hy__heap_push(&h, &t[i]));
  }
  ASSERT_EQ(h.n, N);
  /* Memory is one pointer per timer (plus doubling slack). */
  ASSERT_LE((size_t)h.cap * sizeof(void *), (size_t)2 * N * sizeof(void *));
  /* Cancel a random half in O(log n) each. */
  int removed = 0;
  for (int i = 0; i < N; i += 2) {
    hy__heap_remove(&h, &t[i]);
    ASSERT_EQ(t[i].idx, -1);
    removed++;
  }
  ASSERT_EQ(h.n, N - removed);
  /* What is left comes out in deadline order. */
  int64_t prev = -1;
  int popped = 0;
  hy__timer *m;
  while ((m = hy__heap_min(&h)) != NULL) {
    ASSERT_GE(m->deadline, prev);
    prev = m->deadline;
    ASSERT(((m - t) & 1) == 1); /* only the odd ones remain */
    hy__heap_remove(&h, m);
    popped++;
  }
  ASSERT_EQ(popped, N - removed);
  hy__heap_free(&h);
  free(t);
  return 0;
}

/* A task whose stack cannot be had never runs, and its joiner is told so:
 * the join returns HY_ENOMEM, never a result the task did not compute. */
/* Recursion that needs about depth * 4 KiB of stack, every frame touched. */
static int deep(int depth) {
  volatile char frame[4096];
  frame[0] = (char)depth;
  frame[sizeof frame - 1] = (char)depth;
  if (depth == 0)
    return frame[0];
  return deep(depth - 1) + frame[sizeof frame - 1] - (char)depth + 1;
}

static void *deep_task(void *p) {
  int depth = (int)(intptr_t)p;
  return (void *)(intptr_t)deep(depth);
}

typedef struct {
  hy_runtime_t *rt;
  size_t size;
  int depth;
} sized_t;

/* Spawns and joins tasks of one size from a task (several of these run at
 * once on two workers: the first use of a size races to make its cache). */
static void *spawn_sized(void *p) {
  sized_t *s = p;
  for (int i = 0; i < 8; i++) {
    hy_task_opts_t o = HY_TASK_OPTS_INIT;
    o.stack_size = s->size;
    hy_task_t t;
    if (hy_task_spawn(s->rt, deep_task, (void *)(intptr_t)s->depth, &o, &t))
      return (void *)1;
    void *r = NULL;
    if (hy_task_join(s->rt, t, &r) || (intptr_t)r != s->depth)
      return (void *)2;
  }
  return NULL;
}

/* hy_task_opts_t.stack_size gives a task that stack: a task that recurses
 * through ~600 KiB runs in a 1 MiB stack where the default 64 KiB would
 * fault on its guard page; sizes are checked, and tasks of several sizes
 * spawned at once from several workers share each size's stacks. */
TEST_IMPL(rt_task_stack_size) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.stack_size = (size_t)1 << 20;
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, deep_task, (void *)(intptr_t)150, &o, &t));
  void *r = NULL;
  ASSERT_OK(hy_task_join(rt, t, &r));
  ASSERT_EQ((intptr_t)r, 150);
  /* Over 256 MiB: refused at spawn. */
  o.stack_size = ((size_t)256 << 20) + 1;
  ASSERT_ERR(hy_task_spawn(rt, deep_task, NULL, &o, &t), HY_EINVAL);
  o.stack_size = (size_t)256 << 20; /* the largest: reserved, barely used */
  ASSERT_OK(hy_task_spawn(rt, deep_task, (void *)(intptr_t)4, &o, &t));
  ASSERT_OK(hy_task_join(rt, t, &r));
  ASSERT_EQ((intptr_t)r, 4);
  /* Small, default-covered and large sizes at once, from tasks. */
  static const struct {
    size_t size;
    int depth;
  } kinds[] = {{16 << 10, 1},  {20 << 10, 2},   {64 << 10, 8},
               {40 << 10, 6},  {128 << 10, 24}, {(size_t)1 << 20, 150},
               {3 << 20, 400}, {128 << 10, 20}};
  enum { N = sizeof kinds / sizeof kinds[0] };
  sized_t s[N];
  hy_task_t sp[N];
  for (int i = 0; i < N; i++) {
    s[i] = (sized_t){rt, kinds[i].size, kinds[i].depth};
    ASSERT_OK(hy_task_spawn(rt, spawn_sized, &s[i], NULL, &sp[i]));
  }
  for (int i = 0; i < N; i++) {
    ASSERT_OK(hy_task_join(rt, sp[i], &r));
    ASSERT(r == NULL);
  }
  test_rt_close(rt, HY_MS(100));
  return 0;
}

static void *never_without_stack(void *p) {
  atomic_fetch_add((atomic_int *)p, 1);
  return (void *)42;
}

TEST_IMPL(rt_no_stack_is_an_error) {
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = 0; /* nothing runs until run_once */
  hy_runtime_t *rt;
  ASSERT_OK(hy_runtime_new(&o, &rt));
  /* A supervisor's view: the exit of a task that never ran says so. */
  hy_recv_opts_t ro = HY_RECV_OPTS_INIT;
  hy_receiver_t *exits;
  ASSERT_OK(hy_subscribe(hy_sys_broker(rt), "sys/task", &ro, &exits));
  atomic_int ran = 0;
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, never_without_stack, &ran, NULL, &t));
  hy__mem_fail_here_at(1); /* the first stack mapping fails */
  hy_runtime_run_once(rt, 0);
  long left = hy__mem_fail_at(0);
  void *r = (void *)1;
  ASSERT_ERR(hy_task_join(rt, t, &r), HY_ENOMEM);
  ASSERT(r == NULL);
  ASSERT_EQ(atomic_load(&ran), 0);
  ASSERT_ERR(hy_task_join(rt, t, &r), HY_ESTALE);
  ASSERT_EQ(left, 0);
  hy_event_t *ev;
  ASSERT_OK(hy_receiver_try_read(exits, &ev));
  const hy_task_event_t *te = hy_event_data(ev, NULL);
  ASSERT_EQ(te->reason, HY_TASK_NO_STACK);
  ASSERT_EQ(te->task, t.id);
  hy_event_unref(ev);
  /* The same for a detached task: the event is all there is. */
  hy_task_opts_t to = HY_TASK_OPTS_INIT;
  to.name = "detached";
  ASSERT_OK(hy_task_spawn(rt, never_without_stack, &ran, &to, NULL));
  hy__mem_fail_here_at(1);
  hy_runtime_run_once(rt, 0);
  ASSERT_EQ(hy__mem_fail_at(0), 0);
  ASSERT_EQ(atomic_load(&ran), 0);
  ASSERT_OK(hy_receiver_try_read(exits, &ev));
  te = hy_event_data(ev, NULL);
  ASSERT_EQ(te->reason, HY_TASK_NO_STACK);
  ASSERT(strcmp(te->name, "detached") == 0);
  hy_event_unref(ev);
  hy_unsubscribe(exits);
  /* Memory is back: the next task runs. */
  ASSERT_OK(hy_task_spawn(rt, never_without_stack, &ran, NULL, &t));
  hy_runtime_run_once(rt, 0);
  ASSERT_OK(hy_task_join(rt, t, &r));
  ASSERT_EQ((intptr_t)r, 42);
  ASSERT_EQ(atomic_load(&ran), 1);
  ASSERT_OK(hy_runtime_shutdown(rt, 0));
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}
