/* io.c - awaiting one completion-port operation from a task.
 *
 * The op is started on the port of the worker the task runs on; its
 * completion is dispatched there (hy__complete) to io_done, which claims
 * the task's wait.  If the deadline or a cancel claims the wait first, the
 * task cancels the op and then waits - without deadline and without being
 * cancellable - for the op's one completion, because until it arrives the
 * port may still write into the op and its buffer.  An op that completed
 * anyway (the cancel came too late) reports what it did: data that was
 * received is never thrown away.
 */
#include "runtime/internal.h"

typedef struct io_ctx {
  hy__completion c; /* first: op->data points here */
  hy__lock_t lock;
  hy__wait *w;      /* the wait to claim on completion */
  int done;
} io_ctx;

static void io_done(hy__completion *c, hy__op *op) {
  io_ctx *x = (io_ctx *)c;
  (void)op;
  hy__lock(&x->lock);
  x->done = 1;
  hy__wait *w = x->w;
  if (w && hy__wait_claim(w, 0))
    hy__wait_wake(w);
  hy__unlock(&x->lock);
}

/* A wait that neither a cancel nor a deadline can end. */
static void wait_init_plain(hy__wait *w, hy_runtime_t *rt, hy__task *t) {
  atomic_init(&w->state, HY__WAITING);
  w->result = 0;
  w->rt = rt;
  w->task = t;
}

int hy__io_await(hy_runtime_t *rt, hy__op *op, int64_t deadline) {
  hy__worker *wk = hy__worker_current(rt);
  if (!wk || !wk->current)
    return HY_EINVAL;
  hy__task *t = wk->current;
  io_ctx x;
  x.c.fn = io_done;
  atomic_init(&x.lock.v, 0);
  x.done = 0;
  hy__wait w;
  int rc = hy__wait_init(&w, rt);
  if (rc < 0)
    return rc;
  x.w = &w;
  op->data = &x.c;
  op->pstate = 0;
  hy__port *port = wk->port;
  rc = hy__port_start(port, op);
  if (rc < 0) {
    if (!hy__wait_claim(&w, 0))
      hy__wait_park(&w, HY_FOREVER); /* a cancel's wake is owed */
    hy__wait_fini(&w);
    return rc;
  }
  atomic_store_explicit(&t->await_what, "io", memory_order_relaxed);
  int st = hy__wait_park(&w, deadline);
  hy__wait_fini(&w);
  if (st >= 0)
    return (int)op->res;

  /* Time-out or cancel won: make the port give the op back. */
  hy__wait w2;
  wait_init_plain(&w2, rt, t);
  hy__lock(&x.lock);
  int done = x.done;
  x.w = done ? NULL : &w2;
  hy__unlock(&x.lock);
  if (!done) {
    hy__port_cancel(port, op);
    atomic_store_explicit(&t->await_what, "io-cancel", memory_order_relaxed);
    hy__wait_park(&w2, HY_FOREVER);
  }
  if (op->res >= 0)
    return (int)op->res;
  if (op->res != HY_ECANCELED)
    return (int)op->res;
  return st == HY__FIRED_TIMEOUT ? HY_ETIMEDOUT : HY_ECANCELED;
}
