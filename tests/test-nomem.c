/* test-nomem.c - out-of-memory sweeps over channels, select, hub events,
 * tasks, timers and the runtime's own life.
 *
 * Each test runs a small scenario with the nth backing allocation failing
 * (hy__mem_fail_at(n)), for n = 1, 2, 3, ... until a run in which the nth
 * allocation never came, then once more with no failure at all.  The count
 * is process-wide and the workers allocate concurrently, so a failure may
 * land anywhere in the runtime, not only in the call being looked at: that
 * is the point.  Every call must succeed or fail with a clean HY_E* code,
 * nothing may hang, no element may be lost or delivered twice, no wait may
 * end early, and nothing may be left behind (LeakSanitizer checks that in
 * the asan build); the run without a failure must work completely.
 */
#include <stdatomic.h>
#include <stdint.h>

#include "alloc/mem.h"
#include "compat.h"
#include "hydra.h"
#include "rt_util.h"
#include "runtime/internal.h"
#include "test.h"

/* Far more than any scenario allocates: a sweep that reaches it is one
 * that never ends. */
#define SWEEP_MAX 2000

/* Whether the allocator can be made to fail on demand here. */
static int can_fail(void) {
  hy__mem_fail_at(1);
  void *p = hy__mem_alloc(16);
  hy__mem_fail_at(0);
  if (p) {
    hy__mem_free(p);
    return 0;
  }
  return 1;
}

#define NEED_FAILURES()                                                       \
  do {                                                                        \
    if (!can_fail())                                                          \
      RETURN_SKIP("the allocator cannot be made to fail on demand");          \
  } while (0)

/* One run of a scenario: with fail_at > 0 the nth allocation from the
 * point the scenario arms it fails; with 0 none does, and every step must
 * succeed.  A scenario returns how many of its calls reported HY_ENOMEM,
 * and sets *left to what hy__mem_fail_at(0) returned at its end. */
typedef int (*scenario_fn)(long fail_at, long *left);

/* Sweeps n = 1, 2, ... until the failure is no longer consumed, then runs
 * the scenario once without one.  Returns the number of runs. */
static long sweep(scenario_fn f, int *enomem_seen) {
  long n, left = 0;
  int seen = 0;
  for (n = 1; n < SWEEP_MAX; n++) {
    seen += f(n, &left);
    if (left > 0)
      break;
  }
  ASSERT_LT(n, SWEEP_MAX);
  ASSERT_EQ(f(0, &left), 0);
  fprintf(stderr, "%ld runs, %d calls saw HY_ENOMEM\n", n, seen);
  if (enomem_seen)
    *enomem_seen = seen;
  return n;
}

/* A runtime with two workers, made before the failure is armed (the
 * runtime's own creation is swept by nomem_runtime_new_post_shutdown). */
static hy_runtime_t *rt2(void) { return test_rt_new(2); }

/* Shutdown and close inside the armed window: both must work whatever
 * failed before. */
static void rt_end(hy_runtime_t *rt) {
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(1)));
  ASSERT_OK(hy_runtime_close(rt));
}

/* A spawn is 0 or HY_ENOMEM; 1 if it worked. */
static int spawned(int rc, int strict) {
  if (rc == 0)
    return 1;
  ASSERT_EQ(rc, HY_ENOMEM);
  ASSERT(!strict);
  return 0;
}

/* ================================================== 1. send and receive */

enum { PAIR_N = 24 };

typedef struct pair {
  hy_runtime_t *rt;
  hy_chan_t *c;
  atomic_int sent, got, ran_s, ran_r;
} pair_t;

static void *pair_sender(void *p) {
  pair_t *s = p;
  atomic_store(&s->ran_s, 1);
  for (int i = 1; i <= PAIR_N; i++) {
    int rc = hy_chan_send(s->c, &i);
    ASSERT_EQ(rc, 0); /* nothing closes it but us */
    atomic_fetch_add(&s->sent, 1);
    if (i % 7 == 0)
      hy_yield(s->rt);
  }
  ASSERT_OK(hy_chan_close(s->c));
  return (void *)1;
}

/* Takes one element, checking its place in the order; 0 or HY_ECLOSED. */
static int pair_take(pair_t *s, int deadline_far) {
  int v = 0, rc;
  if (deadline_far) {
    hy_time_t d = hy_deadline_in(HY_SEC(60));
    rc = hy_chan_recv_until(s->c, &v, d);
    if (rc == HY_ETIMEDOUT)
      ASSERT_GE(hy_now(), d); /* never early, out of memory or not */
  } else {
    rc = hy_chan_recv(s->c, &v);
  }
  if (rc == 0)
    ASSERT_EQ(v, atomic_fetch_add(&s->got, 1) + 1);
  else
    ASSERT_EQ(rc, HY_ECLOSED);
  return rc;
}

static void *pair_receiver(void *p) {
  pair_t *s = p;
  atomic_store(&s->ran_r, 1);
  int k = 0;
  while (pair_take(s, k++ & 1) == 0)
    ;
  return (void *)2;
}

typedef struct pair_run {
  pair_t p;
  hy_task_t ts, tr;
  int has_s, has_r;
} pair_run;

static int pair_start(hy_runtime_t *rt, pair_run *r, size_t cap, int strict) {
  memset(r, 0, sizeof *r);
  r->p.rt = rt;
  int rc = hy_chan_new(rt, sizeof(int), cap, &r->p.c);
  if (rc < 0) {
    ASSERT_EQ(rc, HY_ENOMEM);
    ASSERT(r->p.c == NULL);
    ASSERT(!strict);
    return 1;
  }
  int fails = 0;
  r->has_s = spawned(hy_task_spawn(rt, pair_sender, &r->p, NULL, &r->ts), strict);
  if (!r->has_s) {
    fails++;
    ASSERT_OK(hy_chan_close(r->p.c)); /* no sender: the end comes from us */
  }
  r->has_r = spawned(hy_task_spawn(rt, pair_receiver, &r->p, NULL, &r->tr), strict);
  fails += !r->has_r;
  return fails;
}

/* Joins a task whose end a select's task arm saw: 0 with its result, or
 * HY_ENOMEM when it never ran (no stack), as the arm said. */
static int join_ended(hy_runtime_t *rt, hy_task_t t, intptr_t want,
                      atomic_int *ran, int strict, int arm_result) {
  void *res = (void *)-1;
  int rc = hy_task_join(rt, t, &res);
  ASSERT_EQ(rc, arm_result); /* the arm and the join tell the same */
  if (rc == 0) {
    ASSERT_EQ((intptr_t)res, want);
    ASSERT_EQ(atomic_load(ran), 1);
    return 0;
  }
  ASSERT_EQ(rc, HY_ENOMEM);
  ASSERT(res == NULL);
  ASSERT_EQ(atomic_load(ran), 0);
  ASSERT(!strict);
  return 1;
}

