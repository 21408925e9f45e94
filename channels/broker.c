/* broker.c - brokers: creation and freeing, name resolution (own
 * channels, links, a multiplexor's view), the tree parent of a channel,
 * and channel objects' life.
 */
#include <string.h>

#include "channels/event_internal.h"

/* ---------------------------------------------------------------- channels */

hy__channel *hy__channel_alloc(hy_broker_t *b, const char *path, int limit) {
  if (hy__grow((void **)&b->ch, &b->capch, b->nch + 1, sizeof *b->ch) < 0)
    return NULL;
  hy__channel *c = hy__mem_calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->path = hy__mem_strdup(path);
  if (!c->path) {
    hy__mem_free(c);
    return NULL;
  }
  atomic_init(&c->refs, 1); /* the broker's */
  c->broker = b;
  c->limit = limit;
  atomic_init(&c->pick_run, HY_PICK_RUN);
  atomic_init(&c->run_left, HY_PICK_RUN);
  b->ch[b->nch++] = c;
  b->st->version++;
  return c;
}

void hy__channel_release(hy__channel *c) {
  if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return;
  hy__plan_release(c->plan);
  hy__mem_free(c->rcv);
  hy__mem_free(c->bridge);
  hy__mem_free(c->path);
  hy__mem_free(c);
}

static void unbridge_one(hy__channel *x, hy__channel *y) {
  for (int i = 0; i < x->nbridge; i++)
    if (x->bridge[i] == y) {
      x->bridge[i] = x->bridge[--x->nbridge];
      return;
    }
}

void hy__channel_unbridge_all(hy__channel *c);
void hy__channel_unbridge_all(hy__channel *c) {
  for (int i = 0; i < c->nbridge; i++)
    unbridge_one(c->bridge[i], c);
  c->nbridge = 0;
}

void hy__channel_kill(hy__channel *c) {
  hy_broker_t *b = c->broker;
  for (int i = 0; i < b->nch; i++)
    if (b->ch[i] == c) {
      memmove(&b->ch[i], &b->ch[i + 1], (size_t)(b->nch - i - 1) * sizeof *b->ch);
      b->nch--;
      break;
    }
  c->deleted = 1;
  hy__channel_unbridge_all(c);
  for (int i = 0; i < c->nrcv; i++)
    hy__receiver_close(c->rcv[i]);
  hy__plan_release(c->plan);
  c->plan = NULL;
  b->st->version++;
  hy__channel_release(c);
}

/* -------------------------------------------------------------- resolution */

static hy__channel *own_n(hy_broker_t *b, const char *path, size_t n) {
  for (int i = 0; i < b->nch; i++) {
    hy__channel *c = b->ch[i];
    if (strncmp(c->path, path, n) == 0 && c->path[n] == 0)
      return c;
  }
  return NULL;
}

static hy__channel *resolve_n(hy_broker_t *b, const char *path, size_t n,
                              int *kind, int depth) {
  if (depth > 8)
    return NULL;
  if (b->is_mux) {
    for (int i = 0; i < b->nview; i++)
      if (strncmp(b->view[i].name, path, n) == 0 && b->view[i].name[n] == 0) {
        if (kind)
          *kind = b->view[i].kind;
        return b->view[i].ch;
      }
  } else {
    hy__channel *c = own_n(b, path, n);
    if (c) {
      if (kind)
        *kind = HY_CHANNEL_PLAIN;
      return c;
    }
  }
  for (int i = 0; i < b->nlinks; i++) {
    hy__link *l = &b->links[i];
    if (strncmp(l->name, path, n) == 0 && l->name[n] == 0) {
      hy__channel *c = resolve_n(l->target, l->path, strlen(l->path), NULL,
                                 depth + 1);
      if (c && kind)
        *kind = HY_CHANNEL_LINK;
      return c;
    }
  }
  /* A multiplexor's own channel not yet in its view (during a rebuild). */
  if (b->is_mux) {
    hy__channel *c = own_n(b, path, n);
    if (c && kind)
      *kind = c->synthetic ? HY_CHANNEL_REPRESENTATIVE : HY_CHANNEL_PLAIN;
    return c;
  }
  return NULL;
}

