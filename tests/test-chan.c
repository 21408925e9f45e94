/* test-chan.c - channels and select. */
#define _GNU_SOURCE
#include <stdatomic.h>

#include "compat.h"
#include "hydra.h"
#include "runtime/internal.h" /* rt->park_fence */
#include "test.h"

static hy_runtime_t *new_rt(int workers) {
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = workers;
  hy_runtime_t *rt = NULL;
  ASSERT_OK(hy_runtime_new(&o, &rt));
  return rt;
}

static void close_rt(hy_runtime_t *rt) {
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(100)));
  ASSERT_OK(hy_runtime_close(rt));
}

static hy_chan_t *new_chan(hy_runtime_t *rt, size_t esize, size_t cap) {
  hy_chan_t *c = NULL;
  ASSERT_OK(hy_chan_new(rt, esize, cap, &c));
  ASSERT(c != NULL);
  return c;
}

static hy_task_t spawn(hy_runtime_t *rt, hy_task_fn fn, void *arg) {
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, fn, arg, NULL, &t));
  return t;
}

static intptr_t join(hy_runtime_t *rt, hy_task_t t) {
  void *r = NULL;
  ASSERT_OK(hy_task_join(rt, t, &r));
  return (intptr_t)r;
}

/* Tasks and threads draw random numbers from their own state (splitmix64),
 * seeded from test_rand() by the test's main thread: test_rand() itself is
 * not thread-safe. */
static uint64_t rnd(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* A short random pause for stress tests: a yield, a tiny sleep, or none. */
static void jitter(hy_runtime_t *rt, uint64_t *seed) {
  switch (rnd(seed) % 8) {
  case 0: hy_yield(rt); break;
  case 1: hy_sleep(rt, HY_US(rnd(seed) % 50)); break;
  default: break;
  }
}

/* ---------------------------------------------------------- error paths */

TEST_IMPL(chan_errors) {
  hy_runtime_t *rt = new_rt(1);
  hy_chan_t *c = NULL;
  ASSERT_ERR(hy_chan_new(NULL, 4, 1, &c), HY_EINVAL);
  ASSERT_ERR(hy_chan_new(rt, 4, 1, NULL), HY_EINVAL);
  ASSERT_ERR(hy_chan_new(rt, HY_CHAN_MAX_ELEM + 1, 1, &c), HY_EINVAL);
  ASSERT(c == NULL);
  ASSERT_ERR(hy_chan_new(rt, 1 << 16, (size_t)1 << 20, &c), HY_EINVAL);
  ASSERT_ERR(hy_chan_new(rt, 8, SIZE_MAX / 4, &c), HY_EINVAL);
  ASSERT_ERR(hy_chan_new(rt, 0, SIZE_MAX, &c), HY_EINVAL);

  int v = 1;
  ASSERT_ERR(hy_chan_send(NULL, &v), HY_EINVAL);
  ASSERT_ERR(hy_chan_recv(NULL, &v), HY_EINVAL);
  ASSERT_ERR(hy_chan_try_send(NULL, &v), HY_EINVAL);
  ASSERT_ERR(hy_chan_try_recv(NULL, &v), HY_EINVAL);
  ASSERT_ERR(hy_chan_send_until(NULL, &v, 0), HY_EINVAL);
  ASSERT_ERR(hy_chan_recv_until(NULL, &v, 0), HY_EINVAL);
  ASSERT_ERR(hy_chan_close(NULL), HY_EINVAL);
  ASSERT_EQ(hy_chan_len(NULL), 0);
  ASSERT_EQ(hy_chan_cap(NULL), 0);
  ASSERT_EQ(hy_chan_closed(NULL), 0);
  hy_chan_release(NULL);
  ASSERT(hy_chan_retain(NULL) == NULL);

  c = new_chan(rt, sizeof(int), 2);
  ASSERT_EQ(hy_chan_cap(c), 2);
  ASSERT_EQ(hy_chan_elem_size(c), sizeof(int));
  ASSERT_ERR(hy_chan_send(c, NULL), HY_EINVAL); /* non-zero element size */
  ASSERT_ERR(hy_chan_try_send(c, NULL), HY_EINVAL);
  ASSERT_ERR(hy_chan_try_recv(c, &v), HY_EAGAIN);
  hy_time_t d = hy_deadline_in(HY_MS(10));
  ASSERT_ERR(hy_chan_recv_until(c, &v, d), HY_ETIMEDOUT);
  ASSERT_GE(hy_now(), d);
  ASSERT_ERR(hy_chan_recv_until(c, &v, 0), HY_ETIMEDOUT); /* past */
  ASSERT_OK(hy_chan_close(c));
  ASSERT_ERR(hy_chan_close(c), HY_ECLOSED);
  ASSERT_EQ(hy_chan_closed(c), 1);
  ASSERT_ERR(hy_chan_send(c, &v), HY_ECLOSED);
  ASSERT_ERR(hy_chan_try_send(c, &v), HY_ECLOSED);
  ASSERT_ERR(hy_chan_recv(c, &v), HY_ECLOSED);
  ASSERT_ERR(hy_chan_try_recv(c, &v), HY_ECLOSED);
  hy_chan_release(c);

  /* select's own errors. */
  hy_arm_t arms[4];
  ASSERT_ERR(hy_select(rt, NULL, 1), HY_EINVAL);
  arms[0] = hy_arm_else();
  ASSERT_ERR(hy_select(rt, arms, 0), HY_EINVAL);
  ASSERT_ERR(hy_select(rt, arms, -1), HY_EINVAL);
  ASSERT_ERR(hy_select(rt, arms, HY_SELECT_MAX_ARMS + 1), HY_EINVAL);
  arms[0] = hy_arm_else();
  arms[1] = hy_arm_timeout(HY_MS(1));
  ASSERT_ERR(hy_select(rt, arms, 2), HY_EINVAL); /* else and delay */
  arms[1] = hy_arm_else();
  ASSERT_ERR(hy_select(rt, arms, 2), HY_EINVAL); /* two elses */
  arms[1] = hy_arm_terminate(rt);
  ASSERT_ERR(hy_select(rt, arms, 2), HY_EINVAL); /* else and terminate */
  /* ... but a disabled one does not count. */
  arms[1] = hy_when(0, hy_arm_timeout(HY_MS(1)));
  ASSERT_EQ(hy_select(rt, arms, 2), 0);
  arms[0].kind = 99;
  ASSERT_ERR(hy_select(rt, arms, 1), HY_EINVAL); /* unknown kind */
  memset(&arms[0], 0, sizeof arms[0]);
  arms[0].guard = 1; /* an object arm without an awaitable */
  ASSERT_ERR(hy_select(rt, arms, 1), HY_EINVAL);
  arms[0] = hy_when(0, hy_arm_else());
  arms[1] = hy_when(0, hy_arm_recv(NULL, &v));
  ASSERT_ERR(hy_select(rt, arms, 2), HY_EDEADLK); /* nothing enabled */
  /* Arms on a NULL channel fire at once with HY_EINVAL. */
  arms[0] = hy_arm_recv(NULL, &v);
  ASSERT_EQ(hy_select(rt, arms, 1), 0);
  ASSERT_EQ(arms[0].result, HY_EINVAL);
  arms[0] = hy_arm_send(NULL, &v);
  ASSERT_EQ(hy_select(rt, arms, 1), 0);
  ASSERT_EQ(arms[0].result, HY_EINVAL);
  c = new_chan(rt, sizeof(int), 1);
  arms[0] = hy_arm_send(c, NULL); /* nothing to send */
  ASSERT_EQ(hy_select(rt, arms, 1), 0);
  ASSERT_EQ(arms[0].result, HY_EINVAL);
  ASSERT_EQ(hy_chan_len(c), 0);
  hy_chan_release(c);
  close_rt(rt);
  return 0;
}

/* ------------------------------------------------ buffered, FIFO, close */

TEST_IMPL(chan_buffered_fifo_close) {
  hy_runtime_t *rt = new_rt(1);
  hy_chan_t *c = new_chan(rt, sizeof(int), 4);
  for (int i = 0; i < 4; i++)
    ASSERT_OK(hy_chan_try_send(c, &i));
  int v = 99;
  ASSERT_ERR(hy_chan_try_send(c, &v), HY_EAGAIN);
  ASSERT_ERR(hy_chan_send_until(c, &v, hy_deadline_in(HY_MS(5))),
             HY_ETIMEDOUT);
  ASSERT_EQ(hy_chan_len(c), 4);
  ASSERT_OK(hy_chan_recv(c, &v));
  ASSERT_EQ(v, 0);
  v = 4;
  ASSERT_OK(hy_chan_send(c, &v)); /* the ring wraps */
  ASSERT_OK(hy_chan_close(c));
  /* Receivers drain what is buffered, in order, then see the end. */
  for (int i = 1; i <= 4; i++) {
    ASSERT_OK(hy_chan_recv(c, &v));
    ASSERT_EQ(v, i);
  }
  ASSERT_ERR(hy_chan_recv(c, &v), HY_ECLOSED);
  ASSERT_ERR(hy_chan_recv_until(c, &v, 0), HY_ECLOSED);
  hy_chan_release(c);

  /* Zero-size elements: a counting signal. */
  c = new_chan(rt, 0, 3);
  for (int i = 0; i < 3; i++)
    ASSERT_OK(hy_chan_try_send(c, NULL));
  ASSERT_ERR(hy_chan_try_send(c, NULL), HY_EAGAIN);
  ASSERT_OK(hy_chan_recv(c, NULL));
  ASSERT_EQ(hy_chan_len(c), 2);
  hy_chan_release(c);

  /* Large elements, and recv into NULL discards. */
  typedef struct { char b[100]; } big_t;
  c = new_chan(rt, sizeof(big_t), 2);
  big_t b1, b2;
  memset(&b1, 'x', sizeof b1);
  ASSERT_OK(hy_chan_send(c, &b1));
  memset(&b1, 'y', sizeof b1);
  ASSERT_OK(hy_chan_send(c, &b1));
  ASSERT_OK(hy_chan_recv(c, NULL));
  ASSERT_OK(hy_chan_recv(c, &b2));
  ASSERT_EQ(memcmp(&b1, &b2, sizeof b1), 0);
  hy_chan_release(c);

  /* Reference counting: a retained channel survives one release. */
  c = new_chan(rt, 1, 1);
  ASSERT(hy_chan_retain(c) == c);
  hy_chan_release(c);
  ASSERT_OK(hy_chan_try_send(c, "a"));
  hy_chan_release(c);
  close_rt(rt);
  return 0;
}

/* ----------------------------------------------- rendezvous across workers */

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *a, *b;
  int n;
  atomic_int *taken; /* elements taken by the receiver so far */
  uint64_t seed;
} pp_t;

static void *pp_echo(void *p) {
  pp_t *x = p;
  for (int i = 0; i < x->n; i++) {
    int v;
    ASSERT_OK(hy_chan_recv(x->a, &v));
    ASSERT_EQ(v, i);
    v = -v;
    ASSERT_OK(hy_chan_send(x->b, &v));
  }
  return NULL;
}

static void *pp_drive(void *p) {
  pp_t *x = p;
  for (int i = 0; i < x->n; i++) {
    ASSERT_OK(hy_chan_send(x->a, &i));
    int v;
    ASSERT_OK(hy_chan_recv(x->b, &v));
    ASSERT_EQ(v, -i);
  }
  return NULL;
}

static void *rdv_recv(void *p) {
  pp_t *x = p;
  for (int i = 0; i < x->n; i++) {
    if (rnd(&x->seed) % 4 == 0)
      hy_sleep(x->rt, HY_US(100));
    int v;
    ASSERT_OK(hy_chan_recv(x->a, &v));
    ASSERT_EQ(v, i);
    atomic_fetch_add(x->taken, 1);
  }
  return NULL;
}

