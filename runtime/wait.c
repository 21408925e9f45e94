/* wait.c - spinlock slow path, wait queues, and parking a task or a
 * foreign thread on a hy__wait (the contract is in runtime/wait.h).
 *
 * A task parks through the scheduler; a foreign thread (no task of rt on
 * this thread) parks on the futex/event in the wait itself and handles its
 * own deadline, so waits work the same from inside and outside the runtime.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"

/* Test-and-test-and-set with exponential back-off: contenders that keep
 * retrying at once take the lock's cache line from its holder and from
 * each other; waiting longer after each miss leaves it with the holder
 * (chan-mpmc with two workers: 13 -> 20 M elements/s), and the longer the
 * holder keeps it, the more operations it does in a row on lines in its
 * own cache: up to 1024 pauses between looks instead of 64 took chan-mpmc
 * from a median of 16-25 to 26-33 M elements/s (two runs of 6-8
 * interleaved rounds; same-run ratio to Go 1.3-1.5 -> 2.0). */
void hy__lock_slow(hy__lock_t *l) {
  unsigned pauses = 1;
  for (int spins = 0;; spins++) {
    if (atomic_load_explicit(&l->v, memory_order_relaxed) == 0 &&
        atomic_exchange_explicit(&l->v, 1, memory_order_acquire) == 0)
      return;
    if (spins < 64) {
      for (unsigned k = 0; k < pauses; k++)
        hy__cpu_relax();
      if (pauses < 1024)
        pauses *= 2;
    } else {
      hy__thread_yield();
    }
  }
}

static int lock_cmp(const void *a, const void *b) {
  uintptr_t x = (uintptr_t) * (hy__lock_t *const *)a;
  uintptr_t y = (uintptr_t) * (hy__lock_t *const *)b;
  return x < y ? -1 : x > y;
}

/* Sorts in place.  A select has a handful of arms and runs this on every
 * call, where an insertion sort costs less than a qsort call; qsort keeps
 * large selects O(n log n). */
void hy__lock_all(hy__lock_t **locks, int n) {
  if (n > 16) {
    qsort(locks, (size_t)n, sizeof *locks, lock_cmp);
  } else {
    for (int i = 1; i < n; i++) {
      hy__lock_t *l = locks[i];
      int j = i;
      for (; j > 0 && (uintptr_t)locks[j - 1] > (uintptr_t)l; j--)
        locks[j] = locks[j - 1];
      locks[j] = l;
    }
  }
  hy__lock_t *prev = NULL;
  for (int i = 0; i < n; i++) {
    if (locks[i] && locks[i] != prev)
      hy__lock(locks[i]);
    prev = locks[i];
  }
}

void hy__unlock_all(hy__lock_t **locks, int n) {
  hy__lock_t *prev = NULL;
  for (int i = 0; i < n; i++) {
    if (locks[i] && locks[i] != prev)
      hy__unlock(locks[i]);
    prev = locks[i];
  }
}

/* ---------------------------------------------------------------- queues */

hy__waiter *hy__waitq_peek(hy__waitq *q) {
  while (q->head) {
    hy__waiter *w = q->head;
    int st = atomic_load_explicit(&w->wait->state, memory_order_acquire);
    if (st == HY__WAITING || st == HY__WAITING_ONE)
      return w;
    hy__waitq_remove(q, w);
  }
  return NULL;
}

int hy__waitq_wake_all(hy__waitq *q, int result) {
  int n = 0;
  hy__waiter *w;
  while ((w = hy__waitq_claim(q)) != NULL) {
    w->wait->result = result;
    hy__wait_wake(w->wait);
    n++;
  }
  return n;
}

/* ----------------------------------------------------------------- waits */

int hy__wait_init(hy__wait *w, hy_runtime_t *rt) {
  atomic_init(&w->state, HY__WAITING);
  w->result = 0;
  w->one_ok = 0;
  w->rt = rt;
  w->task = rt ? hy__task_current(rt) : NULL;
  if (!w->task) {
    hy__osev_init(&w->ev);
    return 0;
  }
  hy__task *t = w->task;
  hy__lock(&t->lock);
  if (atomic_load(&t->cancelled)) {
    hy__unlock(&t->lock);
    return HY_ECANCELED;
  }
  t->cur_wait = w;
  hy__unlock(&t->lock);
  return 0;
}

