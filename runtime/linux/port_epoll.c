/* port_epoll.c - the epoll backend of the completion port: readiness
 * turned into completions.
 *
 * Every associated fd is in the epoll set once, edge-triggered, for both
 * directions (no epoll_ctl per op).  Its ops wait in per-fd FIFO queues:
 * one for the reading side (accept, recv, recvfrom), one for the writing
 * side (connect, send, sendto), and a list of poll ops.  The rule that
 * makes edge triggering safe: the op at the head of a queue is always
 * tried at once - when it is started into an empty queue, and when the op
 * before it completes - and waits only after the kernel said EAGAIN, so
 * the next edge comes after it started waiting.  On an edge the queue is
 * worked from the head until EAGAIN or empty.
 *
 * A port learns of an fd on first use (or hy__port_associate); before
 * the first op of an idle fd waits, one EPOLL_CTL_ADD checks the fd is
 * still registered (see reg_check) - except for a recv flagged
 * HY__RECV_OWNED, whose fd is closed only after hy__port_forget here.
 * Such a recv is not tried at once when the last recv on the fd emptied
 * the socket (it would block, or a stream read came back shorter than
 * asked for) and no edge came since: new data brings a new edge, so the
 * recv waits for it without the system call that would say EAGAIN.
 *
 * A pooled recv (buf NULL, see hy__bufsrc) takes its buffer from the
 * source just for the recv call and keeps it only if data came; it asks
 * for one byte more than the buffer holds, kept in the fd's entry for the
 * next read, so that a read that fills the buffer also says whether the
 * socket is empty now (see try_recv_pooled).
 *
 * A pooled recv flagged HY__RECV_LATE is not read on an edge: it completes
 * with HY__RES_READY, and its owner reads it with hy__port_recv_now when
 * it handles the completion (one buffer in use however many sockets one
 * wait finds ready).  hy__port_send_now sends without an op when no
 * send-like op of the fd waits here (so the bytes keep their order).
 *
 * A connect waits on the writing side; on an edge it is done only if
 * SO_ERROR names an error or getpeername succeeds (edges also come for a
 * socket that is not connected yet, such as the one at registration).
 *
 * Timeouts wait in a binary heap by deadline; the epoll wait is bounded by
 * the first (epoll_pwait2, nanoseconds; epoll_wait rounds up to the next
 * millisecond), and one fires only once hy_now() has reached its deadline.
 * A timerfd in the epoll set, kept at the first deadline, makes the epoll
 * fd readable when a timeout is due, for a foreign loop polling it.
 *
 * One epoll_wait per batch of ready fds, as a plain epoll loop makes: a
 * wait that need not block - timeout 0, or completions already in the
 * ready list to hand out - does not ask the kernel again when an
 * epoll_wait that saw every ready fd (it had room to spare) returned a
 * moment ago (fresh_look: less than LOOK_GAP ago, and fewer than
 * LOOK_SKIPS waits did not ask since).  The worker's look before it
 * sleeps, and the wait that hands out the sends that completed at once,
 * would each cost a system call that, after a batch, finds nothing the
 * block that follows would not return at once.  A worker busy with tasks
 * asks at every LOOK_SKIPS + 1st wait, or after LOOK_GAP, so the port's
 * own completions never starve the kernel's.  Not once the os_handle is
 * out: the foreign loop was told "readable" and must find what made it
 * so.  The epoll port does not look before it blocks (HY__SPIN_NS in
 * port_linux.h): on epoll each look is a system call, and the tries cost
 * more CPU per message than the sleep they save.
 *
 * Completed ops wait in the ready list until dequeued.  Once os_handle
 * (the epoll fd) has been handed out, an op completed inside start, or
 * left in the ready list by a wait that had no more room, also wakes the
 * port, so the epoll fd stays readable while completions wait.
 *
 * Cancel requests (from any thread) are carried out by the owner in its
 * next wait: the op leaves its queue or the heap and completes with
 * HY_ECANCELED.  pdata: [0] cancel link (common), [1] heap index, [2]
 * where the op waits (owner only).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "alloc/mem.h"
#include "hydra/error.h"
#include "hydra/runtime.h"
#include "runtime/linux/port_linux.h"

#define EV_WAKE UINT64_MAX
#define EV_TIMER (UINT64_MAX - 1)
#define MAX_IO_LEN 0x7ffff000u
#define NEVENTS 64

/* A wait that need not block does not ask the kernel when the last
 * epoll_wait is younger than LOOK_GAP and fewer than LOOK_SKIPS waits
 * did not ask since (see fresh_look). */
#define LOOK_GAP HY_US(200)
#define LOOK_SKIPS 2

enum { W_NONE = 0, W_RQ, W_WQ, W_POLL, W_HEAP };