TEST_IMPL(chan_rendezvous) {
  hy_runtime_t *rt = new_rt(2);
  hy_chan_t *a = new_chan(rt, sizeof(int), 0);
  hy_chan_t *b = new_chan(rt, sizeof(int), 0);
  /* Nobody waits: an unbuffered try-send cannot complete. */
  int v = 1;
  ASSERT_ERR(hy_chan_try_send(a, &v), HY_EAGAIN);
  ASSERT_ERR(hy_chan_try_recv(a, &v), HY_EAGAIN);
  ASSERT_EQ(hy_chan_len(a), 0);

  pp_t x = {rt, a, b, 20000, NULL, test_rand()};
  hy_task_t t1 = spawn(rt, pp_echo, &x);
  hy_task_t t2 = spawn(rt, pp_drive, &x);
  join(rt, t1);
  join(rt, t2);

  /* A rendezvous send returns only once the receiver has the element:
   * from the foreign thread, each send is matched by a completed recv
   * before the next one starts. */
  atomic_int taken = 0;
  pp_t y = {rt, a, b, 300, &taken, test_rand()};
  hy_task_t t3 = spawn(rt, rdv_recv, &y);
  for (int i = 0; i < y.n; i++) {
    ASSERT_OK(hy_chan_send(a, &i));
    /* The receiver took element i: it can lag by its own bookkeeping only. */
    ASSERT_GE(atomic_load(&taken), i);
  }
  join(rt, t3);
  ASSERT_EQ(taken, y.n);
  hy_chan_release(a);
  hy_chan_release(b);
  close_rt(rt);
  return 0;
}

/* ------------------------------------------------------ deadlines */

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c;
  int64_t ns;
  int send;
  int rc;
  int64_t late;
} dl_t;

static void *dl_task(void *p) {
  dl_t *x = p;
  hy_time_t d = hy_deadline_in(x->ns);
  int v = 7;
  x->rc = x->send ? hy_chan_send_until(x->c, &v, d)
                  : hy_chan_recv_until(x->c, &v, d);
  x->late = hy_now() - d;
  return NULL;
}

TEST_IMPL(chan_deadlines) {
  hy_runtime_t *rt = new_rt(2);
  hy_chan_t *empty = new_chan(rt, sizeof(int), 1);
  hy_chan_t *full = new_chan(rt, sizeof(int), 1);
  hy_chan_t *rdv = new_chan(rt, sizeof(int), 0);  /* receivers only */
  hy_chan_t *rdv2 = new_chan(rt, sizeof(int), 0); /* senders only */
  int v = 1;
  ASSERT_OK(hy_chan_send(full, &v));
  enum { N = 60 };
  static dl_t x[N];
  hy_task_t t[N];
  for (int i = 0; i < N; i++) {
    x[i].rt = rt;
    x[i].c = i % 4 == 0 ? empty : i % 4 == 1 ? full : i % 4 == 2 ? rdv : rdv2;
    x[i].send = i % 4 == 1 || i % 4 == 3;
    x[i].ns = HY_MS(1) + (int64_t)(test_rand() % (uint64_t)HY_MS(20));
    t[i] = spawn(rt, dl_task, &x[i]);
  }
  for (int i = 0; i < N; i++) {
    join(rt, t[i]);
    ASSERT_ERR(x[i].rc, HY_ETIMEDOUT);
    ASSERT_GE(x[i].late, 0);          /* never early */
    ASSERT_LT(x[i].late, HY_SEC(2));  /* and within a generous bound */
  }
  /* The same from a foreign thread. */
  dl_t f = {rt, rdv2, HY_MS(15), 1, 0, 0};
  dl_task(&f);
  ASSERT_ERR(f.rc, HY_ETIMEDOUT);
  ASSERT_GE(f.late, 0);
  /* Nothing timed out left anything behind. */
  ASSERT_EQ(hy_chan_len(empty), 0);
  ASSERT_EQ(hy_chan_len(full), 1);
  ASSERT_ERR(hy_chan_try_recv(rdv2, &v), HY_EAGAIN);
  ASSERT_ERR(hy_chan_try_send(rdv, &v), HY_EAGAIN);
  hy_chan_release(rdv2);
  hy_chan_release(empty);
  hy_chan_release(full);
  hy_chan_release(rdv);
  close_rt(rt);
  return 0;
}

/* ------------------------------------------- close and cancel while blocked */

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c;
  int mode; /* 0 recv, 1 send, 2 select recv, 3 select send */
  atomic_int *started;
} blk_t;

static void *blocked_op(void *p) {
  blk_t *x = p;
  int v = 5;
  atomic_fetch_add(x->started, 1);
  switch (x->mode) {
  case 0: return (void *)(intptr_t)hy_chan_recv(x->c, &v);
  case 1: return (void *)(intptr_t)hy_chan_send(x->c, &v);
  default: {
    hy_arm_t a = x->mode == 2 ? hy_arm_recv(x->c, &v) : hy_arm_send(x->c, &v);
    int i = hy_select(x->rt, &a, 1);
    return (void *)(intptr_t)(i < 0 ? i : a.result);
  }
  }
}

static void wait_parked(hy_runtime_t *rt, atomic_int *started, int n) {
  while (atomic_load(started) < n)
    hy_sleep(rt, HY_MS(1));
  hy_sleep(rt, HY_MS(20)); /* let them reach the wait */
}

TEST_IMPL(chan_close_wakes_blocked) {
  hy_runtime_t *rt = new_rt(2);
  /* Receivers on an empty channel, senders on a full one. */
  hy_chan_t *rc = new_chan(rt, sizeof(int), 2);
  hy_chan_t *sc = new_chan(rt, sizeof(int), 0);
  atomic_int started = 0;
  enum { N = 16 };
  blk_t x[N];
  hy_task_t t[N];
  for (int i = 0; i < N; i++) {
    x[i].rt = rt;
    x[i].mode = i % 4;
    x[i].c = x[i].mode == 0 || x[i].mode == 2 ? rc : sc;
    x[i].started = &started;
    t[i] = spawn(rt, blocked_op, &x[i]);
  }
  wait_parked(rt, &started, N);
  /* The dump names what each of them awaits. */
  FILE *f = tmpfile(); /* portable, where open_memstream is not */
  ASSERT(f != NULL);
  hy_runtime_dump(rt, f);
  long dlen = ftell(f);
  ASSERT(dlen > 0);
  char *dump = calloc(1, (size_t)dlen + 1);
  ASSERT(dump != NULL);
  rewind(f);
  ASSERT_EQ(fread(dump, 1, (size_t)dlen, f), (size_t)dlen);
  fclose(f);
  ASSERT(strstr(dump, "awaiting chan-recv") != NULL);
  ASSERT(strstr(dump, "awaiting chan-send") != NULL);
  ASSERT(strstr(dump, "awaiting select") != NULL);
  free(dump);
  /* The selects borrow this thread's references, kept until they end. */
  ASSERT_OK(hy_chan_close(rc));
  ASSERT_OK(hy_chan_close(sc));
  for (int i = 0; i < N; i++)
    ASSERT_EQ(join(rt, t[i]), HY_ECLOSED);
  hy_chan_release(rc);
  hy_chan_release(sc);

  /* A last reference dropped while a plain receiver still waits. */
  hy_chan_t *c = new_chan(rt, sizeof(int), 0);
  started = 0;
  blk_t y = {rt, c, 0, &started};
  hy_task_t ty = spawn(rt, blocked_op, &y);
  wait_parked(rt, &started, 1);
  ASSERT_OK(hy_chan_close(c));
  hy_chan_release(c);
  ASSERT_EQ(join(rt, ty), HY_ECLOSED);
  close_rt(rt);
  return 0;
}

TEST_IMPL(chan_cancel_blocked) {
  hy_runtime_t *rt = new_rt(2);
  hy_chan_t *rc = new_chan(rt, sizeof(int), 1);
  hy_chan_t *sc = new_chan(rt, sizeof(int), 0);
  atomic_int started = 0;
  enum { N = 8 };
  blk_t x[N];
  hy_task_t t[N];
  for (int i = 0; i < N; i++) {
    x[i].rt = rt;
    x[i].mode = i % 4;
    x[i].c = x[i].mode == 0 || x[i].mode == 2 ? rc : sc;
    x[i].started = &started;
    t[i] = spawn(rt, blocked_op, &x[i]);
  }
  wait_parked(rt, &started, N);
  for (int i = 0; i < N; i++)
    ASSERT_OK(hy_task_cancel(rt, t[i]));
  for (int i = 0; i < N; i++)
    ASSERT_EQ(join(rt, t[i]), HY_ECANCELED);
  /* The cancelled senders sent nothing; the cancelled receivers left the
   * channel usable: a new element is there for the next receiver. */
  int v = 0;
  ASSERT_ERR(hy_chan_try_recv(sc, &v), HY_EAGAIN);
  v = 42;
  ASSERT_OK(hy_chan_try_send(rc, &v));
  v = 0;
  ASSERT_OK(hy_chan_try_recv(rc, &v));
  ASSERT_EQ(v, 42);
  hy_chan_release(rc);
  hy_chan_release(sc);
  close_rt(rt);
  return 0;
}

/* A task cancelled before it calls returns HY_ECANCELED and takes nothing,
 * even when the channel is ready. */
static void *cancel_self_then_ops(void *p) {
  blk_t *x = p;
  hy_task_cancel(x->rt, hy_task_self(x->rt));
  int v;
  ASSERT_ERR(hy_chan_recv(x->c, &v), HY_ECANCELED);
  ASSERT_ERR(hy_chan_send(x->c, &v), HY_ECANCELED);
  hy_arm_t a[2] = {hy_arm_recv(x->c, &v), hy_arm_else()};
  ASSERT_ERR(hy_select(x->rt, a, 2), HY_ECANCELED);
  /* try-ops are not awaits: they still work. */
  ASSERT_OK(hy_chan_try_recv(x->c, &v));
  ASSERT_EQ(v, 3);
  return NULL;
}

TEST_IMPL(chan_cancelled_task_takes_nothing) {
  hy_runtime_t *rt = new_rt(1);
  hy_chan_t *c = new_chan(rt, sizeof(int), 4);
  int v = 3;
  ASSERT_OK(hy_chan_send(c, &v));
  blk_t x = {rt, c, 0, NULL};
  join(rt, spawn(rt, cancel_self_then_ops, &x));
  ASSERT_EQ(hy_chan_len(c), 0);
  hy_chan_release(c);
  close_rt(rt);
  return 0;
}

/* ------------------------------------------------------- MPMC stress */

enum { MP_SENDERS = 4, MP_RECEIVERS = 4 };

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c;
  int id, n;
  uint64_t sum;     /* receivers: checksum of what they took */
  int got;
  atomic_uchar *seen;
  int per_sender;
} mp_t;

static void *mp_send(void *p) {
  mp_t *x = p;
  uint64_t sum = 0;
  for (int i = 0; i < x->n; i++) {
    uint64_t v = (uint64_t)x->id << 32 | (uint32_t)i;
    ASSERT_OK(hy_chan_send(x->c, &v));
    sum += v * 2654435761u;
  }
  x->sum = sum;
  return NULL;
}

static void *mp_recv(void *p) {
  mp_t *x = p;
  int64_t last[MP_SENDERS];
  for (int i = 0; i < MP_SENDERS; i++)
    last[i] = -1;
  uint64_t v;
  int rc;
  while ((rc = hy_chan_recv(x->c, &v)) == 0) {
    int s = (int)(v >> 32);
    int64_t i = (int64_t)(uint32_t)v;
    ASSERT(s >= 0 && s < MP_SENDERS);
    ASSERT_GT(i, last[s]); /* FIFO per sender */
    last[s] = i;
    ASSERT_EQ(atomic_fetch_add(&x->seen[(size_t)s * (size_t)x->per_sender +
                                        (size_t)i], 1), 0);
    x->sum += v * 2654435761u;
    x->got++;
  }
  ASSERT_ERR(rc, HY_ECLOSED);
  return NULL;
}

