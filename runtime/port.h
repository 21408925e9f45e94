/* runtime/port.h - the completion port: Hydra's one contract with the OS's
 * I/O machinery, in the shape of an IOCP.
 *
 * An operation (hy__op) is started on a port and, whatever happens to it -
 * success, failure, cancellation - exactly one completion for it is later
 * dequeued from that same port with hy__port_wait.  Until then the op's
 * memory belongs to the port; after it, to the starter again.  That single
 * rule is what lets close and shutdown free memory safely: cancel, then wait
 * for the completion, then free.
 *
 * Backends, one file each: runtime/linux/port_uring.c (io_uring, liburing),
 * runtime/linux/port_epoll.c (readiness turned into completions: the backend
 * performs the recv/send/accept itself when the fd is ready),
 * runtime/win/port_iocp.c.  Every worker owns one port (on Windows they may
 * all share one IOCP underneath); the embedded host thread owns one too.
 *
 * Threads: hy__port_start, hy__port_wait and hy__port_associate are called
 * by the port's owner thread only.  hy__port_post, hy__port_wake and
 * hy__port_cancel may be called from any thread.
 */
#ifndef HYDRA_RUNTIME_PORT_H
#define HYDRA_RUNTIME_PORT_H

#include <stddef.h>
#include <stdint.h>

typedef struct hy__port hy__port;

enum hy__op_kind {
  HY__OP_NOP = 0,   /* completes at once with res 0 */
  HY__OP_POST,      /* a user packet from hy__port_post (never started) */
  HY__OP_ACCEPT,    /* fd: listening socket; res: the new socket, or HY_E*;
                       addr/addrlen (in/out): the peer, if addr != NULL */
  HY__OP_CONNECT,   /* fd: socket; addr/addrlen: the target; res 0 or HY_E* */
  HY__OP_RECV,      /* fd, buf, len, flags; res: bytes (0 = EOF) or HY_E*;
                       addr NULL; buf NULL: a pooled receive, addr its
                       hy__bufsrc */
  HY__OP_SEND,      /* fd, buf, len, flags; res: bytes or HY_E* */
  HY__OP_RECVFROM,  /* as RECV; addr/addrlen (out): the source */
  HY__OP_SENDTO,    /* as SEND; addr/addrlen (in): the destination */
  HY__OP_POLL,      /* fd; flags: HY__POLL_IN/OUT; res: the ready mask */
  HY__OP_TIMEOUT,   /* deadline (monotonic ns); res HY_ETIMEDOUT when due */
  HY__OP_KIND_COUNT
};

enum { HY__POLL_IN = 1, HY__POLL_OUT = 2, HY__POLL_ERR = 4 };

/* A pooled receive: an HY__OP_RECV started with buf NULL and addr pointing
 * to a hy__bufsrc takes a buffer of src->size bytes from it only once data
 * is there, so a connection that waits holds no buffer.  On completion
 * with res > 0, op->buf is that buffer, and the receiver gives it back
 * with src->put; with any other res op->buf is NULL (the port gave back
 * what it took).  A pooled receive may also complete with HY_EAGAIN (the
 * readiness it saw was gone): start it again.  The port calls get and put
 * on its owner thread only, inside hy__port_start and hy__port_wait.
 * A source's buffers are hy__mem allocations of size bytes, and any
 * receive of that size may get any of them: the port may keep some lent
 * in the kernel (io_uring provided buffers, refilled from the source of
 * the receive that took one) and frees those with hy__mem_free when it
 * closes; a source frees what it gets back with hy__mem_free too. */
/* In the flags of an HY__OP_ACCEPT: multishot where the backend has it
 * (io_uring with IORING_ACCEPT_MULTISHOT): the op stays in flight and
 * completes once per connection accepted, each completion but the last
 * with HY__OP_MORE set in op->flags by the port (the op is still in
 * flight: do not start it again; cancel ends it); the last one, without
 * HY__OP_MORE, comes with an error (HY_ECANCELED after a cancel) or a
 * socket.  addr must be NULL (the peer is not reported).  Elsewhere the op
 * is a plain accept: one completion, HY__OP_MORE never set.  The port
 * hands over at most one completion of the op per hy__port_wait. */
#define HY__ACCEPT_MULTI 0x1u
#define HY__OP_MORE 0x40000000u

/* In the flags of an HY__OP_RECV: the starter closes fd only after
 * hy__port_forget on this port (an fd owned by one port for life), so the
 * port may skip the checks it makes for fds that other ports close, and
 * after a read that emptied the socket wait for readiness at once instead
 * of trying the read first (epoll: one system call less per message). */
#define HY__RECV_OWNED 0x80000000u