typedef struct fdent {
  hy__op *rq, *rq_tail; /* accept, recv, recvfrom */
  hy__op *wq, *wq_tail; /* connect, send, sendto */
  hy__op *polls;        /* poll ops, any order */
  int reg;              /* in the epoll set */
  int drained;          /* the last recv emptied the socket and no edge
                           came since: a new edge will come with data */
  int rstate;           /* set by the last recv try: 1 the socket is empty
                           now, 0 it is not, -1 not known (see recv_hint) */
  int spilled;          /* spill holds the stream's next byte */
  int filled;           /* the last pooled read filled its buffer */
  int rdhup;            /* the peer's end (or an error) was seen: every
                           read is tried, as no edge comes for it again */
  unsigned char spill;
} fdent;

typedef struct eport {
  hy__port base;
  int ep;
  int tfd;           /* timerfd at the first deadline */
  int64_t tfd_armed; /* the deadline it is set to; 0: disarmed */
  int pwait2;        /* epoll_pwait2 is there */
  fdent *fds; /* indexed by fd */
  int nfds;
  hy__op **heap; /* TIMEOUT ops, a min-heap by deadline */
  int nheap, capheap;
  hy__op *ready, *ready_tail;
  int64_t looked;    /* when the last epoll_wait returned with room to
                        spare (it saw every ready fd); 0: not known */
  int skips;         /* waits that did not ask the kernel since */
} eport;

static const hy__port_vt epoll_vt;

/* --------------------------------------------------------- completions */

/* An op is marked started (in flight: a cancel request finds it) only
 * when it waits; one done inside hy__port_start goes from idle to done
 * under one taking of the lock (a cancel asked for meanwhile finds it
 * idle, as one asked for before the start). */
static void complete(eport *e, hy__op *op, int64_t res) {
  op->pdata[2] = W_NONE;
  hy__lock(&e->base.lock);
  if (op->pstate != HY__PS_INFLIGHT)
    op->pflags = 0; /* not started: nothing asked of it */
  hy__lport_finish_locked(&e->base, op, res, HY__PS_DONE);
  hy__unlock(&e->base.lock);
  op->next = NULL;
  if (e->ready_tail)
    e->ready_tail->next = op;
  else
    e->ready = op;
  e->ready_tail = op;
}

static int take_ready(eport *e, hy__op **ops, int max) {
  int n = 0;
  while (e->ready && n < max) {
    ops[n++] = e->ready;
    e->ready = e->ready->next;
  }
  if (!e->ready)
    e->ready_tail = NULL;
  hy__lport_dequeued(&e->base, ops, n);
  return n;
}

/* -------------------------------------------------------------- queues */

static void q_push(hy__op **head, hy__op **tail, hy__op *op) {
  op->next = NULL;
  if (*tail)
    (*tail)->next = op;
  else
    *head = op;
  *tail = op;
}

static hy__op *q_pop(hy__op **head, hy__op **tail) {
  hy__op *op = *head;
  if (op) {
    *head = op->next;
    if (!*head)
      *tail = NULL;
    op->next = NULL;
  }
  return op;
}

static void q_remove(hy__op **head, hy__op **tail, hy__op *op) {
  hy__op *prev = NULL;
  for (hy__op *x = *head; x; prev = x, x = x->next) {
    if (x != op)
      continue;
    if (prev)
      prev->next = x->next;
    else
      *head = x->next;
    if (tail && *tail == x)
      *tail = prev;
    x->next = NULL;
    return;
  }
}

/* ---------------------------------------------------------- timer heap */

static void heap_set(eport *e, int i, hy__op *op) {
  e->heap[i] = op;
  op->pdata[1] = (uint64_t)i;
}

static void heap_up(eport *e, int i) {
  hy__op *op = e->heap[i];
  while (i > 0) {
    int parent = (i - 1) / 2;
    if (e->heap[parent]->deadline <= op->deadline)
      break;
    heap_set(e, i, e->heap[parent]);
    i = parent;
  }
  heap_set(e, i, op);
}

static void heap_down(eport *e, int i) {
  hy__op *op = e->heap[i];
  for (;;) {
    int c = 2 * i + 1;
    if (c >= e->nheap)
      break;
    if (c + 1 < e->nheap && e->heap[c + 1]->deadline < e->heap[c]->deadline)
      c++;
    if (e->heap[c]->deadline >= op->deadline)
      break;
    heap_set(e, i, e->heap[c]);
    i = c;
  }
  heap_set(e, i, op);
}

static int heap_reserve(eport *e) {
  if (e->nheap < e->capheap)
    return 0;
  int cap = e->capheap ? e->capheap * 2 : 64;
  hy__op **h = hy__mem_realloc(e->heap, (size_t)cap * sizeof *h);
  if (!h)
    return HY_ENOMEM;
  e->heap = h;
  e->capheap = cap;
  return 0;
}

/* op waits (in a queue, the heap, a poll list): in flight from now on. */
static void waits(eport *e, hy__op *op, int where) {
  hy__lport_started(&e->base, op);
  op->pdata[2] = (uint64_t)where;
}

