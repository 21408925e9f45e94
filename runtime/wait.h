/* runtime/wait.h - how anything awaitable blocks and wakes a task: the
 * contract that channels, hub consumers, event receivers, connections and
 * task joins all plug into, and that select waits on.
 *
 * A blocking call puts one hy__wait on its stack (the task's, or a foreign
 * thread's) and one hy__waiter per awaited object, linked into that object's
 * queue under the object's lock.  Whoever completes the wait - an object
 * handing over data, a timer, a cancel - must first *claim* it:
 * hy__wait_claim() moves state from HY__WAITING to the arm index (or a
 * HY__FIRED_* reason) with one compare-and-swap, so exactly one party wins.
 * The winner transfers the data (still under the object's lock), sets
 * w->result, unlinks its waiter, and calls hy__wait_wake().  A waiter whose
 * wait was already claimed by someone else is stale: the object unlinks it
 * and moves on; it never touches its buffer.
 *
 * After hy__wait_park() returns, the caller takes each object's lock in turn
 * and unlinks the waiters that are still linked (hy__waitq_remove), so no
 * object keeps a pointer into a stack frame that is about to go away.
 *
 * Lock order: an object lock is a leaf, except in select, which takes the
 * locks of all its objects in address order (hy__lock_all).  Nothing blocks
 * or awaits while holding one.
 */
#ifndef HYDRA_RUNTIME_WAIT_H
#define HYDRA_RUNTIME_WAIT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "hydra/error.h"
#include "hydra/runtime.h"

/* ------------------------------------------------------------ spinlock */

/* A test-and-test-and-set lock with back-off for short critical sections
 * (a few dozen instructions).  Zero-initialised is unlocked. */
typedef struct hy__lock {
  atomic_int v;
} hy__lock_t;

void hy__lock_slow(hy__lock_t *l);

static inline void hy__lock(hy__lock_t *l) {
  if (atomic_exchange_explicit(&l->v, 1, memory_order_acquire) != 0)
    hy__lock_slow(l);
}

static inline int hy__trylock(hy__lock_t *l) {
  return atomic_load_explicit(&l->v, memory_order_relaxed) == 0 &&
         atomic_exchange_explicit(&l->v, 1, memory_order_acquire) == 0;
}

static inline void hy__unlock(hy__lock_t *l) {
  atomic_store_explicit(&l->v, 0, memory_order_release);
}

/* -------------------------------------------------- foreign-thread event */

/* A one-shot event a thread outside the runtime blocks on (futex on Linux,
 * an auto-reset event on Windows).  init/destroy bracket its life. */
typedef struct hy__osev {
  atomic_int v;
  void *h; /* Windows: the event HANDLE */
} hy__osev_t;

int hy__osev_init(hy__osev_t *e);
void hy__osev_destroy(hy__osev_t *e);
void hy__osev_signal(hy__osev_t *e);
/* Waits until signalled or deadline (monotonic ns, HY_FOREVER: none);
 * returns 1 if signalled, 0 on time-out.  Consumes the signal. */
int hy__osev_wait(hy__osev_t *e, int64_t deadline);

/* ---------------------------------------------------------------- waits */

enum {
  HY__WAITING = -1,      /* not claimed yet */
  HY__FIRED_TIMEOUT = -2, /* the deadline passed */
  HY__FIRED_CANCEL = -3,  /* the task was cancelled */
  HY__QUIET = -4,         /* a quiet wait not opened yet: nobody claims it */
  HY__WAITING_ONE = -5    /* open, on one object only, and claimed by that
                             object under its lock without a
                             compare-and-swap (hy__wait_open_single) */
};

struct hy__task;

typedef struct hy__wait {
  atomic_int state;      /* HY__WAITING, then the winning arm or HY__FIRED_* */
  /* HY__WAITING_ONE (a task's quiet wait): its object is claiming it; and
   * the task's cancel flag, mirrored here by the canceller, so that an
   * object's claim reads and writes only this line of the task (the flag's
   * own line is written by every park: await_what, await_since). */
  atomic_int taking, cancel;
  int result;            /* set by the winner: 0 or HY_E* for that arm */
  /* A task's quiet wait that hy__wait_open_single may open as
   * HY__WAITING_ONE: set once for the task's life (runtime/task.c), 0 for
   * every other wait. */
  int one_ok;
  struct hy__task *task; /* the waiting task; NULL for a foreign thread */
  hy_runtime_t *rt;
  hy__osev_t ev;         /* a foreign thread parks here */
} hy__wait;