/* Waits for the pair's tasks with task arms, standing in for the one that
 * never ran: without a receiver we take what is sent with a recv arm (so a
 * sender that never ran either cannot leave us waiting), without a sender
 * we close the channel.  Then every element sent arrived once, in order. */
static int pair_finish(hy_runtime_t *rt, pair_run *r, int strict) {
  if (!r->p.c)
    return 0;
  int fails = 0, drain = !r->has_r;
  while (r->has_s || r->has_r || drain) {
    hy_arm_t arms[3];
    int idx[3], k = 0, v = 0;
    if (r->has_s) {
      arms[k] = hy_arm_task(rt, r->ts, NULL);
      idx[k++] = 0;
    }
    if (r->has_r) {
      arms[k] = hy_arm_task(rt, r->tr, NULL);
      idx[k++] = 1;
    }
    if (drain) {
      arms[k] = hy_arm_recv(r->p.c, &v);
      idx[k++] = 2;
    }
    int i = hy_select(rt, arms, k);
    ASSERT(i >= 0 && i < k);
    int res = arms[i].result;
    if (idx[i] == 2) {
      if (res == 0) {
        ASSERT_EQ(v, atomic_fetch_add(&r->p.got, 1) + 1);
      } else {
        ASSERT_EQ(res, HY_ECLOSED);
        drain = 0;
      }
      continue;
    }
    ASSERT(res == 0 || res == HY_ENOMEM);
    if (idx[i] == 0) {
      r->has_s = 0;
      if (join_ended(rt, r->ts, 1, &r->p.ran_s, strict, res)) {
        fails++;
        /* It never ran: it sent nothing, and did not close. */
        ASSERT_OK(hy_chan_close(r->p.c));
      }
    } else {
      r->has_r = 0;
      if (join_ended(rt, r->tr, 2, &r->p.ran_r, strict, res)) {
        fails++;
        drain = 1;
      }
    }
  }
  ASSERT_EQ(atomic_load(&r->p.got), atomic_load(&r->p.sent));
  ASSERT(atomic_load(&r->p.sent) == PAIR_N || !strict);
  ASSERT_EQ(hy_chan_len(r->p.c), 0);
  ASSERT(hy_chan_closed(r->p.c));
  hy_chan_release(r->p.c);
  return fails;
}

static int scenario_chan(long fail_at, long *left) {
  int strict = fail_at == 0, fails = 0;
  hy_runtime_t *rt = rt2();
  hy__mem_fail_at(fail_at);
  pair_run a, b, big;
  fails += pair_start(rt, &a, 0, strict); /* rendezvous */
  fails += pair_start(rt, &b, 4, strict); /* buffered */
  fails += pair_start(rt, &big, 4096, strict); /* a ring of its own pages */
  fails += pair_finish(rt, &a, strict);
  fails += pair_finish(rt, &b, strict);
  fails += pair_finish(rt, &big, strict);
  rt_end(rt);
  *left = hy__mem_fail_at(0);
  return fails;
}

TEST_IMPL(nomem_chan_send_recv) {
  NEED_FAILURES();
  int seen;
  long runs = sweep(scenario_chan, &seen);
  ASSERT_GT(runs, 3);
  ASSERT_GT(seen, 0);
  return 0;
}

/* ============================================================ 2. select */

/* A producer fills channel `in` (and sets a hub after each element); a
 * selector takes from it while it also offers elements to channel `out`,
 * watches the hub, the producer's end and a delay, else or terminate arm;
 * a consumer empties `out`.  Every element the producer sent is taken once
 * and in order, every element the selector's send arm sent (and only
 * those) reaches the consumer, and a delay never fires early. */
enum { SEL_IN = 30, SEL_OUT = 20 };

typedef struct sel {
  hy_runtime_t *rt;
  hy_chan_t *in, *out;
  hy_hub_t *hub;
  hy_hub_consumer_t *hc;
  hy_task_t prod;
  int has_prod;
  int variant; /* 0: delay, 1: else, 2: terminate, 3: absolute delay */
  atomic_int produced, taken, offered, delivered, hub_fires;
  atomic_int ran_prod, ran_sel, ran_cons;
} sel_t;

static void *sel_producer(void *p) {
  sel_t *s = p;
  atomic_store(&s->ran_prod, 1);
  for (int i = 1; i <= SEL_IN; i++) {
    ASSERT_OK(hy_chan_send(s->in, &i));
    atomic_fetch_add(&s->produced, 1);
    if (s->hc)
      ASSERT(hy_hub_set(s->hub) >= 0);
  }
  ASSERT_OK(hy_chan_close(s->in));
  return (void *)3;
}

static void *sel_consumer(void *p) {
  sel_t *s = p;
  atomic_store(&s->ran_cons, 1);
  int v, rc;
  while ((rc = hy_chan_recv(s->out, &v)) == 0)
    ASSERT_EQ(v, atomic_fetch_add(&s->delivered, 1) + 1);
  ASSERT_EQ(rc, HY_ECLOSED);
  return (void *)4;
}

