/* event_codec.c - the wire form of an event, and checking bytes from
 * outside before anything is built from them.
 *
 *   u32 magic "HYE1"
 *   u8  L, then L bytes: the type name (1..63, no NUL)
 *   i64 time left before expiry in ns (-1: never)
 *   u32 picking count
 *   u16 R, then R bytes: the reply channel (0: none; no NUL)
 *   u32 P, then P bytes: the payload as the type serializes it
 * All integers little-endian; the form must end exactly after the payload.
 */
#include <string.h>

#include "channels/event_internal.h"

#define MAGIC 0x31455948u /* "HYE1" */

static void put_u16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
}
static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}
static uint16_t get_u16(const unsigned char *p) {
  return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++)
    v |= (uint32_t)p[i] << (8 * i);
  return v;
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}

long hy_event_serialize(const hy_event_t *ev, void *out, size_t cap) {
  if (!ev || (!out && cap))
    return HY_EINVAL;
  const hy_event_type_t *t = ev->type;
  size_t nl = strlen(t->name);
  size_t rl = ev->reply ? strlen(ev->reply) : 0;
  long pl;
  if (t->serialize) {
    pl = t->serialize(ev->payload, ev->len, NULL, 0);
    if (pl < 0)
      return pl;
  } else {
    pl = (long)ev->len;
  }
  if ((unsigned long)pl > 0xffffffffu)
    return HY_EMSGSIZE;
  size_t head = 4 + 1 + nl + 8 + 4 + 2 + rl + 4;
  size_t total = head + (size_t)pl;
  if (total > cap)
    return (long)total;
  unsigned char *p = out;
  put_u32(p, MAGIC);
  p += 4;
  *p++ = (unsigned char)nl;
  memcpy(p, t->name, nl);
  p += nl;
  int64_t left = -1;
  if (ev->expiry != HY_FOREVER) {
    left = ev->expiry - hy_now();
    if (left < 0)
      left = 0;
  }
  put_u64(p, (uint64_t)left);
  p += 8;
  put_u32(p, atomic_load(&((hy_event_t *)ev)->picks));
  p += 4;
  put_u16(p, (uint16_t)rl);
  p += 2;
  if (rl)
    memcpy(p, ev->reply, rl);
  p += rl;
  put_u32(p, (uint32_t)pl);
  p += 4;
  if (t->serialize) {
    long w = t->serialize(ev->payload, ev->len, p, (size_t)pl);
    if (w != pl)
      return w < 0 ? w : HY_EPROTO;
  } else if (pl) {
    memcpy(p, ev->payload, (size_t)pl);
  }
  return (long)total;
}

int hy__event_deserialize_depth(hy_runtime_t *rt, const void *in, size_t n,
                                int depth, hy_event_t **out) {
  if (!out)
    return HY_EINVAL;
  *out = NULL;
  if (!in && n)
    return HY_EINVAL;
  if (depth > HY__EVENT_MAX_DEPTH)
    return HY_EPROTO;
  const unsigned char *p = in, *end = p + n;
  if (n < 5 || get_u32(p) != MAGIC)
    return HY_EPROTO;
  p += 4;
  size_t nl = *p++;
  if (nl == 0 || nl > HY_EVENT_NAME_MAX || (size_t)(end - p) < nl)
    return HY_EPROTO;
  char name[HY_EVENT_NAME_MAX + 1];
  memcpy(name, p, nl);
  name[nl] = 0;
  if (memchr(name, 0, nl))
    return HY_EPROTO;
  p += nl;
  if ((size_t)(end - p) < 8 + 4 + 2)
    return HY_EPROTO;
  int64_t left = (int64_t)get_u64(p);
  p += 8;
  uint32_t picks = get_u32(p);
  p += 4;
  size_t rl = get_u16(p);
  p += 2;
  if (left < -1 || rl > 255 || (size_t)(end - p) < rl)
    return HY_EPROTO;
  const unsigned char *reply = p;
  if (rl && memchr(reply, 0, rl))
    return HY_EPROTO;
  p += rl;
  if ((size_t)(end - p) < 4)
    return HY_EPROTO;
  size_t pl = get_u32(p);
  p += 4;
  if ((size_t)(end - p) != pl)
    return HY_EPROTO;

  const hy_event_type_t *t = hy_event_type_find(rt, name);
  if (!t)
    return HY_ENOENT;
  size_t len = pl;
  int rc;
  if (t->deserialize) {
    rc = t->deserialize(rt, p, pl, NULL, &len);
    if (rc < 0)
      return rc;
    (void)depth;
  } else if (t->size && pl != t->size) {
    return HY_EPROTO;
  }
  if (t->size && len != t->size)
    return HY_EPROTO;
  hy_time_t expiry = HY_FOREVER;
  if (left >= 0)
    expiry = hy_deadline_in(left);
  hy_event_t *ev;
  rc = hy_event_new(t, NULL, len, expiry, &ev);
  if (rc < 0)
    return rc;
  if (t->deserialize) {
    size_t got = len;
    /* The payload holds nothing yet: a failure must not run destroy. */
    rc = t->deserialize(rt, p, pl, ev->payload, &got);
    if (rc < 0 || got != len) {
      ev->type = &hy_event_bytes;
      hy_event_unref(ev);
      return rc < 0 ? rc : HY_EPROTO;
    }
  } else if (pl) {
    memcpy(ev->payload, p, pl);
  }
  atomic_store(&ev->picks, picks);
  if (rl) {
    ev->reply = hy__mem_alloc(rl + 1);
    if (!ev->reply) {
      hy_event_unref(ev);
      return HY_ENOMEM;
    }
    memcpy(ev->reply, reply, rl);
    ev->reply[rl] = 0;
  }
  *out = ev;
  return 0;
}

int hy_event_deserialize(hy_runtime_t *rt, const void *in, size_t n,
                         hy_event_t **out) {
  return hy__event_deserialize_depth(rt, in, n, 0, out);
}
