/* worker_pool - jobs on a unicast channel, spread over worker tasks that
 * raise or lower their receiver priority as their load changes (the load
 * balancing of seed 002: "receivers that are heavily loaded with work can
 * reduce their priority; receivers that have little work to do can
 * increase their priority").
 *
 *   build/release/worker_pool [jobs] [workers]
 *
 * A producer task publishes `jobs` jobs (1-5 ms of simulated work each) to
 * the unicast channel "pool/jobs".  Worker i works at speed 1/(1 + i/2):
 * the slow ones fall behind, lower their priority, and the channel hands
 * new jobs to the ones with less to do.  Each worker's priority is minus
 * its load (jobs queued for it, plus the one in hand).  At the end it
 * prints how the jobs were spread and checks that every job was done once.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hydra.h"

#define MAX_WORKERS 16

typedef struct job {
  int32_t id;
  int32_t cost_us;
} job_t;

static const hy_event_type_t job_type = {"example/job", sizeof(job_t), NULL,
                                         NULL, NULL};

typedef struct pool pool_t;

typedef struct worker {
  pool_t *pool;
  int id;
  int slowdown_pct;   /* 100: full speed */
  hy_receiver_t *rx;
  long done;
  int64_t busy_ns;
  int64_t lowest_priority;
} worker_t;

struct pool {
  hy_runtime_t *rt;
  hy_broker_t *broker;
  int njobs, nworkers;
  atomic_int completed;
  unsigned char *seen; /* per job: how many times it was done */
  worker_t w[MAX_WORKERS];
};

static int64_t load_of(worker_t *w, int in_hand) {
  hy_recv_stats_t st = {.size = sizeof st};
  if (hy_receiver_stats(w->rx, &st) < 0)
    return 0;
  return (int64_t)st.queued + in_hand;
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  hy_runtime_t *rt = w->pool->rt;
  for (;;) {
    hy_event_t *ev;
    int rc = hy_receiver_read(w->rx, &ev, HY_FOREVER);
    if (rc < 0)
      break; /* cancelled at the end, or the channel went away */
    size_t len;
    const job_t *j = hy_event_data(ev, &len);
    /* Busy: one more in hand. */
    int64_t prio = -load_of(w, 1);
    hy_receiver_set_priority(w->rx, prio);
    if (prio < w->lowest_priority)
      w->lowest_priority = prio;
    int64_t t0 = hy_now();
    hy_sleep(rt, HY_US((int64_t)j->cost_us * w->slowdown_pct / 100));
    w->busy_ns += hy_now() - t0;
    w->pool->seen[j->id]++;
    w->done++;
    hy_event_unref(ev);
    hy_receiver_set_priority(w->rx, -load_of(w, 0));
    atomic_fetch_add(&w->pool->completed, 1);
  }
  hy_unsubscribe(w->rx);
  return NULL;
}

static void *producer_main(void *arg) {
  pool_t *p = arg;
  hy_sender_t *tx;
  if (hy_publish(p->broker, "pool/jobs", &tx) < 0)
    return (void *)1;
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < p->njobs; i++) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    job_t j = {i, 1000 + (int32_t)(seed % 4001)}; /* 1-5 ms */
    hy_event_t *ev;
    if (hy_event_new(&job_type, &j, sizeof j, HY_FOREVER, &ev) < 0)
      return (void *)1;
    int rc = hy_send(tx, ev, HY_FOREVER); /* a full worker queue blocks */
    hy_event_unref(ev);
    if (rc != 1) {
      fprintf(stderr, "worker_pool: job %d not taken: %s\n", i,
              rc < 0 ? hy_strerror(rc) : "no receiver");
      return (void *)1;
    }
    hy_sleep(p->rt, HY_US(700)); /* a steady stream, a little too fast */
  }
  hy_sender_free(tx);
  return NULL;
}

