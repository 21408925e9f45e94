/* hub.c - hub events (hydra/hub.h): a producer and any number of
 * consumers, each consumer with its own event.
 *
 * Data structures.  The runtime has one registry (hy__hubreg): a list of
 * every hub that still has memory, named or not, destroyed or not, so that
 * hy_runtime_close can free what the application left behind.  A hub has a
 * list of its consumers.  A consumer has its release state and a wait
 * queue (runtime/wait.h):
 *   - no OS handle: `sig` is 1 while a release is pending;
 *   - with an OS handle (made on first hy_hub_os_handle): the handle's
 *     readiness *is* the pending release, because a foreign thread may take
 *     it by reading the handle at any moment; `sig` stays 0.
 * A set goes to the consumer's first open waiter if there is one (the
 * waiter takes it), else it becomes the pending release; a pending release
 * that is set again stays one release (coalescing).  Manual-reset
 * consumers keep the release pending and wake every waiter instead.
 *
 * Exactly once: a release is either handed to one claimed waiter or left
 * pending, under the consumer's lock; whoever takes a pending release
 * (a waiter under the same lock, or a reader of the OS handle, atomically
 * in the kernel) takes it alone.
 *
 * Lifetime: hub->refs counts the producer (until destroy) and each
 * consumer; the hub's memory goes with the last reference.  refs, the
 * consumer list and the hub's state are under hub->lock; the registry list
 * under reg->lock.
 *
 * Lock order: reg->lock > hub->lock > consumer->lock > (task and worker
 * locks, taken by hy__wait_wake).  Select takes consumer locks only, so it
 * never meets the hub lock.  A set holds the hub lock while it visits every
 * consumer: 10,000 consumers cost 10,000 uncontended lock pairs, and a
 * connect or disconnect meanwhile spins; rejected alternative: copying the
 * consumer list out (allocation on every set, and a consumer could be
 * freed while being visited).
 */
#include <string.h>

#include "runtime/hubs.h"
#include "runtime/internal.h"

typedef struct hy__hubreg {
  hy__lock_t lock;
  hy_hub_t *list;
  hy_hub_t *shutdown; /* "sys/shutdown" */
} hy__hubreg;

struct hy_hub {
  hy__lock_t lock;
  hy_runtime_t *rt;
  hy_hub_t *next, *prev;        /* registry list, under reg->lock */
  hy_hub_consumer_t *cons;      /* consumers, under lock */
  int nconsumers;
  int refs;
  int kind;                     /* enum hy_hub_kind */
  int system;                   /* owned by the runtime: EPERM for users */
  int destroyed;
  int signalled;                /* manual-reset state */
  uint64_t sets;
  char name[64];
};

struct hy_hub_consumer {
  hy__lock_t lock;
  hy_hub_t *hub;
  hy_hub_consumer_t *next, *prev; /* the hub's list, under hub->lock */
  hy__waitq waiters;
  int manual;
  int sig;        /* pending release, while there is no OS handle */
  int closed;     /* the hub was destroyed */
  int pend_close; /* a release was pending when the hub was destroyed */
  intptr_t fd;    /* -1: none yet */
};

static hy__hubreg *reg_of(hy_runtime_t *rt) { return rt->hubs; }

/* ------------------------------------------------ consumer release state
 * All under c->lock. */

static void mark(hy_hub_consumer_t *c) {
  if (c->fd >= 0)
    hy__evfd_post(c->fd);
  else
    c->sig = 1;
}

static int take(hy_hub_consumer_t *c) {
  if (c->fd >= 0)
    return hy__evfd_take(c->fd);
  int had = c->sig;
  c->sig = 0;
  return had;
}

static int peek(hy_hub_consumer_t *c) {
  return c->fd >= 0 ? hy__evfd_ready(c->fd) : c->sig;
}

/* Delivers one release to c: to a waiter if one waits, else pending. */
static int release(hy_hub_consumer_t *c) {
  if (c->closed)
    return 0;
  if (c->manual) {
    mark(c);
    hy__waitq_wake_all(&c->waiters, 0);
    return 1;
  }
  hy__waiter *w = hy__waitq_claim(&c->waiters);
  if (w) {
    w->wait->result = 0;
    hy__wait_wake(w->wait);
  } else {
    mark(c);
  }
  return 1;
}

/* If c is ready, sets *r (0: a release, taken on an auto-reset hub;
 * HY_ECLOSED) and returns 1. */
static int try_take(hy_hub_consumer_t *c, int *r) {
  if (c->closed) {
    *r = c->pend_close ? 0 : HY_ECLOSED;
    c->pend_close = 0;
    return 1;
  }
  if (c->manual ? peek(c) : take(c)) {
    *r = 0;
    return 1;
  }
  return 0;
}

