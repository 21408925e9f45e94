/* arm.c - sockets in select: "readable" arms (a connection, a UDP socket,
 * a listener with a connection waiting) and hy_io_t, an operation started
 * in the background whose completion is an arm.
 *
 * Readable: try_fire asks the OS without waiting (poll with no timeout);
 * enqueue links the waiter and, if none is in flight, starts one POLL op
 * on the caller's port that wakes every linked waiter when it completes.
 * Nothing is read, so an arm that did not fire leaves no trace.  A POLL
 * left in flight after its waiters went away is harmless: it completes
 * when data comes (or at close) and finds nobody to wake.
 *
 * hy_io_t: the record (an hy__nop plus a wait queue) is the caller's; the
 * operation holds a reference on the socket until it completes.  Its lock
 * is its own, not the socket's, since a completed io outlives its socket
 * reference.
 */
#include <limits.h>
#include <string.h>

#include "net/internal.h"

/* ------------------------------------------------------------ readable */

static hy__lock_t *rd_lock(void *obj) { return &((hy__sock *)obj)->lock; }

static int rd_try(void *obj, hy_arm_t *arm, int *result) {
  (void)arm;
  hy__sock *s = obj;
  if (s->closed) {
    *result = HY_ECLOSED;
    return 1;
  }
  if (hy__sock_readable(s->fd)) {
    *result = 0;
    return 1;
  }
  return 0;
}

static void poll_done(hy__nop *n) {
  hy__sock *s = n->s;
  int64_t res = n->op.res;
  hy__lock(&s->lock);
  s->poll_active = 0;
  hy__waitq_wake_all(&s->readq, res == HY_ECANCELED && s->closed ? HY_ECLOSED : 0);
  hy__unlock(&s->lock);
}

static void rd_enqueue(void *obj, hy_arm_t *arm, hy__waiter *w) {
  (void)arm;
  hy__sock *s = obj;
  hy__waitq_push(&s->readq, w);
  if (s->poll_active)
    return;
  memset(&s->poll, 0, sizeof s->poll);
  s->poll.op.kind = HY__OP_POLL;
  s->poll.op.fd = s->fd;
  s->poll.op.flags = HY__POLL_IN;
  s->poll.on_done = poll_done;
  int rc = hy__sock_start_locked(s, &s->poll);
  if (rc == 0) {
    s->poll_active = 1;
    return;
  }
  /* Could not watch the socket: fail the arm rather than sleep forever. */
  hy__waitq_remove(&s->readq, w);
  if (hy__wait_claim(w->wait, w->arm)) {
    w->wait->result = rc;
    hy__wait_wake(w->wait);
  }
}

static void rd_dequeue(void *obj, hy_arm_t *arm, hy__waiter *w) {
  (void)arm;
  hy__waitq_remove(&((hy__sock *)obj)->readq, w);
}

static const struct hy_awaitable readable_awaitable = {
    "net-readable", rd_lock, rd_try, rd_enqueue, rd_dequeue};

hy_arm_t hy__arm_readable(hy__sock *s) {
  return hy__arm_make(&readable_awaitable, HY_ARM_OBJECT, s, NULL, s != NULL);
}

hy_arm_t hy_arm_conn_readable(hy_conn_t *c) {
  return hy__arm_readable(hy__conn_sock(c));
}
hy_arm_t hy_arm_udp_readable(hy_udp_t *u) {
  return hy__arm_readable(hy__udp_sock(u));
}
hy_arm_t hy_arm_listener_ready(hy_listener_t *l) {
  return hy__arm_readable(hy__listener_sock(l));
}

/* ------------------------------------------------------------------ io */

typedef struct io_rec {
  hy__nop n;
  hy__lock_t lock;
  hy__waitq q;
  hy__sock *s;
  int started, done, res, is_write;
  char *buf;
  size_t len, off;
} io_rec;

_Static_assert(sizeof(io_rec) <= sizeof(hy_io_t), "hy_io_t holds an io_rec");

static void io_finish(io_rec *io, int res) {
  hy__sock *s = io->s;
  hy__lock(&s->lock);
  if (io->is_write)
    s->writing = 0;
  else
    s->reading = 0;
  hy__unlock(&s->lock);
  hy__lock(&io->lock);
  io->res = res;
  io->done = 1;
  hy__waitq_wake_all(&io->q, res);
  hy__unlock(&io->lock);
  /* io may be reused by its owner from here on. */
}

static int io_issue(io_rec *io);

static void io_done(hy__nop *n) {
  io_rec *io = (io_rec *)n;
  int64_t res = n->op.res;
  if (io->is_write && res > 0) {
    io->off += (size_t)res;
    if (io->off < io->len) {
      int rc = io_issue(io);
      if (rc == 0)
        return;
      io_finish(io, rc == HY_ECLOSED ? HY_ECANCELED : rc);
      return;
    }
    io_finish(io, (int)io->len);
    return;
  }
  if (io->is_write && res == 0)
    res = HY_EPIPE;
  io_finish(io, (int)res);
}