static void *sel_selector(void *p) {
  sel_t *s = p;
  atomic_store(&s->ran_sel, 1);
  int in_open = 1, prod_live = s->has_prod, hub_open = s->hc != NULL;
  int next_out = 1;
  while (in_open || prod_live) {
    int v = -1, w = next_out;
    void *pres = (void *)-1;
    hy_time_t t0 = hy_now(), abs = t0 + HY_MS(1);
    hy_arm_t arms[6];
    arms[0] = hy_arm_recv(s->in, &v);
    arms[0].guard = in_open;
    arms[1] = hy_when(next_out <= SEL_OUT, hy_arm_send(s->out, &w));
    arms[2] = hy_when(hub_open, hy_arm_hub(s->hc));
    arms[3] = hy_when(prod_live, hy_arm_task(s->rt, s->prod, &pres));
    switch (s->variant) {
    case 0: arms[4] = hy_arm_timeout(HY_MS(1)); break;
    case 1: arms[4] = hy_arm_else(); break;
    case 2: arms[4] = hy_arm_terminate(s->rt); break;
    default: arms[4] = hy_arm_delay(abs); break;
    }
    int n = 5;
    int i = (s->variant & 1) ? hy_select_ordered(s->rt, arms, n)
                             : hy_select(s->rt, arms, n);
    ASSERT(i >= 0 && i < n);
    ASSERT(arms[i].guard);
    switch (i) {
    case 0:
      if (arms[0].result == 0) {
        ASSERT_EQ(v, atomic_fetch_add(&s->taken, 1) + 1);
      } else {
        ASSERT_EQ(arms[0].result, HY_ECLOSED);
        in_open = 0;
      }
      break;
    case 1:
      ASSERT_EQ(arms[1].result, 0); /* only we close it, later */
      atomic_fetch_add(&s->offered, 1);
      next_out++;
      break;
    case 2:
      ASSERT(arms[2].result == 0 || arms[2].result == HY_ECLOSED);
      if (arms[2].result == 0) {
        atomic_fetch_add(&s->hub_fires, 1);
        /* A manual-reset hub stays released: take it back, or the arm
         * fires on every round and the producer never gets a turn. */
        if (s->variant & 2)
          ASSERT_OK(hy_hub_consumer_reset(s->hc));
      } else
        hub_open = 0;
      break;
    case 3:
      prod_live = 0;
      if (arms[3].result == 0) {
        ASSERT(pres == (void *)3);
        break;
      }
      /* The producer never ran (no stack for it): the end of `in` is
       * ours to make. */
      ASSERT_EQ(arms[3].result, HY_ENOMEM);
      ASSERT(pres == NULL);
      ASSERT_EQ(atomic_load(&s->ran_prod), 0);
      hy_chan_close(s->in);
      break;
    case 4:
      ASSERT_EQ(arms[4].result, 0);
      if (s->variant == 0)
        ASSERT_GE(hy_now(), t0 + HY_MS(1)); /* never early */
      else if (s->variant == 3)
        ASSERT_GE(hy_now(), abs);
      else
        ASSERT_EQ(s->variant, 1); /* terminate: no shutdown yet */
      if (s->variant == 1) /* nothing was ready: let the others run */
        ASSERT(hy_yield(s->rt) == 0);
      break;
    }
    /* A send arm that did not fire sent nothing: w is still ours. */
    ASSERT_EQ(w, i == 1 ? next_out - 1 : next_out);
  }
  return (void *)5;
}

static int scenario_select_variant(hy_runtime_t *rt, int variant, int strict) {
  int fails = 0, rc;
  sel_t *s = calloc(1, sizeof *s);
  ASSERT(s);
  s->rt = rt;
  s->variant = variant;
  if ((rc = hy_chan_new(rt, sizeof(int), 2, &s->in)) < 0 ||
      (rc = hy_chan_new(rt, sizeof(int), variant & 1, &s->out)) < 0) {
    ASSERT_EQ(rc, HY_ENOMEM);
    ASSERT(!strict);
    hy_chan_release(s->in);
    free(s);
    return 1;
  }
  rc = hy_hub_create(rt, NULL, variant & 2 ? HY_HUB_MANUAL_RESET
                                           : HY_HUB_AUTO_RESET, &s->hub);
  if (rc == 0) {
    rc = hy_hub_connect(s->hub, &s->hc);
    if (rc < 0) {
      s->hc = NULL;
      ASSERT_OK(hy_hub_destroy(s->hub));
      s->hub = NULL;
    }
  }
  if (rc < 0) {
    ASSERT_EQ(rc, HY_ENOMEM);
    ASSERT(!strict);
    fails++;
  }
  s->has_prod = spawned(hy_task_spawn(rt, sel_producer, s, NULL, &s->prod),
                        strict);
  if (!s->has_prod) {
    fails++;
    ASSERT_OK(hy_chan_close(s->in));
  }
  hy_task_t tsel, tcons;
  int has_cons = spawned(hy_task_spawn(rt, sel_consumer, s, NULL, &tcons),
                         strict);
  int has_sel = spawned(hy_task_spawn(rt, sel_selector, s, NULL, &tsel),
                        strict);
  fails += !has_cons + !has_sel;
  void *res;
  if (has_sel) {
    rc = hy_task_join(rt, tsel, &res);
    if (rc == 0) {
      ASSERT(res == (void *)5);
    } else {
      ASSERT_EQ(rc, HY_ENOMEM);
      ASSERT(!strict);
      fails++;
      has_sel = 0;
    }
  }
  /* Nobody takes from `in`: we do, until its end, which the producer
   * makes - or we, if it never ran either. */
  for (int prod_live = s->has_prod; !has_sel;) {
    int v = 0;
    hy_arm_t arms[2] = {hy_arm_recv(s->in, &v),
                        hy_when(prod_live, hy_arm_task(rt, s->prod, NULL))};
    int i = hy_select(rt, arms, 2);
    ASSERT(i == 0 || i == 1);
    if (i == 1) {
      prod_live = 0;
      if (arms[1].result == HY_ENOMEM)
        ASSERT_OK(hy_chan_close(s->in));
      else
        ASSERT_EQ(arms[1].result, 0);
    } else if (arms[0].result == 0) {
      ASSERT_EQ(v, atomic_fetch_add(&s->taken, 1) + 1);
    } else {
      ASSERT_EQ(arms[0].result, HY_ECLOSED);
      break;
    }
  }
  if (s->has_prod) {
    rc = hy_task_join(rt, s->prod, &res);
    if (rc < 0) {
      ASSERT_EQ(rc, HY_ENOMEM);
      ASSERT(!strict);
      fails++;
    }
  }
  ASSERT_OK(hy_chan_close(s->out));
  if (has_cons) {
    rc = hy_task_join(rt, tcons, &res);
    if (rc < 0) {
      ASSERT_EQ(rc, HY_ENOMEM);
      ASSERT(!strict);
      fails++;
      has_cons = 0;
    }
  }
  if (!has_cons) {
    int v;
    while (hy_chan_recv(s->out, &v) == 0)
      ASSERT_EQ(v, atomic_fetch_add(&s->delivered, 1) + 1);
  }
  ASSERT_EQ(atomic_load(&s->taken), atomic_load(&s->produced));
  ASSERT_EQ(atomic_load(&s->delivered), atomic_load(&s->offered));
  if (strict) {
    ASSERT_EQ(atomic_load(&s->taken), SEL_IN);
    ASSERT(atomic_load(&s->hub_fires) > 0);
  }
  hy_chan_release(s->in);
  hy_chan_release(s->out);
  if (s->hc) {
    ASSERT_OK(hy_hub_disconnect(s->hc));
    ASSERT_OK(hy_hub_destroy(s->hub));
  }
  free(s);
  return fails;
}

/* Blocks in a select until the shutdown fires its terminate arm. */
typedef struct term {
  hy_runtime_t *rt;
  hy_chan_t *empty;
  atomic_int ran, fired;
} term_t;

