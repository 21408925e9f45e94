/* bench/hub.c - hub events (bench/run hub): how long from hy_hub_set until
 * the consumers' tasks run again, with 1 and with 10,000 consumers each
 * awaited by its own task, and what a set costs per idle consumer.
 * Prints `workload<TAB>hydra<TAB>value<TAB>unit` lines.
 *
 *   hub latency N W   N consumers (tasks), W workers
 *   hub idle-set N    N consumers nobody waits on
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hydra.h"

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

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

typedef struct {
  hy_hub_consumer_t *c;
  int64_t *lat;        /* per round: this consumer's latency */
} cons_t;

static _Atomic int64_t set_at;
static atomic_int released;
static int rounds;

static void *consumer(void *p) {
  cons_t *c = p;
  for (int r = 0; r <= rounds; r++) { /* round 0 warms up */
    if (hy_hub_wait(c->c) != 0)
      break;
    if (r > 0)
      c->lat[r - 1] = hy_now() - atomic_load(&set_at);
    atomic_fetch_add(&released, 1);
  }
  return NULL;
}

static void latency(int n, int workers) {
  rounds = n == 1 ? 20000 : 30;
  hy_runtime_t *rt = mk(workers);
  hy_hub_t *h;
  hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &h);
  cons_t *cs = calloc((size_t)n, sizeof *cs);
  hy_task_t *ts = calloc((size_t)n, sizeof *ts);
  int64_t *lat = calloc((size_t)n * (size_t)rounds, sizeof *lat);
  int64_t *all = calloc((size_t)rounds, sizeof *all);
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.stack_size = 16 * 1024;
  for (int i = 0; i < n; i++) {
    hy_hub_connect(h, &cs[i].c);
    cs[i].lat = lat + (size_t)i * (size_t)rounds;
    hy_task_spawn(rt, consumer, &cs[i], &o, &ts[i]);
  }
  hy_sleep(NULL, HY_MS(50)); /* let them all park */
  for (int r = -1; r < rounds; r++) {
    atomic_store(&released, 0);
    int64_t t0 = hy_now();
    atomic_store(&set_at, t0);
    hy_hub_set(h);
    while (atomic_load(&released) < n)
      if (n > 1)
        sched_yield();
    if (r >= 0)
      all[r] = hy_now() - t0;
    /* Let every consumer get back to its wait before the next set (a
     * set that finds it running would be coalesced into a release the
     * consumer finds on its next wait: faster, but not what we measure). */
    if (n > 1)
      hy_sleep(NULL, HY_MS(5));
    else
      for (volatile int k = 0; k < 2000; k++)
        ;
  }
  for (int i = 0; i < n; i++)
    hy_task_join(rt, ts[i], NULL);
  size_t total = (size_t)n * (size_t)rounds;
  qsort(lat, total, sizeof *lat, cmp64);
  qsort(all, (size_t)rounds, sizeof *all, cmp64);
  printf("hub-release-n%d-w%d-p50\thydra\t%.2f\tus\n", n, workers,
         (double)lat[total / 2] / 1e3);
  printf("hub-release-n%d-w%d-p99\thydra\t%.2f\tus\n", n, workers,
         (double)lat[total * 99 / 100] / 1e3);
  if (n > 1) {
    printf("hub-release-all-n%d-w%d-median\thydra\t%.2f\tms\n", n, workers,
           (double)all[rounds / 2] / 1e6);
    printf("hub-release-all-n%d-w%d-per-consumer\thydra\t%.1f\tns\n", n,
           workers, (double)all[rounds / 2] / n);
    printf("hub-release-all-n%d-w%d-max\thydra\t%.2f\tms\n", n, workers,
           (double)all[rounds - 1] / 1e6);
  }
  for (int i = 0; i < n; i++)
    hy_hub_disconnect(cs[i].c);
  hy_hub_destroy(h);
  hy_runtime_shutdown(rt, HY_MS(10));
  hy_runtime_close(rt);
  free(cs);
  free(ts);
  free(lat);
  free(all);
}

static void idle_set(int n) {
  hy_runtime_t *rt = mk(1);
  hy_hub_t *h;
  hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &h);
  hy_hub_consumer_t **cs = calloc((size_t)n, sizeof *cs);
  for (int i = 0; i < n; i++)
    hy_hub_connect(h, &cs[i]);
  int reps = n == 1 ? 1000000 : 200;
  int64_t t0 = hy_now();
  for (int r = 0; r < reps; r++)
    hy_hub_set(h);
  int64_t dt = hy_now() - t0;
  printf("hub-idle-set-n%d\thydra\t%.1f\tns/consumer\n", n,
         (double)dt / reps / n);
  for (int i = 0; i < n; i++)
    hy_hub_disconnect(cs[i]);
  hy_hub_destroy(h);
  hy_runtime_shutdown(rt, HY_MS(10));
  hy_runtime_close(rt);
  free(cs);
}

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "latency") == 0) {
    latency(atoi(argv[2]), atoi(argv[3]));
    return 0;
  }
  if (argc >= 3 && strcmp(argv[1], "idle-set") == 0) {
    idle_set(atoi(argv[2]));
    return 0;
  }
  fprintf(stderr, "usage: hub latency N W | hub idle-set N\n");
  return 2;
}
