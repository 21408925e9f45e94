/* server.c - the callback-style server of seed 001.
 *
 * Shape.  One listening socket; every accepting worker keeps `pending_accepts`
 * ACCEPT ops on its own port, so connections land on the workers in proportion
 * to how fast each one takes them (AcceptEx style: several accepts always in
 * flight) - on io_uring one multishot ACCEPT instead, which stays in flight and
 * completes once per connection (the peer address is then looked up only if
 * hy_sconn_peer_addr asks).  A connection belongs to the worker that accepted
 * it for life: all its ops are started on that worker's port, its completions
 * arrive there, and every callback for it runs on that worker's thread, outside
 * any task - so the callbacks of one connection never overlap and need no lock.
 *
 * Per worker (srv_worker, touched by its own thread only, except where noted):
 * the accept ops, the list of its connections, one TIMEOUT op that drives the
 * timeout sweep and the accept back-off, and three packets (start, stop
 * accepting, close all) that other threads post to it.
 *
 * Per connection (hy_sconn): one RECV op always in flight (unless paused); one
 * SEND op in flight while output is queued.  On io_uring the RECV is
 * multishot (HY__RECV_MULTI): it stays armed across messages and completes
 * once per chunk, so no receive is submitted, nor a poll armed, per message;
 * it is started again only when the port or the kernel ends it (HY_EAGAIN:
 * the buffer ring ran dry, or chunks piled up), and pause_read cancels it -
 * chunks it brought before the cancel took effect are held, in order, and
 * handed to on_read from a packet after the resume (see read_done).  Reads are pooled where the port
 * can (io_uring, epoll: see hy__bufsrc in runtime/port.h): the port takes a
 * buffer from the worker's pool only when data is there, the buffer goes back
 * once on_read returns (or, when on_read wrote 4 KiB or more of its own bytes,
 * which are then sent from it without a copy, once those are sent), so an
 * idle connection holds no read buffer: a worker
 * needs about one, plus those io_uring keeps lent to the kernel in its ring of
 * provided buffers (a fixed number per port, however many connections there
 * are).  Pooled buffers are hy__mem allocations, as the port's contract asks.
 * On IOCP each connection has its own buffer from a per-server object cache.
 * On epoll, a write from on_read with nothing queued is sent at once, from
 * the caller's bytes (hy__port_send_now: no copy, op or completion), and
 * on_write_done follows when on_read returns; a send the port makes inside
 * its start is accounted for at once (hy__port_done_early), so what it
 * emptied goes back to the worker for the next write of the batch; reads
 * are late (HY__RECV_LATE): a ready socket is read when its completion is
 * handled, into the buffer the read before gave back, still in the cache.
 * Output is a chain of chunks bounded by max_output: hy_sconn_write refuses
 * (HY_EAGAIN) what would pass the bound, so a slow reader costs at most
 * max_output bytes.  hy_sconn_write may come from other threads: the chain and
 * the send state are under the connection's lock, and a write from off the
 * worker posts a kick packet that starts the send on the worker.
 *
 * Lifetimes.  A connection holds a reference for being open plus one per op or
 * kick in flight; closing cancels its ops, calls on_close at once (the last
 * callback), and the last reference - always on the owning worker, as
 * completions arrive there - forgets the fd on the port, closes it and frees
 * the memory.  The server counts what is outstanding (connections, accept/timer
 * ops, packets in flight); hy_server_close waits for that count to reach zero
 * before freeing.
 *
 * Limits.  max_connections: a connection over the limit is accepted and closed
 * at once with a reset (counted in over_limit), so the backlog keeps moving.
 * EMFILE/ENFILE on accept: that accept is not restarted; the worker's timer
 * restarts its idle accepts after a back-off (10 ms, doubling to 1 s, reset by
 * the next success), so an out-of-descriptors server waits instead of
 * spinning.  (A multishot accept reads RLIMIT_NOFILE once, when it is
 * prepared: a limit lowered later applies from the next one.)  Timeouts: the timer sweeps the worker's connections every tick (a
 * quarter of the shortest timeout, between 1 ms and 250 ms); a timeout is never
 * reported early.
 *
 * Shutdown.  A phase hook posts "stop accepting" to every worker in QUIESCE and
 * "close all" (reason HY_CLOSE_SHUTDOWN) in CANCEL; until CANCEL, open
 * connections go on being served through the drain.  The server's one task,
 * its drainer, keeps the drain and the cancel open while connections remain
 * (see the drainer below); one that never ran (no memory for its stack) is
 * replaced at the quiesce (drainer_check).
 *
 * Lock order: c->lock and s->lock are leaves; the port's cancel/start may be
 * called under c->lock.
 */
#include <string.h>

#include "net/internal.h"

#define BACKOFF_MIN HY_MS(10)
#define BACKOFF_MAX HY_SEC(1)
#define ERRORS_BEFORE_BACKOFF 64
#define CHUNK_MIN 4096

typedef struct srv_worker srv_worker;

typedef struct pkt {
  hy__op op;
  hy__completion c;
  srv_worker *sw;
  atomic_int busy; /* posted and not yet handled: not posted again */
} pkt;

typedef struct acc_op {
  hy__op op;
  hy__completion c;
  srv_worker *sw;
  int active;
  hy_addr_t peer;
} acc_op;

typedef struct chunk {
  struct chunk *next; /* in the out chain, or the worker's free chunks */
  size_t cap, len, off; /* buf[off, len) is still to send */
  char *buf;            /* data, or inside rbuf */
  void *rbuf;           /* a read buffer lent to the output (see
                           hy_sconn_write), back to the pool once sent */
  char data[];
} chunk;

typedef struct opc { /* an op with its completion, inside a connection */
  hy__op op;
  hy__completion c;
} opc;

struct hy_sconn {
  hy_server_t *srv;
  srv_worker *sw;
  intptr_t fd;
  void *user;
  hy_addr_t peer;
  char *rbuf;
  opc rd, wr, kick, rs;
  hy__lock_t lock;     /* out chain, sending, kick_pending, closing */
  chunk *out_head, *out_tail;
  size_t out_bytes;
  int sending, kick_pending, closing;
  int sent_early;      /* the send in flight completed inside its start:
                          its bytes are accounted for (see send_locked) */
  int reading;         /* worker-only from here */
  const char *in_buf;  /* during on_read: its buffer (pooled), and length */
  size_t in_len;
  int in_taken;        /* that buffer went to the output */
  int in_read;         /* on_read runs */
  int done_owed;       /* on_read's writes were all sent at once: on_write_done
                          is owed once it returns (see hy_sconn_write) */
  int read_deferred;   /* the next read waits for the send (see defer_read) */
  int on_defer_list;   /* in sw->defer_new or sw->defer_old (holds a ref) */
  int paused, close_after_flush, accepted, reset;
  /* Data a multishot read brought while c was paused (the chunks it read
   * before pause_read's cancel took effect), kept in order for the
   * resume: chunk headers whose rbuf is the read buffer and len its bytes.
   * held_eof: the end of the stream came after them. */
  chunk *held_head, *held_tail;
  int held_eof, resume_posted;
  int flush_reason;    /* the reason given when a flush-then-close ends */
  int refs;            /* under lock */
  int64_t last_read, last_write, stall_since;
  hy_sconn_t *next, *prev; /* sw->conns */
  hy_sconn_t *dnext;       /* sw->defer_new / defer_old */
};

struct srv_worker {
  hy_server_t *srv;
  int id;
  hy__worker *wk;
  acc_op *acc;
  int nacc_active;
  int accepting;       /* accepts are (to be) kept in flight */
  int64_t backoff, backoff_until;
  int errors_in_row;
  hy_sconn_t *conns;
  opc tm;
  int tm_active;
  int64_t tm_deadline;
  pkt start_pkt, stop_pkt, close_pkt;
  int closed_all;
  /* Reads held back until their connection's send has been submitted
   * (see defer_read): those deferred in the current batch, and those whose
   * sends went to the kernel at the end of the last wait.  defer_pkt walks
   * them forward one port wait at a time. */
  hy_sconn_t *defer_new, *defer_old;
  pkt defer_pkt;
  /* The worker's read buffers (pooled reads): a connection takes one only
   * while it has data to hand to on_read, so idle ones hold none. */
  hy__bufsrc src;
  void *pool;          /* free buffers, linked through their first word */
  int npool;
  /* Output chunks of CHUNK_MIN bytes that drained, for the next writes
   * made on this worker: a connection that has sent everything keeps none. */
  struct chunk *chunks;
  int nchunks;
  /* Chunk headers of borrowed read buffers (see hy_sconn_write), free. */
  struct chunk *zchunks;
  int nzchunks;
  atomic_int graceful; /* close all: flush output first (shutdown) */
};

