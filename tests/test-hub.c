/* test-hub.c - hub events.  The tests are written so that an event with
 * PulseEvent's behaviour (release whoever waits right now, once) or a
 * plain shared auto/manual-reset event would fail them: releases must
 * reach consumers that are not waiting, exactly once each, coalesced,
 * and consumer-side operations must stay local. */
#ifndef _WIN32
#define _GNU_SOURCE
#endif
#include <stdatomic.h>

#include "hydra.h"
#include "compat.h"
#include "runtime/sys.h"
#include "runtime/wait.h"
#include "rt_util.h"
#include "test.h"

/* A non-blocking look: 0 if released (taking it), HY_ETIMEDOUT if not. */
static int poke(hy_hub_consumer_t *c) { return hy_hub_wait_until(c, 0); }

/* ------------------------------------------------------- basic semantics */

TEST_IMPL(hub_set_reaches_idle_consumers) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, "t/idle", HY_HUB_AUTO_RESET, &h));
  hy_hub_consumer_t *c[3];
  for (int i = 0; i < 3; i++)
    ASSERT_OK(hy_hub_connect(h, &c[i]));
  /* Nobody waits at the moment of the set: PulseEvent would drop it. */
  ASSERT_EQ(hy_hub_set(h), 3);
  for (int i = 0; i < 3; i++) {
    ASSERT_OK(poke(c[i]));
    ASSERT_ERR(poke(c[i]), HY_ETIMEDOUT); /* once, not twice */
  }
  hy_hub_info_t info = {.size = sizeof info};
  ASSERT_OK(hy_hub_info(h, &info));
  ASSERT_EQ(info.consumers, 3);
  ASSERT_EQ(info.sets, 1);
  ASSERT_EQ(info.signalled, 0);
  ASSERT_EQ(info.kind, HY_HUB_AUTO_RESET);
  ASSERT(strcmp(info.name, "t/idle") == 0);
  for (int i = 0; i < 3; i++)
    ASSERT_OK(hy_hub_disconnect(c[i]));
  ASSERT_OK(hy_hub_info(h, &info));
  ASSERT_EQ(info.consumers, 0);
  ASSERT_EQ(hy_hub_set(h), 0);
  ASSERT_OK(hy_hub_destroy(h));
  test_rt_close(rt, HY_MS(20));
  return 0;
}

TEST_IMPL(hub_sets_coalesce) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &h));
  hy_hub_consumer_t *a, *b;
  ASSERT_OK(hy_hub_connect(h, &a));
  for (int i = 0; i < 5; i++)
    ASSERT_EQ(hy_hub_set(h), 1);
  ASSERT_OK(hy_hub_connect(h, &b)); /* after the sets: sees none of them */
  ASSERT_OK(poke(a));
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  ASSERT_ERR(poke(b), HY_ETIMEDOUT);
  /* The next set reaches both, once. */
  ASSERT_EQ(hy_hub_set(h), 2);
  ASSERT_OK(poke(a));
  ASSERT_OK(poke(b));
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  ASSERT_ERR(poke(b), HY_ETIMEDOUT);
  /* A reset withdraws releases not taken yet. */
  hy_hub_set(h);
  ASSERT_OK(hy_hub_reset(h));
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  ASSERT_ERR(poke(b), HY_ETIMEDOUT);
  hy_hub_info_t info = {.size = sizeof info};
  ASSERT_OK(hy_hub_info(h, &info));
  ASSERT_EQ(info.sets, 7);
  ASSERT_EQ(info.name[0], 0);
  ASSERT_OK(hy_hub_disconnect(a));
  ASSERT_OK(hy_hub_disconnect(b));
  ASSERT_OK(hy_hub_destroy(h));
  test_rt_close(rt, HY_MS(20));
  return 0;
}

TEST_IMPL(hub_manual_reset) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, "t/manual", HY_HUB_MANUAL_RESET, &h));
  hy_hub_consumer_t *a, *b, *late;
  ASSERT_OK(hy_hub_connect(h, &a));
  ASSERT_OK(hy_hub_connect_name(rt, "t/manual", &b));
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  ASSERT_EQ(hy_hub_set(h), 2);
  for (int i = 0; i < 3; i++) { /* stays released */
    ASSERT_OK(poke(a));
    ASSERT_OK(hy_hub_wait(b));
  }
  hy_hub_info_t info = {.size = sizeof info};
  ASSERT_OK(hy_hub_info(h, &info));
  ASSERT_EQ(info.signalled, 1);
  ASSERT_EQ(info.kind, HY_HUB_MANUAL_RESET);
  /* A manual hub has a state: a consumer connecting now starts released. */
  ASSERT_OK(hy_hub_connect(h, &late));
  ASSERT_OK(poke(late));
  /* A consumer's own reset touches that consumer alone. */
  ASSERT_OK(hy_hub_consumer_reset(a));
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  ASSERT_OK(poke(b));
  /* The hub's reset clears everyone and the state. */
  ASSERT_OK(hy_hub_reset(h));
  ASSERT_ERR(poke(b), HY_ETIMEDOUT);
  ASSERT_ERR(poke(late), HY_ETIMEDOUT);
  ASSERT_OK(hy_hub_info(h, &info));
  ASSERT_EQ(info.signalled, 0);
  ASSERT_OK(hy_hub_disconnect(late));
  ASSERT_OK(hy_hub_disconnect(a));
  ASSERT_OK(hy_hub_disconnect(b));
  ASSERT_OK(hy_hub_destroy(h));
  test_rt_close(rt, HY_MS(20));
  return 0;
}

typedef struct {
  hy_runtime_t *rt;
  hy_hub_consumer_t *c;
  hy_time_t deadline;
  atomic_int *count;
  atomic_int started;
} waiter_t;

static void *wait_task(void *p) {
  waiter_t *w = p;
  atomic_store(&w->started, 1);
  int rc = hy_hub_wait_until(w->c, w->deadline);
  if (rc == 0 && w->count)
    atomic_fetch_add(w->count, 1);
  return (void *)(intptr_t)rc;
}

static void wait_started(waiter_t *w) {
  while (!atomic_load(&w->started))
    usleep(100);
  usleep(2000); /* let it park (not required for correctness) */
}