static void heap_push(eport *e, hy__op *op) { /* room reserved */
  waits(e, op, W_HEAP);
  e->heap[e->nheap] = op;
  heap_up(e, e->nheap++);
}

static void heap_remove(eport *e, hy__op *op) {
  int i = (int)op->pdata[1];
  if (i >= e->nheap || e->heap[i] != op)
    return;
  hy__op *last = e->heap[--e->nheap];
  if (i < e->nheap) {
    heap_set(e, i, last);
    heap_down(e, i);
    heap_up(e, (int)last->pdata[1]);
  }
}

/* Keeps the timerfd at the heap's first deadline. */
static void arm_timer(eport *e) {
  int64_t want = e->nheap ? e->heap[0]->deadline : 0;
  if (want == e->tfd_armed)
    return;
  struct itimerspec its;
  memset(&its, 0, sizeof its);
  its.it_value.tv_sec = want / 1000000000;
  its.it_value.tv_nsec = want % 1000000000;
  if (timerfd_settime(e->tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
    e->tfd_armed = want;
}

static void fire_timers(eport *e) {
  if (!e->nheap)
    return;
  int64_t now = hy_now();
  while (e->nheap && e->heap[0]->deadline <= now) {
    hy__op *op = e->heap[0];
    heap_remove(e, op);
    complete(e, op, HY_ETIMEDOUT);
  }
}

/* ------------------------------------------------------- fd entries */

static void cancel_all_on(eport *e, fdent *ent) {
  hy__op *op;
  while ((op = q_pop(&ent->rq, &ent->rq_tail)) != NULL)
    complete(e, op, HY_ECANCELED);
  while ((op = q_pop(&ent->wq, &ent->wq_tail)) != NULL)
    complete(e, op, HY_ECANCELED);
  while ((op = ent->polls) != NULL) {
    ent->polls = op->next;
    complete(e, op, HY_ECANCELED);
  }
}

static int e_associate(hy__port *p, int fd) {
  eport *e = (eport *)p;
  if (fd >= e->nfds) {
    int n = e->nfds ? e->nfds : 64;
    while (n <= fd)
      n = n > INT_MAX / 2 ? INT_MAX : n * 2;
    fdent *f = hy__mem_realloc(e->fds, (size_t)n * sizeof *f);
    if (!f)
      return HY_ENOMEM;
    memset(f + e->nfds, 0, (size_t)(n - e->nfds) * sizeof *f);
    e->fds = f;
    e->nfds = n;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
    return hy__lport_err(errno);
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = (uint64_t)fd;
  fdent *ent = &e->fds[fd];
  if (epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev) == 0) {
    /* A new registration: ops left here belonged to an fd of this number
     * that was closed without hy__port_forget. */
    cancel_all_on(e, ent);
  } else if (errno != EEXIST) {
    return hy__lport_err(errno);
  }
  ent->reg = 1;
  ent->drained = 0;
  ent->spilled = ent->filled = ent->rdhup = 0;
  return 0;
}

/* Before the first op of fd waits: is fd (still) in the epoll set?  A
 * port learns of an fd on first use, but the fd may have been closed
 * since - its number reused by a new socket - without hy__port_forget on
 * this port (workers' ports all see the sockets of tasks that move), and
 * the kernel dropped the old registration with the old file.  ADD tells:
 * EEXIST means registered.  Returns 0 or HY_E*. */
static int reg_check(eport *e, int fd) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = (uint64_t)fd;
  if (epoll_ctl(e->ep, EPOLL_CTL_ADD, fd, &ev) == 0) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
      fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    return 0;
  }
  return errno == EEXIST ? 0 : hy__lport_err(errno);
}

static int idle_fd(const fdent *ent) {
  return !ent->rq && !ent->wq && !ent->polls;
}

/* Ops still waiting on fd complete with HY_ECANCELED. */
static void e_forget(hy__port *p, int fd) {
  eport *e = (eport *)p;
  if (fd >= e->nfds || !e->fds[fd].reg)
    return;
  epoll_ctl(e->ep, EPOLL_CTL_DEL, fd, NULL);
  e->fds[fd].reg = 0;
  e->fds[fd].drained = 0;
  e->fds[fd].spilled = e->fds[fd].filled = e->fds[fd].rdhup = 0;
  cancel_all_on(e, &e->fds[fd]);
  if (e->ready && atomic_load_explicit(&p->osh, memory_order_relaxed))
    hy__port_wake(p);
}

/* ------------------------------------------------------------- the I/O */

