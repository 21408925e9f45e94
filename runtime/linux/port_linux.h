/* runtime/linux/port_linux.h - what the two Linux port backends share.
 *
 * hy__port_* (runtime/port.h) is implemented once, in port_common.c, over a
 * small table of backend functions; port_uring.c and port_epoll.c each
 * fill one in.  The common part owns everything other threads touch:
 *
 *  - the wake: an eventfd and a flag.  hy__port_wake sets the flag and, if
 *    it was clear and the owner blocks in the kernel (or a foreign loop
 *    polls the os_handle), writes the eventfd: async-signal-safe steps
 *    (atomics and write).  The owner consumes the flag (hy__lport_take_wake)
 *    before it looks at the posts and cancels, and before it blocks it
 *    publishes `blocking` and looks at the flag once more (seq_cst both
 *    sides, as in Dekker's algorithm): either the waker sees `blocking` and
 *    writes, or the owner sees the flag and does not block.  The eventfd is only
 *    ever written (each write is an edge for the backend's poll of it); an
 *    edge seen with the flag already clear is stale and ignored.
 *  - posts: a FIFO of user packets, linked through op->next.
 *  - cancels: a list of ops whose cancel was asked for by any thread,
 *    linked through op->pdata[0]; the owner acts on it in its next wait.
 *  - every op's state (pstate, pflags), under one spinlock, so that a
 *    cancel racing with the op's completion sees either "in flight" (and
 *    the owner still finds the request) or "dequeued" (HY_ENOENT).
 *
 * Everything else - rings, epoll sets, per-fd queues, timers - belongs to
 * the owner thread alone and needs no lock.
 */
#ifndef HYDRA_RUNTIME_LINUX_PORT_LINUX_H
#define HYDRA_RUNTIME_LINUX_PORT_LINUX_H

#include <stdatomic.h>
#include <stdint.h>

#include "hydra/runtime.h"
#include "runtime/port.h"
#include "runtime/sys.h"
#include "runtime/wait.h"

/* op->pstate */
enum {
  HY__PS_IDLE = 0,     /* not started, or dequeued */
  HY__PS_INFLIGHT = 1, /* started, not completed */
  HY__PS_DONE = 2      /* completed (res set), waiting to be dequeued */
};

/* op->pflags: the low byte is common, the rest belongs to the backend. */
enum {
  HY__PF_CANCEL = 1, /* a cancel was asked for */
  HY__PF_CLIST = 2   /* linked on the port's cancel list */
};

typedef struct hy__port_vt {
  void (*close)(hy__port *p);
  int (*associate)(hy__port *p, int fd);
  void (*forget)(hy__port *p, int fd);
  int (*start)(hy__port *p, hy__op *op);
  int (*wait)(hy__port *p, hy__op **ops, int max, int64_t timeout_ns);
  intptr_t (*os_handle)(const hy__port *p);
} hy__port_vt;

struct hy__port {
  const hy__port_vt *vt;
  const char *name;
  int backend;
  int efd;            /* the wake eventfd */
  atomic_int pending; /* 1: a wake is owed to the owner */
  atomic_int osh;     /* 1: os_handle was handed out; keep it readable */
  atomic_int blocking; /* 1: the owner blocks (or is about to) in the kernel */
  hy__lock_t lock;    /* op states, posts, the cancel list */
  hy__op *post_head, *post_tail;
  hy__op *clist;      /* cancel requests, linked through pdata[0] */
  int spin;           /* owner only: look before blocking (see below) */
  uint64_t spins;     /* owner only: waits that looked before blocking */
  int64_t spin_credit; /* owner only: ns it may still spend looking */
  int64_t worked_from; /* owner only: when its last blocking wait returned
                          (0: counted already) */
};

/* Sets up the common part (the eventfd).  Returns 0 or HY_E*. */
int hy__lport_init(hy__port *p, const hy__port_vt *vt, int backend,
                   const char *name);
void hy__lport_fini(hy__port *p);

/* Consumes a pending wake: returns 1 if there was one.  A wait that does
 * not block leaves it (see hy__port_wake in runtime/port.h), unless the
 * os_handle is out. */
static inline int hy__lport_take_wake(hy__port *p, int64_t timeout) {
  if (timeout == 0 && !atomic_load_explicit(&p->osh, memory_order_relaxed))
    return 0;
  return atomic_exchange(&p->pending, 0);
}

/* Before the owner blocks: returns 0 (and does not block) if a wake is
 * pending; otherwise 1, and a wake from now on writes the eventfd. */
static inline int hy__lport_block_begin(hy__port *p) {
  atomic_store(&p->blocking, 1);
  if (atomic_load(&p->pending)) {
    atomic_store_explicit(&p->blocking, 0, memory_order_relaxed);
    return 0;
  }
  return 1;
}

static inline void hy__lport_block_end(hy__port *p) {
  atomic_store_explicit(&p->blocking, 0, memory_order_relaxed);
}

