/* barrier.c - see barrier.h.  The generation counter makes the barrier
 * reusable: a party that leaves and arrives again at once waits for the
 * next generation, never for the one it just left. */
#include "runtime/barrier.h"
#include "hydra/runtime.h"

int hy__barrier_init(hy__barrier *b, int n) {
  b->n = n;
  b->arrived = 0;
  b->generation = 0;
  int rc = hy__mutex_init(&b->mu);
  if (rc < 0)
    return rc;
  rc = hy__cond_init(&b->cv);
  if (rc < 0)
    hy__mutex_destroy(&b->mu);
  return rc;
}

void hy__barrier_destroy(hy__barrier *b) {
  hy__cond_destroy(&b->cv);
  hy__mutex_destroy(&b->mu);
}

int hy__barrier_wait_then(hy__barrier *b, void (*fn)(void *), void *arg) {
  hy__mutex_lock(&b->mu);
  unsigned long gen = b->generation;
  if (++b->arrived == b->n) {
    if (fn)
      fn(arg);
    b->arrived = 0;
    b->generation++;
    hy__cond_broadcast(&b->cv);
    hy__mutex_unlock(&b->mu);
    return 1;
  }
  while (gen == b->generation)
    hy__cond_wait(&b->cv, &b->mu, HY_FOREVER);
  hy__mutex_unlock(&b->mu);
  return 0;
}

int hy__barrier_wait(hy__barrier *b) {
  return hy__barrier_wait_then(b, NULL, NULL);
}
