/* mem.c - general-purpose memory (alloc/mem.h): mimalloc on Linux, the
 * system heap on Windows.  Sanitizer builds (HY_ASAN, HY_TSAN) use the C
 * library's heap on Linux too, so that ASan checks every buffer's bounds
 * and TSan sees memory change hands between threads.
 *
 * Failure injection: hy__mem_fail_at(n) makes the nth backing allocation
 * from now on fail.  The countdown is the one process-wide variable here,
 * on purpose (it stands for the machine running out of memory); when it is
 * disarmed the cost is one relaxed load per backing allocation.
 * hy__mem_fail_here_at(n) counts the arming thread's allocations only, for
 * a test that expects one exact call to fail while a runtime's workers run
 * (a worker starting up allocates too, and would take the failure).
 */
#ifndef _WIN32
#define _GNU_SOURCE
#endif
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/internal.h"
#include "alloc/mem.h"

#if defined(_WIN32)
#include <malloc.h>
#define HEAP_WIN 1
#define HEAP_MI 0
#elif defined(HY_ASAN) || defined(HY_TSAN)
#include <malloc.h>
#define HEAP_WIN 0
#define HEAP_MI 0
#else
#include <mimalloc.h>
#define HEAP_WIN 0
#define HEAP_MI 1
#endif

static _Atomic long fail_countdown;
/* Allocations that fail after the nth, one after the other. */
static _Atomic long fail_more;
/* The thread whose allocations count (the address of its own `me`), or
 * NULL: every thread's. */
static _Atomic(const char *) fail_thread;
static _Thread_local char me;

int hy__mem_injected_failure(void) {
  if (atomic_load_explicit(&fail_countdown, memory_order_relaxed) <= 0)
    return 0;
  const char *only = atomic_load(&fail_thread);
  if (only && only != &me)
    return 0;
  if (atomic_fetch_sub(&fail_countdown, 1) != 1)
    return 0;
  if (atomic_load(&fail_more) > 0 && atomic_fetch_sub(&fail_more, 1) > 0)
    atomic_store(&fail_countdown, 1); /* the next one fails too */
  return 1;
}

/* Disarms first, so that no allocation counts against the wrong thread. */
static long arm(long nth, long count, const char *only) {
  long left = atomic_exchange(&fail_countdown, 0);
  atomic_store(&fail_thread, only);
  atomic_store(&fail_more, count > 1 ? count - 1 : 0);
  atomic_store(&fail_countdown, nth > 0 ? nth : 0);
  return left > 0 ? left : 0;
}

long hy__mem_fail_at(long nth) { return arm(nth, 1, NULL); }

long hy__mem_fail_here_at(long nth) { return arm(nth, 1, &me); }

long hy__mem_fail_here_run(long nth, long count) {
  return arm(nth, count, &me);
}

/* Windows: every block is an _aligned_malloc block, so that hy__mem_free
 * serves hy__mem_aligned's blocks too. */
#define MIN_ALIGN 16

void *hy__mem_alloc(size_t size) {
  if (hy__mem_injected_failure())
    return NULL;
#if HEAP_MI
  return mi_malloc(size);
#elif HEAP_WIN
  return _aligned_malloc(size ? size : 1, MIN_ALIGN);
#else
  return malloc(size ? size : 1);
#endif
}

void *hy__mem_calloc(size_t n, size_t size) {
  if (size && n > (size_t)-1 / size)
    return NULL;
  if (hy__mem_injected_failure())
    return NULL;
#if HEAP_MI
  return mi_calloc(n, size);
#elif HEAP_WIN
  size_t t = n * size;
  void *p = _aligned_malloc(t ? t : 1, MIN_ALIGN);
  if (p)
    memset(p, 0, t);
  return p;
#else
  return calloc(n ? n : 1, size ? size : 1);
#endif
}

void *hy__mem_realloc(void *p, size_t size) {
  if (hy__mem_injected_failure())
    return NULL;
#if HEAP_MI
  return mi_realloc(p, size);
#elif HEAP_WIN
  return _aligned_realloc(p, size ? size : 1, MIN_ALIGN);
#else
  return realloc(p, size ? size : 1);
#endif
}

void *hy__mem_aligned(size_t size, size_t align) {
  if (align < sizeof(void *))
    align = sizeof(void *);
  if (align & (align - 1))
    return NULL;
  if (hy__mem_injected_failure())
    return NULL;
#if HEAP_MI
  return mi_malloc_aligned(size, align);
#elif HEAP_WIN
  return _aligned_malloc(size ? size : 1, align < MIN_ALIGN ? MIN_ALIGN : align);
#else
  void *p = NULL;
  if (posix_memalign(&p, align, size ? size : 1))
    return NULL;
  return p;
#endif
}

void hy__mem_free(void *p) {
#if HEAP_MI
  mi_free(p);
#elif HEAP_WIN
  _aligned_free(p);
#else
  free(p);
#endif
}

char *hy__mem_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = hy__mem_alloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

void hy__mem_collect(void) {
#if HEAP_MI
  mi_collect(true);
#elif !HEAP_WIN && defined(__GLIBC__)
  malloc_trim(0);
#endif
}