struct hy_server {
  hy_runtime_t *rt;
  hy_server_config_t cfg;
  hy_server_callbacks_t cb;
  intptr_t fd;
  hy_addr_t addr;
  int nw;
  srv_worker *w;
  hy_cache_t *conn_cache, *buf_cache;
  int pooled;          /* reads take buffers from the worker's pool */
  int read_after_send; /* a read waits for the send its data caused */
  int send_now;        /* the port sends at once, without an op (epoll) */
  int multishot;       /* one multishot accept per worker (io_uring) */
  int msrecv;          /* reads are multishot (io_uring; see start_read) */
  int set_nodelay;     /* TCP_NODELAY on each accepted connection */
  int nacc;            /* accept ops kept in flight per worker */
  int64_t tick;
  hy__phase_hook hook;
  atomic_long live;
  hy__lock_t lock;     /* outstanding, closer, orphan */
  long outstanding;
  hy__wait *closer;
  int orphan;
  atomic_int closing, stopping;
  /* The drainer: a task that exists so that the runtime's drain phase
   * waits for this server's connections (the drain ends when no task is
   * left, or after `grace` without completions).  It parks until the
   * server has no connection left after the quiesce, or is closed, or the
   * cancel phase cancels it. */
  hy__lock_t dlock;
  hy__wait *dwait;
  int dstop;
  long nconns;          /* connections not yet released, under dlock */
  hy_task_t drainer;    /* joined by hy_server_close (has_drainer) */
  int has_drainer;
  hy__wait *cwait;      /* the drainer waiting for nconns == 0 */
  atomic_int draining;  /* quiesce seen */
  atomic_int last_accept_error; /* HY_E* (hy_server_stats) */
  _Atomic uint64_t accepted, refused, over_limit, accept_errors, backoffs,
      closed, timeouts, bytes_in, bytes_out;
  atomic_long nbufs;    /* read buffers allocated, not yet freed */
};

#define ST_ADD(f, n) atomic_fetch_add_explicit(&(f), (n), memory_order_relaxed)
#define POOL_KEEP 16 /* free read buffers a worker keeps */

/* ----------------------------------------------------------- read buffers */

static void *pool_get(hy__bufsrc *src) {
  srv_worker *sw = (srv_worker *)((char *)src - offsetof(srv_worker, src));
  void *b = sw->pool;
  if (b) {
    memcpy(&sw->pool, b, sizeof(void *));
    sw->npool--;
    return b;
  }
  b = hy__mem_alloc(sw->srv->cfg.read_buffer_size + sw->src.slack);
  if (b)
    atomic_fetch_add(&sw->srv->nbufs, 1);
  return b;
}

static void pool_put(hy__bufsrc *src, void *b) {
  srv_worker *sw = (srv_worker *)((char *)src - offsetof(srv_worker, src));
  if (sw->npool >= POOL_KEEP) {
    hy__mem_free(b);
    atomic_fetch_sub(&sw->srv->nbufs, 1);
    return;
  }
  memcpy(b, &sw->pool, sizeof(void *));
  sw->pool = b;
  sw->npool++;
}

static void srv_free(hy_server_t *s);

/* ------------------------------------------------------------ outstanding */

static void out_inc(hy_server_t *s) {
  hy__lock(&s->lock);
  s->outstanding++;
  hy__unlock(&s->lock);
}

static void out_dec(hy_server_t *s) {
  hy__lock(&s->lock);
  int zero = --s->outstanding == 0;
  int orphan = zero && s->orphan;
  if (zero && s->closer && hy__wait_claim(s->closer, 0))
    hy__wait_wake(s->closer);
  hy__unlock(&s->lock);
  if (orphan)
    srv_free(s);
}

/* Posts p to sw's worker unless it is posted already (the handlers act on
 * the current state, so one pending run serves every request). */
static int post_to(srv_worker *sw, pkt *p, void (*fn)(hy__completion *, hy__op *)) {
  if (atomic_exchange(&p->busy, 1))
    return 0;
  memset(&p->op, 0, sizeof p->op);
  p->op.kind = HY__OP_POST;
  p->op.data = &p->c;
  p->c.fn = fn;
  p->sw = sw;
  out_inc(sw->srv);
  int rc = hy__port_post(sw->wk->port, &p->op);
  if (rc < 0) {
    atomic_store(&p->busy, 0);
    out_dec(sw->srv);
  }
  return rc;
}

static pkt *pkt_of(hy__completion *cc) {
  pkt *p = (pkt *)((char *)cc - offsetof(pkt, c));
  atomic_store(&p->busy, 0);
  return p;
}

/* Worker-thread only. */
static chunk *chunk_get(srv_worker *sw) {
  chunk *k = sw->chunks;
  if (k) {
    sw->chunks = k->next;
    sw->nchunks--;
  }
  return k;
}

/* A header for n bytes that stay in buf, a read buffer lent by the pool
 * (rbuf: given back with the header, see chunk_put): a kept one or a new
 * one.  NULL: no memory.  Worker-thread only. */
static chunk *zchunk_get(srv_worker *sw, char *buf, size_t n, void *rbuf) {
  chunk *k = sw->zchunks;
  if (k) {
    sw->zchunks = k->next;
    sw->nzchunks--;
  } else if (!(k = hy__mem_alloc(sizeof *k))) {
    return NULL;
  }
  k->next = NULL;
  k->cap = k->len = n; /* nothing is appended to it in place */
  k->off = 0;
  k->buf = buf;
  k->rbuf = rbuf;
  return k;
}

/* A chunk that will not be reused.  Worker-thread only (or after the
 * workers are gone). */
static void chunk_free(srv_worker *sw, chunk *k) {
  if (k->rbuf)
    pool_put(&sw->src, k->rbuf);
  hy__mem_free(k);
}

/* A chunk that was sent: kept for the next writes on this worker where
 * it fits (a header that lent a read buffer gives the buffer back). */
static void chunk_put(srv_worker *sw, chunk *k) {
  if (k->buf != k->data) { /* a borrowed read buffer's header */
    if (k->rbuf)
      pool_put(&sw->src, k->rbuf);
    k->rbuf = NULL;
    if (sw->nzchunks >= POOL_KEEP) {
      hy__mem_free(k);
      return;
    }
    k->next = sw->zchunks;
    sw->zchunks = k;
    sw->nzchunks++;
    return;
  }
  if (k->cap != CHUNK_MIN || sw->nchunks >= POOL_KEEP) {
    chunk_free(sw, k);
    return;
  }
  k->next = sw->chunks;
  sw->chunks = k;
  sw->nchunks++;
}

/* ----------------------------------------------------------- connections */

static void conn_unref(hy_sconn_t *c);
static void drainer_stop(hy_server_t *s);
static void drainer_check(hy_server_t *s);
static void start_read(hy_sconn_t *c);
static int start_read_ref(hy_sconn_t *c, int give);
static void write_done_owed(hy_sconn_t *c);
static void start_send(hy_sconn_t *c);
static void send_done(hy__completion *cc, hy__op *op);
static void arm_timer(srv_worker *sw, int64_t deadline);
static void defer_read(hy_sconn_t *c);

static void conn_release(hy_sconn_t *c) {
  hy_server_t *s = c->srv;
  hy__port_forget_idle(c->sw->wk->port, c->fd); /* no op in flight now */
  if (c->reset)
    hy__fd_close_reset(c->fd);
  else
    hy__fd_close(c->fd);
  chunk *k = c->out_head;
  while (k) {
    chunk *n = k->next;
    chunk_free(c->sw, k);
    k = n;
  }
  for (k = c->held_head; k;) {
    chunk *n = k->next;
    chunk_free(c->sw, k); /* gives its read buffer back */
    k = n;
  }
  if (c->rbuf) {
    hy_cache_free(s->buf_cache, c->rbuf);
    atomic_fetch_sub(&s->nbufs, 1);
  }
  hy_cache_free(s->conn_cache, c);
  hy__lock(&s->dlock);
  if (--s->nconns == 0 && s->cwait && hy__wait_claim(s->cwait, 0))
    hy__wait_wake(s->cwait);
  hy__unlock(&s->dlock);
  out_dec(s);
}

static void conn_unref(hy_sconn_t *c) {
  hy__lock(&c->lock);
  int last = --c->refs == 0;
  hy__unlock(&c->lock);
  if (last)
    conn_release(c);
}

/* On the owning worker.  The last callback for c is on_close (when c was
 * accepted by the application). */
