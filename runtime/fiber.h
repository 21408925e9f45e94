/* runtime/fiber.h - telling the sanitizers about stack switches.
 *
 * ASan must know which stack is live (or it reports false stack overflows
 * and misses use-after-return); TSan must know which logical thread runs
 * (or it sees one thread racing with itself).  Four hooks bracket every
 * switch; outside sanitizer builds they compile to nothing.
 *   enter_task     scheduler, just before switching into t
 *   task_resumed   task t, just after it got the CPU (also at its entry)
 *   leave_task     task t, just before switching back (exiting: for good)
 *   sched_resumed  scheduler, just after a task switched back
 */
#ifndef HYDRA_RUNTIME_FIBER_H
#define HYDRA_RUNTIME_FIBER_H

#include "runtime/internal.h"

#if defined(HY_ASAN) || defined(HY_TSAN)
void hy__fiber_enter_task(hy__worker *w, hy__task *t);
void hy__fiber_task_resumed(hy__worker *w, hy__task *t);
void hy__fiber_leave_task(hy__worker *w, hy__task *t, int exiting);
void hy__fiber_sched_resumed(hy__worker *w);
#else
static inline void hy__fiber_enter_task(hy__worker *w, hy__task *t) {
  (void)w; (void)t;
}
static inline void hy__fiber_task_resumed(hy__worker *w, hy__task *t) {
  (void)w; (void)t;
}
static inline void hy__fiber_leave_task(hy__worker *w, hy__task *t, int e) {
  (void)w; (void)t; (void)e;
}
static inline void hy__fiber_sched_resumed(hy__worker *w) { (void)w; }
#endif

#endif
