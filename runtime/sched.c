/* sched.c - the M:N scheduler: run queues, the LIFO slot, the injection
 * queue, stealing, idle workers blocking in their port, and completion
 * dispatch.
 *
 * Each worker has a LIFO slot holding the task most recently woken (or
 * spawned) on it, which runs next: a message exchange between two tasks
 * then stays on one worker and in cache (Go's runnext, Tokio's LIFO slot).
 * Behind it are two queues.  Tasks that already ran (yielded, or woken and
 * spilled from the slot) wait in a FIFO.  Tasks that never ran wait in a
 * deque whose newest runs first, Cilk's work-first order: a tree of spawns
 * (each parent spawning and then joining its children) runs depth first,
 * so only the tasks on the current path hold a stack, where a FIFO would
 * start a whole level at once, each parked parent holding a stack (a stack
 * costs two kernel mappings: a million-task tree would hit vm.max_map_count
 * long before memory).  The owner takes from the FIFO and from the deque
 * in turn, so that neither starves the other.  A task that keeps
 * re-entering the slot gets at most LIFO_STREAK turns in a row before the
 * queues run, so a ping-pong pair cannot starve the others.  Wakes from
 * threads that are not workers of this runtime go to the injection queue,
 * which workers also check every INJECT_EVERY ticks so it cannot starve
 * either.  An idle worker steals half of another worker's FIFO and half of
 * its never-run tasks, the oldest ones (near the root of a spawn tree:
 * big pieces of work), and if there is none, searches a few µs more
 * (spinning, see search()) and then blocks in its completion port until
 * the next timer is due; it is woken by a port wake, which a waker sends
 * only when it made stealable work, some worker sleeps and none searches
 * already.  A task
 * that cannot get a stack is put back while tasks that already ran (and
 * may free theirs) are queued, NOSTACK_RETRIES times in a row at most;
 * then it ends with HY_ENOMEM.
 *
 * Sleeping without losing a wake: the sleeper publishes w->sleeping and
 * rt->nsleeping (seq_cst), then looks at every queue length once more; a
 * waker publishes the queue length (seq_cst), then looks at nspinning and
 * nsleeping.  One of the two always sees the other; a searcher that gives
 * up goes through the same sleep sequence.
 *
 * Rejected: a lock-free Chase-Lev deque per worker.  The per-queue
 * spinlock is uncontended in the common case (the owner alone touches its
 * queue) and keeps stealing half a queue simple; revisit if measurements
 * show the lock on the switch path.
 */
#include <stdlib.h>

#include "runtime/ctx.h"
#include "runtime/fiber.h"
#include "runtime/internal.h"

#define LIFO_STREAK 16
#define INJECT_EVERY 61
#define POLL_EVERY 61
#define POLL_INTERVAL HY_US(50)
#define MAX_EVENTS 64
#define NOSTACK_RETRIES 1024
#define TIMER_SLACK HY_US(100) /* before an idle worker fires another's */

hy__task *hy__task_current(hy_runtime_t *rt) {
  hy__worker *w = hy__worker_current(rt);
  return w ? w->current : NULL;
}

hy__port *hy__current_port(hy_runtime_t *rt) {
  hy__worker *w = hy__worker_current(rt);
  return w ? w->port : NULL;
}

/* ------------------------------------------------------------- queues */

static void qlen_add(hy__worker *w, int d) {
  atomic_store_explicit(&w->qlen,
                        atomic_load_explicit(&w->qlen, memory_order_relaxed) + d,
                        memory_order_relaxed);
}

/* A worker's queues are shared with thieves only: a runtime with one
 * worker (or embedded, whose host runs one run_once at a time, ordered by
 * rt->host_busy) has none, and its owner needs no qlock - the lock's
 * atomic exchange is a third of a yield's cost.  nworkers is fixed before
 * any worker starts. */
static inline int q_shared(const hy__worker *w) { return w->rt->nworkers > 1; }

static inline void q_lock(hy__worker *w) {
  if (q_shared(w))
    hy__lock(&w->qlock);
}

static inline void q_unlock(hy__worker *w) {
  if (q_shared(w))
    hy__unlock(&w->qlock);
}

/* The FIFO of tasks that already ran. */
static void q_append(hy__worker *w, hy__task *t) {
  t->next = NULL;
  if (w->qtail)
    w->qtail->next = t;
  else
    w->qhead = t;
  w->qtail = t;
  w->fifo_len++;
  qlen_add(w, 1);
}

static hy__task *q_take(hy__worker *w) {
  hy__task *t = w->qhead;
  if (!t)
    return NULL;
  w->qhead = t->next;
  if (!w->qhead)
    w->qtail = NULL;
  t->next = NULL;
  w->fifo_len--;
  qlen_add(w, -1);
  return t;
}

/* The deque of tasks that never ran, from w->nold to w->nnew (t->next
 * points to the newer neighbour, t->prev to the older).  The owner pushes
 * and pops at the new end; thieves and the injection queue use the old
 * end. */
static void n_push_new(hy__worker *w, hy__task *t) {
  t->next = NULL;
  t->prev = w->nnew;
  if (w->nnew)
    w->nnew->next = t;
  else
    w->nold = t;
  w->nnew = t;
  w->new_len++;
  qlen_add(w, 1);
}

static void n_push_old(hy__worker *w, hy__task *t) {
  t->prev = NULL;
  t->next = w->nold;
  if (w->nold)
    w->nold->prev = t;
  else
    w->nnew = t;
  w->nold = t;
  w->new_len++;
  qlen_add(w, 1);
}

static hy__task *n_pop_new(hy__worker *w) {
  hy__task *t = w->nnew;
  if (!t)
    return NULL;
  w->nnew = t->prev;
  if (w->nnew)
    w->nnew->next = NULL;
  else
    w->nold = NULL;
  t->next = t->prev = NULL;
  w->new_len--;
  qlen_add(w, -1);
  return t;
}

