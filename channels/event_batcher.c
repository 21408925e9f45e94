/* event_batcher.c - a batcher: collects fed events and sends them as one
 * batch event after `count` events or `max_wait` after the first one.
 *
 * A flusher task per batcher sleeps until the oldest held event's time is
 * up (or forever when it holds nothing); feeding the first event of a
 * batch wakes it to arm that deadline.  When the runtime starts shutting
 * down, every batcher's flusher is woken to send what it holds; when the
 * flusher is cancelled (the cancel phase) it flushes once more and ends.
 * A full batch is sent by the feeder itself, so back-pressure (a "block"
 * receiver) reaches the one who feeds.
 *
 * A task gets its stack when it first runs, so a flusher may end without
 * running (no memory for one then), and a batch would wait for its count
 * however long that took.  Until the flusher has run, feeding the first
 * event of a batch looks: a flusher that ended so is replaced, and if no
 * other can be spawned the batch is sent at once (see flusher_check).
 */
#include <string.h>

#include "channels/event_internal.h"
#include "runtime/internal.h"

struct hy_batcher {
  hy__evstate *st;
  hy_sender_t *s;
  int count;
  int64_t max_wait;
  hy__lock_t lock;
  hy_event_t **v; /* count slots */
  int n;
  hy_time_t first; /* when v[0] was fed */
  int stop;        /* hy_batcher_free: the flusher ends */
  int flush_now;   /* shutdown began: send what is held */
  int ended;       /* the flusher returned */
  int started;     /* the flusher has run */
  hy__waitq q;     /* the flusher, parked */
  hy_task_t task;
  struct hy_batcher *next, *prev;
};

/* Under b->lock. */
static void poke(hy_batcher_t *b) {
  hy__waiter *w = hy__waitq_claim(&b->q);
  if (w) {
    w->wait->result = 0;
    hy__wait_wake(w->wait);
  }
}

/* Under b->lock: takes the held events as a batch (NULL if none, or on
 * ENOMEM - the events stay then). */
static hy_event_t *take(hy_batcher_t *b) {
  if (!b->n)
    return NULL;
  hy_event_t *batch;
  if (hy_event_batch_new(b->v, (size_t)b->n, &batch) < 0)
    return NULL;
  for (int i = 0; i < b->n; i++)
    hy_event_unref(b->v[i]);
  b->n = 0;
  return batch;
}

static int send_batch(hy_batcher_t *b, hy_event_t *batch, hy_time_t deadline,
                      int nonblock) {
  if (!batch)
    return 0;
  int rc = hy__sender_send(b->s, batch, deadline, nonblock);
  hy_event_unref(batch);
  return rc;
}

static void *flusher(void *arg) {
  hy_batcher_t *b = arg;
  hy__lock(&b->lock);
  b->started = 1;
  hy__unlock(&b->lock);
  for (;;) {
    hy__lock(&b->lock);
    hy_time_t deadline = b->n ? b->first + b->max_wait : HY_FOREVER;
    if (b->n && (b->flush_now || deadline <= hy_now())) {
      b->flush_now = 0;
      hy_event_t *batch = take(b);
      hy__unlock(&b->lock);
      send_batch(b, batch, HY_FOREVER, 0);
      continue;
    }
    b->flush_now = 0;
    if (b->stop) {
      hy__unlock(&b->lock);
      break;
    }
    hy__unlock(&b->lock);
    hy__wait wt;
    int rc = hy__wait_init(&wt, b->st->rt);
    if (rc == 0) {
      hy__waiter me;
      memset(&me, 0, sizeof me);
      me.wait = &wt;
      hy__lock(&b->lock);
      int changed = b->stop || b->flush_now ||
                    (b->n ? b->first + b->max_wait : HY_FOREVER) != deadline;
      if (changed) {
        hy__unlock(&b->lock);
        if (!hy__wait_claim(&wt, 0))
          hy__wait_park(&wt, HY_FOREVER);
      } else {
        hy__waitq_push(&b->q, &me);
        hy__unlock(&b->lock);
        hy__wait_park(&wt, deadline);
        hy__lock(&b->lock);
        hy__waitq_remove(&b->q, &me);
        hy__unlock(&b->lock);
      }
      rc = hy__wait_rc(&wt);
      hy__wait_fini(&wt);
    }
    if (rc == HY_ECANCELED) {
      /* The runtime is cancelling its tasks: a last flush, and out. */
      hy__lock(&b->lock);
      hy_event_t *batch = take(b);
      hy__unlock(&b->lock);
      send_batch(b, batch, HY_FOREVER, 1);
      break;
    }
  }
  hy__lock(&b->lock);
  b->ended = 1;
  hy__unlock(&b->lock);
  return NULL;
}

