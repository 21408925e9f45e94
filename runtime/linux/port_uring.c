/* port_uring.c - the io_uring backend of the completion port (liburing).
 *
 * One ring per port.  An op's SQE carries the op's address as user_data,
 * and its one CQE is its completion; everything the kernel reads or writes
 * lives in the op (the timeout's timespec, the accept's length) or in a
 * msghdr node the port keeps for recvmsg/sendmsg until the CQE, because
 * the kernel writes msg_namelen back at completion.
 *
 * Submission is lazy: start only queues the SQE, and wait submits the
 * batch (with the block, in one io_uring_enter; a wait that does not block
 * submits what was started before it returns).  Once os_handle has been
 * handed out, start submits at once, because a foreign loop polling the
 * ring fd would otherwise wait for an op that was never submitted.
 *
 * Wakes: a multishot poll of the port's eventfd stays armed in the ring.
 * A wake writes the eventfd; the poll posts a CQE, which ends the owner's
 * io_uring_enter and makes the ring fd (the os_handle, readable while the
 * CQ has entries) readable.  The eventfd is never read: its count only
 * grows, and every write is a new wake-up for the poll.  The CQE is the
 * port's own: it counts as a wake only if the wake flag was set (see
 * port_linux.h), and the poll is armed again if the kernel ended it.
 *
 * Cancel: the owner turns each cancel request into an IORING_OP_ASYNC_CANCEL
 * keyed by the op's address; the op's CQE still comes, -ECANCELED if the
 * cancel caught it, its real result if it had completed.  Requests are
 * issued before any CQE is reaped in the same pass, and an op reaped while
 * its request waits is taken off the list under the lock, so an
 * ASYNC_CANCEL never names an op that was already handed back.
 *
 * A multishot accept (HY__ACCEPT_MULTI) has many CQEs: all of them queue
 * as shots, in order, and are handed over from there, at most one per op
 * per wait (the dispatcher reads op->res after the wait); an intermediate
 * one leaves the op in flight with HY__OP_MORE, the last finishes it.
 *
 * A multishot pooled receive (HY__RECV_MULTI, Linux >= 6.0) uses the same
 * queue: one RECV with IORING_RECV_MULTISHOT on the buffer ring stays
 * armed, and each CQE with data takes its buffer out of the ring (a fresh
 * one refills the slot) into a shot, in order.  Its state (an mrecv, in
 * pdata[3]) counts its queued shots: past MS_BACKLOG the port cancels it
 * itself (chunks coming faster than they are handed over would otherwise
 * be read as fast as the peer sends, with no TCP window to stop it), and
 * that end, like the kernel's own when the ring runs dry (ENOBUFS) or one
 * with data, is handed over as HY_EAGAIN after the last shot: the starter
 * starts the op again, and no byte is lost or reordered.  Once stopped,
 * the buffers it still takes leave their slots empty until its last CQE,
 * so however late the cancel lands (the kernel's task work may read on
 * before it does: the likely reason why, on one CI host, 290 chunks more
 * were queued while their slots were refilled), it holds no more than the
 * ring had: the ring refilled, and what it took of it plus MS_BACKLOG
 * queued.
 *
 * A pooled receive (RECV with buf NULL, see hy__bufsrc) is a RECV with
 * IOSQE_BUFFER_SELECT on a ring of provided buffers for its buffer size
 * (made on first use, PB_ENTRIES buffers from the source; the kernel picks
 * one only when data is there, and a fresh one from the source refills its
 * slot when it is handed over).  A kernel without buffer rings gets a
 * POLL_ADD instead: when its CQE says readable, the recv is made at once
 * (MSG_DONTWAIT) into a buffer from the source, while the CQE is taken.
 *
 * Measured on the paced echo benchmark (bench/run net, echo-cpu-r50k: the
 * server's CPU per message, about 11.5 us here, of which the kernel's TCP
 * send path alone is 9.6) and left out, none beyond the host's noise of
 * +-0.3 us: registering the ring fd (io_uring_register_ring_fd; -0.14 us,
 * about 1%, over 18 paired rounds, but the registered index is one
 * thread's only and liburing 2.3 has no public way to enter with the fd
 * from another thread); IORING_SETUP_DEFER_TASKRUN with SINGLE_ISSUER (no
 * gain, and every submission from a thread other than the owner would
 * fail: a close from the freeing thread, a host's wait on a new thread;
 * tried again on connect-rate, where the load generator is the bound and
 * pays the kernel's wake of the server for each new connection and
 * message: the generator's CPU per connection rose from 25.7 to 27.3 us
 * and connections/s fell 6%, the server sleeping more between wakes; and
 * on echo-64-c64, where the generator is the bound too, no change);
 * submitting the started ops together with the look for completions at
 * the start of a wait; IORING_ENTER_NO_IOWAIT on the blocking wait; and
 * sending with send(2) instead of a SEND op (for every answer it cost
 * 14-19% of the echo throughput at 64 and 1000 connections; only after
 * small batches, about 1% on paced traffic and 4% lost at 64).
 *
 * Overflow: the port needs IORING_FEAT_NODROP (the kernel keeps CQEs that
 * do not fit and liburing flushes them on peek); a full SQ is submitted
 * and the SQE taken again; a submit refused with EBUSY (CQ backlog on old
 * kernels) reaps CQEs into a held list first.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc/mem.h"
#include "hydra/error.h"
#include "hydra/runtime.h"
#include "runtime/linux/port_linux.h"

#define SQ_ENTRIES 256
#define CQ_ENTRIES 4096
#define MAX_IO_LEN 0x7ffff000u /* Linux's largest single read or write */

/* user_data of the port's own SQEs (ops are aligned pointers, never these):
 * the eventfd poll has two tags, the current one and the one it had before
 * it moved to another thread (see u_wait). */
enum { TAG_WAKE_A = 1, TAG_IGNORE = 2, TAG_WAKE_B = 3 };

/* A completion of a multishot op (accept, receive) that is not its last,
 * waiting to be handed over: res, and for a receive the buffer with the
 * data. */
typedef struct shot {
  hy__op *op;
  int res;
  void *buf;
  struct shot *next;
} shot;