static hy__task *n_take_old(hy__worker *w) {
  hy__task *t = w->nold;
  if (!t)
    return NULL;
  w->nold = t->next;
  if (w->nold)
    w->nold->prev = NULL;
  else
    w->nnew = NULL;
  t->next = t->prev = NULL;
  w->new_len--;
  qlen_add(w, -1);
  return t;
}

/* A task that never ran has no stack: it goes to the new deque, where the
 * newest runs first (depth first), so that a tree of spawns holds stacks
 * for one path and not for a whole level.  The others go to the FIFO. */
static void q_push(hy__worker *w, hy__task *t) {
  if (t->stack.base)
    q_append(w, t);
  else
    n_push_new(w, t);
}

/* Queue lengths change under qlock only; readers outside the lock (the
 * sleep check, thieves choosing a victim) pair a seq_cst fence with the
 * one in hy__wake_idle's callers.  Only the owner adds to its queues, so
 * the owner reading 0 knows they are empty. */
static int qlen(hy__worker *w) {
  return atomic_load_explicit(&w->qlen, memory_order_relaxed);
}

/* The LIFO slot belongs to its worker alone (thieves leave it), so the
 * owner reads and writes it without qlock: at most LIFO_STREAK times in a
 * row while the queues hold others. */
static hy__task *pick_lifo(hy__worker *w) {
  hy__task *t = w->lifo;
  if (!t)
    return NULL;
  int queued = qlen(w) != 0;
  if (w->lifo_streak < LIFO_STREAK || !queued) {
    w->lifo = NULL;
    w->lifo_streak = queued ? w->lifo_streak + 1 : 0;
    return t;
  }
  return NULL;
}

/* Under qlock: the FIFO and the newest never-run task in turn, so that
 * neither starves the other. */
static hy__task *pick_queue(hy__worker *w) {
  hy__task *t = NULL;
  if (w->qhead && (w->pick_fifo || !w->nnew)) {
    t = q_take(w);
    w->pick_fifo = 0;
  } else if (w->nnew) {
    t = n_pop_new(w);
    w->pick_fifo = 1;
  }
  w->lifo_streak = 0;
  return t;
}

/* The LIFO slot when it was passed over but thieves emptied the queues
 * meanwhile. */
static hy__task *pick_lifo_left(hy__worker *w) {
  hy__task *t = w->lifo;
  w->lifo = NULL;
  return t;
}

/* The owner's pick: the LIFO slot, then the queues (looked at under qlock,
 * and only when not empty: only the owner adds to them, so a zero it
 * reads stays zero until it adds). */
static hy__task *pick_local(hy__worker *w) {
  hy__task *t = pick_lifo(w);
  if (t || qlen(w) == 0)
    return t;
  q_lock(w);
  t = pick_queue(w);
  q_unlock(w);
  return t ? t : pick_lifo_left(w);
}

static void inject(hy_runtime_t *rt, hy__task *t) {
  t->next = NULL;
  hy__lock(&rt->inject_lock);
  if (rt->inject_tail)
    rt->inject_tail->next = t;
  else
    rt->inject_head = t;
  rt->inject_tail = t;
  atomic_fetch_add(&rt->inject_len, 1);
  hy__unlock(&rt->inject_lock);
}

static hy__task *inject_take(hy_runtime_t *rt) {
  if (atomic_load(&rt->inject_len) == 0)
    return NULL;
  hy__lock(&rt->inject_lock);
  hy__task *t = rt->inject_head;
  if (t) {
    rt->inject_head = t->next;
    if (!rt->inject_head)
      rt->inject_tail = NULL;
    atomic_fetch_sub(&rt->inject_len, 1);
    t->next = NULL;
  }
  hy__unlock(&rt->inject_lock);
  return t;
}

/* Wakes one sleeping worker to search for the work the caller has just
 * made visible (queue length, injection queue) - unless a worker is
 * searching already (spinning, or woken for this and not yet running
 * anything), which will find it: then no system call is made at all.  The
 * fence orders the caller's publication before the reads of nspinning and
 * nsleeping, against the mirror-image sequences of sleepers and spinners.
 *
 * The waker takes the searching count (nspinning 0 -> 1) before it picks a
 * sleeper, and hands it to the worker it wakes (sleeping 1 -> 2): until
 * that worker has looked for work, other wakers stay quiet, so a burst of
 * wakes costs one system call, not one per sleeper.  If no sleeper is left
 * to take it, the count is given back and the state read again. */
static int wake_one(hy_runtime_t *rt) {
  int n = rt->nworkers ? rt->nworkers : 1;
  int start = atomic_fetch_add_explicit(&rt->rr, 1, memory_order_relaxed);
  for (int i = 0; i < n; i++) {
    hy__worker *w = &rt->workers[(start + i) % n];
    int one = HY__SLEEPING;
    if (atomic_load_explicit(&w->sleeping, memory_order_relaxed) == HY__SLEEPING &&
        atomic_compare_exchange_strong(&w->sleeping, &one, HY__WOKEN_SEARCHING)) {
      atomic_fetch_sub(&rt->nsleeping, 1);
      atomic_fetch_add_explicit(&rt->wakeups, 1, memory_order_relaxed);
      hy__port_wake(w->port);
      return 1;
    }
  }
  return 0;
}

void hy__wake_idle(hy_runtime_t *rt) {
  atomic_thread_fence(memory_order_seq_cst);
  for (;;) {
    if (atomic_load_explicit(&rt->nspinning, memory_order_relaxed) > 0 ||
        atomic_load_explicit(&rt->nsleeping, memory_order_relaxed) <= 0)
      return;
    int zero = 0;
    if (!atomic_compare_exchange_strong(&rt->nspinning, &zero, 1))
      return; /* another worker searches now */
    if (wake_one(rt))
      return; /* the woken worker holds the count */
    /* Every sleeper woke meanwhile (and will look at the queues before it
     * sleeps again): give the count back, then read the state again, so
     * that a waker that kept quiet because of our count is not lost. */
    atomic_fetch_sub(&rt->nspinning, 1);
    atomic_thread_fence(memory_order_seq_cst);
  }
}

