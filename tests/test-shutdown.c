/* test-shutdown.c - the multi-phase shutdown. */
#define _GNU_SOURCE
#include <stdatomic.h>
#ifndef _WIN32
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

#include "sock_compat.h" /* before compat.h: winsock2.h before windows.h */
#include "hydra.h"
#include "compat.h"
#include "rt_util.h"
#include "test.h"

/* Every worker records the phases it enters, in order. */
typedef struct {
  atomic_int n[8];
  int seq[8][8];
} phases_t;

static void record(void *arg, int phase, int worker) {
  phases_t *p = arg;
  int i = atomic_fetch_add(&p->n[worker], 1);
  if (i < 8)
    p->seq[worker][i] = phase;
}

static void check_order(phases_t *p, int workers) {
  for (int w = 0; w < workers; w++) {
    for (int i = 0; i < p->n[w] && i < 8; i++)
      fprintf(stderr, "worker %d phase %d: %s\n", w, i,
              hy_phase_name(p->seq[w][i]));
    ASSERT_EQ(p->n[w], 4);
    for (int i = 0; i < 4; i++)
      ASSERT_EQ(p->seq[w][i], HY_PHASE_QUIESCE + i);
  }
}

static void *sleeper(void *p) {
  return (void *)(intptr_t)hy_sleep((hy_runtime_t *)p, HY_SEC(60));
}

static void *busy(void *p) {
  hy_runtime_t *rt = p;
  /* Work that finishes by itself during the drain. */
  for (int i = 0; i < 20; i++)
    hy_sleep(rt, HY_MS(5));
  return (void *)1;
}

static void *spinner(void *p) {
  hy_runtime_t *rt = p;
  while (hy_yield(rt) == 0)
    ;
  return (void *)2;
}

TEST_IMPL(shutdown_phases_in_order) {
  hy_runtime_t *rt = test_rt_new(2);
  phases_t ph;
  memset(&ph, 0, sizeof ph);
  hy_runtime_on_phase(rt, record, &ph);
  hy_task_t s[10], b[5], sp;
  for (int i = 0; i < 10; i++)
    ASSERT_OK(hy_task_spawn(rt, sleeper, rt, NULL, &s[i]));
  for (int i = 0; i < 5; i++)
    ASSERT_OK(hy_task_spawn(rt, busy, rt, NULL, &b[i]));
  ASSERT_OK(hy_task_spawn(rt, spinner, rt, NULL, &sp));
  usleep(10000);
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(300)));
  check_order(&ph, 2);
  /* Sleepers were cancelled; the busy ones finished their work first. */
  for (int i = 0; i < 10; i++) {
    void *r;
    ASSERT_OK(hy_task_join(rt, s[i], &r));
    ASSERT_EQ((intptr_t)r, HY_ECANCELED);
  }
  for (int i = 0; i < 5; i++) {
    void *r;
    ASSERT_OK(hy_task_join(rt, b[i], &r));
    ASSERT_EQ((intptr_t)r, 1);
  }
  void *r;
  ASSERT_OK(hy_task_join(rt, sp, &r));
  ASSERT_EQ((intptr_t)r, 2);
  hy_shutdown_summary_t sum = {.size = sizeof sum};
  ASSERT_OK(hy_runtime_shutdown_summary(rt, &sum));
  ASSERT_EQ(sum.phase, HY_PHASE_DONE);
  ASSERT_EQ(sum.tasks_cancelled, 11);
  ASSERT_EQ(sum.tasks_finished, 5);
  ASSERT_GE(sum.phase_ns[HY_PHASE_DRAIN], HY_MS(300)); /* grace of silence */
  /* After shutdown: spawns from outside are refused, a second call is fine. */
  hy_task_t t;
  ASSERT_ERR(hy_task_spawn(rt, sleeper, rt, NULL, &t), HY_ESHUTDOWN);
  ASSERT_OK(hy_runtime_shutdown(rt, 0));
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

/* A task that keeps activity flowing (posts: completions on the port)
 * extends the drain; when it goes silent, the drain ends after grace. */
typedef struct {
  hy_runtime_t *rt;
  atomic_int posts;
  int64_t stopped_at;
} flow_t;

static void noop(void *p) { atomic_fetch_add(&((flow_t *)p)->posts, 1); }

static void *flowing(void *p) {
  flow_t *f = p;
  for (int i = 0; i < 20; i++) { /* 20 x 30 ms = 600 ms of activity */
    hy_runtime_post(f->rt, noop, f);
    hy_sleep(f->rt, HY_MS(30));
  }
  f->stopped_at = hy_now();
  hy_sleep(f->rt, HY_SEC(60)); /* silent from now on */
  return NULL;
}

TEST_IMPL(shutdown_drain_follows_activity) {
  hy_runtime_t *rt = test_rt_new(1);
  flow_t f = {rt, 0, 0};
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, flowing, &f, NULL, &t));
  usleep(5000);
  hy_time_t t0 = hy_now();
  /* A grace far above the 30 ms beats, so that a loaded machine that
   * stalls the worker for a while does not end the drain early. */
  ASSERT_OK(hy_runtime_shutdown(rt, HY_SEC(1)));
  hy_time_t end = hy_now();
  ASSERT_GE(atomic_load(&f.posts), 20);
  ASSERT(f.stopped_at > 0);
  /* The drain outlived the activity by at least grace... */
  ASSERT_GE(end - f.stopped_at, HY_SEC(1));
  ASSERT_GE(end - t0, HY_MS(600));
  /* ...and did not wait for the silent 60 s sleep. */
  ASSERT_LT(end - t0, HY_SEC(30));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