void hy__wait_fini(hy__wait *w) {
  if (!w->task) {
    hy__osev_destroy(&w->ev);
    return;
  }
  hy__task *t = w->task;
  /* Only the task itself writes cur_wait (under the lock, for cancels to
   * read), so it can read it without the lock: after a park, or for a
   * quiet wait never published, there is nothing to clear. */
  if (t->cur_wait != w)
    return;
  hy__lock(&t->lock);
  t->cur_wait = NULL;
  hy__unlock(&t->lock);
}

/* A task's quiet wait is parked on with hy__park_quiet, and woken with
 * hy__task_wake_quiet (runtime/sched.c). */
void hy__wait_wake(hy__wait *w) {
  hy__task *t = w->task;
  if (!t)
    hy__osev_signal(&w->ev);
  else if (w == &t->qwait)
    hy__task_wake_quiet(t, hy__worker_current(t->rt));
  else
    hy__task_wake(t);
}

void hy__wait_wake_home(hy__wait *w) {
  if (w->task)
    hy__task_wake_home(w->task, w == &w->task->qwait);
  else
    hy__osev_signal(&w->ev);
}

/* hy__wait_wake_from: in runtime/sched.c. */

int hy__wait_park(hy__wait *w, int64_t deadline) {
  hy__task *t = w->task;
  if (!t) {
    /* A foreign thread: the deadline is ours to enforce.  If the time-out
     * loses the race to a claimer, wait for that claimer's signal, which
     * follows its data transfer. */
    if (!hy__osev_wait(&w->ev, deadline)) {
      if (hy__wait_claim(w, HY__FIRED_TIMEOUT))
        return HY__FIRED_TIMEOUT;
      hy__osev_wait(&w->ev, HY_FOREVER);
    }
    return atomic_load(&w->state);
  }
  /* The task's quiet wait: a claim of our own (a cancel, a deadline
   * passed) means no wake comes, and there is nothing to park for; its
   * claimer, if another won, waits for our switch-out (hy__park_quiet).
   * Any other wait gets the usual wake even from ourselves, which makes
   * the park return at once. */
  int quiet = w == &t->qwait, self = 0;
  /* A HY__WAITING_ONE wait had its owner's look at the cancel flag in
   * hy__wait_open_single, and has no deadline: nothing to do but park.
   * (Read by its owner, who alone opens it: it is still that, or claimed
   * by now, which the park then finds.) */
  if (quiet && atomic_load_explicit(&w->state, memory_order_relaxed) ==
                   HY__WAITING_ONE) {
    atomic_store_explicit(&t->await_since, t->worker->clock,
                          memory_order_relaxed);
    hy__park_quiet(t);
    atomic_store_explicit(&t->await_what, NULL, memory_order_relaxed);
    return atomic_load_explicit(&w->state, memory_order_acquire);
  }
  if (quiet) {
    /* A cancel claims the quiet wait only once it is open; one that came
     * earlier (and found nothing to claim) is seen here: its canceller
     * either runs a process-wide barrier after that look (so it sees the
     * wait open, or we see its flag), or - without such a barrier on
     * this system - we fence here against the fence in cancel_locked
     * (runtime/task.c).  It must come before the switch-out: once parked,
     * the task may be woken, run and end at any moment. */
    if (t->rt->park_fence)
      atomic_thread_fence(memory_order_seq_cst);
    else
      atomic_signal_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&t->cancelled, memory_order_relaxed) &&
        hy__wait_claim(w, HY__FIRED_CANCEL))
      self = 1;
  }
  if (!self && deadline != HY_FOREVER) {
    /* Arming cannot fail (runtime/timer.c): out of memory, the wait
     * still ends at its deadline, never before. */
    if (deadline <= hy_now()) {
      if (hy__wait_claim(w, HY__FIRED_TIMEOUT)) {
        if (quiet)
          self = 1;
        else
          hy__wait_wake(w);
      }
    } else {
      hy__timer_arm(t->worker, &t->timer, deadline, w);
    }
  }
  if (!self) {
    /* For the task dump only: the worker's coarse clock, not a clock read
     * on every park (see hy__worker.clock). */
    atomic_store_explicit(&t->await_since, t->worker->clock,
                          memory_order_relaxed);
    if (quiet)
      hy__park_quiet(t);
    else
      hy__park(t);
  }
  if (deadline != HY_FOREVER)
    hy__timer_disarm(&t->timer);
  /* A wait a cancel finds through cur_wait is on the stack: take it away
   * under the lock, so that no cancel still holds it.  The task's quiet
   * wait needs no such care: it outlives this call. */
  if (t->cur_wait == w) {
    hy__lock(&t->lock);
    t->cur_wait = NULL;
    hy__unlock(&t->lock);
  }
  atomic_store_explicit(&t->await_what, NULL, memory_order_relaxed);
  return atomic_load_explicit(&w->state, memory_order_acquire);
}