int main(int argc, char **argv) {
  pool_t p;
  memset(&p, 0, sizeof p);
  p.njobs = argc > 1 ? atoi(argv[1]) : 600;
  p.nworkers = argc > 2 ? atoi(argv[2]) : 4;
  if (p.njobs < 1 || p.njobs > 1000000 || p.nworkers < 1 ||
      p.nworkers > MAX_WORKERS) {
    fprintf(stderr, "usage: worker_pool [jobs 1..1000000] [workers 1..%d]\n",
            MAX_WORKERS);
    return 2;
  }
  p.seen = calloc((size_t)p.njobs, 1);
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = 2;
  int rc = hy_runtime_new(&o, &p.rt);
  if (rc < 0 || !p.seen) {
    fprintf(stderr, "worker_pool: %s\n", hy_strerror(rc < 0 ? rc : HY_ENOMEM));
    return 1;
  }
  if ((rc = hy_event_type_register(p.rt, &job_type)) < 0 ||
      (rc = hy_broker_new(p.rt, "pool", &p.broker)) < 0 ||
      (rc = hy_channel_create(p.broker, "pool/jobs", 1)) < 0) {
    fprintf(stderr, "worker_pool: setup: %s\n", hy_strerror(rc));
    return 1;
  }
  hy_task_t tasks[MAX_WORKERS], producer;
  for (int i = 0; i < p.nworkers; i++) {
    worker_t *w = &p.w[i];
    w->pool = &p;
    w->id = i;
    w->slowdown_pct = 100 + 50 * i;
    hy_recv_opts_t ro = HY_RECV_OPTS_INIT;
    ro.capacity = 8;
    if ((rc = hy_subscribe(p.broker, "pool/jobs", &ro, &w->rx)) < 0 ||
        (rc = hy_task_spawn(p.rt, worker_main, w, NULL, &tasks[i])) < 0) {
      fprintf(stderr, "worker_pool: worker %d: %s\n", i, hy_strerror(rc));
      return 1;
    }
  }
  printf("worker_pool: %d jobs, %d workers (worker i works at 1/(1 + i/2) speed)\n",
         p.njobs, p.nworkers);
  hy_time_t t0 = hy_now();
  if ((rc = hy_task_spawn(p.rt, producer_main, &p, NULL, &producer)) < 0)
    return 1;
  void *prc;
  hy_task_join(p.rt, producer, &prc);
  /* Wait for the last jobs, then stop the workers. */
  hy_time_t give_up = hy_deadline_in(HY_SEC(60));
  while (atomic_load(&p.completed) < p.njobs && hy_now() < give_up)
    hy_sleep(p.rt, HY_MS(5));
  double secs = (double)(hy_now() - t0) / 1e9;
  for (int i = 0; i < p.nworkers; i++) {
    hy_task_cancel(p.rt, tasks[i]);
    hy_task_join(p.rt, tasks[i], NULL);
  }
  long total = 0;
  int twice = 0, missing = 0;
  for (int i = 0; i < p.njobs; i++) {
    missing += p.seen[i] == 0;
    twice += p.seen[i] > 1;
  }
  printf("%-8s %-7s %6s %7s %6s  %s\n", "worker", "speed", "jobs", "share",
         "busy", "lowest priority");
  for (int i = 0; i < p.nworkers; i++) {
    worker_t *w = &p.w[i];
    total += w->done;
    printf("%-8d %5.2fx %6ld %6.1f%% %5.0f%%  %lld\n", i,
           100.0 / w->slowdown_pct, w->done, 100.0 * (double)w->done / p.njobs,
           100.0 * (double)w->busy_ns / 1e9 / secs,
           (long long)w->lowest_priority);
  }
  printf("%ld of %d jobs done in %.2f s; %d missing, %d done twice\n", total,
         p.njobs, secs, missing, twice);
  hy_runtime_shutdown(p.rt, HY_MS(100));
  hy_broker_free(p.broker);
  hy_runtime_close(p.rt);
  free(p.seen);
  return (prc == NULL && total == p.njobs && !missing && !twice) ? 0 : 1;
}