typedef struct hy__waiter {
  struct hy__waiter *next, *prev;
  hy__wait *wait;
  int arm;       /* index passed to hy__wait_claim when this one fires */
  int linked;    /* in an object's queue (guarded by the object's lock) */
  void *buf;     /* the arm's data: what to send, or where to receive */
  intptr_t aux;  /* object-specific */
} hy__waiter;

/* Prepares a wait for the calling context: the current task of rt if there
 * is one, else the calling (foreign) thread.  rt may be NULL for a foreign
 * thread.  Returns 0, or HY_ECANCELED if the calling task has a pending
 * cancel (nothing was set up then). */
int hy__wait_init(hy__wait *w, hy_runtime_t *rt);

/* A quiet wait, for callers that first try to complete at once under
 * object locks and only then decide to block (select, channel
 * operations).  Sets *out to the wait to use: the calling task's own
 * (hy__task.qwait, which lives as long as the task, so that a cancel can
 * claim it without the task lock that guards a wait on the stack), or
 * `own`, initialised, for a foreign thread.  Returns 0, or HY_ECANCELED if
 * the calling task already has a pending cancel (nothing to finish then).
 *
 * The wait starts unclaimable (HY__QUIET, or still claimed from its last
 * use): an arm that fires at once is never undone by a racing cancel; the
 * owner then just calls
 * hy__wait_fini.  To block, the owner opens it (hy__wait_open) under the
 * object locks before its waiters become visible, drops the locks and
 * parks.  A cancel that came meanwhile is not lost: the park looks at the
 * task's cancel flag again, and a cancel that found the wait not open yet
 * runs a process-wide barrier (hy__heavy_barrier) and tries again, so one
 * of the two sees the other (where the system has no such barrier, the
 * park fences instead: hy_runtime.park_fence).
 *
 * A task parks for its quiet wait without a compare-and-swap: its
 * switch-out marks it parked with a plain store, and the wait's claimer -
 * the one party that wakes it - waits for that mark (hy__task_wake_quiet,
 * runtime/sched.c).  So nothing may claim an open quiet wait of a task
 * from the task itself, and a claimer must not hold a lock that the
 * waiter takes between opening the wait and switching out (it takes
 * none but its own worker's timer and queue locks and the stack cache's). */
int hy__wait_init_quiet(hy__wait **out, hy__wait *own, hy_runtime_t *rt);

/* Makes a quiet wait claimable (-> HY__WAITING).  Under the lock of every
 * object it is about to be queued on.  A release store: a cancel, which
 * claims the wait without any of those locks, sees what the task did
 * before (hy__task_wake_on reads where it runs). */
static inline void hy__wait_open(hy__wait *w) {
  w->result = 0;
  atomic_store_explicit(&w->state, HY__WAITING, memory_order_release);
}

/* hy__wait_open for a wait about to be queued on exactly one object, `lock`
 * held, with nothing but that object, a cancel and the deadline to claim
 * it.  Where it can, it opens the wait as HY__WAITING_ONE: the object then
 * claims it with plain stores (hy__waitq_claim) instead of a
 * compare-and-swap - a third of the cost of a hand-over between two tasks.
 * That needs every other claimer to keep out of the object's way: there is
 * no deadline (no timer claims it), and a cancel claims such a wait only
 * after a process-wide barrier (hy__heavy_barrier), and only if the object
 * has not started to claim it (hy__wait_claim_cancel): the object announces
 * its claim in w->taking and then looks at the task's cancel flag, the
 * canceller sets the flag, runs the barrier and then looks at w->taking,
 * so one of the two always sees the other.  The owner's own look at its
 * cancel flag, which hy__wait_park makes for other waits, is made here,
 * under the lock, before the object can see the wait.  Other waits
 * (a deadline, a foreign thread, a system without the barrier) are opened
 * with hy__wait_open.
 *
 * Returns 1 if the owner found its cancel flag set and claimed the wait
 * itself as HY__FIRED_CANCEL: it does not queue, and does not park.
 * Returns 0 otherwise: queue and park as usual (if a canceller claimed it
 * meanwhile, its wake comes). */
