/* shutdown.c - the barrier-synchronized multi-phase shutdown.
 *
 *   QUIESCE   hy_runtime_shutdown sets the phase, wakes every select
 *             "terminate" arm, sets the "sys/shutdown" hub (every consumer
 *             is released) and wakes every worker; new spawns from outside
 *             tasks are refused.  All workers meet at the barrier.
 *   DRAIN     tasks go on finishing their work.  Each worker measures the
 *             silence since its last activity (a completion dequeued, a
 *             task woken - by anything, a timer included - or spawned);
 *             once it has seen `grace` of silence,
 *             or no task is left, it arrives.  It keeps serving work after
 *             arriving, so a task woken on it is not stranded.  The last
 *             arrival moves everyone to CANCEL.
 *   CANCEL    every live task is cancelled (its awaits return HY_ECANCELED,
 *             its pending I/O is cancelled and the completion received
 *             before hy__io_await returns).  Workers run until no task is
 *             left, then meet at the barrier.
 *   FINALIZE  workers meet once more and leave; hy_runtime_run returns and
 *             hy_runtime_close frees the rest.
 *
 * A task that wakes periodically (a heartbeat) keeps its worker active, so
 * it must watch the terminate arm (or the sys/shutdown hub) and stop, as
 * Ada's "or terminate" intends; a task that just yields does not count.
 *
 * The barrier is Hydra's own (runtime/barrier.c).  A second shutdown call,
 * or one from inside a task, only joins the one in progress.
 */
#include <string.h>

#include "runtime/fiber.h"
#include "runtime/hubs.h"
#include "runtime/internal.h"

static int nparties(hy_runtime_t *rt) { return rt->nworkers ? rt->nworkers : 1; }

static void wake_all_workers(hy_runtime_t *rt) {
  for (int i = 0; i < nparties(rt); i++)
    hy__port_wake(rt->workers[i].port);
}

static void set_phase(hy_runtime_t *rt, int phase) {
  rt->phase_start[phase] = hy_now();
  atomic_store(&rt->phase, phase);
  hy__event_publish_phase(rt, phase);
  wake_all_workers(rt);
}

static void to_drain(void *arg) { set_phase(arg, HY__PH_DRAIN); }
static void to_finalize(void *arg) { set_phase(arg, HY__PH_FINALIZE); }

static void to_done(void *arg) {
  hy_runtime_t *rt = arg;
  hy__mutex_lock(&rt->mu);
  set_phase(rt, HY__PH_DONE);
  hy__cond_broadcast(&rt->cv);
  hy__mutex_unlock(&rt->mu);
}

int hy__phase(hy_runtime_t *rt) { return atomic_load(&rt->phase); }

const char *hy_phase_name(int phase) {
  static const char *names[] = {"running", "quiesce", "drain",
                                "cancel",  "finalize", "done"};
  return phase >= 0 && phase <= HY__PH_DONE ? names[phase] : "unknown";
}

void hy_runtime_on_phase(hy_runtime_t *rt, hy_phase_cb cb, void *arg) {
  if (!rt)
    return;
  hy__mutex_lock(&rt->mu);
  rt->on_phase = cb;
  rt->on_phase_arg = arg;
  hy__mutex_unlock(&rt->mu);
}

int hy_runtime_shutdown_summary(hy_runtime_t *rt, hy_shutdown_summary_t *s) {
  if (!rt || !s || s->size < sizeof *s)
    return HY_EINVAL;
  memset((char *)s + sizeof s->size, 0, sizeof *s - sizeof s->size);
  hy__mutex_lock(&rt->mu);
  int phase = atomic_load(&rt->phase);
  s->phase = phase;
  for (int p = HY__PH_QUIESCE; p < HY__PH_DONE && p <= phase; p++) {
    int64_t end = p < phase ? rt->phase_start[p + 1] : hy_now();
    s->phase_ns[p] = end - rt->phase_start[p];
  }
  hy__mutex_unlock(&rt->mu);
  hy_runtime_stats_t st = {.size = sizeof st};
  hy_runtime_stats(rt, &st);
  long at = atomic_load(&rt->alive_at_shutdown);
  uint64_t ended = (uint64_t)(at - (long)st.tasks_alive);
  s->tasks_cancelled = st.tasks_cancelled;
  s->tasks_finished = ended > st.tasks_cancelled ? ended - st.tasks_cancelled : 0;
  return 0;
}

static void announce(hy__worker *w, int phase) {
  if (w->seen_phase == phase)
    return;
  w->seen_phase = phase;
  hy_runtime_t *rt = w->rt;
  if (rt->on_phase)
    rt->on_phase(rt->on_phase_arg, phase, w->id);
  hy__mutex_lock(&rt->mu);
  for (hy__phase_hook *h = rt->hooks; h; h = h->next)
    h->fn(h->arg, phase, w->id);
  hy__mutex_unlock(&rt->mu);
}

void hy__phase_hook_add(hy_runtime_t *rt, hy__phase_hook *h) {
  hy__mutex_lock(&rt->mu);
  h->prev = NULL;
  h->next = rt->hooks;
  if (rt->hooks)
    rt->hooks->prev = h;
  rt->hooks = h;
  hy__mutex_unlock(&rt->mu);
}