/* Gives back what try_take took (the waiter turned out to be cancelled). */
static void untake(hy_hub_consumer_t *c, int r) {
  if (r != 0)
    return;
  if (c->closed)
    c->pend_close = 1;
  else if (!c->manual)
    mark(c);
}

static void close_consumer(hy_hub_consumer_t *c) {
  hy__lock(&c->lock);
  c->pend_close = take(c);
  c->closed = 1;
  hy__waitq_wake_all(&c->waiters, HY_ECLOSED);
  if (c->fd >= 0)
    hy__evfd_post_forever(c->fd);
  hy__unlock(&c->lock);
}

static void free_consumer(hy_hub_consumer_t *c) {
  if (c->fd >= 0)
    hy__evfd_close(c->fd);
  hy__mem_free(c);
}

/* ------------------------------------------------------------- registry */

static hy_hub_t *find_locked(hy__hubreg *reg, const char *name) {
  for (hy_hub_t *h = reg->list; h; h = h->next)
    if (!h->destroyed && h->name[0] && strcmp(h->name, name) == 0)
      return h;
  return NULL;
}

static void unlink_hub(hy__hubreg *reg, hy_hub_t *h) {
  if (h->prev)
    h->prev->next = h->next;
  else
    reg->list = h->next;
  if (h->next)
    h->next->prev = h->prev;
}

static int create(hy_runtime_t *rt, const char *name, int kind, int system,
                  hy_hub_t **out) {
  if (!rt || !out || (kind != HY_HUB_AUTO_RESET && kind != HY_HUB_MANUAL_RESET))
    return HY_EINVAL;
  *out = NULL;
  if (name && strlen(name) >= sizeof(((hy_hub_t *)0)->name))
    return HY_EINVAL;
  if (name && !system && strncmp(name, "sys/", 4) == 0)
    return HY_EPERM;
  hy__hubreg *reg = reg_of(rt);
  hy_hub_t *h = hy__mem_calloc(1, sizeof *h);
  if (!h)
    return HY_ENOMEM;
  h->rt = rt;
  h->kind = kind;
  h->system = system;
  h->refs = 1;
  if (name)
    strcpy(h->name, name);
  hy__lock(&reg->lock);
  if (name && *name && find_locked(reg, name)) {
    hy__unlock(&reg->lock);
    hy__mem_free(h);
    return HY_EEXIST;
  }
  h->next = reg->list;
  if (reg->list)
    reg->list->prev = h;
  reg->list = h;
  hy__unlock(&reg->lock);
  *out = h;
  return 0;
}

int hy__hubs_init(hy_runtime_t *rt) {
  hy__hubreg *reg = hy__mem_calloc(1, sizeof *reg);
  if (!reg)
    return HY_ENOMEM;
  rt->hubs = reg;
  int rc = create(rt, "sys/shutdown", HY_HUB_MANUAL_RESET, 1, &reg->shutdown);
  if (rc < 0) {
    hy__mem_free(reg);
    rt->hubs = NULL;
  }
  return rc;
}

void hy__hubs_free(hy_runtime_t *rt) {
  hy__hubreg *reg = reg_of(rt);
  if (!reg)
    return;
  hy_hub_t *h = reg->list;
  while (h) {
    hy_hub_t *next = h->next;
    hy_hub_consumer_t *c = h->cons;
    while (c) {
      hy_hub_consumer_t *cn = c->next;
      free_consumer(c);
      c = cn;
    }
    hy__mem_free(h);
    h = next;
  }
  hy__mem_free(reg);
  rt->hubs = NULL;
}

void hy__hubs_shutdown(hy_runtime_t *rt) {
  hy__hubreg *reg = reg_of(rt);
  if (reg && reg->shutdown)
    hy__hub_set(reg->shutdown);
}

int hy__hub_create_system(hy_runtime_t *rt, const char *name, int kind,
                          hy_hub_t **out) {
  return create(rt, name, kind, 1, out);
}

/* ------------------------------------------------------------- producer */

int hy_hub_create(hy_runtime_t *rt, const char *name, int kind,
                  hy_hub_t **out) {
  return create(rt, name, kind, 0, out);
}

