/* slab.c - the slab layer under the magazines: where constructed buffers
 * come from and go back to.
 *
 * Two back ends, chosen per cache:
 *  - Hydra's slabs (the default): a slab is one block of slab_size bytes
 *    (a power of two, at least 256 KiB) mapped from the OS (alloc/os.h),
 *    aligned to its size, and unmapped when it goes back, so a reap
 *    returns memory at once (mimalloc keeps freed segments for a while),
 *    so the slab of any buffer is `p & ~(slab_size - 1)`: O(1) on free,
 *    no per-buffer header.  The slab header at the start of the block has
 *    a bitmap of buffers that are constructed, a stack of free buffer
 *    indices (the buffers themselves keep their constructed state, so no
 *    free-list link is written into them) and a bump index for buffers
 *    never handed out.  Slabs sit on one of three lists: partial, full and
 *    empty; at most max_emptys empty slabs are kept, the rest go back
 *    (destructors first), and reap gives back every empty slab.
 *  - Direct (HY_CACHE_DIRECT, and objects too big for 8 per slab):
 *    mimalloc object by object (it keeps per-page free lists itself); the
 *    constructor runs when a buffer comes from mimalloc, the destructor
 *    when it goes back.
 *
 * Both take a batch under one lock acquisition, so the magazine layer
 * fills or empties a whole magazine per call.
 *
 * Which is the default was measured with bench/alloc (system "hydra" is
 * this slab back end, "hydra-direct" mimalloc object by object), release
 * build, 2 shared and heavily loaded cores, ns per operation, median of 3
 * runs (each the best of 5), with the inline magazine fast path:
 *
 *                           slabs   direct   mimalloc
 *   alloc-pair-64            1.44     1.46     4.93
 *   alloc-pair-256           1.45     1.56     5.23
 *   alloc-batch-64           5.48     5.35     7.01
 *   alloc-batch-64-random   18.35    17.86    28.09
 *   alloc-batch-256         10.51    10.95    19.85
 *   alloc-batch-256-random  22.60    22.11    54.37
 *   alloc-churn-64           1.72     1.76     2.75
 *   alloc-task-block         4.13     4.53    21.65
 *   batch-64 RSS after reap  0.00     0.59 MiB
 *
 * With magazines in front the two are within noise of each other on time
 * (the magazines serve nearly every call); the slabs are kept as the
 * default because a reap gives their memory back at once (mimalloc keeps
 * freed segments for a while, so "direct" cannot meet the RSS bound after
 * a burst), a free finds its slab without asking mimalloc, and per-slab
 * counts give the statistics their meaning.
 */
#include <string.h>

#include "alloc/internal.h"
#include "alloc/mem.h"

typedef struct hy__slab {
  hy_cache_t *cache;
  struct hy__slab *next, *prev;
  uint32_t inuse;   /* buffers handed out */
  uint32_t ncarved; /* buffers [0, ncarved) were handed out at least once */
  uint32_t nfree;   /* entries on stk */
  uint32_t list;    /* which list: L_PARTIAL, L_FULL, L_EMPTY */
  uint64_t *built;  /* constructed buffers (bitmap) */
  uint16_t *stk;    /* free indices below ncarved */
  char *objs;       /* buffer 0 */
} hy__slab;

enum { L_PARTIAL, L_FULL, L_EMPTY };

/* 256 KiB rather than 64: allocating a batch of 1,000,000 64-byte objects
 * (bench/alloc) took 4.4 ns per object instead of 4.9 (fewer mappings, and
 * the objects of a batch are in fewer runs of ascending addresses); 1 MiB
 * gave 4.2 but makes a slab with one live object hold more. */
#define SLAB_MIN (256 * 1024)
#define SLAB_MAX (1024 * 1024)
#define PER_SLAB_MIN 8
#define PER_SLAB_MAX 65535

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static size_t hdr_size(hy_cache_t *c, uint32_t per) {
  size_t h = sizeof(hy__slab) + (per + 63) / 64 * 8 + (size_t)per * 2;
  return round_up(h, c->align < 64 ? 64 : c->align);
}