/* A pooled receive (buf NULL, addr: the hy__bufsrc): a buffer is taken
 * only for the recv and kept only if data came.  The recv asks for one
 * byte more than the buffer holds, into ent->spill: a read that fills the
 * buffer then tells whether the socket had more (the spill byte came: it
 * is the first byte of the next read on the fd) or is empty now - which a
 * plain full read does not, so that the next one was tried at once only
 * to say EAGAIN (a second system call per message for answers the size of
 * the buffer).  That read asks for the byte more only after a read on the
 * fd filled its buffer (a recvmsg of two pieces costs a little more than a
 * recv, and reads that come back short already say the socket is empty),
 * so the first of a run of full reads is still followed by an EAGAIN.
 * A source whose buffers have slack (room past size) takes the byte more
 * in the buffer itself, with a plain recv.
 * A read that found the socket empty leaves that mark as it was: when a
 * full read is followed by that EAGAIN (or an edge whose data an earlier
 * read took), the next full reads still ask for the byte more - else
 * every other full read would be followed by an EAGAIN.
 * A pooled receive's fd is read by this port only (the
 * server's connections stay on their worker), so the byte kept here is
 * always the one the next read wants. */
static int try_recv_pooled(hy__op *op, fdent *ent, int64_t *res) {
  hy__bufsrc *src = op->addr;
  if (!src) {
    *res = HY_EINVAL;
    return 1;
  }
  void *b = src->get(src);
  if (!b) {
    *res = HY_ENOMEM;
    return 1;
  }
  size_t len = src->size > MAX_IO_LEN ? MAX_IO_LEN : src->size;
  int fl = (int)(op->flags &
                 ~(HY__RECV_OWNED | HY__RECV_LATE | HY__RECV_MULTI));
  ssize_t r;
  if (ent && !(fl & MSG_PEEK) && len > 1 && (ent->filled || ent->spilled)) {
    size_t have = 0;
    if (ent->spilled) {
      ((unsigned char *)b)[0] = ent->spill;
      ent->spilled = 0;
      have = 1;
    }
    if (src->slack > 0 && len == src->size) {
      /* The buffer has room for the byte more: one plain recv. */
      while ((r = recv((int)op->fd, (char *)b + have, len - have + 1,
                       fl | MSG_DONTWAIT)) < 0 &&
             errno == EINTR) {
      }
      if (r > (ssize_t)(len - have))
        ent->spill = ((unsigned char *)b)[len];
    } else {
      struct iovec iov[2] = {{(char *)b + have, len - have},
                             {&ent->spill, 1}};
      struct msghdr m;
      memset(&m, 0, sizeof m);
      m.msg_iov = iov;
      m.msg_iovlen = 2;
      while ((r = recvmsg((int)op->fd, &m, fl | MSG_DONTWAIT)) < 0 &&
             errno == EINTR) {
      }
    }
    if (r > 0) /* an empty socket says nothing of the reads' sizes */
      ent->filled = r >= (ssize_t)(len - have);
    if (r > (ssize_t)(len - have)) {
      ent->spilled = 1; /* more is there */
      ent->rstate = 0;
      r = (ssize_t)(len - have);
    } else if (r > 0) {
      ent->rstate = 1; /* asked for more than came: empty now */
    } else if (have) {
      /* The kept byte is data: an error or the end comes next time. */
      ent->rstate = r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
      r = 0;
    }
    if (r > 0 || have) {
      op->buf = b;
      *res = (int64_t)have + r;
      return 1;
    }
  } else {
    if (ent && ent->spilled) {
      /* A peek (or a 1-byte pool) after a spill: the kept byte first. */
      ((unsigned char *)b)[0] = ent->spill;
      if (!(fl & MSG_PEEK))
        ent->spilled = 0;
      ent->rstate = 0;
      op->buf = b;
      *res = 1;
      return 1;
    }
    while ((r = recv((int)op->fd, b, len, fl | MSG_DONTWAIT)) < 0 &&
           errno == EINTR) {
    }
    if (ent && !(fl & MSG_PEEK) && r > 0)
      ent->filled = r == (ssize_t)len;
    if (r > 0) {
      op->buf = b;
      *res = r;
      return 1;
    }
  }
  int err = r < 0 ? errno : 0;
  src->put(src, b);
  if (r < 0 && (err == EAGAIN || err == EWOULDBLOCK))
    return 0;
  *res = r == 0 ? 0 : hy__lport_err(err);
  return 1;
}

/* Does op's I/O once.  Returns 1 with *res set when the op is done, 0 when
 * it would block. */