TEST_IMPL(hub_consumer_ops_are_local) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &h));
  hy_hub_consumer_t *a, *b;
  ASSERT_OK(hy_hub_connect(h, &a));
  ASSERT_OK(hy_hub_connect(h, &b));
  /* set on a: a alone is released. */
  ASSERT_OK(hy_hub_consumer_set(a));
  ASSERT_ERR(poke(b), HY_ETIMEDOUT);
  ASSERT_OK(poke(a));
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  hy_hub_info_t info = {.size = sizeof info};
  ASSERT_OK(hy_hub_info(h, &info));
  ASSERT_EQ(info.sets, 0);
  /* reset on a withdraws a's pending release only. */
  hy_hub_set(h);
  ASSERT_OK(hy_hub_consumer_reset(a));
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  ASSERT_OK(poke(b));
  /* pulse with nobody waiting leaves nothing behind... */
  ASSERT_EQ(hy_hub_consumer_pulse(a), 0);
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  /* ...and with a task waiting on a, releases that task only. */
  atomic_int na = 0;
  waiter_t wa = {rt, a, HY_FOREVER, &na, 0};
  waiter_t wb = {rt, b, hy_deadline_in(HY_MS(100)), NULL, 0};
  hy_task_t ta, tb;
  ASSERT_OK(hy_task_spawn(rt, wait_task, &wa, NULL, &ta));
  ASSERT_OK(hy_task_spawn(rt, wait_task, &wb, NULL, &tb));
  wait_started(&wa);
  int n;
  while ((n = hy_hub_consumer_pulse(a)) == 0) /* until it is parked */
    usleep(500);
  ASSERT_EQ(n, 1);
  void *r;
  ASSERT_OK(hy_task_join(rt, ta, &r));
  ASSERT_EQ((intptr_t)r, 0);
  ASSERT_EQ(atomic_load(&na), 1);
  ASSERT_OK(hy_task_join(rt, tb, &r));
  ASSERT_EQ((intptr_t)r, HY_ETIMEDOUT);
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  ASSERT_OK(hy_hub_disconnect(a));
  ASSERT_OK(hy_hub_disconnect(b));
  ASSERT_OK(hy_hub_destroy(h));
  test_rt_close(rt, HY_MS(20));
  return 0;
}

TEST_IMPL(hub_destroy_wakes_closed) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, "t/gone", HY_HUB_AUTO_RESET, &h));
  enum { N = 8 };
  hy_hub_consumer_t *c[N], *pend;
  waiter_t w[N];
  hy_task_t t[N];
  for (int i = 0; i < N; i++) {
    ASSERT_OK(hy_hub_connect(h, &c[i]));
    w[i] = (waiter_t){rt, c[i], HY_FOREVER, NULL, 0};
    ASSERT_OK(hy_task_spawn(rt, wait_task, &w[i], NULL, &t[i]));
  }
  ASSERT_OK(hy_hub_connect_name(rt, "t/gone", &pend));
  for (int i = 0; i < N; i++)
    wait_started(&w[i]);
  /* pend has a release it has not taken when the hub goes. */
  ASSERT_OK(hy_hub_consumer_set(pend));
  ASSERT_OK(hy_hub_destroy(h));
  for (int i = 0; i < N; i++) {
    void *r;
    ASSERT_OK(hy_task_join(rt, t[i], &r));
    ASSERT_EQ((intptr_t)r, HY_ECLOSED);
    ASSERT_ERR(poke(c[i]), HY_ECLOSED);
  }
  ASSERT_OK(poke(pend)); /* the pending release first */
  ASSERT_ERR(hy_hub_wait(pend), HY_ECLOSED);
  ASSERT_ERR(hy_hub_connect_name(rt, "t/gone", &c[0]), HY_ENOENT);
  hy_hub_t *again;
  ASSERT_OK(hy_hub_create(rt, "t/gone", HY_HUB_AUTO_RESET, &again));
  ASSERT_OK(hy_hub_destroy(again));
  for (int i = 1; i < N; i++)
    ASSERT_OK(hy_hub_disconnect(c[i]));
  /* c[0] and pend are left for hy_runtime_close to free (ASan checks). */
  test_rt_close(rt, HY_MS(20));
  return 0;
}

TEST_IMPL(hub_names_and_errors) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_hub_t *h, *x;
  hy_hub_consumer_t *c;
  ASSERT_ERR(hy_hub_create(NULL, "a", 0, &h), HY_EINVAL);
  ASSERT_ERR(hy_hub_create(rt, "a", 7, &h), HY_EINVAL);
  ASSERT_ERR(hy_hub_create(rt, "a", 0, NULL), HY_EINVAL);
  char longname[100];
  memset(longname, 'x', sizeof longname - 1);
  longname[99] = 0;
  ASSERT_ERR(hy_hub_create(rt, longname, 0, &h), HY_EINVAL);
  ASSERT_ERR(hy_hub_create(rt, "sys/mine", 0, &h), HY_EPERM);
  ASSERT_OK(hy_hub_create(rt, "app/a", 0, &h));
  ASSERT_ERR(hy_hub_create(rt, "app/a", 1, &x), HY_EEXIST);
  ASSERT_OK(hy_hub_find(rt, "app/a", &x));
  ASSERT(x == h);
  ASSERT_ERR(hy_hub_find(rt, "app/b", &x), HY_ENOENT);
  ASSERT_ERR(hy_hub_connect_name(rt, "app/b", &c), HY_ENOENT);
  ASSERT_ERR(hy_hub_connect_name(rt, NULL, &c), HY_EINVAL);
  ASSERT_ERR(hy_hub_connect(NULL, &c), HY_EINVAL);
  ASSERT_ERR(hy_hub_set(NULL), HY_EINVAL);
  ASSERT_ERR(hy_hub_reset(NULL), HY_EINVAL);
  ASSERT_ERR(hy_hub_destroy(NULL), HY_EINVAL);
  ASSERT_ERR(hy_hub_wait(NULL), HY_EINVAL);
  ASSERT_ERR(hy_hub_disconnect(NULL), HY_EINVAL);
  ASSERT_ERR(hy_hub_consumer_set(NULL), HY_EINVAL);
  ASSERT_ERR(hy_hub_consumer_reset(NULL), HY_EINVAL);
  ASSERT_ERR(hy_hub_consumer_pulse(NULL), HY_EINVAL);
  intptr_t fd;
  ASSERT_ERR(hy_hub_os_handle(NULL, &fd), HY_EINVAL);
  hy_hub_info_t small = {.size = 4};
  ASSERT_ERR(hy_hub_info(h, &small), HY_EINVAL);
  /* Anonymous hubs do not clash. */
  hy_hub_t *n1, *n2;
  ASSERT_OK(hy_hub_create(rt, NULL, 0, &n1));
  ASSERT_OK(hy_hub_create(rt, "", 0, &n2));
  ASSERT_OK(hy_hub_destroy(n1));
  /* The runtime's own hub: users connect, but may not drive it. */
  hy_hub_t *sd;
  ASSERT_OK(hy_hub_find(rt, "sys/shutdown", &sd));
  ASSERT_ERR(hy_hub_set(sd), HY_EPERM);
  ASSERT_ERR(hy_hub_reset(sd), HY_EPERM);
  ASSERT_ERR(hy_hub_destroy(sd), HY_EPERM);
  /* Two runtimes have separate namespaces. */
  hy_runtime_t *rt2 = test_rt_new(1);
  hy_hub_t *h2;
  ASSERT_OK(hy_hub_create(rt2, "app/a", 0, &h2));
  hy_hub_consumer_t *c2;
  ASSERT_OK(hy_hub_connect_name(rt2, "app/a", &c2));
  hy_hub_set(h);
  ASSERT_ERR(poke(c2), HY_ETIMEDOUT);
  test_rt_close(rt2, HY_MS(20)); /* frees h2 and c2 */
  ASSERT_OK(hy_hub_destroy(h));
  test_rt_close(rt, HY_MS(20)); /* frees n2 */
  return 0;
}