static void *term_waiter(void *p) {
  term_t *s = p;
  atomic_store(&s->ran, 1);
  int v;
  hy_arm_t arms[3] = {hy_arm_recv(s->empty, &v), hy_arm_send(s->empty, &v),
                      hy_arm_terminate(s->rt)};
  v = 5;
  int i = hy_select(s->rt, arms, 3);
  ASSERT_EQ(i, 2);
  ASSERT_EQ(arms[2].result, 0);
  atomic_store(&s->fired, 1);
  return NULL;
}

static int scenario_select(long fail_at, long *left) {
  int strict = fail_at == 0, fails = 0;
  hy_runtime_t *rt = rt2();
  term_t term;
  memset(&term, 0, sizeof term);
  term.rt = rt;
  ASSERT_OK(hy_chan_new(rt, sizeof(int), 0, &term.empty));
  hy__mem_fail_at(fail_at);
  int has_term = spawned(hy_task_spawn(rt, term_waiter, &term, NULL, NULL),
                         strict);
  fails += !has_term;
  for (int v = 0; v < 4; v++)
    fails += scenario_select_variant(rt, v, strict);
  /* A select with more arms than fit on the stack allocates. */
  hy_chan_t *c[HY_SELECT_STACK_ARMS + 2];
  int nc = 0;
  for (; nc < HY_SELECT_STACK_ARMS + 2; nc++) {
    int rc = hy_chan_new(rt, sizeof(int), 1, &c[nc]);
    if (rc < 0) {
      ASSERT_EQ(rc, HY_ENOMEM);
      ASSERT(!strict);
      fails++;
      break;
    }
  }
  if (nc > 0) {
    int x = 77, got = -1;
    ASSERT_OK(hy_chan_send(c[nc - 1], &x));
    hy_arm_t arms[HY_SELECT_STACK_ARMS + 3];
    for (int i = 0; i < nc; i++)
      arms[i] = hy_arm_recv(c[i], &got);
    arms[nc] = hy_arm_timeout(HY_SEC(60));
    int i = hy_select(rt, arms, nc + 1);
    if (i == HY_ENOMEM) {
      ASSERT(nc + 1 > HY_SELECT_STACK_ARMS);
      ASSERT(!strict);
      ASSERT_EQ(hy_chan_len(c[nc - 1]), 1); /* nothing was taken */
      fails++;
    } else {
      ASSERT_EQ(i, nc - 1);
      ASSERT_EQ(got, 77);
    }
    for (int k = 0; k < nc; k++)
      hy_chan_release(c[k]);
  }
  rt_end(rt);
  *left = hy__mem_fail_at(0);
  /* The terminate arm fired in the shutdown, if its task ran at all (a
   * detached task without a stack never runs). */
  ASSERT_EQ(atomic_load(&term.fired), atomic_load(&term.ran));
  if (strict)
    ASSERT_EQ(atomic_load(&term.fired), 1);
  hy_chan_release(term.empty);
  return fails;
}

TEST_IMPL(nomem_select_arms) {
  NEED_FAILURES();
  int seen;
  long runs = sweep(scenario_select, &seen);
  ASSERT_GT(runs, 3);
  ASSERT_GT(seen, 0);
  return 0;
}

/* ============================================================= 3. tasks */

typedef struct tasks {
  hy_runtime_t *rt;
  hy_chan_t *ping, *pong, *never, *gate;
  atomic_int detached_ran, rounds, stop;
} tasks_t;

static void *t_value(void *p) { return p; }

/* Holds its stack until the gate closes, so that many stacks are taken at
 * once (more than one chunk of the stack cache). */
typedef struct gated {
  hy_chan_t *gate;
  intptr_t value;
} gated_t;

static void *t_gated(void *p) {
  gated_t *g = p;
  int v;
  ASSERT_ERR(hy_chan_recv(g->gate, &v), HY_ECLOSED);
  return (void *)g->value;
}

static void *t_detached(void *p) {
  atomic_fetch_add(&((tasks_t *)p)->detached_ran, 1);
  return NULL;
}

/* Blocks until cancelled; returns what the wait said. */
static void *t_blocked(void *p) {
  tasks_t *s = p;
  int v;
  return (void *)(intptr_t)hy_chan_recv(s->never, &v);
}

/* Spawns a child with a big stack (a fresh mapping) and joins it. */
static void *t_parent(void *p) {
  tasks_t *s = p;
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.stack_size = 256 * 1024;
  o.name = "big-child";
  hy_task_t c;
  int rc = hy_task_spawn(s->rt, t_value, (void *)(intptr_t)99, &o, &c);
  if (rc < 0) {
    ASSERT_EQ(rc, HY_ENOMEM);
    return (void *)(intptr_t)HY_ENOMEM;
  }
  void *r = NULL;
  rc = hy_task_join(s->rt, c, &r);
  if (rc < 0) {
    ASSERT_EQ(rc, HY_ENOMEM);
    ASSERT(r == NULL);
    return (void *)(intptr_t)HY_ENOMEM;
  }
  ASSERT_EQ((intptr_t)r, 99);
  return (void *)(intptr_t)100;
}

/* The bystanders: two tasks started before memory runs out, playing
 * ping-pong until told to stop; they must not notice. */
static void *t_pinger(void *p) {
  tasks_t *s = p;
  for (int i = 0;; i++) {
    int v = atomic_load(&s->stop) ? -1 : i;
    ASSERT_OK(hy_chan_send(s->ping, &v));
    if (v < 0)
      return NULL;
    int w;
    ASSERT_OK(hy_chan_recv(s->pong, &w));
    ASSERT_EQ(w, i);
    atomic_fetch_add(&s->rounds, 1);
  }
}

static void *t_ponger(void *p) {
  tasks_t *s = p;
  for (;;) {
    int v;
    ASSERT_OK(hy_chan_recv(s->ping, &v));
    if (v < 0)
      return NULL;
    ASSERT_OK(hy_chan_send(s->pong, &v));
  }
}

