/* runtime/internal.h - the runtime's own structures: runtime, workers,
 * tasks, timers.  Other layers use runtime/wait.h and runtime/port.h; only
 * runtime/ looks in here (and net/ for hy__io_*).
 *
 * Ownership and threads:
 *   - A worker's run queues (lifo, FIFO, new deque) are protected by w->qlock; the owner
 *     takes it for every push/pop, thieves take it to steal half.
 *   - A worker's timer heap is protected by w->tlock: a task that parked on
 *     worker A with a deadline may be woken on B and removes its timer from
 *     A's heap under A's lock.
 *   - A task's lifecycle fields (state, refs, joiners, cur_wait, detached)
 *     are protected by t->lock.
 *   - rt->lock protects the task keys;
 *     rt->inject_lock the injection queue; a slot's lock its generation.
 * Lock order (">": may be held while taking): rt->lock > object locks
 *   (channels, hubs) > t->lock > w->tlock > w->qlock > rt->inject_lock.
 *   A handle lookup holds a slot lock and only *tries* t->lock (retrying
 *   after dropping the slot lock), so slots fit anywhere.
 *
 * The park protocol (t->wstate):  RUNNING --park--> PARKED --wake--> RUNNING,
 * and RUNNING --wake--> NOTIFIED --park--> RUNNING (the park returns at once).
 * The transition to PARKED happens on the scheduler's stack after the task
 * has switched out, so a waker on another thread can never resume a task
 * whose registers are not saved yet.  A park for the task's quiet wait
 * (hy__park_quiet) makes that transition with a plain store, and its one
 * waker waits for PARKED instead of racing it (hy__task_wake_quiet).  Every wait receives exactly one wake
 * (from whoever claimed it), and hy__wait_park returns only after that wake,
 * so no wake is ever left over for a later wait.
 */
#ifndef HYDRA_RUNTIME_INTERNAL_H
#define HYDRA_RUNTIME_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#include "alloc/mem.h"
#include "hydra/alloc.h"
#include "hydra/error.h"
#include "hydra/runtime.h"
#include "runtime/barrier.h"
#include "runtime/port.h"
#include "runtime/sys.h"
#include "runtime/wait.h"

typedef struct hy__worker hy__worker;

/* For the few small functions of the hand-over path between two tasks
 * that the compiler would otherwise leave as calls. */
#if defined(__GNUC__)
#define HY__ALWAYS_INLINE __attribute__((always_inline))
#else
#define HY__ALWAYS_INLINE
#endif
typedef struct hy__task hy__task;

/* -------------------------------------------------------------- timers */

typedef struct hy__timer {
  int64_t deadline;
  int idx;             /* position in its heap; -1 when not in one, -2 in
                          its worker's spill list (timer.c) */
  hy__worker *owner;   /* whose heap, while idx >= 0 */
  hy__wait *wait;      /* claimed as HY__FIRED_TIMEOUT when due */
  struct hy__timer *snext, *sprev; /* the spill list, while idx == -2 */
} hy__timer;

typedef struct hy__heap {
  hy__timer **v;
  int n, cap;
} hy__heap;

int hy__heap_push(hy__heap *h, hy__timer *t);    /* 0 or HY_ENOMEM */
void hy__heap_remove(hy__heap *h, hy__timer *t); /* t->idx >= 0 */
hy__timer *hy__heap_min(const hy__heap *h);
void hy__heap_free(hy__heap *h);

/* --------------------------------------------------------------- tasks */

enum hy__wstate { HY__RUNNING = 0, HY__PARKED = 1, HY__NOTIFIED = 2 };

enum hy__tstate {
  HY__T_NEW = 0, /* spawned, never ran: has no stack yet */
  HY__T_LIVE,    /* ran at least once */
  HY__T_DONE     /* fn returned; result is set */
};

