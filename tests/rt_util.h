/* rt_util.h - the runtimes tests make and end, and the backend asked for. */
#ifndef HYDRA_TEST_RT_UTIL_H
#define HYDRA_TEST_RT_UTIL_H

#include "hydra.h"

/* The completion port backend this run asked for (HYDRA_BACKEND), as the
 * HY__BACKEND_* of runtime/port.h: AUTO when none was named. */
int test_port_backend(void);

/* A runtime with `workers` workers (0: embedded) on the backend this run
 * asked for (HYDRA_BACKEND); a backend this machine lacks skips the test. */
hy_runtime_t *test_rt_new(int workers);

/* The same with options of the test's own. */
hy_runtime_t *test_rt_new_with(const hy_options_t *o);

/* Shuts rt down, the drain given `grace`, then closes it; both must work. */
void test_rt_close(hy_runtime_t *rt, int64_t grace);

/* rt's tasks not ended yet (hy_runtime_stats). */
uint64_t test_tasks_alive(hy_runtime_t *rt);

#endif /* HYDRA_TEST_RT_UTIL_H */