static int scenario_tasks(long fail_at, long *left) {
  int strict = fail_at == 0, fails = 0;
  hy_runtime_t *rt = rt2();
  tasks_t s;
  memset(&s, 0, sizeof s);
  s.rt = rt;
  ASSERT_OK(hy_chan_new(rt, sizeof(int), 0, &s.ping));
  ASSERT_OK(hy_chan_new(rt, sizeof(int), 0, &s.pong));
  ASSERT_OK(hy_chan_new(rt, sizeof(int), 0, &s.never));
  ASSERT_OK(hy_chan_new(rt, sizeof(int), 0, &s.gate));
  hy_task_t b1, b2;
  ASSERT_OK(hy_task_spawn(rt, t_pinger, &s, NULL, &b1));
  ASSERT_OK(hy_task_spawn(rt, t_ponger, &s, NULL, &b2));
  while (atomic_load(&s.rounds) < 10) /* both run, their stacks taken */
    hy_sleep(NULL, HY_US(100));

  hy__mem_fail_at(fail_at);
  enum { NV = 100, ND = 6 };
  hy_task_t tv[NV], tb, tp;
  gated_t gv[NV];
  int has_v[NV], detached_ok = 0;
  for (int i = 0; i < NV; i++) {
    gv[i].gate = s.gate;
    gv[i].value = i + 1;
    has_v[i] = spawned(hy_task_spawn(rt, t_gated, &gv[i], NULL, &tv[i]),
                       strict);
    fails += !has_v[i];
  }
  for (int i = 0; i < ND; i++) {
    hy_task_t d;
    int ok = spawned(hy_task_spawn(rt, t_detached, &s, NULL,
                                   i & 1 ? NULL : &d),
                     strict);
    fails += !ok;
    if (ok && !(i & 1)) {
      int rc = hy_task_detach(rt, d);
      ASSERT(rc == 0 || rc == HY_ESTALE); /* stale: it ended already */
    }
    detached_ok += ok;
  }
  int has_b = spawned(hy_task_spawn(rt, t_blocked, &s, NULL, &tb), strict);
  int has_p = spawned(hy_task_spawn(rt, t_parent, &s, NULL, &tp), strict);
  fails += !has_b + !has_p;
  if (has_b)
    ASSERT_OK(hy_task_cancel(rt, tb));
  /* Let the gated tasks start (and take their stacks) before the gate
   * opens; a task without a stack ends as soon as its turn comes. */
  hy_sleep(NULL, HY_MS(2));
  ASSERT_OK(hy_chan_close(s.gate));
  for (int i = 0; i < NV; i++) {
    if (!has_v[i])
      continue;
    void *r = NULL;
    int rc = hy_task_join(rt, tv[i], &r);
    if (rc == 0) {
      ASSERT_EQ((intptr_t)r, i + 1);
    } else {
      ASSERT_EQ(rc, HY_ENOMEM); /* it never ran: no stack */
      ASSERT(r == NULL);
      ASSERT(!strict);
      fails++;
    }
  }
  if (has_b) {
    void *r = NULL;
    int rc = hy_task_join(rt, tb, &r);
    if (rc == 0) {
      ASSERT_EQ((intptr_t)r, HY_ECANCELED);
    } else {
      ASSERT_EQ(rc, HY_ENOMEM);
      ASSERT(!strict);
      fails++;
    }
  }
  if (has_p) {
    void *r = NULL;
    int rc = hy_task_join(rt, tp, &r);
    if (rc == 0) {
      ASSERT((intptr_t)r == 100 || ((intptr_t)r == HY_ENOMEM && !strict));
      fails += (intptr_t)r == HY_ENOMEM;
    } else {
      ASSERT_EQ(rc, HY_ENOMEM);
      ASSERT(!strict);
      fails++;
    }
  }
  /* The bystanders went on all along, and still do. */
  int r0 = atomic_load(&s.rounds);
  while (atomic_load(&s.rounds) < r0 + 10)
    hy_sleep(NULL, HY_US(100));
  atomic_store(&s.stop, 1);
  void *r;
  ASSERT_OK(hy_task_join(rt, b1, &r));
  ASSERT_OK(hy_task_join(rt, b2, &r));
  if (strict) {
    /* Detached tasks: all ran (the shutdown's drain waits for them). */
    rt_end(rt);
    ASSERT_EQ(atomic_load(&s.detached_ran), detached_ok);
  } else {
    rt_end(rt);
    ASSERT_LE(atomic_load(&s.detached_ran), detached_ok);
  }
  *left = hy__mem_fail_at(0);
  hy_chan_release(s.ping);
  hy_chan_release(s.pong);
  hy_chan_release(s.never);
  hy_chan_release(s.gate);
  return fails;
}

/* Embedded: the host runs the tasks, and a task whose stack cannot be had
 * (with no started task queued to free one) ends at once: its join says
 * HY_ENOMEM, and it never ran. */
static int scenario_tasks_embedded(long fail_at, long *left) {
  int strict = fail_at == 0, fails = 0;
  hy_runtime_t *rt = test_rt_new(0);
  hy_chan_t *gate;
  ASSERT_OK(hy_chan_new(rt, sizeof(int), 0, &gate));
  enum { NE = 80 }; /* more stacks at once than one chunk holds */
  hy_task_t t[NE];
  gated_t g[NE];
  int has[NE], ran = 0;
  hy__mem_fail_at(fail_at);
  for (int i = 0; i < NE; i++) {
    g[i].gate = gate;
    g[i].value = i + 1;
    has[i] = spawned(hy_task_spawn(rt, t_gated, &g[i], NULL, &t[i]), strict);
    fails += !has[i];
    if (i % 20 == 19) /* start some while others are still to spawn */
      ASSERT(hy_runtime_run_once(rt, 0) >= 0);
  }
  for (int k = 0; k < 100 && hy_runtime_run_once(rt, 0) > 0; k++)
    ;
  ASSERT_OK(hy_chan_close(gate));
  for (int i = 0; i < NE; i++) {
    if (!has[i])
      continue;
    void *r = NULL;
    int rc;
    for (int k = 0;; k++) {
      ASSERT_LT(k, 100000);
      rc = hy_task_join_until(rt, t[i], 0, &r);
      if (rc != HY_ETIMEDOUT)
        break;
      ASSERT(hy_runtime_run_once(rt, HY_MS(1)) >= 0);
    }
    if (rc == 0) {
      ASSERT_EQ((intptr_t)r, i + 1);
      ran++;
    } else {
      ASSERT_EQ(rc, HY_ENOMEM);
      ASSERT(r == NULL);
      ASSERT(!strict);
      fails++;
    }
  }
  rt_end(rt);
  *left = hy__mem_fail_at(0);
  hy_chan_release(gate);
  if (strict)
    ASSERT_EQ(ran, NE);
  return fails;
}

TEST_IMPL(nomem_task_spawn_join_cancel) {
  NEED_FAILURES();
  /* With workers, a stackless task is retried while started ones may free
   * stacks: a single failure is often absorbed, never seen. */
  long runs = sweep(scenario_tasks, NULL);
  ASSERT_GT(runs, 1);
  int seen;
  runs = sweep(scenario_tasks_embedded, &seen);
  ASSERT_GT(runs, 1);
  ASSERT_GT(seen, 0);
  return 0;
}

