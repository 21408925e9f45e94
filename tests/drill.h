/* drill.h - the shutdown drill both signal suites run: workers take jobs
 * and finish each one they took; a supervisor task turns SIGTERM (a POSIX
 * signal, or a console control event on Windows) into hy_runtime_shutdown;
 * the workers see sys/shutdown, finish what they hold and stop.  Nothing
 * taken is lost, nobody needs cancelling, and every worker thread sees the
 * phases in order. */
#ifndef HYDRA_TEST_DRILL_H
#define HYDRA_TEST_DRILL_H

#include <stdatomic.h>

#include "hydra.h"

enum { DRILL_WORKERS = 16 };

typedef struct drill {
  hy_runtime_t *rt;
  atomic_int taken, finished, stopped;
  atomic_int got_term;     /* -1: subscribed, 1: SIGTERM read */
  atomic_int unsubscribed; /* the supervisor's receiver is gone */
  atomic_int n[8];         /* phases seen per worker thread */
  int seq[8][8];
  hy_task_t workers[DRILL_WORKERS], supervisor;
} drill_t;

/* Starts the drill on rt (two workers) and returns once the supervisor
 * listens and the workers have finished some jobs: the caller then raises
 * SIGTERM its own way and calls hy_runtime_run(rt). */
void drill_start(drill_t *d, hy_runtime_t *rt);

/* After hy_runtime_run: checks what the drill promises, closes rt. */
void drill_check_and_close(drill_t *d);

#endif /* HYDRA_TEST_DRILL_H */
