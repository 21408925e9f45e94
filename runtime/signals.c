/* signals.c - OS signals as events (hydra/signal.h): the portable half.
 * The OS half - catching the signals and calling hy__signal_deliver from
 * an ordinary thread - is runtime/<os>/signal.c (runtime/signals.h).
 *
 * The process-wide table `g` is the one piece of global state in the
 * runtime, and it has to be: a signal disposition (or a console control
 * handler) belongs to the process, not to a runtime.  It holds the list of
 * runtimes that have receivers, each with its receivers, and how many
 * receivers want each signal.
 *
 * A receiver queues what it has not read: counts per signal plus a ring of
 * the last 256 signal numbers for their order (an occurrence that finds
 * the ring full is still counted and read after the ones in the ring).
 *
 * Start and stop.  The first receiver in the process starts the OS source
 * (hy__sigsrc_start); each signal is caught with its first receiver and
 * released with its last; SIGQUIT is caught while any receiver exists
 * (task dump for runtimes that do not subscribe to it).  When the last
 * receiver goes, the source is stopped (hy__sigsrc_stop), after which no
 * delivery runs.
 *
 * Locks: g.life serialises start/stop (held across them; a delivery never
 * takes it) > g.mu (the table, the runtimes' receiver lists; held during
 * each delivery) > r->lock (a receiver's queue and waiters) > task and
 * worker locks.  rt->lock is taken under g.mu for the SIGQUIT dump.  Both
 * are spin locks (zero-initialised, as a process-wide table must be); they
 * are taken on subscribe, unsubscribe and delivery only.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "runtime/hubs.h"
#include "runtime/internal.h"
#include "runtime/signals.h"

#define NSIGS 65
#define RING 256

typedef struct hy__sigrt hy__sigrt;

struct hy_sigrecv {
  hy__lock_t lock;
  hy_runtime_t *rt;
  hy_sigrecv_t *next, *prev; /* rt's receivers, under g.mu */
  uint64_t mask;             /* bit s-1 for signal s */
  hy__waitq waiters;
  int closed;
  int quit_held;             /* holds the SIGQUIT handler (for the dump) */
  uint64_t count[NSIGS];     /* unread, per signal */
  uint64_t total;
  uint8_t ring[RING];        /* order of the unread ones (most of them) */
  unsigned head, len;
};

struct hy__sigrt {
  hy_runtime_t *rt;
  hy__sigrt *next, *prev;
  hy_sigrecv_t *recvs;
  int quit_subs; /* receivers of SIGQUIT in this runtime */
};

static struct {
  hy__lock_t life;
  hy__lock_t mu;
  hy__sigrt *rts;
  int nrecv;       /* receivers in the process */
  int subs[NSIGS]; /* receivers per signal */
  int running;     /* the OS source is started */
} g;

static const int supported[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT
#ifdef SIGUSR1
                                , SIGUSR1, SIGUSR2
#endif
};

static int is_supported(int s) {
  for (size_t i = 0; i < sizeof supported / sizeof *supported; i++)
    if (supported[i] == s)
      return 1;
  return 0;
}

const char *hy_signal_name(int s) {
  switch (s) {
  case SIGINT: return "SIGINT";
  case SIGTERM: return "SIGTERM";
  case SIGHUP: return "SIGHUP";
  case SIGQUIT: return "SIGQUIT";
#ifdef SIGUSR1
  case SIGUSR1: return "SIGUSR1";
  case SIGUSR2: return "SIGUSR2";
#endif
  default: return "signal";
  }
}

/* ---------------------------------------------------------- receivers */

static void push(hy_sigrecv_t *r, int s) {
  r->count[s]++;
  r->total++;
  if (r->len < RING) {
    r->ring[(r->head + r->len) % RING] = (uint8_t)s;
    r->len++;
  }
}

static int pop(hy_sigrecv_t *r) {
  int s = 0;
  if (r->len) {
    s = r->ring[r->head];
    r->head = (r->head + 1) % RING;
    r->len--;
  } else {
    for (int i = 1; i < NSIGS && !s; i++)
      if (r->count[i])
        s = i;
  }
  if (s) {
    r->count[s]--;
    r->total--;
  }
  return s;
}

/* pre: g.mu.  Hands one occurrence of s to every receiver that wants it,
 * and publishes it on the sys/signal channel of each runtime that has one.
 * Catching stays opt-in (a sys/signal subscription alone installs no
 * handler): a library must not take a signal over unless asked.  Returns
 * 1 if a receiver (or a runtime's SIGQUIT dump) took it. */
