/* test-chan-ring.c - the ring of buffered channels: senders and receivers
 * racing the ones about to wait on a full or an empty ring, wrap-around
 * at every capacity (one slot, powers of two and others), close racing
 * sends in flight and receivers blocked on an empty ring, and selects
 * contending with plain operations.  Every element is tagged (sender,
 * sequence) and counted: none lost, none twice, FIFO per sender.  (They
 * were written for a lock-free ring, which measured no faster than the
 * locked one on chan-mpmc; they hold any implementation to the same.) */
#define _GNU_SOURCE
#include <stdatomic.h>

#include "compat.h"
#include "hydra.h"
#include "rt_util.h"
#include "test.h"

static hy_chan_t *new_chan(hy_runtime_t *rt, size_t esize, size_t cap) {
  hy_chan_t *c = NULL;
  ASSERT_OK(hy_chan_new(rt, esize, cap, &c));
  return c;
}

static hy_task_t spawn(hy_runtime_t *rt, hy_task_fn fn, void *arg) {
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, fn, arg, NULL, &t));
  return t;
}

static void join(hy_runtime_t *rt, hy_task_t t) {
  ASSERT_OK(hy_task_join(rt, t, NULL));
}

static uint64_t rnd(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static uint64_t tag(int sender, uint32_t seq) {
  return (uint64_t)(uint32_t)sender << 32 | seq;
}

/* ------------------------------------------------ laps of every size */

#define LAP_SENDERS 4   /* the last one a foreign thread */
#define LAP_RECEIVERS 3 /* the last one a foreign thread */
#define LAP_PER 6000

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c;
  int id;
  int task; /* runs as a task (yields), else on a thread */
  uint64_t seed;
  atomic_uchar *seen; /* [sender * LAP_PER + seq] */
  int got;
  int bad;
} lap_t;

/* Sends with every kind of call: blocking, try (again after a pause),
 * with a deadline (again after a time-out: a send that timed out sent
 * nothing, or the receivers see it twice). */
static int lap_send(lap_t *x, uint64_t v) {
  for (;;) {
    int rc;
    switch (rnd(&x->seed) % 4) {
    case 0:
      rc = hy_chan_try_send(x->c, &v);
      break;
    case 1:
      rc = hy_chan_send_until(x->c, &v,
                              hy_deadline_in((int64_t)(rnd(&x->seed) % 20000)));
      break;
    default:
      rc = hy_chan_send(x->c, &v);
      break;
    }
    if (rc == 0)
      return 0;
    if (rc != HY_EAGAIN && rc != HY_ETIMEDOUT)
      return rc;
    if (x->task)
      hy_yield(x->rt);
  }
}

static void *lap_sender(void *p) {
  lap_t *x = p;
  for (uint32_t i = 0; i < LAP_PER; i++) {
    if (lap_send(x, tag(x->id, i)) != 0)
      x->bad++;
    if (x->task && rnd(&x->seed) % 64 == 0)
      hy_yield(x->rt);
  }
  return NULL;
}

static int lap_recv(lap_t *x, uint64_t *v) {
  for (;;) {
    int rc;
    switch (rnd(&x->seed) % 4) {
    case 0:
      rc = hy_chan_try_recv(x->c, v);
      break;
    case 1:
      rc = hy_chan_recv_until(x->c, v,
                              hy_deadline_in((int64_t)(rnd(&x->seed) % 20000)));
      break;
    default:
      rc = hy_chan_recv(x->c, v);
      break;
    }
    if (rc != HY_EAGAIN && rc != HY_ETIMEDOUT)
      return rc;
    if (x->task)
      hy_yield(x->rt);
  }
}

static void *lap_receiver(void *p) {
  lap_t *x = p;
  int64_t last[LAP_SENDERS];
  for (int i = 0; i < LAP_SENDERS; i++)
    last[i] = -1;
  uint64_t v;
  int rc;
  while ((rc = lap_recv(x, &v)) == 0) {
    int s = (int)(v >> 32);
    int64_t i = (int64_t)(uint32_t)v;
    /* bad: a bit per kind of failure. */
    if (s < 0 || s >= LAP_SENDERS || i >= LAP_PER || i <= last[s]) {
      x->bad |= 1; /* out of range, or out of order for its sender */
      continue;
    }
    last[s] = i;
    if (atomic_fetch_add(&x->seen[(size_t)s * LAP_PER + (size_t)i], 1) != 0)
      x->bad |= 2;
    x->got++;
    if (hy_chan_len(x->c) > hy_chan_cap(x->c))
      x->bad |= 4;
    if (x->task && rnd(&x->seed) % 64 == 0)
      hy_yield(x->rt);
  }
  if (rc != HY_ECLOSED)
    x->bad |= 8;
  /* The end is final. */
  if (hy_chan_try_recv(x->c, &v) != HY_ECLOSED)
    x->bad |= 16;
  return NULL;
}