/* Wakes w if it sleeps, for a reason of its own (a timer due before it
 * would wake): it is handed no searching count (see stop_sleeping). */
static int wake_worker(hy_runtime_t *rt, hy__worker *w) {
  int one = HY__SLEEPING;
  if (atomic_load_explicit(&w->sleeping, memory_order_relaxed) == HY__SLEEPING &&
      atomic_compare_exchange_strong(&w->sleeping, &one, HY__AWAKE)) {
    atomic_fetch_sub(&rt->nsleeping, 1);
    atomic_fetch_add_explicit(&rt->wakeups, 1, memory_order_relaxed);
    hy__port_wake(w->port);
    return 1;
  }
  return 0;
}

/* An idle worker sleeps until the earliest timer of all workers (plus
 * TIMER_SLACK for others'), read under each heap's lock after it set
 * sleep_until to HY_FOREVER; a new earliest timer is pushed under its
 * heap's lock before this looks at sleep_until.  So either the sleeper saw
 * the timer, or this sees a sleep_until that does not count it. */
void hy__timer_first(hy__worker *w, int64_t deadline) {
  hy_runtime_t *rt = w->rt;
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&rt->nsleeping, memory_order_relaxed) <= 0 ||
      deadline >= HY_FOREVER - TIMER_SLACK)
    return;
  for (int i = 0; i < rt->nworkers; i++) {
    hy__worker *v = &rt->workers[i];
    if (v != w &&
        atomic_load_explicit(&v->sleeping, memory_order_relaxed) == HY__SLEEPING &&
        atomic_load(&v->sleep_until) > deadline + TIMER_SLACK)
      wake_worker(rt, v);
  }
}

/* Makes t runnable on w, the calling thread's worker.  The LIFO slot is
 * the owner's alone: only a task it pushes out (spill) takes the queue
 * lock, and only then is there stealable work to wake an idle worker for. */
static void ready_push(hy__worker *w, hy__task *t) {
  q_lock(w);
  q_push(w, t);
  q_unlock(w);
  hy__wake_idle(w->rt);
}

/* Puts t in w's LIFO slot; returns the task it pushed out (for the run
 * queue), or NULL. */
static inline HY__ALWAYS_INLINE hy__task *lifo_swap(hy__worker *w,
                                                    hy__task *t) {
  hy__task *spill = w->lifo;
  w->lifo = t;
  return spill;
}

/* Activity on w (a completion, a task woken, parked or spawned) while the
 * runtime shuts down: the drain measures its silence from the last one.
 * While running nothing reads it, and the clock is not read. */
static inline HY__ALWAYS_INLINE void note_activity(hy__worker *w) {
  if (atomic_load_explicit(&w->rt->phase, memory_order_relaxed) !=
      HY__PH_RUNNING)
    w->last_activity = hy_now();
}

/* Inline: the LIFO slot's fast path is a few stores, less than a call. */
static inline HY__ALWAYS_INLINE void ready_on(hy__worker *w, hy__task *t,
                                              int lifo) {
  note_activity(w);
  if (lifo && !(t = lifo_swap(w, t)))
    return;
  ready_push(w, t);
}

void hy__task_ready(hy_runtime_t *rt, hy__task *t, int lifo) {
  hy__worker *w = hy__worker_current(rt);
  if (!w) {
    inject(rt, t);
    if (rt->nworkers == 0)
      hy__port_wake(rt->workers[0].port); /* the host's os_handle */
    else
      hy__wake_idle(rt);
    return;
  }
  ready_on(w, t, lifo);
}

void hy__task_wake(hy__task *t) {
  hy__task_wake_on(t, hy__worker_current(t->rt));
}

/* The wake of a task parked for its quiet wait (hy__park_quiet), by the
 * claimer of that wait, the one party that may wake it.  Such a park marks
 * the task PARKED with a plain store once its registers are saved, without
 * the compare-and-swap that detects an early wake: a waker that comes
 * before that (on another thread: the task runs up to its switch-out
 * without taking a lock, a few dozen instructions) waits for the mark
 * instead.  On the task's own worker the switch-out is always complete. */
static void await_parked(hy__task *t) {
  unsigned spins = 0;
  while (atomic_load_explicit(&t->wstate, memory_order_acquire) !=
         HY__PARKED) {
    if (++spins < 256)
      hy__cpu_relax();
    else
      hy__thread_yield(); /* its thread lost the CPU meanwhile */
  }
}

static inline HY__ALWAYS_INLINE void wake_quiet(hy__task *t, hy__worker *w) {
  if (w && w->current == t) {
    /* The task claimed its own open wait, on its way to park (an
     * awaitable that fires while select queues it breaks its contract,
     * but must not hang the task): its switch-out sees this. */
    atomic_store_explicit(&t->wstate, HY__NOTIFIED, memory_order_relaxed);
    return;
  }
  if (!(w && t->worker == w))
    await_parked(t);
  atomic_store_explicit(&t->wstate, HY__RUNNING, memory_order_relaxed);
  if (w)
    ready_on(w, t, 1);
  else
    hy__task_ready(t->rt, t, 1);
}

void hy__task_wake_quiet(hy__task *t, hy__worker *w) { wake_quiet(t, w); }

/* hy__wait_wake_from (runtime/wait.h) lives here, where the wake of a
 * quiet wait - the one of every channel hand-over - is inlined.  Its
 * common case (a channel hand-over between two tasks of one worker) is
 * a few loads and stores: the woken task last ran here and is switched
 * out (so PARKED, see hy__task_wake_on), and goes to the LIFO slot; the
 * rest is out of line, so that this path saves no registers. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void wake_from_slow(hy__wait *w, const hy__wait *self) {
  hy__task *t = w->task;
  if (!t) {
    hy__osev_signal(&w->ev);
    return;
  }
  /* The caller's worker, if it is one of t's runtime: it runs here, now. */
  hy__worker *wk = self->task ? (self->task->rt == t->rt ? self->task->worker
                                                        : NULL)
                              : hy__worker_current(t->rt);
  if (w == &t->qwait)
    wake_quiet(t, wk);
  else
    hy__task_wake_on(t, wk);
}

