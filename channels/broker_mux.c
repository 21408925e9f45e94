/* broker_mux.c - multiplexors: the merged namespace of the sub-brokers.
 *
 * The view is rebuilt from scratch after every change below the
 * multiplexor (they are rare; sends never look at names).  For each name:
 *   - the multiplexor has a channel of its own with it (created there, or
 *     a representative made earlier): that channel is bridged with every
 *     same-named channel of the sub-brokers;
 *   - else two or more sub-brokers have it: a synthetic representative is
 *     made and bridged with each of them;
 *   - else one sub-broker has it: the name is a link to that channel.
 * A representative whose last member went away is deleted (its receivers
 * drain, then read HY_ECLOSED).  Bridges are edges; a send walks the
 * connected group once, so nested multiplexors cannot loop or duplicate.
 */
#include <stdlib.h>
#include <string.h>

#include "channels/event_internal.h"

void hy__channel_unbridge_all(hy__channel *c);

typedef struct item {
  const char *name;
  hy__channel *ch;
  int own; /* 1: the multiplexor's own channel */
} item;

static int by_name(const void *a, const void *b) {
  const item *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  if (c)
    return c;
  return y->own - x->own; /* own first */
}

static int add(item **v, int *n, int *cap, const char *name, hy__channel *ch,
               int own) {
  if (!ch || ch->deleted)
    return 0;
  if (hy__grow((void **)v, cap, *n + 1, sizeof **v) < 0)
    return HY_ENOMEM;
  (*v)[*n].name = name;
  (*v)[*n].ch = ch;
  (*v)[*n].own = own;
  (*n)++;
  return 0;
}

static int bridge(hy__channel *x, hy__channel *y) {
  for (int i = 0; i < x->nbridge; i++)
    if (x->bridge[i] == y)
      return 0;
  if (hy__grow((void **)&x->bridge, &x->capbridge, x->nbridge + 1,
               sizeof *x->bridge) < 0 ||
      hy__grow((void **)&y->bridge, &y->capbridge, y->nbridge + 1,
               sizeof *y->bridge) < 0)
    return HY_ENOMEM;
  x->bridge[x->nbridge++] = y;
  y->bridge[y->nbridge++] = x;
  return 0;
}

int hy__mux_rebuild(hy_broker_t *m) {
  item *v = NULL;
  int n = 0, cap = 0, rc = 0;
  for (int i = 0; i < m->nch && rc == 0; i++) {
    hy__channel_unbridge_all(m->ch[i]);
    rc = add(&v, &n, &cap, m->ch[i]->path, m->ch[i], 1);
  }
  for (int s = 0; s < m->nsubs && rc == 0; s++) {
    hy_broker_t *sb = m->subs[s];
    if (sb->is_mux)
      for (int i = 0; i < sb->nview && rc == 0; i++)
        rc = add(&v, &n, &cap, sb->view[i].name, sb->view[i].ch, 0);
    else
      for (int i = 0; i < sb->nch && rc == 0; i++)
        rc = add(&v, &n, &cap, sb->ch[i]->path, sb->ch[i], 0);
    for (int i = 0; i < sb->nlinks && rc == 0; i++)
      rc = add(&v, &n, &cap, sb->links[i].name,
               hy__broker_resolve(sb, sb->links[i].name, NULL), 0);
  }
  if (rc < 0) {
    hy__mem_free(v);
    return rc;
  }
  if (n > 1)
    qsort(v, (size_t)n, sizeof *v, by_name);

  hy__view *nv = hy__mem_calloc((size_t)n + 1, sizeof *nv);
  if (!nv) {
    hy__mem_free(v);
    return HY_ENOMEM;
  }
  int nn = 0;
  for (int i = 0; i < n;) {
    int j = i;
    while (j < n && strcmp(v[j].name, v[i].name) == 0)
      j++;
    hy__channel *own = v[i].own ? v[i].ch : NULL;
    hy__channel *mem[64];
    int nm = 0;
    for (int k = i; k < j; k++) {
      if (v[k].own)
        continue;
      int dup = 0;
      for (int q = 0; q < nm; q++)
        dup |= mem[q] == v[k].ch;
      if (!dup && nm < 64)
        mem[nm++] = v[k].ch;
    }
    const char *name = v[i].name;
    hy__view *e = &nv[nn];
    if (own && own->synthetic && nm == 0) {
      hy__channel_kill(own);
      i = j;
      continue;
    }
    if (!own && nm >= 2) {
      own = hy__channel_alloc(m, name, mem[0]->limit);
      if (!own) {
        rc = HY_ENOMEM;
        break;
      }
      own->synthetic = 1;
      name = own->path;
    }
    e->name = hy__mem_strdup(name);
    if (!e->name) {
      rc = HY_ENOMEM;
      break;
    }
    if (own) {
      e->ch = own;
      e->kind = own->synthetic ? HY_CHANNEL_REPRESENTATIVE : HY_CHANNEL_PLAIN;
      for (int q = 0; q < nm && rc == 0; q++)
        rc = bridge(own, mem[q]);
    } else {
      e->ch = mem[0];
      e->kind = HY_CHANNEL_LINK;
    }
    nn++;
    i = j;
  }
  hy__mem_free(v);
  for (int i = 0; i < m->nview; i++)
    hy__mem_free(m->view[i].name);
  hy__mem_free(m->view);
  m->view = nv;
  m->nview = nn;
  m->capview = n + 1;
  m->st->version++;
  return rc;
}