static int deliver(int s) {
  int taken = 0;
  for (hy__sigrt *sr = g.rts; sr; sr = sr->next) {
    if (s == SIGQUIT && sr->quit_subs == 0) {
      hy_runtime_dump(sr->rt, stderr);
      taken = 1;
      continue;
    }
    int wanted = 0;
    for (hy_sigrecv_t *r = sr->recvs; r; r = r->next) {
      if (!(r->mask & (UINT64_C(1) << (s - 1))))
        continue;
      wanted = 1;
      hy__lock(&r->lock);
      push(r, s);
      hy__waiter *w = hy__waitq_claim(&r->waiters);
      if (w) {
        int got = pop(r);
        if (w->buf)
          *(int *)w->buf = got;
        w->wait->result = 0;
        hy__wait_wake(w->wait);
      }
      hy__unlock(&r->lock);
    }
    /* Every signal a runtime catches is also an event on its sys/signal
     * channel (which never blocks the publisher). */
    if (wanted)
      hy__event_publish_signal(sr->rt, s);
    taken |= wanted;
  }
  return taken;
}

int hy__signal_deliver(int s) {
  if (s <= 0 || s >= NSIGS)
    return 0;
  hy__lock(&g.mu);
  int taken = deliver(s);
  hy__unlock(&g.mu);
  return taken;
}

/* pre: g.life, not g.mu; no receiver left. */
static void stop(void) {
  hy__sigsrc_stop();
  g.running = 0;
}

/* pre: g.mu.  Unlinks r and undoes its subscriptions; frees the runtime's
 * entry when r was its last receiver. */
static void detach(hy_sigrecv_t *r) {
  hy__sigrt *sr = r->rt->sig;
  if (r->prev)
    r->prev->next = r->next;
  else
    sr->recvs = r->next;
  if (r->next)
    r->next->prev = r->prev;
  for (int s = 1; s < NSIGS; s++)
    if (r->mask & (UINT64_C(1) << (s - 1))) {
      g.subs[s]--;
      if (s == SIGQUIT)
        sr->quit_subs--;
      hy__sigsrc_release(s);
    }
  if (r->quit_held) /* every receiver holds SIGQUIT for the dump */
    hy__sigsrc_release(SIGQUIT);
  g.nrecv--;
  if (!sr->recvs) {
    if (sr->prev)
      sr->prev->next = sr->next;
    else
      g.rts = sr->next;
    if (sr->next)
      sr->next->prev = sr->prev;
    r->rt->sig = NULL;
    hy__mem_free(sr);
  }
}

int hy_signal_subscribe(hy_runtime_t *rt, const int *signos, int n,
                        hy_sigrecv_t **out) {
  if (!rt || !signos || n < 1 || !out)
    return HY_EINVAL;
  *out = NULL;
  uint64_t mask = 0;
  for (int i = 0; i < n; i++) {
    if (!is_supported(signos[i]))
      return HY_EINVAL;
    mask |= UINT64_C(1) << (signos[i] - 1);
  }
  hy_sigrecv_t *r = hy__mem_calloc(1, sizeof *r);
  if (!r)
    return HY_ENOMEM;
  r->rt = rt;
  r->mask = mask;
  hy__lock(&g.life);
  int rc = 0;
  if (!g.running && (rc = hy__sigsrc_start()) < 0) {
    hy__unlock(&g.life);
    hy__mem_free(r);
    return rc;
  }
  g.running = 1;
  hy__lock(&g.mu);
  hy__sigrt *sr = rt->sig;
  if (!sr) {
    sr = hy__mem_calloc(1, sizeof *sr);
    if (!sr) {
      rc = HY_ENOMEM;
      goto out;
    }
    sr->rt = rt;
    sr->next = g.rts;
    if (g.rts)
      g.rts->prev = sr;
    g.rts = sr;
    rt->sig = sr;
  }
  r->next = sr->recvs;
  if (sr->recvs)
    sr->recvs->prev = r;
  sr->recvs = r;
  g.nrecv++;
  /* Subscribe signal by signal; on failure detach() undoes exactly the
   * ones in r->mask, so the mask grows as they succeed. */
  r->mask = 0;
  if ((rc = hy__sigsrc_catch(SIGQUIT)) < 0) {
    detach(r);
    goto out;
  }
  r->quit_held = 1;
  for (int s = 1; s < NSIGS; s++) {
    if (!(mask & (UINT64_C(1) << (s - 1))))
      continue;
    if ((rc = hy__sigsrc_catch(s)) < 0) {
      detach(r);
      goto out;
    }
    r->mask |= UINT64_C(1) << (s - 1);
    g.subs[s]++;
    if (s == SIGQUIT)
      sr->quit_subs++;
  }
out:;
  int idle = g.nrecv == 0;
  hy__unlock(&g.mu);
  if (rc < 0) {
    if (idle)
      stop();
    hy__unlock(&g.life);
    hy__mem_free(r);
    return rc;
  }
  hy__unlock(&g.life);
  *out = r;
  return 0;
}