#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void spill_push(hy__worker *w, hy__task *t) { ready_push(w, t); }

void hy__wait_wake_from(hy__wait *w, const hy__wait *self) {
  hy__task *t = w->task, *me = self->task;
  hy__worker *wk;
  if (t && me && w == &t->qwait && (wk = me->worker) == t->worker &&
      wk->current != t &&
      atomic_load_explicit(&wk->rt->phase, memory_order_relaxed) ==
          HY__PH_RUNNING) {
    /* wake_quiet and ready_on for a task of the caller's own worker. */
    atomic_store_explicit(&t->wstate, HY__RUNNING, memory_order_relaxed);
    hy__task *spill = lifo_swap(wk, t);
    if (spill)
      spill_push(wk, spill);
    return;
  }
  wake_from_slow(w, self);
}

/* The wake of a task that may not have switched out yet: PARKED becomes
 * RUNNING (returns 1: the caller queues it), RUNNING becomes NOTIFIED (0:
 * its park returns at once), NOTIFIED stays (0). */
static int mark_woken(hy__task *t) {
  for (;;) {
    int s = atomic_load_explicit(&t->wstate, memory_order_acquire);
    if (s == HY__PARKED) {
      if (atomic_compare_exchange_weak(&t->wstate, &s, HY__RUNNING))
        return 1;
    } else if (s == HY__RUNNING) {
      if (atomic_compare_exchange_weak(&t->wstate, &s, HY__NOTIFIED))
        return 0;
    } else {
      return 0; /* already notified */
    }
  }
}

void hy__task_wake_on(hy__task *t, hy__worker *w) {
  if (w && t->worker == w && w->current != t) {
    /* t last ran on this very worker and is not running: its switch-out
     * was completed here (complete_switch runs before anything else
     * resumes on a worker), so it is PARKED, and nobody but us - the one
     * claimer of its wait - changes that now.  No compare-and-swap. */
    atomic_store_explicit(&t->wstate, HY__RUNNING, memory_order_relaxed);
    ready_on(w, t, 1);
    return;
  }
  if (!mark_woken(t))
    return;
  if (w)
    ready_on(w, t, 1);
  else
    hy__task_ready(t->rt, t, 1);
}

/* A task woken on the worker it last ran on (home) rather than the
 * waker's, for producers and consumers that meet through a queue and are
 * best left each on its own worker (a broadcast sender and its readers):
 * pulling each woken task over to the waker would move every reader and
 * the sender back and forth between workers, their data after them.  The
 * task goes to home's FIFO under its queue lock, as a thief's would; the
 * owner's lock-free "my queues are empty" reads only delay it until its
 * next look (its sleep protocol looks at every queue after publishing that
 * it sleeps, and hy__wake_idle wakes a sleeper). */
static void push_home(hy__worker *home, hy__task *t) {
  q_lock(home);
  q_push(home, t);
  q_unlock(home);
  hy__wake_idle(t->rt);
}

void hy__task_wake_home(hy__task *t, int quiet) {
  hy__worker *w = hy__worker_current(t->rt);
  /* Shutting down: the drain judges each worker's quiet by its own
   * last_activity, which only the owner writes (ready_on): wake here.
   * Last run here, or running here: the local wake is the home one. */
  if (!w || t->rt->nworkers < 2 ||
      atomic_load_explicit(&t->rt->phase, memory_order_relaxed) !=
          HY__PH_RUNNING ||
      w->current == t || t->worker == w) {
    if (quiet)
      hy__task_wake_quiet(t, w);
    else
      hy__task_wake_on(t, w);
    return;
  }
  if (quiet) {
    /* A quiet park marks PARKED with a plain store and never looks for an
     * early wake: the one claimer waits for the mark (hy__task_wake_quiet),
     * after which t->worker is where it last ran. */
    await_parked(t);
    hy__worker *home = t->worker;
    atomic_store_explicit(&t->wstate, HY__RUNNING, memory_order_relaxed);
    push_home(home, t);
    return;
  }
  if (!mark_woken(t))
    return;
  /* Was parked: t->worker was last written before its park, which the
   * compare-and-swap orders before this read; nothing runs t until it is
   * queued. */
  hy__worker *home = t->worker;
  if (!home || home == w)
    ready_on(w, t, 1);
  else
    push_home(home, t);
}

/* ------------------------------------------------------------ switching */

/* A task that stops running (yield, park, exit) hands the CPU straight to
 * the next runnable task of its worker when there is one, without a detour
 * through the scheduler's stack: one stack switch instead of two.  What the
 * leaving task asked for (requeue it, mark it parked, free it) cannot be
 * done before its registers are saved - another worker could otherwise
 * resume it half-saved - so it is left in w->pend_* and carried out by
 * whoever runs next on this worker (complete_switch), at every point where
 * a context resumes.  After DIRECT_MAX direct switches in a row the worker
 * goes through its scheduler loop, which looks at timers and the port. */
#define DIRECT_MAX 61

static void complete_switch_slow(hy__worker *w, hy__task *t, int after) {
  switch (after) {
  case HY__AFTER_YIELD:
    q_lock(w);
    q_append(w, t);
    q_unlock(w);
    break;
  case HY__AFTER_PARK: {
    int expect = HY__RUNNING;
    if (!atomic_compare_exchange_strong(&t->wstate, &expect, HY__PARKED)) {
      /* Woken before it was even switched out: run it again soon. */
      atomic_store(&t->wstate, HY__RUNNING);
      q_lock(w);
      q_append(w, t);
      q_unlock(w);
    }
    break;
  }
  case HY__AFTER_PARK_QUIET:
    /* Nobody else writes wstate now: the claimer of the quiet wait waits
     * for this store (hy__task_wake_quiet) - unless the claimer was the
     * task itself, before it switched out (NOTIFIED, written on this
     * thread): then it runs again soon, as after any early wake. */
    if (atomic_load_explicit(&t->wstate, memory_order_relaxed) ==
        HY__NOTIFIED) {
      atomic_store_explicit(&t->wstate, HY__RUNNING, memory_order_relaxed);
      q_lock(w);
      q_append(w, t);
      q_unlock(w);
      break;
    }
    atomic_store_explicit(&t->wstate, HY__PARKED, memory_order_release);
    break;
  case HY__AFTER_SAVED:
    /* Queued already (pick_direct): stealable from now on. */
    atomic_store_explicit(&t->saving, 0, memory_order_release);
    break;
  case HY__AFTER_EXIT:
    hy__task_finish(w, t);
    break;
  default:
    abort();
  }
}

