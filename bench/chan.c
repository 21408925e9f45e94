/* bench/chan.c - channel and select workloads (bench/run chan).  Each run
 * prints `workload<TAB>hydra<TAB>value<TAB>unit` lines; bench/ref/go/chan
 * runs the same workloads in Go.
 *
 *   chan pingpong W   two tasks bounce an int over unbuffered channels
 *   chan select2 W    select over 2 channels + a timeout, one always fed
 *   chan select4 W    select over 4 channels, each fed by its own task
 *   chan mpmc W       4 senders, 4 receivers, bounded(64), 10M elements
 *
 * CHAN_STATS=1 adds a comment line with the scheduler's counters (sleeping
 * workers woken, tasks stolen, switches, parks) after each workload.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hydra.h"
#include "stats.h"

static hy_runtime_t *rt;

static hy_runtime_t *mk(int workers) {
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = workers;
  hy_runtime_t *r;
  if (hy_runtime_new(&o, &r) != 0) {
    fprintf(stderr, "runtime: failed\n");
    exit(1);
  }
  return r;
}

static hy_chan_t *chan(size_t esize, size_t cap) {
  hy_chan_t *c;
  if (hy_chan_new(rt, esize, cap, &c) != 0) {
    fprintf(stderr, "chan: failed\n");
    exit(1);
  }
  return c;
}

static void check(int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "%s: %s\n", what, hy_strerror(rc));
    exit(1);
  }
}

static void *run_root(hy_task_fn fn, void *arg) {
  hy_task_t t;
  void *r = NULL;
  check(hy_task_spawn(rt, fn, arg, NULL, &t), "spawn");
  check(hy_task_join(rt, t, &r), "join");
  bench_print_stats(rt, "CHAN_STATS");
  return r;
}

static int workers;

/* ------------------------------------------------------------ pingpong */

#define ROUNDS 1000000L

static hy_chan_t *ping, *pong;

static void *ponger(void *p) {
  (void)p;
  long v;
  for (long i = 0; i < ROUNDS; i++) {
    check(hy_chan_recv(ping, &v), "recv");
    v++;
    check(hy_chan_send(pong, &v), "send");
  }
  return NULL;
}

static void *pingpong_root(void *p) {
  (void)p;
  ping = chan(sizeof(long), 0);
  pong = chan(sizeof(long), 0);
  hy_task_t t;
  check(hy_task_spawn(rt, ponger, NULL, NULL, &t), "spawn");
  long v = 0;
  hy_time_t t0 = hy_now();
  for (long i = 0; i < ROUNDS; i++) {
    check(hy_chan_send(ping, &v), "send");
    check(hy_chan_recv(pong, &v), "recv");
  }
  double ns = (double)(hy_now() - t0) / ROUNDS;
  hy_task_join(rt, t, NULL);
  if (v != ROUNDS)
    fprintf(stderr, "pingpong: wrong count %ld\n", v);
  printf("chan-pingpong-w%d\thydra\t%.1f\tns/roundtrip\n", workers, ns);
  hy_chan_release(ping);
  hy_chan_release(pong);
  return NULL;
}

/* -------------------------------------------------------------- select */

#define SELECTS 2000000L

typedef struct {
  hy_chan_t *c;
  long n;
} feed_t;

static void *feeder(void *p) {
  feed_t *f = p;
  for (long i = 0; i < f->n; i++)
    if (hy_chan_send(f->c, &i) != 0)
      break;
  return NULL;
}

static void *select2_root(void *p) {
  (void)p;
  hy_chan_t *a = chan(sizeof(long), 128), *b = chan(sizeof(long), 128);
  feed_t f = {a, SELECTS};
  hy_task_t t;
  check(hy_task_spawn(rt, feeder, &f, NULL, &t), "spawn");
  long v, got = 0;
  hy_time_t t0 = hy_now();
  for (long i = 0; i < SELECTS; i++) {
    hy_arm_t arms[3] = {hy_arm_recv(a, &v), hy_arm_recv(b, &v),
                        hy_arm_timeout(HY_SEC(1))};
    int k = hy_select(rt, arms, 3);
    got += k == 0;
  }
  double ns = (double)(hy_now() - t0) / SELECTS;
  hy_task_join(rt, t, NULL);
  if (got != SELECTS)
    fprintf(stderr, "select2: %ld of %ld\n", got, SELECTS);
  printf("select-2+timeout\thydra\t%.1f\tns/select\n", ns);
  hy_chan_release(a);
  hy_chan_release(b);
  return NULL;
}