static void conn_close(hy_sconn_t *c, int reason, int err) {
  hy__lock(&c->lock);
  if (c->closing) {
    hy__unlock(&c->lock);
    return;
  }
  c->closing = 1;
  if (c->reading)
    hy__port_cancel(c->sw->wk->port, &c->rd.op);
  if (c->sending)
    hy__port_cancel(c->sw->wk->port, &c->wr.op);
  hy__unlock(&c->lock);
  srv_worker *sw = c->sw;
  hy_server_t *s = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else if (sw->conns == c)
    sw->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->next = c->prev = NULL;
  if (reason == HY_CLOSE_ERROR || reason == HY_CLOSE_IDLE_TIMEOUT ||
      reason == HY_CLOSE_READ_TIMEOUT || reason == HY_CLOSE_WRITE_TIMEOUT ||
      reason == HY_CLOSE_SHUTDOWN)
    c->reset = (reason != HY_CLOSE_SHUTDOWN || c->out_bytes > 0) &&
               err != HY_ECONNRESET; /* reset by the peer already */
  if (atomic_fetch_sub(&s->live, 1) == 1 && atomic_load(&s->draining))
    drainer_stop(s);
  ST_ADD(s->closed, 1);
  if (c->accepted && s->cb.on_close)
    s->cb.on_close(s, c, reason, err);
  conn_unref(c);
}

/* After on_read, whose writes were sent at once (see hy_sconn_write): the
 * on_write_done a send's completion would have brought, unless output is
 * still queued (then that send's completion brings it) or c is closing. */
static void write_done_owed(hy_sconn_t *c) {
  c->done_owed = 0;
  hy__lock(&c->lock);
  int idle = !c->closing && !c->sending && c->out_bytes == 0;
  hy__unlock(&c->lock);
  if (idle && c->srv->cb.on_write_done)
    c->srv->cb.on_write_done(c->srv, c);
}

/* Hands n bytes of c's stream to on_read: in pbuf (pooled; NULL: in
 * c->rbuf).  Returns 1 if the output took pbuf (see hy_sconn_write). */
static int deliver(hy_sconn_t *c, void *pbuf, size_t n) {
  hy_server_t *s = c->srv;
  if (s->tick) /* the times are for the sweep only */
    c->last_read = hy_now();
  ST_ADD(s->bytes_in, (uint64_t)n);
  c->in_buf = pbuf;
  c->in_len = n;
  c->in_taken = 0;
  c->in_read = 1;
  if (s->cb.on_read)
    s->cb.on_read(s, c, pbuf ? pbuf : c->rbuf, n);
  c->in_buf = NULL;
  c->in_read = 0;
  int taken = c->in_taken;
  if (c->done_owed)
    write_done_owed(c);
  return taken;
}

/* The end of c's stream.  Output still queued is sent first (the peer may
 * have half-closed and wait for it), then the connection closes. */
static void read_eof(hy_sconn_t *c) {
  hy__lock(&c->lock);
  int flush = c->out_bytes > 0;
  if (flush)
    c->close_after_flush = 1;
  hy__unlock(&c->lock);
  if (!flush)
    conn_close(c, HY_CLOSE_PEER, 0);
}

/* Keeps n bytes in the pooled buffer b for the resume (see held_head).
 * Returns 0 or HY_ENOMEM. */
static int hold(hy_sconn_t *c, void *b, size_t n) {
  chunk *k = zchunk_get(c->sw, b, n, b);
  if (!k)
    return HY_ENOMEM;
  if (c->held_tail)
    c->held_tail->next = k;
  else
    c->held_head = k;
  c->held_tail = k;
  return 0;
}

static void resume_done(hy__completion *cc, hy__op *op);

/* Posts o, one of c's own packets, to c's worker, where fn runs; the
 * caller has taken a reference on c for it.  Returns hy__port_post's
 * result. */
static int conn_post(hy_sconn_t *c, opc *o,
                     void (*fn)(hy__completion *, hy__op *)) {
  memset(&o->op, 0, sizeof o->op);
  o->op.kind = HY__OP_POST;
  o->op.data = &o->c;
  o->c.fn = fn;
  return hy__port_post(c->sw->wk->port, &o->op);
}

/* pause_read(c, 0) with data held: they go to on_read from a packet of
 * c's worker, not from inside the callback that resumed. */
static void post_resume(hy_sconn_t *c) {
  if (c->resume_posted)
    return;
  hy__lock(&c->lock);
  c->refs++;
  hy__unlock(&c->lock);
  c->resume_posted = 1;
  if (conn_post(c, &c->rs, resume_done) < 0) {
    c->resume_posted = 0;
    conn_close(c, HY_CLOSE_ERROR, HY_ENOMEM);
    conn_unref(c);
  }
}

static void resume_done(hy__completion *cc, hy__op *op) {
  (void)op;
  hy_sconn_t *c = (hy_sconn_t *)((char *)cc - offsetof(hy_sconn_t, rs.c));
  srv_worker *sw = c->sw;
  c->resume_posted = 0;
  while (c->held_head && !c->paused && !c->closing) {
    chunk *k = c->held_head;
    c->held_head = k->next;
    if (!c->held_head)
      c->held_tail = NULL;
    void *b = k->rbuf;
    size_t n = k->len;
    k->rbuf = NULL;
    chunk_put(sw, k);
    if (!deliver(c, b, n))
      pool_put(&sw->src, b);
  }
  if (!c->held_head && !c->paused && !c->closing) {
    if (c->held_eof) {
      c->held_eof = 0;
      read_eof(c);
    } else if (!c->reading) {
      start_read(c);
    }
  }
  conn_unref(c);
}

/* A read's completion.  A multishot read (s->msrecv) stays in flight
 * across them: each with data but its last has HY__OP_MORE, and holds no
 * reference of its own; the last one (the end, an error, HY_ECANCELED
 * after pause_read's or close's cancel, HY_EAGAIN when the port or the
 * kernel ended it) drops the read's reference or starts the read again.
 * Chunks that come while c is paused - or while chunks held then still
 * wait for the resume - are held, in order (see hold). */
static void read_done(hy__completion *cc, hy__op *op) {
  hy_sconn_t *c = (hy_sconn_t *)((char *)cc - offsetof(hy_sconn_t, rd.c));
  hy_server_t *s = c->srv;
  int64_t res = op->res;
  int more = (op->flags & HY__OP_MORE) != 0;
  if (res == HY__RES_READY) /* a late read (epoll): read now */
    res = c->closing ? HY_ECANCELED : hy__port_recv_now(c->sw->wk->port, op);
  void *pbuf = s->pooled ? op->buf : NULL; /* ours to give back */
  int given = 0; /* this read's reference went to the next read */
  if (!more)
    c->reading = 0;
  if (!c->closing) {
    if (res > 0 && pbuf && (c->paused || c->held_head)) {
      if (hold(c, pbuf, (size_t)res) < 0)
        conn_close(c, HY_CLOSE_ERROR, HY_ENOMEM);
      else
        pbuf = NULL;
    } else if (res > 0) {
      /* c->sending is written on this thread only. */
      int was_sending = c->sending;
      if (deliver(c, pbuf, (size_t)res))
        pbuf = NULL; /* the output has it now */
      if (!more && !c->closing && !c->paused) {
        if (s->read_after_send && !was_sending && c->sending)
          defer_read(c); /* an answer went out: read once it is sent */
        else
          given = start_read_ref(c, 1);
      }
    } else if ((res == HY_EAGAIN && s->pooled) ||
               (res == HY_ECANCELED && s->msrecv)) {
      /* The readiness was gone, or the multishot read ended (or was
       * cancelled by pause_read): read again unless paused, or unless
       * held data wait for the resume, which starts the read. */
      if (!c->paused && !c->held_head)
        given = start_read_ref(c, 1);
    } else if (res == 0) {
      if (c->held_head)
        c->held_eof = 1; /* after the held data */
      else
        read_eof(c);
    } else if (res != HY_ECANCELED) {
      conn_close(c, HY_CLOSE_ERROR, (int)res);
    }
  }
  if (pbuf)
    pool_put(&c->sw->src, pbuf);
  if (!more && !given)
    conn_unref(c);
}

/* Starts c's read.  give: the caller hands its own reference on c (that
 * of the read just completed) to the new read instead of the read taking
 * one - c stays alive all the same until this worker has handled the new
 * read's completion.  Returns 1 if the reference was taken so. */