/* Inline for its common cases: nothing pending (after the scheduler), and
 * a task parked for its quiet wait (a channel hand-over). */
static inline HY__ALWAYS_INLINE void complete_switch(hy__worker *w) {
  hy__task *t = w->pend_task;
  if (!t)
    return;
  int after = w->pend_after;
  w->pend_task = NULL;
  w->pend_after = HY__AFTER_NONE;
  if (after == HY__AFTER_PARK_QUIET &&
      atomic_load_explicit(&t->wstate, memory_order_relaxed) != HY__NOTIFIED)
    atomic_store_explicit(&t->wstate, HY__PARKED, memory_order_release);
  else
    complete_switch_slow(w, t, after);
}

/* Each worker keeps a few free stacks of its own (w->stash): a task that
 * ends gives its stack there and the next task to start takes it, without
 * the stack cache's lock.  Stashed stacks need no giving back: they lie in
 * the cache's chunks, unmapped with it. */
void hy__stack_put(hy__worker *w, const hy_stack_t *s) {
  if (w->nstash < HY__STACK_STASH)
    w->stash[w->nstash++] = *s;
  else
    hy_stack_free(w->rt->stacks, s);
}

static int stack_get(hy__worker *w, hy_stack_t *s) {
  if (w->nstash) {
    *s = w->stash[--w->nstash];
    return 0;
  }
  return hy_stack_alloc(w->rt->stacks, s);
}

/* Gives t a stack and an initial context if it never ran.  Returns 0, or
 * HY_ENOMEM. */
static int prepare(hy__worker *w, hy__task *t) {
  if (t->stack.base)
    return 0;
  if ((t->scache ? hy_stack_alloc(t->scache, &t->stack)
                 : stack_get(w, &t->stack)) != 0)
    return HY_ENOMEM;
  hy__fiber_task_new(t); /* TSan: only tasks that run count as fibers */
  t->sp = hy__ctx_make(t->stack.base, t->stack.size, hy__task_entry, t);
  atomic_store_explicit(&t->started, 1, memory_order_relaxed);
  return 0;
}

/* Switches from `from` to `to` on worker w; NULL stands for the scheduler.
 * Returns when `from` is resumed (possibly on another worker). */
static void switch_to(hy__worker *w, hy__task *from, hy__task *to,
                      int exiting) {
  void **save = from ? &from->sp : &w->sched_sp;
  void *target = to ? to->sp : w->sched_sp;
  w->current = to;
  if (to)
    to->worker = w;
  w->from_sched = from == NULL;
  HY__STAT_INC(w->st.switches);
  hy__fiber_switch(w, from, to, exiting);
  hy__ctx_switch(save, target);
}

/* The next task to hand the CPU to directly, or NULL for the scheduler.
 * yielder: the task leaving by a yield, if it is one. */
static inline HY__ALWAYS_INLINE hy__task *pick_direct(hy__worker *w,
                                                      hy__task *yielder) {
  if (w->direct >= DIRECT_MAX)
    return NULL;
  hy__task *t = pick_lifo(w);
  if (!t && qlen(w)) {
    q_lock(w);
    t = pick_queue(w);
    if (t && yielder) {
      /* The yielder joins the FIFO in the same critical section, marked
       * as still saving its registers: thieves leave it until the next
       * task, once switched in, clears the mark (complete_switch).  With
       * no thieves there is nothing left to do after the switch. */
      q_append(w, yielder);
      if (q_shared(w)) {
        atomic_store_explicit(&yielder->saving, 1, memory_order_relaxed);
        w->pend_after = HY__AFTER_SAVED;
      } else {
        w->pend_task = NULL;
        w->pend_after = HY__AFTER_NONE;
      }
    }
    q_unlock(w);
    if (!t)
      t = pick_lifo_left(w);
  }
  if (t && prepare(w, t) != 0) {
    /* No stack for it now: the scheduler will deal with it. */
    q_lock(w);
    n_push_new(w, t);
    w->pick_fifo = 0;
    q_unlock(w);
    return NULL;
  }
  if (t) {
    w->direct++;
    w->nostack_retries = 0;
  }
  return t;
}

/* A task with a floating-point control state of its own (hy_task_own_fp)
 * leaves the default to the next one and takes its own back on resuming:
 * the others share the worker's, which no switch saves (ctx.h). */
#if defined(__GNUC__)
__attribute__((noinline, cold))
#endif
static void fp_out(hy__task *t) {
  hy__ctx_fp_save(&t->fp);
  hy__ctx_fp_default();
}

static inline HY__ALWAYS_INLINE void leave(hy__task *t, int after) {
  hy__worker *w = t->worker;
  if (t->fp_own)
    fp_out(t);
  w->pend_task = t;
  w->pend_after = after;
  hy__task *next = pick_direct(w, after == HY__AFTER_YIELD ? t : NULL);
  switch_to(w, t, next, after == HY__AFTER_EXIT);
  /* Resumed, possibly on another worker, which set t->worker. */
  w = t->worker;
  hy__fiber_resumed(w, t);
  complete_switch(w);
  if (t->fp_own)
    hy__ctx_fp_load(&t->fp);
}

