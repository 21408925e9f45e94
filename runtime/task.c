/* task.c - tasks: spawn, join, detach, cancel, yield, sleep, task-locals,
 * and the generation-counted task table behind hy_task_t handles.
 *
 * Task blocks come from an object cache whose constructor gives each block
 * a slot in the task table for life (Bonwick's constructed state); the
 * destructor gives the slot back when the cache returns the block's memory.
 * A handle is (generation << 32 | slot + 1).  A block's slot generation is
 * bumped when its last reference goes, so every older handle turns stale:
 * operations on it return HY_ESTALE and never touch freed memory.
 *
 * References: the running task holds one until it ends; the handle holds
 * one until join takes the result or detach drops it.  A task spawned
 * without a handle is detached from the start.
 *
 * A task gets its stack when it first runs, not when it is spawned: a
 * million spawned-but-not-started tasks cost a block each, not a stack.
 */
#include <stdio.h>
#include <string.h>

#include "runtime/fiber.h"
#include "runtime/internal.h"

/* ---------------------------------------------------------- task table */

static hy__slot *slot_at(hy_runtime_t *rt, uint32_t idx) {
  hy__slot *chunk = atomic_load_explicit(&rt->slot_chunks[idx / HY__SLOTS_PER_CHUNK],
                                         memory_order_acquire);
  return chunk ? &chunk[idx % HY__SLOTS_PER_CHUNK] : NULL;
}

static int task_ctor(void *obj, void *arg) {
  hy_runtime_t *rt = arg;
  hy__task *t = obj;
  memset(t, 0, sizeof *t);
  hy__lock(&rt->slot_lock);
  uint32_t idx;
  if (rt->nfree_slots) {
    idx = rt->free_slots[--rt->nfree_slots];
  } else {
    idx = rt->slots_used;
    uint32_t c = idx / HY__SLOTS_PER_CHUNK;
    if (c >= HY__SLOT_CHUNKS) {
      hy__unlock(&rt->slot_lock);
      return HY_ENOMEM;
    }
    if (!atomic_load(&rt->slot_chunks[c])) {
      hy__slot *chunk = hy__mem_calloc(HY__SLOTS_PER_CHUNK, sizeof *chunk);
      if (!chunk) {
        hy__unlock(&rt->slot_lock);
        return HY_ENOMEM;
      }
      for (int i = 0; i < HY__SLOTS_PER_CHUNK; i++)
        chunk[i].gen = 1;
      atomic_store_explicit(&rt->slot_chunks[c], chunk, memory_order_release);
    }
    rt->slots_used++;
  }
  hy__slot *s = slot_at(rt, idx);
  hy__lock(&s->lock);
  t->gen = s->gen; /* s->task stays NULL until a spawn publishes it */
  hy__unlock(&s->lock);
  hy__unlock(&rt->slot_lock);
  t->slot = idx;
  t->rt = rt;
  t->timer.idx = -1;
  return 0;
}

static void task_dtor(void *obj, void *arg) {
  hy_runtime_t *rt = arg;
  hy__task *t = obj;
  hy__slot *s = slot_at(rt, t->slot);
  hy__lock(&s->lock);
  atomic_store_explicit(&s->task, NULL, memory_order_relaxed);
  s->gen++;
  hy__unlock(&s->lock);
  hy__lock(&rt->slot_lock);
  if (rt->nfree_slots == rt->free_slots_cap) {
    uint32_t cap = rt->free_slots_cap ? rt->free_slots_cap * 2 : 1024;
    uint32_t *v = hy__mem_realloc(rt->free_slots, cap * sizeof *v);
    if (!v) {
      /* The slot is lost, not reused: harmless beyond its few bytes. */
      hy__unlock(&rt->slot_lock);
      return;
    }
    rt->free_slots = v;
    rt->free_slots_cap = cap;
  }
  rt->free_slots[rt->nfree_slots++] = t->slot;
  hy__unlock(&rt->slot_lock);
}

