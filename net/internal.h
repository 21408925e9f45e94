/* net/internal.h - what the net layer's files share: the socket object
 * every TCP/UDP handle is built on, and awaiting port operations on it.
 *
 * hy__sock is the common core of hy_listener_t, hy_conn_t and hy_udp_t:
 *   - fd and the ports it is associated with.  An operation is started on
 *     the port of the worker the calling task runs on; tasks move between
 *     workers, so a socket is associated lazily with every port it is used
 *     on (assoc bitmap) and forgotten on each of them - by that port's
 *     owner thread, through a posted packet - before the fd is closed.
 *   - refs: the user's reference (dropped by close) plus one per call in
 *     progress, per background op (poll, hy_io_t).  The last one out
 *     forgets the fd on its ports, closes it, and frees the object: so a
 *     pending operation never completes into freed memory and an fd number
 *     is never reused while a port may still know it.
 *   - inflight: every operation started on a port and not yet completed,
 *     each with the port it was started on, so close can cancel them all.
 *     An op is started and linked under s->lock after checking `closed`,
 *     so close (which sets `closed` under the lock, then cancels what is
 *     linked) can never miss one.
 *   - readq: select waiters for "readable", served by one POLL op.
 * Lock order: s->lock is a leaf, except that hy__port_start/cancel are
 * called under it (they take only the port's internal locks).
 */
#ifndef HYDRA_NET_INTERNAL_H
#define HYDRA_NET_INTERNAL_H

#include "hydra/net.h"
#include "net/sock.h"
#include "runtime/internal.h"

typedef struct hy__sock hy__sock;

/* One port operation on a socket, owned by its starter. */
typedef struct hy__nop {
  hy__op op;
  hy__completion c;        /* op.data points here */
  hy__sock *s;
  hy__port *port;          /* where it was started */
  struct hy__nop *next, *prev; /* s->inflight, under s->lock */
  int linked;
  int done;                /* completed (under s->lock) */
  hy__wait *w;             /* a task waiting for it (under s->lock) */
  void (*on_done)(struct hy__nop *n); /* background ops; under no lock */
} hy__nop;

/* A packet asking a port the fd was associated with to forget it, on the
 * port's own thread, at the socket's end (core.c, last_ref). */
typedef struct hy__fpkt {
  hy__op op;
  hy__completion c;
  hy__sock *s;
  hy__port *port;
  struct hy__fpkt *next;
} hy__fpkt;

struct hy__sock {
  hy_runtime_t *rt;
  intptr_t fd;
  int kind;                /* HY_NET_LISTENER / CONN / UDP */
  hy__lock_t lock;
  int refs;
  int closed;
  int reset_on_close;
  int reading, writing;    /* a read / write call in progress */
  hy__nop *inflight;
  uint64_t assoc;          /* ports (worker indices < 64) fd is known to */
  uint64_t *assoc_more;    /* for workers >= 64 */
  hy__waitq readq;         /* select: readable */
  hy__nop poll;            /* the POLL op serving readq */
  int poll_active;
  hy_net_error_t err;      /* last failure */
  int forgets;             /* pending remote forgets at the end */
  /* Forget packets made ahead, at least one per association (the first is
   * fpk0), so that the end needs no memory. */
  hy__fpkt fpk0;
  hy__fpkt *fpkts;
  int nfpkts, nassoc;
};

/* Sets up s (refs = 1, the user's) around an open fd. */
void hy__sock_init(hy__sock *s, hy_runtime_t *rt, intptr_t fd, int kind);

/* Takes a call reference: HY_ECLOSED once closed.  Release with unref. */
int hy__sock_ref(hy__sock *s);
void hy__sock_unref(hy__sock *s);

/* Marks s closed, cancels everything in flight, fails select waiters with
 * HY_ECLOSED, and drops the user's reference.  HY_ECLOSED if it already
 * was.  The object is freed by the last reference. */
int hy__sock_close(hy__sock *s, int reset);

/* Records a failure on s. */
void hy__sock_error(hy__sock *s, const char *op, int code, int os,
                    const hy_addr_t *addr);

/* Starts n->op on the calling task's port and parks until it completes or
 * the deadline/cancel; in the latter case cancels it and waits for its
 * completion.  pre: a call reference is held; called from a task.
 * Returns op.res (>= 0 or HY_E*), HY_ETIMEDOUT, HY_ECANCELED (task
 * cancelled, or s closed meanwhile), HY_EINVAL (not in a task). */
int hy__sock_await(hy__sock *s, hy__nop *n, int64_t deadline);

/* Starts n->op in the background on the calling thread's port (a worker
 * thread: task or callback); n->on_done runs on that worker when it
 * completes.  Takes a reference that is dropped after on_done.  Returns 0,
 * HY_ECLOSED, or the port's error (on_done will not run then). */
int hy__sock_start(hy__sock *s, hy__nop *n);
int hy__sock_start_locked(hy__sock *s, hy__nop *n); /* pre: s->lock */

int hy__in_worker(hy_runtime_t *rt);

/* The core of each public handle (the hy__sock is its first member, so the
 * last reference frees the handle with it). */
hy__sock *hy__conn_sock(hy_conn_t *c);
hy__sock *hy__listener_sock(hy_listener_t *l);
hy__sock *hy__udp_sock(hy_udp_t *u);

/* The OS socket of a server connection (net/server.c), for checks that
 * look at its options. */
intptr_t hy__sconn_fd(hy_sconn_t *c);

/* Awaitable "readable" for select, on any socket. */
hy_arm_t hy__arm_readable(hy__sock *s);

#endif