static int start_read_ref(hy_sconn_t *c, int give) {
  c->read_deferred = 0;
  hy__lock(&c->lock);
  if (c->closing || c->reading) {
    hy__unlock(&c->lock);
    return 0;
  }
  memset(&c->rd.op, 0, sizeof c->rd.op);
  c->rd.op.kind = HY__OP_RECV;
  c->rd.op.fd = c->fd;
  c->rd.op.flags = HY__RECV_OWNED; /* closed only after port_forget */
  if (c->srv->send_now)
    c->rd.op.flags |= HY__RECV_LATE; /* epoll: read when handled */
  if (c->srv->msrecv)
    c->rd.op.flags |= HY__RECV_MULTI; /* io_uring: stays armed */
  if (c->srv->pooled) {
    c->rd.op.addr = &c->sw->src; /* buf NULL: a pooled read */
  } else {
    c->rd.op.buf = c->rbuf;
    c->rd.op.len = c->srv->cfg.read_buffer_size;
  }
  c->rd.op.data = &c->rd.c;
  c->rd.c.fn = read_done;
  if (!give)
    c->refs++;
  c->reading = 1;
  int rc = hy__port_start(c->sw->wk->port, &c->rd.op);
  if (rc < 0) {
    if (!give)
      c->refs--;
    c->reading = 0;
  }
  hy__unlock(&c->lock);
  if (rc < 0)
    conn_close(c, HY_CLOSE_ERROR, rc);
  return give && rc >= 0;
}

static void start_read(hy_sconn_t *c) { start_read_ref(c, 0); }

/* pre: c->lock.  n bytes of the head chunk went out.  Returns that chunk,
 * unlinked, when it was the last and is now empty (all sent: an idle
 * connection keeps no output memory), else NULL. */
static chunk *out_sent(hy_sconn_t *c, size_t n) {
  chunk *k = c->out_head;
  k->off += n;
  c->out_bytes -= n;
  if (k->off != k->len || k->next)
    return NULL;
  c->out_head = c->out_tail = NULL;
  return k;
}

/* pre: c->lock; on the owning worker.  The send just started completed
 * inside its start (hy__port_done_early: the epoll port sends at once
 * when the socket has room) with n > 0 bytes: they are accounted for now,
 * not when the completion is dequeued, and the chunk they emptied goes
 * back to the worker at once - the next write, on this connection or
 * another one of the batch, takes the same chunk (or read buffer) again
 * while it is still in the cache, instead of one per connection of the
 * batch held until the completions are dequeued.  A read buffer lent by
 * the on_read running now goes back to that read (in_taken), which gives
 * it to the pool once on_read returns: on_read's data stay valid. */
static void sent_early(hy_sconn_t *c, size_t n) {
  c->sent_early = 1;
  chunk *k = out_sent(c, n);
  if (k) {
    if (k->rbuf && k->rbuf == (const void *)c->in_buf) {
      k->rbuf = NULL;
      c->in_taken = 0;
    }
    chunk_put(c->sw, k);
  }
}

/* pre: c->lock; !c->sending; on the owning worker.  Returns 1 if started. */
static int send_locked(hy_sconn_t *c) {
  chunk *k = c->out_head;
  while (k && k->off == k->len && k->next) {
    c->out_head = k->next;
    chunk_free(c->sw, k);
    k = c->out_head;
  }
  if (!k || k->off == k->len)
    return 0;
  memset(&c->wr.op, 0, sizeof c->wr.op);
  c->wr.op.kind = HY__OP_SEND;
  c->wr.op.fd = c->fd;
  c->wr.op.buf = k->buf + k->off;
  c->wr.op.len = k->len - k->off;
  c->wr.op.flags = hy__sock_flag_nosignal();
  c->wr.op.data = &c->wr.c;
  c->wr.c.fn = send_done;
  c->refs++;
  c->sending = 1;
  hy__port *port = c->sw->wk->port;
  int rc = hy__port_start(port, &c->wr.op);
  if (rc < 0) {
    c->refs--;
    c->sending = 0;
    return rc;
  }
  if (hy__port_done_early(port, &c->wr.op) && c->wr.op.res > 0)
    sent_early(c, (size_t)c->wr.op.res);
  return 1;
}

static void send_done(hy__completion *cc, hy__op *op) {
  hy_sconn_t *c = (hy_sconn_t *)((char *)cc - offsetof(hy_sconn_t, wr.c));
  hy_server_t *s = c->srv;
  int64_t res = op->res;
  int flushed = 0, rc = 0;
  chunk *drained = NULL;
  hy__lock(&c->lock);
  c->sending = 0;
  int early = c->sent_early; /* res is accounted for already */
  c->sent_early = 0;
  if (res > 0) {
    if (!early)
      drained = out_sent(c, (size_t)res);
    if (!c->closing) {
      rc = send_locked(c);
      flushed = rc == 0;
    }
  }
  hy__unlock(&c->lock);
  if (drained)
    chunk_put(c->sw, drained);
  if (res > 0) {
    ST_ADD(s->bytes_out, (uint64_t)res);
    if (s->tick)
      c->last_write = c->stall_since = hy_now();
    if (c->read_deferred && !c->closing && !c->paused)
      start_read(c); /* the read that waited for this send */
  }
  if (!c->closing) {
    if (res < 0 && res != HY_ECANCELED)
      conn_close(c, HY_CLOSE_ERROR, (int)res);
    else if (res == 0)
      conn_close(c, HY_CLOSE_ERROR, HY_EPIPE);
    else if (rc < 0)
      conn_close(c, HY_CLOSE_ERROR, rc);
    else if (flushed) {
      hy__lock(&c->lock);
      int then_close = c->close_after_flush && c->out_bytes == 0;
      hy__unlock(&c->lock);
      if (then_close)
        conn_close(c, c->flush_reason ? c->flush_reason : HY_CLOSE_APP, 0);
      else if (s->cb.on_write_done)
        s->cb.on_write_done(s, c);
    }
  }
  conn_unref(c);
}

static void start_send(hy_sconn_t *c) {
  hy__lock(&c->lock);
  int rc = 0;
  if (!c->closing && !c->sending)
    rc = send_locked(c);
  hy__unlock(&c->lock);
  if (rc < 0)
    conn_close(c, HY_CLOSE_ERROR, rc);
}

/* ------------------------------------------------------ deferred reads */

/* On io_uring a receive submitted before its data is there costs the
 * kernel a poll arm, then a wake-up and task work that make the receive
 * when the data comes; one submitted after the data came is made at once,
 * in the submit (the raw reference's one recv per message).  A peer in
 * request/response sends its next request only once our answer reached
 * it, so when on_read answered (it started a send), the next read waits
 * for that send's completion, which starts it - the order of a task that
 * reads, then writes, then reads.  It waits no longer than until the send
 * has been submitted and a reap after that did not bring its completion
 * (a send that waits for room in the socket buffer): then the read starts
 * anyway, so reading, and max_output's bound on what on_read may queue,
 * go on while output is stuck, as without the deferral.  The worker's
 * defer_pkt measures that: posted when a read of the batch is deferred,
 * it is dequeued by the next port wait (whose end submits what the batch
 * started) and moves the batch's deferrals to defer_old; posted again, it
 * is dequeued by the wait after that, after the completions that wait
 * reaped (a send that completes in its submit has then been seen).
 * Epoll has no such cost (a waiting read is an fd already in the epoll
 * set), so there reads start at once. */
static void defer_pkt_done(hy__completion *cc, hy__op *op);

/* Starts the deferred reads of a list; drops the list's references. */
static void run_deferred(hy_sconn_t *c) {
  while (c) {
    hy_sconn_t *next = c->dnext;
    c->dnext = NULL;
    c->on_defer_list = 0;
    if (c->read_deferred && !c->closing && !c->paused)
      start_read(c);
    c->read_deferred = 0;
    conn_unref(c);
    c = next;
  }
}

static void defer_read(hy_sconn_t *c) {
  srv_worker *sw = c->sw;
  c->read_deferred = 1;
  if (!c->on_defer_list) {
    hy__lock(&c->lock);
    c->refs++;
    hy__unlock(&c->lock);
    c->on_defer_list = 1;
    c->dnext = sw->defer_new;
    sw->defer_new = c;
  }
  if (post_to(sw, &sw->defer_pkt, defer_pkt_done) < 0) {
    /* No packet: no deferral either. */
    hy_sconn_t *list = sw->defer_new;
    sw->defer_new = NULL;
    run_deferred(list);
  }
}

static void defer_pkt_done(hy__completion *cc, hy__op *op) {
  (void)op;
  pkt *p = pkt_of(cc);
  srv_worker *sw = p->sw;
  hy_sconn_t *due = sw->defer_old;
  sw->defer_old = sw->defer_new;
  sw->defer_new = NULL;
  run_deferred(due);
  if (sw->defer_old && post_to(sw, &sw->defer_pkt, defer_pkt_done) < 0) {
    due = sw->defer_old;
    sw->defer_old = NULL;
    run_deferred(due);
  }
  out_dec(sw->srv);
}

static void kick_done(hy__completion *cc, hy__op *op) {
  (void)op;
  hy_sconn_t *c = (hy_sconn_t *)((char *)cc - offsetof(hy_sconn_t, kick.c));
  hy__lock(&c->lock);
  c->kick_pending = 0;
  hy__unlock(&c->lock);
  start_send(c);
  conn_unref(c);
}

