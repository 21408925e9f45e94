/* event_types.c - the built-in event types: bytes, text, i64, the system
 * facts (phase, task exit, signal, log) and batches.  Fixed-size records
 * travel as explicit little-endian fields, never as raw structs, and every
 * deserializer checks lengths and ranges before building anything.
 */
#include <string.h>

#include "channels/event_internal.h"

static size_t bounded_len(const char *s, size_t max) {
  size_t n = 0;
  while (n < max && s[n])
    n++;
  return n;
}

/* ----------------------------------------------------------- bytes, text */

const hy_event_type_t hy_event_bytes = {"bytes", 0, NULL, NULL, NULL};

static int text_de(hy_runtime_t *rt, const void *in, size_t n, void *payload,
                   size_t *len) {
  (void)rt;
  if (n && memchr(in, 0, n))
    return HY_EPROTO;
  if (payload)
    memcpy(payload, in, n);
  *len = n;
  return 0;
}

const hy_event_type_t hy_event_text = {"text", 0, NULL, NULL, text_de};

/* ------------------------------------------------------------ integers */

static void le_put(unsigned char *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t le_get(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}

static long i64_ser(const void *payload, size_t len, void *out, size_t cap) {
  (void)len;
  if (cap >= 8) {
    int64_t v;
    memcpy(&v, payload, 8);
    le_put(out, (uint64_t)v, 8);
  }
  return 8;
}

static int i64_de(hy_runtime_t *rt, const void *in, size_t n, void *payload,
                  size_t *len) {
  (void)rt;
  if (n != 8)
    return HY_EPROTO;
  if (payload) {
    int64_t v = (int64_t)le_get(in, 8);
    memcpy(payload, &v, 8);
  }
  *len = 8;
  return 0;
}

const hy_event_type_t hy_event_i64 = {"i64", 8, NULL, i64_ser, i64_de};

static long i32rec_ser(const void *payload, size_t len, void *out, size_t cap) {
  (void)len;
  if (cap >= 4) {
    int32_t v;
    memcpy(&v, payload, 4);
    le_put(out, (uint32_t)v, 4);
  }
  return 4;
}

static int phase_de(hy_runtime_t *rt, const void *in, size_t n, void *payload,
                    size_t *len) {
  (void)rt;
  if (n != 4)
    return HY_EPROTO;
  int32_t v = (int32_t)le_get(in, 4);
  if (v < HY_PHASE_RUNNING || v > HY_PHASE_DONE)
    return HY_EPROTO;
  if (payload)
    ((hy_phase_event_t *)payload)->phase = v;
  *len = sizeof(hy_phase_event_t);
  return 0;
}

const hy_event_type_t hy_event_phase = {"sys.phase", sizeof(hy_phase_event_t),
                                        NULL, i32rec_ser, phase_de};

static int signal_de(hy_runtime_t *rt, const void *in, size_t n,
                     void *payload, size_t *len) {
  (void)rt;
  if (n != 4)
    return HY_EPROTO;
  int32_t v = (int32_t)le_get(in, 4);
  if (v <= 0 || v > 1024)
    return HY_EPROTO;
  if (payload)
    ((hy_signal_event_t *)payload)->signo = v;
  *len = sizeof(hy_signal_event_t);
  return 0;
}

const hy_event_type_t hy_event_signal = {
    "sys.signal", sizeof(hy_signal_event_t), NULL, i32rec_ser, signal_de};

/* task: u64 id, i32 reason, u8 L, L name bytes */
static long task_ser(const void *payload, size_t len, void *out, size_t cap) {
  (void)len;
  const hy_task_event_t *t = payload;
  size_t nl = bounded_len(t->name, sizeof t->name - 1);
  size_t need = 8 + 4 + 1 + nl;
  if (cap >= need) {
    unsigned char *p = out;
    le_put(p, t->task, 8);
    le_put(p + 8, (uint32_t)t->reason, 4);
    p[12] = (unsigned char)nl;
    memcpy(p + 13, t->name, nl);
  }
  return (long)need;
}

static int task_de(hy_runtime_t *rt, const void *in, size_t n, void *payload,
                   size_t *len) {
  (void)rt;
  const unsigned char *p = in;
  if (n < 13)
    return HY_EPROTO;
  int32_t reason = (int32_t)le_get(p + 8, 4);
  size_t nl = p[12];
  if (reason < HY_TASK_RETURNED || reason > HY_TASK_NO_STACK || nl > 31 ||
      n != 13 + nl || memchr(p + 13, 0, nl))
    return HY_EPROTO;
  if (payload) {
    hy_task_event_t *t = payload;
    t->task = le_get(p, 8);
    t->reason = reason;
    memcpy(t->name, p + 13, nl);
    t->name[nl] = 0;
  }
  *len = sizeof(hy_task_event_t);
  return 0;
}

const hy_event_type_t hy_event_task = {"sys.task", sizeof(hy_task_event_t),
                                       NULL, task_ser, task_de};

/* log: i32 level, then the text without its NUL */
static long log_ser(const void *payload, size_t len, void *out, size_t cap) {
  const hy_log_event_t *l = payload;
  size_t tl = len > sizeof *l ? bounded_len(l->text, len - sizeof *l) : 0;
  if (cap >= 4 + tl) {
    le_put(out, (uint32_t)l->level, 4);
    memcpy((unsigned char *)out + 4, l->text, tl);
  }
  return (long)(4 + tl);
}

static int log_de(hy_runtime_t *rt, const void *in, size_t n, void *payload,
                  size_t *len) {
  (void)rt;
  const unsigned char *p = in;
  if (n < 4 || memchr(p + 4, 0, n - 4))
    return HY_EPROTO;
  if (payload) {
    hy_log_event_t *l = payload;
    l->level = (int32_t)le_get(p, 4);
    memcpy(l->text, p + 4, n - 4);
    l->text[n - 4] = 0;
  }
  *len = sizeof(hy_log_event_t) + (n - 4) + 1;
  return 0;
}

const hy_event_type_t hy_event_log = {"sys.log", 0, NULL, log_ser, log_de};

/* ---------------------------------------------------------------- batch */

/* payload: size_t n, then n event pointers (each holds a reference).
 * wire: u32 n, then n times (u32 length, the event's wire form). */
typedef struct batch {
  size_t n;
  hy_event_t *v[];
} batch;

static void batch_destroy(void *payload, size_t len) {
  (void)len;
  batch *b = payload;
  for (size_t i = 0; i < b->n; i++)
    hy_event_unref(b->v[i]);
}

static long batch_ser(const void *payload, size_t len, void *out, size_t cap) {
  (void)len;
  const batch *b = payload;
  if (b->n > 0xffffffffu)
    return HY_EMSGSIZE;
  unsigned char *p = out;
  size_t total = 4;
  if (cap >= 4)
    le_put(p, b->n, 4);
  for (size_t i = 0; i < b->n; i++) {
    size_t room = cap > total + 4 ? cap - total - 4 : 0;
    long w = hy_event_serialize(b->v[i], room ? p + total + 4 : NULL, room);
    if (w < 0)
      return w;
    if (cap >= total + 4 + (size_t)w)
      le_put(p + total, (uint64_t)w, 4);
    total += 4 + (size_t)w;
    if (total > 0x7fffffffu)
      return HY_EMSGSIZE;
  }
  return (long)total;
}

/* Walks the nested form without building anything, so that hostile
 * nesting is refused before any recursion that builds events. */
static int batch_scan(const unsigned char *p, size_t n, int depth,
                      size_t *count) {
  if (depth > HY__EVENT_MAX_DEPTH || n < 4)
    return HY_EPROTO;
  size_t k = le_get(p, 4), off = 4;
  if (k > (n - 4) / 4)
    return HY_EPROTO;
  for (size_t i = 0; i < k; i++) {
    if (n - off < 4)
      return HY_EPROTO;
    size_t l = le_get(p + off, 4);
    off += 4;
    if (l > n - off)
      return HY_EPROTO;
    /* A nested batch: "HYE1", name "batch", then find its payload. */
    const unsigned char *e = p + off;
    if (l >= 5 + 5 && e[4] == 5 && memcmp(e + 5, "batch", 5) == 0) {
      size_t h = 4 + 1 + 5;
      if (l < h + 14)
        return HY_EPROTO;
      size_t rl = le_get(e + h + 12, 2);
      h += 14 + rl;
      if (l < h + 4)
        return HY_EPROTO;
      size_t pl = le_get(e + h, 4);
      if (pl != l - h - 4)
        return HY_EPROTO;
      size_t sub;
      int rc = batch_scan(e + h + 4, pl, depth + 1, &sub);
      if (rc < 0)
        return rc;
    }
    off += l;
  }
  if (off != n)
    return HY_EPROTO;
  *count = k;
  return 0;
}

static int batch_de(hy_runtime_t *rt, const void *in, size_t n, void *payload,
                    size_t *len) {
  const unsigned char *p = in;
  size_t k;
  int rc = batch_scan(p, n, 1, &k);
  if (rc < 0)
    return rc;
  size_t need = sizeof(batch) + k * sizeof(hy_event_t *);
  if (!payload) {
    *len = need;
    return 0;
  }
  if (*len != need)
    return HY_EPROTO;
  batch *b = payload;
  size_t off = 4;
  for (size_t i = 0; i < k; i++) {
    size_t l = le_get(p + off, 4);
    off += 4;
    rc = hy_event_deserialize(rt, p + off, l, &b->v[i]);
    if (rc < 0) {
      for (size_t j = 0; j < i; j++)
        hy_event_unref(b->v[j]);
      return rc;
    }
    off += l;
  }
  b->n = k;
  return 0;
}

const hy_event_type_t hy_event_batch = {"batch", 0, batch_destroy, batch_ser,
                                        batch_de};

int hy_event_batch_new(hy_event_t *const *evs, size_t n, hy_event_t **out) {
  if (!out || (!evs && n))
    return HY_EINVAL;
  *out = NULL;
  for (size_t i = 0; i < n; i++)
    if (!evs[i])
      return HY_EINVAL;
  hy_event_t *ev;
  int rc = hy_event_new(&hy_event_batch, NULL,
                        sizeof(batch) + n * sizeof(hy_event_t *), HY_FOREVER,
                        &ev);
  if (rc < 0)
    return rc;
  batch *b = (batch *)ev->payload;
  hy_time_t latest = n ? evs[0]->expiry : HY_FOREVER;
  for (size_t i = 0; i < n; i++) {
    b->v[i] = hy_event_ref(evs[i]);
    if (evs[i]->expiry > latest)
      latest = evs[i]->expiry;
  }
  b->n = n;
  ev->expiry = latest;
  *out = ev;
  return 0;
}

hy_event_t *const *hy_event_batch_items(const hy_event_t *ev, size_t *n) {
  if (!ev || ev->type != &hy_event_batch) {
    if (n)
      *n = 0;
    return NULL;
  }
  const batch *b = (const batch *)ev->payload;
  if (n)
    *n = b->n;
  return b->v;
}