static inline int hy__wait_claim_one_cas(hy__wait *w, int to);
static inline int hy__wait_open_single(hy__wait *w, int64_t deadline) {
  if (!w->one_ok || deadline != HY_FOREVER) {
    hy__wait_open(w);
    return 0;
  }
  w->result = 0;
  atomic_store_explicit(&w->taking, 0, memory_order_relaxed);
  atomic_store_explicit(&w->state, HY__WAITING_ONE, memory_order_release);
  /* The look hy__wait_park makes for other quiet waits (see there), made
   * while no object can claim the wait yet: a claim of our own races only
   * a canceller's compare-and-swap.  The canceller sets the wait's mirror
   * of the task's flag (w->cancel) before its barrier, as it sets the
   * flag. */
  atomic_signal_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&w->cancel, memory_order_relaxed))
    return hy__wait_claim_one_cas(w, HY__FIRED_CANCEL);
  return 0;
}

/* A canceller's claim of a task's quiet wait once it has set the task's
 * cancel flag and then run hy__heavy_barrier: a HY__WAITING_ONE wait whose
 * object is taking it is left to the object.  Returns 1 if it claimed the
 * wait (as HY__FIRED_CANCEL). */
int hy__wait_claim_cancel(hy__wait *w);

/* Names what the calling task is about to park for ("chan-recv",
 * "select", ...), for hy_runtime_dump; the park clears it.  what must be a
 * static string.  No-op for a foreign thread. */
void hy__wait_what(hy__wait *w, const char *what);

/* A cheap pseudo-random number for fair choices (select's starting arm):
 * per worker state when called on a worker, clock-derived otherwise. */
uint32_t hy__wait_rand(hy__wait *w);

/* Ends a wait.  pre: the wait is claimed and no wake is outstanding:
 * either hy__wait_park returned, or the owner claimed the wait itself
 * (an arm it found ready at once: no wake comes then, so it must not park).
 * If the owner's own claim fails, someone else won and a wake is coming:
 * the owner parks to receive it. */
void hy__wait_fini(hy__wait *w);

/* hy__wait_fini for a wait from hy__wait_init_quiet(&w, own, ...): a
 * task's quiet wait is never published where fini would clear it, so only
 * `own` (a foreign thread's) has anything to end. */
static inline void hy__wait_fini_quiet(hy__wait *w, hy__wait *own) {
  if (w == own)
    hy__wait_fini(w);
}

/* Tries to complete the wait as `arm` (>= 0) or a HY__FIRED_* reason.
 * Returns 1 if the caller won and now owns the completion, 0 if someone
 * else already did. */
static inline int hy__wait_claim(hy__wait *w, int arm) {
  int expect = HY__WAITING;
  return atomic_compare_exchange_strong_explicit(
      &w->state, &expect, arm, memory_order_acq_rel, memory_order_acquire);
}

/* Makes the claimed wait's owner runnable.  Call once, after the claim and
 * the data transfer.  Any thread. */
void hy__wait_wake(hy__wait *w);

/* hy__wait_wake that queues a task owner on the worker it last ran on
 * instead of the caller's (hy__task_wake_home). */
void hy__wait_wake_home(hy__wait *w);
/* hy__wait_wake for a caller that has a wait of its own, `self` (from
 * hy__wait_init_quiet): its context - the task it runs in, and so its
 * worker - is known, and need not be looked up. */
void hy__wait_wake_from(hy__wait *w, const hy__wait *self);

/* Blocks until the wait is claimed.  At `deadline` (monotonic ns; HY_FOREVER
 * for none) the runtime claims it as HY__FIRED_TIMEOUT; a cancel of the
 * task claims it as HY__FIRED_CANCEL.  Returns the final state. */
int hy__wait_park(hy__wait *w, int64_t deadline);

/* hy__wait_what followed by hy__wait_park, in one call for the usual
 * case of a channel operation: a task's quiet wait opened by
 * hy__wait_open_single as HY__WAITING_ONE, parked for without the checks
 * that other waits need (runtime/sched.c). */
int hy__wait_park_one(hy__wait *w, const char *what, int64_t deadline);

/* The usual translation of a final state into a return code for a
 * single-object wait: the arm's result, HY_ETIMEDOUT or HY_ECANCELED. */
static inline int hy__wait_rc(const hy__wait *w) {
  int s = atomic_load_explicit(&((hy__wait *)w)->state, memory_order_acquire);
  if (s == HY__FIRED_TIMEOUT)
    return HY_ETIMEDOUT;
  if (s == HY__FIRED_CANCEL)
    return HY_ECANCELED;
  return w->result;
}