int hy_sconn_write(hy_sconn_t *c, const void *data, size_t len) {
  if (!c || (!data && len))
    return HY_EINVAL;
  if (len == 0)
    return 0;
  hy_server_t *s = c->srv;
  hy__lock(&c->lock);
  if (c->closing || c->close_after_flush) {
    hy__unlock(&c->lock);
    return HY_ECLOSED;
  }
  if (c->out_bytes + len > s->cfg.max_output) {
    hy__unlock(&c->lock);
    return HY_EAGAIN;
  }
  int on_worker = hy__worker_current(s->rt) == c->sw->wk;
  if (!on_worker && !c->sending && !c->kick_pending) {
    /* From another thread the worker is told first, since telling can
     * fail (a post on IOCP): then nothing is queued, and HY_ENOMEM means
     * that.  The kick takes c->lock, so it sees what is queued below. */
    c->kick_pending = 1;
    c->refs++;
    if (conn_post(c, &c->kick, kick_done) < 0) {
      c->kick_pending = 0;
      c->refs--;
      hy__unlock(&c->lock);
      return HY_ENOMEM;
    }
  }
  /* (c->in_read, like c->in_buf, is the owning worker's: read only there) */
  if (on_worker && c->in_read && !c->sending && !c->out_head && s->send_now) {
    /* From on_read with nothing queued: sent at once where the port can
     * (epoll), as a plain epoll loop answers - no copy, no op, no
     * completion; on_write_done follows when on_read returns.  What the
     * socket does not take is queued as below. */
    int64_t k = hy__port_send_now(c->sw->wk->port, c->fd, data, len,
                                  hy__sock_flag_nosignal());
    if (k > 0) {
      ST_ADD(s->bytes_out, (uint64_t)k);
      if (s->tick)
        c->last_write = c->stall_since = hy_now();
      data = (const char *)data + k;
      len -= (size_t)k;
      if (len == 0) {
        c->done_owed = 1;
        hy__unlock(&c->lock);
        return 0;
      }
    }
  }
  chunk *t = c->out_tail;
  size_t room = t ? t->cap - t->len : 0;
  /* Bytes past the in-flight range of the tail chunk can be appended in
   * place: the send covers [off, len at start) and memory never moves. */
  size_t first = room < len ? room : len;
  /* From on_read, bytes of the pooled buffer it was given (an echo, a
   * forwarded part): the output borrows that buffer instead of copying
   * them, and gives it back to the pool once they are sent rather than
   * when on_read returns.  Only for writes of a chunk's size or more: a
   * small answer is copied, so as not to hold a whole read buffer for it.
   * (c->in_buf is the owning worker's: read only there.) */
  chunk *z = NULL;
  if (on_worker && c->in_buf && !c->in_taken && len >= CHUNK_MIN &&
      (const char *)data >= c->in_buf &&
      len <= c->in_len - (size_t)((const char *)data - c->in_buf))
    z = zchunk_get(c->sw, (char *)data, len, (void *)c->in_buf);
  if (z) {
    c->in_taken = 1;
    if (t)
      t->next = z;
    else
      c->out_head = z;
    c->out_tail = z;
  } else if (len > first) {
    size_t cap = len - first > CHUNK_MIN ? len - first : CHUNK_MIN;
    chunk *n = cap == CHUNK_MIN && on_worker ? chunk_get(c->sw) : NULL;
    if (!n)
      n = hy__mem_alloc(sizeof *n + cap);
    if (!n) {
      hy__unlock(&c->lock);
      return HY_ENOMEM;
    }
    n->next = NULL;
    n->cap = cap;
    n->off = 0;
    n->len = len - first;
    n->buf = n->data;
    n->rbuf = NULL;
    memcpy(n->buf, (const char *)data + first, len - first);
    if (first)
      memcpy(t->buf + t->len, data, first), t->len += first;
    if (t)
      t->next = n;
    else
      c->out_head = n;
    c->out_tail = n;
  } else {
    memcpy(t->buf + t->len, data, len);
    t->len += len;
  }
  if (c->out_bytes == 0 && s->tick)
    c->stall_since = hy_now();
  c->out_bytes += len;
  int rc = 0;
  if (on_worker && !c->sending)
    rc = send_locked(c);
  hy__unlock(&c->lock);
  if (rc < 0) {
    conn_close(c, HY_CLOSE_ERROR, rc);
    return rc;
  }
  return 0;
}

size_t hy_sconn_pending(hy_sconn_t *c) {
  hy__lock(&c->lock);
  size_t n = c->out_bytes;
  hy__unlock(&c->lock);
  return n;
}

void hy_sconn_pause_read(hy_sconn_t *c, int paused) {
  c->paused = paused != 0;
  /* A resume inside on_read on IOCP, where each receive goes into the
   * connection's own buffer, would post the next receive into the bytes
   * on_read is still reading: that read starts when on_read returns
   * (read_done).  Pooled reads take another buffer and start at once. */
  int own_buf_busy = c->in_read && !c->srv->pooled;
  if (c->paused) {
    if (c->srv->tick)
      c->last_read = hy_now(); /* a paused reader is not idle on reads */
    /* A multishot read would go on reading: cancel it, so that the data
     * stay in the kernel (TCP's window throttles the peer); chunks it
     * brought before the cancel are held for the resume. */
    if (c->srv->msrecv && c->reading && !c->closing)
      hy__port_cancel(c->sw->wk->port, &c->rd.op);
  } else if ((c->held_head || c->held_eof) && !c->closing) {
    post_resume(c); /* the held data first; it starts the read */
  } else if (!c->reading && !c->closing && !own_buf_busy) {
    start_read(c);
  }
}

void hy_sconn_close(hy_sconn_t *c, int flush) {
  hy__lock(&c->lock);
  int wait = flush && c->out_bytes > 0 && !c->closing;
  if (wait)
    c->close_after_flush = 1;
  hy__unlock(&c->lock);
  if (!wait)
    conn_close(c, HY_CLOSE_APP, 0);
}

void hy_sconn_set_user(hy_sconn_t *c, void *user) { c->user = user; }
void *hy_sconn_user(hy_sconn_t *c) { return c->user; }
int hy_sconn_peer_addr(hy_sconn_t *c, hy_addr_t *out) {
  if (!c || !out)
    return HY_EINVAL;
  int rc = 0;
  hy__lock(&c->lock);
  if (c->peer.len == 0) /* a multishot accept does not report it */
    rc = hy__sock_peer(c->fd, &c->peer);
  *out = c->peer;
  hy__unlock(&c->lock);
  return rc < 0 ? rc : 0;
}
int hy_sconn_worker(hy_sconn_t *c) { return c->sw->id; }

int hy_sconn_set_nodelay(hy_sconn_t *c, int on) {
  if (!c)
    return HY_EINVAL;
  if (c->closing)
    return HY_ECLOSED;
  return hy__sock_set(c->fd, HY__OPT_NODELAY, on != 0, NULL);
}

intptr_t hy__sconn_fd(hy_sconn_t *c) { return c->fd; }

const char *hy_close_reason_name(int reason) {
  static const char *names[] = {"none",         "peer",        "app",
                                "error",        "idle-timeout", "read-timeout",
                                "write-timeout", "refused",    "shutdown"};
  return reason >= 0 && reason <= HY_CLOSE_SHUTDOWN ? names[reason]
                                                    : "unknown";
}

/* --------------------------------------------------------------- accepts */

static void start_accept(acc_op *a);

static void new_conn(srv_worker *sw, intptr_t fd, const hy_addr_t *peer) {
  hy_server_t *s = sw->srv;
  ST_ADD(s->accepted, 1);
  long max = s->cfg.max_connections;
  if (max > 0 && atomic_fetch_add(&s->live, 1) >= max) {
    atomic_fetch_sub(&s->live, 1);
    ST_ADD(s->over_limit, 1);
    hy__fd_close_reset(fd);
    return;
  }
  if (max <= 0)
    atomic_fetch_add(&s->live, 1);
  /* Where the listener's TCP_NODELAY is not inherited, each connection
   * gets it here.  A failure (a peer that reset at once) is left to the
   * first read to report. */
  if (s->set_nodelay)
    hy__sock_set(fd, HY__OPT_NODELAY, 1, NULL);
  hy_sconn_t *c = hy_cache_alloc(s->conn_cache);
  char *buf = c && !s->pooled ? hy_cache_alloc(s->buf_cache) : NULL;
  if (buf)
    atomic_fetch_add(&s->nbufs, 1);
  int rc = c && (buf || s->pooled)
               ? hy__port_associate_accepted(sw->wk->port, fd)
               : HY_ENOMEM;
  if (rc < 0) {
    if (buf) {
      hy_cache_free(s->buf_cache, buf);
      atomic_fetch_sub(&s->nbufs, 1);
    }
    if (c)
      hy_cache_free(s->conn_cache, c);
    atomic_fetch_sub(&s->live, 1);
    ST_ADD(s->accept_errors, 1);
    hy__fd_close_reset(fd);
    return;
  }
  memset(c, 0, sizeof *c);
  c->srv = s;
  c->sw = sw;
  c->fd = fd;
  c->rbuf = buf;
  c->peer = *peer;
  c->refs = 1;
  c->last_read = c->last_write = hy_now();
  out_inc(s);
  hy__lock(&s->dlock);
  s->nconns++;
  hy__unlock(&s->dlock);
  c->next = sw->conns;
  if (sw->conns)
    sw->conns->prev = c;
  sw->conns = c;
  if (s->cb.on_accept && s->cb.on_accept(s, c) != 0) {
    ST_ADD(s->refused, 1);
    conn_close(c, HY_CLOSE_REFUSED, 0);
    return;
  }
  c->accepted = 1;
  if (!c->closing && !c->paused)
    start_read(c);
}

