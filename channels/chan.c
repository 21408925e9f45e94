/* chan.c - Go-style channels: a ring buffer and two wait queues under one
 * lock, and the two awaitables (send, recv) that select uses.
 *
 * Invariants, under c->lock:
 *   - a receiver waits (an open waiter in recvq) only while the ring is
 *     empty, and a sender waits only while the ring is full (or, with
 *     capacity 0, always);  so a sender that finds an open receiver hands
 *     its element over directly, and a receiver that takes from a full ring
 *     refills it from the first open sender: FIFO per sender holds.
 *   - stale waiters (whose wait someone else claimed: a time-out, a cancel,
 *     another arm of the same select) may sit in either queue until their
 *     owner unlinks them; hy__waitq_claim skips them and never touches
 *     their buffers.
 * A waiter is completed under the lock (claim, copy, result) and woken
 * after the lock is dropped: the owner cannot leave before that wake.
 */
#include <string.h>

#include "alloc/mem.h"
#include "hydra/chan.h"
#include "hydra/error.h"
#include "runtime/sys.h"
#include "runtime/wait.h"

/* Laid out for workers taking turns at one channel.  The lock has a cache
 * line of its own (with the runtime, read before it): a worker spinning on
 * a taken lock reads only that line, and leaves the holder the next one,
 * where everything an operation that waits for nothing reads and writes
 * under the lock lies.  (With the lock among them, each look of a spinner
 * took that line from the holder in the middle of its turn: chan-mpmc with
 * two workers went from about 20 to 28 M elements/s when they were parted.)
 * The reference count, written by blocking calls only, is on the third
 * line, and the ring starts on the fourth (RING_AT). */
struct hy_chan {
  hy__lock_t lock;
  hy_runtime_t *rt;
  _Atomic unsigned spin_hint; /* chan_lock_slow: written by contenders only */
  _Atomic unsigned turns;     /* locks taken: written by holders only */
  _Alignas(64) int closed;
  uint32_t esize, cap;   /* at most HY_CHAN_MAX_ELEM, HY_CHAN_MAX_BUFFER */
  uint32_t head, len;    /* ring: elements [head, head + len) modulo cap */
  hy__waitq sendq, recvq;
  _Alignas(64) size_t refs; /* under lock: the owners' references + blocked
                               calls */
};

#define RING_AT ((sizeof(struct hy_chan) + 63) & ~(size_t)63)

/* The lock of a channel operation.  Workers that fight over one channel
 * do best taking turns in long runs, each keeping the lock's and the
 * channel's lines for many operations in a row, rather than alternating
 * operation by operation, which moves every line between their caches
 * each time.  A contender learns how long it had to wait (spin_hint) and
 * the next one waits about that long before its first look, so the
 * holder's run goes on; once a first look finds the lock free, the hint
 * halves.  The price: after a burst of contention, the next contender may
 * wait up to CHAN_SPIN_MAX pauses (tens of µs) before its first look, as
 * it would have in its later rounds before.  The hint shares the lock's
 * line, which contenders read anyway; the holder never touches it. */
#define CHAN_SPIN_MAX 1024u

/* A contender's wait before its first look is cut short once a stretch
 * of CHAN_PEEK_EVERY pauses passes with no lock taken (turns unchanged):
 * the holder's run is over (its tasks wait, or it does something else),
 * and waiting on would leave the channel idle - with the hint at its
 * maximum (30 µs on a machine where a pause takes 30 ns), one worker then
 * sat out whole stretches while the other's tasks, waiting for its tasks,
 * had nothing to do either (chan-mpmc at half speed, 15-20 M elements/s,
 * in some code placements).  Each look takes the line the holder writes
 * on every turn: every 128 pauses cost less than every 32 (chan-mpmc
 * median 35 against 30 M elements/s). */
#define CHAN_PEEK_EVERY 128u

static inline unsigned chan_turns(hy_chan_t *c) {
  return atomic_load_explicit(&c->turns, memory_order_relaxed);
}

static inline void chan_turn(hy_chan_t *c) {
  atomic_store_explicit(&c->turns, chan_turns(c) + 1, memory_order_relaxed);
}