/* ------------------------------------------------------- waits and time */

static void *cancel_target(void *p) {
  waiter_t *w = p;
  atomic_store(&w->started, 1);
  int rc = hy_hub_wait(w->c);
  /* Cancellation is sticky: a pending release is not taken now. */
  int again = hy_hub_wait_until(w->c, 0);
  return (void *)(intptr_t)(rc == HY_ECANCELED && again == HY_ECANCELED);
}

TEST_IMPL(hub_wait_deadline_and_cancel) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &h));
  hy_hub_consumer_t *c;
  ASSERT_OK(hy_hub_connect(h, &c));
  /* Never early, from a task and from this (foreign) thread. */
  waiter_t w = {rt, c, 0, NULL, 0};
  hy_time_t t0 = hy_now();
  w.deadline = t0 + HY_MS(30);
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, wait_task, &w, NULL, &t));
  void *r;
  ASSERT_OK(hy_task_join(rt, t, &r));
  ASSERT_EQ((intptr_t)r, HY_ETIMEDOUT);
  ASSERT_GE(hy_now(), w.deadline);
  hy_time_t d = hy_deadline_in(HY_MS(20));
  ASSERT_ERR(hy_hub_wait_until(c, d), HY_ETIMEDOUT);
  ASSERT_GE(hy_now(), d);
  /* A cancelled waiter returns HY_ECANCELED and takes nothing: the set
   * that follows is still there for the next wait. */
  waiter_t wc = {rt, c, HY_FOREVER, NULL, 0};
  ASSERT_OK(hy_task_spawn(rt, cancel_target, &wc, NULL, &t));
  wait_started(&wc);
  ASSERT_OK(hy_task_cancel(rt, t));
  ASSERT_OK(hy_task_join(rt, t, &r));
  ASSERT_EQ((intptr_t)r, 1);
  hy_hub_set(h);
  ASSERT_OK(poke(c));
  /* Cancelled while a release is pending: still not taken. */
  hy_hub_set(h);
  wc.started = 0;
  ASSERT_OK(hy_task_spawn(rt, cancel_target, &wc, NULL, &t));
  ASSERT_OK(hy_task_cancel(rt, t));
  ASSERT_OK(hy_task_join(rt, t, &r));
  /* Either both its waits were cancelled and the release is still there,
   * or it took the release before the cancel and nothing is left. */
  int left = poke(c) == 0;
  ASSERT_EQ((intptr_t)r, left);
  ASSERT_OK(hy_hub_disconnect(c));
  ASSERT_OK(hy_hub_destroy(h));
  test_rt_close(rt, HY_MS(20));
  return 0;
}

static void *thread_wait(void *p) {
  waiter_t *w = p;
  atomic_store(&w->started, 1);
  int rc = hy_hub_wait_until(w->c, w->deadline);
  if (rc == 0)
    atomic_fetch_add(w->count, 1);
  return (void *)(intptr_t)rc;
}

static void *set_task(void *p) { return (void *)(intptr_t)hy_hub_set(p); }

TEST_IMPL(hub_foreign_thread_waits) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &h));
  enum { N = 4 };
  hy_hub_consumer_t *c[N];
  waiter_t w[N];
  pthread_t th[N];
  atomic_int count = 0;
  for (int i = 0; i < N; i++) {
    ASSERT_OK(hy_hub_connect(h, &c[i]));
    w[i] = (waiter_t){rt, c[i], hy_deadline_in(HY_SEC(30)), &count, 0};
    ASSERT_EQ(pthread_create(&th[i], NULL, thread_wait, &w[i]), 0);
  }
  for (int i = 0; i < N; i++)
    wait_started(&w[i]);
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, set_task, h, NULL, &t)); /* set from a task */
  void *r;
  ASSERT_OK(hy_task_join(rt, t, &r));
  ASSERT_EQ((intptr_t)r, N);
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(pthread_join(th[i], &r), 0);
    ASSERT_EQ((intptr_t)r, 0);
  }
  ASSERT_EQ(atomic_load(&count), N);
  for (int i = 0; i < N; i++) {
    ASSERT_ERR(poke(c[i]), HY_ETIMEDOUT);
    ASSERT_OK(hy_hub_disconnect(c[i]));
  }
  ASSERT_OK(hy_hub_destroy(h));
  test_rt_close(rt, HY_MS(20));
  return 0;
}

/* --------------------------------------------------- the OS handle
 * Linux: an eventfd that is readable while released; reading takes it. */