static int try_io(hy__op *op, fdent *ent, int64_t *res) {
  int fd = (int)op->fd;
  size_t len = op->len > MAX_IO_LEN ? MAX_IO_LEN : op->len;
  int fl = (int)(op->flags &
                 ~(HY__RECV_OWNED | HY__RECV_LATE | HY__RECV_MULTI));
  if (ent)
    ent->rstate = -1;
  if (op->kind == HY__OP_RECV && !op->buf)
    return try_recv_pooled(op, ent, res);
  if (op->kind == HY__OP_RECV && ent && ent->spilled && len > 0) {
    /* The byte a pooled read kept comes first (see try_recv_pooled). */
    unsigned char *b = op->buf;
    b[0] = ent->spill;
    if (fl & MSG_PEEK) {
      *res = 1;
      return 1;
    }
    ent->spilled = 0;
    ssize_t r = 0;
    if (len > 1)
      while ((r = recv(fd, b + 1, len - 1, fl | MSG_DONTWAIT)) < 0 &&
             errno == EINTR) {
      }
    ent->rstate = r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 1
                  : r > 0                                            ? -1
                                                                     : 0;
    *res = 1 + (r > 0 ? r : 0);
    return 1;
  }
  for (;;) {
    ssize_t r;
    socklen_t al = op->addr ? (socklen_t)op->addrlen : 0;
    switch (op->kind) {
    case HY__OP_ACCEPT:
      r = accept4(fd, op->addr, op->addr ? &al : NULL,
                  SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (r >= 0 && op->addr)
        op->addrlen = al;
      break;
    case HY__OP_RECV:
      r = recv(fd, op->buf, len, fl | MSG_DONTWAIT);
      break;
    case HY__OP_RECVFROM:
      r = recvfrom(fd, op->buf, len, fl | MSG_DONTWAIT, op->addr,
                   op->addr ? &al : NULL);
      if (r >= 0 && op->addr)
        op->addrlen = al;
      break;
    case HY__OP_SEND:
      r = send(fd, op->buf, len, fl | MSG_DONTWAIT | MSG_NOSIGNAL);
      break;
    case HY__OP_SENDTO:
      r = sendto(fd, op->buf, len, fl | MSG_DONTWAIT | MSG_NOSIGNAL, op->addr,
                 (socklen_t)op->addrlen);
      break;
    case HY__OP_CONNECT: {
      int err = 0;
      socklen_t el = sizeof err;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
      if (err) {
        *res = hy__lport_err(err);
        return 1;
      }
      struct sockaddr_storage ss;
      socklen_t sl = sizeof ss;
      if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        *res = 0;
        return 1;
      }
      if (errno == ENOTCONN)
        return 0; /* not connected yet: an early edge */
      *res = hy__lport_err(errno);
      return 1;
    }
    default:
      *res = HY_EINVAL;
      return 1;
    }
    if (r >= 0) {
      *res = r;
      return 1;
    }
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return 0;
    *res = hy__lport_err(errno);
    return 1;
  }
}

/* After a recv-like try on ent: did it leave the socket empty (would
 * block, or a stream read shorter than asked for)?  Then the next data
 * brings a new edge. */
static void recv_hint(fdent *ent, hy__op *op, int done, int64_t res) {
  /* Field by field: a wide load of kind..flags would overlap pflags, which
   * hy__port_cancel writes from other threads under the port's lock. */
  uint8_t kind = __atomic_load_n(&op->kind, __ATOMIC_RELAXED);
  uint32_t flags = __atomic_load_n(&op->flags, __ATOMIC_RELAXED);
  if (kind != HY__OP_RECV || (flags & MSG_PEEK)) {
    ent->drained = 0;
    return;
  }
  /* a pooled recv (addr: its source) has its buffer in op->buf by now */
  size_t len = op->addr ? ((hy__bufsrc *)op->addr)->size : op->len;
  if (done && ent->rstate >= 0)
    ent->drained = ent->rstate; /* the try knew */
  else
    ent->drained = !done || (res > 0 && (size_t)res < len);
  /* Data and the peer's FIN that came before one wait make one edge: a
   * short read then still leaves the end to be read, and no edge will
   * say so again. */
  if (ent->rdhup)
    ent->drained = 0;
}

/* A pooled recv flagged HY__RECV_LATE: on an edge it completes with
 * HY__RES_READY, and is read by hy__port_recv_now. */
static int late_recv(hy__op *op) {
  uint8_t kind = __atomic_load_n(&op->kind, __ATOMIC_RELAXED);
  uint32_t flags = __atomic_load_n(&op->flags, __ATOMIC_RELAXED);
  return kind == HY__OP_RECV && !op->buf && (flags & HY__RECV_LATE) &&
         (flags & HY__RECV_OWNED);
}

/* Works a queue from its head until an op would block. */
static void drain(eport *e, fdent *ent, hy__op **head, hy__op **tail) {
  int reading = head == &ent->rq;
  while (*head) {
    int64_t res;
    if (reading && late_recv(*head)) {
      /* Read when handled (hy__port_recv_now); the read then says
       * whether the socket is empty, so no op behind it is tried now. */
      complete(e, q_pop(head, tail), HY__RES_READY);
      return;
    }
    int done = try_io(*head, ent, &res);
    if (reading)
      recv_hint(ent, *head, done, res);
    if (!done)
      return;
    hy__op *op = q_pop(head, tail);
    complete(e, op, res);
  }
}