int hy__task_tables_init(hy_runtime_t *rt) {
  return hy_cache_create("hydra.task", sizeof(hy__task), 64, task_ctor,
                         task_dtor, rt, 0, &rt->task_cache);
}

void hy__task_tables_free(hy_runtime_t *rt) {
  if (rt->task_cache)
    hy_cache_destroy(rt->task_cache);
  rt->task_cache = NULL;
  for (int c = 0; c < HY__SLOT_CHUNKS; c++) {
    hy__slot *chunk = atomic_load(&rt->slot_chunks[c]);
    if (!chunk)
      break;
    hy__mem_free(chunk);
    atomic_store(&rt->slot_chunks[c], NULL);
  }
  hy__mem_free(rt->free_slots);
  rt->free_slots = NULL;
}

static hy_task_t handle_of(const hy__task *t) {
  hy_task_t h = {((uint64_t)t->gen << 32) | (uint64_t)(t->slot + 1)};
  return h;
}

/* Finds the live task of handle h and returns it with t->lock held, or
 * NULL if the handle is stale. */
static hy__task *lookup(hy_runtime_t *rt, hy_task_t h) {
  uint32_t low = (uint32_t)(h.id & 0xffffffffu);
  uint32_t gen = (uint32_t)(h.id >> 32);
  if (low == 0 || low - 1 >= (uint32_t)HY__SLOT_CHUNKS * HY__SLOTS_PER_CHUNK)
    return NULL;
  hy__slot *s = slot_at(rt, low - 1);
  if (!s)
    return NULL;
  for (;;) {
    hy__lock(&s->lock);
    hy__task *t = atomic_load_explicit(&s->task, memory_order_acquire);
    if (!t || s->gen != gen) {
      hy__unlock(&s->lock);
      return NULL;
    }
    if (hy__trylock(&t->lock)) {
      /* Checked before the slot lock goes: with no reference left, a
       * release may be on its way, and it frees the block once it has the
       * slot lock - which it must not get while this still touches t. */
      if (t->refs == 0 || t->gen != gen) {
        hy__unlock(&t->lock);
        hy__unlock(&s->lock);
        return NULL;
      }
      hy__unlock(&s->lock); /* t->refs > 0 cannot drop while t->lock is held */
      return t;
    }
    hy__unlock(&s->lock);
    hy__thread_yield();
  }
}

/* The last reference is gone: stale every handle, give the block back. */
static void release(hy__task *t) {
  hy_runtime_t *rt = t->rt;
  hy__slot *s = slot_at(rt, t->slot);
  hy__lock(&s->lock);
  s->gen++;
  if (s->gen == 0)
    s->gen = 1;
  t->gen = s->gen; /* the block keeps its slot: its next life's generation */
  /* A free block is not to be read (ASan poisons it). */
  atomic_store_explicit(&s->task, NULL, memory_order_relaxed);
  hy__unlock(&s->lock);
  hy_cache_free(rt->task_cache, t);
}

/* Under t->lock, which it unlocks: a handle's reference goes (joined or
 * detached); the last one frees the block. */
static void drop_ref(hy__task *t) {
  int last = --t->refs == 0 && !t->pinned;
  hy__unlock(&t->lock);
  if (last)
    release(t);
}

/* At close every task has ended, but a handle nobody joined or detached
 * still holds its block: give those back so that close frees everything.
 * Only live blocks are looked at: a slot's task is NULL while its block is
 * free in the cache. */
void hy__task_release_handles(hy_runtime_t *rt) {
  for (uint32_t i = 0; i < rt->slots_used; i++) {
    hy__slot *s = slot_at(rt, i);
    hy__task *t = s ? atomic_load(&s->task) : NULL; /* NULL: in the cache */
    if (t && t->state == HY__T_DONE && t->refs > 0)
      release(t);
  }
}

/* -------------------------------------------------------------- spawn */

/* The stack cache for a task that asks for `size` bytes of stack (0: the
 * runtime's default, *out NULL).  A size of its own is rounded up to a
 * power of two from 16 KiB: one cache per class, made on first use and
 * kept until the runtime closes, so that tasks of one size reuse each
 * other's stacks; a size the default covers as well (at most it, and
 * rounded up to at least it) takes the default's.  Returns 0, HY_EINVAL
 * (over 256 MiB) or HY_ENOMEM. */