struct hy__task {
  /* Scheduling: touched on every switch. */
  hy__task *next;        /* run-queue link (toward newer in the new deque) */
  hy__task *prev;        /* new-deque link toward older (sched.c) */
  void *sp;              /* saved stack pointer while switched out */
  atomic_int wstate;     /* enum hy__wstate */
  atomic_int saving;     /* queued while its registers are still being
                            saved: thieves leave it (sched.c) */
  hy_runtime_t *rt;
  hy__worker *worker;    /* the worker running it (set before each switch in) */
  hy_task_fn fn;
  void *arg;
  void *result;
  int error;             /* HY_ENOMEM: it never ran, no stack could be had */
  hy_stack_t stack;      /* base NULL until the first run */
  hy_stack_cache_t *scache; /* where its stack comes from and goes back to:
                               a stack size of its own (task.c); NULL: the
                               runtime's default, through the worker's stash */

  /* Identity: the slot is assigned when the block is first constructed and
   * stays with it; the generation changes on every reuse. */
  uint32_t slot;
  uint32_t gen;
  char name[32];

  /* Lifecycle, under lock. */
  hy__lock_t lock;
  int state;             /* enum hy__tstate */
  int detached;
  int joined;            /* a join took the result */
  int joining;           /* a join is waiting */
  int refs;              /* the running task + the handle (until detach/join) */
  int pinned;            /* ended, its block kept until its stack is left */
  hy__waitq joiners;
  /* Selects waiting on the task (hy_arm_task): under the slot's lock, not
   * the task's, so that an arm can tell a stale handle without touching a
   * block that may be gone.  over: the task has ended (its result is set);
   * armed: a select has queued here (the end then takes the slot lock). */
  hy__waitq armq;
  atomic_int over;
  atomic_int armed;
  hy__wait *cur_wait;    /* the wait a cancel must claim (on a stack) */
  hy__wait qwait;        /* the quiet wait of channel operations and
                            select (hy__wait_init_quiet): lives as long as
                            the task, so a cancel claims it without a lock */
  atomic_int cancelled;

  /* For dumps, read from other threads: relaxed atomics.  await_since is
   * the worker's coarse clock when the task parked, never later than the
   * park (see hy__worker.clock). */
  _Atomic(const char *) await_what;
  _Atomic int64_t await_since;
  atomic_int started;    /* has run at least once */
  int fp_own;            /* keeps its own FP control state (hy_task_own_fp),
                            saved in fp while switched out */
  uint64_t fp;

  hy__timer timer;       /* the deadline of the current wait */
  void *locals[HY_TASK_LOCALS];

  void *tsan_fiber;      /* sanitizer fiber state */
  void *asan_fake;       /* ASan's fake-stack handle while switched out */
};

/* ------------------------------------------------------------- workers */

/* hy__worker.sleeping: awake; blocked (or about to block) in the port;
 * woken by hy__wake_idle, which handed it one count of rt->nspinning. */
enum hy__sleep { HY__AWAKE = 0, HY__SLEEPING = 1, HY__WOKEN_SEARCHING = 2 };

enum hy__after {
  HY__AFTER_NONE = 0,
  HY__AFTER_YIELD,
  HY__AFTER_SAVED, /* a yielder queued already: clear its saving mark */
  HY__AFTER_PARK,
  HY__AFTER_PARK_QUIET, /* parked for its quiet wait (hy__park_quiet) */
  HY__AFTER_EXIT
};

/* Per-worker counters: written by the owning worker only, read by anyone
 * (relaxed atomics with a plain load+store increment: no bus lock). */
typedef struct hy__wstats {
  _Atomic uint64_t switches, steals, completions, parks, posts, timers_fired,
      spawned, cancelled, ended;
} hy__wstats;
#define HY__STAT_ADD(field, n)                                                \
  atomic_store_explicit(                                                      \
      &(field), atomic_load_explicit(&(field), memory_order_relaxed) + (n),   \
      memory_order_relaxed)
#define HY__STAT_INC(field) HY__STAT_ADD(field, 1)

#define HY__STACK_STASH 16 /* free stacks a worker keeps (sched.c) */

struct hy__worker {
  hy_runtime_t *rt;
  int id;
  hy__port *port;
  void *sched_sp;         /* the scheduler's context while a task runs */
  hy__task *current;
  hy__task *pend_task;    /* the task that just left, and what it asked */
  int pend_after;         /* for (enum hy__after): see sched.c */
  int direct;             /* direct task-to-task switches in a row */
  int from_sched;         /* the switch in progress started in the scheduler */