int hy__slab_init(hy_cache_t *c) {
  c->max_emptys = 2;
  if (c->direct)
    return 0;
  size_t s = SLAB_MIN;
  while (s < SLAB_MAX && s < PER_SLAB_MIN * c->stride * 2)
    s *= 2;
  uint32_t per = (uint32_t)(s / c->stride);
  if (per > PER_SLAB_MAX)
    per = PER_SLAB_MAX;
  while (per > 0 && hdr_size(c, per) + per * c->stride > s)
    per--;
  if (per < PER_SLAB_MIN) {
    c->direct = 1; /* page-sized objects: one by one */
    return 0;
  }
  c->slab_size = s;
  c->per_slab = per;
  c->slab_hdr = hdr_size(c, per);
  c->slab_slack = s - c->slab_hdr - per * c->stride;
  return 0;
}

/* ------------------------------------------------------------ lists */

static hy__slab **list_head(hy_cache_t *c, uint32_t l) {
  return l == L_PARTIAL ? &c->partial : l == L_FULL ? &c->fulls : &c->emptys;
}

static void unlink_slab(hy_cache_t *c, hy__slab *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    *list_head(c, s->list) = s->next;
  if (s->next)
    s->next->prev = s->prev;
  if (s->list == L_EMPTY)
    c->nemptys--;
}

static void link_slab(hy_cache_t *c, hy__slab *s, uint32_t l) {
  hy__slab **h = list_head(c, l);
  s->list = l;
  s->prev = NULL;
  s->next = *h;
  if (*h)
    (*h)->prev = s;
  *h = s;
  if (l == L_EMPTY)
    c->nemptys++;
}

static uint32_t list_for(hy_cache_t *c, hy__slab *s) {
  return s->inuse == 0 ? L_EMPTY : s->inuse == c->per_slab ? L_FULL : L_PARTIAL;
}

static void relist(hy_cache_t *c, hy__slab *s) {
  uint32_t l = list_for(c, s);
  if (l != s->list) {
    unlink_slab(c, s);
    link_slab(c, s, l);
  }
}

/* ------------------------------------------------------------ slabs */

/* Slab colouring (Bonwick 1994, section 4.1): the objects of successive
 * slabs start at successive cache-line offsets within the slack at the end
 * of a slab, and each cache starts at its own offset, so that objects at
 * the same index of different slabs (and caches) do not all fall on the
 * same cache sets, nor alias a magazine's slots in the low 12 address bits
 * (which stalls a load behind an unrelated store). */
static size_t slab_color(hy_cache_t *c) {
  size_t step = c->align < 64 ? 64 : c->align;
  size_t colors = c->slab_slack / step + 1;
  uint64_t k = atomic_fetch_add_explicit(&c->color_seq, 1, memory_order_relaxed);
  return (size_t)((k + c->gen * 7) % colors) * step;
}

/* Once a cache holds CHUNK_AFTER slabs, its new slabs are carved from
 * chunks of CHUNK bytes on huge pages (hy__os_map_chunk): a big cache's
 * objects then cost the TLB an entry per 2 MiB instead of per 4 KiB
 * (bench/alloc, a batch of 1,000,000 64-byte objects freed in random
 * order and allocated again: 14-17 -> 10-11 ns per object; in address
 * order 5.0 -> 3.7).  A slab still goes back to the system by itself
 * (the kernel splits the huge page); reap and destroy give back the
 * unused rest of the chunk too.  A small cache (and Windows, where part
 * of a mapping cannot go back alone) keeps a mapping per slab, so it
 * holds no chunk it does not need; so do the magazine caches, whose
 * slab with a thread's two loaded magazines would keep a whole huge
 * page resident after a reap. */
#define CHUNK ((size_t)2 << 20)
#define CHUNK_AFTER 8

static char *slab_map(hy_cache_t *c) {
  if (c->slab_size < CHUNK && !(c->flags & HY__CACHE_INTERNAL)) {
    char *p = NULL;
    hy__oslock_lock(&c->slab_lock);
    if (c->nslabs >= CHUNK_AFTER) {
      if (!c->chunk_left) {
        char *ch = hy__os_map_chunk(CHUNK);
        if (ch) {
          c->chunk_next = ch;
          c->chunk_left = CHUNK / c->slab_size;
        }
      }
      if (c->chunk_left) {
        p = c->chunk_next;
        c->chunk_next += c->slab_size;
        c->chunk_left--;
      }
    }
    hy__oslock_unlock(&c->slab_lock);
    if (p)
      return p;
  }
  return hy__os_map_aligned(c->slab_size, c->slab_size);
}

