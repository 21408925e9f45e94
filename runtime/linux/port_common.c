/* port_common.c - hy__port_* on Linux: backend choice, and the parts every
 * backend shares (wakes, posts, cancel requests, op states); see
 * runtime/linux/port_linux.h.
 *
 * hy__port_open(AUTO) tries io_uring and falls back to epoll when the ring
 * cannot be set up (no io_uring in the kernel, seccomp, the sysctl
 * kernel.io_uring_disabled, a kernel too old for what the port needs).
 * HYDRA_URING_DISABLE=1 in the environment makes the io_uring probe fail
 * on purpose, to test that fallback.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "hydra/error.h"
#include "runtime/linux/port_linux.h"
#include "runtime/sys.h"

int hy__lport_init(hy__port *p, const hy__port_vt *vt, int backend,
                   const char *name) {
  p->vt = vt;
  p->backend = backend;
  p->name = name;
  atomic_init(&p->pending, 0);
  atomic_init(&p->osh, 0);
  atomic_init(&p->blocking, 0);
  atomic_init(&p->lock.v, 0);
  p->post_head = p->post_tail = NULL;
  p->clist = NULL;
  p->spin = 0;
  p->spins = 0;
  p->judge = (hy__look_judge){0};
  p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (p->efd < 0)
    return hy__lport_err(errno);
  return 0;
}

void hy__lport_fini(hy__port *p) {
  if (p->efd >= 0)
    close(p->efd);
  p->efd = -1;
}

hy__op *hy__lport_take_cancels(hy__port *p) {
  if (!__atomic_load_n(&p->clist, __ATOMIC_RELAXED))
    return NULL;
  hy__lock(&p->lock);
  hy__op *list = p->clist;
  p->clist = NULL;
  for (hy__op *op = list; op; op = (hy__op *)(uintptr_t)op->pdata[0])
    op->pflags &= (uint16_t)~HY__PF_CLIST;
  hy__unlock(&p->lock);
  return list;
}

int hy__lport_take_posts(hy__port *p, hy__op **ops, int max, int *more) {
  *more = 0;
  if (!__atomic_load_n(&p->post_head, __ATOMIC_RELAXED))
    return 0;
  int n = 0;
  hy__lock(&p->lock);
  while (p->post_head && n < max) {
    hy__op *op = p->post_head;
    __atomic_store_n(&p->post_head, op->next, __ATOMIC_RELAXED);
    op->pstate = HY__PS_IDLE;
    ops[n++] = op;
  }
  if (!p->post_head)
    p->post_tail = NULL;
  else
    *more = 1;
  hy__unlock(&p->lock);
  return n;
}

void hy__lport_started(hy__port *p, hy__op *op) {
  hy__lock(&p->lock);
  op->pstate = HY__PS_INFLIGHT;
  op->pflags = 0;
  hy__unlock(&p->lock);
}

void hy__lport_finish_locked(hy__port *p, hy__op *op, int64_t res,
                             int state) {
  if (op->pflags & HY__PF_CLIST) {
    hy__op **pp = &p->clist;
    while (*pp && *pp != op)
      pp = (hy__op **)(uintptr_t)&(*pp)->pdata[0];
    if (*pp)
      *pp = (hy__op *)(uintptr_t)op->pdata[0];
  }
  if ((op->pflags & HY__PF_CANCEL) && res == HY_EUNKNOWN)
    res = HY_ECANCELED; /* -EINTR from an interrupted worker */
  op->res = res;
  op->pflags = 0;
  op->pstate = (uint8_t)state;
}

void hy__lport_dequeued(hy__port *p, hy__op **ops, int n) {
  if (n <= 0)
    return;
  hy__lock(&p->lock);
  for (int i = 0; i < n; i++)
    ops[i]->pstate = HY__PS_IDLE;
  hy__unlock(&p->lock);
}

int hy__lport_err(int e) {
  if (e < 0)
    e = -e;
  if (e == ETIME)
    return HY_ETIMEDOUT;
  return hy_translate_errno(e);
}

int hy__lport_poll_mask(uint32_t revents) {
  int m = 0;
  if (revents & (POLLIN | POLLRDNORM | POLLRDHUP))
    m |= HY__POLL_IN;
  if (revents & (POLLOUT | POLLWRNORM))
    m |= HY__POLL_OUT;
  if (revents & (POLLERR | POLLHUP | POLLNVAL))
    m |= HY__POLL_ERR;
  return m;
}

/* ------------------------------------------------------------ the API */

int hy__port_open_for(hy__port **out, int backend, hy__port *share,
                      int threads) {
  (void)threads; /* one port per worker: nothing to bound */
  return hy__port_open(out, backend, share);
}

int hy__port_open(hy__port **out, int backend, hy__port *share) {
  if (!out)
    return HY_EINVAL;
  *out = NULL;
  switch (backend) {
  case HY__BACKEND_AUTO:
  case HY__BACKEND_URING: {
    const char *off = hy__getenv("HYDRA_URING_DISABLE");
    int rc = (off && strcmp(off, "1") == 0) ? HY_ENOSYS
                                              : hy__uring_open(out, share);
    if (rc == 0 || backend == HY__BACKEND_URING)
      return rc;
    /* AUTO: whatever stopped io_uring, epoll may still work. */
    return hy__epoll_open(out);
  }
  case HY__BACKEND_EPOLL:
    return hy__epoll_open(out);
  case HY__BACKEND_IOCP:
    return HY_ENOSYS;
  default:
    return HY_EINVAL;
  }
}