  hy__lock_t qlock;       /* run queue */
  hy__task *lifo;         /* the most recently woken task: runs next */
  hy__task *qhead, *qtail; /* FIFO: tasks that already ran */
  hy__task *nold, *nnew;  /* deque of tasks that never ran (sched.c) */
  int fifo_len, new_len;  /* under qlock */
  atomic_int qlen;        /* fifo_len + new_len, for lock-free readers */
  int lifo_streak;
  int pick_fifo;          /* the next queue pick prefers the FIFO */
  int nostack_retries;    /* stackless tasks put back since the last start */

  hy__lock_t tlock;       /* timers */
  hy__heap heap;
  hy__timer *spill;       /* timers the heap had no room for (timer.c) */

  atomic_int sleeping;    /* enum hy__sleep: blocked (or about to block) in
                             the port, or woken to search (sched.c) */
  _Atomic int64_t sleep_until; /* while sleeping: when it wakes at the
                                  latest (HY_FOREVER while unknown) */
  uint64_t tick;
  int64_t clock;          /* coarse: the time when the scheduler last
                             switched into a task (run_task), so at most the
                             run time of DIRECT_MAX direct switches behind;
                             parks stamp dumps' since-when with it */
  uint64_t rng;           /* hy__wait_rand (select fairness) */
  int64_t last_poll;      /* when the port was last polled while busy */
  int64_t last_activity;  /* last completion or task run (drain phase) */
  int drain_arrived;
  int seen_phase;         /* last shutdown phase this worker announced */
  int loop_phase;         /* the phase the worker's loop acted on: run_once
                             does not block once the phase differs */
  hy__thread_t thread;
  void *altstack;
  void *tsan_fiber;       /* the scheduler's own fiber */
  const void *asan_bottom;/* the scheduler's stack, for ASan */
  size_t asan_size;
  void *asan_fake;
  hy__wstats st;
  hy_stack_t stash[HY__STACK_STASH]; /* free stacks of this worker (sched.c) */
  int nstash;
};

/* A completion's handler: hy__op.data points at one of these. */
typedef struct hy__completion {
  void (*fn)(struct hy__completion *self, hy__op *op);
} hy__completion;

/* ------------------------------------------------------------- runtime */

enum hy__phase {
  HY__PH_RUNNING = 0,
  HY__PH_QUIESCE,
  HY__PH_DRAIN,
  HY__PH_CANCEL,
  HY__PH_FINALIZE,
  HY__PH_DONE
};

typedef struct hy__slot {
  hy__lock_t lock;
  uint32_t gen;
  _Atomic(hy__task *) task; /* the live block: set by spawn (a release
                               store), cleared under lock */
} hy__slot;

#define HY__SLOTS_PER_CHUNK 4096
#define HY__SLOT_CHUNKS 4096 /* up to 16M tasks alive at once */

typedef struct hy__blocking hy__blocking; /* runtime/blocking.c */
struct hy__evstate;                        /* channels/event_internal.h */

/* An internal observer of the shutdown phases (the net layer stops
 * accepting in QUIESCE and closes connections in CANCEL).  Called like
 * hy_runtime_on_phase's callback, on every worker, under rt->mu. */
typedef struct hy__phase_hook {
  void (*fn)(void *arg, int phase, int worker);
  void *arg;
  struct hy__phase_hook *next, *prev;
} hy__phase_hook;

#define HY__XSTACK_MIN_LOG2 14 /* 16 KiB */
#define HY__XSTACK_CLASSES 15  /* up to 2^28: 256 MiB */

struct hy_runtime {
  hy_options_t opt;
  hy__tls_t tls;           /* this runtime's worker on the calling thread */
  int nworkers;            /* 0: embedded */
  hy__worker *workers;     /* nworkers, or 1 (the host) when embedded */
  int backend;
  atomic_int host_busy;    /* embedded: a thread is inside run_once */

  hy_cache_t *task_cache;
  hy_stack_cache_t *stacks;
  /* Stacks for tasks spawned with a size of their own, one cache per power
   * of two from 16 KiB (HY__XSTACK_MIN) to 256 MiB, made on first use. */
  _Atomic(hy_stack_cache_t *) xstacks[HY__XSTACK_CLASSES];

