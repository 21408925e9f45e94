/* core.c - the socket object under every TCP/UDP handle: references,
 * association with the workers' ports, awaiting operations, close with
 * cancellation (the design is in net/internal.h). */
#include <string.h>

#include "net/internal.h"

int hy__in_worker(hy_runtime_t *rt) { return hy__worker_current(rt) != NULL; }

void hy__sock_init(hy__sock *s, hy_runtime_t *rt, intptr_t fd, int kind) {
  memset(s, 0, sizeof *s);
  s->rt = rt;
  s->fd = fd;
  s->kind = kind;
  s->refs = 1;
  s->fpkts = &s->fpk0;
  s->nfpkts = 1;
}

void hy__sock_error(hy__sock *s, const char *op, int code, int os,
                    const hy_addr_t *addr) {
  hy__lock(&s->lock);
  s->err.op = op;
  s->err.code = code;
  s->err.os_code = os;
  if (addr)
    s->err.addr = *addr;
  else
    memset(&s->err.addr, 0, sizeof s->err.addr);
  hy__unlock(&s->lock);
}

int hy_net_last_error(const void *obj, int kind, hy_net_error_t *out) {
  if (!obj || !out || kind < HY_NET_LISTENER || kind > HY_NET_UDP)
    return HY_EINVAL;
  hy__sock *s = (hy__sock *)obj;
  hy__lock(&s->lock);
  *out = s->err;
  hy__unlock(&s->lock);
  return out->op ? 0 : HY_ENOENT;
}

int hy_net_error_format(const hy_net_error_t *e, char *buf, size_t cap) {
  if (!e || !buf || cap == 0)
    return HY_EINVAL;
  char a[HY_ADDRSTRLEN];
  if (hy_addr_format(&e->addr, a, sizeof a) < 0)
    a[0] = 0;
  int n;
  if (e->os_code)
    n = snprintf(buf, cap, "%s%s%s: %s (%s, os %d)", e->op ? e->op : "none",
                 a[0] ? " " : "", a, hy_err_name(e->code),
                 hy_strerror(e->code), e->os_code);
  else
    n = snprintf(buf, cap, "%s%s%s: %s (%s)", e->op ? e->op : "none",
                 a[0] ? " " : "", a, hy_err_name(e->code),
                 hy_strerror(e->code));
  return n < 0 || (size_t)n >= cap ? HY_ENOBUFS : n;
}

/* ------------------------------------------------------- association */

static int assoc_has(hy__sock *s, int id) {
  if (id < 64)
    return (s->assoc >> id) & 1;
  return s->assoc_more && ((s->assoc_more[id / 64 - 1] >> (id % 64)) & 1);
}

/* pre: s->lock; on the thread owning worker wk's port. */
static int associate(hy__sock *s, hy__worker *wk) {
  int id = wk->id;
  if (assoc_has(s, id))
    return 0;
  if (id >= 64 && !s->assoc_more) {
    int n = s->rt->nworkers / 64 + 1;
    s->assoc_more = hy__mem_calloc((size_t)n, sizeof(uint64_t));
    if (!s->assoc_more)
      return HY_ENOMEM;
  }
  if (s->nfpkts == s->nassoc) {
    /* The packet that will ask this port to forget the fd, made now: an
     * error here is the operation's, while the end cannot fail. */
    hy__fpkt *f = hy__mem_calloc(1, sizeof *f);
    if (!f)
      return HY_ENOMEM;
    f->next = s->fpkts;
    s->fpkts = f;
    s->nfpkts++;
  }
  int rc = hy__port_associate(wk->port, s->fd);
  if (rc < 0)
    return rc;
  s->nassoc++;
  if (id < 64)
    s->assoc |= 1ull << id;
  else
    s->assoc_more[id / 64 - 1] |= 1ull << (id % 64);
  return 0;
}

/* ------------------------------------------------------------- the end */

