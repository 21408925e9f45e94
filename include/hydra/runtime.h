/* hydra/runtime.h - the runtime object, tasks, time, embedding.
 *
 * A runtime owns a pool of worker threads, each with a run queue and a
 * completion port (io_uring or epoll on Linux, IOCP on Windows).  Tasks are
 * stackful coroutines scheduled M:N over the workers: a task that awaits
 * something parks, and the worker runs another.  All state hangs off the
 * hy_runtime_t; several runtimes may live in one process.
 *
 *   hy_options_t o = HY_OPTIONS_INIT;
 *   o.workers = 4;
 *   hy_runtime_t *rt;
 *   int rc = hy_runtime_new(&o, &rt);          // rc < 0: hy_strerror(rc)
 *   hy_task_t t;
 *   hy_task_spawn(rt, fn, arg, NULL, &t);
 *   void *res;
 *   hy_task_join(rt, t, &res);                 // from a task or any thread
 *   hy_runtime_shutdown(rt, HY_MS(1000));
 *   hy_runtime_close(rt);
 *
 * Time is monotonic nanoseconds (hy_time_t).  Every call that can block has
 * an `_until` twin taking an absolute deadline; HY_FOREVER means none.
 * Cancellation is sticky: once a task is cancelled, every await it makes
 * (the current one and all later ones) returns HY_ECANCELED at once.
 *
 * Floating-point control state (the rounding mode and exception masks:
 * x86's MXCSR and x87 control word, AArch64's FPCR) belongs to the worker
 * thread, and the tasks running on it share it, as goroutines do: a switch
 * between tasks does not save it.  Workers start with the default (round
 * to nearest, exceptions masked), and so does every task.  A task that
 * changes it (fesetround, _controlfp, ...) must restore it before anything
 * that may switch it out - an await, hy_yield, a blocking call, a select,
 * a join - or the tasks after it on that worker run with its change, and
 * it resumes, maybe on another worker, without it.  A task that restores
 * it finds it after every switch as it left it.  In embedded mode tasks
 * share the host thread's.  A task that must keep a mode of its own
 * across awaits asks for it with hy_task_own_fp.
 */
#ifndef HYDRA_RUNTIME_H
#define HYDRA_RUNTIME_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hy_runtime hy_runtime_t;

/* --------------------------------------------------------------- time */

typedef int64_t hy_time_t;
#define HY_FOREVER INT64_MAX
#define HY_US(x) ((int64_t)(x) * 1000)
#define HY_MS(x) ((int64_t)(x) * 1000000)
#define HY_SEC(x) ((int64_t)(x) * 1000000000)

/* Monotonic clock, nanoseconds. */
hy_time_t hy_now(void);

/* now + ns, saturating at HY_FOREVER. */
hy_time_t hy_deadline_in(int64_t ns);

/* ------------------------------------------------------------ runtime */

enum hy_backend {
  HY_BACKEND_AUTO = 0, /* io_uring, else epoll (Linux); IOCP (Windows) */
  HY_BACKEND_URING,
  HY_BACKEND_EPOLL,
  HY_BACKEND_IOCP
};

typedef struct hy_options {
  size_t size;           /* sizeof(hy_options_t): HY_OPTIONS_INIT sets it */
  int workers;           /* -1: one per CPU (default); 0: embedded mode */
  int backend;           /* enum hy_backend; env HYDRA_BACKEND overrides */
  size_t stack_size;     /* default task stack; 0: 64 KiB */
  int64_t shutdown_grace;/* ns of silence that ends the drain phase; 0: 2 s */
  int blocking_threads;  /* size of the blocking-work pool; 0: 4 */
  int verbose;           /* print the resolved options (env HY_VERBOSE=1) */
} hy_options_t;

#define HY_OPTIONS_INIT {sizeof(hy_options_t), -1, HY_BACKEND_AUTO, 0, 0, 0, 0}

/* Creates a runtime and starts its workers.  Options may be NULL (defaults).
 * Environment: HYDRA_BACKEND=auto|uring|epoll, HYDRA_WORKERS=N.
 * Returns 0, HY_EINVAL, HY_ENOMEM, or HY_ENOSYS (backend not available). */