static int stack_class(hy_runtime_t *rt, size_t size, hy_stack_cache_t **out) {
  *out = NULL;
  size_t def = rt->opt.stack_size;
  if (size == 0 || size == def)
    return 0;
  int lg = HY__XSTACK_MIN_LOG2;
  while (lg < HY__XSTACK_MIN_LOG2 + HY__XSTACK_CLASSES - 1 &&
         ((size_t)1 << lg) < size)
    lg++;
  size_t cls = (size_t)1 << lg;
  if (cls < size)
    return HY_EINVAL;
  if (size <= def && cls >= def)
    return 0;
  _Atomic(hy_stack_cache_t *) *slot = &rt->xstacks[lg - HY__XSTACK_MIN_LOG2];
  hy_stack_cache_t *c = atomic_load_explicit(slot, memory_order_acquire);
  if (!c) {
    /* Cached free stacks: up to 64 MiB of them (4 at least). */
    size_t keep = ((size_t)64 << 20) / cls;
    int rc = hy_stack_cache_create(cls, keep < 4 ? 4 : keep, &c);
    if (rc < 0)
      return rc;
    hy_stack_cache_t *none = NULL;
    if (!atomic_compare_exchange_strong(slot, &none, c)) {
      hy_stack_cache_destroy(c); /* another spawn made it first */
      c = none;
    }
  }
  *out = c;
  return 0;
}

/* quiesce: a worker outside a task may spawn while the runtime quiesces
 * (hy__task_spawn_quiesce). */
static int spawn(hy_runtime_t *rt, hy_task_fn fn, void *arg,
                 const hy_task_opts_t *o, hy_task_t *out, int quiesce) {
  if (!rt || !fn)
    return HY_EINVAL;
  hy_stack_cache_t *scache;
  int rc = stack_class(
      rt, (o && o->size >= sizeof *o) ? o->stack_size : 0, &scache);
  if (rc < 0)
    return rc;
  int phase = atomic_load(&rt->phase);
  hy__task *cur = hy__task_current(rt);
  int inside = cur || (quiesce && phase == HY__PH_QUIESCE &&
                       hy__worker_current(rt));
  if (phase >= HY__PH_FINALIZE || (phase != HY__PH_RUNNING && !inside))
    return HY_ESHUTDOWN;
  hy__task *t = hy_cache_alloc(rt->task_cache);
  if (!t)
    return HY_ENOMEM;
  t->next = NULL;
  t->fn = fn;
  t->arg = arg;
  t->result = NULL;
  t->stack.base = NULL;
  t->stack.size = 0;
  t->scache = scache;
  const char *name = (o && o->name) ? o->name : "task";
  size_t k = 0; /* what snprintf would do, without its cost on this path */
  for (; k < sizeof t->name - 1 && name[k]; k++)
    t->name[k] = name[k];
  t->name[k] = 0;
  atomic_store_explicit(&t->wstate, HY__RUNNING, memory_order_relaxed);
  atomic_store_explicit(&t->started, 0, memory_order_relaxed);
  t->state = HY__T_NEW;
  t->detached = out == NULL;
  t->joined = 0;
  t->joining = 0;
  t->refs = out ? 2 : 1;
  t->pinned = 0;
  t->joiners.head = t->joiners.tail = NULL;
  t->armq.head = t->armq.tail = NULL;
  atomic_store_explicit(&t->over, 0, memory_order_relaxed);
  atomic_store_explicit(&t->armed, 0, memory_order_relaxed);
  t->cur_wait = NULL;
  atomic_store_explicit(&t->qwait.state, HY__QUIET, memory_order_relaxed);
  t->qwait.task = t;
  t->qwait.rt = rt;
  t->qwait.one_ok = !rt->park_fence; /* hy__wait_open_single */
  atomic_store_explicit(&t->cancelled, phase >= HY__PH_CANCEL,
                        memory_order_relaxed); /* published by the locks below */
  atomic_store_explicit(&t->qwait.cancel, phase >= HY__PH_CANCEL,
                        memory_order_relaxed);
  atomic_store_explicit(&t->await_what, NULL, memory_order_relaxed);
  t->timer.idx = -1;
  t->timer.owner = NULL;
  memset(t->locals, 0, sizeof t->locals);
  t->error = 0;

  /* Live again (release cleared it): handles and hy__task_each see the
   * block from now on, initialised (the release store publishes it; they
   * read it under the slot lock, which spawn needs not take: nobody else
   * writes s->task of a block that is not live, and the generation, which
   * a lookup compares first, was set by release). */
  atomic_store_explicit(&slot_at(rt, t->slot)->task, t, memory_order_release);
  hy__worker *w = hy__worker_current(rt);
  if (w) {
    HY__STAT_INC(w->st.spawned);
    if (phase != HY__PH_RUNNING)
      w->last_activity = hy_now();
  } else {
    atomic_fetch_add_explicit(&rt->spawned_outside, 1, memory_order_relaxed);
  }

  if (out)
    *out = handle_of(t);
  hy__task_ready(rt, t, 1);
  return 0;
}