static void *lap_thread(void *p) {
  lap_t *x = p;
  return x->id >= 0 ? lap_sender(p) : lap_receiver(p);
}

static void laps(hy_runtime_t *rt, size_t cap) {
  hy_chan_t *c = new_chan(rt, sizeof(uint64_t), cap);
  atomic_uchar *seen = calloc((size_t)LAP_SENDERS * LAP_PER, 1);
  ASSERT(seen);
  lap_t s[LAP_SENDERS], r[LAP_RECEIVERS];
  hy_task_t ts[LAP_SENDERS], tr[LAP_RECEIVERS];
  pthread_t sth, rth;
  for (int i = 0; i < LAP_RECEIVERS; i++) {
    r[i] = (lap_t){rt, c, -1, i < LAP_RECEIVERS - 1, test_rand(), seen, 0, 0};
    if (r[i].task)
      tr[i] = spawn(rt, lap_receiver, &r[i]);
    else
      ASSERT_EQ(pthread_create(&rth, NULL, lap_thread, &r[i]), 0);
  }
  for (int i = 0; i < LAP_SENDERS; i++) {
    s[i] = (lap_t){rt, c, i, i < LAP_SENDERS - 1, test_rand(), seen, 0, 0};
    if (s[i].task)
      ts[i] = spawn(rt, lap_sender, &s[i]);
    else
      ASSERT_EQ(pthread_create(&sth, NULL, lap_thread, &s[i]), 0);
  }
  for (int i = 0; i < LAP_SENDERS - 1; i++)
    join(rt, ts[i]);
  ASSERT_EQ(pthread_join(sth, NULL), 0);
  ASSERT_OK(hy_chan_close(c));
  for (int i = 0; i < LAP_RECEIVERS - 1; i++)
    join(rt, tr[i]);
  ASSERT_EQ(pthread_join(rth, NULL), 0);
  int got = 0;
  for (int i = 0; i < LAP_SENDERS; i++)
    ASSERT_EQ(s[i].bad, 0);
  for (int i = 0; i < LAP_RECEIVERS; i++) {
    ASSERT_EQ(r[i].bad, 0);
    got += r[i].got;
  }
  ASSERT_EQ(got, LAP_SENDERS * LAP_PER);
  for (size_t i = 0; i < (size_t)LAP_SENDERS * LAP_PER; i++)
    ASSERT_EQ(seen[i], 1);
  ASSERT_EQ(hy_chan_len(c), 0);
  free(seen);
  hy_chan_release(c);
}

/* Capacities of one slot (where "full" and "free on the next lap" must
 * still differ), powers of two and others, each around its ring many
 * times, with senders and receivers on two workers and on threads. */
TEST_IMPL(chan_ring_laps) {
  hy_runtime_t *rt = test_rt_new(2);
  static const size_t caps[] = {1, 2, 3, 5, 8, 63, 64, 100};
  for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
    laps(rt, caps[i]);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ------------------------------------------- full and empty, in turns */

/* One sender, one receiver, one slot, each pausing at random: the ring
 * goes full and empty on every element, so that nearly every operation
 * meets the other side about to wait (its flag set, or not yet) - a lost
 * wake hangs the test.  Elements of odd sizes (not a multiple of 8) and of
 * none. */
typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c;
  uint64_t seed;
  int n;
  int bad;
} fe_t;

typedef struct {
  uint32_t seq;
  unsigned char fill[9];
} odd_t;

static void fe_pause(fe_t *x) {
  uint64_t r = rnd(&x->seed) % 16;
  if (r == 0)
    hy_yield(x->rt);
  else if (r < 4)
    for (volatile int k = 0; k < (int)(rnd(&x->seed) % 500); k++)
      ;
}

static void *fe_send(void *p) {
  fe_t *x = p;
  for (int i = 0; i < x->n; i++) {
    odd_t v;
    v.seq = (uint32_t)i;
    memset(v.fill, (unsigned char)i, sizeof v.fill);
    if (hy_chan_send(x->c, hy_chan_elem_size(x->c) ? &v : NULL) != 0)
      x->bad++;
    fe_pause(x);
  }
  return NULL;
}