/* ======================================================= 4. hub events */

enum { HUB_CONS = 6 };

typedef struct hubs {
  hy_runtime_t *rt;
  hy_hub_consumer_t *c[HUB_CONS];
  atomic_int released[HUB_CONS], closed[HUB_CONS], ran[HUB_CONS];
} hubs_t;

typedef struct hub_arg {
  hubs_t *s;
  int i;
} hub_arg;

/* Waits for one release, then for the end (the hub's destroy). */
static void *hub_waiter(void *p) {
  hub_arg *a = p;
  hubs_t *s = a->s;
  atomic_store(&s->ran[a->i], 1);
  int rc = a->i & 1 ? hy_hub_wait(s->c[a->i])
                    : hy_hub_wait_until(s->c[a->i],
                                        hy_deadline_in(HY_SEC(60)));
  ASSERT(rc == 0 || rc == HY_ECLOSED);
  if (rc == 0) {
    atomic_fetch_add(&s->released[a->i], 1);
    rc = hy_hub_wait(s->c[a->i]);
  }
  ASSERT_EQ(rc, HY_ECLOSED);
  atomic_store(&s->closed[a->i], 1);
  return NULL;
}

static int scenario_hub(long fail_at, long *left) {
  int strict = fail_at == 0, fails = 0;
  hy_runtime_t *rt = rt2();
  hubs_t s;
  memset(&s, 0, sizeof s);
  s.rt = rt;
  hub_arg args[HUB_CONS];
  hy__mem_fail_at(fail_at);
  hy_hub_t *h = NULL;
  int rc = hy_hub_create(rt, "nomem/hub", HY_HUB_AUTO_RESET, &h);
  if (rc < 0) {
    ASSERT_EQ(rc, HY_ENOMEM);
    ASSERT(!strict);
    ASSERT(h == NULL);
    ASSERT_ERR(hy_hub_find(rt, "nomem/hub", &h), HY_ENOENT);
    rt_end(rt);
    *left = hy__mem_fail_at(0);
    return 1;
  }
  int ncons = 0;
  for (int i = 0; i < HUB_CONS; i++) {
    rc = i & 1 ? hy_hub_connect(h, &s.c[i])
               : hy_hub_connect_name(rt, "nomem/hub", &s.c[i]);
    if (rc < 0) {
      ASSERT_EQ(rc, HY_ENOMEM);
      ASSERT(s.c[i] == NULL);
      ASSERT(!strict);
      fails++;
    } else {
      ncons++;
    }
  }
  hy_hub_info_t info;
  memset(&info, 0, sizeof info);
  info.size = sizeof info;
  ASSERT_OK(hy_hub_info(h, &info));
  ASSERT_EQ(info.consumers, ncons);
  /* The os handle of one consumer: made on demand, so it may fail. */
  for (int i = 0; i < HUB_CONS; i++)
    if (s.c[i]) {
      intptr_t fd;
      rc = hy_hub_os_handle(s.c[i], &fd);
      if (rc < 0) {
        ASSERT_EQ(rc, HY_ENOMEM);
        ASSERT(!strict);
        fails++;
      }
      break;
    }
  /* A set, a reset, then the set the waiters take. */
  ASSERT_EQ(hy_hub_set(h), ncons);
  ASSERT_OK(hy_hub_reset(h));
  hy_task_t tw[HUB_CONS];
  int has_w[HUB_CONS];
  for (int i = 0; i < HUB_CONS; i++) {
    has_w[i] = 0;
    if (!s.c[i])
      continue;
    args[i].s = &s;
    args[i].i = i;
    has_w[i] = spawned(hy_task_spawn(rt, hub_waiter, &args[i], NULL, &tw[i]),
                       strict);
    fails += !has_w[i];
  }
  ASSERT_EQ(hy_hub_set(h), ncons);
  ASSERT_OK(hy_hub_destroy(h));
  for (int i = 0; i < HUB_CONS; i++) {
    if (!has_w[i])
      continue;
    rc = hy_task_join(rt, tw[i], NULL);
    if (rc < 0) {
      ASSERT_EQ(rc, HY_ENOMEM);
      ASSERT_EQ(atomic_load(&s.ran[i]), 0);
      ASSERT(!strict);
      fails++;
      continue;
    }
    /* The set came before the destroy: its release is taken first. */
    ASSERT_EQ(atomic_load(&s.released[i]), 1);
    ASSERT_EQ(atomic_load(&s.closed[i]), 1);
  }
  for (int i = 0; i < HUB_CONS; i++)
    if (s.c[i])
      ASSERT_OK(hy_hub_disconnect(s.c[i]));
  /* The name is free again. */
  rc = hy_hub_create(rt, "nomem/hub", HY_HUB_MANUAL_RESET, &h);
  if (rc == 0) {
    ASSERT_OK(hy_hub_destroy(h));
  } else {
    ASSERT_EQ(rc, HY_ENOMEM);
    ASSERT(!strict);
    fails++;
  }
  rt_end(rt);
  *left = hy__mem_fail_at(0);
  return fails;
}

TEST_IMPL(nomem_hub_events) {
  NEED_FAILURES();
  int seen;
  long runs = sweep(scenario_hub, &seen);
  ASSERT_GT(runs, 3);
  ASSERT_GT(seen, 0);
  return 0;
}

/* ============================================================ 5. timers */

/* Many tasks at once wait with deadlines (more than a worker's first timer
 * heap holds), each in another way; none may end before its deadline. */
enum { TIMER_TASKS = 160 };

typedef struct timers {
  hy_runtime_t *rt;
  hy_chan_t *empty;
  hy_hub_t *hub;
  atomic_int ended, ran;
} timers_t;

typedef struct timer_arg {
  timers_t *s;
  int i;
  hy_task_t other;
} timer_arg;

static void *timer_sleeper(void *p) {
  timers_t *s = p;
  hy_sleep(s->rt, HY_MS(4)); /* past the join's deadline (2.3 ms at most) */
  return NULL;
}