static void *select4_root(void *p) {
  (void)p;
  hy_chan_t *c[4];
  feed_t f[4];
  hy_task_t t[4];
  for (int i = 0; i < 4; i++) {
    c[i] = chan(sizeof(long), 128);
    f[i] = (feed_t){c[i], SELECTS / 4};
    check(hy_task_spawn(rt, feeder, &f[i], NULL, &t[i]), "spawn");
  }
  long v, wins[4] = {0, 0, 0, 0};
  hy_time_t t0 = hy_now();
  for (long i = 0; i < SELECTS; i++) {
    hy_arm_t arms[4] = {hy_arm_recv(c[0], &v), hy_arm_recv(c[1], &v),
                        hy_arm_recv(c[2], &v), hy_arm_recv(c[3], &v)};
    int k = hy_select(rt, arms, 4);
    if (k < 0 || arms[k].result != 0)
      break;
    wins[k]++;
  }
  double ns = (double)(hy_now() - t0) / SELECTS;
  for (int i = 0; i < 4; i++) {
    hy_task_join(rt, t[i], NULL);
    if (wins[i] != SELECTS / 4)
      fprintf(stderr, "select4: channel %d gave %ld\n", i, wins[i]);
    hy_chan_release(c[i]);
  }
  printf("select-4\thydra\t%.1f\tns/select\n", ns);
  return NULL;
}

/* ---------------------------------------------------------------- mpmc */

#define MPMC_N 10000000L
#define MPMC_SIDE 4

static hy_chan_t *mc;

static void *mp_send(void *p) {
  long n = (long)p;
  for (long i = 0; i < n; i++)
    check(hy_chan_send(mc, &i), "send");
  return NULL;
}

static void *mp_recv(void *p) {
  (void)p;
  long v, n = 0;
  while (hy_chan_recv(mc, &v) == 0)
    n++;
  return (void *)n;
}

static void *mpmc_root(void *p) {
  (void)p;
  mc = chan(sizeof(long), 64);
  hy_task_t s[MPMC_SIDE], r[MPMC_SIDE];
  hy_time_t t0 = hy_now();
  for (int i = 0; i < MPMC_SIDE; i++)
    check(hy_task_spawn(rt, mp_recv, NULL, NULL, &r[i]), "spawn");
  for (int i = 0; i < MPMC_SIDE; i++)
    check(hy_task_spawn(rt, mp_send, (void *)(MPMC_N / MPMC_SIDE), NULL, &s[i]),
          "spawn");
  for (int i = 0; i < MPMC_SIDE; i++)
    hy_task_join(rt, s[i], NULL);
  hy_chan_close(mc);
  long got = 0;
  for (int i = 0; i < MPMC_SIDE; i++) {
    void *n;
    hy_task_join(rt, r[i], &n);
    got += (long)n;
  }
  double secs = (double)(hy_now() - t0) / 1e9;
  if (got != MPMC_N)
    fprintf(stderr, "mpmc: got %ld of %ld\n", got, MPMC_N);
  printf("chan-mpmc\thydra\t%.0f\telems/s\n", (double)MPMC_N / secs);
  hy_chan_release(mc);
  return NULL;
}

int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "pingpong";
  workers = argc > 2 ? atoi(argv[2]) : 1;
  rt = mk(workers);
  if (!strcmp(what, "pingpong"))
    run_root(pingpong_root, NULL);
  else if (!strcmp(what, "select2"))
    run_root(select2_root, NULL);
  else if (!strcmp(what, "select4"))
    run_root(select4_root, NULL);
  else if (!strcmp(what, "mpmc"))
    run_root(mpmc_root, NULL);
  else {
    fprintf(stderr, "usage: chan pingpong|select2|select4|mpmc [workers]\n");
    return 2;
  }
  hy_runtime_shutdown(rt, HY_MS(10));
  hy_runtime_close(rt);
  return 0;
}
