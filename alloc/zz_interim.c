#define _GNU_SOURCE
/* zz_interim.c - a placeholder allocator (malloc per object, mmap per
 * stack) used until the slab family lands; same API as include/hydra/alloc.h
 * and alloc/mem.h. */
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "alloc/mem.h"
#include "hydra/alloc.h"
#include "hydra/error.h"

struct hy_cache {
  size_t size;
  hy_cache_ctor_fn ctor;
  hy_cache_dtor_fn dtor;
  void *arg;
};

void *hy__mem_alloc(size_t n) { return malloc(n ? n : 1); }
void *hy__mem_calloc(size_t n, size_t s) { return calloc(n ? n : 1, s ? s : 1); }
void *hy__mem_realloc(void *p, size_t n) { return realloc(p, n ? n : 1); }
void *hy__mem_aligned(size_t n, size_t a) {
  void *p = NULL;
#ifdef _WIN32
  (void)a;
  p = malloc(n);
#else
  if (posix_memalign(&p, a < sizeof(void *) ? sizeof(void *) : a, n))
    return NULL;
#endif
  return p;
}
void hy__mem_free(void *p) { free(p); }
char *hy__mem_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}
void hy__mem_collect(void) {}
void hy__mem_fail_at(long nth) { (void)nth; }

int hy_cache_create(const char *name, size_t size, size_t align,
                    hy_cache_ctor_fn ctor, hy_cache_dtor_fn dtor, void *arg,
                    unsigned flags, hy_cache_t **out) {
  (void)name; (void)align; (void)flags;
  hy_cache_t *c = calloc(1, sizeof *c);
  if (!c)
    return HY_ENOMEM;
  c->size = size;
  c->ctor = ctor;
  c->dtor = dtor;
  c->arg = arg;
  *out = c;
  return 0;
}
void *hy_cache_alloc(hy_cache_t *c) {
  void *p = hy__mem_aligned(c->size, 64);
  if (p && c->ctor && c->ctor(p, c->arg) != 0) {
    free(p);
    return NULL;
  }
  return p;
}
void hy_cache_free(hy_cache_t *c, void *obj) {
  if (c->dtor)
    c->dtor(obj, c->arg);
  free(obj);
}
size_t hy_cache_reap(hy_cache_t *c) { (void)c; return 0; }
int hy_cache_stats(hy_cache_t *c, hy_cache_stats_t *s) { (void)c; (void)s; return HY_ENOSYS; }
int hy_cache_destroy(hy_cache_t *c) { free(c); return 0; }

struct hy_stack_cache {
  size_t size;
};
#ifdef _WIN32
#define HY__WIN_GUARD_PAGES 8
#endif
size_t hy_page_size(void) {
#ifdef _WIN32
  return 4096;
#else
  return (size_t)sysconf(_SC_PAGESIZE);
#endif
}
int hy_stack_cache_create(size_t stack_size, size_t max_cached,
                          hy_stack_cache_t **out) {
  (void)max_cached;
  hy_stack_cache_t *c = calloc(1, sizeof *c);
  if (!c)
    return HY_ENOMEM;
  size_t pg = hy_page_size();
  c->size = ((stack_size ? stack_size : 65536) + pg - 1) / pg * pg;
  *out = c;
  return 0;
}
int hy_stack_alloc(hy_stack_cache_t *c, hy_stack_t *out) {
#ifdef _WIN32
  /* Below the stack: one no-access page, then guard pages that the system
   * turns into a stack-overflow exception with room left to report it
   * (runtime/win/guard.c). */
  size_t guard = HY__WIN_GUARD_PAGES * hy_page_size();
  char *p = VirtualAlloc(NULL, c->size + guard, MEM_RESERVE | MEM_COMMIT,
                         PAGE_READWRITE);
  if (!p)
    return HY_ENOMEM;
  DWORD old;
  VirtualProtect(p, hy_page_size(), PAGE_NOACCESS, &old);
  VirtualProtect(p + hy_page_size(), guard - hy_page_size(),
                 PAGE_READWRITE | PAGE_GUARD, &old);
  out->base = p + guard;
  out->size = c->size;
  return 0;
#else
  size_t pg = hy_page_size();
  char *p = mmap(NULL, c->size + pg, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return HY_ENOMEM;
  mprotect(p, pg, PROT_NONE);
  out->base = p + pg;
  out->size = c->size;
  return 0;
#endif
}
void hy_stack_free(hy_stack_cache_t *c, const hy_stack_t *s) {
#ifdef _WIN32
  (void)c;
  VirtualFree((char *)s->base - HY__WIN_GUARD_PAGES * hy_page_size(), 0,
              MEM_RELEASE);
#else
  size_t pg = hy_page_size();
  munmap((char *)s->base - pg, c->size + pg);
#endif
}
size_t hy_stack_cache_trim(hy_stack_cache_t *c) { (void)c; return 0; }
void hy_stack_cache_destroy(hy_stack_cache_t *c) { free(c); }