/* A ring of provided buffers (IORING_REGISTER_PBUF_RING) for pooled
 * receives of one buffer size: the kernel picks a buffer only when data
 * is there.  Its buffers come from the receives' sources (hy__mem
 * allocations of `size` bytes). */
#define PB_ENTRIES 128
#define PB_RINGS 4
typedef struct pbring {
  struct io_uring_buf_ring *br;
  size_t size;
  int bgid;
  int missing;           /* slots left empty (a source had no memory) */
  void *bufs[PB_ENTRIES]; /* by buffer id: the one lent to the kernel */
} pbring;

/* A multishot pooled receive's state (pdata[3] of the op), from its start
 * to its last completion. */
#define MS_BACKLOG 4 /* chunks queued for one op before the port stops it */
typedef struct mrecv {
  pbring *r;
  int nq;       /* its data shots queued, not yet handed over */
  int ended;    /* its last CQE came: fres is the last completion's res */
  int lost;     /* a chunk could not be kept: it ends with HY_ENOMEM */
  int stopped;  /* the port cancels it (backlog): it ends with HY_EAGAIN */
  int owed;     /* ring slots it emptied once stopped, refilled at its end */
  int on_stops; /* in u->stops, the cancel not yet issued */
  int64_t fres;
  hy__op *op;
  struct mrecv *next; /* u->stops, or the free list */
} mrecv;

typedef struct msgnode {
  struct msghdr m;
  struct iovec iov;
  struct msgnode *next;
} msgnode;

typedef struct uport {
  hy__port base;
  struct io_uring ring;
  int armed;            /* the eventfd poll is in the ring */
  uint64_t wake_tag;    /* TAG_WAKE_A or _B: the poll's current tag */
  pthread_t armer;      /* the thread that armed it */
  int started;          /* ops were queued since the last submit */
  hy__op *held, *held_tail; /* reaped while making room, not yet dequeued */
  msgnode *msgs;        /* free msghdr nodes */
  int multishot;        /* the kernel has multishot accept */
  int msrecv;           /* ... and multishot receive (Linux 6.0) */
  shot *shots, *shots_tail, *free_shots; /* CQEs of multishot ops */
  hy__op *finals;       /* multishot ops ended by the kernel, whose last
                           CQE (an accept's res in pdata[3], a receive's
                           in its mrecv) waits to be handed over after
                           their shots; linked through next */
  mrecv *stops;         /* receives to stop (see MS_BACKLOG) */
  mrecv *free_mr;
  uint64_t batch;       /* counts waits: one completion per op per wait */
  pbring *pb[PB_RINGS]; /* provided-buffer rings, by size */
  int npb, pb_off;      /* pb_off: the kernel refused one: polls instead */
} uport;

static const hy__port_vt uring_vt;

/* ------------------------------------------------------------ helpers */

static msgnode *msg_get(uport *u) {
  msgnode *m = u->msgs;
  if (m) {
    u->msgs = m->next;
    return m;
  }
  return hy__mem_alloc(sizeof *m);
}

static void msg_put(uport *u, msgnode *m) {
  if (!m)
    return;
  m->next = u->msgs;
  u->msgs = m;
}

#define POOLED 1 /* pdata[1] of a pooled RECV: its poll is in the ring */
#define MULTI 2  /* pdata[1] of a multishot ACCEPT */
#define PBUF 3   /* pdata[1] of a pooled RECV on a buffer ring (pdata[3]) */
#define MRECV 4  /* pdata[1] of a multishot pooled RECV (mrecv in pdata[3]) */
#define MULTI_END 5 /* ... of a multishot ACCEPT after its last CQE */

static void pb_add(pbring *r, void *b, unsigned bid) {
  io_uring_buf_ring_add(r->br, b, (unsigned)r->size, (unsigned short)bid,
                        io_uring_buf_ring_mask(PB_ENTRIES), 0);
  io_uring_buf_ring_advance(r->br, 1);
}

/* Fills the empty slots of r from src. */
static void pb_fill(pbring *r, hy__bufsrc *src) {
  for (unsigned i = 0; r->missing && i < PB_ENTRIES; i++) {
    if (r->bufs[i])
      continue;
    void *b = src->get(src);
    if (!b)
      return;
    r->bufs[i] = b;
    r->missing--;
    pb_add(r, b, i);
  }
}

/* The ring for src's buffer size, made on first use; NULL when the
 * kernel has no buffer rings (or too many sizes are in use). */
static pbring *pb_for(uport *u, hy__bufsrc *src) {
  for (int i = 0; i < u->npb; i++)
    if (u->pb[i]->size == src->size)
      return u->pb[i];
  if (u->pb_off || u->npb == PB_RINGS || src->size > 0xffffffffu)
    return NULL;
  pbring *r = hy__mem_calloc(1, sizeof *r);
  if (!r)
    return NULL;
  size_t len = PB_ENTRIES * sizeof(struct io_uring_buf);
  void *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    hy__mem_free(r);
    return NULL;
  }
  r->br = m;
  r->size = src->size;
  r->bgid = u->npb + 1;
  io_uring_buf_ring_init(r->br);
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (uint64_t)(uintptr_t)m;
  reg.ring_entries = PB_ENTRIES;
  reg.bgid = (uint16_t)r->bgid;
  if (io_uring_register_buf_ring(&u->ring, &reg, 0) < 0) {
    munmap(m, len);
    hy__mem_free(r);
    u->pb_off = 1;
    return NULL;
  }
  r->missing = PB_ENTRIES;
  pb_fill(r, src);
  u->pb[u->npb++] = r;
  return r;
}

static void pb_free(uport *u, pbring *r) {
  io_uring_unregister_buf_ring(&u->ring, r->bgid);
  for (int i = 0; i < PB_ENTRIES; i++)
    hy__mem_free(r->bufs[i]);
  munmap(r->br, PB_ENTRIES * sizeof(struct io_uring_buf));
  hy__mem_free(r);
}

/* The buffer the kernel picked for a CQE with cflags, if it did: taken
 * out of the ring when `keep` (a fresh one from src takes its slot) and
 * returned, else put back in its slot (NULL).  Empty slots are refilled
 * from src as far as it gives.  With `owed` (a receive the port is
 * stopping), a kept buffer's slot stays empty, counted in *owed, and
 * nothing is refilled: see mrecv_cqe. */
