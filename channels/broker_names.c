/* broker_names.c - a broker's namespace: create, delete, rename, link,
 * look up and list channels.  Every change refreshes the views of the
 * multiplexors above the broker before the lock is dropped, so it shows
 * there at once.
 */
#include <stdlib.h>
#include <string.h>

#include "channels/event_internal.h"

#define PATH_MAX_LEN 255

static int path_ok(const char *p) {
  if (!p || !p[0] || p[0] == '/')
    return 0;
  size_t n = strlen(p);
  if (n > PATH_MAX_LEN || p[n - 1] == '/' || strstr(p, "//"))
    return 0;
  return 1;
}

/* Under topo: checks `limit` against the parent of path (resolved in b). */
static int limit_ok(hy_broker_t *b, const char *path, int limit) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    return 1;
  char dir[PATH_MAX_LEN + 1];
  memcpy(dir, path, (size_t)(slash - path));
  dir[slash - path] = 0;
  hy__channel *p = hy__broker_resolve(b, dir, NULL);
  if (!p || p->limit == 0)
    return 1;
  return limit != 0 && limit <= p->limit;
}

/* Under topo: creates the missing ancestors of path in b (each inherits
 * its parent's limit, broadcast at the top). */
static int make_ancestors(hy_broker_t *b, const char *path) {
  char buf[PATH_MAX_LEN + 1];
  strcpy(buf, path);
  int parent_limit = 0;
  for (char *s = strchr(buf, '/'); s; s = strchr(s + 1, '/')) {
    *s = 0;
    hy__channel *c = hy__broker_resolve(b, buf, NULL);
    if (!c) {
      c = hy__channel_alloc(b, buf, parent_limit);
      if (!c)
        return HY_ENOMEM;
    }
    parent_limit = c->limit;
    *s = '/';
  }
  return 0;
}

int hy_channel_create(hy_broker_t *b, const char *path, int limit) {
  if (!b || !path_ok(path) || limit < 0)
    return HY_EINVAL;
  hy__evstate *st = b->st;
  hy__lock(&st->topo);
  int rc = 0;
  if (hy__broker_resolve(b, path, NULL)) {
    rc = HY_EEXIST;
  } else if ((rc = make_ancestors(b, path)) == 0) {
    if (!limit_ok(b, path, limit))
      rc = HY_EINVAL;
    else if (!hy__channel_alloc(b, path, limit))
      rc = HY_ENOMEM;
  }
  /* Ancestors may have been made even when the channel was refused. */
  int r2 = hy__mux_refresh_up(b);
  if (rc == 0 && r2 < 0)
    rc = r2;
  hy__unlock(&st->topo);
  return rc;
}

int hy_channel_set_pick_run(hy_broker_t *b, const char *path, int run) {
  if (!b || !path_ok(path) || run < 1)
    return HY_EINVAL;
  hy__lock(&b->st->topo);
  hy__channel *c = hy__broker_resolve(b, path, NULL);
  if (c) {
    atomic_store(&c->pick_run, (uint32_t)run);
    atomic_store(&c->run_left, (uint32_t)run); /* the current receiver
                                                  starts a new run */
  }
  hy__unlock(&b->st->topo);
  return c ? 0 : HY_ENOENT;
}

static int under(const char *path, const char *root) {
  size_t n = strlen(root);
  return strncmp(path, root, n) == 0 && (path[n] == 0 || path[n] == '/');
}

int hy_channel_delete(hy_broker_t *b, const char *path) {
  if (!b || !path_ok(path))
    return HY_EINVAL;
  hy__evstate *st = b->st;
  hy__lock(&st->topo);
  int rc = HY_ENOENT, found = 0;
  for (int i = 0; i < b->nlinks; i++)
    if (strcmp(b->links[i].name, path) == 0) {
      hy__mem_free(b->links[i].name);
      hy__mem_free(b->links[i].path);
      b->links[i] = b->links[--b->nlinks];
      st->version++;
      rc = 0;
      break;
    }
  for (int i = 0; i < b->nch && rc != 0; i++)
    if (strcmp(b->ch[i]->path, path) == 0)
      found = 1 + b->ch[i]->synthetic;
  if (found == 2) {
    rc = HY_EPERM; /* a representative follows its sub-brokers */
  } else if (found) {
    for (int i = b->nch - 1; i >= 0; i--)
      if (!b->ch[i]->synthetic && under(b->ch[i]->path, path)) {
        hy__channel_kill(b->ch[i]);
      }
    rc = 0;
  }
  if (rc == 0)
    hy__mux_refresh_up(b);
  hy__unlock(&st->topo);
  return rc;
}

