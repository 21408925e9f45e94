/* select.c - Ada's selective wait over any mix of awaitables.
 *
 * One pass under all the objects' locks (taken in address order): try
 * every enabled arm, from a random start, and complete the first ready one.
 * If none is ready and there is no `else`, queue one waiter per arm (all
 * pointing at one hy__wait on this stack), drop the locks, and park until
 * one object claims the wait - or the delay, or a cancel.  Claiming is one
 * compare-and-swap on the wait, so exactly one arm fires; objects whose
 * waiter lost find it stale and skip it without touching its buffer.
 * After the park, every waiter still linked is unlinked under its lock.
 *
 * The wait is "quiet" (hy__wait_init_quiet) while the arms are tried:
 * nobody, not even a cancel, can claim it in the middle of the pass, after
 * an arm has taken data.  It is opened just before the waiters are queued.
 *
 * Objects are known only through struct hy_awaitable (runtime/wait.h):
 * channels, tasks, terminate, and whatever plugs in later.
 */
#include <string.h>

#include "alloc/mem.h"
#include "hydra/chan.h"
#include "hydra/error.h"
#include "runtime/wait.h"

/* A delay arm's aux: its deadline field holds ns from when the select
 * starts to wait (hy_arm_timeout), not an absolute time. */
#define DELAY_RELATIVE 1

static int is_object(const hy_arm_t *a) {
  return a->kind == HY_ARM_OBJECT || a->kind == HY_ARM_TERMINATE;
}