static void *pb_take(pbring *r, hy__bufsrc *src, unsigned cflags, int keep,
                     int *owed) {
  void *b = NULL;
  if (cflags & IORING_CQE_F_BUFFER) {
    unsigned bid = cflags >> IORING_CQE_BUFFER_SHIFT;
    b = bid < PB_ENTRIES ? r->bufs[bid] : NULL;
    if (b && keep && owed) {
      r->bufs[bid] = NULL;
      (*owed)++;
      return b;
    } else if (b && keep) {
      void *nb = src->get(src);
      r->bufs[bid] = nb;
      if (nb)
        pb_add(r, nb, bid);
      else
        r->missing++;
    } else if (b) {
      pb_add(r, b, bid);
      b = NULL;
    }
  }
  if (r->missing && !owed)
    pb_fill(r, src);
  return b;
}

/* A pooled receive on a buffer ring: the buffer the kernel picked (if it
 * did) goes to the op when data came, and a fresh one from the source
 * takes its slot; otherwise it goes back to its slot. */
static int64_t recv_pbuf(hy__op *op, int res, unsigned cflags) {
  void *b = pb_take((pbring *)(uintptr_t)op->pdata[3], op->addr, cflags,
                    res > 0, NULL);
  if (b)
    op->buf = b;
  if (res == -ENOBUFS)
    return HY_EAGAIN; /* every buffer was taken: start it again */
  return res >= 0 ? res : hy__lport_err(res);
}

/* A shot node, or NULL (no memory). */
static shot *shot_new(uport *u) {
  shot *sh = u->free_shots;
  if (sh)
    u->free_shots = sh->next;
  else
    sh = hy__mem_alloc(sizeof *sh);
  return sh;
}

static void shot_queue(uport *u, shot *sh, hy__op *op, int res, void *buf) {
  sh->op = op;
  sh->res = res;
  sh->buf = buf;
  sh->next = NULL;
  if (u->shots_tail)
    u->shots_tail->next = sh;
  else
    u->shots = sh;
  u->shots_tail = sh;
}

/* With the lock held: a CQE of a multishot pooled receive.  Data queue as
 * shots, in order; the last CQE leaves the op's last result in its mrecv
 * and the op in u->finals, handed over once its shots have been.  The end
 * that is not the stream's (a last CQE with data, ENOBUFS: the ring ran
 * dry, or a cancel of the port's own) becomes HY_EAGAIN: start again. */
static void mrecv_cqe(uport *u, hy__op *op, struct io_uring_cqe *c) {
  mrecv *m = (mrecv *)(uintptr_t)op->pdata[3];
  hy__bufsrc *src = op->addr;
  int res = c->res;
  int last = !(c->flags & IORING_CQE_F_MORE);
  if (last) { /* the slots it left empty are the ring's again */
    m->r->missing += m->owed;
    m->owed = 0;
  }
  void *b = pb_take(m->r, src, c->flags, res > 0 && !m->lost,
                    m->stopped && !last ? &m->owed : NULL);
  if (res > 0 && !m->lost) {
    shot *sh = b ? shot_new(u) : NULL;
    if (sh) {
      shot_queue(u, sh, op, res, b);
      m->nq++;
    } else {
      /* No memory to keep the chunk: the stream has a hole, so it ends
       * (HY_ENOMEM) rather than go on without those bytes. */
      if (b)
        src->put(src, b);
      m->lost = 1;
    }
    if ((m->lost || m->nq >= MS_BACKLOG) && !m->stopped && !last) {
      m->stopped = 1;
      m->on_stops = 1;
      m->next = u->stops;
      u->stops = m;
    }
  }
  if (!last)
    return;
  if (m->lost)
    m->fres = HY_ENOMEM;
  else if (res > 0 || res == -ENOBUFS)
    m->fres = HY_EAGAIN;
  else if (res == -ECANCELED && m->stopped && !(op->pflags & HY__PF_CANCEL))
    m->fres = HY_EAGAIN;
  else
    m->fres = res == 0 ? 0 : hy__lport_err(res);
  m->ended = 1;
  op->next = u->finals;
  u->finals = op;
}

/* A pooled receive whose poll said readable: the recv itself, into a
 * buffer from the op's source kept only if data came. */
static int64_t recv_pooled(hy__op *op) {
  hy__bufsrc *src = op->addr;
  void *b = src->get(src);
  if (!b)
    return HY_ENOMEM;
  size_t len = src->size > MAX_IO_LEN ? MAX_IO_LEN : src->size;
  int fl = (int)(op->flags & ~HY__RECV_OWNED);
  ssize_t r;
  while ((r = recv((int)op->fd, b, len, fl | MSG_DONTWAIT)) < 0 &&
         errno == EINTR) {
  }
  if (r > 0) {
    op->buf = b;
    return r;
  }
  int err = r < 0 ? errno : 0;
  src->put(src, b);
  if (r == 0)
    return 0;
  return err == EWOULDBLOCK ? HY_EAGAIN : hy__lport_err(err);
}

/* The op's result from its CQE's res; gives back its msghdr node. */
static int64_t result_of(uport *u, hy__op *op, int res, unsigned cflags) {
  switch (op->kind) {
  case HY__OP_RECV:
    if (op->pdata[1] == POOLED) {
      op->pdata[1] = 0;
      return res >= 0 ? recv_pooled(op) : hy__lport_err(res);
    }
    if (op->pdata[1] == PBUF) {
      op->pdata[1] = 0;
      return recv_pbuf(op, res, cflags);
    }
    return res >= 0 ? res : hy__lport_err(res);
  case HY__OP_POLL:
    return res >= 0 ? hy__lport_poll_mask((uint32_t)res) : hy__lport_err(res);
  case HY__OP_TIMEOUT:
    return res == -ETIME || res >= 0 ? HY_ETIMEDOUT : hy__lport_err(res);
  case HY__OP_RECVFROM:
  case HY__OP_SENDTO: {
    msgnode *m = (msgnode *)(uintptr_t)op->pdata[1];
    if (m && op->kind == HY__OP_RECVFROM && res >= 0 && op->addr)
      op->addrlen = m->m.msg_namelen;
    msg_put(u, m);
    op->pdata[1] = 0;
    return res >= 0 ? res : hy__lport_err(res);
  }
  default:
    return res >= 0 ? res : hy__lport_err(res);
  }
}