int hy__mux_refresh_up(hy_broker_t *b) {
  int rc = 0;
  if (b->is_mux)
    rc = hy__mux_rebuild(b);
  for (int i = 0; i < b->nparents; i++) {
    int r = hy__mux_refresh_up(b->parents[i]);
    if (rc == 0)
      rc = r;
  }
  b->st->version++;
  return rc;
}

static int reaches(hy_broker_t *from, hy_broker_t *to, int depth) {
  if (from == to)
    return 1;
  if (depth > 64)
    return 1;
  for (int i = 0; i < from->nsubs; i++)
    if (reaches(from->subs[i], to, depth + 1))
      return 1;
  return 0;
}

int hy_mux_add(hy_broker_t *mux, hy_broker_t *sub) {
  if (!mux || !sub || !mux->is_mux || mux->st != sub->st)
    return HY_EINVAL;
  hy__evstate *st = mux->st;
  hy__lock(&st->topo);
  int rc = 0;
  for (int i = 0; i < mux->nsubs; i++)
    if (mux->subs[i] == sub)
      rc = HY_EEXIST;
  if (rc == 0 && reaches(sub, mux, 0))
    rc = HY_EINVAL; /* a cycle */
  if (rc == 0 &&
      (hy__grow((void **)&mux->subs, &mux->capsubs, mux->nsubs + 1,
                sizeof *mux->subs) < 0 ||
       hy__grow((void **)&sub->parents, &sub->capparents, sub->nparents + 1,
                sizeof *sub->parents) < 0))
    rc = HY_ENOMEM;
  if (rc == 0) {
    mux->subs[mux->nsubs++] = sub;
    sub->parents[sub->nparents++] = mux;
    rc = hy__mux_refresh_up(mux);
  }
  hy__unlock(&st->topo);
  return rc;
}

int hy_mux_remove(hy_broker_t *mux, hy_broker_t *sub) {
  if (!mux || !sub || !mux->is_mux)
    return HY_EINVAL;
  hy__evstate *st = mux->st;
  hy__lock(&st->topo);
  int rc = HY_ENOENT;
  for (int i = 0; i < mux->nsubs; i++)
    if (mux->subs[i] == sub) {
      mux->subs[i] = mux->subs[--mux->nsubs];
      for (int j = 0; j < sub->nparents; j++)
        if (sub->parents[j] == mux) {
          sub->parents[j] = sub->parents[--sub->nparents];
          break;
        }
      rc = hy__mux_refresh_up(mux);
      break;
    }
  hy__unlock(&st->topo);
  return rc;
}