#ifndef _WIN32
static int readable(intptr_t fd, int ms) {
  struct pollfd p = {(int)fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static int take_fd(intptr_t fd) {
  uint64_t v;
  return read((int)fd, &v, sizeof v) == (ssize_t)sizeof v;
}

typedef struct {
  intptr_t fd;
  atomic_int got;
} poller_t;

static void *fd_poller(void *p) {
  poller_t *q = p;
  if (readable(q->fd, 30000) && take_fd(q->fd))
    atomic_store(&q->got, 1);
  return NULL;
}

TEST_IMPL(hub_os_handle) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &h));
  hy_hub_consumer_t *a, *b;
  ASSERT_OK(hy_hub_connect(h, &a));
  ASSERT_OK(hy_hub_connect(h, &b));
  /* A release pending before the handle exists shows on it. */
  hy_hub_set(h);
  intptr_t fa, fb, again;
  ASSERT_OK(hy_hub_os_handle(a, &fa));
  ASSERT_OK(hy_hub_os_handle(a, &again));
  ASSERT_EQ(fa, again);
  ASSERT(readable(fa, 0));
  ASSERT(take_fd(fa));         /* reading takes the release */
  ASSERT(!readable(fa, 0));
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  ASSERT_OK(poke(b));          /* b's own release is untouched */
  ASSERT_OK(hy_hub_os_handle(b, &fb));
  ASSERT(!readable(fb, 0));
  /* Sets coalesce on the handle too. */
  hy_hub_set(h);
  hy_hub_set(h);
  ASSERT(take_fd(fa));
  ASSERT(!take_fd(fa));
  /* A wait takes the release the handle showed. */
  ASSERT(readable(fb, 0));
  ASSERT_OK(poke(b));
  ASSERT(!readable(fb, 0));
  /* Consumer-local ops reach the handle. */
  ASSERT_OK(hy_hub_consumer_set(a));
  ASSERT(readable(fa, 0));
  ASSERT_OK(hy_hub_consumer_reset(a));
  ASSERT(!readable(fa, 0));
  /* A foreign thread blocked in poll() is woken by a set from a task. */
  poller_t q = {fa, 0};
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, fd_poller, &q), 0);
  usleep(5000);
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, set_task, h, NULL, &t));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  pthread_join(th, NULL);
  ASSERT_EQ(atomic_load(&q.got), 1);
  ASSERT_ERR(poke(a), HY_ETIMEDOUT); /* the poller took it */
  ASSERT_OK(poke(b));
  /* Destroyed: readable for good, waits say closed. */
  ASSERT_OK(hy_hub_destroy(h));
  for (int i = 0; i < 3; i++) {
    ASSERT(readable(fa, 0));
    ASSERT(take_fd(fa));
  }
  ASSERT_ERR(poke(a), HY_ECLOSED);
  ASSERT_OK(hy_hub_disconnect(a));
  ASSERT_OK(hy_hub_disconnect(b));
  test_rt_close(rt, HY_MS(20));
  return 0;
}

/* Takes a release through the handle, waiting up to ms: 1 if taken. */
static int os_take(intptr_t fd, int ms) { return readable(fd, ms) && take_fd(fd); }

#else /* Windows: an event HANDLE of the hub's reset kind. */

static int signalled(intptr_t h, int ms) {
  return WaitForSingleObject((HANDLE)h, (DWORD)ms) == WAIT_OBJECT_0;
}

static int os_take(intptr_t h, int ms) { return signalled(h, ms); }

typedef struct {
  intptr_t h;
  int pump; /* wait as a message loop does */
  atomic_int started, got;
} hwaiter_t;

static void *handle_waiter(void *p) {
  hwaiter_t *q = p;
  HANDLE h = (HANDLE)q->h;
  atomic_store(&q->started, 1);
  DWORD r = q->pump ? MsgWaitForMultipleObjectsEx(1, &h, 30000, QS_ALLINPUT,
                                                  MWMO_INPUTAVAILABLE)
                    : WaitForSingleObject(h, 30000);
  if (r == WAIT_OBJECT_0)
    atomic_store(&q->got, 1);
  return NULL;
}

TEST_IMPL(hub_os_handle) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &h));
  hy_hub_consumer_t *a, *b;
  ASSERT_OK(hy_hub_connect(h, &a));
  ASSERT_OK(hy_hub_connect(h, &b));
  /* A release pending before the handle exists shows on it. */
  hy_hub_set(h);
  intptr_t fa, fb, again;
  ASSERT_OK(hy_hub_os_handle(a, &fa));
  ASSERT_OK(hy_hub_os_handle(a, &again));
  ASSERT_EQ(fa, again);
  ASSERT(signalled(fa, 0));  /* an auto-reset event: the wait takes it */
  ASSERT(!signalled(fa, 0));
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  ASSERT_OK(poke(b));        /* b's own release is untouched */
  ASSERT_OK(hy_hub_os_handle(b, &fb));
  ASSERT(!signalled(fb, 0));
  /* Sets coalesce on the handle too. */
  hy_hub_set(h);
  hy_hub_set(h);
  ASSERT(signalled(fa, 0));
  ASSERT(!signalled(fa, 0));
  /* A hy_hub wait takes the release the handle held. */
  ASSERT_OK(poke(b));
  ASSERT(!signalled(fb, 0));
  /* One set, both handles: WaitForMultipleObjects sees them together. */
  HANDLE both[2] = {(HANDLE)fa, (HANDLE)fb};
  ASSERT_EQ(hy_hub_set(h), 2);
  ASSERT_EQ(WaitForMultipleObjects(2, both, TRUE, 5000), WAIT_OBJECT_0);
  ASSERT_EQ(WaitForMultipleObjects(2, both, FALSE, 0), WAIT_TIMEOUT);
  /* Consumer-local ops reach the handle, and the Win32 calls on the
   * handle are consumer-local ops. */
  ASSERT_OK(hy_hub_consumer_set(a));
  ASSERT(signalled(fa, 0));
  ASSERT_OK(hy_hub_consumer_set(a));
  ASSERT_OK(hy_hub_consumer_reset(a));
  ASSERT(!signalled(fa, 0));
  ASSERT(SetEvent((HANDLE)fa));
  ASSERT_ERR(poke(b), HY_ETIMEDOUT);
  ASSERT_OK(poke(a));
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  hy_hub_set(h);
  ASSERT(ResetEvent((HANDLE)fa));
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  ASSERT_OK(poke(b));
  ASSERT(PulseEvent((HANDLE)fa)); /* nobody waits: nothing is left */
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  /* A pending release survives hy_hub_consumer_pulse (as on Linux). */
  hy_hub_set(h);
  ASSERT_EQ(hy_hub_consumer_pulse(a), 0);
  ASSERT_OK(poke(a));
  ASSERT_OK(poke(b));
  /* A foreign thread in a message loop's wait is woken by a set from a
   * task, and takes the release. */
  hwaiter_t q = {fa, 1, 0, 0};
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, handle_waiter, &q), 0);
  while (!atomic_load(&q.started))
    usleep(100);
  usleep(5000);
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, set_task, h, NULL, &t));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  pthread_join(th, NULL);
  ASSERT_EQ(atomic_load(&q.got), 1);
  ASSERT_ERR(poke(a), HY_ETIMEDOUT); /* the thread took it */
  ASSERT_OK(poke(b));
  /* hy_hub_consumer_pulse reaches a thread waiting on the handle, and
   * only that consumer's. */
  hwaiter_t qa = {fa, 0, 0, 0}, qb = {fb, 0, 0, 0};
  pthread_t tha, thb;
  ASSERT_EQ(pthread_create(&tha, NULL, handle_waiter, &qa), 0);
  ASSERT_EQ(pthread_create(&thb, NULL, handle_waiter, &qb), 0);
  while (!atomic_load(&qa.started) || !atomic_load(&qb.started))
    usleep(100);
  hy_time_t limit = hy_deadline_in(HY_SEC(20));
  while (!atomic_load(&qa.got)) { /* until the thread is in its wait */
    ASSERT(hy_now() < limit);
    ASSERT_EQ(hy_hub_consumer_pulse(a), 0); /* no task waits */
    usleep(1000);
  }
  pthread_join(tha, NULL);
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  ASSERT_EQ(atomic_load(&qb.got), 0);
  ASSERT_OK(hy_hub_consumer_set(b)); /* let b's waiter go */
  pthread_join(thb, NULL);
  ASSERT_EQ(atomic_load(&qb.got), 1);
  /* Destroyed: each auto-reset event is set once more, and waits say
   * closed. */
  ASSERT_OK(hy_hub_destroy(h));
  ASSERT(signalled(fa, 0));
  ASSERT(!signalled(fa, 0));
  ASSERT_ERR(poke(a), HY_ECLOSED);
  ASSERT_OK(hy_hub_disconnect(a));
  ASSERT_OK(hy_hub_disconnect(b));
  test_rt_close(rt, HY_MS(20));
  return 0;
}