static void on_event(eport *e, int fd, uint32_t ev) {
  if (fd < 0 || fd >= e->nfds || !e->fds[fd].reg)
    return;
  fdent *ent = &e->fds[fd];
  if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
    ent->rdhup = 1;
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    ent->drained = 0;
    drain(e, ent, &ent->rq, &ent->rq_tail);
  }
  if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
    drain(e, ent, &ent->wq, &ent->wq_tail);
  if (ent->polls) {
    int m = hy__lport_poll_mask(ev);
    hy__op **pp = &ent->polls;
    while (*pp) {
      hy__op *op = *pp;
      int got = m & ((int)op->flags | HY__POLL_ERR);
      if (got) {
        *pp = op->next;
        complete(e, op, got);
      } else {
        pp = &op->next;
      }
    }
  }
}

static void start_poll(eport *e, fdent *ent, hy__op *op, int probe) {
  struct pollfd pf;
  pf.fd = (int)op->fd;
  pf.events = (short)(((op->flags & HY__POLL_IN) ? POLLIN | POLLRDHUP : 0) |
                      ((op->flags & HY__POLL_OUT) ? POLLOUT : 0));
  pf.revents = 0;
  int r;
  while ((r = poll(&pf, 1, 0)) < 0 && errno == EINTR) {
  }
  if (r < 0) {
    complete(e, op, hy__lport_err(errno));
    return;
  }
  int got = hy__lport_poll_mask((uint16_t)pf.revents) &
            ((int)op->flags | HY__POLL_ERR);
  if (got) {
    complete(e, op, got);
    return;
  }
  if (probe && (r = reg_check(e, pf.fd)) < 0) {
    complete(e, op, r);
    return;
  }
  waits(e, op, W_POLL);
  op->next = ent->polls;
  ent->polls = op;
}

static void start_connect(eport *e, fdent *ent, hy__op *op, int probe) {
  int r = connect((int)op->fd, op->addr, (socklen_t)op->addrlen);
  if (r == 0) {
    complete(e, op, 0);
  } else if (errno == EINPROGRESS || errno == EINTR) {
    /* EINTR: the connect goes on in the background, as EINPROGRESS. */
    if (probe && (r = reg_check(e, (int)op->fd)) < 0) {
      complete(e, op, r);
      return;
    }
    waits(e, op, W_WQ);
    q_push(&ent->wq, &ent->wq_tail, op);
  } else {
    complete(e, op, hy__lport_err(errno));
  }
}

static int e_start(hy__port *p, hy__op *op) {
  eport *e = (eport *)p;
  if (op->kind == HY__OP_TIMEOUT && heap_reserve(e) < 0)
    return HY_ENOMEM;
  op->pdata[2] = W_NONE; /* started once it waits (see complete) */
  switch (op->kind) {
  case HY__OP_NOP:
    complete(e, op, 0);
    break;
  case HY__OP_TIMEOUT:
    if (op->deadline <= hy_now())
      complete(e, op, HY_ETIMEDOUT);
    else
      heap_push(e, op);
    arm_timer(e);
    break;
  default: {
    int fd = (int)op->fd, rc, fresh = 0;
    if (fd >= e->nfds || !e->fds[fd].reg) {
      rc = e_associate(p, fd); /* first use on this port */
      if (rc < 0) {
        complete(e, op, rc);
        break;
      }
      fresh = 1;
    }
    fdent *ent = &e->fds[fd];
    int probe = !fresh && idle_fd(ent); /* see reg_check */
    int64_t res;
    switch (op->kind) {
    case HY__OP_RECV:
      if (__atomic_load_n(&op->flags, __ATOMIC_RELAXED) & HY__RECV_OWNED) {
        /* Registered for sure; after a read that emptied the socket the
         * data to come brings an edge: no read is tried before it. */
        int done = 0;
        if (!ent->rq && !ent->drained) {
          done = try_io(op, ent, &res);
          recv_hint(ent, op, done, res);
        }
        if (done) {
          complete(e, op, res);
        } else {
          waits(e, op, W_RQ);
          q_push(&ent->rq, &ent->rq_tail, op);
        }
        break;
      }
      /* fall through */
    case HY__OP_ACCEPT:
    case HY__OP_RECVFROM:
      if (!ent->rq && try_io(op, ent, &res)) {
        if (op->kind == HY__OP_RECV)
          recv_hint(ent, op, 1, res);
        complete(e, op, res);
      } else if (probe && (rc = reg_check(e, fd)) < 0) {
        complete(e, op, rc);
      } else {
        waits(e, op, W_RQ);
        q_push(&ent->rq, &ent->rq_tail, op);
      }
      break;
    case HY__OP_SEND:
    case HY__OP_SENDTO:
      if (!ent->wq && try_io(op, ent, &res)) {
        complete(e, op, res);
      } else if (probe && (rc = reg_check(e, fd)) < 0) {
        complete(e, op, rc);
      } else {
        waits(e, op, W_WQ);
        q_push(&ent->wq, &ent->wq_tail, op);
      }
      break;
    case HY__OP_CONNECT:
      start_connect(e, ent, op, probe);
      break;
    case HY__OP_POLL:
      start_poll(e, ent, op, probe);
      break;
    default:
      complete(e, op, HY_EINVAL);
      break;
    }
  }
  }
  if (e->ready && atomic_load_explicit(&p->osh, memory_order_relaxed))
    hy__port_wake(p);
  return 0;
}