/* An accept failed with res: counted, and kept as the last error
 * (hy_server_stats). */
static void count_accept_error(hy_server_t *s, int64_t res) {
  ST_ADD(s->accept_errors, 1);
  atomic_store_explicit(&s->last_accept_error, (int)res,
                        memory_order_relaxed);
}

static void accept_done(hy__completion *cc, hy__op *op) {
  acc_op *a = (acc_op *)((char *)cc - offsetof(acc_op, c));
  srv_worker *sw = a->sw;
  hy_server_t *s = sw->srv;
  int64_t res = op->res;
  /* A multishot accept's completions but the last leave it in flight. */
  int more = (op->flags & HY__OP_MORE) != 0;
  if (!more) {
    a->active = 0;
    sw->nacc_active--;
  }
  if (res >= 0) {
    sw->errors_in_row = 0;
    sw->backoff = 0;
    hy_addr_t peer = a->peer;
    peer.len = op->addr ? op->addrlen : 0; /* 0: looked up when asked */
    if (!sw->accepting || s->closing)
      hy__fd_close_reset((intptr_t)res);
    else
      new_conn(sw, (intptr_t)res, &peer);
    if (sw->accepting && !more)
      start_accept(a);
  } else if (more) {
    /* A multishot accept goes on after an error only when the port had
     * to drop a connection (no memory to hand it over): counted, no
     * back-off (the accept is still in flight). */
    count_accept_error(s, res);
  } else if (res != HY_ECANCELED && sw->accepting) {
    count_accept_error(s, res);
    int out_of_fds = res == HY_EMFILE || res == HY_ENFILE || res == HY_ENOBUFS ||
                     res == HY_ENOMEM;
    /* A connection its peer reset before it was accepted (IOCP's AcceptEx
     * reports it; Linux accepts the connection anyway) is counted, but is
     * the peer's doing, not the server's: no back-off, accept again at
     * once (a peer sending resets must not pause accepting). */
    int peers = res == HY_ECONNRESET || res == HY_ECONNABORTED;
    if (!peers &&
        (out_of_fds || ++sw->errors_in_row >= ERRORS_BEFORE_BACKOFF)) {
      /* Leave this accept idle until the back-off ends (the timer restarts
       * every idle accept then). */
      int64_t now = hy_now();
      if (now >= sw->backoff_until) {
        sw->backoff = sw->backoff ? sw->backoff * 2 : BACKOFF_MIN;
        if (sw->backoff > BACKOFF_MAX)
          sw->backoff = BACKOFF_MAX;
        sw->backoff_until = now + sw->backoff;
        ST_ADD(s->backoffs, 1);
      }
      sw->errors_in_row = 0;
      arm_timer(sw, sw->backoff_until);
    } else {
      start_accept(a);
    }
  }
  if (!more)
    out_dec(s);
}

static void start_accept(acc_op *a) {
  srv_worker *sw = a->sw;
  hy_server_t *s = sw->srv;
  if (a->active || !sw->accepting || hy_now() < sw->backoff_until)
    return;
  memset(&a->op, 0, sizeof a->op);
  memset(&a->peer, 0, sizeof a->peer);
  a->op.kind = HY__OP_ACCEPT;
  a->op.fd = s->fd;
  if (s->multishot) {
    a->op.flags = HY__ACCEPT_MULTI; /* no address: asked for when needed */
  } else {
    a->op.addr = a->peer.sa.raw;
    a->op.addrlen = sizeof a->peer.sa.raw;
  }
  a->op.data = &a->c;
  a->c.fn = accept_done;
  out_inc(s);
  if (hy__port_start(sw->wk->port, &a->op) < 0) {
    out_dec(s);
    arm_timer(sw, hy_now() + BACKOFF_MIN); /* try again later */
    return;
  }
  a->active = 1;
  sw->nacc_active++;
}

/* ---------------------------------------------------------- timer, sweep */

static void sweep(srv_worker *sw, int64_t now) {
  hy_server_t *s = sw->srv;
  const hy_server_config_t *g = &s->cfg;
  hy_sconn_t *c = sw->conns;
  while (c) {
    hy_sconn_t *next = c->next;
    int kind = 0;
    int64_t last_any = c->last_read > c->last_write ? c->last_read
                                                    : c->last_write;
    hy__lock(&c->lock);
    size_t pending = c->out_bytes;
    hy__unlock(&c->lock);
    if (g->write_timeout && pending && now - c->stall_since >= g->write_timeout)
      kind = HY_TIMEOUT_WRITE;
    else if (g->read_timeout && !c->paused &&
             now - c->last_read >= g->read_timeout)
      kind = HY_TIMEOUT_READ;
    else if (g->idle_timeout && now - last_any >= g->idle_timeout)
      kind = HY_TIMEOUT_IDLE;
    if (kind) {
      int keep = s->cb.on_timeout ? s->cb.on_timeout(s, c, kind) : 0;
      if (c->closing) {
        /* closed by the callback */
      } else if (keep) {
        if (kind == HY_TIMEOUT_WRITE)
          c->stall_since = now;
        else if (kind == HY_TIMEOUT_READ)
          c->last_read = now;
        else
          c->last_read = c->last_write = now;
      } else {
        ST_ADD(s->timeouts, 1);
        conn_close(c, kind == HY_TIMEOUT_IDLE   ? HY_CLOSE_IDLE_TIMEOUT
                      : kind == HY_TIMEOUT_READ ? HY_CLOSE_READ_TIMEOUT
                                                : HY_CLOSE_WRITE_TIMEOUT,
                   HY_ETIMEDOUT);
      }
    }
    c = next;
  }
}

static void timer_done(hy__completion *cc, hy__op *op) {
  (void)op;
  srv_worker *sw = (srv_worker *)((char *)cc - offsetof(srv_worker, tm.c));
  hy_server_t *s = sw->srv;
  sw->tm_active = 0;
  int64_t now = hy_now();
  if (!sw->closed_all) {
    sweep(sw, now);
    int64_t next = s->tick ? now + s->tick : HY_FOREVER;
    if (sw->accepting && sw->nacc_active < s->nacc) {
      if (now >= sw->backoff_until) {
        for (int i = 0; i < s->nacc; i++)
          start_accept(&sw->acc[i]);
      } else if (sw->backoff_until < next) {
        next = sw->backoff_until;
      }
    }
    if (next != HY_FOREVER)
      arm_timer(sw, next);
  }
  out_dec(s);
}

/* Makes the worker's timer fire no later than deadline. */
static void arm_timer(srv_worker *sw, int64_t deadline) {
  hy_server_t *s = sw->srv;
  if (sw->closed_all)
    return;
  if (sw->tm_active) {
    if (sw->tm_deadline <= deadline)
      return;
    /* Earlier than the one in flight: cancel it; its completion sweeps
     * and arms the next deadline from the current state. */
    hy__port_cancel(sw->wk->port, &sw->tm.op);
    return;
  }
  memset(&sw->tm.op, 0, sizeof sw->tm.op);
  sw->tm.op.kind = HY__OP_TIMEOUT;
  sw->tm.op.deadline = deadline;
  sw->tm.op.data = &sw->tm.c;
  sw->tm.c.fn = timer_done;
  out_inc(s);
  if (hy__port_start(sw->wk->port, &sw->tm.op) < 0) {
    out_dec(s);
    return;
  }
  sw->tm_active = 1;
  sw->tm_deadline = deadline;
}

/* --------------------------------------------------------------- packets */

