/* event_recv.c - receivers: the bounded queue with its overflow policy,
 * reading with a deadline (tasks and foreign threads), the select arm.
 *
 * Wakes are batched by construction: a sender claims a parked reader only
 * when the queue is empty (it hands the event straight to it); while a
 * reader runs, arrivals just queue up and the reader takes them without
 * anyone being woken.  A blocked sender is woken when a reader frees a
 * slot; it then retries (and re-checks expiry and closing).
 */
#include <string.h>

#include "channels/event_internal.h"

void hy__receiver_release(hy_receiver_t *r) {
  if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (uint32_t i = 0; i < r->n; i++)
    hy_event_unref(r->ring[(r->head + i) % r->cap]);
  hy__mem_free(r->ring);
  hy__mem_free(r);
}

/* Under r->lock: a slot was freed, let one blocked sender retry. */
static void wake_sender(hy_receiver_t *r) {
  hy__waiter *w = hy__waitq_claim(&r->senders);
  if (w) {
    w->wait->result = 0;
    hy__wait_wake_home(w->wait);
  }
}

/* Under r->lock. */
static hy_event_t *pop(hy_receiver_t *r) {
  hy_event_t *ev = r->ring[r->head];
  if (++r->head == r->cap)
    r->head = 0;
  r->n--;
  if (r->senders.head)
    wake_sender(r);
  return ev;
}

/* Under r->lock, after a put that found room: room that is left goes on
 * to the next blocked sender.  A sender woken for room may use none of it
 * (it hands its event straight to a reader that waits on the empty queue),
 * and no pop would then come to wake the next one: it would sleep beside
 * an empty queue. */
static void pass_room(hy_receiver_t *r) {
  if (r->senders.head && r->n < r->cap)
    wake_sender(r);
}

static void push(hy_receiver_t *r, hy_event_t *ev) {
  uint32_t at = r->head + r->n; /* no division: head, n < cap */
  if (at >= r->cap)
    at -= r->cap;
  r->ring[at] = ev;
  r->n++;
}

void hy__wakes_flush(hy__wakes *k) {
  for (int i = 0; i < k->n; i++)
    if (k->home)
      hy__wait_wake_home(k->w[i]);
    else
      hy__wait_wake(k->w[i]);
  k->n = 0;
}