int hy_runtime_new(const hy_options_t *o, hy_runtime_t **out);

/* Blocks the calling thread until the runtime has shut down (someone called
 * hy_runtime_shutdown, or a signal did).  In embedded mode the calling thread
 * runs the tasks meanwhile.  Returns 0, or HY_EBUSY if called from a task. */
int hy_runtime_run(hy_runtime_t *rt);

/* Embedded mode: runs what is ready on the calling thread - ready tasks,
 * due timers, completions, posted functions - waiting at most timeout ns
 * (0: not at all) for something to become ready, and returns the number of
 * things it ran.  Returns HY_EBUSY from a task or while another thread is
 * inside run_once/run, HY_ESHUTDOWN after shutdown.
 * On io_uring the thread that runs the tasks submits their I/O, so the
 * kernel may interrupt that thread's own blocking calls that have a
 * timeout (a recv with SO_RCVTIMEO, epoll_wait: EINTR) while the runtime
 * lives and once when it closes; retry those on EINTR, or use the epoll
 * backend.  With workers, a host thread that makes, runs and closes a
 * runtime is never interrupted. */
int hy_runtime_run_once(hy_runtime_t *rt, int64_t timeout);

/* An fd (a HANDLE on Windows) that becomes readable (signalled) when the
 * runtime has work for run_once: a foreign loop polls it between calls. */
intptr_t hy_runtime_os_handle(hy_runtime_t *rt);

/* Runs fn(arg) soon on a runtime thread, outside any task (it must not
 * block).  Safe from any thread, including ones the runtime does not know.
 * Returns 0, HY_ENOMEM or HY_ESHUTDOWN. */
int hy_runtime_post(hy_runtime_t *rt, void (*fn)(void *), void *arg);

/* Starts the multi-phase shutdown (quiesce, drain with `grace` ns of
 * silence, cancel, finalize) and waits until it is complete, unless called
 * from a task of rt, which only starts it.  Idempotent; any thread.
 * grace < 0 uses the option's default.  Returns 0. */
int hy_runtime_shutdown(hy_runtime_t *rt, int64_t grace);

/* The phases of hy_runtime_shutdown, in order. */
enum hy_phase {
  HY_PHASE_RUNNING = 0,
  HY_PHASE_QUIESCE,  /* terminate arms fire; outside spawns are refused */
  HY_PHASE_DRAIN,    /* tasks finish; ends after `grace` with no activity */
  HY_PHASE_CANCEL,   /* remaining tasks are cancelled and run to their end */
  HY_PHASE_FINALIZE, /* workers meet a last time */
  HY_PHASE_DONE
};

/* "running", "quiesce", "drain", "cancel", "finalize", "done". */
const char *hy_phase_name(int phase);

/* Called by every worker (and the embedded host) as it enters each
 * shutdown phase from QUIESCE to FINALIZE, in order, on that thread, outside any task: it must not block.
 * worker is the worker's index.  Set it before shutting down. */
typedef void (*hy_phase_cb)(void *arg, int phase, int worker);
void hy_runtime_on_phase(hy_runtime_t *rt, hy_phase_cb cb, void *arg);

typedef struct hy_shutdown_summary {
  size_t size;                 /* sizeof(hy_shutdown_summary_t), by caller */
  int phase;                   /* the phase reached (HY_PHASE_DONE at the end) */
  uint64_t tasks_finished;     /* ended on their own during the shutdown */
  uint64_t tasks_cancelled;    /* ended after being cancelled */
  int64_t phase_ns[HY_PHASE_DONE]; /* time spent in each phase */
} hy_shutdown_summary_t;

/* Fills in what the shutdown did so far.  Returns 0 or HY_EINVAL. */
int hy_runtime_shutdown_summary(hy_runtime_t *rt, hy_shutdown_summary_t *s);

/* Frees the runtime.  Returns HY_EBUSY (and frees nothing) while tasks are
 * alive and the runtime has not been shut down; shuts down first otherwise. */