TEST_IMPL(hub_os_handle_manual) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, "t/man", HY_HUB_MANUAL_RESET, &h));
  hy_hub_consumer_t *a, *b, *late;
  ASSERT_OK(hy_hub_connect(h, &a));
  ASSERT_OK(hy_hub_connect(h, &b));
  intptr_t fa, fb, fl;
  ASSERT_OK(hy_hub_os_handle(a, &fa));
  ASSERT_OK(hy_hub_os_handle(b, &fb));
  ASSERT(!signalled(fa, 0));
  /* A manual-reset event: waits do not take the release. */
  ASSERT_EQ(hy_hub_set(h), 2);
  for (int i = 0; i < 3; i++) {
    ASSERT(signalled(fa, 0));
    ASSERT_OK(poke(a));
  }
  /* Several threads waiting on one consumer's handle: one set releases
   * them all. */
  ASSERT_OK(hy_hub_reset(h));
  ASSERT(!signalled(fa, 0));
  ASSERT(!signalled(fb, 0));
  hwaiter_t q[3] = {{fa, 0, 0, 0}, {fa, 1, 0, 0}, {fa, 0, 0, 0}};
  pthread_t th[3];
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(pthread_create(&th[i], NULL, handle_waiter, &q[i]), 0);
  for (int i = 0; i < 3; i++)
    while (!atomic_load(&q[i].started))
      usleep(100);
  ASSERT_EQ(hy_hub_set(h), 2);
  for (int i = 0; i < 3; i++) {
    pthread_join(th[i], NULL);
    ASSERT_EQ(atomic_load(&q[i].got), 1);
  }
  ASSERT(signalled(fa, 0)); /* still set */
  /* A consumer that connects while the hub is set starts set. */
  ASSERT_OK(hy_hub_connect(h, &late));
  ASSERT_OK(hy_hub_os_handle(late, &fl));
  ASSERT(signalled(fl, 0));
  /* ResetEvent on a's handle is a's own reset. */
  ASSERT(ResetEvent((HANDLE)fa));
  ASSERT_ERR(poke(a), HY_ETIMEDOUT);
  ASSERT(signalled(fb, 0));
  ASSERT_OK(poke(b));
  hy_hub_info_t info = {.size = sizeof info};
  ASSERT_OK(hy_hub_info(h, &info));
  ASSERT_EQ(info.signalled, 1);
  /* Destroyed: the manual-reset events stay set. */
  ASSERT_OK(hy_hub_destroy(h));
  for (int i = 0; i < 2; i++) {
    ASSERT(signalled(fa, 0));
    ASSERT(signalled(fl, 0));
  }
  ASSERT_ERR(poke(a), HY_ECLOSED);
  ASSERT_OK(hy_hub_disconnect(a));
  ASSERT_OK(hy_hub_disconnect(b));
  ASSERT_OK(hy_hub_disconnect(late));
  test_rt_close(rt, HY_MS(20));
  return 0;
}
#endif

/* Rounds over OS handles: each consumer is watched by a thread of its own
 * that takes releases through the consumer's OS handle only; the producer
 * sets once per round from a task or this thread and waits until every
 * watcher has counted the round.  A lost release hangs (caught by the
 * limit); a doubled one overcounts. */
typedef struct {
  intptr_t fd;
  uint64_t seed; /* from test_rand(), which is for one thread */
  atomic_int rounds;
  atomic_int stop;
} watcher_t;

static void *os_watcher(void *p) {
  watcher_t *w = p;
  uint64_t x = w->seed | 1;
  while (!atomic_load(&w->stop)) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    if ((x & 3) == 0)
      usleep((x >> 8) % 300); /* start the wait late, sometimes */
    if (os_take(w->fd, 50))
      atomic_fetch_add(&w->rounds, 1);
  }
  return NULL;
}