static void chan_lock_slow(hy_chan_t *c) {
  unsigned hint = atomic_load_explicit(&c->spin_hint, memory_order_relaxed);
  unsigned seen = chan_turns(c);
  for (unsigned k = 0; k < hint;) {
    for (unsigned j = 0; j < CHAN_PEEK_EVERY && k < hint; j++, k++)
      hy__cpu_relax();
    unsigned now = chan_turns(c);
    if (now == seen)
      break;
    seen = now;
  }
  unsigned pauses = hint ? hint : 1;
  for (int spins = 0;; spins++) {
    if (hy__trylock(&c->lock)) {
      chan_turn(c);
      unsigned learnt = spins == 0 ? hint / 2 : pauses;
      if (learnt > CHAN_SPIN_MAX)
        learnt = CHAN_SPIN_MAX;
      if (learnt != hint)
        atomic_store_explicit(&c->spin_hint, learnt, memory_order_relaxed);
      return;
    }
    if (spins < 64) {
      for (unsigned k = 0; k < pauses; k++)
        hy__cpu_relax();
      if (pauses < CHAN_SPIN_MAX)
        pauses *= 2;
    } else {
      hy__thread_yield();
    }
  }
}

static inline void chan_lock(hy_chan_t *c) {
  if (atomic_exchange_explicit(&c->lock.v, 1, memory_order_acquire) != 0)
    chan_lock_slow(c);
  else
    chan_turn(c);
}

static inline unsigned char *ring_of(hy_chan_t *c) {
  return (unsigned char *)c + RING_AT;
}

static inline void copy_elem(void *dst, const void *src, size_t n) {
  /* The common sizes as constant-size copies (a move or two). */
  switch (n) {
  case 0: return;
  case 4: memcpy(dst, src, 4); return;
  case 8: memcpy(dst, src, 8); return;
  case 16: memcpy(dst, src, 16); return;
  default: memcpy(dst, src, n); return;
  }
}

static inline void ring_push(hy_chan_t *c, const void *elem) {
  size_t tail = (size_t)c->head + c->len;
  if (tail >= c->cap)
    tail -= c->cap;
  if (elem)
    copy_elem(ring_of(c) + tail * c->esize, elem, c->esize);
  c->len++;
}

static inline void ring_pop(hy_chan_t *c, void *out) {
  if (out)
    copy_elem(out, ring_of(c) + (size_t)c->head * c->esize, c->esize);
  if (++c->head == c->cap)
    c->head = 0;
  c->len--;
}

/* A waiter of a blocking send/recv (not of a select) holds a reference on
 * the channel while it waits; whoever claims it drops that reference for
 * it, under the lock, so that a waiter completed by the channel need not
 * take the lock again after its park.  That never drops the last one: the
 * claimer itself is inside a call on the channel, holding a reference. */
#define HOLDS_REF 1

static inline hy__waiter *claim(hy_chan_t *c, hy__waitq *q) {
  if (!q->head) /* the usual case with a buffer: no call */
    return NULL;
  hy__waiter *w = hy__waitq_claim(q);
  if (w && w->aux == HOLDS_REF)
    c->refs--;
  return w;
}

/* Tries to send at once.  Returns 1 (with *rc, and *wake: a wait to wake
 * after unlocking, or NULL) if the send completed or failed, 0 if the
 * sender must wait. */
/* Inlined into each caller: the path of every operation. */
#if defined(__GNUC__)
#define HOT_INLINE static inline __attribute__((always_inline))
#else
#define HOT_INLINE static inline
#endif

HOT_INLINE int send_locked(hy_chan_t *c, const void *elem, int *rc,
                       hy__wait **wake) {
  *wake = NULL;
  if (c->closed) {
    *rc = HY_ECLOSED;
    return 1;
  }
  hy__waiter *r = claim(c, &c->recvq);
  if (r) {
    if (r->buf && elem)
      copy_elem(r->buf, elem, c->esize);
    r->wait->result = 0;
    *wake = r->wait;
    *rc = 0;
    return 1;
  }
  if (c->len < c->cap) {
    ring_push(c, elem);
    *rc = 0;
    return 1;
  }
  return 0;
}

HOT_INLINE int recv_locked(hy_chan_t *c, void *out, int *rc,
                           hy__wait **wake) {
  *wake = NULL;
  if (c->len) {
    ring_pop(c, out);
    hy__waiter *s = claim(c, &c->sendq);
    if (s) {
      ring_push(c, s->buf);
      s->wait->result = 0;
      *wake = s->wait;
    }
    *rc = 0;
    return 1;
  }
  hy__waiter *s = claim(c, &c->sendq);
  if (s) {
    if (out && s->buf)
      copy_elem(out, s->buf, c->esize);
    s->wait->result = 0;
    *wake = s->wait;
    *rc = 0;
    return 1;
  }
  if (c->closed) {
    *rc = HY_ECLOSED;
    return 1;
  }
  return 0;
}

