/* test.h - what every test file includes.
 *
 * A test is `TEST_IMPL(name) { ... return 0; }`, registered by one line
 * in the area's list file (tests/list-<area>.h).  The runner runs each test
 * in a child process of its own with a time limit, so a failed ASSERT
 * (which aborts) or a hang fails that test alone.  A test returns 0 when it
 * passes or RETURN_SKIP("why") when the machine cannot run it.
 */
#ifndef HYDRA_TEST_H
#define HYDRA_TEST_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_SKIP 77

#define TEST_IMPL(name)                                                       \
  int run_test_##name(void);                                                  \
  int run_test_##name(void)

#define RETURN_SKIP(why)                                                      \
  do {                                                                        \
    fprintf(stderr, "SKIP: %s\n", (why));                                     \
    fflush(stderr);                                                           \
    return TEST_SKIP;                                                         \
  } while (0)

#define TEST_FAIL_(fmt, ...)                                                  \
  do {                                                                        \
    fprintf(stderr, "%s:%d: " fmt "\n", __FILE__, __LINE__, __VA_ARGS__);     \
    fflush(stderr);                                                           \
    abort();                                                                  \
  } while (0)

#define ASSERT(expr)                                                          \
  do {                                                                        \
    if (!(expr))                                                              \
      TEST_FAIL_("assertion failed: %s", #expr);                              \
  } while (0)

#define ASSERT_CMP_(a, op, b)                                                 \
  do {                                                                        \
    int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                             \
    if (!(a_ op b_))                                                          \
      TEST_FAIL_("assertion failed: %s %s %s (%" PRId64 " vs %" PRId64 ")",   \
                 #a, #op, #b, a_, b_);                                        \
  } while (0)

#define ASSERT_EQ(a, b) ASSERT_CMP_(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_CMP_(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_CMP_(a, <, b)
#define ASSERT_LE(a, b) ASSERT_CMP_(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_CMP_(a, >, b)
#define ASSERT_GE(a, b) ASSERT_CMP_(a, >=, b)

/* ASSERT_OK(call): the call returned 0 (or a count); names the error if not. */
#define ASSERT_OK(expr)                                                       \
  do {                                                                        \
    int r_ = (int)(expr);                                                     \
    if (r_ < 0)                                                               \
      TEST_FAIL_("%s failed: %s (%s)", #expr, hy_err_name(r_),                \
                 hy_strerror(r_));                                            \
  } while (0)

#define ASSERT_ERR(expr, code)                                                \
  do {                                                                        \
    int r_ = (int)(expr);                                                     \
    if (r_ != (code))                                                         \
      TEST_FAIL_("%s returned %s, expected %s", #expr, hy_err_name(r_),       \
                 hy_err_name(code));                                          \
  } while (0)

/* Flags for a registration line. */
enum {
  T_BACKEND = 1, /* run once per completion-port backend the machine has */
  T_SLOW = 2,    /* longer time limit */
  T_SERIAL = 4   /* run while no other test runs (timing-sensitive) */
};

/* The path of the test binary itself, for tests that start a child copy
 * (`exe --child NAME ...`), and the backend this run was asked to use
 * (NULL when the test is not a per-backend one). */
const char *test_exe(void);
const char *test_backend(void);

/* Deterministic pseudo-random numbers for stress tests; the seed is printed
 * by the runner on failure through HYDRA_TEST_SEED. */
uint64_t test_rand(void);

#endif /* HYDRA_TEST_H */