TEST_IMPL(hub_os_handle_rounds) {
  enum { K = 8, ROUNDS = 200 };
  hy_runtime_t *rt = test_rt_new(2);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &h));
  hy_hub_consumer_t *c[K];
  watcher_t w[K];
  pthread_t th[K];
  for (int i = 0; i < K; i++) {
    ASSERT_OK(hy_hub_connect(h, &c[i]));
    w[i].seed = test_rand();
    w[i].rounds = 0;
    w[i].stop = 0;
    ASSERT_OK(hy_hub_os_handle(c[i], &w[i].fd));
    ASSERT_EQ(pthread_create(&th[i], NULL, os_watcher, &w[i]), 0);
  }
  for (int round = 1; round <= ROUNDS; round++) {
    if (round % 2) {
      ASSERT_EQ(hy_hub_set(h), K);
    } else {
      hy_task_t t;
      void *r;
      ASSERT_OK(hy_task_spawn(rt, set_task, h, NULL, &t));
      ASSERT_OK(hy_task_join(rt, t, &r));
      ASSERT_EQ((intptr_t)r, K);
    }
    hy_time_t limit = hy_deadline_in(HY_SEC(20));
    for (int i = 0; i < K; i++)
      while (atomic_load(&w[i].rounds) < round) {
        ASSERT(hy_now() < limit);
        hy__thread_yield();
      }
    for (int i = 0; i < K; i++)
      ASSERT_EQ(atomic_load(&w[i].rounds), round); /* not twice */
  }
  for (int i = 0; i < K; i++) {
    atomic_store(&w[i].stop, 1);
    pthread_join(th[i], NULL);
    ASSERT_EQ(atomic_load(&w[i].rounds), ROUNDS);
    ASSERT_ERR(poke(c[i]), HY_ETIMEDOUT);
    ASSERT_OK(hy_hub_disconnect(c[i]));
  }
  ASSERT_OK(hy_hub_destroy(h));
  test_rt_close(rt, HY_MS(20));
  return 0;
}

/* ----------------------------------------------------- many consumers */

typedef struct {
  hy_runtime_t *rt;
  hy_hub_consumer_t *c;
  atomic_int *released;
  atomic_int *parked;
  int rc;
} many_t;

static void *many_task(void *p) {
  many_t *m = p;
  atomic_fetch_add(m->parked, 1);
  m->rc = hy_hub_wait(m->c);
  if (m->rc == 0)
    atomic_fetch_add(m->released, 1);
  return NULL;
}

TEST_IMPL(hub_10k_consumers_released_once) {
  enum { N = 10000 };
  hy_runtime_t *rt = test_rt_new(2);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, "t/many", HY_HUB_AUTO_RESET, &h));
  many_t *m = calloc(N, sizeof *m);
  hy_task_t *t = calloc(N, sizeof *t);
  ASSERT(m && t);
  atomic_int released = 0, parked = 0;
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.stack_size = 16 * 1024;
  for (int i = 0; i < N; i++) {
    m[i] = (many_t){rt, NULL, &released, &parked, 1};
    ASSERT_OK(hy_hub_connect_name(rt, "t/many", &m[i].c));
  }
  /* Half the tasks start before the set, the rest after it: every one of
   * them must be released exactly once either way. */
  for (int i = 0; i < N / 2; i++)
    ASSERT_OK(hy_task_spawn(rt, many_task, &m[i], &o, &t[i]));
  while (atomic_load(&parked) < N / 4)
    usleep(100);
  ASSERT_EQ(hy_hub_set(h), N);
  for (int i = N / 2; i < N; i++)
    ASSERT_OK(hy_task_spawn(rt, many_task, &m[i], &o, &t[i]));
  for (int i = 0; i < N; i++)
    ASSERT_OK(hy_task_join(rt, t[i], NULL));
  ASSERT_EQ(atomic_load(&released), N);
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(m[i].rc, 0);
    ASSERT_ERR(poke(m[i].c), HY_ETIMEDOUT); /* nothing extra */
  }
  /* And once more with everything idle: N releases, taken once each. */
  ASSERT_EQ(hy_hub_set(h), N);
  hy_hub_set(h);
  for (int i = 0; i < N; i++) {
    ASSERT_OK(poke(m[i].c));
    ASSERT_ERR(poke(m[i].c), HY_ETIMEDOUT);
  }
  hy_hub_info_t info = {.size = sizeof info};
  ASSERT_OK(hy_hub_info(h, &info));
  ASSERT_EQ(info.consumers, N);
  for (int i = 0; i < N; i++)
    ASSERT_OK(hy_hub_disconnect(m[i].c));
  ASSERT_OK(hy_hub_destroy(h));
  free(m);
  free(t);
  test_rt_close(rt, HY_MS(20));
  return 0;
}

/* Rounds: the producer sets once per round and waits until every
 * consumer has counted that round, then sets again.  With waits starting
 * at random moments relative to the set, a lost release hangs (caught by
 * the deadline) and a double one overcounts. */
typedef struct {
  hy_runtime_t *rt;
  hy_hub_consumer_t *c;
  atomic_int rounds;
  int target;
  int rc;
} round_t;

static void *round_task(void *p) {
  round_t *r = p;
  uint64_t x = (uint64_t)(uintptr_t)p;
  while (atomic_load(&r->rounds) < r->target) {
    x = x * 6364136223846793005u + 1442695040888963407u;
    if ((x >> 60) & 1)
      hy_yield(r->rt); /* start the wait late, sometimes */
    int rc = hy_hub_wait_until(r->c, hy_deadline_in(HY_SEC(20)));
    if (rc != 0) {
      r->rc = rc;
      return NULL;
    }
    atomic_fetch_add(&r->rounds, 1);
  }
  return NULL;
}

TEST_IMPL(hub_stress_rounds) {
  enum { K = 64, ROUNDS = 300 };
  hy_runtime_t *rt = test_rt_new(2);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &h));
  round_t *r = calloc(K, sizeof *r);
  hy_task_t t[K];
  for (int i = 0; i < K; i++) {
    r[i].rt = rt;
    r[i].target = ROUNDS;
    ASSERT_OK(hy_hub_connect(h, &r[i].c));
    ASSERT_OK(hy_task_spawn(rt, round_task, &r[i], NULL, &t[i]));
  }
  for (int round = 1; round <= ROUNDS; round++) {
    if (test_rand() % 4 == 0)
      usleep(test_rand() % 200);
    ASSERT_EQ(hy_hub_set(h), K);
    hy_time_t limit = hy_deadline_in(HY_SEC(20));
    for (int i = 0; i < K; i++) {
      while (atomic_load(&r[i].rounds) < round) {
        ASSERT(hy_now() < limit);
        ASSERT_EQ(r[i].rc, 0);
        hy__thread_yield();
      }
    }
    for (int i = 0; i < K; i++)
      ASSERT_EQ(atomic_load(&r[i].rounds), round); /* not twice */
  }
  for (int i = 0; i < K; i++) {
    ASSERT_OK(hy_task_join(rt, t[i], NULL));
    ASSERT_EQ(r[i].rc, 0);
    ASSERT_ERR(poke(r[i].c), HY_ETIMEDOUT);
    ASSERT_OK(hy_hub_disconnect(r[i].c));
  }
  ASSERT_OK(hy_hub_destroy(h));
  free(r);
  test_rt_close(rt, HY_MS(20));
  return 0;
}

