/* broker_sub.c - publishing and subscribing: senders, receivers joining
 * and leaving channels, priorities; and the request/reply helpers built
 * on them (callbacks are reply channels named in the request).
 */
#include <stdio.h>
#include <string.h>

#include "channels/event_internal.h"

int hy_publish(hy_broker_t *b, const char *path, hy_sender_t **out) {
  if (!out)
    return HY_EINVAL;
  *out = NULL;
  if (!b || !path)
    return HY_EINVAL;
  hy_sender_t *s = hy__mem_calloc(1, sizeof *s);
  if (!s)
    return HY_ENOMEM;
  s->st = b->st;
  hy__lock(&b->st->topo);
  hy__channel *c = hy__broker_resolve(b, path, NULL);
  if (c) {
    atomic_fetch_add(&c->refs, 1);
    s->ch = c;
    s->next = c->senders;
    if (c->senders)
      c->senders->prev = s;
    c->senders = s;
  }
  hy__unlock(&b->st->topo);
  if (!c) {
    hy__mem_free(s);
    return HY_ENOENT;
  }
  *out = s;
  return 0;
}

void hy_sender_free(hy_sender_t *s) {
  if (!s)
    return;
  hy__lock(&s->st->topo);
  hy__channel *c = s->ch;
  /* The owner's counts go to the channel. */
  atomic_store(&c->sent, atomic_load(&c->sent) + atomic_load(&s->sent));
  atomic_store(&c->planned, atomic_load(&c->planned) + atomic_load(&s->planned));
  if (s->prev)
    s->prev->next = s->next;
  else
    c->senders = s->next;
  if (s->next)
    s->next->prev = s->prev;
  hy__plan_release(s->plan);
  hy__channel_release(c);
  hy__unlock(&s->st->topo);
  hy__mem_free(s);
}

int hy_send(hy_sender_t *s, hy_event_t *ev, hy_time_t deadline) {
  return hy__sender_send(s, ev, deadline, 0);
}

int hy__sender_send(hy_sender_t *s, hy_event_t *ev, hy_time_t deadline,
                    int nonblock) {
  if (!s || !ev)
    return HY_EINVAL;
  return hy__send_via(s->st, s->ch, s, ev, deadline, nonblock);
}

int hy_send_to(hy_broker_t *b, const char *path, hy_event_t *ev,
               hy_time_t deadline) {
  hy_sender_t *s;
  int rc = hy_publish(b, path, &s);
  if (rc < 0)
    return rc;
  rc = hy_send(s, ev, deadline);
  hy_sender_free(s);
  return rc;
}

/* ---------------------------------------------------------------- receivers */

int hy_subscribe(hy_broker_t *b, const char *path, const hy_recv_opts_t *o,
                 hy_receiver_t **out) {
  if (!out)
    return HY_EINVAL;
  *out = NULL;
  hy_recv_opts_t def = HY_RECV_OPTS_INIT;
  if (!o)
    o = &def;
  if (!b || !path || o->size < sizeof *o || o->overflow < HY_OVERFLOW_BLOCK ||
      o->overflow > HY_OVERFLOW_DROP_OLDEST || o->capacity > (1u << 24))
    return HY_EINVAL;
  /* On its own cache lines (struct hy_receiver). */
  hy_receiver_t *r = hy__mem_aligned(sizeof *r, alignof(hy_receiver_t));
  if (!r)
    return HY_ENOMEM;
  memset(r, 0, sizeof *r);
  r->cap = o->capacity ? o->capacity : 64;
  r->ring = hy__mem_alloc(r->cap * sizeof *r->ring);
  if (!r->ring) {
    hy__mem_free(r);
    return HY_ENOMEM;
  }
  atomic_init(&r->refs, 1);
  atomic_init(&r->prio, o->priority);
  r->policy = o->overflow;
  r->st = b->st;
  hy__evstate *st = b->st;
  hy__lock(&st->topo);
  hy__channel *c = hy__broker_resolve(b, path, NULL);
  int rc = c ? hy__grow((void **)&c->rcv, &c->caprcv, c->nrcv + 1, sizeof *c->rcv)
             : HY_ENOENT;
  if (rc == 0) {
    r->id = ++st->next_id;
    r->ch = c;
    atomic_fetch_add(&c->refs, 1);
    c->rcv[c->nrcv++] = r;
    st->version++;
    atomic_fetch_add(&st->nreceivers, 1);
  }
  hy__unlock(&st->topo);
  if (rc < 0) {
    hy__mem_free(r->ring);
    hy__mem_free(r);
    return rc;
  }
  *out = r;
  return 0;
}

void hy_unsubscribe(hy_receiver_t *r) {
  if (!r)
    return;
  hy__evstate *st = r->st;
  hy__lock(&st->topo);
  hy__channel *c = r->ch;
  if (c) {
    for (int i = 0; i < c->nrcv; i++)
      if (c->rcv[i] == r) {
        c->rcv[i] = c->rcv[--c->nrcv];
        break;
      }
    r->ch = NULL;
    st->version++;
    atomic_fetch_sub(&st->nreceivers, 1);
    hy__channel_release(c);
  }
  hy__unlock(&st->topo);
  hy__lock(&r->lock);
  r->closed = 1;
  uint32_t n = r->n, head = r->head;
  hy_event_t *small[64], **drop = n <= 64 ? small : hy__mem_alloc(n * sizeof *drop);
  if (drop) {
    for (uint32_t i = 0; i < n; i++)
      drop[i] = r->ring[(head + i) % r->cap];
    r->n = 0;
  }
  hy__waitq_wake_all(&r->readers, HY_ECLOSED);
  hy__waitq_wake_all(&r->senders, 0);
  hy__unlock(&r->lock);
  if (drop) {
    for (uint32_t i = 0; i < n; i++)
      hy_event_unref(drop[i]);
    if (drop != small)
      hy__mem_free(drop);
  }
  hy__receiver_release(r);
}

int hy_receiver_set_priority(hy_receiver_t *r, int64_t priority) {
  if (!r)
    return HY_EINVAL;
  hy__lock(&r->st->topo);
  atomic_store(&r->prio, priority);
  r->st->version++;
  hy__unlock(&r->st->topo);
  return 0;
}

/* ------------------------------------------------------- request / reply */

int hy_request(hy_broker_t *b, const char *path, hy_event_t *req,
               hy_time_t deadline, hy_event_t **reply) {
  if (!b || !path || !req || !reply)
    return HY_EINVAL;
  *reply = NULL;
  if (atomic_load(&req->sent))
    return HY_EPERM;
  char name[64];
  hy__lock(&b->st->topo);
  unsigned long long n = ++b->st->next_reply;
  hy__unlock(&b->st->topo);
  snprintf(name, sizeof name, "reply/%llu", n);
  int rc = hy_channel_create(b, name, 1);
  if (rc < 0)
    return rc;
  hy_receiver_t *r;
  rc = hy_subscribe(b, name, NULL, &r);
  if (rc == 0) {
    rc = hy_event_set_reply(req, name);
    if (rc == 0)
      rc = hy_send_to(b, path, req, deadline);
    if (rc >= 0)
      rc = hy_receiver_read(r, reply, deadline);
    hy_unsubscribe(r);
  }
  hy_channel_delete(b, name);
  return rc < 0 ? rc : 0;
}

int hy_reply(hy_broker_t *b, const hy_event_t *req, hy_event_t *reply,
             hy_time_t deadline) {
  if (!b || !req || !reply)
    return HY_EINVAL;
  if (!req->reply)
    return HY_EINVAL;
  return hy_send_to(b, req->reply, reply, deadline);
}