void hy__phase_hook_remove(hy_runtime_t *rt, hy__phase_hook *h) {
  hy__mutex_lock(&rt->mu);
  if (h->prev)
    h->prev->next = h->next;
  else if (rt->hooks == h)
    rt->hooks = h->next;
  if (h->next)
    h->next->prev = h->prev;
  h->next = h->prev = NULL;
  hy__mutex_unlock(&rt->mu);
}

void hy__shutdown_worker_step(hy__worker *w) {
  hy_runtime_t *rt = w->rt;
  int phase = atomic_load(&rt->phase); /* read once: see hy__worker_run_once */
  w->loop_phase = phase;
  announce(w, phase);
  switch (phase) {
  case HY__PH_QUIESCE:
    hy__barrier_wait_then(&rt->barrier, to_drain, rt);
    w->last_activity = hy_now();
    w->drain_arrived = 0;
    return;
  case HY__PH_DRAIN: {
    int64_t now = hy_now();
    if (!w->drain_arrived && (hy__alive(rt) == 0 ||
                              now - w->last_activity >= rt->grace)) {
      w->drain_arrived = 1;
      if (atomic_fetch_add(&rt->drain_arrived, 1) + 1 == nparties(rt)) {
        set_phase(rt, HY__PH_CANCEL);
        return;
      }
    }
    int64_t block = -1;
    if (!w->drain_arrived) {
      block = w->last_activity + rt->grace - now;
      if (block < HY_MS(1))
        block = HY_MS(1);
    }
    hy__worker_run_once(w, block);
    return;
  }
  case HY__PH_CANCEL:
    if (!atomic_exchange(&rt->cancel_started, 1))
      hy__cancel_all(rt);
    if (hy__alive(rt) > 0) {
      hy__worker_run_once(w, HY_MS(10));
      return;
    }
    hy__worker_run_once(w, 0); /* posted functions still queued */
    hy__barrier_wait_then(&rt->barrier, to_finalize, rt);
    return;
  case HY__PH_FINALIZE:
    hy__worker_run_once(w, 0);
    hy__barrier_wait_then(&rt->barrier, to_done, rt);
    return;
  default:
    return;
  }
}

int hy_runtime_shutdown(hy_runtime_t *rt, int64_t grace) {
  if (!rt)
    return HY_EINVAL;
  hy__mutex_lock(&rt->mu);
  if (!rt->shutdown_started) {
    rt->shutdown_started = 1;
    rt->grace = grace >= 0 ? grace : rt->opt.shutdown_grace;
    rt->phase_start[HY__PH_RUNNING] = hy_now();
    atomic_store(&rt->alive_at_shutdown, hy__alive(rt));
    /* Set before anyone can see QUIESCE, so that no worker reaches the
     * barrier with a consumer of sys/shutdown not released yet. */
    hy__hubs_shutdown(rt);
    set_phase(rt, HY__PH_QUIESCE);
  }
  hy__mutex_unlock(&rt->mu);

  hy__lock(&rt->term_lock);
  hy__waitq_wake_all(&rt->terminate_q, 0);
  hy__unlock(&rt->term_lock);

  /* From inside the runtime (a task, or a posted function on a worker):
   * the workers carry the shutdown on; returning lets this caller finish. */
  if (hy__worker_current(rt))
    return 0;

  if (rt->nworkers == 0) {
    /* Embedded: the calling thread is the only worker.  If another thread
     * is inside run/run_once, it drives the phases; wait for it. */
    int zero = 0;
    if (atomic_compare_exchange_strong(&rt->host_busy, &zero, 1)) {
      hy__worker *w = &rt->workers[0];
      hy__tls_set(rt->tls, w);
      hy__fiber_worker_init(w);
      while (atomic_load(&rt->phase) != HY__PH_DONE)
        hy__shutdown_worker_step(w);
      hy__tls_set(rt->tls, NULL);
      atomic_store(&rt->host_busy, 0);
      return 0;
    }
  }
  hy__mutex_lock(&rt->mu);
  while (atomic_load(&rt->phase) != HY__PH_DONE)
    hy__cond_wait(&rt->cv, &rt->mu, HY_FOREVER);
  hy__mutex_unlock(&rt->mu);
  return 0;
}

/* ------------------------------------------------ the terminate arm */

HY__WAITQ_ARM_OPS(term, hy_runtime_t, term_lock, terminate_q)

static int term_try(void *obj, hy_arm_t *arm, int *result) {
  (void)arm;
  *result = 0;
  return atomic_load(&((hy_runtime_t *)obj)->phase) != HY__PH_RUNNING;
}

static const struct hy_awaitable term_awaitable = {
    "terminate", term_lock, term_try, term_enqueue, term_dequeue};

hy_arm_t hy_arm_terminate(hy_runtime_t *rt) {
  return hy__arm_make(&term_awaitable, HY_ARM_TERMINATE, rt, NULL, 1);
}

_Static_assert((int)HY__PH_DONE == (int)HY_PHASE_DONE &&
                   (int)HY__PH_CANCEL == (int)HY_PHASE_CANCEL,
               "internal and public phase numbers agree");