int hy_task_spawn(hy_runtime_t *rt, hy_task_fn fn, void *arg,
                  const hy_task_opts_t *o, hy_task_t *out) {
  return spawn(rt, fn, arg, o, out, 0);
}

int hy__task_spawn_quiesce(hy_runtime_t *rt, hy_task_fn fn, void *arg,
                           const hy_task_opts_t *o, hy_task_t *out) {
  return spawn(rt, fn, arg, o, out, 1);
}

/* Live tasks are counted without a shared counter (two bus-locked
 * operations per task): each worker counts the tasks spawned on it
 * (st.spawned; rt->spawned_outside for other threads) and the tasks ended
 * on it (st.ended), each written by its owner alone.  A task's spawn
 * happens before its end (through the run queue), and the ends are read
 * first (acquire, pairing with the release store at the end): every end
 * read has its spawn counted, so the difference never falls below the
 * true count at the time of the first read, and 0 means none is left. */
long hy__alive(hy_runtime_t *rt) {
  int n = rt->nworkers ? rt->nworkers : 1;
  uint64_t ended = 0, spawned = 0;
  for (int i = 0; i < n; i++)
    ended += atomic_load(&rt->workers[i].st.ended);
  for (int i = 0; i < n; i++)
    spawned += atomic_load(&rt->workers[i].st.spawned);
  spawned += atomic_load(&rt->spawned_outside);
  return (long)(spawned - ended);
}

static void arms_fire(hy__task *t);

/* The end of a task that others see: the alive count drops and its
 * joiners get the result.  Runs on the task's own stack
 * just before it switches away for good (so that a woken joiner can be
 * the very next task to run on this worker, without a detour through the
 * scheduler), or on the scheduler's for a task that never ran.  The
 * task's own reference goes, but a pin keeps its block, which outlives
 * its stack: hy__task_finish gives both back once nothing runs on it. */
void hy__task_end(hy__worker *w, hy__task *t) {
  hy_runtime_t *rt = t->rt;
  if (atomic_load(&t->cancelled))
    HY__STAT_INC(w->st.cancelled);
  /* Counted as ended before its joiners return (a joiner may close the
   * runtime next, which asks whether tasks are alive). */
  atomic_store_explicit(
      &w->st.ended,
      atomic_load_explicit(&w->st.ended, memory_order_relaxed) + 1,
      memory_order_release);
  /* Shutting down: the last task gone, every worker re-checks.  A worker
   * that still reads RUNNING has not passed the QUIESCE barrier yet, which
   * orders this end before every later look at the count.  Two enders at
   * once: the fences make one of them see both ends. */
  if (atomic_load_explicit(&rt->phase, memory_order_relaxed) !=
      HY__PH_RUNNING) {
    atomic_thread_fence(memory_order_seq_cst);
    if (hy__alive(rt) == 0)
      for (int i = 0; i < (rt->nworkers ? rt->nworkers : 1); i++)
        hy__port_wake(rt->workers[i].port);
  }

  hy__lock(&t->lock);
  t->state = HY__T_DONE;
  /* The running task's reference goes now, as far as handles can tell
   * (a joined handle is stale at once); the pin keeps the block until
   * hy__task_finish. */
  t->refs--;
  t->pinned = 1;
  hy__waiter *wr;
  while ((wr = hy__waitq_claim(&t->joiners)) != NULL) {
    if (wr->buf)
      *(void **)wr->buf = t->result;
    wr->wait->result = 0;
    hy__wait_wake(wr->wait);
  }
  hy__unlock(&t->lock);
  arms_fire(t);
}