/* Gives back the unused rest of the current chunk. */
static void chunk_drop(hy_cache_t *c) {
  hy__oslock_lock(&c->slab_lock);
  char *p = c->chunk_next;
  size_t n = (size_t)c->chunk_left * c->slab_size;
  c->chunk_next = NULL;
  c->chunk_left = 0;
  hy__oslock_unlock(&c->slab_lock);
  if (n)
    hy__os_unmap(p, n);
}

static hy__slab *slab_new(hy_cache_t *c) {
  char *mem = slab_map(c);
  if (!mem)
    return NULL;
  hy__slab *s = (hy__slab *)mem;
  memset(s, 0, sizeof *s);
  s->cache = c;
  s->built = (uint64_t *)(s + 1);
  memset(s->built, 0, (c->per_slab + 63) / 64 * 8);
  s->stk = (uint16_t *)(s->built + (c->per_slab + 63) / 64);
  s->objs = mem + c->slab_hdr + slab_color(c);
  s->list = L_EMPTY;
  return s;
}

static int is_built(const hy__slab *s, uint32_t i) {
  return (s->built[i / 64] >> (i % 64)) & 1;
}

/* Destructs the free constructed buffers of s and gives its memory back.
 * s is off every list; no lock held. */
static void slab_release(hy_cache_t *c, hy__slab *s) {
  for (uint32_t k = 0; k < s->nfree; k++) {
    uint32_t i = s->stk[k];
    if (!is_built(s, i))
      continue;
    void *obj = s->objs + (size_t)i * c->stride + c->offset;
    HY__UNPOISON(obj, c->size);
    if (c->dtor && !c->poison) {
      c->dtor(obj, c->arg);
      atomic_fetch_add_explicit(&c->dtor_calls, 1, memory_order_relaxed);
    }
  }
  HY__UNPOISON(s, c->slab_size);
  hy__os_unmap(s, c->slab_size);
}

static uint32_t index_of(hy_cache_t *c, hy__slab *s, void *obj) {
  return (uint32_t)(((char *)obj - c->offset - s->objs) / c->stride);
}

/* Runs the constructor on the buffers of v[0..k) that are new; returns how
 * many of v are usable (failed ones go back unconstructed). */
static int construct(hy_cache_t *c, void **v, int n, void **fresh, int k) {
  int failed_at = -1;
  for (int j = 0; j < k; j++) {
    if (c->checks)
      hy__dbg_init(c, fresh[j]);
    if (c->ctor && !c->poison) {
      atomic_fetch_add_explicit(&c->ctor_calls, 1, memory_order_relaxed);
      if (c->ctor(fresh[j], c->arg) != 0) {
        failed_at = j;
        break;
      }
    }
  }
  if (failed_at < 0)
    return n;
  /* Give back every fresh buffer from the failed one on, unconstructed,
   * and drop them from v. */
  int keep = 0;
  for (int i = 0; i < n; i++) {
    int bad = 0;
    for (int j = failed_at; j < k; j++)
      if (v[i] == fresh[j])
        bad = 1;
    if (!bad)
      v[keep++] = v[i];
  }
  if (c->direct) {
    for (int j = failed_at; j < k; j++) {
      hy__mem_free((char *)fresh[j] - c->offset);
    }
    hy__oslock_lock(&c->slab_lock);
    c->direct_objs -= (uint64_t)(k - failed_at);
    c->bytes_held -= (uint64_t)(k - failed_at) * c->stride;
    hy__oslock_unlock(&c->slab_lock);
    return keep;
  }
  hy__oslock_lock(&c->slab_lock);
  for (int j = failed_at; j < k; j++) {
    hy__slab *s = (hy__slab *)((uintptr_t)fresh[j] & ~(uintptr_t)(c->slab_size - 1));
    uint32_t i = index_of(c, s, fresh[j]);
    s->built[i / 64] &= ~((uint64_t)1 << (i % 64));
    s->stk[s->nfree++] = (uint16_t)i;
    s->inuse--;
    relist(c, s);
  }
  hy__oslock_unlock(&c->slab_lock);
  return keep;
}

#define BATCH_MAX 256

static int get_direct(hy_cache_t *c, void **out, int n) {
  int got = 0;
  for (; got < n; got++) {
    char *b = hy__mem_aligned(c->stride, c->align);
    if (!b)
      break;
    out[got] = b + c->offset;
  }
  if (got) {
    hy__oslock_lock(&c->slab_lock);
    c->direct_objs += (uint64_t)got;
    c->bytes_held += (uint64_t)got * c->stride;
    hy__oslock_unlock(&c->slab_lock);
  }
  return construct(c, out, got, out, got);
}