int hy_hub_destroy(hy_hub_t *h) {
  if (!h)
    return HY_EINVAL;
  if (h->system)
    return HY_EPERM;
  hy__hubreg *reg = reg_of(h->rt);
  hy__lock(&reg->lock);
  hy__lock(&h->lock);
  if (h->destroyed) {
    hy__unlock(&h->lock);
    hy__unlock(&reg->lock);
    return HY_EINVAL;
  }
  h->destroyed = 1;
  for (hy_hub_consumer_t *c = h->cons; c; c = c->next)
    close_consumer(c);
  int last = --h->refs == 0;
  hy__unlock(&h->lock);
  if (last)
    unlink_hub(reg, h);
  hy__unlock(&reg->lock);
  if (last)
    hy__mem_free(h);
  return 0;
}

int hy__hub_set(hy_hub_t *h) {
  int n = 0;
  hy__lock(&h->lock);
  if (h->destroyed) {
    hy__unlock(&h->lock);
    return HY_ECLOSED;
  }
  h->sets++;
  if (h->kind == HY_HUB_MANUAL_RESET)
    h->signalled = 1;
  for (hy_hub_consumer_t *c = h->cons; c; c = c->next) {
    hy__lock(&c->lock);
    n += release(c);
    hy__unlock(&c->lock);
  }
  hy__unlock(&h->lock);
  return n;
}

int hy_hub_set(hy_hub_t *h) {
  if (!h)
    return HY_EINVAL;
  if (h->system)
    return HY_EPERM;
  return hy__hub_set(h);
}

int hy_hub_reset(hy_hub_t *h) {
  if (!h)
    return HY_EINVAL;
  if (h->system)
    return HY_EPERM;
  hy__lock(&h->lock);
  h->signalled = 0;
  for (hy_hub_consumer_t *c = h->cons; c; c = c->next) {
    hy__lock(&c->lock);
    if (!c->closed)
      take(c);
    hy__unlock(&c->lock);
  }
  hy__unlock(&h->lock);
  return 0;
}

int hy_hub_info(hy_hub_t *h, hy_hub_info_t *info) {
  if (!h || !info || info->size < sizeof *info)
    return HY_EINVAL;
  memset((char *)info + sizeof info->size, 0, sizeof *info - sizeof info->size);
  hy__lock(&h->lock);
  info->kind = h->kind;
  info->consumers = h->nconsumers;
  info->sets = h->sets;
  info->signalled = h->signalled;
  memcpy(info->name, h->name, sizeof info->name);
  hy__unlock(&h->lock);
  return 0;
}

int hy_hub_find(hy_runtime_t *rt, const char *name, hy_hub_t **out) {
  if (!rt || !name || !*name || !out)
    return HY_EINVAL;
  hy__hubreg *reg = reg_of(rt);
  hy__lock(&reg->lock);
  *out = find_locked(reg, name);
  hy__unlock(&reg->lock);
  return *out ? 0 : HY_ENOENT;
}

/* ------------------------------------------------------------- consumer */

/* pre: h->lock held, h not destroyed. */
static void attach(hy_hub_t *h, hy_hub_consumer_t *c) {
  c->hub = h;
  c->manual = h->kind == HY_HUB_MANUAL_RESET;
  c->sig = c->manual && h->signalled; /* a manual hub's state shows */
  c->next = h->cons;
  if (h->cons)
    h->cons->prev = c;
  h->cons = c;
  h->nconsumers++;
  h->refs++;
}

static hy_hub_consumer_t *new_consumer(void) {
  hy_hub_consumer_t *c = hy__mem_calloc(1, sizeof *c);
  if (c)
    c->fd = -1;
  return c;
}

int hy_hub_connect(hy_hub_t *h, hy_hub_consumer_t **out) {
  if (!h || !out)
    return HY_EINVAL;
  *out = NULL;
  hy_hub_consumer_t *c = new_consumer();
  if (!c)
    return HY_ENOMEM;
  hy__lock(&h->lock);
  if (h->destroyed) {
    hy__unlock(&h->lock);
    hy__mem_free(c);
    return HY_ECLOSED;
  }
  attach(h, c);
  hy__unlock(&h->lock);
  *out = c;
  return 0;
}

int hy_hub_connect_name(hy_runtime_t *rt, const char *name,
                        hy_hub_consumer_t **out) {
  if (!rt || !name || !*name || !out)
    return HY_EINVAL;
  *out = NULL;
  hy_hub_consumer_t *c = new_consumer();
  if (!c)
    return HY_ENOMEM;
  hy__hubreg *reg = reg_of(rt);
  hy__lock(&reg->lock);
  hy_hub_t *h = find_locked(reg, name);
  if (!h) {
    hy__unlock(&reg->lock);
    hy__mem_free(c);
    return HY_ENOENT;
  }
  hy__lock(&h->lock);
  attach(h, c);
  hy__unlock(&h->lock);
  hy__unlock(&reg->lock);
  *out = c;
  return 0;
}

