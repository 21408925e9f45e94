/* broker_sys.c - the per-runtime event state and the system broker: a
 * multiplexor "sys" holding the runtime's own broker with the standard
 * channels sys/signal, sys/shutdown, sys/task and sys/log; the hooks the
 * runtime calls to publish its facts; and freeing it all at close.
 *
 * The runtime's publications never block (they run in the scheduler and
 * under shutdown locks): a full "block" receiver loses the event, counted.
 */
#include <string.h>

#include "channels/event_internal.h"
#include "runtime/internal.h"

void hy__broker_destroy(hy_broker_t *b);

static const char *const std_channels[] = {"sys/signal", "sys/shutdown",
                                           "sys/task", "sys/log"};

static void state_free(hy__evstate *st) {
  hy__lock(&st->topo);
  /* Multiplexors first, so no sub-broker is still referenced. */
  for (int pass = 0; pass < 2; pass++) {
    hy_broker_t *b = st->all;
    while (b) {
      hy_broker_t *next = b->next_all;
      if (pass == 1 || b->is_mux)
        hy__broker_destroy(b);
      b = next;
    }
  }
  hy__unlock(&st->topo);
  hy__mem_free(st->types.v);
  hy__mem_free(st);
}

static hy__evstate *state_new(hy_runtime_t *rt) {
  hy__evstate *st = hy__mem_calloc(1, sizeof *st);
  if (!st)
    return NULL;
  st->rt = rt;
  atomic_init(&st->nreceivers, 0);
  hy_broker_t *sys = hy__mem_calloc(1, sizeof *sys);
  hy_broker_t *own = hy__mem_calloc(1, sizeof *own);
  if (sys)
    sys->name = hy__mem_strdup("sys");
  if (own)
    own->name = hy__mem_strdup("runtime");
  if (!sys || !own || !sys->name || !own->name) {
    if (sys)
      hy__mem_free(sys->name);
    if (own)
      hy__mem_free(own->name);
    hy__mem_free(sys);
    hy__mem_free(own);
    hy__mem_free(st);
    return NULL;
  }
  sys->st = own->st = st;
  sys->is_mux = 1;
  sys->internal = own->internal = 1;
  own->next_all = sys;
  sys->prev_all = own;
  st->all = own;
  st->sys = sys;
  st->sysrt = own;
  hy__channel *ch[4];
  int ok = hy__channel_alloc(own, "sys", 0) != NULL;
  for (int i = 0; i < 4 && ok; i++)
    ok = (ch[i] = hy__channel_alloc(own, std_channels[i], 0)) != NULL;
  if (ok)
    ok = hy__grow((void **)&sys->subs, &sys->capsubs, 1, sizeof *sys->subs) == 0 &&
         hy__grow((void **)&own->parents, &own->capparents, 1,
                  sizeof *own->parents) == 0;
  if (ok) {
    sys->subs[sys->nsubs++] = own;
    own->parents[own->nparents++] = sys;
    ok = hy__mux_rebuild(sys) == 0;
  }
  if (!ok) {
    state_free(st);
    return NULL;
  }
  st->ch_signal = ch[0];
  st->ch_shutdown = ch[1];
  st->ch_task = ch[2];
  st->ch_log = ch[3];
  return st;
}

hy__evstate *hy__evstate_peek(hy_runtime_t *rt) {
  return atomic_load_explicit(&rt->ev, memory_order_acquire);
}

hy__evstate *hy__evstate_get(hy_runtime_t *rt) {
  hy__evstate *st = hy__evstate_peek(rt);
  if (st)
    return st;
  hy__evstate *mine = state_new(rt);
  if (!mine)
    return NULL;
  if (atomic_compare_exchange_strong(&rt->ev, &st, mine))
    return mine;
  state_free(mine); /* another thread was first */
  return st;
}

void hy__event_free(hy_runtime_t *rt) {
  hy__evstate *st = atomic_exchange(&rt->ev, NULL);
  if (st)
    state_free(st);
}

hy_broker_t *hy_sys_broker(hy_runtime_t *rt) {
  hy__evstate *st = rt ? hy__evstate_get(rt) : NULL;
  return st ? st->sys : NULL;
}

/* -------------------------------------------------------------- publishing */

static int publish(hy__evstate *st, hy__channel *c, const hy_event_type_t *t,
                   const void *payload, size_t len) {
  hy_event_t *ev;
  int rc = hy_event_new(t, payload, len, HY_FOREVER, &ev);
  if (rc < 0)
    return rc;
  rc = hy__send_channel(st, c, ev, HY_FOREVER, 1);
  hy_event_unref(ev);
  return rc;
}

void hy__event_publish_phase(hy_runtime_t *rt, int phase) {
  hy__evstate *st = hy__evstate_peek(rt);
  if (!st)
    return;
  if (phase == HY_PHASE_QUIESCE)
    hy__batchers_shutdown(st);
  if (atomic_load_explicit(&st->nreceivers, memory_order_relaxed) == 0)
    return;
  hy_phase_event_t e = {phase};
  publish(st, st->ch_shutdown, &hy_event_phase, &e, sizeof e);
}

void hy__event_publish_task_exit(hy_runtime_t *rt, uint64_t id,
                                 const char *name, int cancelled,
                                 int never_ran) {
  hy__evstate *st = hy__evstate_peek(rt);
  if (!st || atomic_load_explicit(&st->nreceivers, memory_order_relaxed) == 0)
    return;
  hy_task_event_t e;
  memset(&e, 0, sizeof e);
  e.task = id;
  e.reason = never_ran   ? HY_TASK_NO_STACK
             : cancelled ? HY_TASK_CANCELLED
                         : HY_TASK_RETURNED;
  if (name)
    strncpy(e.name, name, sizeof e.name - 1);
  publish(st, st->ch_task, &hy_event_task, &e, sizeof e);
}

void hy__event_publish_signal(hy_runtime_t *rt, int signo) {
  hy__evstate *st = hy__evstate_peek(rt);
  if (!st || atomic_load_explicit(&st->nreceivers, memory_order_relaxed) == 0)
    return;
  hy_signal_event_t e = {signo};
  publish(st, st->ch_signal, &hy_event_signal, &e, sizeof e);
}

int hy_log_event(hy_runtime_t *rt, int level, const char *text) {
  if (!rt || !text)
    return HY_EINVAL;
  hy__evstate *st = hy__evstate_get(rt);
  if (!st)
    return HY_ENOMEM;
  size_t tl = strlen(text);
  size_t len = sizeof(hy_log_event_t) + tl + 1;
  hy_event_t *ev;
  int rc = hy_event_new(&hy_event_log, NULL, len, HY_FOREVER, &ev);
  if (rc < 0)
    return rc;
  hy_log_event_t *l = (hy_log_event_t *)ev->payload;
  l->level = level;
  memcpy(l->text, text, tl + 1);
  rc = hy__send_channel(st, st->ch_log, ev, HY_FOREVER, 1);
  hy_event_unref(ev);
  return rc;
}