static void mpmc_run(int workers, size_t cap, int total) {
  hy_runtime_t *rt = new_rt(workers);
  hy_chan_t *c = new_chan(rt, sizeof(uint64_t), cap);
  int per = total / MP_SENDERS;
  atomic_uchar *seen = calloc((size_t)per * MP_SENDERS, 1);
  ASSERT(seen);
  mp_t s[MP_SENDERS], r[MP_RECEIVERS];
  hy_task_t ts[MP_SENDERS], tr[MP_RECEIVERS];
  for (int i = 0; i < MP_RECEIVERS; i++) {
    r[i] = (mp_t){rt, c, i, 0, 0, 0, seen, per};
    tr[i] = spawn(rt, mp_recv, &r[i]);
  }
  for (int i = 0; i < MP_SENDERS; i++) {
    s[i] = (mp_t){rt, c, i, per, 0, 0, seen, per};
    ts[i] = spawn(rt, mp_send, &s[i]);
  }
  uint64_t sent = 0, got = 0;
  int n = 0;
  for (int i = 0; i < MP_SENDERS; i++) {
    join(rt, ts[i]);
    sent += s[i].sum;
  }
  ASSERT_OK(hy_chan_close(c));
  for (int i = 0; i < MP_RECEIVERS; i++) {
    join(rt, tr[i]);
    got += r[i].sum;
    n += r[i].got;
  }
  ASSERT_EQ(n, per * MP_SENDERS);
  ASSERT(sent == got);
  for (size_t i = 0; i < (size_t)per * MP_SENDERS; i++)
    ASSERT_EQ(seen[i], 1);
  free(seen);
  hy_chan_release(c);
  close_rt(rt);
}

TEST_IMPL(chan_mpmc_stress) {
  mpmc_run(4, 64, 1000000);
  mpmc_run(3, 0, 100000);
  mpmc_run(2, 1, 100000);
  return 0;
}

/* ------------------------------------------------------ foreign threads */

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c;
  int n, id;
  uint64_t sum;
  uint64_t seed;
} ft_t;

static void *ft_send_thread(void *p) {
  ft_t *x = p;
  for (int i = 0; i < x->n; i++) {
    uint64_t v = (uint64_t)x->id << 32 | (uint32_t)i;
    ASSERT_OK(hy_chan_send(x->c, &v));
    x->sum += v;
  }
  return NULL;
}

static void *ft_recv_any(void *p) {
  ft_t *x = p;
  uint64_t v;
  int rc;
  while ((rc = hy_chan_recv(x->c, &v)) == 0) {
    x->sum += v;
    x->n++;
  }
  ASSERT_ERR(rc, HY_ECLOSED);
  return NULL;
}

/* A select from a foreign thread: recv on either channel, with a delay. */
static void *ft_select_thread(void *p) {
  ft_t *x = p;
  hy_chan_t **cs = (hy_chan_t **)x->c;
  int open = 3;
  while (open) {
    uint64_t v;
    hy_arm_t a[3] = {hy_when(open & 1, hy_arm_recv(cs[0], &v)),
                     hy_when(open & 2, hy_arm_recv(cs[1], &v)),
                     hy_arm_timeout(HY_MS(rnd(&x->seed) % 3))};
    int i = hy_select(x->rt, a, 3);
    ASSERT_GE(i, 0);
    if (i == 2)
      continue;
    if (a[i].result == HY_ECLOSED) {
      open &= ~(1 << i);
      continue;
    }
    ASSERT_OK(a[i].result);
    x->sum += v;
    x->n++;
  }
  return NULL;
}

TEST_IMPL(chan_foreign_threads) {
  hy_runtime_t *rt = new_rt(2);
  hy_chan_t *c = new_chan(rt, sizeof(uint64_t), 0);
  enum { T = 3, N = 3000 };
  /* Foreign senders, task receivers, and one foreign receiver. */
  pthread_t th[T + 1];
  ft_t fs[T], fr[3];
  hy_task_t tr[2];
  for (int i = 0; i < 3; i++)
    fr[i] = (ft_t){rt, c, 0, 0, 0, test_rand()};
  tr[0] = spawn(rt, ft_recv_any, &fr[0]);
  tr[1] = spawn(rt, ft_recv_any, &fr[1]);
  ASSERT_EQ(pthread_create(&th[T], NULL, ft_recv_any, &fr[2]), 0);
  for (int i = 0; i < T; i++) {
    fs[i] = (ft_t){rt, c, N, i, 0, test_rand()};
    ASSERT_EQ(pthread_create(&th[i], NULL, ft_send_thread, &fs[i]), 0);
  }
  uint64_t sent = 0;
  for (int i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    sent += fs[i].sum;
  }
  ASSERT_OK(hy_chan_close(c));
  join(rt, tr[0]);
  join(rt, tr[1]);
  pthread_join(th[T], NULL);
  ASSERT_EQ(fr[0].n + fr[1].n + fr[2].n, T * N);
  ASSERT(fr[0].sum + fr[1].sum + fr[2].sum == sent);
  hy_chan_release(c);

  /* Task senders, a foreign thread selecting over two channels. */
  hy_chan_t *cs[2] = {new_chan(rt, sizeof(uint64_t), 0),
                      new_chan(rt, sizeof(uint64_t), 4)};
  ft_t sel = {rt, (hy_chan_t *)cs, 0, 0, 0, test_rand()};
  pthread_t st;
  ASSERT_EQ(pthread_create(&st, NULL, ft_select_thread, &sel), 0);
  ft_t ts[4];
  hy_task_t tt[4];
  sent = 0;
  for (int i = 0; i < 4; i++) {
    ts[i] = (ft_t){rt, cs[i % 2], N, i, 0, test_rand()};
    tt[i] = spawn(rt, ft_send_thread, &ts[i]);
  }
  for (int i = 0; i < 4; i++) {
    join(rt, tt[i]);
    sent += ts[i].sum;
  }
  ASSERT_OK(hy_chan_close(cs[0]));
  ASSERT_OK(hy_chan_close(cs[1]));
  pthread_join(st, NULL);
  ASSERT_EQ(sel.n, 4 * N);
  ASSERT(sel.sum == sent);
  hy_chan_release(cs[0]);
  hy_chan_release(cs[1]);
  close_rt(rt);
  return 0;
}

/* ------------------------------------------------------- select basics */

TEST_IMPL(select_else_guard_ordered) {
  hy_runtime_t *rt = new_rt(1);
  hy_chan_t *a = new_chan(rt, sizeof(int), 2);
  hy_chan_t *b = new_chan(rt, sizeof(int), 2);
  int va = 0, vb = 0;
  /* Nothing ready: else fires, never blocks, takes nothing. */
  for (int i = 0; i < 100; i++) {
    hy_arm_t arms[3] = {hy_arm_recv(a, &va), hy_arm_recv(b, &vb),
                        hy_arm_else()};
    ASSERT_EQ(hy_select(rt, arms, 3), 2);
    ASSERT_OK(arms[2].result);
  }
  int one = 1, two = 2;
  ASSERT_OK(hy_chan_send(a, &one));
  ASSERT_OK(hy_chan_send(b, &two));
  /* A ready arm wins over else. */
  {
    hy_arm_t arms[2] = {hy_arm_recv(a, &va), hy_arm_else()};
    ASSERT_EQ(hy_select(rt, arms, 2), 0);
    ASSERT_EQ(va, 1);
    ASSERT_OK(arms[0].result);
  }
  /* A guard closes a ready arm: it neither fires nor takes. */
  {
    hy_arm_t arms[3] = {hy_when(0, hy_arm_recv(b, &vb)),
                        hy_when(1, hy_arm_recv(a, &va)), hy_arm_else()};
    ASSERT_EQ(hy_select(rt, arms, 3), 2);
    ASSERT_EQ(hy_chan_len(b), 1);
  }
  /* Ordered: the lowest ready index wins, every time. */
  ASSERT_OK(hy_chan_send(a, &one));
  for (int i = 0; i < 200; i++) {
    hy_arm_t arms[2] = {hy_arm_recv(b, &vb), hy_arm_recv(a, &va)};
    ASSERT_EQ(hy_select_ordered(rt, arms, 2), 0);
    ASSERT_EQ(vb, 2);
    ASSERT_OK(hy_chan_send(b, &two));
  }
  /* A send arm that did not fire sent nothing. */
  hy_chan_t *r = new_chan(rt, sizeof(int), 0);
  int seven = 7;
  {
    hy_arm_t arms[2] = {hy_arm_send(r, &seven), hy_arm_timeout(HY_MS(5))};
    hy_time_t t0 = hy_now();
    ASSERT_EQ(hy_select(rt, arms, 2), 1);
    ASSERT_GE(hy_now() - t0, HY_MS(5));
    ASSERT_ERR(hy_chan_try_recv(r, &va), HY_EAGAIN);
  }
  /* A send arm on a full buffered channel + else: else, nothing sent. */
  ASSERT_OK(hy_chan_send(a, &one)); /* a is full now */
  {
    hy_arm_t arms[2] = {hy_arm_send(a, &seven), hy_arm_else()};
    ASSERT_EQ(hy_select(rt, arms, 2), 1);
    ASSERT_EQ(hy_chan_len(a), 2);
  }
  /* A closed channel's recv arm fires with HY_ECLOSED once drained; a send
   * arm at once. */
  ASSERT_OK(hy_chan_close(a));
  {
    int got = 0;
    for (;;) {
      hy_arm_t arms[1] = {hy_arm_recv(a, &va)};
      ASSERT_EQ(hy_select(rt, arms, 1), 0);
      if (arms[0].result == HY_ECLOSED)
        break;
      ASSERT_OK(arms[0].result);
      got++;
    }
    ASSERT_EQ(got, 2);
    hy_arm_t s[1] = {hy_arm_send(a, &seven)};
    ASSERT_EQ(hy_select(rt, s, 1), 0);
    ASSERT_EQ(s[0].result, HY_ECLOSED);
  }
  /* The same channel in several arms (one lock, taken once): one element
   * fires one arm; a send and a recv arm on one rendezvous channel do not
   * meet each other. */
  {
    hy_chan_t *d = new_chan(rt, sizeof(int), 1);
    ASSERT_OK(hy_chan_send(d, &seven));
    int x1 = 0, x2 = 0;
    hy_arm_t arms[3] = {hy_arm_recv(d, &x1), hy_arm_recv(d, &x2),
                        hy_arm_else()};
    int k = hy_select(rt, arms, 3);
    ASSERT(k == 0 || k == 1);
    ASSERT_EQ(x1 + x2, 7);
    ASSERT_EQ(hy_select(rt, arms, 3), 2);
    hy_chan_release(d);
    hy_chan_t *e = new_chan(rt, sizeof(int), 0);
    hy_arm_t both[3] = {hy_arm_send(e, &seven), hy_arm_recv(e, &x1),
                        hy_arm_timeout(HY_MS(2))};
    ASSERT_EQ(hy_select(rt, both, 3), 2);
    hy_chan_release(e);
  }
  /* More arms than fit on the stack. */
  {
    enum { M = 3 * HY_SELECT_STACK_ARMS };
    hy_chan_t *cs[M];
    hy_arm_t arms[M + 1];
    int vals[M];
    for (int i = 0; i < M; i++) {
      cs[i] = new_chan(rt, sizeof(int), 1);
      arms[i] = hy_arm_recv(cs[i], &vals[i]);
    }
    arms[M] = hy_arm_else();
    ASSERT_EQ(hy_select(rt, arms, M + 1), M);
    int x = 77;
    ASSERT_OK(hy_chan_send(cs[M - 3], &x));
    ASSERT_EQ(hy_select(rt, arms, M + 1), M - 3);
    ASSERT_EQ(vals[M - 3], 77);
    for (int i = 0; i < M; i++)
      hy_chan_release(cs[i]);
  }
  hy_chan_release(a);
  hy_chan_release(b);
  hy_chan_release(r);
  close_rt(rt);
  return 0;
}

TEST_IMPL(select_delay_never_early) {
  hy_runtime_t *rt = new_rt(2);
  hy_chan_t *c = new_chan(rt, sizeof(int), 0);
  int v;
  for (int i = 0; i < 20; i++) {
    int64_t ns = HY_MS(1) + (int64_t)(test_rand() % (uint64_t)HY_MS(10));
    hy_time_t d = hy_deadline_in(ns);
    hy_arm_t arms[2] = {hy_arm_recv(c, &v), hy_arm_delay(d)};
    ASSERT_EQ(hy_select(rt, arms, 2), 1);
    ASSERT_GE(hy_now(), d);
    ASSERT_LT(hy_now() - d, HY_SEC(2));
  }
  /* A timeout counts from the call: never early either. */
  for (int i = 0; i < 20; i++) {
    int64_t ns = (int64_t)(test_rand() % (uint64_t)HY_MS(5));
    hy_time_t t0 = hy_now();
    hy_arm_t arms[2] = {hy_arm_timeout(ns), hy_arm_recv(c, &v)};
    ASSERT_EQ(hy_select(rt, arms, 2), 0);
    ASSERT_GE(hy_now() - t0, ns);
  }
  hy_arm_t neg[2] = {hy_arm_recv(c, &v), hy_arm_timeout(-5)};
  ASSERT_EQ(hy_select(rt, neg, 2), 1);
  /* A delay in the past fires at once; a delay alone is a sleep. */
  hy_arm_t past[2] = {hy_arm_recv(c, &v), hy_arm_delay(0)};
  ASSERT_EQ(hy_select(rt, past, 2), 1);
  hy_time_t d = hy_deadline_in(HY_MS(3));
  hy_arm_t only[1] = {hy_arm_delay(d)};
  ASSERT_EQ(hy_select(rt, only, 1), 0);
  ASSERT_GE(hy_now(), d);
  hy_chan_release(c);
  close_rt(rt);
  return 0;
}