/* ----------------------------------------------------------- wait queues */

typedef struct hy__waitq {
  hy__waiter *head, *tail;
} hy__waitq;

/* All under the owning object's lock.  Inline: a hand-over between two
 * tasks pushes, claims and removes once each. */
static inline void hy__waitq_push(hy__waitq *q, hy__waiter *w) {
  w->next = NULL;
  w->prev = q->tail;
  if (q->tail)
    q->tail->next = w;
  else
    q->head = w;
  q->tail = w;
  w->linked = 1;
}

/* No-op if unlinked. */
static inline void hy__waitq_remove(hy__waitq *q, hy__waiter *w) {
  if (!w->linked)
    return;
  if (w->prev)
    w->prev->next = w->next;
  else
    q->head = w->next;
  if (w->next)
    w->next->prev = w->prev;
  else
    q->tail = w->prev;
  w->next = w->prev = NULL;
  w->linked = 0;
}

/* The compare-and-swap that decides a HY__WAITING_ONE wait when both
 * its object and a cancel (or the owner's own look at its cancel flag)
 * may claim it. */
static inline int hy__wait_claim_one_cas(hy__wait *w, int to) {
  int expect = HY__WAITING_ONE;
  return atomic_compare_exchange_strong_explicit(
      &w->state, &expect, to, memory_order_acq_rel, memory_order_acquire);
}

/* The claim of a HY__WAITING_ONE wait by its one object (see
 * hy__wait_open_single): the announcement in `taking` and then the look at
 * the cancel flag (its mirror in the wait: w->cancel) are the light side
 * of a Dekker pair whose heavy side is the canceller's flag, barrier and
 * look at `taking` (hy__wait_claim_cancel).  A cancel seen here may claim
 * the wait too: then a compare-and-swap decides. */
static inline int hy__wait_claim_one(hy__wait *w, int arm) {
  atomic_store_explicit(&w->taking, 1, memory_order_relaxed);
  atomic_signal_fence(memory_order_seq_cst);
  if (!atomic_load_explicit(&w->cancel, memory_order_relaxed)) {
    atomic_store_explicit(&w->state, arm, memory_order_relaxed);
    return 1;
  }
  return hy__wait_claim_one_cas(w, arm);
}

/* Unlinks waiters from the front until one can be claimed; returns it
 * (unlinked, claimed as its arm) or NULL when none is left.  The caller
 * transfers data, sets wait->result and calls hy__wait_wake().  A
 * HY__WAITING_ONE wait is claimed without a compare-and-swap (see
 * hy__wait_open_single): that is why this runs under the object's lock. */
static inline hy__waiter *hy__waitq_claim(hy__waitq *q) {
  while (q->head) {
    hy__waiter *w = q->head;
    hy__waitq_remove(q, w);
    /* Under the object's lock, which the owner held when it opened a
     * HY__WAITING_ONE wait and queued it here: nothing else turns such a
     * wait into another open state, so this relaxed look suffices. */
    if (atomic_load_explicit(&w->wait->state, memory_order_relaxed) ==
        HY__WAITING_ONE) {
      if (hy__wait_claim_one(w->wait, w->arm))
        return w;
    } else if (hy__wait_claim(w->wait, w->arm)) {
      return w;
    }
  }
  return NULL;
}

/* Returns the first waiter whose wait is still open without claiming it
 * (stale ones in front are unlinked), or NULL. */
hy__waiter *hy__waitq_peek(hy__waitq *q);

/* Claims every waiter, sets each wait's result to `result`, wakes them all.
 * Returns how many were woken.  (Close, destroy.) */
int hy__waitq_wake_all(hy__waitq *q, int result);

/* The usual blocking wait on one object.  pre: the object's lock is held,
 * nothing could be taken at once, and wr->wait is w (wr->buf set if the
 * object hands data over).  Queues wr on q, drops the lock, names `what`
 * for the task dump (unless NULL), parks until deadline, then unlinks wr under the lock
 * again.  Returns hy__wait_park's final state; the caller then calls
 * hy__wait_fini. */
int hy__wait_park_queued(hy__wait *w, hy__waiter *wr, hy__waitq *q,
                         hy__lock_t *lock, const char *what, int64_t deadline);

/* ------------------------------------------------------------ awaitables */

