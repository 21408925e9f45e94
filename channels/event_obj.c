/* event_obj.c - event objects: creation, references, read-only access,
 * expiry, the picked-by set that makes resending work, and the per-runtime
 * registry of type descriptors.
 */
#include <string.h>

#include "channels/event_internal.h"

int hy_event_new(const hy_event_type_t *t, const void *payload, size_t len,
                 hy_time_t expiry, hy_event_t **out) {
  if (!out)
    return HY_EINVAL;
  *out = NULL;
  /* (A name of up to three characters, as most built-in ones, needs no
   * strlen.) */
  if (!t || !t->name || !t->name[0] ||
      (t->name[1] && t->name[2] && t->name[3] &&
       strlen(t->name) > HY_EVENT_NAME_MAX))
    return HY_EINVAL;
  if (t->size && len != t->size)
    return HY_EINVAL;
  if (len > ((size_t)1 << 40))
    return HY_EINVAL;
  hy_event_t *ev = hy__mem_alloc(sizeof *ev + len);
  if (!ev)
    return HY_ENOMEM;
  /* Field by field: the inline picked set needs no clearing. */
  atomic_init(&ev->refs, 1);
  atomic_init(&ev->picks, 0);
  atomic_init(&ev->sent, 0);
  atomic_init(&ev->lock.v, 0);
  ev->nhad = ev->cap_had = 0;
  ev->had = NULL;
  ev->reply = NULL;
  ev->type = t;
  ev->expiry = expiry;
  ev->len = len;
  if (len) {
    if (payload)
      memcpy(ev->payload, payload, len);
    else
      memset(ev->payload, 0, len);
  }
  *out = ev;
  return 0;
}

int hy_event_derive(const hy_event_t *from, const hy_event_type_t *t,
                    const void *payload, size_t len, hy_event_t **out) {
  if (!from)
    return HY_EINVAL;
  int rc = hy_event_new(t, payload, len, from->expiry, out);
  if (rc == 0 && from->reply) {
    rc = hy_event_set_reply(*out, from->reply);
    if (rc < 0) {
      hy_event_unref(*out);
      *out = NULL;
    }
  }
  return rc;
}

hy_event_t *hy_event_ref(hy_event_t *ev) {
  if (ev)
    atomic_fetch_add_explicit(&ev->refs, 1, memory_order_relaxed);
  return ev;
}