/* ------------------------------------------------------------ lifetime */

int hy_chan_new(hy_runtime_t *rt, size_t elem_size, size_t capacity,
                hy_chan_t **out) {
  if (!out)
    return HY_EINVAL;
  *out = NULL;
  if (!rt || elem_size > HY_CHAN_MAX_ELEM ||
      (elem_size && capacity > HY_CHAN_MAX_BUFFER / elem_size) ||
      capacity > HY_CHAN_MAX_BUFFER)
    return HY_EINVAL;
  hy_chan_t *c = hy__mem_aligned(RING_AT + elem_size * capacity, 64);
  if (!c)
    return HY_ENOMEM;
  memset(c, 0, sizeof *c);
  c->esize = (uint32_t)elem_size;
  c->cap = (uint32_t)capacity;
  c->rt = rt;
  c->refs = 1;
  *out = c;
  return 0;
}

/* The count lives under the lock, so that a blocking call, which holds the
 * lock anyway to queue and unqueue itself, counts itself for free. */
hy_chan_t *hy_chan_retain(hy_chan_t *c) {
  if (c) {
    hy__lock(&c->lock);
    c->refs++;
    hy__unlock(&c->lock);
  }
  return c;
}

void hy_chan_release(hy_chan_t *c) {
  if (!c)
    return;
  hy__lock(&c->lock);
  int last = --c->refs == 0;
  hy__unlock(&c->lock);
  if (last)
    hy__mem_free(c);
}

int hy_chan_close(hy_chan_t *c) {
  if (!c)
    return HY_EINVAL;
  hy__lock(&c->lock);
  if (c->closed) {
    hy__unlock(&c->lock);
    return HY_ECLOSED;
  }
  c->closed = 1;
  /* Open receivers can only exist with an empty ring: they all see the
   * end.  Senders never complete on a closed channel. */
  for (int q = 0; q < 2; q++) {
    hy__waiter *w;
    while ((w = claim(c, q ? &c->sendq : &c->recvq)) != NULL) {
      w->wait->result = HY_ECLOSED;
      hy__wait_wake(w->wait);
    }
  }
  hy__unlock(&c->lock);
  return 0;
}

/* ----------------------------------------------------------- send/recv */

HOT_INLINE int chan_op(hy_chan_t *c, void *buf, int send, hy_time_t deadline,
                       int block) {
  if (!c || (send && !buf && c->esize))
    return HY_EINVAL;
  int rc;
  hy__wait *wake;
  if (!block) {
    chan_lock(c);
    int done = send ? send_locked(c, buf, &rc, &wake)
                    : recv_locked(c, buf, &rc, &wake);
    hy__unlock(&c->lock);
    if (!done)
      return HY_EAGAIN;
    if (wake)
      hy__wait_wake(wake);
    return rc;
  }

  hy__wait own, *w;
  rc = hy__wait_init_quiet(&w, &own, c->rt);
  if (rc < 0)
    return rc;
  chan_lock(c);
  int done = send ? send_locked(c, buf, &rc, &wake)
                  : recv_locked(c, buf, &rc, &wake);
  if (done || (deadline != HY_FOREVER && deadline <= hy_now())) {
    hy__unlock(&c->lock);
    if (wake)
      hy__wait_wake_from(wake, w);
    hy__wait_fini_quiet(w, &own);
    return done ? rc : HY_ETIMEDOUT;
  }
  if (hy__wait_open_single(w, deadline)) {
    /* A cancel came before the wait could be seen: nothing queued. */
    hy__unlock(&c->lock);
    hy__wait_fini_quiet(w, &own);
    return HY_ECANCELED;
  }
  hy__waiter wr;
  wr.wait = w;
  wr.arm = 0;
  wr.buf = buf;
  wr.aux = HOLDS_REF;
  hy__waitq_push(send ? &c->sendq : &c->recvq, &wr);
  c->refs++; /* the channel outlives this wait */
  hy__unlock(&c->lock);
  int last = 0;
  if (hy__wait_park_one(w, send ? "chan-send" : "chan-recv", deadline) < 0) {
    /* A time-out or a cancel: the waiter is still queued, and its
     * reference still counted. */
    chan_lock(c);
    hy__waitq_remove(send ? &c->sendq : &c->recvq, &wr);
    last = --c->refs == 0;
    hy__unlock(&c->lock);
  } /* else the channel claimed it: unlinked, reference dropped */
  rc = hy__wait_rc(w);
  hy__wait_fini_quiet(w, &own);
  if (last)
    hy__mem_free(c);
  return rc;
}