int hy_batcher_new(hy_runtime_t *rt, hy_sender_t *s, int count,
                   int64_t max_wait, hy_batcher_t **out) {
  if (!out)
    return HY_EINVAL;
  *out = NULL;
  if (!rt || !s || count <= 0 || max_wait <= 0)
    return HY_EINVAL;
  hy__evstate *st = hy__evstate_get(rt);
  if (!st)
    return HY_ENOMEM;
  hy_batcher_t *b = hy__mem_calloc(1, sizeof *b);
  if (!b)
    return HY_ENOMEM;
  b->v = hy__mem_alloc((size_t)count * sizeof *b->v);
  if (!b->v) {
    hy__mem_free(b);
    return HY_ENOMEM;
  }
  b->st = st;
  b->s = s;
  b->count = count;
  b->max_wait = max_wait;
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.name = "batcher";
  int rc = hy_task_spawn(rt, flusher, b, &o, &b->task);
  if (rc < 0) {
    hy__mem_free(b->v);
    hy__mem_free(b);
    return rc;
  }
  hy__lock(&st->batch_lock);
  b->next = st->batchers;
  if (b->next)
    b->next->prev = b;
  st->batchers = b;
  hy__unlock(&st->batch_lock);
  *out = b;
  return 0;
}

/* The flusher of b never ran (see the top): spawns another.  Returns 1 if
 * none could be, so the caller sends what is held now. */
static int flusher_check(hy_batcher_t *b) {
  hy_runtime_t *rt = b->st->rt;
  hy__lock(&b->lock);
  hy_task_t t = b->task;
  hy__unlock(&b->lock);
  if (hy__task_reap_unrun(rt, t) != 1)
    return 0;
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.name = "batcher";
  int rc = hy_task_spawn(rt, flusher, b, &o, &t);
  hy__lock(&b->lock);
  if (rc == 0)
    b->task = t;
  else
    b->ended = 1; /* none: hy_batcher_free joins nothing */
  hy__unlock(&b->lock);
  return rc < 0;
}

int hy_batcher_feed(hy_batcher_t *b, hy_event_t *ev, hy_time_t deadline) {
  if (!b || !ev)
    return HY_EINVAL;
  hy__lock(&b->lock);
  if (b->n == b->count) { /* the last batch could not be made */
    hy_event_t *batch = take(b);
    if (!batch) {
      hy__unlock(&b->lock);
      return HY_ENOMEM;
    }
    hy__unlock(&b->lock);
    int rc = send_batch(b, batch, deadline, 0);
    if (rc < 0)
      return rc;
    hy__lock(&b->lock);
    if (b->n == b->count) {
      hy__unlock(&b->lock);
      return HY_EAGAIN;
    }
  }
  b->v[b->n++] = hy_event_ref(ev);
  int check = 0;
  if (b->n == 1) {
    b->first = hy_now();
    poke(b);
    check = !b->started && !b->ended;
  }
  int no_flusher = b->ended && !b->started;
  hy_event_t *batch = b->n >= b->count || no_flusher ? take(b) : NULL;
  hy__unlock(&b->lock);
  if (!batch && check && flusher_check(b)) {
    hy__lock(&b->lock);
    batch = take(b);
    hy__unlock(&b->lock);
  }
  int rc = send_batch(b, batch, deadline, 0);
  return rc < 0 ? rc : 0;
}

int hy_batcher_flush(hy_batcher_t *b, hy_time_t deadline) {
  if (!b)
    return HY_EINVAL;
  hy__lock(&b->lock);
  hy_event_t *batch = take(b);
  hy__unlock(&b->lock);
  return send_batch(b, batch, deadline, 0);
}

void hy_batcher_free(hy_batcher_t *b) {
  if (!b)
    return;
  hy__evstate *st = b->st;
  hy__lock(&st->batch_lock);
  if (b->prev)
    b->prev->next = b->next;
  else
    st->batchers = b->next;
  if (b->next)
    b->next->prev = b->prev;
  hy__unlock(&st->batch_lock);
  hy__lock(&b->lock);
  b->stop = 1;
  poke(b);
  hy_task_t t = b->task;
  hy__unlock(&b->lock);
  hy_task_join(st->rt, t, NULL);
  hy_batcher_flush(b, HY_FOREVER);
  hy__mem_free(b->v);
  hy__mem_free(b);
}

void hy__batchers_shutdown(hy__evstate *st) {
  hy__lock(&st->batch_lock);
  for (hy_batcher_t *b = st->batchers; b; b = b->next) {
    hy__lock(&b->lock);
    b->flush_now = 1;
    poke(b);
    hy__unlock(&b->lock);
  }
  hy__unlock(&st->batch_lock);
}