int hy__slab_get(hy_cache_t *c, void **out, int n) {
  if (n > BATCH_MAX)
    n = BATCH_MAX;
  if (c->direct)
    return get_direct(c, out, n);
  void *fresh[BATCH_MAX];
  int got = 0, k = 0;
  hy__oslock_lock(&c->slab_lock);
  while (got < n) {
    hy__slab *s = c->partial ? c->partial : c->emptys;
    if (!s) {
      hy__oslock_unlock(&c->slab_lock);
      s = slab_new(c);
      hy__oslock_lock(&c->slab_lock);
      if (!s)
        break;
      link_slab(c, s, L_EMPTY);
      c->nslabs++;
      c->bytes_held += c->slab_size;
      continue;
    }
    while (got < n && s->inuse < c->per_slab) {
      uint32_t i = s->nfree ? s->stk[--s->nfree] : s->ncarved++;
      void *obj = s->objs + (size_t)i * c->stride + c->offset;
      if (!is_built(s, i)) {
        s->built[i / 64] |= (uint64_t)1 << (i % 64);
        fresh[k++] = obj;
      }
      out[got++] = obj;
      s->inuse++;
    }
    relist(c, s);
  }
  hy__oslock_unlock(&c->slab_lock);
  return k ? construct(c, out, got, fresh, k) : got;
}

void hy__slab_put(hy_cache_t *c, void *const *objs, int n) {
  if (c->direct) {
    for (int i = 0; i < n; i++) {
      HY__UNPOISON(objs[i], c->size);
      if (c->dtor && !c->poison) {
        c->dtor(objs[i], c->arg);
        atomic_fetch_add_explicit(&c->dtor_calls, 1, memory_order_relaxed);
      }
      hy__mem_free((char *)objs[i] - c->offset);
    }
    hy__oslock_lock(&c->slab_lock);
    c->direct_objs -= (uint64_t)n;
    c->bytes_held -= (uint64_t)n * c->stride;
    hy__oslock_unlock(&c->slab_lock);
    return;
  }
  hy__slab *gone = NULL;
  hy__oslock_lock(&c->slab_lock);
  for (int j = 0; j < n; j++) {
    hy__slab *s = (hy__slab *)((uintptr_t)objs[j] & ~(uintptr_t)(c->slab_size - 1));
    s->stk[s->nfree++] = (uint16_t)index_of(c, s, objs[j]);
    s->inuse--;
    relist(c, s);
  }
  while (c->nemptys > c->max_emptys) {
    hy__slab *s = c->emptys;
    unlink_slab(c, s);
    c->nslabs--;
    c->bytes_held -= c->slab_size;
    s->next = gone;
    gone = s;
  }
  hy__oslock_unlock(&c->slab_lock);
  while (gone) {
    hy__slab *s = gone;
    gone = s->next;
    slab_release(c, s);
  }
}

static size_t release_list(hy_cache_t *c, hy__slab *s) {
  size_t bytes = 0;
  while (s) {
    hy__slab *next = s->next;
    slab_release(c, s);
    bytes += c->slab_size;
    s = next;
  }
  return bytes;
}

size_t hy__slab_reap(hy_cache_t *c) {
  if (c->direct)
    return 0; /* nothing is held: the depot flush gave it all back */
  chunk_drop(c);
  hy__oslock_lock(&c->slab_lock);
  hy__slab *s = c->emptys;
  c->emptys = NULL;
  c->nslabs -= c->nemptys;
  c->bytes_held -= c->nemptys * c->slab_size;
  c->nemptys = 0;
  hy__oslock_unlock(&c->slab_lock);
  return release_list(c, s);
}

void hy__slab_fini(hy_cache_t *c) {
  if (c->direct)
    return; /* leaked objects stay with their owner */
  chunk_drop(c);
  hy__oslock_lock(&c->slab_lock);
  hy__slab *lists[3] = {c->emptys, c->partial, c->fulls};
  c->emptys = c->partial = c->fulls = NULL;
  c->nslabs = c->nemptys = 0;
  c->bytes_held = 0;
  hy__oslock_unlock(&c->slab_lock);
  for (int i = 0; i < 3; i++)
    release_list(c, lists[i]);
}
