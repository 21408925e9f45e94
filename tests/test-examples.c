/* test-examples.c - every example program runs as its README says.  The
 * examples sit next to the test binary (build/<config>/). */
#define _GNU_SOURCE
#include <libgen.h>
#include <signal.h>

#include "hydra.h"
#include "compat.h"
#include "runner.h"
#include "test.h"

/* Runs `<dir of the test binary>/<cmd>` with a shell, capturing output. */
static int run_example(const char *cmd, char *out, size_t cap) {
  char exe[1024];
  snprintf(exe, sizeof exe, "%s", test_exe());
  char line[2048];
#ifdef _WIN32
  snprintf(line, sizeof line, "cd /d \"%s\" && %s 2>&1", dirname(exe), cmd);
#else
  snprintf(line, sizeof line, "cd '%s' && ./%s 2>&1", dirname(exe), cmd);
#endif
  FILE *f = popen(line, "r");
  ASSERT(f);
  size_t n = fread(out, 1, cap - 1, f);
  out[n] = 0;
  int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

TEST_IMPL(example_hello) {
  char out[8192];
  ASSERT_EQ(run_example("hello 20", out, sizeof out), 0);
  fprintf(stderr, "%s", out);
  ASSERT(strstr(out, "task 19 returned 361") != NULL);
  ASSERT(strstr(out, "20 tasks done") != NULL);
  ASSERT(strstr(out, "sum of squares 2470") != NULL);
  return 0;
}

TEST_IMPL(example_worker_pool) {
  char out[8192];
  ASSERT_EQ(run_example("worker_pool 300 4", out, sizeof out), 0);
  fprintf(stderr, "%s", out);
  ASSERT(strstr(out, "300 of 300 jobs done") != NULL);
  ASSERT(strstr(out, "0 missing, 0 done twice") != NULL);
  /* A bad argument is refused with a usage line, not a crash. */
  ASSERT_EQ(run_example("worker_pool 10 99", out, sizeof out), 2);
  ASSERT(strstr(out, "usage:") != NULL);
  return 0;
}

TEST_IMPL(example_game_loop) {
  char out[8192];
  ASSERT_EQ(run_example("game_loop 40", out, sizeof out), 0);
  fprintf(stderr, "%s", out);
  ASSERT(strstr(out, "40 frames: mean") != NULL);
  ASSERT(strstr(out, "physics steps 40, bot moves 10, datagrams sent 40, "
                     "received 40") != NULL);
  /* The variant that waits on the runtime's OS handle between frames. */
  ASSERT_EQ(run_example("game_loop 30 --os-handle", out, sizeof out), 0);
  fprintf(stderr, "%s", out);
  ASSERT(strstr(out, "polling the runtime's OS handle") != NULL);
  ASSERT(strstr(out, "physics steps 30, bot moves 8, datagrams sent 30, "
                     "received 30") != NULL);
  return 0;
}

/* examples/supervisor: seed 002's supervisor stops on SIGTERM (on Windows
 * on a real Ctrl+C, SIGINT) once it has checked its workers' heartbeats,
 * through the shutdown phases in order, losing no job. */
TEST_IMPL(example_supervisor) {
#ifdef _WIN32
  const int sig = SIGINT;
  const char *said = "received SIGINT: shutting down";
#else
  const int sig = SIGTERM;
  const char *said = "received SIGTERM: shutting down";
#endif
  ex_proc_t p;
  int rc = ex_start(&p, "supervisor", "4");
  if (rc == -2)
    RETURN_SKIP("no console of its own for the example's Ctrl+C");
  ASSERT_EQ(rc, 0);
  static char all[16384];
  size_t len = 0;
  char line[512];
  int sent = 0;
  while (fgets(line, sizeof line, p.out)) {
    fprintf(stderr, "| %s", line);
    size_t l = strlen(line);
    if (len + l < sizeof all) {
      memcpy(all + len, line, l + 1);
      len += l;
    }
    /* Once it has checked heartbeats with every worker alive, stop it. */
    if (!sent && strstr(line, "heartbeats: 4 of 4 workers alive") &&
        strstr(all, "subscribed")) {
      ASSERT_OK(ex_stop(&p, sig));
      sent = 1;
    }
  }
  ASSERT_EQ(ex_wait(&p), 0);
  ASSERT(sent);
  ASSERT(strstr(all, said) != NULL);
  const char *order[] = {"phase quiesce", "phase drain", "phase cancel",
                         "phase finalize"};
  const char *at = all;
  for (int i = 0; i < 4; i++) {
    const char *q = strstr(at, order[i]);
    ASSERT(q != NULL);
    at = q;
  }
  ASSERT(strstr(all, "all 4 workers stopped") != NULL);
  ASSERT(strstr(all, "jobs lost: 0") != NULL);
  ASSERT(strstr(all, "tasks cancelled: 0") != NULL);
  return 0;
}
