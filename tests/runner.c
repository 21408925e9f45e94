/* runner.c - the test runner (libuv's shape).
 *
 * `hydra-tests [-j N] [pattern ...]` runs every test whose name contains a
 * pattern (all when none is given), each in a child process of its own
 * (`hydra-tests --run NAME`) with a time limit, N at a time, and prints a
 * line per test and, last, `N passed, N failed[, N skipped]`.  It exits 1 if
 * any test failed.  A test flagged T_BACKEND runs once per backend named in
 * HYDRA_TEST_BACKENDS (default: "uring epoll" on Linux, "iocp" on Windows),
 * shown as name[backend]; a T_SERIAL test runs alone.  A failed test's output
 * is printed under its line.  HYDRA_TEST_TIMEOUT_SCALE stretches the limits
 * (sanitizers, Wine).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hydra.h"
#include "runner.h"
#include "test.h"

#define TEST(name, flags) int run_test_##name(void);
#include "test-list.h"
#undef TEST

typedef struct {
  const char *name;
  int (*fn)(void);
  int flags;
} entry_t;

static const entry_t tests[] = {
#define TEST(name, flags) {#name, run_test_##name, flags},
#include "test-list.h"
#undef TEST
    {NULL, NULL, 0}};

typedef struct {
  const entry_t *t;
  const char *backend;
  char label[128];
  char out[512];
  proc_t p;
  int64_t start;
  int state; /* 0 waiting, 1 running, 2 done */
} job_t;

static const char *g_exe;     /* set once in main: the runner's own path */
static const char *g_backend; /* the child's HYDRA_BACKEND, if per-backend */
static _Atomic uint64_t g_rand_state; /* test_rand is called from any thread */

const char *test_exe(void) { return g_exe; }
const char *test_backend(void) { return g_backend; }

uint64_t test_rand(void) {
  /* splitmix64 over an atomic counter: safe from any thread (tasks, the
   * tests' own threads), and one sequence per seed in a single thread. */
  uint64_t z = atomic_fetch_add_explicit(&g_rand_state, 0x9E3779B97F4A7C15ULL,
                                         memory_order_relaxed) +
               0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

static const entry_t *find(const char *name) {
  for (const entry_t *t = tests; t->name; t++)
    if (strcmp(t->name, name) == 0)
      return t;
  return NULL;
}

static int run_one(const char *name) {
  const entry_t *t = find(name);
  if (!t) {
    fprintf(stderr, "no test named %s\n", name);
    return 2;
  }
  const char *seed = getenv("HYDRA_TEST_SEED");
  g_rand_state = seed ? strtoull(seed, NULL, 0)
                      : (uint64_t)proc_now_ms() * 2654435761u + 1;
  if (!g_rand_state)
    g_rand_state = 1;
  fprintf(stderr, "HYDRA_TEST_SEED=%llu\n",
          (unsigned long long)atomic_load(&g_rand_state));
  if (t->flags & T_BACKEND)
    g_backend = getenv("HYDRA_BACKEND");
  int rc = t->fn();
  fflush(stdout);
  fflush(stderr);
  return rc == 0 ? 0 : rc == TEST_SKIP ? TEST_SKIP : 1;
}

static int matches(const char *label, int npat, char **pat) {
  if (npat == 0)
    return 1;
  for (int i = 0; i < npat; i++)
    if (strstr(label, pat[i]))
      return 1;
  return 0;
}

static void print_file(const char *path, const char *prefix) {
  FILE *f = fopen(path, "r");
  if (!f)
    return;
  char line[1024];
  int n = 0;
  while (fgets(line, sizeof line, f) && n++ < 400)
    printf("%s%s", prefix, line);
  fclose(f);
  printf("\n");
}

static int split_words(char *s, const char **out, int max) {
  int n = 0;
  for (char *tok = strtok(s, " ,"); tok && n < max; tok = strtok(NULL, " ,"))
    out[n++] = tok;
  return n;
}

/* Whether a runtime can be made on the named backend here. */
static int backend_present(const char *name) {
  int b = strcmp(name, "uring") == 0   ? HY_BACKEND_URING
          : strcmp(name, "epoll") == 0 ? HY_BACKEND_EPOLL
          : strcmp(name, "iocp") == 0  ? HY_BACKEND_IOCP
                                       : -1;
  if (b < 0)
    return 1; /* unknown names are the test's business */
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = 0;
  o.backend = b;
  hy_runtime_t *rt = NULL;
  if (hy_runtime_new(&o, &rt) == HY_ENOSYS)
    return 0;
  if (rt)
    hy_runtime_close(rt);
  return 1;
}

/* Starts j's process.  A start the system refuses is tried again a few
 * times, a little later: under Wine, process creation fails now and then
 * when the machine is loaded (CreateProcess returns an error), and a test
 * that never started has not run - its result is still to be had. */
#define SPAWN_TRIES 5
static int spawn_retrying(job_t *j) {
  for (int k = 1;; k++) {
    if (proc_spawn(&j->p, g_exe, j->t->name, j->backend, j->out) == 0)
      return 0;
    if (k == SPAWN_TRIES)
      return -1;
    fprintf(stderr, "runner: %s did not start (try %d of %d), again\n",
            j->label, k, SPAWN_TRIES);
    proc_sleep_ms(200 * k);
  }
}

int main(int argc, char **argv) {
  g_exe = proc_self_exe(argv[0]);
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc >= 3 && strcmp(argv[1], "--run") == 0) {
    proc_child_init();
    return run_one(argv[2]);
  }

  int jobs_at_once = proc_ncpu();
  int npat = 0;
  char **pat = calloc((size_t)argc, sizeof *pat);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-j") == 0 && i + 1 < argc) {
      jobs_at_once = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--list") == 0) {
      for (const entry_t *t = tests; t->name; t++)
        printf("%s\n", t->name);
      return 0;
    } else {
      pat[npat++] = argv[i];
    }
  }
  if (jobs_at_once < 1)
    jobs_at_once = 1;