/* ------------------------------------------------------------ fairness */

static void *fairness_run(void *p) {
  hy_runtime_t *rt = p;
  hy_chan_t *a = new_chan(rt, sizeof(int), 1);
  hy_chan_t *b = new_chan(rt, sizeof(int), 1);
  hy_chan_t *idle = new_chan(rt, sizeof(int), 1);
  int v = 0, wins[3] = {0, 0, 0};
  ASSERT_OK(hy_chan_send(a, &v));
  ASSERT_OK(hy_chan_send(b, &v));
  enum { N = 100000 };
  for (int i = 0; i < N; i++) {
    /* An idle arm between them must not tilt the odds. */
    hy_arm_t arms[3] = {hy_arm_recv(a, &v), hy_arm_recv(idle, &v),
                        hy_arm_recv(b, &v)};
    int k = hy_select(rt, arms, 3);
    ASSERT(k == 0 || k == 2);
    wins[k]++;
    ASSERT_OK(hy_chan_try_send(k == 0 ? a : b, &v));
  }
  ASSERT_GE(wins[0], N * 45 / 100);
  ASSERT_LE(wins[0], N * 55 / 100);
  ASSERT_GE(wins[2], N * 45 / 100);
  ASSERT_LE(wins[2], N * 55 / 100);
  hy_chan_release(a);
  hy_chan_release(b);
  hy_chan_release(idle);
  return NULL;
}

TEST_IMPL(select_fairness) {
  hy_runtime_t *rt = new_rt(1);
  join(rt, spawn(rt, fairness_run, rt)); /* in a task */
  fairness_run(rt);                      /* on a foreign thread */
  close_rt(rt);
  return 0;
}

/* --------------------------------------- contention: count every element */

enum { SC_CHANS = 3, SC_PROD = 4, SC_CONS = 6, SC_PER = 20000 };

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t **in;   /* the SC_CHANS channels */
  hy_chan_t *out;   /* consumers forward a share through a send arm */
  int id;
  atomic_uchar *seen;
  atomic_int *got;
  int64_t forwarded, timeouts;
  uint64_t seed;
} sc_t;

/* Producers send each element through a select over send arms on all the
 * channels: it lands in exactly one of them. */
static void *sc_produce(void *p) {
  sc_t *x = p;
  for (int i = 0; i < SC_PER; i++) {
    uint32_t v = (uint32_t)(x->id * SC_PER + i);
    for (;;) {
      hy_arm_t a[SC_CHANS + 1];
      for (int k = 0; k < SC_CHANS; k++)
        a[k] = hy_arm_send(x->in[k], &v);
      a[SC_CHANS] = hy_arm_timeout(HY_US(rnd(&x->seed) % 200));
      int r = hy_select(x->rt, a, SC_CHANS + 1);
      ASSERT_GE(r, 0);
      if (r == SC_CHANS) {
        x->timeouts++;
        continue; /* sent nothing: try again */
      }
      ASSERT_OK(a[r].result);
      break;
    }
    if (i % 64 == 0)
      jitter(x->rt, &x->seed);
  }
  return NULL;
}

static void mark(sc_t *x, uint32_t v) {
  ASSERT_LT(v, (uint32_t)(SC_PROD * SC_PER));
  ASSERT_EQ(atomic_fetch_add(&x->seen[v], 1), 0);
  atomic_fetch_add(x->got, 1);
}

/* Consumers select over recv on every channel, a send arm that forwards
 * the element in hand (if any) to `out`, and a short delay. */
static void *sc_consume(void *p) {
  sc_t *x = p;
  int open = (1 << SC_CHANS) - 1;
  uint32_t hand = 0, v = 0;
  int holding = 0;
  while (open || holding) {
    hy_arm_t a[SC_CHANS + 2];
    for (int k = 0; k < SC_CHANS; k++)
      a[k] = hy_when(!holding && (open >> k & 1), hy_arm_recv(x->in[k], &v));
    a[SC_CHANS] = hy_when(holding, hy_arm_send(x->out, &hand));
    a[SC_CHANS + 1] = hy_arm_timeout(HY_US(rnd(&x->seed) % 300));
    int r = hy_select(x->rt, a, SC_CHANS + 2);
    ASSERT_GE(r, 0);
    if (r == SC_CHANS + 1) {
      x->timeouts++;
      if (holding && rnd(&x->seed) % 2) { /* give up forwarding: keep it */
        mark(x, hand);
        holding = 0;
      }
      continue;
    }
    if (r == SC_CHANS) {
      ASSERT_OK(a[r].result);
      holding = 0; /* the out reader counts it */
      x->forwarded++;
      continue;
    }
    if (a[r].result == HY_ECLOSED) {
      open &= ~(1 << r);
      continue;
    }
    ASSERT_OK(a[r].result);
    if (rnd(&x->seed) % 4 == 0) {
      hand = v;
      holding = 1;
    } else {
      mark(x, v);
    }
  }
  return NULL;
}

static void *sc_out_reader(void *p) {
  sc_t *x = p;
  uint32_t v;
  int rc;
  while ((rc = hy_chan_recv(x->out, &v)) == 0) {
    mark(x, v);
    x->forwarded++;
    jitter(x->rt, &x->seed);
  }
  ASSERT_ERR(rc, HY_ECLOSED);
  return NULL;
}

TEST_IMPL(select_contention_counts_every_element) {
  hy_runtime_t *rt = new_rt(4);
  hy_chan_t *in[SC_CHANS] = {new_chan(rt, 4, 0), new_chan(rt, 4, 1),
                             new_chan(rt, 4, 16)};
  hy_chan_t *out = new_chan(rt, 4, 0);
  atomic_uchar *seen = calloc(SC_PROD * SC_PER, 1);
  atomic_int got = 0;
  sc_t pr[SC_PROD], co[SC_CONS], rd;
  hy_task_t tp[SC_PROD], tc[SC_CONS], trd;
  rd = (sc_t){rt, in, out, 0, seen, &got, 0, 0, test_rand()};
  trd = spawn(rt, sc_out_reader, &rd);
  for (int i = 0; i < SC_CONS; i++) {
    co[i] = (sc_t){rt, in, out, i, seen, &got, 0, 0, test_rand()};
    tc[i] = spawn(rt, sc_consume, &co[i]);
  }
  for (int i = 0; i < SC_PROD; i++) {
    pr[i] = (sc_t){rt, in, out, i, seen, &got, 0, 0, test_rand()};
    tp[i] = spawn(rt, sc_produce, &pr[i]);
  }
  for (int i = 0; i < SC_PROD; i++)
    join(rt, tp[i]);
  for (int k = 0; k < SC_CHANS; k++)
    ASSERT_OK(hy_chan_close(in[k]));
  int64_t fwd = 0;
  for (int i = 0; i < SC_CONS; i++) {
    join(rt, tc[i]);
    fwd += co[i].forwarded;
  }
  ASSERT_OK(hy_chan_close(out));
  join(rt, trd);
  ASSERT_EQ(fwd, rd.forwarded); /* every fired send arm was received once */
  ASSERT_EQ(got, SC_PROD * SC_PER);
  for (int i = 0; i < SC_PROD * SC_PER; i++)
    ASSERT_EQ(seen[i], 1);
  free(seen);
  for (int k = 0; k < SC_CHANS; k++)
    hy_chan_release(in[k]);
  hy_chan_release(out);
  close_rt(rt);
  return 0;
}

/* ----------------------------------------- cancel racing with a sender */

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c, *d;
  int rc, arm;
  uint32_t v;
  uint64_t seed;
} cr_t;

static void *cr_select(void *p) {
  cr_t *x = p;
  hy_arm_t a[2] = {hy_arm_recv(x->c, &x->v), hy_arm_recv(x->d, &x->v)};
  x->rc = hy_select(x->rt, a, 2);
  if (x->rc >= 0)
    x->arm = a[x->rc].result;
  return NULL;
}

static void *cr_send(void *p) {
  cr_t *x = p;
  jitter(x->rt, &x->seed);
  x->rc = hy_chan_send_until(x->c, &x->v, hy_deadline_in(HY_US(rnd(&x->seed) % 400)));
  return NULL;
}

TEST_IMPL(select_cancel_takes_nothing) {
  hy_runtime_t *rt = new_rt(3);
  hy_chan_t *c = new_chan(rt, 4, 0);
  hy_chan_t *d = new_chan(rt, 4, 1);
  int fired = 0, cancelled = 0;
  for (int round = 0; round < 400; round++) {
    cr_t rx = {rt, c, d, 0, 0, 0, test_rand()};
    cr_t tx = {rt, c, d, 0, 0, (uint32_t)round + 1, test_rand()};
    hy_task_t tr = spawn(rt, cr_select, &rx);
    hy_task_t ts = spawn(rt, cr_send, &tx);
    if (test_rand() % 2)
      hy_sleep(rt, HY_US(test_rand() % 300));
    ASSERT_OK(hy_task_cancel(rt, tr));
    join(rt, tr);
    join(rt, ts);
    /* The send completed exactly when the select took it. */
    if (tx.rc == 0) {
      ASSERT_EQ(rx.rc, 0);
      ASSERT_OK(rx.arm);
      ASSERT_EQ(rx.v, (uint32_t)round + 1);
      fired++;
    } else {
      ASSERT_ERR(tx.rc, HY_ETIMEDOUT);
      ASSERT_ERR(rx.rc, HY_ECANCELED);
      ASSERT_EQ(rx.v, 0);
      cancelled++;
    }
    ASSERT_EQ(hy_chan_len(d), 0);
  }
  fprintf(stderr, "fired %d cancelled %d\n", fired, cancelled);
  hy_chan_release(c);
  hy_chan_release(d);
  close_rt(rt);
  return 0;
}

/* -------------------------------------------- task and terminate arms */

static void *finish_after(void *p) {
  hy_runtime_t **rtp = p;
  hy_sleep(*rtp, HY_MS(10));
  return (void *)(intptr_t)1234;
}

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c;
  int rc;
} term_t;

static void *term_waiter(void *p) {
  term_t *x = p;
  int v;
  hy_arm_t a[2] = {hy_arm_recv(x->c, &v), hy_arm_terminate(x->rt)};
  x->rc = hy_select(x->rt, a, 2);
  return NULL;
}

TEST_IMPL(select_task_and_terminate_arms) {
  hy_runtime_t *rt = new_rt(2);
  hy_chan_t *c = new_chan(rt, sizeof(int), 0);
  hy_task_t t = spawn(rt, finish_after, &rt);
  void *res = NULL;
  int v;
  hy_arm_t a[2] = {hy_arm_recv(c, &v), hy_arm_task(rt, t, &res)};
  ASSERT_EQ(hy_select(rt, a, 2), 1);
  ASSERT_OK(a[1].result);
  ASSERT_EQ((intptr_t)res, 1234);
  ASSERT_EQ(join(rt, t), 1234);

  /* or terminate: fires when the shutdown starts. */
  term_t x[4];
  hy_task_t tt[4];
  for (int i = 0; i < 4; i++) {
    x[i] = (term_t){rt, c, -1};
    tt[i] = spawn(rt, term_waiter, &x[i]);
  }
  hy_sleep(rt, HY_MS(20));
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(100)));
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(join(rt, tt[i]), 0);
    ASSERT_EQ(x[i].rc, 1);
  }
  /* After the shutdown began the arm is ready at once. */
  hy_arm_t b[2] = {hy_arm_recv(c, &v), hy_arm_terminate(rt)};
  ASSERT_EQ(hy_select(rt, b, 2), 1);
  hy_chan_release(c);
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

