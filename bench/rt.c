/* bench/rt.c - runtime workloads (bench/run rt): task switch, spawn+join,
 * skynet, sleeping-timer lateness and parked-task memory.  Each run prints
 * `workload<TAB>hydra<TAB>value<TAB>unit` lines; bench/ref/go/rt runs the
 * same workloads in Go.
 *
 *   rt switch | spawn-join W | skynet W | timers | idle-mem
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#include <psapi.h>
#else
#include <sys/resource.h>
#endif

#include "hydra.h"

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

static void done(hy_runtime_t *r) {
  hy_runtime_shutdown(r, HY_MS(10));
  hy_runtime_close(r);
}

#ifdef _WIN32
static long rss_kb(void) {
  PROCESS_MEMORY_COUNTERS pmc;
  K32GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof pmc);
  return (long)(pmc.WorkingSetSize / 1024);
}

static long peak_kb(void) {
  PROCESS_MEMORY_COUNTERS pmc;
  K32GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof pmc);
  return (long)(pmc.PeakWorkingSetSize / 1024);
}
#else
static long rss_kb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, res = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &res) != 2)
      res = 0;
    fclose(f);
  }
  return res * 4;
}

static long peak_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}
#endif

static void *run_root(hy_task_fn fn, void *arg) {
  hy_task_t t;
  void *r = NULL;
  hy_task_spawn(rt, fn, arg, NULL, &t);
  hy_task_join(rt, t, &r);
  return r;
}

/* ------------------------------------------------------------- switch */

#define SWITCHES 5000000L

static void *yielder(void *p) {
  (void)p;
  for (long i = 0; i < SWITCHES / 2; i++)
    hy_yield(rt);
  return NULL;
}

static void *switch_root(void *p) {
  (void)p;
  hy_task_t a, b;
  hy_task_spawn(rt, yielder, NULL, NULL, &a);
  hy_task_spawn(rt, yielder, NULL, NULL, &b);
  hy_time_t t0 = hy_now();
  hy_task_join(rt, a, NULL);
  hy_task_join(rt, b, NULL);
  double ns = (double)(hy_now() - t0) / SWITCHES;
  printf("switch\thydra\t%.1f\tns/switch\n", ns);
  return NULL;
}

/* ---------------------------------------------------------- spawn-join */

static void *empty(void *p) { return p; }

static void *spawn_join_root(void *p) {
  int workers = *(int *)p;
  long n = 1000000;
  hy_time_t t0 = hy_now();
  for (long i = 0; i < n; i++) {
    hy_task_t t;
    hy_task_spawn(rt, empty, NULL, NULL, &t);
    hy_task_join(rt, t, NULL);
  }
  printf("spawn-join-w%d\thydra\t%.1f\tns/task\n", workers,
         (double)(hy_now() - t0) / (double)n);
  return NULL;
}

/* -------------------------------------------------------------- skynet */

typedef struct {
  intptr_t num, size; /* pointer-sized: long is 32 bits on Win64 */
} sky_t;

static void *skynet(void *p) {
  sky_t *s = p;
  if (s->size == 1)
    return (void *)s->num;
  sky_t kids[10];
  hy_task_t t[10];
  intptr_t step = s->size / 10;
  for (int i = 0; i < 10; i++) {
    kids[i].num = s->num + i * step;
    kids[i].size = step;
    int rc = hy_task_spawn(rt, skynet, &kids[i], NULL, &t[i]);
    if (rc < 0) {
      fprintf(stderr, "skynet: spawn: %s\n", hy_strerror(rc));
      exit(1);
    }
  }
  intptr_t sum = 0;
  for (int i = 0; i < 10; i++) {
    void *r;
    int rc = hy_task_join(rt, t[i], &r);
    if (rc < 0) {
      fprintf(stderr, "skynet: join: %s\n", hy_strerror(rc));
      exit(1);
    }
    sum += (intptr_t)r;
  }
  return (void *)sum;
}

/* -------------------------------------------------------------- timers */

#define SLEEPERS 10000
static int64_t lateness[SLEEPERS];
static atomic_int early;