void hy__port_close(hy__port *p) {
  if (p)
    p->vt->close(p);
}

const char *hy__port_backend_name(const hy__port *p) {
  return p ? p->name : "none";
}

int hy__port_backend(const hy__port *p) {
  return p ? p->backend : HY__BACKEND_AUTO;
}

int hy__port_associate(hy__port *p, intptr_t fd) {
  if (fd < 0 || fd > INT32_MAX)
    return HY_EBADF;
  return p->vt->associate(p, (int)fd);
}

void hy__port_forget(hy__port *p, intptr_t fd) {
  if (fd >= 0 && fd <= INT32_MAX)
    p->vt->forget(p, (int)fd);
}

int hy__port_start(hy__port *p, hy__op *op) {
  if (!op || op->kind >= HY__OP_KIND_COUNT || op->kind == HY__OP_POST)
    return HY_EINVAL;
  switch (op->kind) {
  case HY__OP_NOP:
  case HY__OP_TIMEOUT:
    break;
  default:
    if (op->fd < 0 || op->fd > INT32_MAX)
      return HY_EBADF;
    if ((op->kind == HY__OP_CONNECT || op->kind == HY__OP_SENDTO) &&
        (!op->addr || !op->addrlen))
      return HY_EINVAL;
    break;
  }
  return p->vt->start(p, op);
}

int64_t hy__port_send_now(hy__port *p, intptr_t fd, const void *buf,
                          size_t len, uint32_t flags) {
  if (fd < 0 || fd > INT32_MAX)
    return HY_EBADF;
  if (p->backend != HY__BACKEND_EPOLL)
    return HY_ENOSYS; /* io_uring sends through ops only */
  return hy__epoll_send_now(p, (int)fd, buf, len, flags);
}

int64_t hy__port_recv_now(hy__port *p, hy__op *op) {
  if (p->backend != HY__BACKEND_EPOLL)
    return HY_ENOSYS; /* no op completes with HY__RES_READY there */
  return hy__epoll_recv_now(p, op);
}

int hy__port_done_early(const hy__port *p, const hy__op *op) {
  /* pstate is written by the owner only (under the lock, which other
   * threads take to read it): the owner reads it as is. */
  return p->backend == HY__BACKEND_EPOLL && op->pstate == HY__PS_DONE;
}

int hy__port_cancel(hy__port *p, hy__op *op) {
  if (!p || !op)
    return HY_EINVAL;
  hy__lock(&p->lock);
  if (op->pstate == HY__PS_IDLE) {
    hy__unlock(&p->lock);
    return HY_ENOENT;
  }
  int ask = op->pstate == HY__PS_INFLIGHT && !(op->pflags & HY__PF_CANCEL);
  if (ask) {
    op->pflags |= HY__PF_CANCEL | HY__PF_CLIST;
    op->pdata[0] = (uint64_t)(uintptr_t)p->clist;
    __atomic_store_n(&p->clist, op, __ATOMIC_RELAXED);
  }
  hy__unlock(&p->lock);
  if (ask)
    hy__port_wake(p);
  return 0;
}

int hy__port_post(hy__port *p, hy__op *op) {
  if (!p || !op)
    return HY_EINVAL;
  op->next = NULL;
  hy__lock(&p->lock);
  op->pstate = HY__PS_DONE;
  op->pflags = 0;
  if (p->post_tail)
    p->post_tail->next = op;
  else
    __atomic_store_n(&p->post_head, op, __ATOMIC_RELAXED);
  p->post_tail = op;
  hy__unlock(&p->lock);
  hy__port_wake(p);
  return 0;
}

static void signal_efd(hy__port *p) {
  int saved = errno; /* async-signal-safe: a handler must not clobber it */
  uint64_t one = 1;
  while (write(p->efd, &one, sizeof one) < 0 && errno == EINTR) {
  }
  errno = saved;
}

void hy__port_wake(hy__port *p) {
  /* A full read-modify-write, never a plain load first: it orders what the
   * caller published (a post, a cancel request) before the flag, against
   * the owner's exchange that consumes it. */
  if (atomic_exchange(&p->pending, 1))
    return; /* one is already owed: wakes coalesce */
  /* The owner will see the flag before it blocks, unless it blocks now. */
  if (!atomic_load(&p->blocking) && !atomic_load(&p->osh))
    return;
  signal_efd(p);
}

int hy__port_wait(hy__port *p, hy__op **ops, int max, int64_t timeout_ns) {
  if (!p || !ops || max <= 0)
    return HY_EINVAL;
  return p->vt->wait(p, ops, max, timeout_ns);
}

intptr_t hy__port_os_handle(const hy__port *p) {
  /* From now on a completion the owner leaves behind must keep the handle
   * readable (backends skip that work while nobody polls the handle). */
  hy__port *q = (hy__port *)p;
  atomic_store(&q->osh, 1);
  if (atomic_load(&q->pending))
    signal_efd(q); /* a wake that saw no reason to write yet */
  return p->vt->os_handle(p);
}
