/* os_posix.c - alloc/os.h on POSIX systems (Linux): mmap, mprotect,
 * madvise (guard markers too), pthread mutexes and a pthread key for the thread-exit hook. */
#ifndef _WIN32
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "alloc/internal.h"
#include "alloc/os.h"

_Static_assert(sizeof(pthread_mutex_t) <= sizeof(hy__oslock_t), "lock size");

void hy__oslock_init(hy__oslock_t *l) {
  pthread_mutex_init((pthread_mutex_t *)l, NULL);
}
void hy__oslock_destroy(hy__oslock_t *l) {
  pthread_mutex_destroy((pthread_mutex_t *)l);
}
void hy__oslock_lock(hy__oslock_t *l) { pthread_mutex_lock((pthread_mutex_t *)l); }
int hy__oslock_trylock(hy__oslock_t *l) {
  return pthread_mutex_trylock((pthread_mutex_t *)l) == 0;
}
void hy__oslock_unlock(hy__oslock_t *l) {
  pthread_mutex_unlock((pthread_mutex_t *)l);
}

size_t hy__os_page_size(void) {
  static _Atomic size_t pg; /* a constant of the machine, cached */
  size_t v = atomic_load_explicit(&pg, memory_order_relaxed);
  if (!v) {
    v = (size_t)sysconf(_SC_PAGESIZE);
    atomic_store_explicit(&pg, v, memory_order_relaxed);
  }
  return v;
}

uint64_t hy__os_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void *hy__os_map(size_t size) {
  if (hy__mem_injected_failure())
    return NULL;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

void hy__os_unmap(void *p, size_t size) { munmap(p, size); }

void *hy__os_map_aligned(size_t size, size_t align) {
  if (hy__mem_injected_failure())
    return NULL;
  int prot = PROT_READ | PROT_WRITE;
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  /* New mappings usually land right below the previous one, so after one
   * aligned mapping of this size the next is aligned too: one call. */
  char *p = mmap(NULL, size, prot, flags, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
  if (((uintptr_t)p & (align - 1)) == 0)
    return p;
  munmap(p, size);
  p = mmap(NULL, size + align, prot, flags, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
  char *a = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
  if (a > p)
    munmap(p, (size_t)(a - p));
  if (p + size + align > a + size)
    munmap(a + size, (size_t)(p + size + align - (a + size)));
  return a;
}

void *hy__os_map_chunk(size_t size) {
  char *p = hy__os_map_aligned(size, (size_t)2 << 20);
#ifdef MADV_HUGEPAGE
  if (p)
    (void)madvise(p, size, MADV_HUGEPAGE); /* a hint: no THP, small pages */
#endif
  return p;
}

int hy__os_guard(void *p, size_t size) {
  return mprotect(p, size, PROT_NONE) == 0 ? 0 : -1;
}

size_t hy__os_stack_guard_pages(void) { return 1; }

int hy__os_stack_guard(void *p, size_t size) { return hy__os_guard(p, size); }

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13; older headers lack it */
#endif

int hy__os_stack_guard_light(void *p, size_t size) {
#ifdef __linux__
  /* Older kernels answer EINVAL: the caller falls back to mprotect. */
  return madvise(p, size, MADV_GUARD_INSTALL) == 0 ? 0 : -1;
#else
  (void)p;
  (void)size;
  return -1;
#endif
}

int hy__os_decommit(void *p, size_t size) {
  return madvise(p, size, MADV_DONTNEED) == 0 ? 0 : -1;
}

int hy__os_recommit(void *p, size_t size) {
  (void)p; /* the pages come back zero-filled on the next touch */
  (void)size;
  return 0;
}

/* The thread-exit hook: one pthread key for the process, created once;
 * its value is the argument, the destructor calls the hook. */
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static int exit_key_ok;

static void exit_trampoline(void *arg) {
  hy__mag_thread_exit(arg);
}
static void exit_key_make(void) {
  exit_key_ok = pthread_key_create(&exit_key, exit_trampoline) == 0;
}

int hy__os_thread_exit_hook(void *arg) {
  pthread_once(&exit_once, exit_key_make);
  if (!exit_key_ok)
    return -1;
  return pthread_setspecific(exit_key, arg) == 0 ? 0 : -1;
}
#endif