  /* Task table: chunks of slots, allocated on demand, freed at close. */
  hy__lock_t slot_lock;
  _Atomic(hy__slot *) slot_chunks[HY__SLOT_CHUNKS];
  uint32_t slots_used;
  uint32_t *free_slots;
  uint32_t nfree_slots, free_slots_cap;

  hy__lock_t lock;         /* task keys */
  hy__lock_t inject_lock;  /* the injection queue */
  hy__task *inject_head, *inject_tail;
  atomic_int inject_len;
  atomic_int nsleeping;
  atomic_int nspinning;    /* workers searching for work before they sleep,
                              and sleepers woken to search (sched.c) */
  atomic_int rr;           /* round-robin for posts and wakes */
  _Atomic uint64_t wakeups;/* sleeping workers woken */
  _Atomic uint64_t spawned_outside; /* spawns from non-worker threads */

  hy__mutex_t mu;          /* shutdown and run() waiters */
  hy__cond_t cv;
  atomic_int phase;        /* enum hy__phase */
  int park_fence;          /* a task parking for its quiet wait fences
                              before it looks at its cancel flag: no
                              process-wide barrier for cancels here
                              (hy__heavy_barrier; runtime/wait.c) */
  int64_t grace;
  hy__lock_t term_lock;
  hy__waitq terminate_q;   /* select terminate arms, under term_lock */
  int shutdown_started;    /* under mu */
  hy__barrier barrier;     /* all workers meet between phases */
  atomic_int drain_arrived;
  atomic_int cancel_started;
  int64_t phase_start[HY__PH_DONE + 1];
  hy_phase_cb on_phase;
  void *on_phase_arg;
  hy__phase_hook *hooks;   /* under mu */
  atomic_long alive_at_shutdown; /* tasks alive when the shutdown began */

  void (*task_key_dtor[HY_TASK_LOCALS])(void *);
  int task_keys;

  hy__blocking *blocking;
  _Atomic(struct hy__evstate *) ev; /* the event model, made on first use */
  struct hy__hubreg *hubs; /* runtime/hub.c: hubs by name, sys/shutdown */
  struct hy__sigrt *sig;   /* runtime/signals.c: signal receivers */
  atomic_int threads_started;
  int run_in_progress;
};

/* scheduler (runtime/sched.c) */
/* The calling thread's worker of rt, or NULL. */
static inline hy__worker *hy__worker_current(hy_runtime_t *rt) {
  return (hy__worker *)hy__tls_get(rt->tls);
}
void hy__task_wake(hy__task *t);       /* make a parked task runnable */
/* The same, for a caller that knows its own worker w of t->rt (NULL: the
 * caller is not one of its workers): no lookup. */
void hy__task_wake_on(hy__task *t, hy__worker *w);
/* The same, but t is queued on the worker it last ran on (where its data
 * is in cache) rather than the caller's, when the two differ. */
void hy__task_wake_home(hy__task *t, int quiet); /* quiet: t->qwait's claimer */
void hy__task_ready(hy_runtime_t *rt, hy__task *t, int lifo); /* enqueue */
void hy__park(hy__task *t);            /* returns once woken */
/* Parks t for its open quiet wait (t->qwait), which nobody but its claimer
 * wakes, through hy__task_wake_quiet (w: the caller's worker of t->rt, or
 * NULL): the switch-out takes no compare-and-swap (sched.c). */
void hy__park_quiet(hy__task *t);
void hy__task_wake_quiet(hy__task *t, hy__worker *w);
void hy__yield_now(hy__task *t);
void *hy__worker_main(void *arg);
int hy__worker_run_once(hy__worker *w, int64_t timeout);
void hy__wake_idle(hy_runtime_t *rt);
void hy__worker_stats_sum(hy_runtime_t *rt, hy__wstats *out);

/* timers (runtime/timer.c) */
void hy__timer_arm(hy__worker *w, hy__timer *tm, int64_t deadline, hy__wait *wait);
void hy__timer_disarm(hy__timer *tm);
int hy__timers_fire(hy__worker *w, int64_t now);   /* count fired */
int64_t hy__timers_next(hy__worker *w);            /* HY_FOREVER if none */

