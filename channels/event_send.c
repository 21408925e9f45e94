/* event_send.c - sending: delivery plans, picking for limited channels
 * (priority, round-robin among equals, never twice to one receiver),
 * expiry before forwarding, and the hand-over to receivers.
 */
#include <stdlib.h>
#include <string.h>

#include "channels/event_internal.h"

#define PUT_EXPIRED 2
#define PUT_UNDER_TOPO 4 /* copies a send may hand over under topo */

/* Round-robin among equals moves on every HY_PICK_RUN sends (event.h). */

void hy__plan_release(hy__plan *p) {
  if (!p || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (int i = 0; i < p->n; i++)
    hy__receiver_release(p->r[i]);
  hy__mem_free(p);
}

static int by_priority(const void *a, const void *b) {
  const hy_receiver_t *x = *(hy_receiver_t *const *)a;
  const hy_receiver_t *y = *(hy_receiver_t *const *)b;
  int64_t px = atomic_load_explicit(&((hy_receiver_t *)x)->prio, memory_order_relaxed);
  int64_t py = atomic_load_explicit(&((hy_receiver_t *)y)->prio, memory_order_relaxed);
  if (px != py)
    return px > py ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

/* Under topo: the channels a send into c reaches - its bridged group
 * (walked once, so no loops) and every ancestor of each member. */
static int collect(hy__evstate *st, hy__channel *c, hy__channel ***out, int *n) {
  uint32_t epoch = ++st->epoch;
  if (epoch == 0)
    epoch = ++st->epoch;
  hy__channel **v = NULL;
  int cap = 0, cnt = 0, head = 0;
  if (hy__grow((void **)&v, &cap, 1, sizeof *v) < 0)
    return HY_ENOMEM;
  v[cnt++] = c;
  c->mark = epoch;
  int group;
  while (head < cnt) { /* breadth-first over bridges */
    hy__channel *x = v[head++];
    for (int i = 0; i < x->nbridge; i++) {
      hy__channel *y = x->bridge[i];
      if (y->mark == epoch || y->deleted)
        continue;
      if (hy__grow((void **)&v, &cap, cnt + 1, sizeof *v) < 0)
        goto nomem;
      y->mark = epoch;
      v[cnt++] = y;
    }
  }
  group = cnt;
  for (int i = 0; i < group; i++) {
    for (hy__channel *a = hy__channel_parent(v[i]); a && a->mark != epoch;
         a = hy__channel_parent(a)) {
      if (hy__grow((void **)&v, &cap, cnt + 1, sizeof *v) < 0)
        goto nomem;
      a->mark = epoch;
      v[cnt++] = a;
    }
  }
  *out = v;
  *n = cnt;
  return 0;
nomem:
  hy__mem_free(v);
  return HY_ENOMEM;
}

static hy__plan *plan_build(hy__evstate *st, hy__channel *c) {
  hy__channel **v;
  int n;
  if (collect(st, c, &v, &n) < 0)
    return NULL;
  int total = 0;
  for (int i = 0; i < n; i++)
    total += v[i]->nrcv;
  hy__plan *p = hy__mem_alloc(sizeof *p + (size_t)total * sizeof(hy_receiver_t *) +
                              (size_t)total * sizeof(int));
  if (!p) {
    hy__mem_free(v);
    return NULL;
  }
  atomic_init(&p->refs, 1);
  p->n = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < v[i]->nrcv; j++) {
      hy_receiver_t *r = v[i]->rcv[j];
      atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
      p->r[p->n++] = r;
    }
  hy__mem_free(v);
  qsort(p->r, (size_t)p->n, sizeof *p->r, by_priority);
  /* Priorities change under topo only, as plans are built. */
  p->gend = (int *)(void *)&p->r[total];
  for (int i = p->n - 1; i >= 0; i--)
    p->gend[i] = i + 1 < p->n && atomic_load_explicit(&p->r[i]->prio, memory_order_relaxed) ==
                                     atomic_load_explicit(&p->r[i + 1]->prio, memory_order_relaxed)
                     ? p->gend[i + 1]
                     : i + 1;
  return p;
}

/* Under topo. */
static hy__plan *plan_get(hy__evstate *st, hy__channel *c) {
  if (c->plan && c->plan_ver == st->version)
    return c->plan;
  hy__plan *p = plan_build(st, c);
  if (!p)
    return NULL;
  hy__plan_release(c->plan);
  c->plan = p;
  c->plan_ver = st->version;
  return p;
}

/* Under topo: picks up to c->limit receivers of p for ev (highest
 * priority first, round-robin among equals, none that had ev); the plan's
 * reference keeps them.  Returns the count or HY_ENOMEM. */
static int pick(hy__channel *c, hy__plan *p, hy_event_t *ev, int sole,
                hy_receiver_t **out) {
  int want = c->limit, got = 0;
  for (int gs = 0; gs < p->n && got < want;) {
    int ge = p->gend[gs];
    int g = ge - gs;
    /* No division per send: the top group's start is kept for its size.
     * Senders that do not hold topo (hy_sender_t's owner) update the turn
     * with plain loads and stores: racing senders may both serve one turn,
     * never one outside the group. */
    uint32_t turn = atomic_load_explicit(&c->turn, memory_order_relaxed);
    int start = 0;
    if (gs == 0) {
      uint64_t tc = atomic_load_explicit(&c->turn_cache, memory_order_relaxed);
      if ((uint32_t)tc == turn && (int)(tc >> 48) == g)
        start = (int)(tc >> 32 & 0xffff);
      else
        start = -1;
    }
    if (gs != 0 || start < 0 || start >= g) {
      start = (int)(turn % (uint32_t)g);
      if (gs == 0 && g < 0x10000)
        atomic_store_explicit(&c->turn_cache,
                              (uint64_t)g << 48 | (uint64_t)start << 32 | turn,
                              memory_order_relaxed);
    }
    for (int k = 0, at = start; k < g && got < want; k++) {
      hy_receiver_t *r = p->r[gs + at];
      if (++at == g)
        at = 0;
      int rc;
      if (sole && ev->nhad == 0) { /* a fresh event: nothing to look up */
        ev->had = ev->had_inline;
        ev->cap_had = 2;
        ev->had[0].key = r;
        ev->had[0].id = r->id;
        ev->nhad = 1;
        rc = 1;
      } else {
        rc = hy__event_pick(ev, r, r->id, sole);
      }
      if (rc < 0)
        return rc;
      if (rc == 1)
        out[got++] = r;
    }
    gs = ge;
  }
  /* Once per send: every pick_run sends the start among equals rotates by
   * one. */
  if (got) {
    uint32_t left = atomic_load_explicit(&c->run_left, memory_order_relaxed);
    if (left <= 1) {
      atomic_store_explicit(&c->run_left,
                            atomic_load_explicit(&c->pick_run, memory_order_relaxed),
                            memory_order_relaxed);
      atomic_store_explicit(&c->turn,
                            atomic_load_explicit(&c->turn, memory_order_relaxed) + 1,
                            memory_order_relaxed);
    } else {
      atomic_store_explicit(&c->run_left, left - 1, memory_order_relaxed);
    }
  }
  return got;
}

static void count(_Atomic uint64_t *f, uint64_t n) {
  if (n)
    atomic_fetch_add_explicit(f, n, memory_order_relaxed);
}

/* A count with one writer at a time: the channel's own counts under topo
 * (sends through a sender's fast path are counted in the sender), or a
 * sender's, written by its owner alone.  Readers may read it any time. */
static void count_one_writer(_Atomic uint64_t *f, uint64_t n) {
  atomic_store_explicit(f, atomic_load_explicit(f, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

/* The sender's own cache of a plan (hy_sender_t): the plan its owner -
 * the first task to send through it - last used, valid while the
 * topology version is unchanged.  Only the owner reads or replaces it, so
 * its sends need no topo: they read the version, pick from the plan it
 * holds a reference to, and count into the sender's own counters.  A
 * change it does not see yet orders its send before the change (a
 * receiver closed meanwhile takes no copy, as if it had been dropped by
 * the unsubscribe). */
static int owner_of(hy_sender_t *s, void *me) {
  return me && atomic_load_explicit(&s->owner, memory_order_relaxed) == me;
}

int hy__send_channel(hy__evstate *st, hy__channel *c, hy_event_t *ev,
                     hy_time_t deadline, int nonblock) {
  return hy__send_via(st, c, NULL, ev, deadline, nonblock);
}

int hy__send_via(hy__evstate *st, hy__channel *c, hy_sender_t *s,
                 hy_event_t *ev, hy_time_t deadline, int nonblock) {
  if (!ev)
    return HY_EINVAL;
  atomic_store_explicit(&ev->sent, 1, memory_order_relaxed);
  /* The caller's reference is the only one (a fresh event, the common
   * case): until the first hand-over below no one else can reach ev, so
   * its picked set, references and pick count are written without locked
   * instructions.  The acquire pairs with the release of earlier holders'
   * unrefs. */
  int sole = atomic_load_explicit(&ev->refs, memory_order_acquire) == 1;
  hy_receiver_t *small[16], **picked = NULL;
  hy__plan *plan = NULL;
  int n;
  void *me = s ? (void *)hy__task_current(st->rt) : NULL;
  int locked = 0;
  hy__plan *p;
  if (owner_of(s, me) && s->plan &&
      atomic_load_explicit(&st->version, memory_order_acquire) == s->ver) {
    p = s->plan;
    count_one_writer(&s->sent, 1);
  } else {
    hy__lock(&st->topo);
    locked = 1;
    if (c->deleted) {
      hy__unlock(&st->topo);
      return HY_ECLOSED;
    }
    p = plan_get(st, c);
    if (!p) {
      hy__unlock(&st->topo);
      return HY_ENOMEM;
    }
    if (s && me) {
      void *none = NULL;
      if (!atomic_load_explicit(&s->owner, memory_order_relaxed))
        atomic_compare_exchange_strong(&s->owner, &none, me);
      if (owner_of(s, me) && s->plan != p) {
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
        hy__plan_release(s->plan); /* as plan_get does, under topo */
        s->plan = p;
      }
      if (owner_of(s, me))
        s->ver = c->plan_ver;
    }
    count_one_writer(&c->sent, 1);
  }
  if (ev->expiry != HY_FOREVER && hy_event_expired(ev, hy_now())) {
    if (locked)
      hy__unlock(&st->topo);
    count(&c->expired, 1);
    return 0;
  }
  if (c->limit == 0) {
    picked = p->r;
    n = p->n;
  } else {
    int want = c->limit < p->n ? c->limit : p->n;
    picked = want <= 16 ? small : hy__mem_alloc((size_t)want * sizeof *picked);
    n = !picked ? HY_ENOMEM : want ? pick(c, p, ev, sole, picked) : 0;
    if (n <= 0) {
      if (locked)
        hy__unlock(&st->topo);
      if (picked && picked != small)
        hy__mem_free(picked);
      if (n < 0)
        return n;
      count(&c->unpicked, 1);
      return 0;
    }
  }
  if (locked)
    count_one_writer(&c->planned, (uint64_t)n);
  else
    count_one_writer(&s->planned, (uint64_t)n);

  /* One reference per copy, added at once; put uses one per delivery.  The
   * pick count is raised for every copy too (the sole holder's plain store
   * is published by the receiver lock of the first hand-over) and lowered
   * afterwards by the copies not delivered. */
  if (sole) {
    atomic_store_explicit(&ev->refs, 1 + (long)n, memory_order_relaxed);
    atomic_store_explicit(
        &ev->picks,
        atomic_load_explicit(&ev->picks, memory_order_relaxed) + (unsigned)n,
        memory_order_relaxed);
  } else {
    atomic_fetch_add_explicit(&ev->refs, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&ev->picks, (unsigned)n, memory_order_relaxed);
  }
  uint64_t dropped = 0;
  int delivered = 0, rc = 0, i = 0;
  hy__wakes wk;
  wk.n = 0;
  wk.home = c->limit == 0;
  /* Under topo, a few copies (a unicast send) are handed over while topo
   * still holds the plan, as long as none has to wait: no plan reference
   * is taken and dropped then.  A copy that would wait, and the copies of a
   * wider send, go on after the lock, the plan held by a reference.  The
   * owner's sends hold the plan by the sender's reference. */
  if (locked) {
    if (n <= PUT_UNDER_TOPO) {
      for (; i < n; i++) {
        int r = hy__receiver_put(picked[i], ev, deadline,
                                 nonblock ? HY__PUT_NONBLOCK : HY__PUT_TRY,
                                 &dropped, &wk);
        if (r == HY_EAGAIN)
          break;
        delivered += r;
      }
    }
    if (i < n) {
      atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
      plan = p;
    }
  }
  int free_picked = picked != p->r && picked != small;
  if (locked)
    hy__unlock(&st->topo);
  for (int k = i; k < n && k < i + HY__PREFETCH_AHEAD; k++)
    hy__receiver_prefetch(picked[k]);
  for (; i < n; i++) {
    if (i + HY__PREFETCH_AHEAD < n)
      hy__receiver_prefetch(picked[i + HY__PREFETCH_AHEAD]);
    int r = hy__receiver_put(picked[i], ev, deadline,
                             nonblock ? HY__PUT_NONBLOCK : HY__PUT_BLOCK,
                             &dropped, &wk);
    if (r == PUT_EXPIRED) {
      count(&c->expired, 1);
      break;
    }
    if (r < 0) {
      rc = r;
      break;
    }
    delivered += r;
  }
  int woke = wk.n;
  if (woke)
    hy__wakes_flush(&wk);
  /* A limited channel's reader just woken runs on this worker at once,
   * rather than waiting for another worker to wake up and steal it: it then
   * drains the run queued for it while the sender goes on.  (A task sender
   * only, and never for the runtime's own publications.  A broadcast
   * wakes many readers: other workers are worth waking for those.) */
  if (woke && c->limit && !nonblock && hy__in_task(st->rt))
    hy_yield(st->rt);
  if (n - delivered) {
    atomic_fetch_sub_explicit(&ev->refs, n - delivered, memory_order_relaxed);
    atomic_fetch_sub_explicit(&ev->picks, (unsigned)(n - delivered),
                              memory_order_relaxed);
  }
  count(&c->undelivered, (uint64_t)(n - delivered));
  count(&c->dropped, dropped);
  if (free_picked)
    hy__mem_free(picked);
  if (plan) /* else none taken */
    hy__plan_release(plan);
  return rc < 0 ? rc : delivered;
}