static void start_pkt_done(hy__completion *cc, hy__op *op) {
  (void)op;
  pkt *p = pkt_of(cc);
  srv_worker *sw = p->sw;
  hy_server_t *s = sw->srv;
  if (!s->stopping && !s->closing &&
      hy__port_associate(sw->wk->port, s->fd) == 0) {
    sw->accepting = 1;
    for (int i = 0; i < s->nacc; i++)
      start_accept(&sw->acc[i]);
  }
  if (s->tick)
    arm_timer(sw, hy_now() + s->tick);
  out_dec(s);
}

static void stop_accepting_here(srv_worker *sw) {
  sw->accepting = 0;
  for (int i = 0; i < sw->srv->cfg.pending_accepts; i++)
    if (sw->acc[i].active)
      hy__port_cancel(sw->wk->port, &sw->acc[i].op);
}

static void stop_pkt_done(hy__completion *cc, hy__op *op) {
  (void)op;
  pkt *p = pkt_of(cc);
  stop_accepting_here(p->sw);
  out_dec(p->sw->srv);
}

static void close_pkt_done(hy__completion *cc, hy__op *op) {
  (void)op;
  pkt *p = pkt_of(cc);
  srv_worker *sw = p->sw;
  stop_accepting_here(sw);
  sw->closed_all = 1;
  if (sw->tm_active)
    hy__port_cancel(sw->wk->port, &sw->tm.op);
  int graceful = atomic_load(&sw->graceful);
  hy_sconn_t *c = sw->conns;
  while (c) {
    hy_sconn_t *next = c->next;
    hy__lock(&c->lock);
    int flush = graceful && c->out_bytes > 0 && !c->closing;
    if (flush) {
      /* Answers already queued are sent; nothing more is read. */
      c->close_after_flush = 1;
      c->flush_reason = HY_CLOSE_SHUTDOWN;
      c->paused = 1;
      if (c->reading)
        hy__port_cancel(sw->wk->port, &c->rd.op);
    }
    hy__unlock(&c->lock);
    if (!flush)
      conn_close(c, HY_CLOSE_SHUTDOWN, 0);
    c = next;
  }
  out_dec(sw->srv);
}

static int accepts_on(hy_server_t *s, int i) {
  return s->cfg.worker_mask == 0 || i >= 64 ||
         ((s->cfg.worker_mask >> i) & 1);
}

static void phase_hook(void *arg, int phase, int worker) {
  hy_server_t *s = arg;
  if (worker < 0 || worker >= s->nw)
    return;
  srv_worker *sw = &s->w[worker];
  if (phase == HY_PHASE_QUIESCE) {
    drainer_check(s); /* hooks run one at a time (rt->mu) */
    atomic_store(&s->draining, 1);
    post_to(sw, &sw->stop_pkt, stop_pkt_done);
    if (atomic_load(&s->live) == 0)
      drainer_stop(s);
  } else if (phase == HY_PHASE_CANCEL) {
    atomic_store(&sw->graceful, 1);
    post_to(sw, &sw->close_pkt, close_pkt_done);
  }
}

/* --------------------------------------------------------------- drainer */

static void *drainer(void *arg);

/* Spawns s's drainer into s->drainer; quiesce: from the phase hook
 * (hy__task_spawn_quiesce). */
static int drainer_spawn(hy_server_t *s, int quiesce) {
  hy_task_opts_t to = HY_TASK_OPTS_INIT;
  to.name = "server-drain";
  return (quiesce ? hy__task_spawn_quiesce : hy_task_spawn)(
      s->rt, drainer, s, &to, &s->drainer);
}

/* At the quiesce, from the phase hook (once per worker; a drainer already
 * replaced is alive or ran, and stays): a drainer that never ran (no
 * memory for its stack when it was to start) is replaced now, so that the
 * drain and cancel phases still wait for the connections.  If none can be
 * spawned, its share of the outstanding work goes (as hy_server_close
 * would drop it) and connections are closed by the cancel phase at once. */
static void drainer_check(hy_server_t *s) {
  if (!s->has_drainer || hy__task_reap_unrun(s->rt, s->drainer) != 1)
    return;
  if (drainer_spawn(s, 1) < 0) {
    s->has_drainer = 0;
    out_dec(s);
  }
}

static void drainer_stop(hy_server_t *s) {
  hy__lock(&s->dlock);
  s->dstop = 1;
  if (s->dwait && hy__wait_claim(s->dwait, 0))
    hy__wait_wake(s->dwait);
  hy__unlock(&s->dlock);
}

/* Waits, without being cancellable, until every connection has been
 * released or the deadline passed.  Returns 1 if none is left. */
static int wait_conns(hy_server_t *s, int64_t deadline) {
  hy__wait w;
  atomic_init(&w.state, HY__WAITING);
  w.result = 0;
  w.rt = s->rt;
  w.task = hy__task_current(s->rt);
  hy__lock(&s->dlock);
  if (s->nconns == 0) {
    hy__unlock(&s->dlock);
    return 1;
  }
  s->cwait = &w;
  hy__unlock(&s->dlock);
  int st = hy__wait_park(&w, deadline);
  hy__lock(&s->dlock);
  s->cwait = NULL;
  int none = s->nconns == 0;
  hy__unlock(&s->dlock);
  (void)st;
  return none;
}

static void *drainer(void *arg) {
  hy_server_t *s = arg;
  hy__wait w;
  int cancelled = 1;
  if (hy__wait_init(&w, s->rt) == 0) {
    hy__lock(&s->dlock);
    if (s->dstop) {
      hy__wait_claim(&w, 0);
      hy__unlock(&s->dlock);
      cancelled = 0;
    } else {
      s->dwait = &w;
      hy__unlock(&s->dlock);
      cancelled = hy__wait_park(&w, HY_FOREVER) == HY__FIRED_CANCEL;
      hy__lock(&s->dlock);
      s->dwait = NULL;
      hy__unlock(&s->dlock);
    }
    hy__wait_fini(&w);
  }
  if (cancelled && !atomic_load(&s->closing)) {
    /* The runtime's cancel phase: its workers run until no task is left,
     * so this task stays until the connections (closed by the phase hook,
     * flushing what they had queued) are released - for at most `grace`,
     * after which the rest are closed at once. */
    if (!wait_conns(s, hy_deadline_in(s->rt->grace))) {
      for (int i = 0; i < s->nw; i++) {
        atomic_store(&s->w[i].graceful, 0);
        post_to(&s->w[i], &s->w[i].close_pkt, close_pkt_done);
      }
      wait_conns(s, HY_FOREVER);
    }
  }
  out_dec(s);
  return NULL;
}

/* ----------------------------------------------------------------- public */

static void srv_free(hy_server_t *s) {
  if (s->fd != HY__BAD_SOCK)
    hy__fd_close(s->fd);
  for (int i = 0; s->w && i < s->nw; i++) {
    hy__mem_free(s->w[i].acc);
    while (s->w[i].pool) {
      void *b = s->w[i].pool;
      memcpy(&s->w[i].pool, b, sizeof(void *));
      hy__mem_free(b);
    }
    while (s->w[i].chunks) {
      chunk *k = s->w[i].chunks;
      s->w[i].chunks = k->next;
      hy__mem_free(k);
    }
    while (s->w[i].zchunks) {
      chunk *k = s->w[i].zchunks;
      s->w[i].zchunks = k->next;
      hy__mem_free(k);
    }
  }
  hy__mem_free(s->w);
  if (s->conn_cache)
    hy_cache_destroy(s->conn_cache);
  if (s->buf_cache)
    hy_cache_destroy(s->buf_cache);
  hy__mem_free(s);
}