/* The rest, once the task's stack is left (hy__task_end ran): the exit
 * event, the stack back to its cache, the pin dropped. */
void hy__task_finish(hy__worker *w, hy__task *t) {
  hy_runtime_t *rt = t->rt;
  hy__event_publish_task_exit(rt, handle_of(t).id, t->name,
                              atomic_load(&t->cancelled),
                              t->error == HY_ENOMEM);
  if (t->stack.base) {
    if (t->scache)
      hy_stack_free(t->scache, &t->stack);
    else
      hy__stack_put(w, &t->stack);
    t->stack.base = NULL;
  }
  hy__fiber_task_free(t);
  hy__lock(&t->lock);
  t->pinned = 0;
  int last = t->refs == 0;
  hy__unlock(&t->lock);
  if (last)
    release(t);
}

/* ---------------------------------------------------------- join & co */

int hy_task_join(hy_runtime_t *rt, hy_task_t h, void **result) {
  return hy_task_join_until(rt, h, HY_FOREVER, result);
}

int hy_task_join_until(hy_runtime_t *rt, hy_task_t h, hy_time_t deadline,
                       void **result) {
  if (!rt)
    return HY_EINVAL;
  hy__wait w;
  int rc = hy__wait_init(&w, rt);
  if (rc < 0)
    return rc;
  hy__task *t = lookup(rt, h);
  if (!t) {
    hy__wait_fini(&w);
    return HY_ESTALE;
  }
  if (w.task == t) {
    hy__unlock(&t->lock);
    hy__wait_fini(&w);
    return HY_EDEADLK;
  }
  if (t->detached || t->joining || t->joined) {
    hy__unlock(&t->lock);
    hy__wait_fini(&w);
    return HY_EINVAL;
  }
  if (t->state != HY__T_DONE) {
    hy__waiter wr = {0};
    wr.wait = &w;
    t->joining = 1;
    hy__waitq_push(&t->joiners, &wr);
    hy__wait_what(&w, "join");
    hy__unlock(&t->lock);
    int st = hy__wait_park(&w, deadline);
    hy__lock(&t->lock);
    hy__waitq_remove(&t->joiners, &wr);
    t->joining = 0;
    if (st < 0) {
      hy__unlock(&t->lock);
      hy__wait_fini(&w);
      return st == HY__FIRED_TIMEOUT ? HY_ETIMEDOUT : HY_ECANCELED;
    }
  } else if (!hy__wait_claim(&w, 0)) {
    /* Done already, but a cancel claimed our wait first and its wake is
     * on the way: receive it before the wait goes out of scope. */
    hy__unlock(&t->lock);
    hy__wait_park(&w, HY_FOREVER);
    hy__lock(&t->lock);
  }
  if (result)
    *result = t->result;
  int err = t->error;
  t->joined = 1;
  drop_ref(t);
  hy__wait_fini(&w);
  return err;
}

int hy__task_reap_unrun(hy_runtime_t *rt, hy_task_t h) {
  hy__task *t = lookup(rt, h);
  if (!t)
    return HY_ESTALE;
  if (t->state != HY__T_DONE || t->error != HY_ENOMEM ||
      atomic_load_explicit(&t->started, memory_order_relaxed) ||
      t->detached || t->joining || t->joined) {
    hy__unlock(&t->lock);
    return 0;
  }
  t->joined = 1;
  drop_ref(t);
  return 1;
}