/* With the lock held: what one CQE means.  Returns the completed op, or
 * NULL for the port's own CQEs. */
static hy__op *take_cqe(uport *u, struct io_uring_cqe *c, int state) {
  uint64_t ud = c->user_data;
  if (ud == u->wake_tag) {
    if (!(c->flags & IORING_CQE_F_MORE))
      u->armed = 0; /* the kernel ended the multishot poll */
    return NULL;
  }
  if (ud < 16)
    return NULL;
  hy__op *op = (hy__op *)(uintptr_t)ud;
  if (op->pdata[1] == MRECV && op->kind == HY__OP_RECV) {
    mrecv_cqe(u, op, c);
    return NULL;
  }
  if (op->kind == HY__OP_ACCEPT && op->pdata[1] == MULTI) {
    /* Every CQE of a multishot accept queues, in order, and is handed
     * over from the queue (see take_shots). */
    shot *rsv = (shot *)(uintptr_t)op->pdata[3];
    if (!(c->flags & IORING_CQE_F_MORE)) {
      /* The last: it waits in the op itself until the shots before it
       * have been handed over. */
      if (rsv) {
        rsv->next = u->free_shots;
        u->free_shots = rsv;
      }
      op->pdata[1] = MULTI_END;
      op->pdata[3] = (uint64_t)(uint32_t)c->res;
      op->next = u->finals;
      u->finals = op;
      return NULL;
    }
    shot *sh = shot_new(u);
    if (!sh) {
      /* No memory to keep it: the connection is refused (reset), and the
       * op's owner is told (HY_ENOMEM with HY__OP_MORE) by the op's own
       * reserve node (pdata[3], made at start; it becomes the reserve
       * again when handed over).  Drops before that share the report. */
      if (c->res >= 0) {
        struct linger lg = {1, 0};
        setsockopt(c->res, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c->res);
      }
      if (rsv) {
        op->pdata[3] = 0;
        shot_queue(u, rsv, op, -ENOMEM, NULL);
      }
      return NULL;
    }
    shot_queue(u, sh, op, c->res, NULL);
    return NULL;
  }
  hy__lport_finish_locked(&u->base, op, result_of(u, op, c->res, c->flags),
                          state);
  return op;
}

/* Moves CQEs into the held list, at most `limit` of them (to make room
 * when the kernel refuses submissions while the CQ is backed up: all of
 * them, HOLD_ALL; after a full wait, about as many as the CQ has now - a
 * look that finds it empty runs the task work that fills it again: a
 * multishot receive of a fast peer would keep it from ending). */
#define HOLD_ALL UINT_MAX
static void hold_cqes(uport *u, unsigned limit) {
  struct io_uring_cqe *cqes[64];
  unsigned k;
  while (limit &&
         (k = io_uring_peek_batch_cqe(&u->ring, cqes,
                                      limit < 64 ? limit : 64)) > 0) {
    limit -= k;
    hy__lock(&u->base.lock);
    for (unsigned i = 0; i < k; i++) {
      hy__op *op = take_cqe(u, cqes[i], HY__PS_DONE);
      if (!op)
        continue;
      op->next = NULL;
      if (u->held_tail)
        u->held_tail->next = op;
      else
        u->held = op;
      u->held_tail = op;
    }
    hy__unlock(&u->base.lock);
    io_uring_cq_advance(&u->ring, k);
  }
}

/* Submits what is queued.  Returns 0 or HY_E*. */
static int flush(uport *u) {
  for (int tries = 0; tries < 64; tries++) {
    int r = io_uring_submit(&u->ring);
    if (r >= 0) {
      u->started = 0;
      return 0;
    }
    if (r == -EINTR)
      continue;
    if (r == -EBUSY || r == -EAGAIN) {
      hold_cqes(u, HOLD_ALL);
      continue;
    }
    return hy__lport_err(r);
  }
  return HY_EAGAIN;
}

/* An SQE, submitting the full SQ first if need be; NULL if the kernel
 * keeps refusing. */
static struct io_uring_sqe *sqe_get(uport *u) {
  struct io_uring_sqe *s = io_uring_get_sqe(&u->ring);
  for (int tries = 0; !s && tries < 8; tries++) {
    if (flush(u) < 0)
      return NULL;
    s = io_uring_get_sqe(&u->ring);
  }
  return s;
}

static int arm_wake(uport *u) {
  struct io_uring_sqe *s = sqe_get(u);
  if (!s)
    return HY_EAGAIN;
  io_uring_prep_poll_multishot(s, u->base.efd, POLLIN);
  s->user_data = u->wake_tag;
  u->armed = 1;
  u->armer = pthread_self();
  return 0;
}

/* The poll's wake-ups are completed through task work of the thread that
 * armed it, which the kernel delivers by interrupting that thread (a
 * blocking recv with a timeout there fails with EINTR).  So the poll is
 * armed by the owner's first wait that may block (or by os_handle), never
 * at open by the thread that creates the runtime; should such a wait run
 * on another thread than the armer, it arms a new poll there and cancels
 * the old one, whose CQEs keep the old tag and are ignored. */
static void move_wake(uport *u) {
  struct io_uring_sqe *s = sqe_get(u);
  if (!s)
    return;
  io_uring_prep_cancel64(s, u->wake_tag, 0);
  s->user_data = TAG_IGNORE;
  u->wake_tag = u->wake_tag == TAG_WAKE_A ? TAG_WAKE_B : TAG_WAKE_A;
  if (arm_wake(u) == 0)
    flush(u);
}