/* What select needs from an object.  Every function runs with the object's
 * lock held (taken by the caller through lock_of).
 *
 * How select (channels/select.c) drives them, and what an object must do
 * for "exactly one arm fires, the others leave no trace":
 *   1. It takes the locks of all its arms' objects (hy__lock_all) and calls
 *      try_fire on each enabled arm, in a random order, until one fires.
 *      try_fire consumes (takes the element, the event, the completion)
 *      only when it returns 1; returning 0 must leave the object as it was.
 *      It may complete a waiter of the object itself (a channel send that
 *      meets a waiting receiver) and wake it.  The select's own wait is not
 *      yet claimable at this point (hy__wait_init_quiet), so a fired arm
 *      is never undone by a racing cancel.
 *   2. If none fired (and there is no else), it opens the wait and calls
 *      enqueue on every enabled arm with one hy__waiter each (arm = the
 *      arm's index, wait = the select's one hy__wait), drops the locks and
 *      parks.  enqueue may use w->buf and w->aux; it must not fire.
 *   3. The object completes a queued waiter the usual way: under its lock,
 *      hy__waitq_claim (or hy__wait_claim with w->arm), transfer through
 *      w->buf, set w->wait->result, unlink, hy__wait_wake.  A claim that
 *      fails means another arm (or the delay, or a cancel) won: the object
 *      leaves what it had for someone else.
 *   4. After the park, select takes the locks again and calls dequeue on
 *      every arm it queued (also the one that fired: dequeue must be a
 *      no-op on an unlinked waiter).
 * An arm whose object is gone (a stale handle) may have lock_of return
 * NULL; its try_fire must then fire at once with an error (HY_ESTALE).
 * Delay, else and terminate are arms like the others (hy_arm_t.kind); a
 * delay arm's aux says whether its deadline is absolute or relative to the
 * moment the select starts to wait (see channels/select.c).  Arms do not
 * take references: the caller keeps the objects alive during the select. */
struct hy_awaitable {
  const char *name;              /* "chan-recv", "hub", ... for dumps */
  hy__lock_t *(*lock_of)(void *obj);
  /* Completes arm at once if it can (transferring data); returns 1 and sets
   * *result (0 or HY_E*, e.g. HY_ECLOSED) if it fired, 0 if not ready. */
  int (*try_fire)(void *obj, hy_arm_t *arm, int *result);
  /* Links w so that the object claims it when arm becomes ready. */
  void (*enqueue)(void *obj, hy_arm_t *arm, hy__waiter *w);
  /* Unlinks w if it is still linked. */
  void (*dequeue)(void *obj, hy_arm_t *arm, hy__waiter *w);
};

/* The queue half of most awaitables: objects of type T whose waiters wait
 * in the hy__waitq T.q, under the lock T.lk.  Defines name_lock (NULL for
 * a NULL object), name_enqueue (the waiter takes the arm's buffer, where
 * the object's waker delivers) and name_dequeue, for the object's
 * struct hy_awaitable. */
#define HY__WAITQ_ARM_OPS(name, T, lk, q)                                     \
  static hy__lock_t *name##_lock(void *obj) {                                 \
    return obj ? &((T *)obj)->lk : NULL;                                      \
  }                                                                           \
  static void name##_enqueue(void *obj, hy_arm_t *arm, hy__waiter *w) {       \
    w->buf = arm->buf;                                                        \
    hy__waitq_push(&((T *)obj)->q, w);                                        \
  }                                                                           \
  static void name##_dequeue(void *obj, hy_arm_t *arm, hy__waiter *w) {       \
    (void)arm;                                                                \
    hy__waitq_remove(&((T *)obj)->q, w);                                      \
  }

/* An arm of the given kind (HY_ARM_OBJECT, HY_ARM_TERMINATE) on obj. */
hy_arm_t hy__arm_make(const struct hy_awaitable *ops, int kind, void *obj,
                      void *buf, int guard);

/* Takes the n locks in address order, skipping NULLs and repeats. */
void hy__lock_all(hy__lock_t **locks, int n);
void hy__unlock_all(hy__lock_t **locks, int n);

/* ------------------------------------------------------------- tasks */

/* The task running on the calling thread for runtime rt, or NULL (a foreign
 * thread, or a worker outside any task). */
struct hy__task *hy__task_current(hy_runtime_t *rt);

/* Whether the calling context may block by parking a task (1) or must use a
 * foreign-thread wait (0). */
static inline int hy__in_task(hy_runtime_t *rt) {
  return rt && hy__task_current(rt) != NULL;
}

#endif