int hy_runtime_close(hy_runtime_t *rt);

/* "uring", "epoll" or "iocp": the completion-port backend in use. */
const char *hy_runtime_backend_name(hy_runtime_t *rt);

/* Number of workers (0 in embedded mode). */
int hy_runtime_workers(hy_runtime_t *rt);

typedef struct hy_runtime_stats {
  size_t size; /* sizeof(hy_runtime_stats_t), set by the caller */
  int version; /* HY_RUNTIME_STATS_VERSION, set by the callee */
  uint64_t tasks_spawned, tasks_alive, tasks_cancelled;
  uint64_t switches, steals, completions, wakeups, parks, posts;
  uint64_t timers_fired;
} hy_runtime_stats_t;
#define HY_RUNTIME_STATS_VERSION 1

/* Copies the counters (summed over workers).  Returns 0 or HY_EINVAL. */
int hy_runtime_stats(hy_runtime_t *rt, hy_runtime_stats_t *s);

/* Writes one line per live task (id, name, state, what it awaits and since
 * when) to f.  Safe from any thread; a snapshot, not a stop-the-world. */
void hy_runtime_dump(hy_runtime_t *rt, FILE *f);

/* -------------------------------------------------------------- tasks */

/* A generation-counted handle: a handle to a task that is gone gives
 * HY_ESTALE, never a crash.  {0} is no task. */
typedef struct hy_task {
  uint64_t id;
} hy_task_t;

typedef void *(*hy_task_fn)(void *arg);

typedef struct hy_task_opts {
  size_t size;       /* sizeof(hy_task_opts_t) */
  const char *name;  /* copied (up to 31 bytes); NULL: "task" */
  size_t stack_size; /* usable stack bytes, rounded up to a power of two
                        from 16 KiB (at most 256 MiB); 0: the runtime's
                        default (hy_options_t.stack_size), which also
                        serves a size it covers */
  int priority;      /* reserved; 0 */
} hy_task_opts_t;
#define HY_TASK_OPTS_INIT {sizeof(hy_task_opts_t), NULL, 0, 0}

/* Spawns fn(arg) as a task.  out may be NULL: the task is detached.
 * Returns 0, HY_ENOMEM, HY_EINVAL (a stack over 256 MiB), or HY_ESHUTDOWN
 * (after shutdown began, except from a task of rt, which may still spawn
 * clean-up work).  The task gets its stack when it first runs; if none can
 * be had then, it ends without running and its joiner gets HY_ENOMEM. */
int hy_task_spawn(hy_runtime_t *rt, hy_task_fn fn, void *arg,
                  const hy_task_opts_t *o, hy_task_t *out);

/* Waits for t to finish and stores what fn returned in *result (may be
 * NULL); the handle is stale afterwards.  From a task or any thread.
 * Returns 0, HY_ESTALE, HY_EINVAL (detached, or already being joined),
 * HY_EDEADLK (joining itself), HY_ETIMEDOUT, HY_ECANCELED (the joiner was
 * cancelled: t keeps running), or HY_ENOMEM (t never ran: no memory could
 * be had for its stack, which is taken when a task first runs; *result is
 * NULL and the handle is used up).  A cancelled task that ended by
 * returning still yields its result. */
int hy_task_join(hy_runtime_t *rt, hy_task_t t, void **result);
int hy_task_join_until(hy_runtime_t *rt, hy_task_t t, hy_time_t deadline,
                       void **result);

/* Lets t's resources go when it finishes.  Returns 0 or HY_ESTALE. */
int hy_task_detach(hy_runtime_t *rt, hy_task_t t);

/* Asks t to stop: its current await, and every later one, returns
 * HY_ECANCELED.  Never interrupts code between awaits.  Returns 0 or
 * HY_ESTALE. */
int hy_task_cancel(hy_runtime_t *rt, hy_task_t t);

/* The calling task's handle, or {0} outside a task. */
hy_task_t hy_task_self(hy_runtime_t *rt);

/* 1 if the calling task has been cancelled. */
int hy_task_cancelled(hy_runtime_t *rt);