/* --------------------------------------------- the awaitable, as select
 * uses it: lock, try, enqueue, park, dequeue.  Arms that do not fire must
 * leave no trace. */

static int mini_select(hy_hub_consumer_t **cs, int n, hy_time_t deadline,
                       int *result) {
  hy_arm_t arms[4];
  hy__lock_t *locks[4];
  hy__waiter ws[4];
  for (int i = 0; i < n; i++) {
    arms[i] = hy_arm_hub(cs[i]);
    locks[i] = arms[i].ops->lock_of(arms[i].obj);
  }
  hy__wait w;
  ASSERT_OK(hy__wait_init(&w, NULL));
  hy__lock_t *sorted[4];
  memcpy(sorted, locks, sizeof locks);
  hy__lock_all(sorted, n);
  for (int i = 0; i < n; i++) {
    int r;
    if (arms[i].ops->try_fire(arms[i].obj, &arms[i], &r)) {
      ASSERT(hy__wait_claim(&w, i));
      hy__unlock_all(sorted, n);
      hy__wait_fini(&w);
      *result = r;
      return i;
    }
  }
  for (int i = 0; i < n; i++) {
    memset(&ws[i], 0, sizeof ws[i]);
    ws[i].wait = &w;
    ws[i].arm = i;
    arms[i].ops->enqueue(arms[i].obj, &arms[i], &ws[i]);
  }
  hy__unlock_all(sorted, n);
  int st = hy__wait_park(&w, deadline);
  for (int i = 0; i < n; i++) {
    hy__lock(locks[i]);
    arms[i].ops->dequeue(arms[i].obj, &arms[i], &ws[i]);
    ASSERT_EQ(ws[i].linked, 0);
    hy__unlock(locks[i]);
  }
  *result = w.result;
  hy__wait_fini(&w);
  return st;
}

typedef struct {
  hy_hub_t *h;
  int delay_ms;
} delayed_t;

static void *delayed_set(void *p) {
  delayed_t *d = p;
  usleep(d->delay_ms * 1000);
  hy_hub_set(d->h);
  return NULL;
}

TEST_IMPL(hub_select_arm) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_hub_t *h1, *h2;
  ASSERT_OK(hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &h1));
  ASSERT_OK(hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &h2));
  hy_hub_consumer_t *c[2];
  ASSERT_OK(hy_hub_connect(h1, &c[0]));
  ASSERT_OK(hy_hub_connect(h2, &c[1]));
  hy_arm_t a = hy_arm_hub(c[0]);
  ASSERT_EQ(a.kind, HY_ARM_OBJECT);
  ASSERT(a.guard);
  ASSERT(strcmp(a.ops->name, "hub") == 0);
  int res;
  /* Ready at once: try_fire takes it. */
  hy_hub_set(h2);
  ASSERT_EQ(mini_select(c, 2, HY_FOREVER, &res), 1);
  ASSERT_EQ(res, 0);
  ASSERT_ERR(poke(c[1]), HY_ETIMEDOUT);
  /* Nothing ready: times out, and a set afterwards is not eaten by the
   * stale waiter: it stays pending. */
  ASSERT_EQ(mini_select(c, 2, hy_deadline_in(HY_MS(10)), &res),
            HY__FIRED_TIMEOUT);
  hy_hub_set(h1);
  ASSERT_OK(poke(c[0]));
  /* Blocks; a set on h1 from another thread fires arm 0 only. */
  delayed_t d = {h1, 10};
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, delayed_set, &d), 0);
  ASSERT_EQ(mini_select(c, 2, HY_FOREVER, &res), 0);
  ASSERT_EQ(res, 0);
  pthread_join(th, NULL);
  ASSERT_ERR(poke(c[0]), HY_ETIMEDOUT);
  ASSERT_ERR(poke(c[1]), HY_ETIMEDOUT);
  /* A waiter whose wait was claimed by another arm is skipped: the
   * release goes pending for the consumer instead. */
  hy__wait w;
  ASSERT_OK(hy__wait_init(&w, NULL));
  hy__waiter wr;
  memset(&wr, 0, sizeof wr);
  wr.wait = &w;
  hy_arm_t arm = hy_arm_hub(c[0]);
  hy__lock(arm.ops->lock_of(c[0]));
  arm.ops->enqueue(c[0], &arm, &wr);
  hy__unlock(arm.ops->lock_of(c[0]));
  ASSERT(hy__wait_claim(&w, 5)); /* "another arm" won */
  hy_hub_set(h1);
  ASSERT_EQ(atomic_load(&w.state), 5);
  hy__lock(arm.ops->lock_of(c[0]));
  arm.ops->dequeue(c[0], &arm, &wr);
  hy__unlock(arm.ops->lock_of(c[0]));
  hy__wait_fini(&w);
  ASSERT_OK(poke(c[0]));
  /* Destroy: the arm fires with HY_ECLOSED. */
  ASSERT_OK(hy_hub_destroy(h2));
  ASSERT_EQ(mini_select(&c[1], 1, HY_FOREVER, &res), 0);
  ASSERT_EQ(res, HY_ECLOSED);
  ASSERT_OK(hy_hub_disconnect(c[0]));
  ASSERT_OK(hy_hub_disconnect(c[1]));
  ASSERT_OK(hy_hub_destroy(h1));
  test_rt_close(rt, HY_MS(20));
  return 0;
}

/* ----------------------------------------------------- sys/shutdown */

typedef struct {
  hy_runtime_t *rt;
  atomic_int phase_seen;
  atomic_int released;
} sd_t;

static void *shutdown_watcher(void *p) {
  sd_t *s = p;
  hy_hub_consumer_t *c;
  if (hy_hub_connect_name(s->rt, "sys/shutdown", &c) < 0)
    return (void *)-1;
  int rc = hy_hub_wait(c);
  if (rc == 0)
    atomic_fetch_add(&s->released, 1);
  hy_hub_disconnect(c);
  return (void *)(intptr_t)rc;
}

static void *late_watcher(void *p) {
  sd_t *s = p;
  hy_hub_consumer_t *c;
  /* Connects after the shutdown began: the manual hub's state shows. */
  if (hy_hub_connect_name(s->rt, "sys/shutdown", &c) < 0)
    return (void *)-1;
  int rc = hy_hub_wait_until(c, 0);
  hy_hub_disconnect(c);
  return (void *)(intptr_t)rc;
}