static void *timer_task(void *p) {
  timer_arg *a = p;
  timers_t *s = a->s;
  atomic_fetch_add(&s->ran, 1);
  hy_time_t d = hy_deadline_in(HY_US(500 + (a->i % 7) * 300));
  int v, rc;
  switch (a->i % 5) {
  case 0:
    ASSERT_OK(hy_sleep_until(s->rt, d));
    break;
  case 1:
    rc = hy_chan_recv_until(s->empty, &v, d);
    ASSERT_EQ(rc, HY_ETIMEDOUT);
    break;
  case 2: {
    hy_arm_t arms[2] = {hy_arm_recv(s->empty, &v), hy_arm_delay(d)};
    ASSERT_EQ(hy_select(s->rt, arms, 2), 1);
    break;
  }
  case 3:
    if (s->hub) {
      hy_hub_consumer_t *c;
      rc = hy_hub_connect(s->hub, &c);
      if (rc == 0) {
        ASSERT_ERR(hy_hub_wait_until(c, d), HY_ETIMEDOUT);
        ASSERT_OK(hy_hub_disconnect(c));
        break;
      }
      ASSERT_EQ(rc, HY_ENOMEM);
    }
    ASSERT_OK(hy_sleep_until(s->rt, d));
    break;
  default: {
    /* A join with a deadline, on a task that sleeps past it. */
    rc = hy_task_spawn(s->rt, timer_sleeper, s, NULL, &a->other);
    ASSERT(rc == 0 || rc == HY_ENOMEM);
    if (rc == 0) {
      rc = hy_task_join_until(s->rt, a->other, d, NULL);
      if (rc == 0 || rc == HY_ENOMEM) /* it never ran: nothing to wait for */
        break;
      ASSERT_EQ(rc, HY_ETIMEDOUT);
      ASSERT_GE(hy_now(), d);
      rc = hy_task_join(s->rt, a->other, NULL);
      ASSERT(rc == 0 || rc == HY_ENOMEM);
      break;
    }
    ASSERT_OK(hy_sleep_until(s->rt, d));
    break;
  }
  }
  ASSERT_GE(hy_now(), d); /* never early, out of memory or not */
  atomic_fetch_add(&s->ended, 1);
  return NULL;
}

static int scenario_timers(long fail_at, long *left) {
  int strict = fail_at == 0, fails = 0;
  hy_runtime_t *rt = rt2();
  timers_t s;
  memset(&s, 0, sizeof s);
  s.rt = rt;
  ASSERT_OK(hy_chan_new(rt, sizeof(int), 0, &s.empty));
  timer_arg *args = calloc(TIMER_TASKS, sizeof *args);
  hy_task_t *t = calloc(TIMER_TASKS, sizeof *t);
  int *has = calloc(TIMER_TASKS, sizeof *has);
  ASSERT(args && t && has);
  hy__mem_fail_at(fail_at);
  int rc = hy_hub_create(rt, NULL, HY_HUB_AUTO_RESET, &s.hub);
  if (rc < 0) {
    ASSERT_EQ(rc, HY_ENOMEM);
    ASSERT(!strict);
    s.hub = NULL;
    fails++;
  }
  for (int i = 0; i < TIMER_TASKS; i++) {
    args[i].s = &s;
    args[i].i = i;
    has[i] = spawned(hy_task_spawn(rt, timer_task, &args[i], NULL, &t[i]),
                     strict);
    fails += !has[i];
  }
  /* From a foreign thread too. */
  hy_time_t d = hy_deadline_in(HY_US(300));
  int v;
  ASSERT_ERR(hy_chan_recv_until(s.empty, &v, d), HY_ETIMEDOUT);
  ASSERT_GE(hy_now(), d);
  int joined = 0;
  for (int i = 0; i < TIMER_TASKS; i++) {
    if (!has[i])
      continue;
    rc = hy_task_join(rt, t[i], NULL);
    if (rc < 0) {
      ASSERT_EQ(rc, HY_ENOMEM);
      ASSERT(!strict);
      fails++;
    } else {
      joined++;
    }
  }
  ASSERT_EQ(atomic_load(&s.ended), joined);
  if (s.hub)
    ASSERT_OK(hy_hub_destroy(s.hub));
  rt_end(rt);
  *left = hy__mem_fail_at(0);
  hy_chan_release(s.empty);
  free(args);
  free(t);
  free(has);
  return fails;
}

TEST_IMPL(nomem_timers_never_early) {
  NEED_FAILURES();
  int seen;
  long runs = sweep(scenario_timers, &seen);
  ASSERT_GT(runs, 3);
  ASSERT_GT(seen, 0);
  return 0;
}

/* ============================================ 6. runtime life and posts */

typedef struct posts {
  atomic_int ran, blocking_ran;
} posts_t;

static void post_fn(void *p) { atomic_fetch_add(&((posts_t *)p)->ran, 1); }

static void *blocking_fn(void *p) {
  atomic_fetch_add(&((posts_t *)p)->blocking_ran, 1);
  return (void *)7;
}

/* Posts from a task, and runs a function on the blocking pool (made on
 * first use): it runs once if the call says 0, never if HY_ENOMEM. */
static void *post_from_task(void *p) {
  void **a = p;
  hy_runtime_t *rt = a[0];
  posts_t *ps = a[1];
  int rc = hy_runtime_post(rt, post_fn, ps);
  ASSERT(rc == 0 || rc == HY_ENOMEM);
  void *r = NULL;
  int brc = hy_blocking(rt, blocking_fn, ps, &r);
  if (brc == 0) {
    ASSERT(r == (void *)7);
    ASSERT_EQ(atomic_load(&ps->blocking_ran), 1);
  } else {
    ASSERT_EQ(brc, HY_ENOMEM);
    ASSERT_EQ(atomic_load(&ps->blocking_ran), 0);
  }
  return (void *)(intptr_t)(rc == 0);
}

static int scenario_runtime(int workers, long fail_at, long *left) {
  int strict = fail_at == 0, fails = 0;
  posts_t ps;
  atomic_init(&ps.ran, 0);
  atomic_init(&ps.blocking_ran, 0);
  hy__mem_fail_at(fail_at);
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = workers;
  hy_runtime_t *rt = NULL;
  int rc = hy_runtime_new(&o, &rt);
  if (rc == HY_ENOSYS && test_backend()) {
    hy__mem_fail_at(0);
    fprintf(stderr, "SKIP: backend %s not available here\n", test_backend());
    exit(TEST_SKIP);
  }
  if (rc < 0) {
    /* What it made is freed (LeakSanitizer), and nothing is running. */
    ASSERT_EQ(rc, HY_ENOMEM);
    ASSERT(rt == NULL);
    ASSERT(!strict);
    *left = hy__mem_fail_at(0);
    return 1;
  }
  int posted = 0;
  for (int i = 0; i < 8; i++) {
    rc = hy_runtime_post(rt, post_fn, &ps);
    if (rc == 0) {
      posted++;
    } else {
      ASSERT_EQ(rc, HY_ENOMEM);
      ASSERT(!strict);
      fails++;
    }
  }
  void *a[2] = {rt, &ps};
  hy_task_t t;
  rc = hy_task_spawn(rt, post_from_task, a, NULL, &t);
  if (rc == 0) {
    void *r = NULL;
    if (workers == 0) { /* the host runs it */
      for (int k = 0; k < 100000; k++) {
        hy_runtime_run_once(rt, HY_MS(1));
        rc = hy_task_join_until(rt, t, 0, &r);
        if (rc != HY_ETIMEDOUT)
          break;
      }
    } else {
      rc = hy_task_join(rt, t, &r);
    }
    if (rc == 0)
      posted += (int)(intptr_t)r;
    if (rc == 0 && !r)
      fails++;
  }
  if (rc < 0) {
    ASSERT_EQ(rc, HY_ENOMEM);
    ASSERT(!strict);
    fails++;
  }
  if (workers == 0)
    while (hy_runtime_run_once(rt, 0) > 0)
      ;
  /* Shutdown of a running runtime completes; close runs posts that are
   * still queued: none is dropped. */
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(1)));
  ASSERT_OK(hy_runtime_close(rt));
  *left = hy__mem_fail_at(0);
  ASSERT_EQ(atomic_load(&ps.ran), posted);
  if (strict) {
    ASSERT_EQ(posted, 9);
    ASSERT_EQ(atomic_load(&ps.blocking_ran), 1);
  }
  return fails;
}