int hy_channel_rename(hy_broker_t *b, const char *from, const char *to) {
  if (!b || !path_ok(from) || !path_ok(to) || under(to, from))
    return HY_EINVAL;
  hy__evstate *st = b->st;
  hy__lock(&st->topo);
  int rc = 0;
  hy__channel *c = NULL;
  for (int i = 0; i < b->nch; i++)
    if (strcmp(b->ch[i]->path, from) == 0)
      c = b->ch[i];
  if (!c)
    rc = HY_ENOENT;
  else if (c->synthetic)
    rc = HY_EPERM;
  else if (hy__broker_resolve(b, to, NULL))
    rc = HY_EEXIST;
  else if ((rc = make_ancestors(b, to)) == 0 && !limit_ok(b, to, c->limit))
    rc = HY_EINVAL;
  if (rc == 0) {
    size_t fl = strlen(from), tl = strlen(to);
    /* Allocate every new name first so that a failure changes nothing. */
    char **names = hy__mem_calloc((size_t)b->nch + 1, sizeof *names);
    if (!names)
      rc = HY_ENOMEM;
    for (int i = 0; rc == 0 && i < b->nch; i++) {
      hy__channel *x = b->ch[i];
      if (x->synthetic || !under(x->path, from))
        continue;
      size_t rest = strlen(x->path) - fl;
      names[i] = hy__mem_alloc(tl + rest + 1);
      if (!names[i]) {
        rc = HY_ENOMEM;
        break;
      }
      memcpy(names[i], to, tl);
      memcpy(names[i] + tl, x->path + fl, rest + 1);
    }
    for (int i = 0; names && i < b->nch; i++) {
      if (!names[i])
        continue;
      if (rc == 0) {
        hy__mem_free(b->ch[i]->path);
        b->ch[i]->path = names[i];
      } else {
        hy__mem_free(names[i]);
      }
    }
    hy__mem_free(names);
    st->version++;
  }
  hy__mux_refresh_up(b);
  hy__unlock(&st->topo);
  return rc;
}

int hy_broker_link(hy_broker_t *b, const char *name, hy_broker_t *target,
                   const char *path) {
  if (!b || !target || !path_ok(name) || !path_ok(path) || b->st != target->st)
    return HY_EINVAL;
  hy__evstate *st = b->st;
  hy__lock(&st->topo);
  int rc = 0;
  if (hy__broker_resolve(b, name, NULL))
    rc = HY_EEXIST;
  else if (!hy__broker_resolve(target, path, NULL))
    rc = HY_ENOENT;
  else if (hy__grow((void **)&b->links, &b->caplinks, b->nlinks + 1,
                    sizeof *b->links) < 0)
    rc = HY_ENOMEM;
  if (rc == 0) {
    hy__link *l = &b->links[b->nlinks];
    l->name = hy__mem_strdup(name);
    l->path = hy__mem_strdup(path);
    l->target = target;
    if (!l->name || !l->path) {
      hy__mem_free(l->name);
      hy__mem_free(l->path);
      rc = HY_ENOMEM;
    } else {
      b->nlinks++;
      st->version++;
      hy__mux_refresh_up(b);
    }
  }
  hy__unlock(&st->topo);
  return rc;
}

int hy_channel_info(hy_broker_t *b, const char *path, hy_channel_info_t *info) {
  if (!b || !path || !info || info->size < sizeof *info)
    return HY_EINVAL;
  memset((char *)info + sizeof info->size, 0, sizeof *info - sizeof info->size);
  hy__lock(&b->st->topo);
  int kind = HY_CHANNEL_PLAIN;
  hy__channel *c = hy__broker_resolve(b, path, &kind);
  if (c) {
    info->kind = kind;
    info->limit = c->limit;
    info->receivers = c->nrcv;
    uint64_t sent = atomic_load(&c->sent), planned = atomic_load(&c->planned);
    for (hy_sender_t *s = c->senders; s; s = s->next) {
      sent += atomic_load(&s->sent);
      planned += atomic_load(&s->planned);
    }
    info->sent = sent;
    info->delivered = planned - atomic_load(&c->undelivered);
    info->expired = atomic_load(&c->expired);
    info->unpicked = atomic_load(&c->unpicked);
    info->dropped = atomic_load(&c->dropped);
  }
  hy__unlock(&b->st->topo);
  return c ? 0 : HY_ENOENT;
}

/* ------------------------------------------------------------------ list */

typedef struct name_kind {
  char *name;
  int kind;
} name_kind;

static int by_name(const void *a, const void *b) {
  return strcmp(((const name_kind *)a)->name, ((const name_kind *)b)->name);
}

int hy_broker_list(hy_broker_t *b, hy_name_cb cb, void *arg) {
  if (!b)
    return HY_EINVAL;
  hy__lock(&b->st->topo);
  int n = b->is_mux ? b->nview : b->nch;
  n += b->nlinks;
  name_kind *v = hy__mem_calloc((size_t)n + 1, sizeof *v);
  int k = 0, rc = 0;
  for (int i = 0; v && i < (b->is_mux ? b->nview : b->nch); i++) {
    v[k].name = hy__mem_strdup(b->is_mux ? b->view[i].name : b->ch[i]->path);
    v[k].kind = b->is_mux ? b->view[i].kind : HY_CHANNEL_PLAIN;
    if (!v[k++].name)
      rc = HY_ENOMEM;
  }
  for (int i = 0; v && i < b->nlinks; i++) {
    v[k].name = hy__mem_strdup(b->links[i].name);
    v[k].kind = HY_CHANNEL_LINK;
    if (!v[k++].name)
      rc = HY_ENOMEM;
  }
  hy__unlock(&b->st->topo);
  if (!v)
    return HY_ENOMEM;
  if (rc == 0) {
    qsort(v, (size_t)k, sizeof *v, by_name);
    for (int i = 0; cb && i < k; i++)
      cb(arg, v[i].name, v[i].kind);
  }
  for (int i = 0; i < k; i++)
    hy__mem_free(v[i].name);
  hy__mem_free(v);
  return rc < 0 ? rc : k;
}