void hy_event_unref(hy_event_t *ev) {
  if (!ev)
    return;
  /* The sole holder (no one else can add a reference) frees without a
   * locked instruction; the acquire pairs with the others' releases. */
  if (atomic_load_explicit(&ev->refs, memory_order_acquire) != 1 &&
      atomic_fetch_sub_explicit(&ev->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (ev->type->destroy)
    ev->type->destroy(ev->payload, ev->len);
  if (ev->had != ev->had_inline)
    hy__mem_free(ev->had);
  if (ev->reply)
    hy__mem_free(ev->reply);
  hy__mem_free(ev);
}

const hy_event_type_t *hy_event_type_of(const hy_event_t *ev) {
  return ev ? ev->type : NULL;
}

const void *hy_event_data(const hy_event_t *ev, size_t *len) {
  if (len)
    *len = ev ? ev->len : 0;
  return ev ? ev->payload : NULL;
}

hy_time_t hy_event_expiry(const hy_event_t *ev) {
  return ev ? ev->expiry : HY_FOREVER;
}

int hy_event_expired(const hy_event_t *ev, hy_time_t now) {
  return ev && ev->expiry != HY_FOREVER && ev->expiry < now;
}

unsigned hy_event_picks(const hy_event_t *ev) {
  return ev ? atomic_load(&((hy_event_t *)ev)->picks) : 0;
}

int hy_event_set_reply(hy_event_t *ev, const char *path) {
  if (!ev)
    return HY_EINVAL;
  if (atomic_load(&ev->sent))
    return HY_EPERM;
  char *p = NULL;
  if (path) {
    if (!path[0] || strlen(path) > 255)
      return HY_EINVAL;
    p = hy__mem_strdup(path);
    if (!p)
      return HY_ENOMEM;
  }
  hy__mem_free(ev->reply);
  ev->reply = p;
  return 0;
}

const char *hy_event_reply_to(const hy_event_t *ev) {
  return ev ? ev->reply : NULL;
}

/* ------------------------------------------------------------ picked set */

int hy__event_had(hy_event_t *ev, const void *key, uint64_t id) {
  int had = 0;
  hy__lock(&ev->lock);
  for (uint32_t i = 0; i < ev->nhad && !had; i++)
    had = ev->had[i].key == key && ev->had[i].id == id;
  hy__unlock(&ev->lock);
  return had;
}

int hy__event_pick(hy_event_t *ev, const void *key, uint64_t id, int sole) {
  /* The sole holder of ev needs no lock: whoever else could touch the set
   * would hold a reference. */
  if (!sole)
    hy__lock(&ev->lock);
  int rc = 1;
  for (uint32_t i = 0; i < ev->nhad; i++) {
    if (ev->had[i].key == key && ev->had[i].id == id) {
      rc = 0;
      goto out;
    }
  }
  if (ev->cap_had == 0) {
    ev->had = ev->had_inline;
    ev->cap_had = 2;
  }
  if (ev->nhad == ev->cap_had) {
    uint32_t cap = ev->cap_had * 2;
    hy__had *v = hy__mem_alloc(cap * sizeof *v);
    if (!v) {
      rc = HY_ENOMEM;
      goto out;
    }
    memcpy(v, ev->had, ev->nhad * sizeof *v);
    if (ev->had != ev->had_inline)
      hy__mem_free(ev->had);
    ev->had = v;
    ev->cap_had = cap;
  }
  ev->had[ev->nhad].key = key;
  ev->had[ev->nhad].id = id;
  ev->nhad++;
out:
  if (!sole)
    hy__unlock(&ev->lock);
  return rc;
}

/* -------------------------------------------------------------- registry */

static const hy_event_type_t *const builtin[] = {
    &hy_event_bytes, &hy_event_text,   &hy_event_i64, &hy_event_batch,
    &hy_event_phase, &hy_event_task, &hy_event_signal, &hy_event_log};

int hy_event_type_register(hy_runtime_t *rt, const hy_event_type_t *t) {
  if (!rt || !t || !t->name || !t->name[0] ||
      strlen(t->name) > HY_EVENT_NAME_MAX)
    return HY_EINVAL;
  hy__evstate *st = hy__evstate_get(rt);
  if (!st)
    return HY_ENOMEM;
  const hy_event_type_t *old = hy_event_type_find(rt, t->name);
  if (old)
    return old == t ? 0 : HY_EEXIST;
  hy__lock(&st->typelock);
  for (int i = 0; i < st->types.n; i++) {
    if (strcmp(st->types.v[i]->name, t->name) == 0) {
      int same = st->types.v[i] == t;
      hy__unlock(&st->typelock);
      return same ? 0 : HY_EEXIST;
    }
  }
  int rc = hy__grow((void **)&st->types.v, &st->types.cap, st->types.n + 1,
                    sizeof *st->types.v);
  if (rc == 0)
    st->types.v[st->types.n++] = t;
  hy__unlock(&st->typelock);
  return rc;
}

const hy_event_type_t *hy_event_type_find(hy_runtime_t *rt, const char *name) {
  if (!name)
    return NULL;
  for (size_t i = 0; i < sizeof builtin / sizeof *builtin; i++)
    if (strcmp(builtin[i]->name, name) == 0)
      return builtin[i];
  hy__evstate *st = rt ? hy__evstate_get(rt) : NULL;
  if (!st)
    return NULL;
  const hy_event_type_t *found = NULL;
  hy__lock(&st->typelock);
  for (int i = 0; i < st->types.n && !found; i++)
    if (strcmp(st->types.v[i]->name, name) == 0)
      found = st->types.v[i];
  hy__unlock(&st->typelock);
  return found;
}

int hy__grow(void **v, int *cap, int need, size_t elem) {
  if (need <= *cap)
    return 0;
  int n = *cap ? *cap * 2 : 4;
  while (n < need)
    n *= 2;
  void *p = hy__mem_realloc(*v, (size_t)n * elem);
  if (!p)
    return HY_ENOMEM;
  *v = p;
  *cap = n;
  return 0;
}
