/* runtime/fiber.h - telling the sanitizers about stack switches.
 *
 * ASan must know which stack is live (or it reports false stack overflows
 * and misses use-after-return); TSan must know which logical thread runs
 * (or it sees one thread racing with itself).  Two hooks bracket every
 * switch (a NULL task stands for the worker's scheduler context); outside
 * sanitizer builds they compile to nothing.
 *   switch    the leaving side, just before hy__ctx_switch
 *   resumed   the arriving side, just after it got the CPU (also at a
 *             task's entry)
 */
#ifndef HYDRA_RUNTIME_FIBER_H
#define HYDRA_RUNTIME_FIBER_H

#include "runtime/internal.h"

#if defined(HY_ASAN) || defined(HY_TSAN)
void hy__fiber_switch(hy__worker *w, hy__task *from, hy__task *to,
                      int exiting);
void hy__fiber_resumed(hy__worker *w, hy__task *self);
#else
static inline void hy__fiber_switch(hy__worker *w, hy__task *from,
                                    hy__task *to, int exiting) {
  (void)w; (void)from; (void)to; (void)exiting;
}
static inline void hy__fiber_resumed(hy__worker *w, hy__task *self) {
  (void)w; (void)self;
}
#endif

#endif