static int select_impl(hy_runtime_t *rt, hy_arm_t *arms, int n, int ordered) {
  if (!arms || n <= 0 || n > HY_SELECT_MAX_ARMS)
    return HY_EINVAL;
  int delay = -1, els = -1, term = -1, nobj = 0;
  for (int i = 0; i < n; i++) {
    hy_arm_t *a = &arms[i];
    if (!a->guard)
      continue;
    switch (a->kind) {
    case HY_ARM_OBJECT:
      break;
    case HY_ARM_TERMINATE:
      if (term >= 0)
        return HY_EINVAL;
      term = i;
      break;
    case HY_ARM_DELAY:
      if (delay >= 0)
        return HY_EINVAL;
      delay = i;
      break;
    case HY_ARM_ELSE:
      if (els >= 0)
        return HY_EINVAL;
      els = i;
      break;
    default:
      return HY_EINVAL;
    }
    if (is_object(a)) {
      if (!a->ops)
        return HY_EINVAL;
      nobj++;
    }
  }
  if ((delay >= 0) + (els >= 0) + (term >= 0) > 1)
    return HY_EINVAL;
  if (nobj == 0 && delay < 0 && els < 0)
    return HY_EDEADLK;

  hy__lock_t *locks_small[HY_SELECT_STACK_ARMS];
  hy__waiter wr_small[HY_SELECT_STACK_ARMS];
  int ord_small[HY_SELECT_STACK_ARMS];
  hy__lock_t **locks = locks_small;
  hy__waiter *wr = wr_small;
  int *ord = ord_small;
  if (n > HY_SELECT_STACK_ARMS) {
    locks = hy__mem_alloc((size_t)n * sizeof *locks);
    wr = hy__mem_alloc((size_t)n * sizeof *wr);
    ord = hy__mem_alloc((size_t)n * sizeof *ord);
    if (!locks || !wr || !ord) {
      hy__mem_free(locks);
      hy__mem_free(wr);
      hy__mem_free(ord);
      return HY_ENOMEM;
    }
  }

  hy__wait own, *w;
  int rc = hy__wait_init_quiet(&w, &own, rt);
  if (rc < 0)
    goto out;

  int nl = 0;
  for (int i = 0; i < n; i++)
    if (arms[i].guard && is_object(&arms[i])) {
      ord[nl] = i;
      locks[nl++] = arms[i].ops->lock_of(arms[i].obj);
    }
  /* The order of the ready pass: a uniform random permutation of the
   * enabled object arms (Fisher-Yates), so that among arms ready at once
   * each is equally likely to win. */
  if (!ordered && nl > 1) {
    uint32_t x = hy__wait_rand(w) | 1;
    for (int k = nl - 1; k > 0; k--) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      int j = (int)(((uint64_t)x * (uint32_t)(k + 1)) >> 32);
      int t = ord[k];
      ord[k] = ord[j];
      ord[j] = t;
    }
  }
  hy__lock_all(locks, nl);

  /* The ready pass. */
  for (int k = 0; k < nl; k++) {
    int i = ord[k];
    hy_arm_t *a = &arms[i];
    int res = 0;
    if (a->ops->try_fire(a->obj, a, &res)) {
      hy__unlock_all(locks, nl);
      hy__wait_fini_quiet(w, &own);
      a->result = res;
      rc = i;
      goto out;
    }
  }
  int64_t deadline = HY_FOREVER;
  if (delay >= 0) {
    deadline = arms[delay].deadline;
    if (arms[delay].aux == DELAY_RELATIVE)
      deadline = hy_deadline_in(deadline);
  }
  if (els >= 0 || (delay >= 0 && deadline <= hy_now())) {
    hy__unlock_all(locks, nl);
    hy__wait_fini_quiet(w, &own);
    rc = els >= 0 ? els : delay;
    arms[rc].result = 0;
    goto out;
  }

  /* Nothing ready: open the wait, queue a waiter on every object and
   * park. */
  hy__wait_open(w);
  for (int i = 0; i < n; i++) {
    hy_arm_t *a = &arms[i];
    if (!a->guard || !is_object(a))
      continue;
    memset(&wr[i], 0, sizeof wr[i]);
    wr[i].wait = w;
    wr[i].arm = i;
    a->ops->enqueue(a->obj, a, &wr[i]);
  }
  hy__unlock_all(locks, nl);
  hy__wait_what(w, "select");
  int st = hy__wait_park(w, deadline);

  /* Unlink the waiters that did not fire (the locks are still sorted). */
  hy__lock_all(locks, nl);
  for (int i = 0; i < n; i++) {
    hy_arm_t *a = &arms[i];
    if (a->guard && is_object(a))
      a->ops->dequeue(a->obj, a, &wr[i]);
  }
  hy__unlock_all(locks, nl);

  if (st >= 0) {
    arms[st].result = w->result;
    rc = st;
  } else if (st == HY__FIRED_TIMEOUT && delay >= 0) {
    arms[delay].result = 0;
    rc = delay;
  } else {
    rc = HY_ECANCELED;
  }
  hy__wait_fini_quiet(w, &own);
out:
  if (locks != locks_small) {
    hy__mem_free(locks);
    hy__mem_free(wr);
    hy__mem_free(ord);
  }
  return rc;
}

int hy_select(hy_runtime_t *rt, hy_arm_t *arms, int n) {
  return select_impl(rt, arms, n, 0);
}

int hy_select_ordered(hy_runtime_t *rt, hy_arm_t *arms, int n) {
  return select_impl(rt, arms, n, 1);
}

/* ------------------------------------------------- delay and else arms */

hy_arm_t hy_arm_delay(hy_time_t deadline) {
  hy_arm_t a = {.kind = HY_ARM_DELAY, .deadline = deadline, .guard = 1};
  return a;
}

/* The clock is read only if the select has to wait: a select that finds
 * an arm ready never pays for it. */
hy_arm_t hy_arm_timeout(int64_t ns) {
  hy_arm_t a = {.kind = HY_ARM_DELAY, .deadline = ns < 0 ? 0 : ns,
                .aux = DELAY_RELATIVE, .guard = 1};
  return a;
}

hy_arm_t hy_arm_else(void) {
  hy_arm_t a = {.kind = HY_ARM_ELSE, .guard = 1};
  return a;
}
