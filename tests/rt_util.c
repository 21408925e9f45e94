/* rt_util.c - the runtimes tests make and end, and the backend asked for. */
#include <stdlib.h>
#include <string.h>

#include "rt_util.h"
#include "runtime/port.h"
#include "test.h"

int test_port_backend(void) {
  const char *b = test_backend();
  if (b && strcmp(b, "epoll") == 0)
    return HY__BACKEND_EPOLL;
  if (b && strcmp(b, "uring") == 0)
    return HY__BACKEND_URING;
  return HY__BACKEND_AUTO;
}

hy_runtime_t *test_rt_new(int workers) {
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = workers;
  return test_rt_new_with(&o);
}

hy_runtime_t *test_rt_new_with(const hy_options_t *o) {
  hy_runtime_t *rt = NULL;
  int rc = hy_runtime_new(o, &rt);
  if (rc == HY_ENOSYS && test_backend()) {
    fprintf(stderr, "SKIP: backend %s not available here\n", test_backend());
    exit(TEST_SKIP);
  }
  ASSERT_OK(rc);
  return rt;
}

void test_rt_close(hy_runtime_t *rt, int64_t grace) {
  ASSERT_OK(hy_runtime_shutdown(rt, grace));
  ASSERT_OK(hy_runtime_close(rt));
}

uint64_t test_tasks_alive(hy_runtime_t *rt) {
  hy_runtime_stats_t st = {.size = sizeof st};
  ASSERT_OK(hy_runtime_stats(rt, &st));
  return st.tasks_alive;
}
