/* hello - the smallest Hydra program: a runtime, a few tasks that sleep and
 * talk back through join, and a clean shutdown.
 *
 *   build/release/hello [tasks]
 */
#include <stdio.h>
#include <stdlib.h>

#include "hydra.h"

typedef struct {
  hy_runtime_t *rt;
  int id;
} job_t;

static void *work(void *arg) {
  job_t *j = arg;
  /* Tasks sleep without holding a thread: all of them nap at once. */
  hy_sleep(j->rt, HY_MS(10 * (j->id % 5)));
  return (void *)(intptr_t)(j->id * j->id);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 10;
  if (n < 1 || n > 100000)
    n = 10;
  hy_runtime_t *rt;
  int rc = hy_runtime_new(NULL, &rt);
  if (rc < 0) {
    fprintf(stderr, "hello: %s\n", hy_strerror(rc));
    return 1;
  }
  printf("hydra runtime: %d workers, %s backend\n", hy_runtime_workers(rt),
         hy_runtime_backend_name(rt));
  job_t *jobs = calloc((size_t)n, sizeof *jobs);
  hy_task_t *tasks = calloc((size_t)n, sizeof *tasks);
  if (!jobs || !tasks)
    return 1;
  hy_time_t t0 = hy_now();
  for (int i = 0; i < n; i++) {
    jobs[i].rt = rt;
    jobs[i].id = i;
    char name[32];
    snprintf(name, sizeof name, "square-%d", i);
    hy_task_opts_t o = HY_TASK_OPTS_INIT;
    o.name = name;
    if ((rc = hy_task_spawn(rt, work, &jobs[i], &o, &tasks[i])) < 0) {
      fprintf(stderr, "spawn: %s\n", hy_strerror(rc));
      return 1;
    }
  }
  long sum = 0;
  for (int i = 0; i < n; i++) {
    void *r;
    hy_task_join(rt, tasks[i], &r);
    if (i < 5 || i == n - 1)
      printf("task %d returned %ld\n", i, (long)(intptr_t)r);
    sum += (long)(intptr_t)r;
  }
  printf("%d tasks done in %.1f ms, sum of squares %ld\n", n,
         (double)(hy_now() - t0) / 1e6, sum);
  hy_runtime_shutdown(rt, HY_MS(100));
  hy_runtime_close(rt);
  free(jobs);
  free(tasks);
  return 0;
}