/* Takes op out of wherever it waits; the caller completes it. */
static void unlink_op(eport *e, hy__op *op) {
  int fd = (int)op->fd;
  fdent *ent = (fd >= 0 && fd < e->nfds) ? &e->fds[fd] : NULL;
  switch (op->pdata[2]) {
  case W_RQ:
    if (ent)
      q_remove(&ent->rq, &ent->rq_tail, op);
    break;
  case W_WQ:
    if (ent)
      q_remove(&ent->wq, &ent->wq_tail, op);
    break;
  case W_POLL:
    if (ent)
      q_remove(&ent->polls, NULL, op);
    break;
  case W_HEAP:
    heap_remove(e, op);
    break;
  default:
    break;
  }
}

static void do_cancels(eport *e) {
  hy__op *list = hy__lport_take_cancels(&e->base);
  while (list) {
    hy__op *next = (hy__op *)(uintptr_t)list->pdata[0];
    unlink_op(e, list);
    complete(e, list, HY_ECANCELED);
    list = next;
  }
}

/* epoll_wait for at most tmo ns (negative: no limit). */
static int ep_wait_sys(eport *e, struct epoll_event *evs, int64_t tmo) {
  int k;
  if (e->pwait2) {
    struct timespec ts, *tsp = NULL;
    if (tmo >= 0) {
      ts.tv_sec = tmo / 1000000000;
      ts.tv_nsec = tmo % 1000000000;
      tsp = &ts;
    }
    k = epoll_pwait2(e->ep, evs, NEVENTS, tsp, NULL);
    if (k >= 0 || errno != ENOSYS)
      return k < 0 ? (errno == EINTR ? 0 : -errno) : k;
    e->pwait2 = 0;
  }
  int ms = -1;
  if (tmo >= 0) {
    int64_t m = (tmo + 999999) / 1000000; /* never early: round up */
    ms = m > INT_MAX ? INT_MAX : (int)m;
  }
  k = epoll_wait(e->ep, evs, NEVENTS, ms);
  return k < 0 ? (errno == EINTR ? 0 : -errno) : k;
}

/* As ep_wait_sys, and notes when the kernel was last asked: a return
 * with room to spare in evs saw every ready fd (a full array may have
 * left some behind). */
static int ep_wait(eport *e, struct epoll_event *evs, int64_t tmo) {
  int k = ep_wait_sys(e, evs, tmo);
  e->looked = k >= 0 && k < NEVENTS ? hy_now() : 0;
  e->skips = 0;
  return k;
}

/* Did the kernel say what is ready a moment ago - less than LOOK_GAP ago,
 * and fewer than LOOK_SKIPS waits did not ask since?  A wait that need
 * not block then does not ask again (see e_wait); it counts as one that
 * did not. */
static int fresh_look(eport *e) {
  if (!e->looked || e->skips >= LOOK_SKIPS ||
      atomic_load_explicit(&e->base.osh, memory_order_relaxed) ||
      hy_now() - e->looked >= LOOK_GAP)
    return 0;
  e->skips++;
  return 1;
}

static void on_events(eport *e, const struct epoll_event *evs, int k) {
  for (int i = 0; i < k; i++) {
    if (evs[i].data.u64 == EV_WAKE) {
      /* the wake flag says whether it was one */
    } else if (evs[i].data.u64 == EV_TIMER) {
      uint64_t ticks;
      if (read(e->tfd, &ticks, sizeof ticks) < 0)
        e->tfd_armed = -1; /* re-arm: it may have fired early */
    } else {
      on_event(e, (int)evs[i].data.u64, evs[i].events);
    }
  }
}

