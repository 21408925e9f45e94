/* blocking.c - the blocking-work pool: a few helper threads that run
 * functions which would block a worker (getaddrinfo, file I/O) while the
 * calling task is parked.
 *
 * Jobs queue FIFO behind a mutex; threads start on demand up to the
 * configured count and stay until the runtime closes.  A job is shared by
 * the task and the helper thread (two references); the one that lets go
 * last frees it.  A cancelled task leaves at once: the helper finishes the
 * function and drops the result, and never touches the task's wait after
 * the task said it left (job->w = NULL under job->lock).  A task cancelled
 * before the call still queues the job (with one reference, the helper's)
 * and returns HY_ECANCELED at once, so that HY_ECANCELED always means the
 * function runs: whatever it owns (its argument) it frees itself, and the
 * caller never has to guess whether it was queued.
 */
#include "runtime/internal.h"

typedef struct job {
  struct job *next;
  void *(*fn)(void *);
  void *arg;
  void *result;
  hy__lock_t lock;
  hy__wait *w;
  atomic_int refs;
} job_t;

struct hy__blocking {
  hy__mutex_t mu;
  hy__cond_t cv;
  job_t *head, *tail;
  int nthreads, idle, max, stop;
  hy__thread_t threads[64];
};

static void job_unref(job_t *j) {
  if (atomic_fetch_sub(&j->refs, 1) == 1)
    hy__mem_free(j);
}

static void *pool_main(void *arg) {
  hy__blocking *b = arg;
  hy__mutex_lock(&b->mu);
  for (;;) {
    while (!b->head && !b->stop) {
      b->idle++;
      hy__cond_wait(&b->cv, &b->mu, HY_FOREVER);
      b->idle--;
    }
    if (!b->head && b->stop)
      break;
    job_t *j = b->head;
    b->head = j->next;
    if (!b->head)
      b->tail = NULL;
    hy__mutex_unlock(&b->mu);
    j->result = j->fn(j->arg);
    hy__lock(&j->lock);
    if (j->w && hy__wait_claim(j->w, 0))
      hy__wait_wake(j->w);
    hy__unlock(&j->lock);
    job_unref(j);
    hy__mutex_lock(&b->mu);
  }
  hy__mutex_unlock(&b->mu);
  return NULL;
}

static hy__blocking *pool(hy_runtime_t *rt) {
  hy__mutex_lock(&rt->mu);
  if (!rt->blocking) {
    hy__blocking *b = hy__mem_calloc(1, sizeof *b);
    if (b) {
      hy__mutex_init(&b->mu);
      hy__cond_init(&b->cv);
      b->max = rt->opt.blocking_threads > 0 ? rt->opt.blocking_threads : 4;
      if (b->max > 64)
        b->max = 64;
      rt->blocking = b;
    }
  }
  hy__mutex_unlock(&rt->mu);
  return rt->blocking;
}

int hy_blocking(hy_runtime_t *rt, void *(*fn)(void *), void *arg,
                void **result) {
  if (!rt || !fn)
    return HY_EINVAL;
  if (!hy__task_current(rt)) {
    void *r = fn(arg);
    if (result)
      *result = r;
    return 0;
  }
  if (atomic_load(&rt->phase) >= HY__PH_FINALIZE)
    return HY_ESHUTDOWN;
  hy__blocking *b = pool(rt);
  job_t *j = b ? hy__mem_calloc(1, sizeof *j) : NULL;
  if (!j)
    return HY_ENOMEM;
  hy__wait w;
  int rc = hy__wait_init(&w, rt);
  if (rc < 0 && rc != HY_ECANCELED) {
    hy__mem_free(j);
    return rc;
  }
  /* Cancelled already: fn is queued all the same and nobody waits for it,
   * so that HY_ECANCELED always means "fn runs, its result is dropped". */
  int cancelled = rc == HY_ECANCELED;
  j->fn = fn;
  j->arg = arg;
  j->w = cancelled ? NULL : &w;
  atomic_init(&j->refs, cancelled ? 1 : 2);

  hy__mutex_lock(&b->mu);
  if (b->stop) {
    hy__mutex_unlock(&b->mu);
    if (!cancelled) {
      hy__wait_claim(&w, 0);
      hy__wait_fini(&w);
    }
    hy__mem_free(j);
    return HY_ESHUTDOWN;
  }
  if (b->tail)
    b->tail->next = j;
  else
    b->head = j;
  b->tail = j;
  int start = b->idle == 0 && b->nthreads < b->max;
  if (start && hy__thread_start(&b->threads[b->nthreads], pool_main, b,
                                0, "hydra-blocking") == 0)
    b->nthreads++;
  if (b->nthreads == 0) {
    /* No thread to run it (the first one failed to start): j is the only
     * job queued, as every earlier one met the same fate.  Take it back. */
    b->head = b->tail = NULL;
    hy__mutex_unlock(&b->mu);
    if (!cancelled) {
      hy__wait_claim(&w, 0);
      hy__wait_fini(&w);
    }
    hy__mem_free(j);
    return HY_ENOMEM;
  }
  hy__cond_signal(&b->cv);
  hy__mutex_unlock(&b->mu);
  if (cancelled)
    return HY_ECANCELED;

  hy__wait_what(&w, "blocking");
  int st = hy__wait_park(&w, HY_FOREVER);
  hy__lock(&j->lock);
  j->w = NULL;
  hy__unlock(&j->lock);
  hy__wait_fini(&w);
  if (st >= 0 && result)
    *result = j->result;
  job_unref(j);
  return st >= 0 ? 0 : HY_ECANCELED;
}

void hy__blocking_stop(hy_runtime_t *rt) {
  hy__blocking *b = rt->blocking;
  if (!b)
    return;
  hy__mutex_lock(&b->mu);
  b->stop = 1;
  hy__cond_broadcast(&b->cv);
  hy__mutex_unlock(&b->mu);
  for (int i = 0; i < b->nthreads; i++)
    hy__thread_join(b->threads[i]);
  hy__cond_destroy(&b->cv);
  hy__mutex_destroy(&b->mu);
  hy__mem_free(b);
  rt->blocking = NULL;
}