static void *timed(void *p) {
  intptr_t i = (intptr_t)p;
  int64_t ms = 1 + (int64_t)((i * 7919) % 50);
  hy_time_t d = hy_deadline_in(HY_MS(ms));
  hy_sleep_until(rt, d);
  int64_t late = hy_now() - d;
  if (late < 0)
    atomic_fetch_add(&early, 1);
  lateness[i] = late;
  return NULL;
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static void *timers_root(void *p) {
  (void)p;
  static hy_task_t t[SLEEPERS];
  hy_time_t t0 = hy_now();
  for (intptr_t i = 0; i < SLEEPERS; i++)
    hy_task_spawn(rt, timed, (void *)i, NULL, &t[i]);
  for (intptr_t i = 0; i < SLEEPERS; i++)
    hy_task_join(rt, t[i], NULL);
  double wall = (double)(hy_now() - t0) / 1e6;
  qsort(lateness, SLEEPERS, sizeof lateness[0], cmp64);
  double mean = 0;
  for (int i = 0; i < SLEEPERS; i++)
    mean += (double)lateness[i];
  mean /= SLEEPERS;
  printf("timers-wall\thydra\t%.1f\tms\n", wall);
  printf("timers-mean\thydra\t%.1f\tus\n", mean / 1e3);
  printf("timers-p99\thydra\t%.1f\tus\n",
         (double)lateness[SLEEPERS * 99 / 100] / 1e3);
  printf("timers-early\thydra\t%d\tcount\n", atomic_load(&early));
  /* One sleeper alone: its median lateness. */
  int64_t one[101];
  for (int i = 0; i < 101; i++) {
    hy_time_t d = hy_deadline_in(HY_MS(1));
    hy_sleep_until(rt, d);
    one[i] = hy_now() - d;
  }
  qsort(one, 101, sizeof one[0], cmp64);
  printf("timer-single-median\thydra\t%.1f\tus\n", (double)one[50] / 1e3);
  return NULL;
}

/* ------------------------------------------------------------ idle-mem */

static void *park_long(void *p) {
  (void)p;
  hy_sleep(rt, HY_SEC(3600));
  return NULL;
}

static void *idle_root(void *p) {
  (void)p;
  enum { N = 100000 };
  static hy_task_t t[N];
  long before = rss_kb();
  for (int i = 0; i < N; i++)
    hy_task_spawn(rt, park_long, NULL, NULL, &t[i]);
  /* Let every one of them run up to its sleep. */
  hy_sleep(rt, HY_MS(500));
  long after = rss_kb();
  printf("idle-mem\thydra\t%.0f\tbytes/task\n",
         (double)(after - before) * 1024.0 / N);
  for (int i = 0; i < N; i++)
    hy_task_cancel(rt, t[i]);
  for (int i = 0; i < N; i++)
    hy_task_join(rt, t[i], NULL);
  return NULL;
}

int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "switch";
  int workers = argc > 2 ? atoi(argv[2]) : 1;
  setvbuf(stdout, NULL, _IONBF, 0);
  rt = mk(workers);
  if (strcmp(what, "switch") == 0) {
    run_root(switch_root, NULL);
  } else if (strcmp(what, "spawn-join") == 0) {
    run_root(spawn_join_root, &workers);
  } else if (strcmp(what, "skynet") == 0) {
    sky_t s = {0, 1000000};
    hy_time_t t0 = hy_now();
    long long sum = (long long)(intptr_t)run_root(skynet, &s);
    double ms = (double)(hy_now() - t0) / 1e6;
    if (sum != 499999500000LL)
      fprintf(stderr, "skynet: wrong sum %lld\n", sum);
    printf("skynet-w%d\thydra\t%.1f\tms\n", workers, ms);
    printf("skynet-w%d-rss\thydra\t%.1f\tMB\n", workers, peak_kb() / 1024.0);
  } else if (strcmp(what, "timers") == 0) {
    run_root(timers_root, NULL);
  } else if (strcmp(what, "idle-mem") == 0) {
    run_root(idle_root, NULL);
  } else {
    fprintf(stderr, "usage: rt switch|spawn-join W|skynet W|timers|idle-mem\n");
    return 2;
  }
  done(rt);
  return 0;
}