/* A task arm names the task's slot and generation: a handle joined or
 * detached elsewhere - before the select, or while it waits - never lets
 * the select touch a block that is gone.  It fires with the result if the
 * end was seen, HY_ESTALE if the task was gone first.  ASan (cached task
 * blocks are poisoned) catches any use of a released block. */
typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *go;
  hy_chan_t *never;
  hy_task_t b;
  intptr_t want;
  int rc, result, yields;
  void *res;
} armx_t;

static void *arm_ender(void *p) {
  armx_t *x = p;
  int v;
  if (hy_chan_recv(x->go, &v) < 0)
    return NULL;
  for (int i = 0; i < x->yields; i++)
    hy_yield(x->rt);
  return (void *)x->want;
}

static void *arm_selector(void *p) {
  armx_t *x = p;
  int v;
  hy_arm_t a[2] = {hy_arm_recv(x->never, &v), hy_arm_task(x->rt, x->b, &x->res)};
  for (int i = 0; i < x->yields; i++)
    hy_yield(x->rt);
  x->rc = hy_select(x->rt, a, 2);
  x->result = a[1].result;
  return NULL;
}

TEST_IMPL(select_task_arm_outlives_handle) {
  enum { N = 400 };
  hy_runtime_t *rt = new_rt(2);
  hy_chan_t *never = new_chan(rt, sizeof(int), 0);
  /* One record per round: a detached ender may outlive its round. */
  armx_t *xs = calloc(N, sizeof *xs);
  ASSERT(xs != NULL);
  int fired = 0, stale = 0;
  for (int it = 0; it < N; it++) {
    armx_t *x = &xs[it];
    *x = (armx_t){rt, new_chan(rt, sizeof(int), 1), never, {0}, it + 1, -1,
                  -1, (int)(test_rand() % 8), NULL};
    x->b = spawn(rt, arm_ender, x);
    int mode = (int)(test_rand() % 3); /* detach, join elsewhere, keep */
    hy_task_t a = spawn(rt, arm_selector, x);
    if (test_rand() % 2)
      hy_sleep(rt, (int64_t)(test_rand() % 50000));
    int v = 0;
    if (mode == 0)
      ASSERT_OK(hy_task_detach(rt, x->b));
    ASSERT_OK(hy_chan_send(x->go, &v));
    if (mode == 1)
      ASSERT_EQ(join(rt, x->b), it + 1);
    ASSERT_EQ(join(rt, a), 0);
    ASSERT_EQ(x->rc, 1);
    if (x->result == 0) {
      ASSERT_EQ((intptr_t)x->res, it + 1);
      fired++;
    } else {
      ASSERT_EQ(x->result, HY_ESTALE);
      ASSERT(mode != 2);
      stale++;
    }
    if (mode == 2)
      ASSERT_EQ(join(rt, x->b), it + 1);
  }
  ASSERT_EQ(fired + stale, N);
  fprintf(stderr, "task arm: %d fired, %d stale\n", fired, stale);

  /* Made from a stale or detached handle: HY_ESTALE at once. */
  hy_task_t bogus = {((uint64_t)7 << 32) | 12345u};
  void *res = NULL;
  int v;
  hy_arm_t s1[2] = {hy_arm_recv(never, &v), hy_arm_task(rt, bogus, &res)};
  ASSERT_EQ(hy_select(rt, s1, 2), 1);
  ASSERT_EQ(s1[1].result, HY_ESTALE);
  hy_chan_t *go = new_chan(rt, sizeof(int), 1);
  armx_t y = {rt, go, never, {0}, 5, -1, -1, 0, NULL};
  y.b = spawn(rt, arm_ender, &y);
  ASSERT_OK(hy_task_detach(rt, y.b));
  hy_arm_t s2[2] = {hy_arm_recv(never, &v), hy_arm_task(rt, y.b, &res)};
  ASSERT_EQ(hy_select(rt, s2, 2), 1);
  ASSERT_EQ(s2[1].result, HY_ESTALE);
  v = 0;
  ASSERT_OK(hy_chan_send(go, &v));
  y.b = spawn(rt, arm_ender, &y);
  ASSERT_OK(hy_chan_send(go, &v));
  ASSERT_EQ(join(rt, y.b), 5);
  hy_arm_t s3[2] = {hy_arm_recv(never, &v), hy_arm_task(rt, y.b, &res)};
  ASSERT_EQ(hy_select(rt, s3, 2), 1);
  ASSERT_EQ(s3[1].result, HY_ESTALE);

  close_rt(rt); /* the detached enders are gone after this */
  for (int it = 0; it < N; it++)
    hy_chan_release(xs[it].go);
  free(xs);
  hy_chan_release(go);
  hy_chan_release(never);
  return 0;
}

/* ------------------------------------------- random-timing select stress */

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t **cs;
  int n;
  int64_t sum;
  int count;
  uint64_t seed;
} rs_t;

static void *rs_sender(void *p) {
  rs_t *x = p;
  for (int i = 1; i <= x->n; i++) {
    int64_t v = i;
    hy_chan_t *c = x->cs[rnd(&x->seed) % 2];
    int rc;
    while ((rc = hy_chan_send_until(c, &v, hy_deadline_in(HY_US(rnd(&x->seed) % 100)))) ==
           HY_ETIMEDOUT)
      ;
    ASSERT_OK(rc);
    x->sum += v;
    jitter(x->rt, &x->seed);
  }
  return NULL;
}

static void *rs_receiver(void *p) {
  rs_t *x = p;
  int open = 3;
  while (open) {
    int64_t v = 0;
    hy_arm_t a[3] = {hy_when(open & 1, hy_arm_recv(x->cs[0], &v)),
                     hy_when(open & 2, hy_arm_recv(x->cs[1], &v)),
                     rnd(&x->seed) % 2 ? hy_arm_else()
                                     : hy_arm_timeout(HY_US(rnd(&x->seed) % 100))};
    int r = hy_select(x->rt, a, 3);
    ASSERT_GE(r, 0);
    if (r == 2) {
      ASSERT_EQ(v, 0); /* the else/delay took nothing */
      jitter(x->rt, &x->seed);
      continue;
    }
    if (a[r].result == HY_ECLOSED) {
      open &= ~(1 << r);
      continue;
    }
    ASSERT_OK(a[r].result);
    x->sum += v;
    x->count++;
  }
  return NULL;
}

TEST_IMPL(select_random_stress) {
  hy_runtime_t *rt = new_rt(3);
  hy_chan_t *cs[2] = {new_chan(rt, 8, 0), new_chan(rt, 8, 3)};
  enum { S = 4, R = 4, N = 5000 };
  rs_t s[S], r[R];
  hy_task_t ts[S], tr[R];
  for (int i = 0; i < R; i++) {
    r[i] = (rs_t){rt, cs, 0, 0, 0, test_rand()};
    tr[i] = spawn(rt, rs_receiver, &r[i]);
  }
  for (int i = 0; i < S; i++) {
    s[i] = (rs_t){rt, cs, N, 0, 0, test_rand()};
    ts[i] = spawn(rt, rs_sender, &s[i]);
  }
  int64_t sent = 0, got = 0;
  int count = 0;
  for (int i = 0; i < S; i++) {
    join(rt, ts[i]);
    sent += s[i].sum;
  }
  ASSERT_OK(hy_chan_close(cs[0]));
  ASSERT_OK(hy_chan_close(cs[1]));
  for (int i = 0; i < R; i++) {
    join(rt, tr[i]);
    got += r[i].sum;
    count += r[i].count;
  }
  ASSERT_EQ(count, S * N);
  ASSERT_EQ(got, sent);
  hy_chan_release(cs[0]);
  hy_chan_release(cs[1]);
  close_rt(rt);
  return 0;
}

/* ------------------------------------ the supervisor loop of chan.h */

enum { SV_WORKERS = 3, SV_FATAL = 15 };

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *signals, *jobs, *work, *stop;
  atomic_int active;
  atomic_int beats[SV_WORKERS];
  int dispatched, heartbeat_checks, done_jobs;
  atomic_int worked;
} sv_t;

typedef struct {
  sv_t *sv;
  int id;
} svw_t;

static void *sv_worker(void *p) {
  svw_t *w = p;
  sv_t *sv = w->sv;
  for (;;) {
    int job;
    hy_arm_t a[3] = {hy_arm_recv(sv->work, &job), hy_arm_recv(sv->stop, NULL),
                     hy_arm_timeout(HY_MS(5))};
    int i = hy_select(sv->rt, a, 3);
    ASSERT_GE(i, 0);
    atomic_fetch_add(&sv->beats[w->id], 1);
    if (i == 1 || (i == 0 && a[0].result == HY_ECLOSED))
      break; /* told to stop */
    if (i == 0)
      atomic_fetch_add(&sv->worked, 1);
  }
  atomic_fetch_sub(&sv->active, 1);
  return NULL;
}

static void *sv_supervisor(void *p) {
  sv_t *sv = p;
  int shutting_down = 0;
  for (;;) {
    if (shutting_down && atomic_load(&sv->active) == 0)
      break;
    int sig, job;
    hy_arm_t arms[] = {
        hy_arm_recv(sv->signals, &sig),
        hy_when(!shutting_down, hy_arm_recv(sv->jobs, &job)),
        hy_arm_timeout(HY_MS(10)),
    };
    int i = hy_select(sv->rt, arms, 3);
    ASSERT_GE(i, 0);
    if (i == 0 && arms[0].result == 0 && sig == SV_FATAL && !shutting_down) {
      shutting_down = 1;
      ASSERT_OK(hy_chan_close(sv->stop)); /* tell the workers */
    } else if (i == 1 && arms[1].result == 0) {
      ASSERT_OK(hy_chan_send(sv->work, &job)); /* dispatch */
      sv->dispatched++;
    } else if (i == 2) {
      sv->heartbeat_checks++;
    }
  }
  return NULL;
}

TEST_IMPL(select_supervisor_loop) {
  hy_runtime_t *rt = new_rt(2);
  static sv_t sv;
  sv.rt = rt;
  sv.signals = new_chan(rt, sizeof(int), 4);
  sv.jobs = new_chan(rt, sizeof(int), 16);
  sv.work = new_chan(rt, sizeof(int), 0);
  sv.stop = new_chan(rt, 0, 0);
  atomic_store(&sv.active, SV_WORKERS);
  svw_t w[SV_WORKERS];
  hy_task_t tw[SV_WORKERS];
  for (int i = 0; i < SV_WORKERS; i++) {
    w[i] = (svw_t){&sv, i};
    tw[i] = spawn(rt, sv_worker, &w[i]);
  }
  hy_task_t ts = spawn(rt, sv_supervisor, &sv);
  for (int j = 0; j < 100; j++)
    ASSERT_OK(hy_chan_send(sv.jobs, &j)); /* from this foreign thread */
  while (hy_chan_len(sv.jobs) > 0)
    hy_sleep(rt, HY_MS(1));
  hy_sleep(rt, HY_MS(30)); /* a few heartbeat periods */
  int sig = 1;                              /* not fatal: ignored */
  ASSERT_OK(hy_chan_send(sv.signals, &sig));
  sig = SV_FATAL;
  ASSERT_OK(hy_chan_send(sv.signals, &sig));
  join(rt, ts);
  for (int i = 0; i < SV_WORKERS; i++) {
    join(rt, tw[i]);
    ASSERT_GT(atomic_load(&sv.beats[i]), 0);
  }
  ASSERT_EQ(sv.dispatched, 100);
  ASSERT_EQ(atomic_load(&sv.worked), 100);
  ASSERT_GT(sv.heartbeat_checks, 0);
  hy_chan_release(sv.signals);
  hy_chan_release(sv.jobs);
  hy_chan_release(sv.work);
  hy_chan_release(sv.stop);
  close_rt(rt);
  return 0;
}

/* ------------------------------------- an awaitable defined elsewhere */

/* A one-shot gate written only against runtime/wait.h, as hub consumers,
 * event receivers and connections are: select takes it like any arm. */
#include "runtime/wait.h"

typedef struct {
  hy__lock_t lock;
  int open;
  hy__waitq q;
  int taken; /* how many arms fired on it */
} gate_t;

static hy__lock_t *gate_lock(void *obj) { return &((gate_t *)obj)->lock; }