static void *shutdown_starter(void *p) {
  sd_t *s = p;
  hy_runtime_shutdown(s->rt, HY_MS(50));
  hy_task_t t;
  void *r = (void *)-2;
  if (hy_task_spawn(s->rt, late_watcher, s, NULL, &t) == 0)
    hy_task_join(s->rt, t, &r);
  return r;
}

TEST_IMPL(hub_sys_shutdown_at_quiesce) {
  hy_runtime_t *rt = test_rt_new(2);
  sd_t s = {rt, 0, 0};
  enum { N = 20 };
  hy_task_t t[N], st;
  for (int i = 0; i < N; i++)
    ASSERT_OK(hy_task_spawn(rt, shutdown_watcher, &s, NULL, &t[i]));
  hy_hub_t *sd;
  ASSERT_OK(hy_hub_find(rt, "sys/shutdown", &sd));
  hy_hub_info_t info = {.size = sizeof info};
  ASSERT_OK(hy_hub_info(sd, &info));
  ASSERT_EQ(info.signalled, 0);
  ASSERT_EQ(info.kind, HY_HUB_MANUAL_RESET);
  while (1) { /* all connected and waiting */
    ASSERT_OK(hy_hub_info(sd, &info));
    if (info.consumers == N)
      break;
    usleep(500);
  }
  usleep(5000);
  ASSERT_OK(hy_task_spawn(rt, shutdown_starter, &s, NULL, &st));
  ASSERT_OK(hy_runtime_run(rt));
  /* Released by the set, not cancelled: they ended during the drain. */
  for (int i = 0; i < N; i++) {
    void *r;
    ASSERT_OK(hy_task_join(rt, t[i], &r));
    ASSERT_EQ((intptr_t)r, 0);
  }
  void *r;
  ASSERT_OK(hy_task_join(rt, st, &r));
  ASSERT_EQ((intptr_t)r, 0);
  ASSERT_EQ(atomic_load(&s.released), N);
  ASSERT_OK(hy_hub_info(sd, &info));
  ASSERT_EQ(info.signalled, 1);
  ASSERT_EQ(info.sets, 1);
  hy_shutdown_summary_t sum = {.size = sizeof sum};
  ASSERT_OK(hy_runtime_shutdown_summary(rt, &sum));
  ASSERT_EQ(sum.tasks_cancelled, 0);
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

/* ------------------------------------------------- more waiters, hosts */

TEST_IMPL(hub_shared_consumer_is_one_event) {
  /* Two tasks waiting on the same consumer share its event: one set
   * releases one of them (auto-reset), the next set the other. */
  hy_runtime_t *rt = test_rt_new(2);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &h));
  hy_hub_consumer_t *c;
  ASSERT_OK(hy_hub_connect(h, &c));
  atomic_int n = 0;
  waiter_t w1 = {rt, c, HY_FOREVER, &n, 0}, w2 = {rt, c, HY_FOREVER, &n, 0};
  hy_task_t t1, t2;
  ASSERT_OK(hy_task_spawn(rt, wait_task, &w1, NULL, &t1));
  ASSERT_OK(hy_task_spawn(rt, wait_task, &w2, NULL, &t2));
  wait_started(&w1);
  wait_started(&w2);
  ASSERT_EQ(hy_hub_set(h), 1);
  hy_time_t limit = hy_deadline_in(HY_SEC(10));
  while (atomic_load(&n) < 1) {
    ASSERT(hy_now() < limit);
    usleep(200);
  }
  usleep(20000);
  ASSERT_EQ(atomic_load(&n), 1); /* not both */
  ASSERT_EQ(hy_hub_set(h), 1);
  ASSERT_OK(hy_task_join(rt, t1, NULL));
  ASSERT_OK(hy_task_join(rt, t2, NULL));
  ASSERT_EQ(atomic_load(&n), 2);
  ASSERT_ERR(poke(c), HY_ETIMEDOUT);
  /* Manual reset: one set releases every waiter of the consumer. */
  hy_hub_t *m;
  ASSERT_OK(hy_hub_create(rt, NULL, HY_HUB_MANUAL_RESET, &m));
  hy_hub_consumer_t *mc;
  ASSERT_OK(hy_hub_connect(m, &mc));
  w1 = (waiter_t){rt, mc, HY_FOREVER, &n, 0};
  w2 = (waiter_t){rt, mc, HY_FOREVER, &n, 0};
  ASSERT_OK(hy_task_spawn(rt, wait_task, &w1, NULL, &t1));
  ASSERT_OK(hy_task_spawn(rt, wait_task, &w2, NULL, &t2));
  wait_started(&w1);
  wait_started(&w2);
  ASSERT_EQ(hy_hub_set(m), 1);
  ASSERT_OK(hy_task_join(rt, t1, NULL));
  ASSERT_OK(hy_task_join(rt, t2, NULL));
  ASSERT_EQ(atomic_load(&n), 4);
  ASSERT_OK(hy_hub_disconnect(c));
  ASSERT_OK(hy_hub_disconnect(mc));
  ASSERT_OK(hy_hub_destroy(h));
  ASSERT_OK(hy_hub_destroy(m));
  test_rt_close(rt, HY_MS(20));
  return 0;
}

TEST_IMPL(hub_embedded_host) {
  /* No workers: the host's run_once runs the task that waits; the host
   * sets the hub between calls. */
  hy_runtime_t *rt = test_rt_new(0);
  hy_hub_t *h;
  ASSERT_OK(hy_hub_create(rt, "t/host", HY_HUB_AUTO_RESET, &h));
  hy_hub_consumer_t *c;
  ASSERT_OK(hy_hub_connect_name(rt, "t/host", &c));
  atomic_int n = 0;
  waiter_t w = {rt, c, HY_FOREVER, &n, 0};
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, wait_task, &w, NULL, &t));
  ASSERT_GE(hy_runtime_run_once(rt, 0), 1);
  ASSERT_EQ(atomic_load(&w.started), 1);
  ASSERT_EQ(atomic_load(&n), 0); /* parked */
  ASSERT_EQ(hy_hub_set(h), 1);
  hy_time_t limit = hy_deadline_in(HY_SEC(10));
  while (atomic_load(&n) == 0) {
    ASSERT(hy_now() < limit);
    ASSERT_OK(hy_runtime_run_once(rt, HY_MS(10)));
  }
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_OK(hy_hub_disconnect(c));
  ASSERT_OK(hy_hub_destroy(h));
  test_rt_close(rt, HY_MS(20));
  return 0;
}