static void finish(hy__sock *s) {
  if (s->reset_on_close)
    hy__fd_close_reset(s->fd);
  else
    hy__fd_close(s->fd);
  while (s->fpkts) {
    hy__fpkt *f = s->fpkts;
    s->fpkts = f->next;
    if (f != &s->fpk0)
      hy__mem_free(f);
  }
  hy__mem_free(s->assoc_more);
  hy__mem_free(s);
}

static void forget_done(hy__completion *c, hy__op *op) {
  (void)op;
  hy__fpkt *f = (hy__fpkt *)((char *)c - offsetof(hy__fpkt, c));
  hy__sock *s = f->s;
  hy__port_forget(f->port, s->fd);
  if (f != &s->fpk0)
    hy__mem_free(f);
  hy__lock(&s->lock);
  int last = --s->forgets == 0;
  hy__unlock(&s->lock);
  if (last)
    finish(s);
}

/* The last reference is gone: every port that knows the fd forgets it on
 * its own thread (with the packets made when it was associated); the last
 * forget closes the fd. */
static void last_ref(hy__sock *s) {
  hy_runtime_t *rt = s->rt;
  hy__worker *me = hy__worker_current(rt);
  int nw = rt->nworkers ? rt->nworkers : 1;
  s->forgets = 1; /* ours, dropped below */
  for (int i = 0; i < nw; i++) {
    if (!assoc_has(s, i))
      continue;
    hy__worker *wk = &rt->workers[i];
    if (wk == me) {
      hy__port_forget(wk->port, s->fd);
      continue;
    }
    hy__fpkt *f = s->fpkts; /* one per association: never NULL here */
    s->fpkts = f->next;
    memset(f, 0, sizeof *f);
    f->op.kind = HY__OP_POST;
    f->op.data = &f->c;
    f->c.fn = forget_done;
    f->s = s;
    f->port = wk->port;
    hy__lock(&s->lock);
    s->forgets++;
    hy__unlock(&s->lock);
    if (hy__port_post(wk->port, &f->op) == 0)
      continue;
    hy__lock(&s->lock);
    s->forgets--;
    hy__unlock(&s->lock);
    f->next = s->fpkts; /* freed by finish */
    s->fpkts = f;
    /* The port would not take it (it is closing): forgetting from here is
     * the lesser evil (the fd is still open, so it cannot name another
     * socket yet). */
    hy__port_forget(wk->port, s->fd);
  }
  hy__lock(&s->lock);
  int last = --s->forgets == 0;
  hy__unlock(&s->lock);
  if (last)
    finish(s);
}

int hy__sock_ref(hy__sock *s) {
  hy__lock(&s->lock);
  if (s->closed) {
    hy__unlock(&s->lock);
    return HY_ECLOSED;
  }
  s->refs++;
  hy__unlock(&s->lock);
  return 0;
}

void hy__sock_unref(hy__sock *s) {
  hy__lock(&s->lock);
  int last = --s->refs == 0;
  hy__unlock(&s->lock);
  if (last)
    last_ref(s);
}

int hy__sock_close(hy__sock *s, int reset) {
  if (!s)
    return HY_EINVAL;
  hy__lock(&s->lock);
  if (s->closed) {
    hy__unlock(&s->lock);
    return HY_ECLOSED;
  }
  s->closed = 1;
  s->reset_on_close = reset;
  for (hy__nop *n = s->inflight; n; n = n->next)
    hy__port_cancel(n->port, &n->op);
  hy__waitq_wake_all(&s->readq, HY_ECLOSED);
  hy__unlock(&s->lock);
  hy__sock_unref(s);
  return 0;
}

/* ------------------------------------------------------------ awaiting */

static void link_op(hy__sock *s, hy__nop *n) {
  n->prev = NULL;
  n->next = s->inflight;
  if (s->inflight)
    s->inflight->prev = n;
  s->inflight = n;
  n->linked = 1;
}

static void unlink_op(hy__sock *s, hy__nop *n) {
  if (!n->linked)
    return;
  if (n->prev)
    n->prev->next = n->next;
  else
    s->inflight = n->next;
  if (n->next)
    n->next->prev = n->prev;
  n->linked = 0;
}

