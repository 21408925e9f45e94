/* bench/events.c - event-model workloads (bench/run events):
 *
 *   events fanout-100 W       one sender, 1,000,000 events, a broadcast
 *                             channel with 100 receivers (queues of 64,
 *                             blocking); ns per delivered copy
 *   events unicast-workers W  a unicast channel, 8 receivers at equal
 *                             priority, 1,000,000 events; events/s, and
 *                             the spread between receivers
 *
 * W is the worker count (default 2); with 1 the names get "-w1".  Each
 * prints `workload<TAB>hydra<TAB>value<TAB>unit` lines; bench/ref/go/events
 * runs the same workloads in Go.  EVENTS_N sets the event count;
 * EVENTS_STATS=1 adds a comment line with the scheduler's counters (port
 * wakes of sleeping workers, steals, switches, parks).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hydra.h"
#include "stats.h"

static hy_runtime_t *rt;
static hy_broker_t *br;
static long nevents = 1000000;
static const char *suffix = ""; /* "-w1" with one worker */

typedef struct rx {
  hy_receiver_t *r;
  long got;
} rx;

static void *receiver(void *p) {
  rx *a = p;
  hy_event_t *evs[64];
  for (;;) {
    int n = hy_receiver_read_many(a->r, evs, 64, HY_FOREVER);
    if (n < 0)
      break;
    for (int i = 0; i < n; i++)
      hy_event_unref(evs[i]);
    a->got += n;
  }
  return NULL;
}

typedef struct job {
  const char *path;
  int nrecv;
  rx *rx;
  hy_time_t elapsed;
} job;

static void *run(void *p) {
  job *j = p;
  hy_task_t *t = malloc(sizeof *t * (size_t)j->nrecv);
  for (int i = 0; i < j->nrecv; i++)
    hy_task_spawn(rt, receiver, &j->rx[i], NULL, &t[i]);
  hy_sender_t *s;
  if (hy_publish(br, j->path, &s) != 0)
    exit(1);
  hy_time_t t0 = hy_now();
  for (long i = 0; i < nevents; i++) {
    hy_event_t *ev;
    int64_t v = i;
    hy_event_new(&hy_event_i64, &v, sizeof v, HY_FOREVER, &ev);
    if (hy_send(s, ev, HY_FOREVER) < 0)
      exit(1);
    hy_event_unref(ev);
  }
  hy_channel_delete(br, j->path); /* receivers drain, then stop */
  for (int i = 0; i < j->nrecv; i++)
    hy_task_join(rt, t[i], NULL);
  j->elapsed = hy_now() - t0;
  hy_sender_free(s);
  free(t);
  return NULL;
}

static void workload(const char *path, int limit, int nrecv) {
  hy_channel_create(br, path, limit);
  job j = {path, nrecv, calloc((size_t)nrecv, sizeof(rx)), 0};
  hy_recv_opts_t o = HY_RECV_OPTS_INIT;
  o.capacity = 64;
  for (int i = 0; i < nrecv; i++)
    hy_subscribe(br, path, &o, &j.rx[i].r);
  hy_task_t t;
  hy_task_spawn(rt, run, &j, NULL, &t);
  hy_task_join(rt, t, NULL);
  long total = 0, lo = -1, hi = 0;
  for (int i = 0; i < nrecv; i++) {
    total += j.rx[i].got;
    if (lo < 0 || j.rx[i].got < lo)
      lo = j.rx[i].got;
    if (j.rx[i].got > hi)
      hi = j.rx[i].got;
    hy_unsubscribe(j.rx[i].r);
  }
  if (limit == 0) {
    if (total != nevents * nrecv)
      fprintf(stderr, "fanout: %ld copies, expected %ld\n", total, nevents * nrecv);
    printf("fanout-100%s\thydra\t%.1f\tns/copy\n", suffix,
           (double)j.elapsed / (double)total);
  } else {
    if (total != nevents)
      fprintf(stderr, "unicast: %ld events, expected %ld\n", total, nevents);
    printf("unicast-workers%s\thydra\t%.0f\tevents/s\n", suffix,
           (double)total / ((double)j.elapsed / 1e9));
    printf("# unicast-workers%s hydra spread (max-min)/mean %.1f%%\n", suffix,
           100.0 * (double)(hi - lo) / ((double)total / nrecv));
  }
  free(j.rx);
  bench_print_stats(rt, "EVENTS_STATS");
}

int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "fanout-100";
  int workers = argc > 2 ? atoi(argv[2]) : 2;
  if (getenv("EVENTS_N"))
    nevents = atol(getenv("EVENTS_N"));
  if (workers == 1)
    suffix = "-w1";
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = workers;
  if (hy_runtime_new(&o, &rt) != 0 || hy_broker_new(rt, "bench", &br) != 0) {
    fprintf(stderr, "runtime: failed\n");
    return 1;
  }
  if (strcmp(what, "fanout-100") == 0)
    workload("fan", 0, 100);
  else if (strcmp(what, "unicast-workers") == 0)
    workload("work", 1, 8);
  else
    fprintf(stderr, "usage: events fanout-100|unicast-workers [workers]\n");
  hy_broker_free(br);
  hy_runtime_shutdown(rt, HY_MS(10));
  hy_runtime_close(rt);
  return 0;
}