/* Turns the cancel requests into ASYNC_CANCELs and submits them. */
static void do_cancels(uport *u) {
  hy__op *list = hy__lport_take_cancels(&u->base);
  if (!list)
    return;
  while (list) {
    hy__op *next = (hy__op *)(uintptr_t)list->pdata[0];
    struct io_uring_sqe *s = sqe_get(u);
    if (!s) {
      /* The ring refuses work: ask again in the next wait. */
      hy__lock(&u->base.lock);
      if (list->pstate == HY__PS_INFLIGHT) {
        list->pflags |= HY__PF_CLIST;
        list->pdata[0] = (uint64_t)(uintptr_t)u->base.clist;
        __atomic_store_n(&u->base.clist, list, __ATOMIC_RELAXED);
      }
      hy__unlock(&u->base.lock);
    } else {
      io_uring_prep_cancel64(s, (uint64_t)(uintptr_t)list, 0);
      s->user_data = TAG_IGNORE;
    }
    list = next;
  }
  flush(u);
}

/* Issues the port's own cancels of the receives in u->stops (owner only,
 * not under the lock: taking an SQE may reap, and add to the list). */
static void do_stops(uport *u) {
  mrecv *m = u->stops;
  u->stops = NULL;
  while (m) {
    mrecv *next = m->next;
    struct io_uring_sqe *s = m->ended ? NULL : sqe_get(u);
    if (s) {
      io_uring_prep_cancel64(s, (uint64_t)(uintptr_t)m->op, 0);
      s->user_data = TAG_IGNORE;
      u->started = 1;
    }
    m->on_stops = 0;
    m = next;
  }
}

/* Hands over queued completions of multishot ops, at most one per op in
 * this wait (the caller reads op->res, and a receive's op->buf, after the
 * wait).  An intermediate one leaves the op in flight with HY__OP_MORE
 * set; the last finishes it. */
static int shot_queued(uport *u, hy__op *op) {
  for (shot *sh = u->shots; sh; sh = sh->next)
    if (sh->op == op)
      return 1;
  return 0;
}

static int take_shots(uport *u, hy__op **ops, int max) {
  if (!u->shots && !u->finals)
    return 0;
  int n = 0;
  hy__lock(&u->base.lock);
  shot **pp = &u->shots, *prev = NULL;
  while (*pp && n < max) {
    shot *sh = *pp;
    hy__op *op = sh->op;
    if (op->pdata[2] == u->batch) { /* already handed over in this wait */
      prev = sh;
      pp = &sh->next;
      continue;
    }
    *pp = sh->next;
    if (u->shots_tail == sh)
      u->shots_tail = prev;
    op->pdata[2] = u->batch;
    op->res = sh->res >= 0 ? sh->res : hy__lport_err(sh->res);
    op->flags |= HY__OP_MORE;
    if (op->pdata[1] == MRECV) {
      op->buf = sh->buf;
      ((mrecv *)(uintptr_t)op->pdata[3])->nq--;
    }
    ops[n++] = op;
    if (op->pdata[1] == MULTI && !op->pdata[3]) {
      op->pdata[3] = (uintptr_t)sh; /* the accept's reserve again */
    } else {
      sh->next = u->free_shots;
      u->free_shots = sh;
    }
  }
  hy__op **fp = &u->finals;
  while (*fp && n < max) {
    hy__op *op = *fp;
    mrecv *m = op->pdata[1] == MRECV ? (mrecv *)(uintptr_t)op->pdata[3]
                                     : NULL;
    if (op->pdata[2] == u->batch ||
        (m ? m->nq > 0 || m->on_stops : shot_queued(u, op))) {
      fp = &op->next;
      continue;
    }
    *fp = op->next;
    op->pdata[2] = u->batch;
    op->pdata[1] = 0;
    int64_t res;
    if (m) {
      res = m->fres;
      op->buf = NULL;
      op->pdata[3] = 0;
      m->next = u->free_mr;
      u->free_mr = m;
    } else {
      res = result_of(u, op, (int)(uint32_t)op->pdata[3], 0);
    }
    hy__lport_finish_locked(&u->base, op, res, HY__PS_IDLE);
    op->flags &= ~HY__OP_MORE;
    ops[n++] = op;
  }
  hy__unlock(&u->base.lock);
  return n;
}

static int take_held(uport *u, hy__op **ops, int max) {
  int n = 0;
  while (u->held && n < max) {
    ops[n++] = u->held;
    u->held = u->held->next;
  }
  if (!u->held)
    u->held_tail = NULL;
  hy__lport_dequeued(&u->base, ops, n);
  return n;
}

static int reap(uport *u, hy__op **ops, int max) {
  int n = 0;
  while (n < max) {
    struct io_uring_cqe *cqes[64];
    unsigned want = (unsigned)(max - n) < 64 ? (unsigned)(max - n) : 64;
    unsigned k = io_uring_peek_batch_cqe(&u->ring, cqes, want);
    if (!k)
      break;
    hy__lock(&u->base.lock);
    for (unsigned i = 0; i < k; i++) {
      hy__op *op = take_cqe(u, cqes[i], HY__PS_IDLE);
      if (op)
        ops[n++] = op;
    }
    hy__unlock(&u->base.lock);
    io_uring_cq_advance(&u->ring, k);
  }
  return n;
}

/* ---------------------------------------------------------- the backend */

static int u_associate(hy__port *p, int fd) {
  (void)p;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0))
    return hy__lport_err(errno);
  return 0;
}

/* Ops still in flight on fd complete with HY_ECANCELED: the ring holds a
 * reference to the file, so closing the fd would not end them. */
static void u_forget(hy__port *p, int fd) {
  uport *u = (uport *)p;
  struct io_uring_sqe *s = sqe_get(u);
  if (!s)
    return;
  io_uring_prep_cancel_fd(s, fd, IORING_ASYNC_CANCEL_ALL);
  s->user_data = TAG_IGNORE;
  flush(u); /* now: the fd is looked up when the cancel runs */
}

static void set_timespec(hy__op *op) {
  struct __kernel_timespec *ts = (struct __kernel_timespec *)&op->pdata[2];
  int64_t d = op->deadline < 0 ? 0 : op->deadline;
  ts->tv_sec = d / 1000000000;
  ts->tv_nsec = d % 1000000000;
}