static int io_issue(io_rec *io) {
  memset(&io->n, 0, sizeof io->n);
  io->n.op.kind = io->is_write ? HY__OP_SEND : HY__OP_RECV;
  io->n.op.fd = io->s->fd;
  io->n.op.buf = io->buf + io->off;
  io->n.op.len = io->len - io->off;
  io->n.op.flags = io->is_write ? hy__sock_flag_nosignal() : 0;
  io->n.on_done = io_done;
  return hy__sock_start(io->s, &io->n);
}

static int io_start(hy_conn_t *c, hy_io_t *rec, void *buf, size_t len,
                    int is_write) {
  hy__sock *s = hy__conn_sock(c);
  if (!s || !rec || (!buf && len) || len > INT_MAX)
    return HY_EINVAL;
  if (!hy__in_task(s->rt))
    return HY_EINVAL;
  io_rec *io = (io_rec *)rec;
  memset(io, 0, sizeof *io);
  io->s = s;
  io->buf = buf;
  io->len = len;
  io->is_write = is_write;
  int *flag = is_write ? &s->writing : &s->reading;
  hy__lock(&s->lock);
  if (s->closed) {
    hy__unlock(&s->lock);
    return HY_ECLOSED;
  }
  if (*flag) {
    hy__unlock(&s->lock);
    return HY_EBUSY;
  }
  *flag = 1;
  hy__unlock(&s->lock);
  int rc = io_issue(io);
  if (rc < 0) {
    hy__lock(&s->lock);
    *flag = 0;
    hy__unlock(&s->lock);
    return rc;
  }
  io->started = 1;
  return 0;
}

int hy_conn_read_start(hy_conn_t *c, hy_io_t *io, void *buf, size_t len) {
  return io_start(c, io, buf, len, 0);
}

int hy_conn_write_start(hy_conn_t *c, hy_io_t *io, const void *buf,
                        size_t len) {
  return io_start(c, io, (void *)buf, len, 1);
}

int hy_io_done(hy_io_t *rec) {
  io_rec *io = (io_rec *)rec;
  hy__lock(&io->lock);
  int d = io->done;
  hy__unlock(&io->lock);
  return d;
}

int hy_io_cancel(hy_io_t *rec) {
  io_rec *io = (io_rec *)rec;
  if (!io || !io->started)
    return HY_EINVAL;
  hy__lock(&io->lock);
  int d = io->done;
  hy__unlock(&io->lock);
  if (d)
    return 0;
  /* Not done: the op holds a socket reference, so s is alive; whether the
   * op is still linked is decided under s->lock. */
  hy__sock *s = io->s;
  hy__lock(&s->lock);
  if (io->n.linked)
    hy__port_cancel(io->n.port, &io->n.op);
  hy__unlock(&s->lock);
  return 0;
}

int hy_io_wait(hy_io_t *rec, hy_time_t deadline) {
  io_rec *io = (io_rec *)rec;
  if (!io || !io->started)
    return HY_EINVAL;
  hy__lock(&io->lock);
  if (io->done) {
    int r = io->res;
    hy__unlock(&io->lock);
    return r;
  }
  hy__unlock(&io->lock);
  hy__wait w;
  int rc = hy__wait_init(&w, io->s->rt);
  if (rc < 0)
    return rc;
  hy__waiter wr;
  memset(&wr, 0, sizeof wr);
  wr.wait = &w;
  hy__lock(&io->lock);
  if (io->done) {
    int r = io->res;
    hy__unlock(&io->lock);
    if (!hy__wait_claim(&w, 0))
      hy__wait_park(&w, HY_FOREVER);
    hy__wait_fini(&w);
    return r;
  }
  int st = hy__wait_park_queued(&w, &wr, &io->q, &io->lock, NULL, deadline);
  hy__wait_fini(&w);
  return st >= 0 ? w.result : st == HY__FIRED_TIMEOUT ? HY_ETIMEDOUT
                                                      : HY_ECANCELED;
}

HY__WAITQ_ARM_OPS(io, io_rec, lock, q)

static int io_try(void *obj, hy_arm_t *arm, int *result) {
  (void)arm;
  io_rec *io = obj;
  if (!io->done)
    return 0;
  *result = io->res;
  return 1;
}

static const struct hy_awaitable io_awaitable = {"net-io", io_lock, io_try,
                                                 io_enqueue, io_dequeue};

hy_arm_t hy_arm_io(hy_io_t *rec) {
  return hy__arm_make(&io_awaitable, HY_ARM_OBJECT, rec, NULL, rec != NULL);
}