static void *fe_recv(void *p) {
  fe_t *x = p;
  for (int i = 0; i < x->n; i++) {
    odd_t v;
    memset(&v, 0xEE, sizeof v);
    if (hy_chan_recv(x->c, &v) != 0)
      x->bad++;
    if (hy_chan_elem_size(x->c)) {
      if (v.seq != (uint32_t)i)
        x->bad++;
      for (size_t k = 0; k < sizeof v.fill; k++)
        if (v.fill[k] != (unsigned char)i)
          x->bad++;
    }
    fe_pause(x);
  }
  return NULL;
}

TEST_IMPL(chan_ring_full_empty_races) {
  hy_runtime_t *rt = test_rt_new(2);
  for (int round = 0; round < 6; round++) {
    size_t esize = round % 3 == 2 ? 0 : sizeof(odd_t);
    hy_chan_t *c = new_chan(rt, esize, (size_t)(round % 2) + 1);
    fe_t s = {rt, c, test_rand(), 20000, 0};
    fe_t r = {rt, c, test_rand(), 20000, 0};
    hy_task_t tr = spawn(rt, fe_recv, &r);
    hy_task_t ts = spawn(rt, fe_send, &s);
    join(rt, ts);
    join(rt, tr);
    ASSERT_EQ(s.bad, 0);
    ASSERT_EQ(r.bad, 0);
    ASSERT_EQ(hy_chan_len(c), 0);
    hy_chan_release(c);
  }
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ------------------------------------------------------ close races */

/* Senders send as fast as they can while a closer closes the channel at a
 * random moment; receivers (some blocked on an empty ring, waiting) drain
 * it.  A send that returned 0 arrives exactly once, one that returned
 * HY_ECLOSED never; no receiver sees the end while an element sent before
 * the close is still to be had (the end is seen only when all arrived:
 * the counts add up), and the end is final. */
#define CR_SENDERS 3
#define CR_RECEIVERS 3
#define CR_MAX 400

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *c;
  int id;
  uint64_t seed;
  int sent;      /* a sender: sends that returned 0 (its first `sent`) */
  int after;     /* a sender: sends that returned HY_ECLOSED */
  int got[CR_SENDERS];
  uint64_t *seen; /* [sender * CR_MAX + seq], written by one receiver */
  atomic_int *marks;
  int bad;
} cr_t;

static void *cr_sender(void *p) {
  cr_t *x = p;
  for (uint32_t i = 0; i < CR_MAX; i++) {
    uint64_t v = tag(x->id, i);
    int rc = hy_chan_send(x->c, &v);
    if (rc == 0) {
      if (x->after)
        x->bad++; /* sent after a send saw the end */
      x->sent++;
    } else if (rc == HY_ECLOSED) {
      x->after++;
    } else {
      x->bad++;
    }
    if (rnd(&x->seed) % 32 == 0)
      hy_yield(x->rt);
  }
  return NULL;
}

static void *cr_receiver(void *p) {
  cr_t *x = p;
  uint64_t v;
  int rc;
  while ((rc = hy_chan_recv(x->c, &v)) == 0) {
    int s = (int)(v >> 32);
    uint32_t i = (uint32_t)v;
    if (s < 0 || s >= CR_SENDERS || i >= CR_MAX) {
      x->bad++;
      continue;
    }
    if (atomic_fetch_add(&x->marks[s * CR_MAX + (int)i], 1) != 0)
      x->bad++;
    x->got[s]++;
  }
  if (rc != HY_ECLOSED || hy_chan_recv(x->c, &v) != HY_ECLOSED)
    x->bad++;
  return NULL;
}

static void *cr_closer(void *p) {
  cr_t *x = p;
  uint64_t n = rnd(&x->seed) % 200;
  for (uint64_t k = 0; k < n; k++)
    if (rnd(&x->seed) % 2)
      hy_yield(x->rt);
  if (hy_chan_close(x->c) != 0)
    x->bad++;
  return NULL;
}