/* In the flags of a pooled HY__OP_RECV flagged HY__RECV_OWNED, on the epoll
 * backend only (the others do not know the flag): the port may complete
 * the op without reading, with res HY__RES_READY, once data (or the end,
 * or an error) is there; the starter then reads with hy__port_recv_now
 * just before it uses the data.  A wait that finds many sockets ready
 * then does not read each into a buffer of its own, held until its
 * completion is handled: each read goes into the buffer the one before
 * gave back, still in the cache. */
#define HY__RECV_LATE 0x20000000u
#define HY__RES_READY INT64_MIN

/* In the flags of a pooled HY__OP_RECV: multishot where the backend has it
 * (io_uring with multishot receive on a ring of provided buffers, Linux >=
 * 6.0): the op stays in flight and completes once per chunk of data that
 * arrives, in order, each such completion with res > 0, op->buf the data's
 * buffer (the receiver's, as for any pooled receive) and HY__OP_MORE set
 * in op->flags by the port: the op is still in flight, do not start it
 * again.  The last completion, without HY__OP_MORE, has no buffer and res
 * 0 (the end of the stream), HY_ECANCELED (after a cancel), HY_EAGAIN (the
 * port or the kernel ended it - its buffers ran out, or chunks came faster
 * than they were handed over and the port stopped it so that the peer is
 * throttled by TCP's window again: start it again to read on) or another
 * HY_E*.  No byte is lost or reordered across those ends.  The port hands
 * over at most one completion of the op per hy__port_wait, as for a
 * multishot accept.  Elsewhere (epoll, IOCP, older kernels) the flag is
 * ignored: one completion, HY__OP_MORE never set. */
#define HY__RECV_MULTI 0x10000000u

typedef struct hy__bufsrc hy__bufsrc;
struct hy__bufsrc {
  void *(*get)(hy__bufsrc *src); /* a buffer of size bytes, or NULL */
  void (*put)(hy__bufsrc *src, void *buf);
  size_t size;
  size_t slack; /* bytes each buffer has past size (0: none), which the
                   port may write into (epoll: the byte more of a read
                   that fills the buffer, see port_epoll.c) */
};

typedef struct hy__op hy__op;
struct hy__op {
  uint8_t kind;      /* enum hy__op_kind */
  uint8_t pstate;    /* backend-private state; zero before start */
  uint16_t pflags;   /* backend-private */
  uint32_t flags;    /* MSG_* for recv/send, HY__POLL_* for poll */
  intptr_t fd;       /* socket or handle */
  void *buf;
  size_t len;
  void *addr;        /* struct sockaddr * */
  uint32_t addrlen;  /* in: size of *addr; out: the length filled in */
  int64_t deadline;  /* HY__OP_TIMEOUT */
  int64_t res;       /* set by the port before the op is dequeued */
  void *data;        /* the starter's cookie: untouched by the port */
  hy__op *next;      /* port-private link while in flight */
  uint64_t pdata[4]; /* backend-private storage (OVERLAPPED lives outside) */
};

enum hy__backend {
  HY__BACKEND_AUTO = 0,
  HY__BACKEND_URING,
  HY__BACKEND_EPOLL,
  HY__BACKEND_IOCP
};

/* Opens a port of the given backend (AUTO: the best this machine has:
 * io_uring, else epoll; IOCP on Windows).  `share` is NULL or another port
 * of the same runtime, which IOCP uses to share one kernel port.
 * Returns 0, HY_ENOSYS (backend not available here: the caller may fall
 * back), HY_ENOMEM or another translated OS error. */
int hy__port_open(hy__port **out, int backend, hy__port *share);
/* The same, told how many threads will wait on the ports that share one
 * kernel port (the runtime's worker count; 0: not known): IOCP makes it
 * the completion port's concurrency value; the Linux backends, whose ports
 * are one per worker, have no use for it. */
int hy__port_open_for(hy__port **out, int backend, hy__port *share,
                      int threads);

/* pre: no op in flight on p (all completions dequeued). */
void hy__port_close(hy__port *p);

/* "uring", "epoll" or "iocp". */
const char *hy__port_backend_name(const hy__port *p);
int hy__port_backend(const hy__port *p);

/* Prepares a socket for operations on this port (non-blocking mode, epoll
 * registration, IOCP association).  Call once per fd before starting ops;
 * hy__port_forget before closing it.  Returns 0 or HY_E*.
 * hy__port_forget also cancels the ops still in flight on fd: each still
 * completes, with HY_ECANCELED unless it had completed (io_uring holds a
 * reference to the file, so closing the fd alone would not end them).
 *
 * Order: ops of one direction on one fd (two recvs, two sends) may
 * complete in any order on io_uring (epoll keeps start order): keep at
 * most one recv-like and one send-like op in flight per stream socket. */