int hy_server_start(hy_runtime_t *rt, const hy_server_config_t *cfg,
                    const hy_server_callbacks_t *cb, hy_server_t **out) {
  if (!rt || !cfg || !out || cfg->size < sizeof *cfg)
    return HY_EINVAL;
  *out = NULL;
  if (hy__phase(rt) != HY__PH_RUNNING)
    return HY_ESHUTDOWN;
  hy_server_t *s = hy__mem_calloc(1, sizeof *s);
  if (!s)
    return HY_ENOMEM;
  s->rt = rt;
  s->cfg = *cfg;
  s->fd = HY__BAD_SOCK;
  if (cb)
    s->cb = *cb;
  hy_server_config_t *g = &s->cfg;
  if (g->pending_accepts <= 0)
    g->pending_accepts = 4;
  if (g->read_buffer_size == 0)
    g->read_buffer_size = 16 * 1024;
  if (g->read_buffer_size > (1u << 30))
    g->read_buffer_size = 1u << 30;
  if (g->read_buffer_size < sizeof(void *))
    g->read_buffer_size = sizeof(void *); /* a free one holds a link */
  /* Pooled reads where the port takes buffers late (io_uring, epoll);
   * IOCP reads into a buffer fixed when the read is posted. */
  s->pooled = hy__port_backend(rt->workers[0].port) != HY__BACKEND_IOCP;
  /* Reads wait for the send their data caused where a read submitted
   * early costs the kernel more (io_uring: see defer_read). */
  s->read_after_send =
      hy__port_backend(rt->workers[0].port) == HY__BACKEND_URING;
  s->send_now = hy__port_backend(rt->workers[0].port) == HY__BACKEND_EPOLL;
  /* On io_uring one multishot accept per worker stands for many pending
   * ones (a kernel without it makes it a plain accept, restarted each
   * time); elsewhere pending_accepts plain accepts are kept in flight. */
  s->multishot = hy__port_backend(rt->workers[0].port) == HY__BACKEND_URING;
  s->nacc = s->multishot ? 1 : g->pending_accepts;
  /* On io_uring a read stays armed across messages (multishot receive:
   * no receive submitted, nor poll armed, per message; a kernel without
   * it makes each a one-shot read, whose completions are the last). */
  s->msrecv = s->multishot;
  if (g->max_output == 0)
    g->max_output = 1024 * 1024;
  int64_t shortest = 0;
  int64_t t[3] = {g->idle_timeout, g->read_timeout, g->write_timeout};
  for (int i = 0; i < 3; i++)
    if (t[i] > 0 && (!shortest || t[i] < shortest))
      shortest = t[i];
  if (shortest) {
    s->tick = shortest / 4;
    if (s->tick < HY_MS(1))
      s->tick = HY_MS(1);
    if (s->tick > HY_MS(250))
      s->tick = HY_MS(250);
  }
  s->nw = rt->nworkers ? rt->nworkers : 1;
  int rc = HY_ENOMEM;
  s->w = hy__mem_calloc((size_t)s->nw, sizeof *s->w);
  if (!s->w)
    goto fail;
  for (int i = 0; i < s->nw; i++) {
    srv_worker *sw = &s->w[i];
    sw->srv = s;
    sw->id = i;
    sw->wk = &rt->workers[i];
    sw->src.get = pool_get;
    sw->src.put = pool_put;
    sw->src.size = g->read_buffer_size;
    /* The epoll port reads the byte past a full read into the buffer. */
    sw->src.slack =
        hy__port_backend(rt->workers[0].port) == HY__BACKEND_EPOLL ? 1 : 0;
    sw->acc = hy__mem_calloc((size_t)g->pending_accepts, sizeof *sw->acc);
    if (!sw->acc)
      goto fail;
    for (int k = 0; k < g->pending_accepts; k++)
      sw->acc[k].sw = sw;
  }
  if ((rc = hy_cache_create("hydra.sconn", sizeof(hy_sconn_t), 64, NULL, NULL,
                            NULL, 0, &s->conn_cache)) < 0 ||
      (rc = hy_cache_create("hydra.sconn.rbuf", g->read_buffer_size, 64, NULL,
                            NULL, NULL, 0, &s->buf_cache)) < 0)
    goto fail;

  hy_listen_opts_t lo = HY_LISTEN_OPTS_INIT;
  lo.backlog = g->backlog;
  lo.reuseport = g->reuseport;
  int fam = hy__addr_family(&g->addr);
  if (fam == HY_AF_UNSPEC) {
    rc = HY_EINVAL;
    goto fail;
  }
  int os = 0;
  s->fd = hy__sock_open(fam, HY__SOCK_STREAM, &rc, &os);
  if (s->fd == HY__BAD_SOCK)
    goto fail;
  if ((rc = hy__sock_set(s->fd, HY__OPT_REUSEADDR, 1, &os)) < 0 ||
      (lo.reuseport &&
       (rc = hy__sock_set(s->fd, HY__OPT_REUSEPORT, 1, &os)) < 0) ||
      (rc = hy__sock_bind(s->fd, &g->addr, &os)) < 0 ||
      (rc = hy__sock_listen(s->fd, g->backlog > 0 ? g->backlog : 511, &os)) <
          0)
    goto fail;
  /* TCP_NODELAY (cfg.nagle 0): on the listener where connections inherit
   * it (one call for all of them), else on each accepted one. */
  if (!g->nagle) {
    s->set_nodelay = !hy__sock_inherited(HY__OPT_NODELAY) ||
                     hy__sock_set(s->fd, HY__OPT_NODELAY, 1, NULL) < 0;
  }
  hy__sock_local(s->fd, &s->addr);

  s->hook.fn = phase_hook;
  s->hook.arg = s;
  hy__phase_hook_add(rt, &s->hook);
  out_inc(s);
  if (drainer_spawn(s, 0) < 0)
    out_dec(s); /* the drain phase then does not wait for connections */
  else
    s->has_drainer = 1;
  for (int i = 0; i < s->nw; i++)
    if (accepts_on(s, i))
      post_to(&s->w[i], &s->w[i].start_pkt, start_pkt_done);
  *out = s;
  return 0;
fail:
  srv_free(s);
  return rc;
}

int hy_server_addr(hy_server_t *s, hy_addr_t *out) {
  if (!s || !out)
    return HY_EINVAL;
  *out = s->addr;
  return 0;
}

void *hy_server_user(hy_server_t *s) { return s ? s->cfg.user : NULL; }

int hy_server_stop_accepting(hy_server_t *s) {
  if (!s)
    return HY_EINVAL;
  if (!atomic_exchange(&s->stopping, 1))
    for (int i = 0; i < s->nw; i++)
      post_to(&s->w[i], &s->w[i].stop_pkt, stop_pkt_done);
  return 0;
}

int hy_server_close(hy_server_t *s) {
  if (!s)
    return HY_EINVAL;
  hy_runtime_t *rt = s->rt;
  hy__worker *me = hy__worker_current(rt);
  if (me && !me->current)
    return HY_EINVAL; /* from a callback: it would wait for itself */
  hy__phase_hook_remove(rt, &s->hook);
  atomic_store(&s->closing, 1);
  drainer_stop(s);
  int posted = 0;
  if (hy__phase(rt) < HY__PH_FINALIZE)
    for (int i = 0; i < s->nw; i++)
      if (post_to(&s->w[i], &s->w[i].close_pkt, close_pkt_done) == 0)
        posted++;
  /* The drainer ends once stopped (or once the connections the close
   * packets close are released).  A task that never ran - no memory for
   * its stack when it was to start - ends without a word to its spawner
   * unless joined: its count of outstanding work is dropped here then,
   * or the wait below would never end. */
  if (s->has_drainer) {
    int jr = hy_task_join(rt, s->drainer, NULL);
    s->has_drainer = 0;
    if (jr == HY_ENOMEM)
      out_dec(s);
    else if (jr == HY_ECANCELED)
      hy_task_detach(rt, s->drainer); /* this closer was cancelled: it
                                          ends on its own */
  }
  hy__wait w;
  int rc = posted ? hy__wait_init(&w, rt) : -1;
  if (rc == HY_ECANCELED) {
    /* A cancelled task may not park: wait as a plain wait instead. */
    atomic_init(&w.state, HY__WAITING);
    w.result = 0;
    w.rt = rt;
    w.task = hy__task_current(rt);
    rc = 0;
  }
  hy__lock(&s->lock);
  if (rc == 0 && s->outstanding > 0) {
    s->closer = &w;
    hy__unlock(&s->lock);
    hy__wait_park(&w, HY_FOREVER);
    hy__lock(&s->lock);
    s->closer = NULL;
  } else if (rc == 0) {
    hy__wait_claim(&w, 0);
  }
  if (rc == 0)
    hy__wait_fini(&w);
  /* Workers gone (the runtime shut down) with operations still owed: the
   * last completion, dispatched when the runtime closes, frees the server. */
  int orphan = s->outstanding > 0;
  s->orphan = orphan;
  hy__unlock(&s->lock);
  if (!orphan)
    srv_free(s);
  return 0;
}

int hy_server_stats(hy_server_t *s, hy_server_stats_t *o) {
  if (!s || !o || o->size < sizeof *o)
    return HY_EINVAL;
#define LD(f) atomic_load_explicit(&s->f, memory_order_relaxed)
  o->accepted = LD(accepted);
  o->refused = LD(refused);
  o->over_limit = LD(over_limit);
  o->accept_errors = LD(accept_errors);
  o->backoffs = LD(backoffs);
  o->closed = LD(closed);
  o->timeouts = LD(timeouts);
  o->bytes_in = LD(bytes_in);
  o->bytes_out = LD(bytes_out);
  o->live = (uint64_t)atomic_load(&s->live);
  o->read_buffers = (uint64_t)atomic_load(&s->nbufs);
  o->last_accept_error = atomic_load_explicit(&s->last_accept_error,
                                              memory_order_relaxed);
#undef LD
  return 0;
}