int hy_task_detach(hy_runtime_t *rt, hy_task_t h) {
  hy__task *t = rt ? lookup(rt, h) : NULL;
  if (!t)
    return HY_ESTALE;
  if (t->detached || t->joined || t->joining) {
    hy__unlock(&t->lock);
    return HY_EINVAL;
  }
  t->detached = 1;
  drop_ref(t);
  return 0;
}

/* pre: t->lock held.  Claims the wait t is parked on (its quiet wait or
 * the one in cur_wait), if any.  Returns 1 if nothing was claimed and t's
 * quiet wait may yet be opened by a park that did not see the flag (see
 * below): then a process-wide barrier and cancel_quiet_again must follow. */
static int cancel_locked_nobarrier(hy__task *t) {
  if (atomic_exchange(&t->cancelled, 1))
    return 0;
  /* The flag's mirror for an object claiming t's quiet wait (see
   * hy__wait_open_single): set before the fence and the barrier. */
  atomic_store_explicit(&t->qwait.cancel, 1, memory_order_relaxed);
  /* Pairs with the park's fence, where parks fence (rt->park_fence). */
  atomic_thread_fence(memory_order_seq_cst);
  if (hy__wait_claim(&t->qwait, HY__FIRED_CANCEL)) {
    hy__wait_wake(&t->qwait);
    return 0;
  }
  hy__wait *w = t->cur_wait;
  if (w && hy__wait_claim(w, HY__FIRED_CANCEL)) {
    hy__wait_wake(w);
    return 0;
  }
  /* t runs, or is about to park: its quiet wait is claimed only once
   * open, and a park that opened it after our look above checks the flag
   * without a fence of its own (hy__wait_park) - unless parks fence on
   * this system, where that check is enough.  Or t waits on one object
   * (HY__WAITING_ONE), which a cancel claims only after the barrier
   * (hy__wait_claim_cancel). */
  return !t->rt->park_fence;
}

/* After the barrier: either t's park saw the flag (and claims its wait
 * itself), or its wait is open by now and claimed here (unless its one
 * object is claiming it: see hy__wait_open_single). */
static void cancel_quiet_again(hy__task *t) {
  if (hy__wait_claim_cancel(&t->qwait))
    hy__wait_wake(&t->qwait);
}

/* pre: t->lock held. */
static void cancel_locked(hy__task *t) {
  if (cancel_locked_nobarrier(t)) {
    hy__heavy_barrier();
    cancel_quiet_again(t);
  }
}

int hy_task_cancel(hy_runtime_t *rt, hy_task_t h) {
  hy__task *t = rt ? lookup(rt, h) : NULL;
  if (!t)
    return HY_ESTALE;
  if (t->state != HY__T_DONE)
    cancel_locked(t);
  hy__unlock(&t->lock);
  return 0;
}

/* There is no list of live tasks (keeping one cost every spawn and every
 * end a global lock): the task table is walked instead, as a handle
 * lookup does, slot by slot. */
void hy__task_each(hy_runtime_t *rt, void (*fn)(hy__task *t, void *arg),
                   void *arg) {
  hy__lock(&rt->slot_lock);
  uint32_t used = rt->slots_used;
  hy__unlock(&rt->slot_lock);
  for (uint32_t i = 0; i < used; i++) {
    hy__slot *s = slot_at(rt, i);
    if (!s)
      continue;
    for (;;) {
      hy__lock(&s->lock);
      /* NULL while the block is free in the cache */
      hy__task *t = atomic_load_explicit(&s->task, memory_order_acquire);
      if (!t) {
        hy__unlock(&s->lock);
        break;
      }
      if (hy__trylock(&t->lock)) {
        if (t->refs == 0) { /* a release may be waiting for the slot lock */
          hy__unlock(&t->lock);
          hy__unlock(&s->lock);
          break;
        }
        hy__unlock(&s->lock);
        if (t->state != HY__T_DONE)
          fn(t, arg);
        hy__unlock(&t->lock);
        break;
      }
      hy__unlock(&s->lock);
      hy__thread_yield();
    }
  }
}