/* ------------------------------------------------------- quiet waits */

static int init_quiet_task(hy__wait **out, hy__task *t) {
  if (atomic_load_explicit(&t->cancelled, memory_order_relaxed))
    return HY_ECANCELED;
  /* Nothing to reset: the task's quiet wait is HY__QUIET from the spawn or
   * still claimed from the last wait that opened it, so nobody can claim
   * it until hy__wait_open, and its result is written by its claimer. */
  *out = &t->qwait;
  return 0;
}

/* Out of line, so that a task's path (the thread's worker known without
 * a call) saves no registers. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static int init_quiet_slow(hy__wait **out, hy__wait *own, hy_runtime_t *rt) {
  hy__worker *wk = rt ? hy__worker_current(rt) : NULL;
  hy__task *t = wk ? wk->current : NULL;
  if (t)
    return init_quiet_task(out, t);
  atomic_init(&own->state, HY__QUIET);
  own->result = 0;
  own->one_ok = 0;
  own->rt = rt;
  own->task = NULL;
  hy__osev_init(&own->ev);
  *out = own;
  return 0;
}

int hy__wait_init_quiet(hy__wait **out, hy__wait *own, hy_runtime_t *rt) {
  void *wk;
  hy__task *t;
  if (!rt || !hy__tls_peek(rt->tls, &wk) || !wk ||
      !(t = ((hy__worker *)wk)->current))
    return init_quiet_slow(out, own, rt);
  return init_quiet_task(out, t);
}

int hy__wait_claim_cancel(hy__wait *w) {
  int s = atomic_load_explicit(&w->state, memory_order_acquire);
  if (s == HY__WAITING_ONE) {
    if (atomic_load_explicit(&w->taking, memory_order_relaxed))
      return 0; /* its object completes it: the cancel shows next time */
    return hy__wait_claim_one_cas(w, HY__FIRED_CANCEL);
  }
  return hy__wait_claim(w, HY__FIRED_CANCEL);
}

void hy__wait_what(hy__wait *w, const char *what) {
  if (w->task)
    atomic_store_explicit(&w->task->await_what, what, memory_order_relaxed);
}

int hy__wait_park_queued(hy__wait *w, hy__waiter *wr, hy__waitq *q,
                         hy__lock_t *lock, const char *what, int64_t deadline) {
  hy__waitq_push(q, wr);
  hy__unlock(lock);
  if (what)
    hy__wait_what(w, what);
  int st = hy__wait_park(w, deadline);
  hy__lock(lock);
  hy__waitq_remove(q, wr);
  hy__unlock(lock);
  return st;
}

uint32_t hy__wait_rand(hy__wait *w) {
  uint64_t x;
  if (w->task) {
    hy__worker *wk = w->task->worker;
    x = wk->rng ? wk->rng : ((uint64_t)(uintptr_t)wk | 1) * 0x9E3779B97F4A7C15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    wk->rng = x;
  } else {
    x = ((uint64_t)hy_now() ^ (uint64_t)(uintptr_t)w) * 0x9E3779B97F4A7C15ull;
  }
  return (uint32_t)(x >> 32);
}

hy_arm_t hy__arm_make(const struct hy_awaitable *ops, int kind, void *obj,
                      void *buf, int guard) {
  hy_arm_t a;
  memset(&a, 0, sizeof a);
  a.ops = ops;
  a.kind = kind;
  a.obj = obj;
  a.buf = buf;
  a.guard = guard;
  return a;
}