void hy__park(hy__task *t) {
  hy__worker *w = t->worker;
  HY__STAT_INC(w->st.parks);
  /* Shutting down: the task ran up to here, which is activity too, so the
   * drain's silence starts now, not when the task was woken (a loaded
   * machine may leave a long gap between the two).  A yield is not
   * counted: a task that only yields must not hold the drain open. */
  note_activity(w);
  leave(t, HY__AFTER_PARK);
}

void hy__park_quiet(hy__task *t) {
  hy__worker *w = t->worker;
  HY__STAT_INC(w->st.parks);
  note_activity(w);
  leave(t, HY__AFTER_PARK_QUIET);
}

void hy__yield_now(hy__task *t) { leave(t, HY__AFTER_YIELD); }

/* hy__wait_park_one (runtime/wait.h): hy__wait_what, hy__wait_park and
 * hy__park_quiet in one, for a task's quiet wait opened as
 * HY__WAITING_ONE (no deadline, no cancel look left to make: see
 * hy__wait_park); any other wait takes the usual way. */
int hy__wait_park_one(hy__wait *w, const char *what, int64_t deadline) {
  hy__task *t = w->task;
  if (!t || w != &t->qwait ||
      atomic_load_explicit(&w->state, memory_order_relaxed) !=
          HY__WAITING_ONE) {
    if (what)
      hy__wait_what(w, what);
    return hy__wait_park(w, deadline);
  }
  hy__worker *wk = t->worker;
  atomic_store_explicit(&t->await_what, what, memory_order_relaxed);
  atomic_store_explicit(&t->await_since, wk->clock, memory_order_relaxed);
  HY__STAT_INC(wk->st.parks);
  note_activity(wk);
  leave(t, HY__AFTER_PARK_QUIET);
  atomic_store_explicit(&t->await_what, NULL, memory_order_relaxed);
  return atomic_load_explicit(&w->state, memory_order_acquire);
}


int hy_task_own_fp(hy_runtime_t *rt) {
  hy__task *t = rt ? hy__task_current(rt) : NULL;
  if (!t)
    return HY_EINVAL;
  t->fp_own = 1;
  return 0;
}

void hy__task_entry(void *arg) {
  hy__task *t = arg;
  hy__fiber_resumed(t->worker, t);
  complete_switch(t->worker);
  t->result = t->fn(t->arg);
  /* Task-local destructors run on the task's own stack, before it ends. */
  for (int k = 0; k < t->rt->task_keys; k++) {
    void *v = t->locals[k];
    t->locals[k] = NULL;
    if (v && t->rt->task_key_dtor[k])
      t->rt->task_key_dtor[k](v);
  }
  if (t->fp_own) { /* the block is reused: the next task starts shared */
    t->fp_own = 0;
    hy__ctx_fp_default();
  }
  /* Joiners are woken now, from the task's own stack: the one woken here
   * sits in the LIFO slot and is the direct switch's target. */
  hy__task_end(t->worker, t);
  leave(t, HY__AFTER_EXIT);
  abort(); /* an exited task is never resumed */
}

static void run_task(hy__worker *w, hy__task *t) {
  if (prepare(w, t) != 0) {
    /* No memory for a stack.  While tasks that already run are queued
     * here (they may end and free theirs), the task goes back to the old
     * end of the new deque, a bounded number of times in a row. */
    q_lock(w);
    int started = w->fifo_len > 0 || (w->lifo && w->lifo->stack.base);
    if (started && w->nostack_retries < NOSTACK_RETRIES) {
      w->nostack_retries++;
      n_push_old(w, t);
      q_unlock(w);
      return;
    }
    q_unlock(w);
    /* The task ends without running, and its joiner gets HY_ENOMEM (never
     * a result it did not compute). */
    t->result = NULL;
    t->error = HY_ENOMEM;
    hy__task_end(w, t);
    hy__task_finish(w, t);
    return;
  }
  w->direct = 0;
  w->nostack_retries = 0;
  w->clock = hy_now();
  switch_to(w, NULL, t, 0);
  hy__fiber_resumed(w, NULL);
  complete_switch(w);
}

/* ------------------------------------------------------- finding work */

/* Takes half of v's FIFO (its oldest) and half of its never-run tasks (the
 * oldest: near the root of a spawn tree, so each is a large piece of work)
 * into w's queues.  Returns how many moved. */
static int steal_from(hy__worker *w, hy__worker *v) {
  hy__task *fifo = NULL, *ftail = NULL, *fresh = NULL, *ntail = NULL;
  int kf = 0, kn = 0;
  q_lock(v);
  int takef = (v->fifo_len + 1) / 2, taken = (v->new_len + 1) / 2;
  for (; kf < takef; kf++) {
    /* A yielder still saving its registers stays (pick_direct). */
    if (v->qhead &&
        atomic_load_explicit(&v->qhead->saving, memory_order_acquire))
      break;
    hy__task *t = q_take(v);
    if (!t)
      break;
    if (ftail)
      ftail->next = t;
    else
      fifo = t;
    ftail = t;
  }
  for (; kn < taken; kn++) {
    hy__task *t = n_take_old(v);
    if (!t)
      break;
    if (ntail)
      ntail->next = t;
    else
      fresh = t;
    ntail = t;
  }
  q_unlock(v);
  if (!kf && !kn)
    return 0;
  /* Oldest first in both lists, so each keeps its order here. */
  q_lock(w);
  while (fifo) {
    hy__task *nx = fifo->next;
    q_append(w, fifo);
    fifo = nx;
  }
  while (fresh) {
    hy__task *nx = fresh->next;
    n_push_new(w, fresh);
    fresh = nx;
  }
  q_unlock(w);
  return kf + kn;
}

static hy__task *steal(hy__worker *w) {
  hy_runtime_t *rt = w->rt;
  int n = rt->nworkers;
  if (n < 2)
    return NULL;
  int start = (int)(w->tick % (uint64_t)n);
  for (int i = 0; i < n; i++) {
    hy__worker *v = &rt->workers[(start + i) % n];
    if (v == w || qlen(v) == 0)
      continue;
    int k = steal_from(w, v);
    if (!k)
      continue;
    HY__STAT_ADD(w->st.steals, (uint64_t)k);
    hy__task *t = pick_local(w);
    if (t)
      return t;
  }
  return NULL;
}