/* Lets other tasks run.  Returns 0, or HY_ECANCELED if cancelled, or
 * HY_EINVAL outside a task. */
int hy_yield(hy_runtime_t *rt);

/* Gives the calling task a floating-point control state of its own (see
 * the top of this file): from now until it ends, whatever rounding mode
 * and exception masks it sets stay in force across its awaits, on any
 * worker, and the tasks that run in between see the default.  Each switch
 * of such a task saves and loads the state (a few ns on x86).  Returns 0,
 * or HY_EINVAL outside a task. */
int hy_task_own_fp(hy_runtime_t *rt);

/* Sleeps ns / until deadline.  Never wakes early.  From a foreign thread
 * it sleeps the thread.  Returns 0 or HY_ECANCELED. */
int hy_sleep(hy_runtime_t *rt, int64_t ns);
int hy_sleep_until(hy_runtime_t *rt, hy_time_t deadline);

/* Task-local values: a runtime has HY_TASK_LOCALS slots; a key is one of
 * them, with a destructor run on the value when the task ends. */
#define HY_TASK_LOCALS 16
int hy_task_key_new(hy_runtime_t *rt, void (*dtor)(void *), int *key);
int hy_task_local_set(hy_runtime_t *rt, int key, void *value);
void *hy_task_local_get(hy_runtime_t *rt, int key);

/* Runs fn(arg) on the blocking-work pool (getaddrinfo, file I/O) while the
 * calling task waits without holding its worker; stores fn's return value
 * in *result.  From a foreign thread, fn runs on the calling thread.
 * Returns 0, HY_ENOMEM, HY_ESHUTDOWN, or HY_ECANCELED (the task was
 * cancelled, before or during the call; fn runs all the same, to its end,
 * on the pool, and its result is dropped).  So fn(arg) runs exactly once
 * when the return is 0 or HY_ECANCELED, and never on any other return:
 * ownership of arg is never in doubt. */
int hy_blocking(hy_runtime_t *rt, void *(*fn)(void *), void *arg,
                void **result);

/* -------------------------------------------------------------- arms */

/* One alternative of hy_select (see hydra/chan.h): what to wait for, an
 * optional guard and the outcome.  Build arms with the hy_arm_* functions
 * of each module; the fields are read by the select machinery. */
struct hy_awaitable;
typedef struct hy_arm {
  const struct hy_awaitable *ops; /* NULL for delay/else/terminate arms */
  void *obj;                      /* the awaited object */
  void *buf;                      /* data to send / where to receive */
  intptr_t aux;                   /* object-specific */
  hy_time_t deadline;             /* delay arms */
  int kind;                       /* HY_ARM_* */
  int guard;                      /* 0: the arm is disabled (Ada's when) */
  int result;                     /* out: 0 or HY_E* for the fired arm */
} hy_arm_t;

enum hy_arm_kind {
  HY_ARM_OBJECT = 0, /* an awaitable object */
  HY_ARM_DELAY,      /* "or delay": fires at deadline */
  HY_ARM_ELSE,       /* "else": fires if no other arm is ready at once */
  HY_ARM_TERMINATE   /* "or terminate": fires when shutdown starts */
};

/* An arm that fires when task t finishes; *result (if not NULL) gets its
 * return value.  Its result is 0, or HY_ENOMEM if t never ran (as
 * hy_task_join says; *result is NULL then).  The arm does not use up the
 * handle: join it afterwards (it returns at once) or detach it.  The arm
 * fires HY_ESTALE if the handle is stale or detached when the arm is made,
 * or goes stale (joined or detached elsewhere, and the task gone) before
 * its end is seen; a select already waiting when t ends gets its result
 * either way. */
hy_arm_t hy_arm_task(hy_runtime_t *rt, hy_task_t t, void **result);

/* Ada's "or terminate": fires once the runtime has begun shutting down. */
hy_arm_t hy_arm_terminate(hy_runtime_t *rt);

#ifdef __cplusplus
}
#endif
#endif /* HYDRA_RUNTIME_H */