TEST_IMPL(chan_ring_close_races) {
  hy_runtime_t *rt = test_rt_new(2);
  atomic_int *marks = calloc(CR_SENDERS * CR_MAX, sizeof *marks);
  ASSERT(marks);
  uint64_t seed = test_rand();
  hy_time_t end = hy_deadline_in(HY_SEC(20));
  for (int round = 0; round < 300 && hy_now() < end; round++) {
    size_t cap = 1 + (size_t)(rnd(&seed) % 8);
    hy_chan_t *c = new_chan(rt, sizeof(uint64_t), cap);
    memset(marks, 0, CR_SENDERS * CR_MAX * sizeof *marks);
    cr_t s[CR_SENDERS], r[CR_RECEIVERS], cl;
    hy_task_t ts[CR_SENDERS], tr[CR_RECEIVERS], tc;
    for (int i = 0; i < CR_RECEIVERS; i++) {
      r[i] = (cr_t){.rt = rt, .c = c, .id = -1, .seed = rnd(&seed),
                    .marks = marks};
      tr[i] = spawn(rt, cr_receiver, &r[i]);
    }
    /* Receivers first, often: some are blocked on the empty ring when
     * the first elements come. */
    if (round % 2)
      hy_sleep(rt, HY_US(50));
    for (int i = 0; i < CR_SENDERS; i++) {
      s[i] = (cr_t){.rt = rt, .c = c, .id = i, .seed = rnd(&seed)};
      ts[i] = spawn(rt, cr_sender, &s[i]);
    }
    cl = (cr_t){.rt = rt, .c = c, .seed = rnd(&seed)};
    tc = spawn(rt, cr_closer, &cl);
    join(rt, tc);
    for (int i = 0; i < CR_SENDERS; i++)
      join(rt, ts[i]);
    for (int i = 0; i < CR_RECEIVERS; i++)
      join(rt, tr[i]);
    ASSERT_EQ(cl.bad, 0);
    for (int k = 0; k < CR_SENDERS; k++) {
      ASSERT_EQ(s[k].bad, 0);
      ASSERT_EQ(s[k].sent + s[k].after, CR_MAX);
      int got = 0;
      for (int i = 0; i < CR_RECEIVERS; i++)
        got += r[i].got[k];
      ASSERT_EQ(got, s[k].sent);
      for (int i = 0; i < CR_MAX; i++)
        ASSERT_EQ(atomic_load(&marks[k * CR_MAX + i]), i < s[k].sent);
    }
    for (int i = 0; i < CR_RECEIVERS; i++)
      ASSERT_EQ(r[i].bad, 0);
    uint64_t v = 0;
    ASSERT_ERR(hy_chan_try_send(c, &v), HY_ECLOSED);
    ASSERT_ERR(hy_chan_try_recv(c, &v), HY_ECLOSED);
    ASSERT_EQ(hy_chan_len(c), 0);
    hy_chan_release(c);
  }
  free(marks);
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* ---------------------------------------- selects against the ring */

/* Two buffered channels.  Plain senders feed A; a select task sends on A
 * or B (whichever has room; a timeout arm too); plain receivers drain B; a
 * select task receives from A or B (or times out), and one polls both with
 * an else arm.  Each element names the channel it was sent on: a receiver
 * checks that it came from there (a select's send arm that did not fire
 * sent nothing anywhere), and every element is counted once. */
#define SM_PER 4000
#define SM_PRODUCERS 3 /* 0, 1: plain on A; 2: select on A or B */

typedef struct {
  hy_runtime_t *rt;
  hy_chan_t *ch[2];
  int id;
  uint64_t seed;
  atomic_int *marks; /* [producer * SM_PER + seq] */
  atomic_int *left;  /* elements still to be received */
  int n;
  int bad;
} sm_t;

static uint64_t sm_tag(int producer, int chan, uint32_t seq) {
  return (uint64_t)(uint32_t)(producer * 2 + chan) << 32 | seq;
}

static void sm_check(sm_t *x, uint64_t v, int chan) {
  int pc = (int)(v >> 32);
  uint32_t i = (uint32_t)v;
  if (pc < 0 || pc >= SM_PRODUCERS * 2 || pc % 2 != chan || i >= SM_PER) {
    x->bad++;
    return;
  }
  if (atomic_fetch_add(&x->marks[(pc / 2) * SM_PER + (int)i], 1) != 0)
    x->bad++;
  atomic_fetch_sub(x->left, 1);
  x->n++;
}

static void *sm_plain_sender(void *p) {
  sm_t *x = p;
  for (uint32_t i = 0; i < SM_PER; i++) {
    uint64_t v = sm_tag(x->id, 0, i);
    if (hy_chan_send(x->ch[0], &v) != 0)
      x->bad++;
  }
  return NULL;
}

static void *sm_select_sender(void *p) {
  sm_t *x = p;
  for (uint32_t i = 0; i < SM_PER;) {
    uint64_t va = sm_tag(x->id, 0, i), vb = sm_tag(x->id, 1, i);
    hy_arm_t arms[3] = {hy_arm_send(x->ch[0], &va), hy_arm_send(x->ch[1], &vb),
                        hy_arm_timeout(HY_US(rnd(&x->seed) % 100))};
    int k = hy_select(x->rt, arms, 3);
    if (k == 0 || k == 1) {
      if (arms[k].result != 0)
        x->bad++;
      i++;
    } else if (k != 2) {
      x->bad++;
    }
  }
  return NULL;
}

static void *sm_plain_receiver(void *p) {
  sm_t *x = p;
  uint64_t v;
  int rc;
  while ((rc = hy_chan_recv(x->ch[1], &v)) == 0)
    sm_check(x, v, 1);
  if (rc != HY_ECLOSED)
    x->bad++;
  return NULL;
}

static void *sm_select_receiver(void *p) {
  sm_t *x = p;
  int open[2] = {1, 1};
  while (open[0] || open[1]) {
    uint64_t va = 0, vb = 0;
    int use_else = x->id == 1;
    hy_arm_t arms[3] = {hy_when(open[0], hy_arm_recv(x->ch[0], &va)),
                        hy_when(open[1], hy_arm_recv(x->ch[1], &vb)),
                        use_else ? hy_arm_else()
                                 : hy_arm_timeout(HY_US(rnd(&x->seed) % 100))};
    int k = hy_select(x->rt, arms, 3);
    if (k == 0 || k == 1) {
      if (arms[k].result == HY_ECLOSED)
        open[k] = 0;
      else if (arms[k].result == 0)
        sm_check(x, k ? vb : va, k);
      else
        x->bad++;
    } else if (k == 2) {
      if (use_else)
        hy_yield(x->rt);
    } else {
      x->bad++;
    }
  }
  return NULL;
}

TEST_IMPL(chan_ring_select_mix) {
  hy_runtime_t *rt = test_rt_new(2);
  for (int round = 0; round < 3; round++) {
    hy_chan_t *a = new_chan(rt, sizeof(uint64_t), (size_t)(round + 1));
    hy_chan_t *b = new_chan(rt, sizeof(uint64_t), (size_t)(3 * round + 2));
    atomic_int *marks = calloc(SM_PRODUCERS * SM_PER, sizeof *marks);
    ASSERT(marks);
    atomic_int left = SM_PRODUCERS * SM_PER;
    sm_t p[SM_PRODUCERS], c[3];
    hy_task_t tp[SM_PRODUCERS], tc[3];
    for (int i = 0; i < 3; i++) {
      c[i] = (sm_t){rt, {a, b}, i, test_rand(), marks, &left, 0, 0};
      tc[i] = spawn(rt, i == 2 ? sm_plain_receiver : sm_select_receiver, &c[i]);
    }
    for (int i = 0; i < SM_PRODUCERS; i++) {
      p[i] = (sm_t){rt, {a, b}, i, test_rand(), marks, &left, 0, 0};
      tp[i] = spawn(rt, i == 2 ? sm_select_sender : sm_plain_sender, &p[i]);
    }
    for (int i = 0; i < SM_PRODUCERS; i++)
      join(rt, tp[i]);
    ASSERT_OK(hy_chan_close(a));
    ASSERT_OK(hy_chan_close(b));
    for (int i = 0; i < 3; i++)
      join(rt, tc[i]);
    int n = 0;
    for (int i = 0; i < SM_PRODUCERS; i++)
      ASSERT_EQ(p[i].bad, 0);
    for (int i = 0; i < 3; i++) {
      ASSERT_EQ(c[i].bad, 0);
      n += c[i].n;
    }
    ASSERT_EQ(n, SM_PRODUCERS * SM_PER);
    ASSERT_EQ(atomic_load(&left), 0);
    for (int i = 0; i < SM_PRODUCERS * SM_PER; i++)
      ASSERT_EQ(atomic_load(&marks[i]), 1);
    free(marks);
    hy_chan_release(a);
    hy_chan_release(b);
  }
  test_rt_close(rt, HY_MS(100));
  return 0;
}