int hy__port_associate(hy__port *p, intptr_t fd);
void hy__port_forget(hy__port *p, intptr_t fd);

/* As hy__port_associate, for a socket from an HY__OP_ACCEPT of a port
 * (which makes it non-blocking): io_uring has nothing else to prepare,
 * and this saves the system call that would check the mode. */
static inline int hy__port_associate_accepted(hy__port *p, intptr_t fd) {
  if (fd >= 0 && hy__port_backend(p) == HY__BACKEND_URING)
    return 0;
  return hy__port_associate(p, fd);
}

/* As hy__port_forget, for an fd with no op in flight on p (every
 * completion dequeued): io_uring then has nothing to cancel, and this
 * saves the system call that would submit the cancel at once. */
static inline void hy__port_forget_idle(hy__port *p, intptr_t fd) {
  if (hy__port_backend(p) != HY__BACKEND_URING)
    hy__port_forget(p, fd);
}

/* Starts op.  Returns 0: the completion will be dequeued from this port
 * later (also for an op that fails or succeeds at once, such as one on a
 * closed fd, which completes with HY_EBADF).  Returns HY_E*: the op was
 * not started and no completion will come (HY_EINVAL: bad kind or
 * missing address; HY_EBADF: fd out of range; HY_ENOMEM; HY_EAGAIN: the
 * kernel refuses more work for now).  An op's memory (and its buffer and
 * address) must stay put until its completion is dequeued. */
int hy__port_start(hy__port *p, hy__op *op);

/* Has op, started on p and not yet dequeued, completed already, inside
 * hy__port_start (the epoll port performs an op whose fd is ready at
 * once)?  Then op->res is final and the port is done with op's buffer
 * and address: the starter may reuse them now, though the completion is
 * still dequeued later, as for any op.  Owner thread only.  0: not
 * completed, or the backend does not say (io_uring, IOCP). */
int hy__port_done_early(const hy__port *p, const hy__op *op);

/* Sends from buf on the stream socket fd (associated with p) now, without
 * an op, where the backend can do that in order with its ops: epoll,
 * when no send-like op of fd waits on p.  flags: MSG_* as for
 * HY__OP_SEND.  Returns the bytes sent (fewer than len when the socket
 * took only so many), HY_EAGAIN (nothing sent: the socket is full, or an
 * op waits - start an HY__OP_SEND instead), HY_ENOSYS (the backend sends
 * through ops only: io_uring, IOCP) or another HY_E* (the socket's
 * error).  Owner thread only. */
int64_t hy__port_send_now(hy__port *p, intptr_t fd, const void *buf,
                          size_t len, uint32_t flags);

/* The read of op, a pooled HY__OP_RECV that completed with HY__RES_READY
 * (dequeued, not started again): done now, as the port would have done it
 * - op->buf is set as for a completion, and the result returned is the
 * one the completion would have had (bytes, 0 at the end, HY_EAGAIN: the
 * data was gone, start the op again; or HY_E*).  Owner thread only. */
int64_t hy__port_recv_now(hy__port *p, hy__op *op);

/* Asks for op (started on p, not yet dequeued) to be cancelled.  Its one
 * completion still arrives, with res HY_ECANCELED unless it had already
 * completed.  Any thread.  Returns 0, or HY_ENOENT if op is not in flight. */
int hy__port_cancel(hy__port *p, hy__op *op);

/* Queues op as a user packet (kind HY__OP_POST, res untouched): dequeued
 * once from p.  Any thread.  Returns 0 or HY_ENOMEM. */
int hy__port_post(hy__port *p, hy__op *op);

/* Makes a current or the next hy__port_wait on p return, possibly with no
 * completion.  Wakes coalesce.  Any thread, async-signal-safe.
 * A wait with timeout 0 leaves a pending wake for the next wait that would
 * block (a non-blocking poll must not eat the wake meant to end a later
 * sleep) - except once os_handle has been handed out: then the foreign
 * loop's poll of the handle is the sleep, and any wait takes the wake. */
void hy__port_wake(hy__port *p);

/* Dequeues up to max completions into ops.  Blocks up to timeout_ns
 * (0: do not block; negative: no limit) while there are none.  Returns the
 * count (0 on timeout or wake) or HY_E*. */
int hy__port_wait(hy__port *p, hy__op **ops, int max, int64_t timeout_ns);

/* An fd (HANDLE on Windows) that is readable (signalled) while p has
 * completions or a pending wake: a foreign loop polls it. */
intptr_t hy__port_os_handle(const hy__port *p);

#endif