int hy_chan_send(hy_chan_t *c, const void *elem) {
  return chan_op(c, (void *)elem, 1, HY_FOREVER, 1);
}

int hy_chan_send_until(hy_chan_t *c, const void *elem, hy_time_t deadline) {
  return chan_op(c, (void *)elem, 1, deadline, 1);
}

int hy_chan_recv(hy_chan_t *c, void *out) {
  return chan_op(c, out, 0, HY_FOREVER, 1);
}

int hy_chan_recv_until(hy_chan_t *c, void *out, hy_time_t deadline) {
  return chan_op(c, out, 0, deadline, 1);
}

int hy_chan_try_send(hy_chan_t *c, const void *elem) {
  return chan_op(c, (void *)elem, 1, 0, 0);
}

int hy_chan_try_recv(hy_chan_t *c, void *out) {
  return chan_op(c, out, 0, 0, 0);
}

size_t hy_chan_len(hy_chan_t *c) {
  if (!c)
    return 0;
  hy__lock(&c->lock);
  size_t n = c->len;
  hy__unlock(&c->lock);
  return n;
}

size_t hy_chan_cap(hy_chan_t *c) { return c ? c->cap : 0; }

size_t hy_chan_elem_size(hy_chan_t *c) { return c ? c->esize : 0; }

int hy_chan_closed(hy_chan_t *c) {
  if (!c)
    return 0;
  hy__lock(&c->lock);
  int v = c->closed;
  hy__unlock(&c->lock);
  return v;
}

/* ---------------------------------------------------------------- arms */

static hy__lock_t *arm_lock(void *obj) {
  return obj ? &((hy_chan_t *)obj)->lock : NULL;
}

static int send_try(void *obj, hy_arm_t *arm, int *result) {
  hy_chan_t *c = obj;
  if (!c || (!arm->buf && c->esize)) {
    *result = HY_EINVAL;
    return 1;
  }
  hy__wait *wake;
  if (!send_locked(c, arm->buf, result, &wake))
    return 0;
  if (wake)
    hy__wait_wake(wake);
  return 1;
}

static int recv_try(void *obj, hy_arm_t *arm, int *result) {
  hy_chan_t *c = obj;
  if (!c) {
    *result = HY_EINVAL;
    return 1;
  }
  hy__wait *wake;
  if (!recv_locked(c, arm->buf, result, &wake))
    return 0;
  if (wake)
    hy__wait_wake(wake);
  return 1;
}

static void send_enqueue(void *obj, hy_arm_t *arm, hy__waiter *w) {
  w->buf = arm->buf;
  hy__waitq_push(&((hy_chan_t *)obj)->sendq, w);
}

static void recv_enqueue(void *obj, hy_arm_t *arm, hy__waiter *w) {
  w->buf = arm->buf;
  hy__waitq_push(&((hy_chan_t *)obj)->recvq, w);
}

static void send_dequeue(void *obj, hy_arm_t *arm, hy__waiter *w) {
  (void)arm;
  hy__waitq_remove(&((hy_chan_t *)obj)->sendq, w);
}

static void recv_dequeue(void *obj, hy_arm_t *arm, hy__waiter *w) {
  (void)arm;
  hy__waitq_remove(&((hy_chan_t *)obj)->recvq, w);
}

static const struct hy_awaitable send_awaitable = {
    "chan-send", arm_lock, send_try, send_enqueue, send_dequeue};
static const struct hy_awaitable recv_awaitable = {
    "chan-recv", arm_lock, recv_try, recv_enqueue, recv_dequeue};

static hy_arm_t chan_arm(const struct hy_awaitable *ops, hy_chan_t *c,
                         void *buf) {
  hy_arm_t a = {.ops = ops, .obj = c, .buf = buf, .kind = HY_ARM_OBJECT,
                .guard = 1};
  return a;
}

hy_arm_t hy_arm_recv(hy_chan_t *c, void *out) {
  return chan_arm(&recv_awaitable, c, out);
}

hy_arm_t hy_arm_send(hy_chan_t *c, const void *elem) {
  return chan_arm(&send_awaitable, c, (void *)elem);
}