int hy__receiver_put_locked(hy_receiver_t *r, hy_event_t *ev,
                            hy_time_t deadline, int mode, uint64_t *dropped,
                            hy__wakes *wk) {
  for (int waited = 0;; waited = 1) {
    /* Expiry is checked before every forward, also after waiting. */
    if (waited) {
      if (ev->expiry != HY_FOREVER && hy_event_expired(ev, hy_now()))
        return 2;
      hy__lock(&r->lock);
    }
    if (r->closed) {
      hy__unlock(&r->lock);
      return 0;
    }
    if (r->n == 0 && r->readers.head) {
      hy__waiter *w = hy__waitq_claim(&r->readers);
      if (w) {
        *(hy_event_t **)w->buf = ev;
        w->wait->result = 0;
        r->received++;
        pass_room(r);
        hy__unlock(&r->lock);
        if (wk && wk->n < (int)(sizeof wk->w / sizeof wk->w[0]))
          wk->w[wk->n++] = w->wait;
        else if (wk && wk->home)
          hy__wait_wake_home(w->wait);
        else
          hy__wait_wake(w->wait);
        return 1;
      }
    }
    if (r->n < r->cap) {
      push(r, ev);
      r->received++;
      pass_room(r);
      hy__unlock(&r->lock);
      return 1;
    }
    if (mode == HY__PUT_TRY && r->policy != HY_OVERFLOW_DROP_NEWEST) {
      hy__unlock(&r->lock);
      return HY_EAGAIN;
    }
    hy_event_t *old = NULL;
    if (r->policy == HY_OVERFLOW_DROP_OLDEST) {
      old = r->ring[r->head];
      if (++r->head == r->cap)
        r->head = 0;
      r->n--;
      push(r, ev);
      r->received++;
      r->dropped++;
      hy__unlock(&r->lock);
      hy_event_unref(old);
      (*dropped)++;
      return 1;
    }
    if (r->policy == HY_OVERFLOW_DROP_NEWEST || mode == HY__PUT_NONBLOCK) {
      r->dropped++;
      hy__unlock(&r->lock);
      (*dropped)++;
      return 0;
    }
    /* Block: wait for room, then try again - after waking the readers
     * served so far, one of which may be the one to make room. */
    hy__unlock(&r->lock);
    if (wk)
      hy__wakes_flush(wk);
    if (deadline != HY_FOREVER && deadline <= hy_now())
      return HY_ETIMEDOUT;
    hy__wait wt;
    int rc = hy__wait_init(&wt, r->st->rt);
    if (rc < 0)
      return rc;
    hy__waiter me;
    memset(&me, 0, sizeof me);
    me.wait = &wt;
    hy__lock(&r->lock);
    if (r->closed || r->n < r->cap) {
      /* Changed meanwhile: no need to sleep.  Claim our own wait so that
       * no one else can, then retry. */
      hy__unlock(&r->lock);
      if (!hy__wait_claim(&wt, 0))
        hy__wait_park(&wt, HY_FOREVER);
      hy__wait_fini(&wt);
      continue;
    }
    hy__waitq_push(&r->senders, &me);
    hy__unlock(&r->lock);
    hy__wait_park(&wt, deadline);
    hy__lock(&r->lock);
    hy__waitq_remove(&r->senders, &me);
    int claimed_ok = atomic_load(&wt.state) >= 0;
    /* A wake we did not use (time-out lost the race) goes to the next. */
    if (!claimed_ok && r->n < r->cap && r->senders.head)
      wake_sender(r);
    hy__unlock(&r->lock);
    rc = hy__wait_rc(&wt);
    hy__wait_fini(&wt);
    if (rc < 0)
      return rc;
  }
}

void hy__receiver_close(hy_receiver_t *r) {
  hy__lock(&r->lock);
  r->closed = 1;
  hy__waitq_wake_all(&r->readers, HY_ECLOSED);
  hy__waitq_wake_all(&r->senders, 0);
  hy__unlock(&r->lock);
}

/* --------------------------------------------------------------- reading */

int hy_receiver_try_read(hy_receiver_t *r, hy_event_t **ev) {
  if (!r || !ev)
    return HY_EINVAL;
  hy__lock(&r->lock);
  int rc = HY_EAGAIN;
  if (r->n) {
    *ev = pop(r);
    rc = 0;
  } else if (r->closed) {
    rc = HY_ECLOSED;
  }
  hy__unlock(&r->lock);
  return rc;
}

/* Under r->lock: takes up to max queued events; how many. */
static int pop_many(hy_receiver_t *r, hy_event_t **evs, int max) {
  int n = 0;
  uint32_t head = r->head;
  while (n < max && r->n) {
    evs[n++] = r->ring[head];
    if (++head == r->cap)
      head = 0;
    r->n--;
  }
  r->head = head;
  /* A blocked sender per slot freed, once they are all free (still under
   * the lock, as each pop would). */
  for (int i = 0; i < n && r->senders.head; i++)
    wake_sender(r);
  return n;
}

/* Reads up to max events (at least one), waiting until deadline for the
 * first.  Each look takes everything that is queued, up to max, under one
 * lock hold; a reader that must block parks on its task's quiet wait (no
 * task lock taken to set it up), and one that was handed an event takes
 * what queued up behind it as well. */