static void cancel_one(hy__task *t, void *arg) {
  if (cancel_locked_nobarrier(t))
    *(int *)arg = 1;
}

static void cancel_one_again(hy__task *t, void *arg) {
  (void)arg;
  if (atomic_load_explicit(&t->cancelled, memory_order_relaxed))
    cancel_quiet_again(t);
}

/* Every task's flag first, then one barrier for all, then the quiet waits
 * opened meanwhile (a task spawned since is cancelled by its spawn). */
void hy__cancel_all(hy_runtime_t *rt) {
  int again = 0;
  hy__task_each(rt, cancel_one, &again);
  if (again) {
    hy__heavy_barrier();
    hy__task_each(rt, cancel_one_again, NULL);
  }
}

hy_task_t hy_task_self(hy_runtime_t *rt) {
  hy__task *t = rt ? hy__task_current(rt) : NULL;
  if (!t) {
    hy_task_t none = {0};
    return none;
  }
  return handle_of(t);
}

int hy_task_cancelled(hy_runtime_t *rt) {
  hy__task *t = rt ? hy__task_current(rt) : NULL;
  return t ? atomic_load(&t->cancelled) : 0;
}

int hy_yield(hy_runtime_t *rt) {
  hy__task *t = rt ? hy__task_current(rt) : NULL;
  if (!t)
    return HY_EINVAL;
  if (atomic_load_explicit(&t->cancelled, memory_order_relaxed))
    return HY_ECANCELED;
  hy__yield_now(t);
  return atomic_load_explicit(&t->cancelled, memory_order_relaxed)
             ? HY_ECANCELED
             : 0;
}

int hy_sleep(hy_runtime_t *rt, int64_t ns) {
  return hy_sleep_until(rt, hy_deadline_in(ns));
}

int hy_sleep_until(hy_runtime_t *rt, hy_time_t deadline) {
  if (!rt || !hy__task_current(rt)) {
    if (deadline != HY_FOREVER)
      hy__sleep_thread_until(deadline);
    return 0;
  }
  hy__wait w;
  int rc = hy__wait_init(&w, rt);
  if (rc < 0)
    return rc;
  hy__wait_what(&w, "sleep");
  int st = hy__wait_park(&w, deadline);
  hy__wait_fini(&w);
  return st == HY__FIRED_CANCEL ? HY_ECANCELED : 0;
}

hy_time_t hy_deadline_in(int64_t ns) {
  if (ns < 0)
    ns = 0;
  hy_time_t now = hy_now();
  return ns >= HY_FOREVER - now ? HY_FOREVER : now + ns;
}

/* ---------------------------------------------------------- task-locals */

int hy_task_key_new(hy_runtime_t *rt, void (*dtor)(void *), int *key) {
  if (!rt || !key)
    return HY_EINVAL;
  hy__lock(&rt->lock);
  if (rt->task_keys >= HY_TASK_LOCALS) {
    hy__unlock(&rt->lock);
    return HY_ENOBUFS;
  }
  int k = rt->task_keys;
  rt->task_key_dtor[k] = dtor;
  rt->task_keys = k + 1;
  hy__unlock(&rt->lock);
  *key = k;
  return 0;
}

int hy_task_local_set(hy_runtime_t *rt, int key, void *value) {
  hy__task *t = rt ? hy__task_current(rt) : NULL;
  if (!t || key < 0 || key >= HY_TASK_LOCALS)
    return HY_EINVAL;
  t->locals[key] = value;
  return 0;
}

void *hy_task_local_get(hy_runtime_t *rt, int key) {
  hy__task *t = rt ? hy__task_current(rt) : NULL;
  if (!t || key < 0 || key >= HY_TASK_LOCALS)
    return NULL;
  return t->locals[key];
}

/* ------------------------------------------------------- task as an arm */