static int gate_try(void *obj, hy_arm_t *arm, int *result) {
  gate_t *g = obj;
  (void)arm;
  if (!g->open)
    return 0;
  g->taken++;
  *result = 0;
  return 1;
}

static void gate_enqueue(void *obj, hy_arm_t *arm, hy__waiter *w) {
  (void)arm;
  hy__waitq_push(&((gate_t *)obj)->q, w);
}

static void gate_dequeue(void *obj, hy_arm_t *arm, hy__waiter *w) {
  (void)arm;
  hy__waitq_remove(&((gate_t *)obj)->q, w);
}

static const struct hy_awaitable gate_awaitable = {
    "gate", gate_lock, gate_try, gate_enqueue, gate_dequeue};

static hy_arm_t arm_gate(gate_t *g) {
  hy_arm_t a = {.ops = &gate_awaitable, .obj = g, .kind = HY_ARM_OBJECT,
                .guard = 1};
  return a;
}

static void gate_open(gate_t *g) {
  hy__lock(&g->lock);
  g->open = 1;
  hy__waiter *w;
  while ((w = hy__waitq_claim(&g->q)) != NULL) {
    g->taken++;
    w->wait->result = 0;
    hy__wait_wake(w->wait);
  }
  hy__unlock(&g->lock);
}

typedef struct {
  hy_runtime_t *rt;
  gate_t *g;
  hy_chan_t *c;
  int rc;
} gw_t;

static void *gate_waiter(void *p) {
  gw_t *x = p;
  int v;
  hy_arm_t a[2] = {hy_arm_recv(x->c, &v), arm_gate(x->g)};
  x->rc = hy_select(x->rt, a, 2);
  return NULL;
}

TEST_IMPL(select_custom_awaitable) {
  hy_runtime_t *rt = new_rt(2);
  static gate_t g;
  hy_chan_t *c = new_chan(rt, sizeof(int), 0);
  enum { N = 8 };
  gw_t x[N];
  hy_task_t t[N];
  for (int i = 0; i < N; i++) {
    x[i] = (gw_t){rt, &g, c, -1};
    t[i] = spawn(rt, gate_waiter, &x[i]);
  }
  hy_sleep(rt, HY_MS(20));
  gate_open(&g);
  for (int i = 0; i < N; i++) {
    join(rt, t[i]);
    ASSERT_EQ(x[i].rc, 1);
  }
  ASSERT_EQ(g.taken, N);
  /* Open now: ready at once, from a foreign thread too, and with rt NULL
   * (a thread outside every runtime). */
  gw_t y = {rt, &g, c, -1};
  gate_waiter(&y);
  ASSERT_EQ(y.rc, 1);
  y.rt = NULL;
  gate_waiter(&y);
  ASSERT_EQ(y.rc, 1);
  ASSERT_EQ(g.taken, N + 2);
  hy_chan_release(c);
  close_rt(rt);
  return 0;
}

/* ---------------------------------------------------------- embedded */

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c;
  int n;
  long sum;
} em_t;

static void *em_send(void *p) {
  em_t *x = p;
  for (int i = 1; i <= x->n; i++)
    ASSERT_OK(hy_chan_send(x->c, &i));
  ASSERT_OK(hy_chan_close(x->c));
  return NULL;
}

static void *em_recv(void *p) {
  em_t *x = p;
  int v;
  while (hy_chan_recv(x->c, &v) == 0)
    x->sum += v;
  return NULL;
}

TEST_IMPL(chan_embedded) {
  hy_runtime_t *rt = new_rt(0); /* the host's thread runs the tasks */
  em_t x = {rt, new_chan(rt, sizeof(int), 0), 1000, 0};
  hy_task_t a = spawn(rt, em_recv, &x);
  hy_task_t b = spawn(rt, em_send, &x);
  hy_time_t end = hy_deadline_in(HY_SEC(30));
  while (x.sum != 500500 && hy_now() < end)
    ASSERT_GE(hy_runtime_run_once(rt, HY_MS(1)), 0);
  ASSERT_EQ(x.sum, 500500);
  hy_task_t ts[2] = {a, b};
  for (int i = 0; i < 2; i++) {
    int rc;
    while ((rc = hy_task_join_until(rt, ts[i], 0, NULL)) == HY_ETIMEDOUT)
      ASSERT_GE(hy_runtime_run_once(rt, HY_MS(1)), 0);
    ASSERT_OK(rc);
  }
  hy_chan_release(x.c);
  close_rt(rt);
  return 0;
}

/* ------------------------------------------------- dump: since when */

static void dump_to(void *rt, FILE *f) { hy_runtime_dump(rt, f); }

static void *dump_recv(void *p) {
  hy_chan_t *c = p;
  int v;
  return (void *)(intptr_t)hy_chan_recv(c, &v);
}

/* How long the dump says the task named "since-me" has awaited, in ms, or
 * -1 if it does not show it parked in a channel receive. */
static double dump_waited_ms(hy_runtime_t *rt) {
  static char buf[8192];
  compat_capture(dump_to, rt, buf, sizeof buf);
  const char *line = strstr(buf, "since-me");
  if (!line)
    return -1;
  const char *p = strstr(line, "parked  awaiting chan-recv for ");
  const char *eol = strchr(line, '\n');
  if (!p || (eol && p > eol))
    return -1;
  return strtod(p + strlen("parked  awaiting chan-recv for "), NULL);
}

/* The dump's since-when comes from the worker's coarse clock instead of a
 * clock read on every park: it is never later than the park (the waited
 * time is never short) and never earlier than the moment the task was
 * spawned. */
TEST_IMPL(chan_dump_since_when) {
  hy_runtime_t *rt = new_rt(1);
  hy_chan_t *c = new_chan(rt, sizeof(int), 0);
  hy_time_t t0 = hy_now();
  hy_task_opts_t to = HY_TASK_OPTS_INIT;
  to.name = "since-me";
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, dump_recv, c, &to, &t));
  hy_time_t end = hy_deadline_in(HY_SEC(30));
  while (dump_waited_ms(rt) < 0 && hy_now() < end)
    usleep(1000);
  hy_time_t tp = hy_now(); /* it is parked by now */
  ASSERT(dump_waited_ms(rt) >= 0);
  usleep(100 * 1000);
  hy_time_t t1 = hy_now();
  double ms = dump_waited_ms(rt);
  hy_time_t t2 = hy_now();
  ASSERT_GE(ms * 1e6, (double)(t1 - tp) - 1e3); /* 3 decimals printed */
  ASSERT(ms * 1e6 <= (double)(t2 - t0) + 1e3);
  ASSERT_OK(hy_chan_close(c));
  ASSERT_EQ(join(rt, t), HY_ECLOSED);
  hy_chan_release(c);
  close_rt(rt);
  return 0;
}

/* ------------------------------------ cancel racing the start of a wait */

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c;
  int select;
  int delay; /* spins between saying it goes and the call */
  atomic_int going;
} cw_t;

static void *cancel_me(void *p) {
  cw_t *x = p;
  int v = 0;
  atomic_store(&x->going, 1);
  for (volatile int k = 0; k < x->delay; k++)
    ;
  if (!x->select)
    return (void *)(intptr_t)hy_chan_recv(x->c, &v);
  hy_arm_t a[2] = {hy_arm_recv(x->c, &v), hy_arm_send(x->c, &v)};
  int i = hy_select(x->rt, a, 2);
  return (void *)(intptr_t)(i < 0 ? i : 1000 + i);
}

/* One round: spawns a receive or select and cancels it about when it
 * begins its call; it must end with HY_ECANCELED.  Returns 0 or -1. */
static int cancel_round(hy_runtime_t *rt, hy_chan_t *c, uint64_t *seed,
                        int in_task) {
  cw_t w = {rt, c, (int)(rnd(seed) % 2), (int)(rnd(seed) % 1000), 0};
  hy_task_t t;
  if (hy_task_spawn(rt, cancel_me, &w, NULL, &t) != 0)
    return -1;
  /* Mostly about when the task begins its call.  A task waits a bounded
   * time: the one it waits for may be queued behind it. */
  if (rnd(seed) % 8)
    for (long k = 0; !atomic_load(&w.going) && (!in_task || k < 20000); k++)
      ;
  if (hy_task_cancel(rt, t) != 0)
    return -1;
  void *res = NULL;
  if (hy_task_join(rt, t, &res) != 0 || (intptr_t)res != HY_ECANCELED)
    return -1;
  return 0;
}

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c;
  uint64_t seed;
  int rounds;
} cr_task_t;

static void *cancel_rounds(void *p) {
  cr_task_t *x = p;
  for (int r = 0; r < x->rounds; r++)
    if (cancel_round(x->rt, x->c, &x->seed, 1) != 0)
      return (void *)(intptr_t)-1;
  return NULL;
}

/* Cancels a blocking receive or select at random points of its start:
 * before it runs, while it tries the channel, between opening its wait and
 * switching out, and once parked; from a thread outside the runtime, then
 * from a task on the other worker.  Every one must end with HY_ECANCELED
 * (none sleeps through its cancel) and take nothing. */
TEST_IMPL(chan_cancel_races_wait_start) {
  hy_runtime_t *rt = new_rt(2);
  hy_chan_t *c = new_chan(rt, sizeof(int), 0);
  uint64_t seed = test_rand();
  hy_time_t end = hy_deadline_in(HY_SEC(20));
  for (int r = 0; r < 4000 && hy_now() < end; r++)
    ASSERT_OK(cancel_round(rt, c, &seed, 0));
  cr_task_t x = {rt, c, test_rand(), 2000};
  ASSERT_EQ(join(rt, spawn(rt, cancel_rounds, &x)), 0);
  ASSERT_EQ(hy_chan_len(c), 0);
  hy_chan_release(c);
  close_rt(rt);
  return 0;
}

/* The same where the system has no process-wide barrier: each park for a
 * quiet wait fences before it looks at its cancel flag, and a cancel does
 * not run the barrier (rt->park_fence). */
TEST_IMPL(chan_cancel_races_wait_start_fenced) {
  hy_runtime_t *rt = new_rt(2);
  rt->park_fence = 1; /* before any task parks */
  hy_chan_t *c = new_chan(rt, sizeof(int), 0);
  uint64_t seed = test_rand();
  hy_time_t end = hy_deadline_in(HY_SEC(20));
  for (int r = 0; r < 4000 && hy_now() < end; r++)
    ASSERT_OK(cancel_round(rt, c, &seed, 0));
  cr_task_t x = {rt, c, test_rand(), 2000};
  ASSERT_EQ(join(rt, spawn(rt, cancel_rounds, &x)), 0);
  ASSERT_EQ(hy_chan_len(c), 0);
  hy_chan_release(c);
  close_rt(rt);
  return 0;
}

/* ------------------------------------- floating-point modes per task */

#include <fenv.h>

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *to, *from;
  int mode;
  int first; /* sends first */
  int own;   /* asks for a state of its own (hy_task_own_fp) */
  double third;
  int bad;
} fp_t;

/* 1/3 rounded in the current mode, from operands the compiler cannot fold. */
static double fp_third(void) {
  volatile double one = 1.0, three = 3.0;
  return one / three;
}

/* A task with a state of its own sets its rounding mode once, then bounces
 * a value with the other many times (every exchange switches between the
 * two on one worker): its mode stays its own.  A task that shares the
 * worker's sets its mode around each computation and restores the default
 * before it awaits (the contract of hydra/runtime.h): after every await it
 * finds the default again. */
static void *fp_task(void *p) {
  fp_t *x = p;
  if (x->own) {
    ASSERT_OK(hy_task_own_fp(x->rt));
    fesetround(x->mode);
  }
  if (fegetround() != (x->own ? x->mode : FE_TONEAREST))
    x->bad++;
  for (int i = 0; i < 2000; i++) {
    int v = i;
    if (x->first && hy_chan_send(x->to, &v) != 0)
      x->bad++;
    if (hy_chan_recv(x->from, &v) != 0)
      x->bad++;
    if (x->own) {
      if (fegetround() != x->mode || fp_third() != x->third)
        x->bad++;
    } else {
      if (fegetround() != FE_TONEAREST)
        x->bad++;
      fesetround(x->mode);
      if (fp_third() != x->third)
        x->bad++;
      fesetround(FE_TONEAREST);
    }
    if (!x->first && hy_chan_send(x->to, &v) != 0)
      x->bad++;
  }
  return NULL;
}

