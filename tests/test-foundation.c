/* test-foundation.c - the error table and the runner's isolation. */
#include <errno.h>
#include <stdlib.h>

#include "hydra.h"
#include "test.h"

TEST_IMPL(error_table) {
  ASSERT(strcmp(hy_strerror(0), "success") == 0);
  ASSERT(strcmp(hy_err_name(HY_ETIMEDOUT), "HY_ETIMEDOUT") == 0);
  ASSERT(strcmp(hy_strerror(HY_ECLOSED), "channel or object closed") == 0);
  ASSERT(strcmp(hy_strerror(12345), "unknown error") == 0);
  /* Every code is negative, distinct and named. */
  for (int e = HY__ERRNO_BASE + 1; e < HY__ERRNO_END; e++) {
    ASSERT_LT(e, 0);
    ASSERT(strncmp(hy_err_name(e), "HY_E", 4) == 0);
    ASSERT(strcmp(hy_strerror(e), "unknown error") != 0);
  }
  ASSERT_LT(HY__ERRNO_END, 0);
  return 0;
}

TEST_IMPL(error_translate) {
  ASSERT_EQ(hy_translate_errno(0), 0);
  ASSERT_EQ(hy_translate_errno(ENOMEM), HY_ENOMEM);
  ASSERT_EQ(hy_translate_errno(ECONNRESET), HY_ECONNRESET);
  ASSERT_EQ(hy_translate_errno(EMFILE), HY_EMFILE);
  ASSERT_EQ(hy_translate_errno(EAGAIN), HY_EAGAIN);
  ASSERT_EQ(hy_translate_errno(99999), HY_EUNKNOWN);
  return 0;
}

/* The runner must survive a test that crashes: this one starts a copy of
 * the test binary running a test that aborts, and checks the copy died
 * while we did not. */
TEST_IMPL(runner_child_crash_is_isolated) {
  if (getenv("HYDRA_TEST_ROLE")) {
    abort();
  }
  char cmd[1024];
#ifdef _WIN32
  snprintf(cmd, sizeof cmd,
           "set HYDRA_TEST_ROLE=child&& \"%s\" --run "
           "runner_child_crash_is_isolated >NUL 2>&1",
           test_exe());
#else
  snprintf(cmd, sizeof cmd,
           "HYDRA_TEST_ROLE=child '%s' --run runner_child_crash_is_isolated "
           ">/dev/null 2>&1",
           test_exe());
#endif
  int rc = system(cmd);
  ASSERT_NE(rc, 0);
  return 0;
}