hy__channel *hy__broker_resolve(hy_broker_t *b, const char *path, int *kind) {
  return resolve_n(b, path, strlen(path), kind, 0);
}

hy__channel *hy__channel_parent(hy__channel *c) {
  const char *slash = strrchr(c->path, '/');
  if (!slash || c->deleted)
    return NULL;
  return resolve_n(c->broker, c->path, (size_t)(slash - c->path), NULL, 0);
}

/* ----------------------------------------------------------------- brokers */

static int broker_make(hy_runtime_t *rt, const char *name, int mux,
                       hy_broker_t **out) {
  if (!out)
    return HY_EINVAL;
  *out = NULL;
  if (!rt || !name)
    return HY_EINVAL;
  hy__evstate *st = hy__evstate_get(rt);
  if (!st)
    return HY_ENOMEM;
  hy_broker_t *b = hy__mem_calloc(1, sizeof *b);
  if (!b)
    return HY_ENOMEM;
  b->name = hy__mem_strdup(name);
  if (!b->name) {
    hy__mem_free(b);
    return HY_ENOMEM;
  }
  b->st = st;
  b->is_mux = mux;
  hy__lock(&st->topo);
  b->next_all = st->all;
  if (st->all)
    st->all->prev_all = b;
  st->all = b;
  hy__unlock(&st->topo);
  *out = b;
  return 0;
}

int hy_broker_new(hy_runtime_t *rt, const char *name, hy_broker_t **out) {
  return broker_make(rt, name, 0, out);
}

int hy_mux_new(hy_runtime_t *rt, const char *name, hy_broker_t **out) {
  return broker_make(rt, name, 1, out);
}

const char *hy_broker_name(const hy_broker_t *b) { return b ? b->name : NULL; }

/* Under topo: everything a broker holds, and the broker. */
void hy__broker_destroy(hy_broker_t *b);
void hy__broker_destroy(hy_broker_t *b) {
  hy__evstate *st = b->st;
  while (b->nch)
    hy__channel_kill(b->ch[b->nch - 1]);
  for (int i = 0; i < b->nlinks; i++) {
    hy__mem_free(b->links[i].name);
    hy__mem_free(b->links[i].path);
  }
  for (int i = 0; i < b->nview; i++)
    hy__mem_free(b->view[i].name);
  for (int i = 0; i < b->nsubs; i++) {
    hy_broker_t *s = b->subs[i];
    for (int j = 0; j < s->nparents; j++)
      if (s->parents[j] == b) {
        s->parents[j] = s->parents[--s->nparents];
        break;
      }
  }
  if (b->prev_all)
    b->prev_all->next_all = b->next_all;
  else
    st->all = b->next_all;
  if (b->next_all)
    b->next_all->prev_all = b->prev_all;
  hy__mem_free(b->ch);
  hy__mem_free(b->links);
  hy__mem_free(b->subs);
  hy__mem_free(b->parents);
  hy__mem_free(b->view);
  hy__mem_free(b->name);
  hy__mem_free(b);
  st->version++;
}

int hy_broker_free(hy_broker_t *b) {
  if (!b)
    return HY_EINVAL;
  hy__evstate *st = b->st;
  hy__lock(&st->topo);
  if (b->internal || b->nparents) {
    hy__unlock(&st->topo);
    return b->internal ? HY_EPERM : HY_EBUSY;
  }
  /* Other brokers' links into b go too. */
  for (hy_broker_t *o = st->all; o; o = o->next_all) {
    int changed = 0;
    for (int i = 0; i < o->nlinks;)
      if (o->links[i].target == b) {
        hy__mem_free(o->links[i].name);
        hy__mem_free(o->links[i].path);
        o->links[i] = o->links[--o->nlinks];
        changed = 1;
      } else {
        i++;
      }
    if (changed && o != b)
      hy__mux_refresh_up(o);
  }
  hy__broker_destroy(b);
  hy__unlock(&st->topo);
  return 0;
}
