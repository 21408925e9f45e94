/* test-examples.c - every example program runs as its README says.  The
 * examples sit next to the test binary (build/<config>/). */
#define _GNU_SOURCE
#include <libgen.h>

#include "hydra.h"
#include "compat.h"
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