static int e_wait(hy__port *p, hy__op **ops, int max, int64_t timeout) {
  eport *e = (eport *)p;
  int64_t deadline = timeout > 0 ? hy_now() + timeout : 0;
  int n = 0, woke = 0, more = 0, last = 0, err = 0;
  struct epoll_event evs[NEVENTS];
  for (int pass = 0;; pass++) {
    woke |= hy__lport_take_wake(p, timeout);
    do_cancels(e);
    fire_timers(e);
    n += take_ready(e, ops + n, max - n);
    if (n < max)
      n += hy__lport_take_posts(p, ops + n, max - n, &more);
    if (n == max || (pass > 0 && (n || woke || last)))
      break;
    /* Completions to hand out, a wake, or a wait that must not block: if
     * the kernel said what was ready a moment ago, it is not asked again
     * now (what came since, the next wait finds, or the block). */
    if (pass == 0 && (n || woke || timeout == 0) && fresh_look(e))
      break;
    int64_t tmo = 0;
    if (!n && !woke && timeout != 0) {
      int64_t now = hy_now();
      tmo = timeout < 0 ? -1 : deadline - now;
      if (timeout > 0 && tmo <= 0)
        tmo = 0;
      if (e->nheap) {
        int64_t d = e->heap[0]->deadline - now;
        if (d < 0)
          d = 0;
        if (tmo < 0 || d < tmo)
          tmo = d;
      }
    }
    int blocked = tmo != 0 && hy__lport_block_begin(p);
    if (tmo != 0 && !blocked)
      tmo = 0; /* a wake came: only look */
    int k = ep_wait(e, evs, tmo);
    if (blocked)
      hy__lport_block_end(p);
    if (k < 0) {
      err = hy__lport_err(k);
      last = 1;
      continue;
    }
    on_events(e, evs, k);
    if (tmo == 0 || (timeout > 0 && hy_now() >= deadline))
      last = 1;
  }
  arm_timer(e);
  if (atomic_load_explicit(&p->osh, memory_order_relaxed) &&
      (more || e->ready || __atomic_load_n(&p->post_head, __ATOMIC_RELAXED)))
    hy__port_wake(p); /* left behind: keep the os_handle readable */
  return n ? n : err;
}

static intptr_t e_os_handle(const hy__port *p) {
  return ((const eport *)p)->ep;
}

static void e_close(hy__port *p) {
  eport *e = (eport *)p;
  close(e->ep);
  close(e->tfd);
  hy__mem_free(e->fds);
  hy__mem_free(e->heap);
  hy__lport_fini(p);
  hy__mem_free(e);
}

/* The read of a late recv, from the owner (hy__port_recv_now): in order
 * with the fd's ops when no read waits here. */
int64_t hy__epoll_recv_now(hy__port *p, hy__op *op) {
  eport *e = (eport *)p;
  int fd = (int)op->fd;
  if (fd < 0 || fd >= e->nfds || !e->fds[fd].reg || op->buf)
    return HY_EINVAL;
  fdent *ent = &e->fds[fd];
  if (ent->rq)
    return HY_EAGAIN; /* a read waits: it comes first */
  int64_t res;
  int done = try_io(op, ent, &res);
  recv_hint(ent, op, done, res);
  return done ? res : HY_EAGAIN;
}

/* A send now, from the owner (hy__port_send_now): in order with the
 * fd's ops when none of its send-like ops waits here. */
int64_t hy__epoll_send_now(hy__port *p, int fd, const void *buf, size_t len,
                           uint32_t flags) {
  eport *e = (eport *)p;
  if (fd < e->nfds && e->fds[fd].wq)
    return HY_EAGAIN;
  if (len > MAX_IO_LEN)
    len = MAX_IO_LEN;
  ssize_t r;
  while ((r = send(fd, buf, len,
                   (int)flags | MSG_DONTWAIT | MSG_NOSIGNAL)) < 0 &&
         errno == EINTR) {
  }
  if (r >= 0)
    return r;
  return errno == EAGAIN || errno == EWOULDBLOCK ? HY_EAGAIN
                                                 : hy__lport_err(errno);
}

static const hy__port_vt epoll_vt = {e_close, e_associate, e_forget,
                                     e_start, e_wait,      e_os_handle};

int hy__epoll_open(hy__port **out) {
  eport *e = hy__mem_calloc(1, sizeof *e);
  if (!e)
    return HY_ENOMEM;
  e->ep = -1;
  e->tfd = -1;
  int rc = hy__lport_init(&e->base, &epoll_vt, HY__BACKEND_EPOLL, "epoll");
  if (rc < 0) {
    hy__mem_free(e);
    return rc;
  }
  e->ep = epoll_create1(EPOLL_CLOEXEC);
  if (e->ep < 0) {
    rc = hy__lport_err(errno);
    hy__lport_fini(&e->base);
    hy__mem_free(e);
    return rc;
  }
  e->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  struct epoll_event ev, tev;
  memset(&ev, 0, sizeof ev);
  /* The eventfd edge-triggered and never read: every write is an edge
   * (one syscall per wake, none to reset it), and its count only grows. */
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u64 = EV_WAKE;
  tev = ev;
  tev.events = EPOLLIN; /* read when it fires */
  tev.data.u64 = EV_TIMER;
  if (e->tfd < 0 || epoll_ctl(e->ep, EPOLL_CTL_ADD, e->base.efd, &ev) < 0 ||
      epoll_ctl(e->ep, EPOLL_CTL_ADD, e->tfd, &tev) < 0) {
    rc = hy__lport_err(errno);
    if (e->tfd >= 0)
      close(e->tfd);
    close(e->ep);
    hy__lport_fini(&e->base);
    hy__mem_free(e);
    return rc;
  }
  e->pwait2 = 1;
  *out = &e->base;
  return 0;
}