/* Moves up to max tasks from the injection queue into w's local queue. */
static void inject_to_local(hy__worker *w, int max) {
  for (int i = 0; i < max; i++) {
    hy__task *more = inject_take(w->rt);
    if (!more)
      break;
    /* Never-run tasks from outside go to the old end: they run in their
     * order, after the local spawn trees (and are the first stolen). */
    q_lock(w);
    if (more->stack.base)
      q_append(w, more);
    else
      n_push_old(w, more);
    q_unlock(w);
  }
}

static hy__task *next_task(hy__worker *w) {
  hy__task *t = NULL;
  if (w->tick % INJECT_EVERY == 0 && (t = inject_take(w->rt)) != NULL)
    return t;
  t = pick_local(w);
  if (t)
    return t;
  /* Local queue empty: take one from the injection queue to run and move a
   * batch more into the local queue, where they take turns with the tasks
   * already here (and can be stolen). */
  t = inject_take(w->rt);
  if (t)
    inject_to_local(w, 32);
  return t;
}

/* An idle worker fires the due timers of the others, whose owners may be
 * busy or descheduled (Go's idle Ps run other Ps' timers too); the tasks
 * woken run here.  Timers fire only once due, under their heap's lock.
 * Not during shutdown: the drain phase judges each worker's activity by
 * its own timers and tasks. */
static int fire_others(hy__worker *w, int64_t now) {
  hy_runtime_t *rt = w->rt;
  int n = 0;
  if (w->loop_phase != HY__PH_RUNNING)
    return 0;
  for (int i = 0; i < rt->nworkers; i++) {
    hy__worker *v = &rt->workers[i];
    if (v != w && hy__timers_next(v) <= now)
      n += hy__timers_fire(v, now);
  }
  return n;
}

/* When an idle worker wakes up: at its own next timer, or TIMER_SLACK
 * after another's (whose owner normally fires it on time). */
static int64_t next_deadline(hy__worker *w) {
  hy_runtime_t *rt = w->rt;
  int64_t next = hy__timers_next(w);
  if (w->loop_phase != HY__PH_RUNNING)
    return next; /* see fire_others */
  for (int i = 0; i < rt->nworkers; i++) {
    hy__worker *v = &rt->workers[i];
    if (v == w)
      continue;
    int64_t d = hy__timers_next(v);
    if (d < HY_FOREVER - TIMER_SLACK && d + TIMER_SLACK < next)
      next = d + TIMER_SLACK;
  }
  return next;
}

static int has_work(hy__worker *w) {
  hy_runtime_t *rt = w->rt;
  if (w->lifo || qlen(w) || atomic_load(&rt->inject_len))
    return 1;
  for (int i = 0; i < rt->nworkers; i++)
    if (qlen(&rt->workers[i]))
      return 1;
  return 0;
}

/* ------------------------------------------------------------ searching */

/* A worker that ran out of work searches (its queues, the injection queue,
 * the others' queues) for up to SPIN_NS before it sleeps, pausing between
 * looks, as Go's spinning M does: a wake then costs the waker nothing (it
 * sees rt->nspinning and sends no port wake), and the searcher takes the
 * work a few hundred ns after it appears instead of a system call and a
 * thread wake-up later.  At most half the workers search at once (the
 * others sleep: no CPU burnt while idle), and only while the runtime runs
 * with two workers or more.
 *
 * No lost wake: a searcher that gives up decrements nspinning (seq_cst),
 * then goes through the sleep protocol, which publishes w->sleeping and
 * looks at every queue again after a fence.  A waker that saw nspinning > 0
 * had published its work before its fence, so either the searcher's last
 * look sees that work, or the waker reads nspinning after the decrement
 * (and wakes a sleeper). */
#define SPIN_NS HY_US(10)
#define SPIN_CLOCK_EVERY 4 /* looks between two readings of the clock */
#define SPIN_PAUSES_MAX 32 /* pauses between looks, at most */

/* Ends w's sleep: returns 1 if w stopped sleeping by itself (a timer, a
 * completion, a change of mind), 0 if a waker woke it to search, handing
 * it one count of nspinning (see hy__wake_idle). */
static int stop_sleeping(hy__worker *w) {
  int one = HY__SLEEPING;
  if (atomic_compare_exchange_strong(&w->sleeping, &one, HY__AWAKE)) {
    atomic_fetch_sub(&w->rt->nsleeping, 1);
    return 1;
  }
  if (one == HY__AWAKE)
    return 1; /* woken for a timer (wake_worker): no searching count */
  atomic_store(&w->sleeping, HY__AWAKE); /* was HY__WOKEN_SEARCHING */
  return 0;
}

/* Searches for work for up to SPIN_NS.  `counted`: w already holds one
 * count of nspinning (it was woken to search); otherwise it takes one if
 * fewer than half the workers search.  Returns a task (the count given
 * back), or NULL: nothing came, and w is to sleep. */
static hy__task *search(hy__worker *w, int phase, int counted) {
  hy_runtime_t *rt = w->rt;
  int spin = rt->nworkers >= 2 && phase == HY__PH_RUNNING;
  if (!counted) {
    if (!spin || 2 * atomic_load_explicit(&rt->nspinning, memory_order_relaxed) >=
                     rt->nworkers)
      return NULL;
    atomic_fetch_add(&rt->nspinning, 1);
  }
  hy__task *t = NULL;
  int64_t until = 0;
  int pauses = 1;
  for (int i = 0; spin; i++) {
    if (has_work(w)) {
      if ((t = next_task(w)) != NULL || (t = steal(w)) != NULL)
        break;
      /* Work seen but gone before we got to it (a busy worker's queue
       * that its owner empties at once): look less often, so as not to
       * take that worker's queue lock and cache lines from it all along. */
      if (pauses < SPIN_PAUSES_MAX)
        pauses *= 2;
    }
    if (atomic_load_explicit(&rt->phase, memory_order_relaxed) != phase)
      break;
    if (i % SPIN_CLOCK_EVERY == 0) {
      int64_t now = hy_now();
      if (!until)
        until = now + SPIN_NS;
      else if (now >= until)
        break;
    }
    for (int k = 0; k < pauses; k++)
      hy__cpu_relax();
  }
  int last = atomic_fetch_sub(&rt->nspinning, 1) == 1;
  atomic_thread_fence(memory_order_seq_cst);
  /* The last searcher found work: if more is waiting, wake another worker
   * to search for it (the makers of that work kept quiet because of us). */
  if (t && last && has_work(w))
    hy__wake_idle(rt);
  return t;
}

