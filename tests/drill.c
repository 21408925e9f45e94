/* drill.c - the shutdown drill (see drill.h). */
#include <signal.h>
#include <string.h>

#include "drill.h"
#include "test.h"

static void record(void *arg, int phase, int worker) {
  drill_t *d = arg;
  int i = atomic_fetch_add(&d->n[worker], 1);
  if (i < 8)
    d->seq[worker][i] = phase;
}

static void *worker(void *p) {
  drill_t *d = p;
  hy_hub_consumer_t *c;
  if (hy_hub_connect_name(d->rt, "sys/shutdown", &c) < 0)
    return (void *)-1;
  for (;;) {
    /* The work tick doubles as the wait for the stop signal. */
    int rc = hy_hub_wait_until(c, hy_deadline_in(HY_MS(1)));
    if (rc == 0)
      break;
    if (rc != HY_ETIMEDOUT)
      return (void *)-2;
    atomic_fetch_add(&d->taken, 1);
    hy_sleep(d->rt, HY_MS(2)); /* the job */
    atomic_fetch_add(&d->finished, 1);
  }
  hy_hub_disconnect(c);
  atomic_fetch_add(&d->stopped, 1);
  return NULL;
}

static void *supervisor(void *p) {
  drill_t *d = p;
  int sigs[] = {SIGTERM, SIGINT};
  hy_sigrecv_t *r;
  if (hy_signal_subscribe(d->rt, sigs, 2, &r) < 0)
    return (void *)-1;
  atomic_store(&d->got_term, -1);
  for (;;) {
    int sig;
    int rc = hy_signal_read_until(r, hy_deadline_in(HY_MS(100)), &sig);
    if (rc == 0 && sig == SIGTERM) {
      atomic_store(&d->got_term, 1);
      hy_runtime_shutdown(d->rt, HY_MS(200));
      break;
    }
  }
  /* Some clean-up while still subscribed: on Windows the console handler
   * must not return before this receiver is gone. */
  hy_sleep(d->rt, HY_MS(50));
  atomic_store(&d->unsubscribed, 1);
  hy_signal_unsubscribe(r);
  return NULL;
}

void drill_start(drill_t *d, hy_runtime_t *rt) {
  memset(d, 0, sizeof *d);
  d->rt = rt;
  hy_runtime_on_phase(rt, record, d);
  ASSERT_OK(hy_task_spawn(rt, supervisor, d, NULL, &d->supervisor));
  for (int i = 0; i < DRILL_WORKERS; i++)
    ASSERT_OK(hy_task_spawn(rt, worker, d, NULL, &d->workers[i]));
  while (atomic_load(&d->got_term) != -1 || atomic_load(&d->finished) < 50)
    hy_sleep(NULL, HY_MS(1));
}

void drill_check_and_close(drill_t *d) {
  hy_runtime_t *rt = d->rt;
  ASSERT_EQ(atomic_load(&d->got_term), 1);
  ASSERT_EQ(atomic_load(&d->stopped), DRILL_WORKERS);
  ASSERT_EQ(atomic_load(&d->taken), atomic_load(&d->finished));
  for (int i = 0; i < DRILL_WORKERS; i++) {
    void *r;
    ASSERT_OK(hy_task_join(rt, d->workers[i], &r));
    ASSERT(r == NULL);
  }
  ASSERT_OK(hy_task_join(rt, d->supervisor, NULL));
  for (int k = 0; k < 2; k++) {
    ASSERT_EQ(atomic_load(&d->n[k]), 4);
    for (int i = 0; i < 4; i++)
      ASSERT_EQ(d->seq[k][i], HY_PHASE_QUIESCE + i);
  }
  hy_shutdown_summary_t sum = {.size = sizeof sum};
  ASSERT_OK(hy_runtime_shutdown_summary(rt, &sum));
  ASSERT_EQ(sum.tasks_cancelled, 0);
  ASSERT_OK(hy_runtime_close(rt));
}