static int read_some(hy_receiver_t *r, hy_event_t **evs, int max,
                     hy_time_t deadline) {
  hy__lock(&r->lock);
  int n = pop_many(r, evs, max);
  int closed = r->closed;
  hy__unlock(&r->lock);
  if (n)
    return n;
  if (closed)
    return HY_ECLOSED;
  if (deadline != HY_FOREVER && deadline <= hy_now())
    return HY_ETIMEDOUT;
  hy_runtime_t *rt = r->st->rt;
  /* Let a sender on this worker run first: events it sends meanwhile are
   * taken without a park and a wake. */
  if (hy__in_task(rt))
    hy_yield(rt);
  hy__wait own, *w;
  int rc = hy__wait_init_quiet(&w, &own, rt);
  if (rc < 0)
    return rc;
  hy__lock(&r->lock);
  if (r->n || r->closed) {
    n = pop_many(r, evs, max);
    hy__unlock(&r->lock);
    hy__wait_fini_quiet(w, &own);
    return n ? n : HY_ECLOSED;
  }
  if (hy__wait_open_single(w, deadline)) {
    /* A cancel came before the wait could be seen: nothing queued. */
    hy__unlock(&r->lock);
    hy__wait_fini_quiet(w, &own);
    return HY_ECANCELED;
  }
  hy__waiter me;
  memset(&me, 0, sizeof me);
  me.wait = w;
  me.buf = evs;
  hy__waitq_push(&r->readers, &me);
  /* A reader in progress keeps r alive across an unsubscribe. */
  atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
  hy__unlock(&r->lock);
  hy__wait_what(w, "event-recv");
  if (hy__wait_park(w, deadline) < 0) {
    /* A time-out or a cancel: still queued. */
    hy__lock(&r->lock);
    hy__waitq_remove(&r->readers, &me);
    hy__unlock(&r->lock);
  } /* else claimed by a put or a close, which unlinked it */
  rc = hy__wait_rc(w);
  hy__wait_fini_quiet(w, &own);
  hy__receiver_release(r);
  if (rc < 0)
    return rc;
  /* Handed one event: what queued up behind it comes along. */
  n = 1;
  if (max > 1) {
    hy__lock(&r->lock);
    n += pop_many(r, evs + 1, max - 1);
    hy__unlock(&r->lock);
  }
  return n;
}

int hy_receiver_read(hy_receiver_t *r, hy_event_t **ev, hy_time_t deadline) {
  if (!r || !ev)
    return HY_EINVAL;
  *ev = NULL;
  int rc = read_some(r, ev, 1, deadline);
  return rc < 0 ? rc : 0;
}

int hy_receiver_read_many(hy_receiver_t *r, hy_event_t **evs, int max,
                          hy_time_t deadline) {
  if (!r || !evs || max <= 0)
    return HY_EINVAL;
  return read_some(r, evs, max, deadline);
}

int hy_receiver_stats(hy_receiver_t *r, hy_recv_stats_t *s) {
  if (!r || !s || s->size < sizeof *s)
    return HY_EINVAL;
  hy__lock(&r->lock);
  s->received = r->received;
  s->dropped = r->dropped;
  s->queued = r->n;
  s->capacity = r->cap;
  s->overflow = r->policy;
  s->closed = r->closed;
  s->readers = 0;
  for (hy__waiter *w = r->readers.head; w; w = w->next)
    s->readers++;
  hy__unlock(&r->lock);
  return 0;
}

int64_t hy_receiver_priority(const hy_receiver_t *r) {
  return r ? atomic_load(&((hy_receiver_t *)r)->prio) : 0;
}

/* ----------------------------------------------------------- select arm */

HY__WAITQ_ARM_OPS(arm, hy_receiver_t, lock, readers)

static int arm_try(void *obj, hy_arm_t *arm, int *result) {
  hy_receiver_t *r = obj;
  if (r->n) {
    *(hy_event_t **)arm->buf = pop(r);
    *result = 0;
    return 1;
  }
  if (r->closed) {
    *result = HY_ECLOSED;
    return 1;
  }
  return 0;
}

static const struct hy_awaitable recv_awaitable = {
    "event-recv", arm_lock, arm_try, arm_enqueue, arm_dequeue};

hy_arm_t hy_arm_receiver(hy_receiver_t *r, hy_event_t **out) {
  return hy__arm_make(&recv_awaitable, HY_ARM_OBJECT, r, out, r && out);
}