static void await_done(hy__completion *c, hy__op *op) {
  (void)op;
  hy__nop *n = (hy__nop *)((char *)c - offsetof(hy__nop, c));
  hy__sock *s = n->s;
  hy__lock(&s->lock);
  n->done = 1;
  unlink_op(s, n);
  hy__wait *w = n->w;
  if (w && hy__wait_claim(w, 0))
    hy__wait_wake(w);
  hy__unlock(&s->lock);
}

/* Starts n under s->lock after checking closed.  pre: s->lock held. */
static int start_locked(hy__sock *s, hy__nop *n, hy__worker *wk) {
  if (s->closed)
    return HY_ECANCELED;
  int rc = associate(s, wk);
  if (rc < 0)
    return rc;
  n->s = s;
  n->port = wk->port;
  n->done = 0;
  n->op.pstate = 0;
  n->op.data = &n->c;
  rc = hy__port_start(wk->port, &n->op);
  if (rc < 0)
    return rc;
  link_op(s, n);
  return 0;
}

int hy__sock_await(hy__sock *s, hy__nop *n, int64_t deadline) {
  hy_runtime_t *rt = s->rt;
  hy__worker *wk = hy__worker_current(rt);
  if (!wk || !wk->current)
    return HY_EINVAL;
  hy__wait w;
  int rc = hy__wait_init(&w, rt);
  if (rc < 0)
    return rc;
  n->c.fn = await_done;
  n->w = &w;
  hy__lock(&s->lock);
  rc = start_locked(s, n, wk);
  hy__unlock(&s->lock);
  if (rc < 0) {
    if (!hy__wait_claim(&w, 0))
      hy__wait_park(&w, HY_FOREVER); /* a cancel's wake is owed */
    hy__wait_fini(&w);
    return rc;
  }
  atomic_store_explicit(&wk->current->await_what, "net", memory_order_relaxed);
  int st = hy__wait_park(&w, deadline);
  hy__wait_fini(&w);
  if (st >= 0)
    return (int)n->op.res;

  /* The deadline or a cancel won: have the port give the op back, and wait
   * for it without deadline and without being cancellable. */
  hy__task *t = hy__task_current(rt);
  hy__wait w2;
  atomic_init(&w2.state, HY__WAITING);
  w2.result = 0;
  w2.rt = rt;
  w2.task = t;
  hy__lock(&s->lock);
  int done = n->done;
  n->w = done ? NULL : &w2;
  if (!done)
    hy__port_cancel(n->port, &n->op);
  hy__unlock(&s->lock);
  if (!done) {
    atomic_store_explicit(&t->await_what, "net-cancel", memory_order_relaxed);
    hy__wait_park(&w2, HY_FOREVER);
  }
  if (n->op.res != HY_ECANCELED)
    return (int)n->op.res; /* it completed anyway: report what it did */
  return st == HY__FIRED_TIMEOUT ? HY_ETIMEDOUT : HY_ECANCELED;
}

static void bg_done(hy__completion *c, hy__op *op) {
  (void)op;
  hy__nop *n = (hy__nop *)((char *)c - offsetof(hy__nop, c));
  hy__sock *s = n->s;
  hy__lock(&s->lock);
  n->done = 1;
  unlink_op(s, n);
  hy__unlock(&s->lock);
  if (n->on_done)
    n->on_done(n);
  hy__sock_unref(s);
}

int hy__sock_start_locked(hy__sock *s, hy__nop *n) {
  hy__worker *wk = hy__worker_current(s->rt);
  if (!wk)
    return HY_EINVAL;
  if (s->closed)
    return HY_ECLOSED;
  n->c.fn = bg_done;
  n->w = NULL;
  s->refs++;
  int rc = start_locked(s, n, wk);
  if (rc < 0)
    s->refs--; /* the user's reference is still there: not the last */
  return rc;
}

int hy__sock_start(hy__sock *s, hy__nop *n) {
  hy__lock(&s->lock);
  int rc = hy__sock_start_locked(s, n);
  hy__unlock(&s->lock);
  return rc;
}