/* ---------------------------------------------------------- completions */

void hy__complete(hy__worker *w, hy__op *op) {
  hy__completion *c = op->data;
  HY__STAT_INC(w->st.completions);
  if (c)
    c->fn(c, op);
}

static int poll_port(hy__worker *w, int64_t timeout) {
  hy__op *ops[MAX_EVENTS];
  int n = hy__port_wait(w->port, ops, MAX_EVENTS, timeout);
  if (n <= 0)
    return 0;
  for (int i = 0; i < n; i++)
    hy__complete(w, ops[i]);
  note_activity(w);
  return n;
}

/* One round of the worker loop: run ready tasks (a bounded number, so that
 * timers and completions get their turn), then due timers and completions,
 * then steal, then - if nothing was found - block in the port for at most
 * max_block ns (negative: until the next timer).  Returns what it did. */
int hy__worker_run_once(hy__worker *w, int64_t max_block) {
  int done = 0;
  /* A phase change is announced by one port wake per worker, which the
   * look at the port below (or an earlier one) may consume: before
   * blocking, the phase is compared with the one the caller acted on
   * (w->loop_phase, set by the caller from its one reading of the phase),
   * so the wake is never lost. */
  int phase = w->loop_phase;
  for (int i = 0; i < POLL_EVERY; i++) {
    w->tick++;
    hy__task *t = next_task(w);
    if (!t)
      break;
    run_task(w, t);
    done++;
    /* Tasks reached by direct switches count too: timers and completions
     * wait for POLL_EVERY task runs at most, not POLL_EVERY chains. */
    i += w->direct;
  }
  int64_t now = hy_now();
  done += hy__timers_fire(w, now);
  /* While busy, look at the port at most every POLL_INTERVAL: on epoll a
   * look is a system call, and completions can wait that long. */
  if (!done || now - w->last_poll >= POLL_INTERVAL) {
    w->last_poll = now;
    done += poll_port(w, 0);
  }
  if (done)
    return done;
  if ((done = fire_others(w, now)) > 0)
    return done;
  hy__task *t = steal(w);
  if (t) {
    run_task(w, t);
    return 1;
  }
  if (max_block == 0)
    return 0;
  /* Before sleeping, search a little while: work made meanwhile is taken
   * without a wake, and its maker sends none (it sees us searching). */
  if ((t = search(w, phase, 0)) != NULL) {
    run_task(w, t);
    return 1;
  }

  /* Nothing to do: sleep in the port until the next timer, a completion or
   * a wake. */
  hy_runtime_t *rt = w->rt;
  atomic_store(&w->sleep_until, HY_FOREVER);
  atomic_store(&w->sleeping, HY__SLEEPING);
  atomic_fetch_add(&rt->nsleeping, 1);
  atomic_thread_fence(memory_order_seq_cst);
  if (has_work(w) || atomic_load(&rt->phase) != phase) {
    if (!stop_sleeping(w) && (t = search(w, phase, 1)) != NULL) {
      run_task(w, t);
      return 1;
    }
    return 0;
  }
  int64_t next = next_deadline(w);
  atomic_store(&w->sleep_until, next);
  int64_t timeout = -1;
  if (next != HY_FOREVER) {
    timeout = next - hy_now();
    if (timeout < 0)
      timeout = 0;
  }
  if (max_block > 0 && (timeout < 0 || timeout > max_block))
    timeout = max_block;
  done += poll_port(w, timeout);
  if (!stop_sleeping(w) && (t = search(w, phase, 1)) != NULL) {
    run_task(w, t);
    done++;
  }
  now = hy_now();
  done += hy__timers_fire(w, now);
  done += fire_others(w, now);
  return done;
}

void *hy__worker_main(void *arg) {
  hy__worker *w = arg;
  hy_runtime_t *rt = w->rt;
  hy__tls_set(rt->tls, w);
  /* Tasks share the worker's floating-point control state (ctx.h): each
   * starts with the default, whatever the thread that made the runtime
   * had set (a new thread inherits it on Linux). */
  hy__ctx_fp_default();
  hy__guard_thread_init(w);
  hy__fiber_worker_init(w);
  w->last_activity = hy_now();
  while (atomic_load(&rt->phase) != HY__PH_DONE) {
    int phase = atomic_load(&rt->phase);
    if (phase != HY__PH_RUNNING) {
      hy__shutdown_worker_step(w);
      continue;
    }
    w->loop_phase = HY__PH_RUNNING;
    hy__worker_run_once(w, -1);
  }
  hy__fiber_worker_fini(w);
  hy__guard_thread_fini(w);
  hy__tls_set(rt->tls, NULL);
  return NULL;
}

void hy__worker_stats_sum(hy_runtime_t *rt, hy__wstats *out) {
  int n = rt->nworkers ? rt->nworkers : 1;
  for (int i = 0; i < n; i++) {
    hy__wstats *s = &rt->workers[i].st;
#define SUM(f) out->f += atomic_load_explicit(&s->f, memory_order_relaxed)
    SUM(switches);
    SUM(steals);
    SUM(completions);
    SUM(parks);
    SUM(posts);
    SUM(timers_fired);
    SUM(spawned);
    SUM(cancelled);
#undef SUM
  }
}
