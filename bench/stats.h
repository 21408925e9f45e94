/* bench/stats.h - the scheduler's counters as one comment line, for the
 * benchmark programs that print them on request (CHAN_STATS=1,
 * EVENTS_STATS=1). */
#ifndef HY_BENCH_STATS_H
#define HY_BENCH_STATS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hydra.h"

/* Prints rt's wakes of sleeping workers, steals, switches and parks if
 * the environment variable env is set. */
static inline void bench_print_stats(hy_runtime_t *rt, const char *env) {
  if (!getenv(env))
    return;
  hy_runtime_stats_t st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  hy_runtime_stats(rt, &st);
  printf("# stats: %llu wakeups, %llu steals, %llu switches, %llu parks\n",
         (unsigned long long)st.wakeups, (unsigned long long)st.steals,
         (unsigned long long)st.switches, (unsigned long long)st.parks);
}

#endif