static int scenario_runtime_workers(long fail_at, long *left) {
  return scenario_runtime(2, fail_at, left);
}

static int scenario_runtime_embedded(long fail_at, long *left) {
  return scenario_runtime(0, fail_at, left);
}

TEST_IMPL(nomem_runtime_new_post_shutdown) {
  NEED_FAILURES();
  int seen;
  long runs = sweep(scenario_runtime_workers, &seen);
  ASSERT_GT(runs, 3);
  ASSERT_GT(seen, 0);
  runs = sweep(scenario_runtime_embedded, &seen);
  ASSERT_GT(runs, 3);
  ASSERT_GT(seen, 0);
  return 0;
}

/* ===================================================== 7. batcher flusher */

/* A batcher's flusher task that never ran (no memory for its stack when it
 * was to start) does not leave a batch waiting for its count: the first
 * event of a batch finds it gone and gets another flusher (or, if none
 * can be spawned, is sent at once).  On an embedded runtime (one thread,
 * so the failure lands where armed): the flusher's stack fails, then one
 * event is fed, and must come within the batcher's reach.  (No sweep of
 * the feed: it allocates nothing here, the new flusher's task block being
 * the old one's.) */
TEST_IMPL(nomem_batcher_flusher) {
  NEED_FAILURES();
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = 0;
  hy_runtime_t *rt = test_rt_new_with(&o);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "c", 0));
  hy_receiver_t *r;
  ASSERT_OK(hy_subscribe(b, "c", NULL, &r));
  hy_sender_t *s;
  ASSERT_OK(hy_publish(b, "c", &s));
  hy_batcher_t *bt;
  ASSERT_OK(hy_batcher_new(rt, s, 100, HY_MS(2), &bt));
  hy__mem_fail_here_at(1); /* the flusher's stack, when it is to run */
  hy_runtime_run_once(rt, 0);
  ASSERT_EQ(hy__mem_fail_at(0), 0);
  hy_event_t *ev;
  ASSERT_OK(hy_event_new(&hy_event_bytes, "x", 1, HY_FOREVER, &ev));
  ASSERT_OK(hy_batcher_feed(bt, ev, HY_FOREVER));
  hy_event_unref(ev);
  hy_event_t *got = NULL;
  hy_time_t until = hy_deadline_in(HY_SEC(5));
  while (hy_receiver_try_read(r, &got) < 0 && hy_now() < until)
    hy_runtime_run_once(rt, HY_MS(1));
  if (!got)
    TEST_FAIL_("the fed event was not sent within %d s", 5);
  size_t n;
  hy_event_t *const *v = hy_event_batch_items(got, &n);
  ASSERT_EQ(n, 1);
  size_t len;
  const char *d = hy_event_data(v[0], &len);
  ASSERT(len == 1 && d[0] == 'x');
  hy_event_unref(got);
  /* The shutdown runs the flusher to its end (this thread drives it), so
   * that the free's join of it does not wait for a thread that is not
   * there. */
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(100)));
  hy_batcher_free(bt);
  hy_sender_free(s);
  hy_unsubscribe(r);
  ASSERT_OK(hy_broker_free(b));
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

/* hy__task_reap_unrun, the library's check for its own tasks: it joins a
 * task that ended without running (its stack could not be had) and leaves
 * every other task as it was: one still to run, one that ran and parked,
 * one that ran to its end (joinable after, with its result). */
static void *reap_parker(void *arg) {
  hy_sleep(arg, HY_MS(20));
  return (void *)7;
}

static void *reap_quick(void *arg) {
  (void)arg;
  return (void *)9;
}

TEST_IMPL(nomem_task_reap_unrun) {
  NEED_FAILURES();
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = 0;
  hy_runtime_t *rt = test_rt_new_with(&o);
  hy_task_t unrun, parker, quick;
  ASSERT_OK(hy_task_spawn(rt, reap_quick, NULL, NULL, &unrun));
  hy__mem_fail_here_at(1); /* its stack, when it is to run */
  hy_runtime_run_once(rt, 0);
  ASSERT_EQ(hy__mem_fail_at(0), 0);
  ASSERT_OK(hy_task_spawn(rt, reap_parker, rt, NULL, &parker));
  ASSERT_OK(hy_task_spawn(rt, reap_quick, NULL, NULL, &quick));
  ASSERT_EQ(hy__task_reap_unrun(rt, parker), 0); /* not run yet */
  hy_runtime_run_once(rt, 0);
  ASSERT_EQ(hy__task_reap_unrun(rt, parker), 0); /* parked */
  ASSERT_EQ(hy__task_reap_unrun(rt, quick), 0);  /* ran to its end */
  ASSERT_EQ(hy__task_reap_unrun(rt, unrun), 1);
  ASSERT_EQ(hy__task_reap_unrun(rt, unrun), HY_ESTALE); /* joined */
  ASSERT_EQ(hy_task_join(rt, unrun, NULL), HY_ESTALE);
  void *res = NULL;
  ASSERT_OK(hy_task_join(rt, quick, &res));
  ASSERT(res == (void *)9);
  hy_time_t until = hy_deadline_in(HY_SEC(5));
  while (test_tasks_alive(rt) > 0 && hy_now() < until)
    hy_runtime_run_once(rt, HY_MS(1));
  ASSERT_OK(hy_task_join(rt, parker, &res));
  ASSERT(res == (void *)7);
  test_rt_close(rt, HY_MS(100));
  return 0;
}