static void fp_pair(int workers, int own_up, int own_down) {
  int saved = fegetround();
  /* Workers start with the default whatever the thread that made them
   * had (a new thread inherits it on Linux). */
  fesetround(FE_TOWARDZERO);
  hy_runtime_t *rt = new_rt(workers);
  fesetround(saved);
  hy_chan_t *a = new_chan(rt, sizeof(int), 0), *b = new_chan(rt, sizeof(int), 0);
  fp_t up = {rt, a, b, FE_UPWARD, 1, own_up, 0, 0};
  fp_t down = {rt, b, a, FE_DOWNWARD, 0, own_down, 0, 0};
  fesetround(FE_UPWARD);
  up.third = fp_third();
  fesetround(FE_DOWNWARD);
  down.third = fp_third();
  fesetround(saved);
  ASSERT(up.third > down.third); /* the two modes are really different */
  hy_task_t tu = spawn(rt, fp_task, &up);
  hy_task_t td = spawn(rt, fp_task, &down);
  join(rt, tu);
  join(rt, td);
  ASSERT_EQ(up.bad, 0);
  ASSERT_EQ(down.bad, 0);
  hy_chan_release(a);
  hy_chan_release(b);
  close_rt(rt);
}

/* Tasks that asked for a state of their own keep their rounding modes
 * across switches, between themselves and next to a task that shares the
 * worker's; on one worker and across two. */
TEST_IMPL(chan_tasks_keep_fp_modes) {
  fp_pair(1, 1, 1);
  fp_pair(1, 1, 0);
  fp_pair(2, 1, 1);
  fp_pair(2, 0, 1);
  return 0;
}

/* Tasks that share the worker's state and keep the contract (restore it
 * before each await) always find the default after a switch, and every
 * task starts with it - also one whose block last served a task that had
 * a state of its own, and ended with its mode set. */
static void *fp_leaves_mode_set(void *p) {
  hy_runtime_t *rt = p;
  ASSERT_OK(hy_task_own_fp(rt));
  fesetround(FE_UPWARD);
  ASSERT_OK(hy_yield(rt));
  ASSERT_EQ(fegetround(), FE_UPWARD);
  return NULL;
}

static void *fp_reports_mode(void *p) {
  (void)p;
  return (void *)(intptr_t)fegetround();
}

TEST_IMPL(chan_tasks_share_fp_default) {
  fp_pair(1, 0, 0);
  fp_pair(2, 0, 0);
  hy_runtime_t *rt = new_rt(1);
  for (int i = 0; i < 100; i++) {
    join(rt, spawn(rt, fp_leaves_mode_set, rt));
    hy_task_t t = spawn(rt, fp_reports_mode, NULL);
    void *r = NULL;
    ASSERT_OK(hy_task_join(rt, t, &r));
    ASSERT_EQ((int)(intptr_t)r, FE_TONEAREST);
  }
  ASSERT_ERR(hy_task_own_fp(rt), HY_EINVAL); /* not a task */
  close_rt(rt);
  return 0;
}

/* ------------------------- wakes racing the waiter's switch-out */

/* A task parked for a channel operation is marked parked by a plain store
 * once its registers are saved, and its waker - on another worker or
 * outside the runtime - waits for that mark before it makes it runnable
 * (hy__task_wake_quiet).  Pairs bounce a value over unbuffered channels
 * across the two workers and with a foreign thread, so that wakes come
 * while their waiter is still switching out; some receives carry a
 * deadline close enough to race the wake.  A lost wake hangs the test, a
 * waiter resumed half-saved crashes it, and every value must arrive once,
 * in order. */
typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *to, *from;
  int rounds;
  int first;    /* sends first */
  uint64_t seed;
  int bad;
  int timeouts; /* receives that timed out (and were retried) */
} qw_t;

static int qw_recv(qw_t *x, int *v) {
  for (;;) {
    int rc;
    if (rnd(&x->seed) % 4 == 0)
      rc = hy_chan_recv_until(x->from, v,
                              hy_deadline_in((int64_t)(rnd(&x->seed) % 3000)));
    else
      rc = hy_chan_recv(x->from, v);
    if (rc != HY_ETIMEDOUT)
      return rc;
    x->timeouts++;
  }
}

/* The first side sends i and expects i + 1 back; the second receives i
 * and sends i + 1. */
static void *qw_task(void *p) {
  qw_t *x = p;
  if (x->first) {
    for (int i = 0; i < x->rounds; i++) {
      int v = 2 * i;
      if (hy_chan_send(x->to, &v) != 0)
        x->bad++;
      if (qw_recv(x, &v) != 0 || v != 2 * i + 1)
        x->bad++;
      if (rnd(&x->seed) % 64 == 0)
        for (volatile int k = 0; k < (int)(rnd(&x->seed) % 2000); k++)
          ;
    }
  } else {
    for (int i = 0; i < x->rounds; i++) {
      int v;
      if (qw_recv(x, &v) != 0 || v != 2 * i)
        x->bad++;
      v++;
      if (hy_chan_send(x->to, &v) != 0)
        x->bad++;
    }
  }
  return NULL;
}

static void *qw_thread(void *p) {
  qw_task(p);
  return NULL;
}

TEST_IMPL(chan_wake_races_switch_out) {
  hy_runtime_t *rt = new_rt(2);
  enum { PAIRS = 3, ROUNDS = 20000 };
  hy_chan_t *c[PAIRS + 1][2];
  qw_t x[PAIRS + 1][2];
  hy_task_t t[PAIRS + 1][2];
  for (int p = 0; p <= PAIRS; p++) {
    c[p][0] = new_chan(rt, sizeof(int), 0);
    c[p][1] = new_chan(rt, sizeof(int), 0);
    for (int s = 0; s < 2; s++)
      x[p][s] = (qw_t){rt, c[p][s], c[p][1 - s], ROUNDS, s == 0, test_rand(),
                       0, 0};
  }
  /* Pair PAIRS: a foreign thread against a task. */
  pthread_t th;
  ASSERT(pthread_create(&th, NULL, qw_thread, &x[PAIRS][0]) == 0);
  t[PAIRS][1] = spawn(rt, qw_task, &x[PAIRS][1]);
  for (int p = 0; p < PAIRS; p++)
    for (int s = 0; s < 2; s++)
      t[p][s] = spawn(rt, qw_task, &x[p][s]);
  for (int p = 0; p < PAIRS; p++)
    for (int s = 0; s < 2; s++)
      join(rt, t[p][s]);
  join(rt, t[PAIRS][1]);
  pthread_join(th, NULL);
  for (int p = 0; p <= PAIRS; p++) {
    for (int s = 0; s < 2; s++)
      ASSERT_EQ(x[p][s].bad, 0);
    hy_chan_release(c[p][0]);
    hy_chan_release(c[p][1]);
  }
  close_rt(rt);
  return 0;
}

/* ------------------------------ the shutdown's cancel of opening waits */

/* The shutdown cancels every task at once: one process-wide barrier for
 * all of them, after their flags are set (hy__cancel_all).  Receivers that
 * keep starting receives and selects without a deadline, fed by senders,
 * are caught at every point of their start when the cancel comes - many
 * between the check of their flag and their park.  All must end,
 * cancelled: one that slept through its cancel would never wake. */
typedef struct {
  hy_chan_t *c;
  hy_runtime_t *rt;
  uint64_t seed;
  int sender;
  atomic_int *ended;
} sd_t;

static void *sd_task(void *p) {
  sd_t *x = p;
  int v = 0, rc = 0;
  while (rc != HY_ECANCELED) {
    for (volatile int k = 0; k < (int)(rnd(&x->seed) % 500); k++)
      ;
    if (x->sender) {
      rc = hy_chan_send(x->c, &v);
    } else if (rnd(&x->seed) % 2) {
      rc = hy_chan_recv(x->c, &v);
    } else {
      hy_arm_t a[2] = {hy_arm_recv(x->c, &v), hy_arm_recv(x->c, &v)};
      rc = hy_select(x->rt, a, 2);
    }
  }
  atomic_fetch_add(x->ended, 1);
  return NULL;
}

TEST_IMPL(chan_shutdown_cancels_opening_waits) {
  for (int round = 0; round < 20; round++) {
    hy_runtime_t *rt = new_rt(2);
    hy_chan_t *c = new_chan(rt, sizeof(int), 0);
    enum { N = 64 };
    sd_t x[N];
    atomic_int ended = 0;
    for (int i = 0; i < N; i++) {
      x[i] = (sd_t){c, rt, test_rand(), i % 4 == 0, &ended};
      hy_task_t t;
      ASSERT_OK(hy_task_spawn(rt, sd_task, &x[i], NULL, &t));
      ASSERT_OK(hy_task_detach(rt, t));
    }
    usleep(1000 * (1 + (int)(test_rand() % 5)));
    /* No grace: straight to the cancel, while they run. */
    ASSERT_OK(hy_runtime_shutdown(rt, 0));
    ASSERT_EQ(atomic_load(&ended), N);
    ASSERT_OK(hy_runtime_close(rt));
    hy_chan_release(c);
  }
  return 0;
}

/* ------------------------------- an awaitable that fires as it queues */

/* An awaitable whose enqueue completes the waiter at once breaks the
 * contract of select (enqueue must not fire), but the task must not hang
 * for it: it claimed its own quiet wait before switching out, and its
 * switch-out notices and runs it again (hy__task_wake_quiet).  Against two
 * workers too, where the select's waiter may be woken by nobody else. */
static hy__lock_t *eager_lock(void *obj) { return (hy__lock_t *)obj; }

static int eager_try(void *obj, hy_arm_t *arm, int *result) {
  (void)obj;
  (void)arm;
  (void)result;
  return 0; /* never ready when asked */
}

static void eager_enqueue(void *obj, hy_arm_t *arm, hy__waiter *w) {
  (void)obj;
  (void)arm;
  if (hy__wait_claim(w->wait, w->arm)) {
    w->wait->result = 7;
    hy__wait_wake(w->wait);
  }
}

static void eager_dequeue(void *obj, hy_arm_t *arm, hy__waiter *w) {
  (void)obj;
  (void)arm;
  (void)w;
}

static const struct hy_awaitable eager_awaitable = {
    "eager", eager_lock, eager_try, eager_enqueue, eager_dequeue};

static void *eager_task(void *p) {
  hy_runtime_t *rt = p;
  hy__lock_t lock = {0};
  hy_chan_t *c = NULL;
  if (hy_chan_new(rt, sizeof(int), 0, &c) != 0)
    return (void *)(intptr_t)-1;
  int v, bad = 0;
  for (int i = 0; i < 2000; i++) {
    hy_arm_t a[2] = {hy_arm_recv(c, &v),
                     hy__arm_make(&eager_awaitable, HY_ARM_OBJECT, &lock,
                                  NULL, 1)};
    int k = hy_select(rt, a, 2);
    if (k != 1 || a[1].result != 7)
      bad++;
  }
  hy_chan_release(c);
  return (void *)(intptr_t)bad;
}

TEST_IMPL(select_arm_firing_in_enqueue) {
  for (int workers = 1; workers <= 2; workers++) {
    hy_runtime_t *rt = new_rt(workers);
    hy_task_t t[2];
    for (int i = 0; i < 2; i++)
      t[i] = spawn(rt, eager_task, rt);
    for (int i = 0; i < 2; i++)
      ASSERT_EQ(join(rt, t[i]), 0);
    close_rt(rt);
  }
  return 0;
}

/* ------------------------------ a cancel racing a compare-and-swap-free claim */

/* A send or receive without a deadline waits on its channel alone and is
 * claimed by the channel with plain stores (HY__WAITING_ONE); a cancel
 * claims it only after a process-wide barrier, and only if the channel is
 * not claiming it (hy__wait_open_single).  Here a parked receiver (or
 * sender) is cancelled at about the moment a peer - a task on either
 * worker, or a thread outside the runtime - hands it an element (or takes
 * its element).  Each round must end one way or the other, never both:
 * the blocked call returns 0 exactly when the peer's call did, with the
 * element moved once; or HY_ECANCELED, and the peer's call times out. */
typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c;
  int recv_blocks; /* 1: a receiver blocks and is cancelled; 0: a sender */
  int peer_delay, cancel_delay;
  hy_task_t blocker;
  atomic_int parked_soon, go;
  int val, got, peer_got, peer_rc;
} cc_t;

static void *cc_blocker(void *p) {
  cc_t *x = p;
  int v = -1;
  atomic_store(&x->parked_soon, 1);
  int rc = x->recv_blocks ? hy_chan_recv(x->c, &v) : hy_chan_send(x->c, &x->val);
  x->got = v;
  return (void *)(intptr_t)rc;
}

static void cc_peer(cc_t *x) {
  while (!atomic_load(&x->go))
    ;
  for (volatile int k = 0; k < x->peer_delay; k++)
    ;
  int v = -1;
  hy_time_t d = hy_deadline_in(HY_MS(1));
  x->peer_rc = x->recv_blocks ? hy_chan_send_until(x->c, &x->val, d)
                              : hy_chan_recv_until(x->c, &v, d);
  x->peer_got = v;
}

static int cc_cancel(cc_t *x) {
  while (!atomic_load(&x->go))
    ;
  for (volatile int k = 0; k < x->cancel_delay; k++)
    ;
  return hy_task_cancel(x->rt, x->blocker);
}

static void *cc_peer_task(void *p) {
  cc_peer(p);
  return NULL;
}

static void *cc_cancel_task(void *p) {
  return (void *)(intptr_t)cc_cancel(p);
}

/* One round; returns 0, or -1 if its outcome breaks the rule above. */
static int cc_round(hy_runtime_t *rt, hy_chan_t *c, uint64_t *seed,
                    int *handed) {
  cc_t x = {.rt = rt, .c = c, .recv_blocks = (int)(rnd(seed) % 2),
            .peer_delay = (int)(rnd(seed) % 1500),
            .cancel_delay = (int)(rnd(seed) % 1500),
            .val = (int)(rnd(seed) % 1000000) + 1, .got = -1,
            .peer_got = -1, .peer_rc = 1};
  int peer_outside = rnd(seed) % 3 == 0;
  if (hy_task_spawn(rt, cc_blocker, &x, NULL, &x.blocker) != 0)
    return -1;
  while (!atomic_load(&x.parked_soon))
    ;
  /* Mostly once it parked (its switch-out takes well under this), now and
   * then while it still opens its wait. */
  if (rnd(seed) % 4)
    usleep((useconds_t)(rnd(seed) % 50));
  hy_task_t other;
  if (hy_task_spawn(rt, peer_outside ? cc_cancel_task : cc_peer_task, &x,
                    NULL, &other) != 0)
    return -1;
  atomic_store(&x.go, 1);
  int crc = 0;
  if (peer_outside)
    cc_peer(&x);
  else
    crc = cc_cancel(&x);
  intptr_t orc = join(rt, other);
  if (peer_outside)
    crc = (int)orc;
  intptr_t rc = join(rt, x.blocker);
  if (crc != 0)
    return -1;
  if (rc == 0) {
    ++*handed;
    if (x.peer_rc != 0 || (x.recv_blocks ? x.got : x.peer_got) != x.val)
      return -1;
  } else if (rc != HY_ECANCELED || x.peer_rc != HY_ETIMEDOUT) {
    return -1;
  }
  return 0;
}

TEST_IMPL(chan_cancel_races_claim) {
  hy_runtime_t *rt = new_rt(2);
  hy_chan_t *c = new_chan(rt, sizeof(int), 0);
  uint64_t seed = test_rand();
  hy_time_t end = hy_deadline_in(HY_SEC(20));
  int rounds = 0, handed = 0;
  for (; rounds < 3000 && hy_now() < end; rounds++)
    ASSERT_OK(cc_round(rt, c, &seed, &handed));
  /* Both outcomes came up (each in about half the rounds here): the race
   * was run, not only one side of it. */
  ASSERT(rounds < 100 || (handed > 0 && handed < rounds));
  ASSERT_EQ(hy_chan_len(c), 0);
  hy_chan_release(c);
  close_rt(rt);
  return 0;
}

/* ------------------------------------------------- across two runtimes */

/* A worker thread of one runtime that calls on a channel of another is a
 * foreign thread there: its wait is an OS event, not a task park.  The
 * worker's own runtime is found through a per-thread cache of the last
 * runtime key looked up (hy__tls_peek, runtime/sys.h), which alternates
 * here on every operation: a cache that answered for the wrong runtime
 * would park a task where a foreign wait was due (or the reverse), and
 * hang or lose a value.  Tasks of each runtime bounce a count over a
 * channel of their own and one of the other's, with random yields. */
typedef struct {
  hy_runtime_t *own;   /* the runtime whose task this is */
  hy_chan_t *mine, *theirs; /* of own, of the other runtime */
  int n, first;        /* first: sends first */
  uint64_t seed;
  long got;            /* the last value received */
} xr_t;

static void *xr_task(void *p) {
  xr_t *x = p;
  for (int i = 0; i < x->n; i++) {
    long v = 2 * i + !x->first;
    if (x->first) {
      ASSERT_OK(hy_chan_send(x->mine, &v));
      ASSERT_OK(hy_chan_recv(x->theirs, &x->got));
      ASSERT_EQ(x->got, v + 1);
    } else {
      ASSERT_OK(hy_chan_recv(x->theirs, &x->got));
      ASSERT_EQ(x->got, v - 1);
      ASSERT_OK(hy_chan_send(x->mine, &v));
    }
    if (rnd(&x->seed) % 8 == 0)
      hy_yield(x->own);
  }
  return NULL;
}

TEST_IMPL(chan_across_runtimes) {
  enum { PAIRS = 3, N = 3000 };
  /* A foreign wait holds its worker thread: with fewer workers than tasks
   * that can be in one at once, a runtime's workers could all wait on the
   * other runtime's tasks while those wait, behind their own held worker,
   * for the task still queued here (seen under TSan with 2 and 1).  One
   * worker per task leaves every task a thread to run on. */
  hy_runtime_t *a = new_rt(PAIRS), *b = new_rt(PAIRS);
  hy_chan_t *ca[PAIRS], *cb[PAIRS];
  xr_t xa[PAIRS], xb[PAIRS];
  hy_task_t ta[PAIRS], tb[PAIRS];
  for (int k = 0; k < PAIRS; k++) {
    /* Unbuffered and buffered: waits on both sides, and none. */
    ca[k] = new_chan(a, sizeof(long), (size_t)k);
    cb[k] = new_chan(b, sizeof(long), (size_t)k);
    xa[k] = (xr_t){a, ca[k], cb[k], N, 1, test_rand(), -1};
    xb[k] = (xr_t){b, cb[k], ca[k], N, 0, test_rand(), -1};
  }
  for (int k = 0; k < PAIRS; k++) {
    ta[k] = spawn(a, xr_task, &xa[k]);
    tb[k] = spawn(b, xr_task, &xb[k]);
  }
  for (int k = 0; k < PAIRS; k++) {
    join(a, ta[k]);
    join(b, tb[k]);
    ASSERT_EQ(xa[k].got, 2 * N - 1);
    ASSERT_EQ(xb[k].got, 2 * N - 2);
    hy_chan_release(ca[k]);
    hy_chan_release(cb[k]);
  }
  close_rt(a);
  close_rt(b);
  return 0;
}

/* -------------------------------- wakes that spill the LIFO slot */

/* K receivers wait on one unbuffered channel; a sender hands each an
 * element in turn without blocking in between, so on one worker every
 * wake after the first pushes the task woken before it out of the
 * worker's LIFO slot into its queue (hy__wait_wake_from's spill).  The
 * sender is a task (the wake's own-worker path) or the main thread (a
 * wake from outside the runtime).  Every element arrives once, every
 * receiver ends. */
#define SPILL_K 16

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c;
  atomic_int ready;
} spill_t;

static void *spill_recv(void *p) {
  spill_t *x = p;
  int v = 0;
  atomic_fetch_add(&x->ready, 1);
  int rc = hy_chan_recv(x->c, &v);
  return (void *)(intptr_t)(rc == 0 ? v : rc);
}

static void *spill_send(void *p) {
  spill_t *x = p;
  /* Let the receivers park first where they can (not needed for the
   * result: a send that finds none waits for one). */
  while (atomic_load(&x->ready) < SPILL_K)
    hy_yield(x->rt);
  for (int k = 0; k < 4; k++)
    hy_yield(x->rt);
  for (int v = 1; v <= SPILL_K; v++)
    if (hy_chan_send(x->c, &v) != 0)
      return (void *)(intptr_t)v;
  return NULL;
}

TEST_IMPL(chan_wake_spills_lifo) {
  uint64_t seed = test_rand();
  for (int workers = 1; workers <= 2; workers++) {
    hy_runtime_t *rt = new_rt(workers);
    for (int round = 0; round < 100; round++) {
      spill_t x = {rt, new_chan(rt, sizeof(int), 0), 0};
      hy_task_t r[SPILL_K], s = {0};
      for (int i = 0; i < SPILL_K; i++)
        r[i] = spawn(rt, spill_recv, &x);
      int from_task = rnd(&seed) % 2;
      if (from_task) {
        s = spawn(rt, spill_send, &x);
      } else {
        while (atomic_load(&x.ready) < SPILL_K)
          usleep(100);
        for (int v = 1; v <= SPILL_K; v++)
          ASSERT_OK(hy_chan_send(x.c, &v));
      }
      int seen[SPILL_K + 1] = {0};
      for (int i = 0; i < SPILL_K; i++) {
        intptr_t v = join(rt, r[i]);
        ASSERT(v >= 1 && v <= SPILL_K);
        ASSERT_EQ(seen[v], 0);
        seen[v] = 1;
      }
      if (from_task)
        ASSERT_EQ(join(rt, s), 0);
      hy_chan_release(x.c);
    }
    close_rt(rt);
  }
  return 0;
}

/* ------------------------- what a blocked channel call shows in dumps */

static void *named_send(void *p) {
  int v = 7;
  return (void *)(intptr_t)hy_chan_send(p, &v);
}

static void *named_recv_until(void *p) {
  int v = 0;
  int rc = hy_chan_recv_until(p, &v, hy_deadline_in(HY_SEC(60)));
  return (void *)(intptr_t)(rc == 0 ? v : rc);
}

/* Whether the dump shows the task named `name` parked awaiting `what`. */
static int dump_shows(hy_runtime_t *rt, const char *name, const char *what) {
  static char buf[8192];
  char want[64];
  snprintf(want, sizeof want, "parked  awaiting %s for ", what);
  compat_capture(dump_to, rt, buf, sizeof buf);
  const char *line = strstr(buf, name);
  if (!line)
    return 0;
  const char *p = strstr(line, want);
  const char *eol = strchr(line, '\n');
  return p && (!eol || p < eol);
}

/* A blocking send parks through the one-object path (no deadline), a
 * receive with a deadline through the general one: both name their wait
 * for the dump while parked, and both are served. */
TEST_IMPL(chan_blocked_calls_named) {
  hy_runtime_t *rt = new_rt(1);
  hy_chan_t *a = new_chan(rt, sizeof(int), 0), *b = new_chan(rt, sizeof(int), 0);
  hy_task_opts_t to = HY_TASK_OPTS_INIT;
  hy_task_t ts, tr;
  to.name = "named-sender";
  ASSERT_OK(hy_task_spawn(rt, named_send, a, &to, &ts));
  to.name = "named-receiver";
  ASSERT_OK(hy_task_spawn(rt, named_recv_until, b, &to, &tr));
  hy_time_t end = hy_deadline_in(HY_SEC(30));
  while ((!dump_shows(rt, "named-sender", "chan-send") ||
          !dump_shows(rt, "named-receiver", "chan-recv")) &&
         hy_now() < end)
    usleep(1000);
  ASSERT(dump_shows(rt, "named-sender", "chan-send"));
  ASSERT(dump_shows(rt, "named-receiver", "chan-recv"));
  int v = 0;
  ASSERT_OK(hy_chan_recv(a, &v));
  ASSERT_EQ(v, 7);
  v = 9;
  ASSERT_OK(hy_chan_send(b, &v));
  ASSERT_EQ(join(rt, ts), 0);
  ASSERT_EQ(join(rt, tr), 9);
  hy_chan_release(a);
  hy_chan_release(b);
  close_rt(rt);
  return 0;
}