#ifdef _WIN32
  char backends_buf[256] = "iocp";
#else
  char backends_buf[256] = "uring epoll";
#endif
  const char *env = getenv("HYDRA_TEST_BACKENDS");
  if (env && *env)
    snprintf(backends_buf, sizeof backends_buf, "%s", env);
  const char *backends[8];
  int nb = split_words(backends_buf, backends, 8);
  /* A backend this machine lacks (io_uring refused by the kernel, a
   * seccomp filter or the sysctl) has its variants skipped, and said so:
   * tests run once per backend present. */
  int present[8];
  for (int b = 0; b < nb; b++)
    present[b] = backend_present(backends[b]);
  double scale = 1.0;
  if (getenv("HYDRA_TEST_TIMEOUT_SCALE"))
    scale = atof(getenv("HYDRA_TEST_TIMEOUT_SCALE"));
  if (scale <= 0)
    scale = 1.0;

  size_t ntests = sizeof tests / sizeof tests[0];
  job_t *jobs = calloc(ntests * (size_t)(nb + 1), sizeof *jobs);
  int njobs = 0, absent = 0;
  for (const entry_t *t = tests; t->name; t++) {
    int nrun = (t->flags & T_BACKEND) ? nb : 1;
    for (int b = 0; b < nrun; b++) {
      job_t *j = &jobs[njobs];
      j->t = t;
      j->backend = (t->flags & T_BACKEND) ? backends[b] : NULL;
      if (j->backend)
        snprintf(j->label, sizeof j->label, "%s[%s]", t->name, j->backend);
      else
        snprintf(j->label, sizeof j->label, "%s", t->name);
      if (!matches(j->label, npat, pat))
        continue;
      if (j->backend && !present[b]) {
        printf("skip %s (the %s backend is not available here)\n", j->label,
               j->backend);
        absent++;
        continue;
      }
      snprintf(j->out, sizeof j->out, "%s/hydra-test-%d-%d.log",
               proc_tmpdir(), (int)(proc_now_ms() % 100000), njobs);
      njobs++;
    }
  }

  int passed = 0, failed = 0, skipped = absent, running = 0, serial_running = 0;
  int next = 0, done = 0;
  printf("running %d tests, %d at a time\n", njobs, jobs_at_once);
  while (done < njobs) {
    /* Start what fits; a serial test waits for an empty slate and blocks
     * the ones behind it until it is done. */
    while (next < njobs && running < jobs_at_once && !serial_running) {
      job_t *j = &jobs[next];
      int serial = (j->t->flags & T_SERIAL) != 0;
      if (serial && running > 0)
        break;
      if (spawn_retrying(j) != 0) {
        printf("FAIL %s (could not start)\n", j->label);
        failed++;
        done++;
        j->state = 2;
        next++;
        continue;
      }
      j->start = proc_now_ms();
      j->state = 1;
      running++;
      serial_running = serial;
      next++;
    }
    int progressed = 0;
    for (int i = 0; i < next; i++) {
      job_t *j = &jobs[i];
      if (j->state != 1)
        continue;
      int code = 0;
      int64_t now = proc_now_ms();
      int64_t limit = (int64_t)((j->t->flags & T_SLOW ? 600000 : 120000) *
                                scale);
      int finished = proc_poll(&j->p, &code);
      int timed_out = 0;
      if (!finished && now - j->start > limit) {
        proc_dump(&j->p, j->out);
        proc_kill(&j->p);
        finished = timed_out = 1;
      }
      if (!finished)
        continue;
      progressed = 1;
      j->state = 2;
      running--;
      done++;
      if (j->t->flags & T_SERIAL)
        serial_running = 0;
      double secs = (double)(proc_now_ms() - j->start) / 1000.0;
      if (timed_out) {
        printf("FAIL %s (timed out after %.1f s)\n", j->label, secs);
        print_file(j->out, "    ");
        failed++;
      } else if (code == 0) {
        printf("ok   %s (%.2f s)\n", j->label, secs);
        passed++;
      } else if (code == TEST_SKIP) {
        printf("skip %s\n", j->label);
        print_file(j->out, "    ");
        skipped++;
      } else {
        printf("FAIL %s (exit %d, %.2f s)\n", j->label, code, secs);
        print_file(j->out, "    ");
        failed++;
      }
      remove(j->out);
    }
    if (!progressed)
      proc_sleep_ms(2);
  }
  if (skipped)
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  else
    printf("%d passed, %d failed\n", passed, failed);
  free(pat);
  free(jobs);
  return failed ? 1 : 0;
}