/* pre: g.life, not g.mu. */
static void drop(hy_sigrecv_t *r) {
  hy__lock(&g.mu);
  detach(r);
  int idle = g.nrecv == 0;
  hy__unlock(&g.mu);
  if (idle)
    stop();
  hy__lock(&r->lock);
  r->closed = 1;
  hy__waitq_wake_all(&r->waiters, HY_ECLOSED);
  hy__unlock(&r->lock);
  hy__mem_free(r);
}

int hy_signal_unsubscribe(hy_sigrecv_t *r) {
  if (!r)
    return HY_EINVAL;
  hy__lock(&g.life);
  drop(r);
  hy__unlock(&g.life);
  return 0;
}

void hy__signal_runtime_free(hy_runtime_t *rt) {
  hy__lock(&g.life);
  for (;;) {
    hy__lock(&g.mu);
    hy__sigrt *sr = rt->sig;
    hy_sigrecv_t *r = sr ? sr->recvs : NULL;
    hy__unlock(&g.mu);
    if (!r)
      break;
    drop(r);
  }
  hy__unlock(&g.life);
}

int hy_signal_pending(hy_sigrecv_t *r) {
  if (!r)
    return HY_EINVAL;
  hy__lock(&r->lock);
  uint64_t n = r->total;
  hy__unlock(&r->lock);
  return n > INT32_MAX ? INT32_MAX : (int)n;
}

int hy_signal_read(hy_sigrecv_t *r, int *signo) {
  return hy_signal_read_until(r, HY_FOREVER, signo);
}

int hy_signal_read_until(hy_sigrecv_t *r, hy_time_t deadline, int *signo) {
  if (!r || !signo)
    return HY_EINVAL;
  hy__wait w;
  int rc = hy__wait_init(&w, r->rt);
  if (rc < 0)
    return rc;
  int got = 0;
  hy__lock(&r->lock);
  if (r->total || r->closed) {
    if (hy__wait_claim(&w, 0)) {
      rc = r->total ? (got = pop(r), 0) : HY_ECLOSED;
      hy__unlock(&r->lock);
      hy__wait_fini(&w);
      if (rc == 0)
        *signo = got;
      return rc;
    }
    /* A cancel won: take nothing, receive its wake. */
    hy__unlock(&r->lock);
    hy__wait_park(&w, HY_FOREVER);
    hy__wait_fini(&w);
    return HY_ECANCELED;
  }
  hy__waiter wr;
  memset(&wr, 0, sizeof wr);
  wr.wait = &w;
  wr.buf = &got;
  hy__wait_park_queued(&w, &wr, &r->waiters, &r->lock, "signal", deadline);
  hy__wait_fini(&w);
  rc = hy__wait_rc(&w);
  if (rc == 0)
    *signo = got;
  return rc;
}

/* ------------------------------------------------------------ select arm */

HY__WAITQ_ARM_OPS(arm, hy_sigrecv_t, lock, waiters)

static int arm_try(void *obj, hy_arm_t *arm, int *result) {
  hy_sigrecv_t *r = obj;
  if (!r) {
    *result = HY_EINVAL;
    return 1;
  }
  if (r->total) {
    int s = pop(r);
    if (arm->buf)
      *(int *)arm->buf = s;
    *result = 0;
    return 1;
  }
  if (r->closed) {
    *result = HY_ECLOSED;
    return 1;
  }
  return 0;
}

static const struct hy_awaitable signal_awaitable = {
    "signal", arm_lock, arm_try, arm_enqueue, arm_dequeue};

hy_arm_t hy_arm_signal(hy_sigrecv_t *r, int *signo) {
  return hy__arm_make(&signal_awaitable, HY_ARM_OBJECT, r, signo, 1);
}