static void *shut_from_task(void *p) {
  hy_runtime_t *rt = p;
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(20)));
  /* Only started: this task goes on and may still spawn clean-up work. */
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, busy, rt, NULL, &t));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  return (void *)3;
}

TEST_IMPL(shutdown_from_task_and_run) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, shut_from_task, rt, NULL, &t));
  ASSERT_OK(hy_runtime_run(rt)); /* returns once the shutdown is done */
  void *r;
  ASSERT_OK(hy_task_join(rt, t, &r));
  ASSERT_EQ((intptr_t)r, 3);
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

static void *shut_thread(void *p) {
  hy_runtime_shutdown((hy_runtime_t *)p, HY_MS(20));
  return NULL;
}

TEST_IMPL(shutdown_concurrent_callers) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_task_t s[50];
  for (int i = 0; i < 50; i++)
    ASSERT_OK(hy_task_spawn(rt, sleeper, rt, NULL, &s[i]));
  pthread_t th[4];
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(pthread_create(&th[i], NULL, shut_thread, rt), 0);
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(20)));
  for (int i = 0; i < 4; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < 50; i++)
    ASSERT_OK(hy_task_join(rt, s[i], NULL));
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

TEST_IMPL(shutdown_embedded) {
  hy_runtime_t *rt = test_rt_new(0);
  phases_t ph;
  memset(&ph, 0, sizeof ph);
  hy_runtime_on_phase(rt, record, &ph);
  hy_task_t s[5];
  for (int i = 0; i < 5; i++)
    ASSERT_OK(hy_task_spawn(rt, sleeper, rt, NULL, &s[i]));
  ASSERT_GE(hy_runtime_run_once(rt, 0), 1);
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(20)));
  check_order(&ph, 1);
  for (int i = 0; i < 5; i++) {
    void *r;
    ASSERT_OK(hy_task_join(rt, s[i], &r));
    ASSERT_EQ((intptr_t)r, HY_ECANCELED);
  }
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

TEST_IMPL(shutdown_terminate_arm_ready) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_arm_t a = hy_arm_terminate(rt);
  ASSERT_EQ(a.kind, HY_ARM_TERMINATE);
  ASSERT(a.ops != NULL);
  ASSERT_OK(hy_runtime_shutdown(rt, 0));
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

/* Shutdown with a task blocked on a channel and one blocked on a socket
 * read: both are cancelled at their await (HY_ECANCELED), the read's
 * operation completes before its memory goes (ASan watches), a task busy
 * with work that ends by itself finishes it, and nothing is left over. */

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *ch;
  hy_listener_t *l;
  atomic_int ready;
} blocked_t;

static void *blocked_on_chan(void *p) {
  blocked_t *b = p;
  int v;
  atomic_fetch_add(&b->ready, 1);
  return (void *)(intptr_t)hy_chan_recv(b->ch, &v);
}

static void *blocked_on_read(void *p) {
  blocked_t *b = p;
  hy_conn_t *c;
  int rc = hy_tcp_accept(b->l, &c);
  if (rc < 0)
    return (void *)(intptr_t)rc;
  atomic_fetch_add(&b->ready, 1);
  char buf[16];
  rc = hy_conn_read(c, buf, sizeof buf); /* the client never writes */
  hy_conn_close(c);
  return (void *)(intptr_t)rc;
}

TEST_IMPL(shutdown_blocked_on_chan_and_io) {
  hy_runtime_t *rt = test_rt_new(2);
  blocked_t b = {.rt = rt};
  ASSERT_OK(hy_chan_new(rt, sizeof(int), 0, &b.ch));
  hy_addr_t a;
  ASSERT_OK(hy_addr_parse("127.0.0.1:0", &a));
  ASSERT_OK(hy_tcp_listen(rt, &a, NULL, &b.l));
  ASSERT_OK(hy_listener_addr(b.l, &a));
  hy_task_t tc, tr, ts, tb;
  ASSERT_OK(hy_task_spawn(rt, blocked_on_chan, &b, NULL, &tc));
  ASSERT_OK(hy_task_spawn(rt, blocked_on_read, &b, NULL, &tr));
  ASSERT_OK(hy_task_spawn(rt, sleeper, rt, NULL, &ts));
  ASSERT_OK(hy_task_spawn(rt, busy, rt, NULL, &tb));
  int fd = sock_open(AF_INET, SOCK_STREAM);
  ASSERT(fd >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)hy_addr_port(&a))};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  for (int i = 0; i < 30000 && atomic_load(&b.ready) < 2; i++)
    usleep(1000);
  ASSERT_EQ(atomic_load(&b.ready), 2);
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(200)));
  void *r;
  ASSERT_OK(hy_task_join(rt, tc, &r));
  ASSERT_EQ((intptr_t)r, HY_ECANCELED);
  ASSERT_OK(hy_task_join(rt, tr, &r));
  ASSERT_EQ((intptr_t)r, HY_ECANCELED);
  ASSERT_OK(hy_task_join(rt, ts, &r));
  ASSERT_EQ((intptr_t)r, HY_ECANCELED);
  ASSERT_OK(hy_task_join(rt, tb, &r));
  ASSERT_EQ((intptr_t)r, 1); /* finished its work in the drain */
  hy_shutdown_summary_t sum = {.size = sizeof sum};
  ASSERT_OK(hy_runtime_shutdown_summary(rt, &sum));
  ASSERT_EQ(sum.tasks_cancelled, 3);
  ASSERT_EQ(sum.tasks_finished, 1);
  sock_close(fd);
  ASSERT_OK(hy_listener_close(b.l));
  ASSERT_OK(hy_chan_close(b.ch));
  hy_chan_release(b.ch);
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}
