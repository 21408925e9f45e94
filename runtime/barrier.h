/* runtime/barrier.h - a reusable barrier on a mutex and condition variable.
 * Hydra's own: Wine has no SynchronizationBarrier, and pthread_barrier_t is
 * missing on some systems. */
#ifndef HYDRA_RUNTIME_BARRIER_H
#define HYDRA_RUNTIME_BARRIER_H

#include "runtime/sys.h"

typedef struct hy__barrier {
  hy__mutex_t mu;
  hy__cond_t cv;
  int n;           /* parties */
  int arrived;
  unsigned long generation;
} hy__barrier;

int hy__barrier_init(hy__barrier *b, int n);
void hy__barrier_destroy(hy__barrier *b);

/* Blocks until n parties have called it; returns 1 in exactly one of them
 * (the last to arrive, which may do the phase's hand-over work before the
 * others are released... see hy__barrier_wait_then), 0 in the rest. */
int hy__barrier_wait(hy__barrier *b);

/* As hy__barrier_wait, but the last party runs fn(arg) before anyone is
 * released, so every party leaves after fn's effects. */
int hy__barrier_wait_then(hy__barrier *b, void (*fn)(void *), void *arg);

#endif