/* A task arm names the task's slot and generation, not its block: the
 * slot lives as long as the runtime, and its lock orders an arm's look at
 * the task against the release that bumps the generation, so an arm on a
 * handle made stale by a join or detach elsewhere - even while a select
 * waits on it - fires HY_ESTALE instead of touching a block that is gone.
 * Waiters queue on t->armq under the slot lock.  The end and a queueing
 * select meet Dekker-style: the end sets t->over then looks at t->armed,
 * a select bumps t->armed then looks at t->over, so at least one of them
 * sees the other and the waiter is claimed before the block can go. */

/* The arm's result: 0, or HY_ENOMEM for a task that never ran (no stack:
 * its result is NULL then), as its join would say. */
static int arm_deliver(hy__task *t, void *buf) {
  if (buf)
    *(void **)buf = t->result;
  return t->error;
}

/* pre: the slot lock held.  The live task of the arm's generation, or
 * NULL. */
static hy__task *arm_task_of(hy__slot *s, const hy_arm_t *arm) {
  hy__task *t = atomic_load_explicit(&s->task, memory_order_acquire);
  return t && s->gen == (uint32_t)arm->aux ? t : NULL;
}

static hy__lock_t *arm_lock(void *obj) {
  return obj ? &((hy__slot *)obj)->lock : NULL;
}

static int arm_try(void *obj, hy_arm_t *arm, int *result) {
  hy__task *t = obj ? arm_task_of(obj, arm) : NULL;
  if (!t) {
    *result = HY_ESTALE;
    return 1;
  }
  if (!atomic_load_explicit(&t->over, memory_order_acquire))
    return 0;
  *result = arm_deliver(t, arm->buf);
  return 1;
}

static void arm_enqueue(void *obj, hy_arm_t *arm, hy__waiter *w) {
  hy__task *t = arm_task_of(obj, arm); /* live: arm_try just said so */
  w->buf = arm->buf;
  hy__waitq_push(&t->armq, w);
  atomic_fetch_add(&t->armed, 1);
  if (atomic_load(&t->over) && hy__wait_claim(w->wait, w->arm)) {
    /* Ended in between, and its end did not see this waiter. */
    hy__waitq_remove(&t->armq, w);
    w->wait->result = arm_deliver(t, w->buf);
    hy__wait_wake(w->wait);
  }
}

static void arm_dequeue(void *obj, hy_arm_t *arm, hy__waiter *w) {
  hy__task *t = arm_task_of(obj, arm);
  if (t)
    hy__waitq_remove(&t->armq, w);
  /* else the block is gone, and its end unlinked every waiter first */
}

/* From hy__task_end, with no lock held. */
static void arms_fire(hy__task *t) {
  atomic_store(&t->over, 1);
  if (!atomic_load(&t->armed))
    return;
  hy__slot *s = slot_at(t->rt, t->slot);
  hy__lock(&s->lock);
  hy__waiter *wr;
  while ((wr = hy__waitq_claim(&t->armq)) != NULL) {
    wr->wait->result = arm_deliver(t, wr->buf);
    hy__wait_wake(wr->wait);
  }
  hy__unlock(&s->lock);
}

/* The arm does not consume the handle: after it fires, hy_task_join
 * returns at once with the result (or hy_task_detach lets it go). */
static const struct hy_awaitable task_awaitable = {
    "task", arm_lock, arm_try, arm_enqueue, arm_dequeue};

hy_arm_t hy_arm_task(hy_runtime_t *rt, hy_task_t h, void **result) {
  hy__task *t = rt ? lookup(rt, h) : NULL;
  hy__slot *s = NULL;
  if (t) {
    /* A detached task's block goes when it ends, unseen by the handle's
     * holder: such a handle counts as stale here. */
    if (!t->detached)
      s = slot_at(rt, t->slot);
    hy__unlock(&t->lock);
  }
  hy_arm_t a = hy__arm_make(&task_awaitable, HY_ARM_OBJECT, s, result, 1);
  a.aux = (intptr_t)(uint32_t)(h.id >> 32);
  return a;
}