/* tasks (runtime/task.c) */
int hy__task_tables_init(hy_runtime_t *rt);
void hy__task_tables_free(hy_runtime_t *rt);
void hy__task_release_handles(hy_runtime_t *rt); /* at close */
void hy__stack_put(hy__worker *w, const hy_stack_t *s); /* a free stack */
/* w's earliest timer is now `deadline` (timer.c): wakes an idle worker
 * that would sleep past it (sched.c). */
void hy__timer_first(hy__worker *w, int64_t deadline);
void hy__task_end(hy__worker *w, hy__task *t);    /* joiners woken (task.c) */
/* Tasks spawned and not ended yet: never counts an end without its spawn
 * (see task.c), so 0 means that every task spawned so far has ended. */
long hy__alive(hy_runtime_t *rt);
void hy__task_finish(hy__worker *w, hy__task *t); /* off its stack, after end */
void hy__task_entry(void *arg);
void hy__cancel_all(hy_runtime_t *rt);
/* For the library's own tasks, whose loss must not go unnoticed.  A task
 * gets its stack when it first runs, so with no memory it ends unrun and
 * its joiner gets HY_ENOMEM.  hy__task_reap_unrun joins h if it ended so
 * and returns 1; 0 if it is alive or ran (h stays joinable); HY_ESTALE if
 * h names no task.  hy__task_spawn_quiesce is hy_task_spawn that a worker
 * may also call outside a task while the runtime quiesces (a phase hook
 * replacing such a task: the drain phase then waits for it). */
int hy__task_reap_unrun(hy_runtime_t *rt, hy_task_t h);
int hy__task_spawn_quiesce(hy_runtime_t *rt, hy_task_fn fn, void *arg,
                           const hy_task_opts_t *o, hy_task_t *out);
/* Calls fn for every task that has not ended, with t->lock held (the task
 * table walked slot by slot: a task spawned meanwhile may be missed). */
void hy__task_each(hy_runtime_t *rt, void (*fn)(hy__task *t, void *arg),
                   void *arg);

/* completion dispatch (runtime/sched.c) */
void hy__complete(hy__worker *w, hy__op *op);

/* I/O on the current worker's port: starts op (with op->data free for the
 * runtime) and awaits its completion until deadline.  On time-out or
 * cancel the op is cancelled and its completion awaited before returning,
 * so the op's memory is the caller's again in every case.  Returns op->res
 * (>= 0 or HY_E*), HY_ETIMEDOUT or HY_ECANCELED. */
int hy__io_await(hy_runtime_t *rt, hy__op *op, int64_t deadline);
hy__port *hy__current_port(hy_runtime_t *rt);

/* shutdown (runtime/shutdown.c) */
int hy__phase(hy_runtime_t *rt);
void hy__shutdown_worker_step(hy__worker *w);
void hy__phase_hook_add(hy_runtime_t *rt, hy__phase_hook *h);
void hy__phase_hook_remove(hy_runtime_t *rt, hy__phase_hook *h);

/* event model hooks (channels/broker_sys.c): publish runtime facts on the
 * system broker's sys/shutdown and sys/task channels; never block, cost one
 * load when nobody subscribed.  hy__event_free at close. */
void hy__event_publish_phase(hy_runtime_t *rt, int phase);
void hy__event_publish_task_exit(hy_runtime_t *rt, uint64_t id,
                                 const char *name, int cancelled,
                                 int never_ran); /* no stack: HY_ENOMEM */
void hy__event_publish_signal(hy_runtime_t *rt, int signo); /* sys/signal */
void hy__event_free(hy_runtime_t *rt);

/* blocking pool (runtime/blocking.c) */
void hy__blocking_stop(hy_runtime_t *rt);

/* stack-overflow reports (runtime/<os>/guard.c): per worker thread */
void hy__guard_thread_init(hy__worker *w);
void hy__guard_thread_fini(hy__worker *w);

/* sanitizers (runtime/fiber.c) */
void hy__fiber_task_new(hy__task *t);
void hy__fiber_task_free(hy__task *t);
void hy__fiber_worker_init(hy__worker *w);
void hy__fiber_worker_fini(hy__worker *w);

#endif
