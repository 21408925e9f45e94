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

/* Whether looking before blocking pays (see HY__LOOK_TRIAL below). */
typedef struct hy__look_judge {
  int pays;          /* 1: waits look (a verdict, or the trial with looks) */
  int verdict;       /* the last verdict */
  int phase;         /* HY__LOOK_HOLD, _TRY_ON or _TRY_OFF */
  int64_t from, end; /* the phase began at, and ends at (end 0: not begun) */
  int64_t hold;      /* how long the next verdict holds */
  uint64_t done;     /* completions of I/O handed out in this phase */
  uint64_t on_done;  /* ... in the trial with looks */
  int64_t on_len;    /* that trial's length */
} hy__look_judge;

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
  hy__look_judge judge; /* owner only: does looking pay (see below) */
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

/* Does the look pay?  Looking burns the CPU it waits on, and what it
 * buys is time: a completion is handled a wake-up sooner.  That is worth
 * it when the worker's peers wait for its answers (a request/response
 * conversation over a socket): each answer sent a
 * wake-up sooner brings the next request sooner, and the worker completes
 * more per second.  When the work comes at its own pace (clients sending
 * at a rate), looking does not bring more of it: at 50,000 messages/s on
 * 64 connections the ~20 us gaps fell inside the look and the worker's
 * CPU per message rose by half, for nothing; a budget for the look (a
 * share of the time worked) halved that cost, but the look it left was too
 * short for one connection's request/response (whose requests come ~20 us
 * after the answer), which then fell below not looking at all.
 *
 * So the owner asks: it runs a trial of HY__LOOK_TRIAL with looks, then
 * one without, and compares the completions of I/O per second it handed
 * out (posts are not counted, see hy__look_count).  Looking pays if the
 * trial with looks did more than HY__LOOK_GAIN eighths (9/8) as many per
 * second, and at least HY__LOOK_MIN completions; that verdict holds
 * for a while (from HY__LOOK_HOLD_MIN, doubled at each trial that gives
 * the same verdict, up to HY__LOOK_HOLD_MAX), then the owner asks again.
 * Paced work thus pays for looks only during a trial with looks (about 1%
 * of the time), an idle worker never looks (nothing comes: no gain), and
 * a conversation gets its looks back within HY__LOOK_HOLD_MAX.  Phases end
 * only at waits that would block, where the clock is read anyway, so a
 * worker that never blocks spends nothing here; rates, not counts, are
 * compared, since a phase may end late.
 *
 * The gain asked for: 9/8.  Peers that are bound by their own CPU gain
 * less than a conversation does, but still gain: 50 clients on one CPU
 * opening, using and resetting connections (bench/run net, connect-rate)
 * pay an IPI each time they wake a sleeping worker, and with looks they
 * made 12% more connections per second (median of 5 paired rounds; 35,000
 * fewer IPIs in 3 s), which a gain of 5/4 turned down.  Paced work's
 * trials stay within a few percent of each other, and its CPU per message
 * was the same with either gain (4 paired rounds). */
#define HY__LOOK_TRIAL HY_MS(4)
#define HY__LOOK_GAIN 9 /* eighths */
#define HY__LOOK_MIN 32
#define HY__LOOK_HOLD_MIN HY_MS(32)
#define HY__LOOK_HOLD_MAX HY_MS(512)

enum { HY__LOOK_HOLD = 0, HY__LOOK_TRY_ON = 1, HY__LOOK_TRY_OFF = 2 };

/* n completions of I/O handed out by a wait.  Posts are not counted: a
 * worker's own (one per batch, as the callback server's) would count
 * more with looks, which make batches smaller, and made paced work look
 * a third faster with looks than without. */
static inline void hy__look_count(hy__look_judge *j, int n) {
  if (n > 0)
    j->done += (uint64_t)n;
}

/* At a wait that would block, at time now: ends the phase if it is over
 * (and judges after the trial without looks).  A zeroed judge starts
 * with the trial with looks. */
static inline void hy__look_step(hy__look_judge *j, int64_t now) {
  if (j->end && now < j->end)
    return;
  if (j->phase == HY__LOOK_TRY_ON && j->end) {
    j->on_done = j->done;
    j->on_len = now - j->from;
    j->phase = HY__LOOK_TRY_OFF;
    j->pays = 0;
    j->end = now + HY__LOOK_TRIAL;
  } else if (j->phase == HY__LOOK_TRY_OFF) {
    /* The rates compared: on_done / on_len against done / len. */
    int64_t len = now - j->from;
    int pays = j->on_done >= HY__LOOK_MIN && j->on_len > 0 && len > 0 &&
               (double)j->on_done * (double)len * 8 >
                   (double)j->done * (double)j->on_len * HY__LOOK_GAIN;
    if (j->hold && pays == j->verdict)
      j->hold = j->hold * 2 < HY__LOOK_HOLD_MAX ? j->hold * 2
                                                : HY__LOOK_HOLD_MAX;
    else
      j->hold = HY__LOOK_HOLD_MIN;
    j->verdict = j->pays = pays;
    j->phase = HY__LOOK_HOLD;
    j->end = now + j->hold;
  } else {
    /* A verdict ran out (or the judge begins): the trial with looks. */
    j->phase = HY__LOOK_TRY_ON;
    j->pays = 1;
    j->end = now + HY__LOOK_TRIAL;
  }
  j->from = now;
  j->done = 0;
}

/* Until when the owner, about to block for tmo ns (negative: no limit) at
 * time now, looks first; 0: it does not.  Only a port whose last block was
 * short (p->spin) and whose judge says looking pays looks. */
static inline int64_t hy__lport_spin_until(hy__port *p, int64_t tmo,
                                           int64_t now) {
  hy__look_step(&p->judge, now);
  if (!p->spin || !p->judge.pays || tmo == 0)
    return 0;
  p->spins++;
  return now + (tmo > 0 && tmo < HY__SPIN_NS ? tmo : HY__SPIN_NS);
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