/* Looking before blocking.  Waking a thread that blocks in the kernel
 * costs whoever completes its op - the peer whose connect or send lands on
 * a socket of this port, another worker's post: an IPI to the sleeper's
 * CPU, in a virtual machine an exit, several microseconds, more than the
 * completion takes to handle - and the sleeper pays for going to sleep and
 * waking up.  So when the owner's last block was short (it blocked for
 * less than HY__SPIN_WINDOW: completions come close together), a wait
 * that would block first looks for up to HY__SPIN_NS without blocking
 * (the CQ ring in user space on io_uring; the epoll port does not look:
 * there each try is a system call), and blocks only if nothing came.  A block longer than the window
 * (sparse traffic, or none) turns the look off until a short block again,
 * so an idle port never spins, and one with sparse traffic rarely.  A
 * wake, post or cancel request ends the look (hy__lport_news). */
#define HY__SPIN_NS HY_US(25)
#define HY__SPIN_WINDOW HY_US(200)

/* The look's budget.  Looking burns the CPU it waits on: with completions
 * coming every ~20 us (50,000 messages/s on 64 connections) every gap
 * fell inside the look, and the worker's CPU per message doubled.  So
 * the owner may spend looking at most 1/HY__SPIN_SHARE of the time it
 * spent working (from the return of a wait that blocked or looked to the
 * next one that would), kept as a credit of at most HY__SPIN_NS; a look
 * shorter than HY__SPIN_MIN is not worth starting. */
#define HY__SPIN_SHARE 4
#define HY__SPIN_MIN HY_US(1)

/* Until when the owner, about to block for tmo ns (negative: no limit),
 * looks first; 0: it does not.  The whole look is charged to the credit
 * now; hy__lport_spun gives back what a look that ended early did not
 * use. */
static inline int64_t hy__lport_spin_until(hy__port *p, int64_t tmo) {
  if (!p->spin || tmo == 0)
    return 0;
  int64_t now = hy_now(), c = p->spin_credit;
  if (p->worked_from && now > p->worked_from)
    c += (now - p->worked_from) / HY__SPIN_SHARE;
  p->worked_from = 0;
  if (c > HY__SPIN_NS)
    c = HY__SPIN_NS;
  if (c < HY__SPIN_MIN) {
    p->spin_credit = c;
    return 0;
  }
  int64_t len = tmo > 0 && tmo < c ? tmo : c;
  p->spin_credit = c - len;
  p->spins++;
  return now + len;
}

/* A look meant to last until 'until' ended at 'now'. */
static inline void hy__lport_spun(hy__port *p, int64_t until, int64_t now) {
  if (until > now)
    p->spin_credit += until - now;
}

/* A wait that looked or blocked returns: the owner works from now. */
static inline void hy__lport_work_begins(hy__port *p) {
  p->worked_from = hy_now();
}

/* Is there a wake, a post or a cancel request for the owner? */
static inline int hy__lport_news(hy__port *p) {
  return atomic_load_explicit(&p->pending, memory_order_relaxed) ||
         __atomic_load_n(&p->post_head, __ATOMIC_RELAXED) != NULL ||
         __atomic_load_n(&p->clist, __ATOMIC_RELAXED) != NULL;
}

/* After a block that began at t0: was it short enough to look next time? */
static inline void hy__lport_blocked(hy__port *p, int64_t t0) {
  p->spin = hy_now() - t0 < HY__SPIN_WINDOW;
}

/* Takes the whole cancel list (ops still in flight, each with PF_CANCEL
 * set and PF_CLIST cleared), linked through pdata[0]. */
hy__op *hy__lport_take_cancels(hy__port *p);

/* Moves up to max posted ops into ops; returns how many.  *more is set to
 * 1 if posts remain. */
int hy__lport_take_posts(hy__port *p, hy__op **ops, int max, int *more);

/* Marks op started (under the lock). */
void hy__lport_started(hy__port *p, hy__op *op);

/* With p->lock held: op completed with res; unlinks it from the cancel
 * list if it is there, and marks it `state` (DONE if it waits in a backend
 * list, IDLE if it is handed out right away).  A cancelled op's -EINTR or
 * HY_ECANCELED result becomes HY_ECANCELED. */
void hy__lport_finish_locked(hy__port *p, hy__op *op, int64_t res, int state);

/* Marks ops dequeued (IDLE), one lock for the batch. */
void hy__lport_dequeued(hy__port *p, hy__op **ops, int n);

/* -errno or errno to HY_E*, for results of the kernel. */
int hy__lport_err(int e);

/* poll(2) revents to HY__POLL_* (HUP and ERR become HY__POLL_ERR). */
int hy__lport_poll_mask(uint32_t revents);

/* The backends' openers.  hy__uring_open returns HY_ENOSYS when io_uring
 * cannot be set up here (or lacks what the port needs). */
int hy__uring_open(hy__port **out, hy__port *share);
int hy__epoll_open(hy__port **out);
/* hy__port_send_now on an epoll port. */
int64_t hy__epoll_send_now(hy__port *p, int fd, const void *buf, size_t len,
                           uint32_t flags);
/* hy__port_recv_now on an epoll port. */
int64_t hy__epoll_recv_now(hy__port *p, hy__op *op);

#endif