static int u_start(hy__port *p, hy__op *op) {
  uport *u = (uport *)p;
  msgnode *m = NULL;
  shot *rsv;
  if (op->kind == HY__OP_RECVFROM || op->kind == HY__OP_SENDTO) {
    m = msg_get(u);
    if (!m)
      return HY_ENOMEM;
  }
  struct io_uring_sqe *s = sqe_get(u);
  if (!s) {
    msg_put(u, m);
    return HY_EAGAIN;
  }
  int fd = (int)op->fd;
  size_t len = op->len > MAX_IO_LEN ? MAX_IO_LEN : op->len;
  switch (op->kind) {
  case HY__OP_NOP:
    io_uring_prep_nop(s);
    break;
  case HY__OP_ACCEPT:
    op->flags &= ~HY__OP_MORE;
    /* A multishot accept keeps a node in reserve to report a connection
     * it must drop (see take_cqe); without one, a plain accept. */
    if ((op->flags & HY__ACCEPT_MULTI) && u->multishot && !op->addr &&
        (rsv = shot_new(u)) != NULL) {
      io_uring_prep_multishot_accept(s, fd, NULL, NULL,
                                     SOCK_NONBLOCK | SOCK_CLOEXEC);
      op->pdata[1] = MULTI;
      op->pdata[2] = 0;
      op->pdata[3] = (uintptr_t)rsv;
    } else {
      io_uring_prep_accept(s, fd, op->addr,
                           op->addr ? (socklen_t *)&op->addrlen : NULL,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
      op->pdata[1] = 0;
    }
    break;
  case HY__OP_CONNECT:
    io_uring_prep_connect(s, fd, op->addr, op->addrlen);
    break;
  case HY__OP_RECV: {
    int rfl = (int)(op->flags & ~(HY__RECV_OWNED | HY__RECV_LATE |
                                  HY__RECV_MULTI | HY__OP_MORE));
    if (!op->buf) {
      /* Pooled: wait for readiness; the recv is done when it comes (see
       * recv_pooled), so a waiting connection holds no buffer. */
      if (!op->addr) {
        io_uring_prep_nop(s);
        s->user_data = TAG_IGNORE;
        return HY_EINVAL;
      }
      pbring *r = pb_for(u, op->addr);
      mrecv *ms = NULL;
      op->flags &= ~HY__OP_MORE;
      if (r && (op->flags & HY__RECV_MULTI) && u->msrecv) {
        /* (no memory for its state: a one-shot receive instead) */
        ms = u->free_mr;
        if (ms)
          u->free_mr = ms->next;
        else
          ms = hy__mem_alloc(sizeof *ms);
      }
      if (ms) {
        memset(ms, 0, sizeof *ms);
        ms->r = r;
        ms->op = op;
        io_uring_prep_recv_multishot(s, fd, NULL, 0, rfl);
        s->flags |= IOSQE_BUFFER_SELECT;
        s->buf_group = (uint16_t)r->bgid;
        op->pdata[1] = MRECV;
        op->pdata[2] = 0;
        op->pdata[3] = (uint64_t)(uintptr_t)ms;
      } else if (r) {
        io_uring_prep_recv(s, fd, NULL, r->size, rfl);
        s->flags |= IOSQE_BUFFER_SELECT;
        s->buf_group = (uint16_t)r->bgid;
        op->pdata[1] = PBUF;
        op->pdata[3] = (uint64_t)(uintptr_t)r;
      } else {
        io_uring_prep_poll_add(s, fd, POLLIN | POLLRDHUP);
        op->pdata[1] = POOLED;
      }
    } else {
      io_uring_prep_recv(s, fd, op->buf, len, rfl);
      op->pdata[1] = 0;
    }
    break;
  }
  case HY__OP_SEND:
    io_uring_prep_send(s, fd, op->buf, len, (int)op->flags | MSG_NOSIGNAL);
    break;
  case HY__OP_RECVFROM:
  case HY__OP_SENDTO:
    memset(&m->m, 0, sizeof m->m);
    m->iov.iov_base = op->buf;
    m->iov.iov_len = len;
    m->m.msg_iov = &m->iov;
    m->m.msg_iovlen = 1;
    m->m.msg_name = op->addr;
    m->m.msg_namelen = op->addr ? op->addrlen : 0;
    op->pdata[1] = (uint64_t)(uintptr_t)m;
    if (op->kind == HY__OP_RECVFROM)
      io_uring_prep_recvmsg(s, fd, &m->m, op->flags);
    else
      io_uring_prep_sendmsg(s, fd, &m->m, op->flags | MSG_NOSIGNAL);
    break;
  case HY__OP_POLL: {
    unsigned mask = 0;
    if (op->flags & HY__POLL_IN)
      mask |= POLLIN | POLLRDHUP;
    if (op->flags & HY__POLL_OUT)
      mask |= POLLOUT;
    io_uring_prep_poll_add(s, fd, mask);
    break;
  }
  case HY__OP_TIMEOUT:
    set_timespec(op);
    io_uring_prep_timeout(s, (struct __kernel_timespec *)&op->pdata[2], 0,
                          IORING_TIMEOUT_ABS);
    break;
  default:
    io_uring_prep_nop(s);
    s->user_data = TAG_IGNORE;
    return HY_EINVAL;
  }
  s->user_data = (uint64_t)(uintptr_t)op;
  hy__lport_started(p, op);
  u->started = 1;
  if (atomic_load_explicit(&p->osh, memory_order_relaxed))
    flush(u);
  return 0;
}

/* Before blocking for left ns (negative: no limit) at time now: looks at
 * the CQ ring in user space for a while if the port's last block was
 * short and looking pays (see HY__SPIN_NS and HY__LOOK_TRIAL in
 * port_linux.h).  With COOP_TASKRUN a completion waiting as task work
 * shows as IORING_SQ_TASKRUN (the reap then enters the kernel to run it).
 * Returns 1 if it looked (until something came or the time was up), 0 if
 * it did not. */
static int u_spin(uport *u, int64_t left, int64_t now) {
  hy__port *p = &u->base;
  int64_t until = hy__lport_spin_until(p, left, now);
  if (!until)
    return 0;
  if (u->started)
    flush(u); /* the kernel works on what was started meanwhile */
  for (int i = 1;; i++) {
    if (io_uring_cq_ready(&u->ring) ||
        (IO_URING_READ_ONCE(*u->ring.sq.kflags) &
         (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) ||
        hy__lport_news(p))
      return 1;
    if (i % 16 == 0 && hy_now() >= until)
      return 1;
    hy__cpu_relax();
  }
}

static int u_wait(hy__port *p, hy__op **ops, int max, int64_t timeout) {
  uport *u = (uport *)p;
  int64_t deadline = timeout > 0 ? hy_now() + timeout : 0;
  int n = 0, woke = 0, more_posts = 0, last = timeout == 0;
  int err = 0, spun = 0; /* spun: this wait looked (or might have) */
  int posts = 0;
  /* Only a wait that may block needs the poll on its thread (a look
   * takes wakes from the flag), and only such a wait submits for it: a
   * host's final look at a closing runtime's ports then adds nothing of
   * the ring's to the host thread (see u_close). */
  int may_block = timeout != 0 || atomic_load_explicit(&p->osh,
                                                       memory_order_relaxed);
  if (u->armed && may_block && !pthread_equal(u->armer, pthread_self()))
    move_wake(u);
  u->batch++;
  for (;;) {
    woke |= hy__lport_take_wake(p, timeout);
    do_cancels(u);
    if (u->stops)
      do_stops(u);
    n += take_held(u, ops + n, max - n);
    n += take_shots(u, ops + n, max - n);
    n += reap(u, ops + n, max - n);
    /* With buffer rings: the rest of the CQ is taken now too (held, and
     * handed over first by the next waits), because a receive's buffer
     * slot is refilled only when its CQE is taken.  CQEs left in the CQ
     * keep their slots empty, and once the ring is dry every receive
     * submitted fails with ENOBUFS at once (data or not), to be started
     * again, and fills the CQ further: 1000 busy connections made 5 such
     * receives per message. */
    if (n == max && u->npb)
      hold_cqes(u, io_uring_cq_ready(&u->ring) + 64);
    if (n < max)
      n += take_shots(u, ops + n, max - n);
    if (u->stops)
      do_stops(u);
    /* Once more after the reap: a wake whose flag was set after the look
     * above and whose eventfd edge the reap just consumed (as stale) has
     * no other CQE coming; without this look the block below sleeps on a
     * wake that is owed (a worker missed the shutdown's phase change). */
    woke |= hy__lport_take_wake(p, timeout);
    if (n < max) {
      int k = hy__lport_take_posts(p, ops + n, max - n, &more_posts);
      n += k;
      posts += k;
    }
    if (!u->armed && may_block)
      arm_wake(u);
    if (n || woke || last)
      break;
    struct __kernel_timespec ts, *tsp = NULL;
    int64_t left = -1, now = hy_now();
    if (timeout > 0) {
      left = deadline - now;
      if (left <= 0)
        break;
      ts.tv_sec = left / 1000000000;
      ts.tv_nsec = left % 1000000000;
      tsp = &ts;
    }
    if (!spun) {
      /* After a look, the loop takes what came, or blocks for what is
       * left of the time. */
      spun = 1;
      if (u_spin(u, left, now))
        continue;
    }
    if (!hy__lport_block_begin(p))
      continue; /* a wake came: take it */
    struct io_uring_cqe *cqe = NULL;
    int64_t t0 = now;
    int r = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, tsp, NULL);
    hy__lport_block_end(p);
    hy__lport_blocked(p, t0);
    if (r == -ETIME) {
      last = 1; /* one more look, then report the time-out */
    } else if (r == -EBUSY || r == -EAGAIN) {
      hold_cqes(u, HOLD_ALL);
    } else if (r < 0 && r != -EINTR) {
      err = hy__lport_err(r);
      break;
    }
  }
  /* Ops started before this wait go to the kernel now (a busy worker
   * waits with timeout 0 and may not block for a while); a re-armed poll
   * alone can wait for the next block, which submits it first - unless a
   * foreign loop polls the ring fd. */
  int osh = atomic_load_explicit(&p->osh, memory_order_relaxed);
  if (u->started || osh)
    flush(u);
  hy__look_count(&p->judge, n - posts);
  if (osh &&
      (more_posts || u->held || u->shots || u->finals || u->stops ||
       __atomic_load_n(&p->post_head, __ATOMIC_RELAXED)))
    hy__port_wake(p); /* left behind: keep the os_handle readable */
  return n ? n : err;
}

static intptr_t u_os_handle(const hy__port *p) {
  /* The ring fd becomes readable on a wake only once the eventfd poll is
   * armed: arm it now if no wait has yet (the caller is the owner, as an
   * embedded host is). */
  uport *u = (uport *)p;
  if (!u->armed && arm_wake(u) == 0)
    flush(u);
  return u->ring.ring_fd;
}

static void u_close(hy__port *p) {
  uport *u = (uport *)p;
  /* A thread that submitted to a ring is told of the ring's end by task
   * work the kernel queues for it when the ring goes, which interrupts
   * its next blocking call (a recv with a timeout, epoll_wait: EINTR).
   * So a closer that is not the poll's armer submits nothing: the ring's
   * end cancels the poll, which writes no memory of ours.  The armer
   * (a host that ran the port itself) ends it first, as it submitted
   * anyway. */
  if (u->armed && pthread_equal(u->armer, pthread_self())) {
    /* End the eventfd poll before the ring goes (and its last CQE). */
    struct io_uring_sqe *s = sqe_get(u);
    if (s) {
      io_uring_prep_cancel64(s, u->wake_tag, 0);
      s->user_data = TAG_IGNORE;
      flush(u);
    }
    int64_t until = hy_now() + HY_SEC(1);
    while (u->armed && hy_now() < until) {
      struct __kernel_timespec ts = {0, 10000000};
      struct io_uring_cqe *c;
      if (io_uring_wait_cqe_timeout(&u->ring, &c, &ts) == 0) {
        hy__lock(&u->base.lock);
        take_cqe(u, c, HY__PS_IDLE);
        hy__unlock(&u->base.lock);
        io_uring_cqe_seen(&u->ring, c);
      }
    }
  }
  for (int i = 0; i < u->npb; i++)
    pb_free(u, u->pb[i]);
  io_uring_queue_exit(&u->ring);
  /* pre: no op in flight, so every shot was handed over; free the nodes. */
  while (u->shots) {
    shot *sh = u->shots;
    u->shots = sh->next;
    if (sh->res >= 0)
      close(sh->res);
    hy__mem_free(sh);
  }
  while (u->free_shots) {
    shot *sh = u->free_shots;
    u->free_shots = sh->next;
    hy__mem_free(sh);
  }
  while (u->free_mr) {
    mrecv *m = u->free_mr;
    u->free_mr = m->next;
    hy__mem_free(m);
  }
  while (u->msgs) {
    msgnode *m = u->msgs;
    u->msgs = m->next;
    hy__mem_free(m);
  }
  hy__lport_fini(&u->base);
  hy__mem_free(u);
}

static const hy__port_vt uring_vt = {u_close,     u_associate, u_forget,
                                     u_start,     u_wait,      u_os_handle};

/* ------------------------------------------------------------- opening */

/* Does the kernel have every opcode the port uses? */
static int has_ops(struct io_uring *ring) {
  union {
    struct io_uring_probe p;
    char room[sizeof(struct io_uring_probe) +
              256 * sizeof(struct io_uring_probe_op)];
  } pb;
  memset(&pb, 0, sizeof pb);
  if (io_uring_register_probe(ring, &pb.p, 256) < 0)
    return 0;
  static const int need[] = {
      IORING_OP_NOP,     IORING_OP_ACCEPT,  IORING_OP_CONNECT,
      IORING_OP_RECV,    IORING_OP_SEND,    IORING_OP_RECVMSG,
      IORING_OP_SENDMSG, IORING_OP_POLL_ADD, IORING_OP_TIMEOUT,
      IORING_OP_ASYNC_CANCEL, IORING_OP_READ};
  for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
    if (need[i] > pb.p.last_op ||
        !(pb.p.ops[need[i]].flags & IO_URING_OP_SUPPORTED))
      return 0;
  return 1;
}

/* Making a ring (run by make_ring_apart). */
typedef struct {
  uport *u;
  int attach, wq_fd;
  struct io_uring_params prm;
  int r;
} ring_make;

static void *make_ring(void *arg) {
  ring_make *m = arg;
  /* A completion is task work for the thread that submitted the op.  By
   * default the kernel interrupts that thread to run it at once if it is
   * running (an IPI from the CPU where the completion happened, paid by
   * whoever made it: the peer's send, a new connection).  COOP_TASKRUN
   * (Linux 5.19) leaves it for the thread's next entry into the kernel
   * (a waiter that sleeps is still woken), and TASKRUN_FLAG marks it
   * pending in the SQ ring's flags, where a look that finds the CQ empty
   * sees it and enters the kernel to run it (io_uring_peek_batch_cqe).
   * Older kernels refuse the flags: then without them. */
  static const unsigned coop[] = {
      IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, 0};
  int r = -EINVAL;
  for (int k = 0; k < 2 && r == -EINVAL; k++) {
    for (int a = m->attach; a >= 0 && r == -EINVAL; a--) {
      memset(&m->prm, 0, sizeof m->prm);
      m->prm.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | coop[k];
      m->prm.cq_entries = CQ_ENTRIES;
      if (a) {
        /* Workers of one runtime share the kernel's async worker pool. */
        m->prm.flags |= IORING_SETUP_ATTACH_WQ;
        m->prm.wq_fd = (uint32_t)m->wq_fd;
      }
      r = io_uring_queue_init_params(SQ_ENTRIES, &m->u->ring, &m->prm);
    }
  }
  m->r = r;
  return NULL;
}

/* The kernel lists the thread that makes a ring among the ring's users,
 * and when the ring goes it queues task work for every user still alive,
 * which interrupts that thread's next blocking call (a recv with a
 * timeout, epoll_wait: EINTR).  A worker has exited by then (an exiting
 * thread leaves the lists); the host thread that made the runtime has
 * not.  So the ring is made on a thread of its own that exits at once;
 * if no thread can be started, here. */
static int make_ring_apart(ring_make *m) {
  pthread_t t;
  if (pthread_create(&t, NULL, make_ring, m) != 0)
    make_ring(m);
  else
    pthread_join(t, NULL);
  return m->r;
}

int hy__uring_open(hy__port **out, hy__port *share) {
  uport *u = hy__mem_calloc(1, sizeof *u);
  if (!u)
    return HY_ENOMEM;
  u->wake_tag = TAG_WAKE_A;
  int rc = hy__lport_init(&u->base, &uring_vt, HY__BACKEND_URING, "uring");
  if (rc < 0) {
    hy__mem_free(u);
    return rc;
  }
  int attach = share && share->backend == HY__BACKEND_URING;
  ring_make mk = {u, attach, attach ? ((uport *)share)->ring.ring_fd : -1,
                  {0}, 0};
  int r = make_ring_apart(&mk);
  struct io_uring_params prm = mk.prm;
  if (r < 0) {
    hy__lport_fini(&u->base);
    hy__mem_free(u);
    /* Out of memory or descriptors is this process's state; anything else
     * (ENOSYS, EPERM from seccomp or the sysctl, EINVAL from an old
     * kernel) means no io_uring here. */
    if (r == -ENOMEM || r == -EMFILE || r == -ENFILE)
      return hy__lport_err(r);
    return HY_ENOSYS;
  }
  if (!(prm.features & IORING_FEAT_NODROP) ||
      !(prm.features & IORING_FEAT_EXT_ARG) || !has_ops(&u->ring)) {
    io_uring_queue_exit(&u->ring);
    hy__lport_fini(&u->base);
    hy__mem_free(u);
    return HY_ENOSYS;
  }
  /* Multishot accept came with Linux 5.19, as did IORING_OP_SOCKET. */
  struct io_uring_probe *pr = io_uring_get_probe_ring(&u->ring);
  u->multishot = pr && io_uring_opcode_supported(pr, IORING_OP_SOCKET);
  /* Multishot receive came with Linux 6.0, as did IORING_OP_SEND_ZC. */
  u->msrecv = pr && io_uring_opcode_supported(pr, IORING_OP_SEND_ZC);
  if (pr)
    io_uring_free_probe(pr);
  *out = &u->base;
  return 0;
}
