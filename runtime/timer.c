/* timer.c - per-worker timers: a 4-ary min-heap of deadlines.
 *
 * Insert and remove are O(log4 n); the earliest deadline is at v[0], so the
 * worker's next port timeout is O(1) to find, and a tick costs nothing
 * beyond the timers that expire.  Memory is one pointer per pending timer
 * plus the hy__timer itself, which lives in the task.  A 4-ary heap beats a
 * binary one on cache misses (children share a line) and a hashed wheel on
 * simplicity and on exact ordering; a wheel's O(1) insert would matter only
 * past millions of timers per worker.
 *
 * A timer fires by claiming its wait as HY__FIRED_TIMEOUT under the heap's
 * lock; the owner task removes its timer under the same lock after it
 * wakes, so a timer never fires into a wait that is gone.  Timers fire only
 * when now >= deadline: never early.
 *
 * Arming a timer cannot fail: when the heap cannot grow (out of memory),
 * the timer waits in the worker's spill list instead, an unsorted list
 * linked through the timers themselves, which the worker looks through
 * while it is not empty.  A wait with a deadline thus neither ends early
 * nor sleeps forever for want of a heap slot.
 */
#include "runtime/internal.h"

static void place(hy__heap *h, int i, hy__timer *t) {
  h->v[i] = t;
  t->idx = i;
}

static void sift_up(hy__heap *h, int i) {
  hy__timer *t = h->v[i];
  while (i > 0) {
    int p = (i - 1) / 4;
    if (h->v[p]->deadline <= t->deadline)
      break;
    place(h, i, h->v[p]);
    i = p;
  }
  place(h, i, t);
}

static void sift_down(hy__heap *h, int i) {
  hy__timer *t = h->v[i];
  for (;;) {
    int c = 4 * i + 1;
    if (c >= h->n)
      break;
    int best = c;
    int end = c + 4 < h->n ? c + 4 : h->n;
    for (int k = c + 1; k < end; k++)
      if (h->v[k]->deadline < h->v[best]->deadline)
        best = k;
    if (h->v[best]->deadline >= t->deadline)
      break;
    place(h, i, h->v[best]);
    i = best;
  }
  place(h, i, t);
}

int hy__heap_push(hy__heap *h, hy__timer *t) {
  if (h->n == h->cap) {
    int cap = h->cap ? h->cap * 2 : 64;
    hy__timer **v = hy__mem_realloc(h->v, (size_t)cap * sizeof *v);
    if (!v)
      return HY_ENOMEM;
    h->v = v;
    h->cap = cap;
  }
  h->v[h->n] = t;
  t->idx = h->n++;
  sift_up(h, t->idx);
  return 0;
}

void hy__heap_remove(hy__heap *h, hy__timer *t) {
  int i = t->idx;
  hy__timer *last = h->v[--h->n];
  t->idx = -1;
  if (i == h->n)
    return;
  place(h, i, last);
  if (i > 0 && h->v[(i - 1) / 4]->deadline > last->deadline)
    sift_up(h, i);
  else
    sift_down(h, i);
}

hy__timer *hy__heap_min(const hy__heap *h) { return h->n ? h->v[0] : NULL; }

void hy__heap_free(hy__heap *h) {
  hy__mem_free(h->v);
  h->v = NULL;
  h->n = h->cap = 0;
}

/* ------------------------------------------------------- spill list */

#define SPILLED -2

/* pre: w->tlock. */
static void spill_add(hy__worker *w, hy__timer *t) {
  t->idx = SPILLED;
  t->sprev = NULL;
  t->snext = w->spill;
  if (w->spill)
    w->spill->sprev = t;
  w->spill = t;
}

/* pre: w->tlock, t->idx == SPILLED. */
static void spill_remove(hy__worker *w, hy__timer *t) {
  if (t->sprev)
    t->sprev->snext = t->snext;
  else
    w->spill = t->snext;
  if (t->snext)
    t->snext->sprev = t->sprev;
  t->snext = t->sprev = NULL;
  t->idx = -1;
}

/* pre: w->tlock.  The earliest deadline in the spill list. */
static int64_t spill_next(const hy__worker *w) {
  int64_t d = HY_FOREVER;
  for (const hy__timer *t = w->spill; t; t = t->snext)
    if (t->deadline < d)
      d = t->deadline;
  return d;
}

/* pre: w->tlock.  The earliest deadline of all of w's timers. */
static int64_t next_locked(const hy__worker *w) {
  hy__timer *t = hy__heap_min(&w->heap);
  int64_t d = t ? t->deadline : HY_FOREVER;
  if (w->spill) {
    int64_t s = spill_next(w);
    if (s < d)
      d = s;
  }
  return d;
}

/* ----------------------------------------------------------- timers */

void hy__timer_arm(hy__worker *w, hy__timer *tm, int64_t deadline,
                   hy__wait *wait) {
  tm->deadline = deadline;
  tm->wait = wait;
  tm->owner = w;
  hy__lock(&w->tlock);
  int first;
  if (hy__heap_push(&w->heap, tm) == 0) {
    first = tm->idx == 0 && (!w->spill || deadline <= spill_next(w));
  } else {
    first = deadline <= next_locked(w);
    spill_add(w, tm);
  }
  hy__unlock(&w->tlock);
  if (first)
    hy__timer_first(w, deadline); /* an idle worker may need to know */
}

void hy__timer_disarm(hy__timer *tm) {
  hy__worker *w = tm->owner;
  if (!w)
    return;
  hy__lock(&w->tlock);
  if (tm->idx >= 0)
    hy__heap_remove(&w->heap, tm);
  else if (tm->idx == SPILLED)
    spill_remove(w, tm);
  hy__unlock(&w->tlock);
  tm->owner = NULL;
}

/* A due timer, taken out of its heap or list: times its wait out.
 * Returns 1 if that woke it, 0 if something else had claimed it. */
static int fire(hy__timer *t) {
  if (!hy__wait_claim(t->wait, HY__FIRED_TIMEOUT))
    return 0;
  hy__wait_wake(t->wait);
  return 1;
}

int hy__timers_fire(hy__worker *w, int64_t now) {
  int n = 0;
  hy__lock(&w->tlock);
  hy__timer *t;
  while ((t = hy__heap_min(&w->heap)) != NULL && t->deadline <= now) {
    hy__heap_remove(&w->heap, t);
    n += fire(t);
  }
  /* Rare (the heap could not grow): a walk over the spill list. */
  hy__timer *next;
  for (t = w->spill; t; t = next) {
    next = t->snext;
    if (t->deadline <= now) {
      spill_remove(w, t);
      n += fire(t);
    }
  }
  /* Counted under the lock: an idle worker may fire another's timers
   * (sched.c). */
  HY__STAT_ADD(w->st.timers_fired, (uint64_t)n);
  hy__unlock(&w->tlock);
  return n;
}

int64_t hy__timers_next(hy__worker *w) {
  hy__lock(&w->tlock);
  int64_t d = next_locked(w);
  hy__unlock(&w->tlock);
  return d;
}