int hy_hub_disconnect(hy_hub_consumer_t *c) {
  if (!c)
    return HY_EINVAL;
  hy_hub_t *h = c->hub;
  hy__hubreg *reg = reg_of(h->rt);
  hy__lock(&reg->lock);
  hy__lock(&h->lock);
  if (c->prev)
    c->prev->next = c->next;
  else
    h->cons = c->next;
  if (c->next)
    c->next->prev = c->prev;
  h->nconsumers--;
  int last = --h->refs == 0;
  hy__unlock(&h->lock);
  if (last)
    unlink_hub(reg, h);
  hy__unlock(&reg->lock);
  free_consumer(c);
  if (last)
    hy__mem_free(h);
  return 0;
}

int hy_hub_wait(hy_hub_consumer_t *c) {
  return hy_hub_wait_until(c, HY_FOREVER);
}

int hy_hub_wait_until(hy_hub_consumer_t *c, hy_time_t deadline) {
  if (!c)
    return HY_EINVAL;
  hy__wait w;
  int rc = hy__wait_init(&w, c->hub->rt);
  if (rc < 0)
    return rc;
  hy__lock(&c->lock);
  int r;
  if (try_take(c, &r)) {
    if (hy__wait_claim(&w, 0)) {
      hy__unlock(&c->lock);
      hy__wait_fini(&w);
      return r;
    }
    /* A cancel claimed the wait first: leave the release for later and
     * receive the cancel's wake. */
    untake(c, r);
    hy__unlock(&c->lock);
    hy__wait_park(&w, HY_FOREVER);
    hy__wait_fini(&w);
    return HY_ECANCELED;
  }
  hy__waiter wr;
  memset(&wr, 0, sizeof wr);
  wr.wait = &w;
  hy__wait_park_queued(&w, &wr, &c->waiters, &c->lock, "hub", deadline);
  hy__wait_fini(&w);
  return hy__wait_rc(&w);
}

int hy_hub_consumer_set(hy_hub_consumer_t *c) {
  if (!c)
    return HY_EINVAL;
  hy__lock(&c->lock);
  release(c);
  hy__unlock(&c->lock);
  return 0;
}

int hy_hub_consumer_reset(hy_hub_consumer_t *c) {
  if (!c)
    return HY_EINVAL;
  hy__lock(&c->lock);
  if (!c->closed)
    take(c);
  hy__unlock(&c->lock);
  return 0;
}

int hy_hub_consumer_pulse(hy_hub_consumer_t *c) {
  if (!c)
    return HY_EINVAL;
  int n = 0;
  hy__lock(&c->lock);
  if (c->manual) {
    n = hy__waitq_wake_all(&c->waiters, 0);
  } else {
    hy__waiter *w = hy__waitq_claim(&c->waiters);
    if (w) {
      w->wait->result = 0;
      hy__wait_wake(w->wait);
      n = 1;
    }
  }
  /* Whoever waits on the OS handle: all of them (manual) or one, if no
   * task or thread took the pulse (auto).  A handle that is ready has
   * nobody waiting on it, and its pending release stays. */
  if (c->fd >= 0 && !c->closed && (c->manual || n == 0) &&
      !hy__evfd_ready(c->fd))
    hy__evfd_pulse(c->fd);
  hy__unlock(&c->lock);
  return n;
}

int hy_hub_os_handle(hy_hub_consumer_t *c, intptr_t *handle) {
  if (!c || !handle)
    return HY_EINVAL;
  hy__lock(&c->lock);
  if (c->fd < 0) {
    intptr_t fd;
    int rc = hy__evfd_open(&fd, c->manual);
    if (rc < 0) {
      hy__unlock(&c->lock);
      return rc;
    }
    c->fd = fd;
    if (c->closed)
      hy__evfd_post_forever(fd);
    else if (c->sig)
      hy__evfd_post(fd);
    c->sig = 0;
  }
  *handle = c->fd;
  hy__unlock(&c->lock);
  return 0;
}

/* ------------------------------------------------------------ select arm */

HY__WAITQ_ARM_OPS(arm, hy_hub_consumer_t, lock, waiters)

static int arm_try(void *obj, hy_arm_t *arm, int *result) {
  (void)arm;
  if (!obj) {
    *result = HY_EINVAL;
    return 1;
  }
  return try_take(obj, result);
}

static const struct hy_awaitable hub_awaitable = {"hub", arm_lock, arm_try,
                                                  arm_enqueue, arm_dequeue};

hy_arm_t hy_arm_hub(hy_hub_consumer_t *c) {
  return hy__arm_make(&hub_awaitable, HY_ARM_OBJECT, c, NULL, 1);
}
