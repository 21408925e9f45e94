/* alloc/os.h - what the allocators need from the operating system, one
 * implementation per OS (alloc/os_posix.c, alloc/os_win.c): page mappings
 * with guard pages and decommit, a lock with try-lock (for the depot's
 * contention count) and a hook run when a thread exits (to flush that
 * thread's magazines).
 */
#ifndef HYDRA_ALLOC_OS_H
#define HYDRA_ALLOC_OS_H

#include <stddef.h>
#include <stdint.h>

/* A mutex for the allocators' slow paths.  Opaque storage for every OS. */
typedef struct hy__oslock {
  uint64_t s[6];
} hy__oslock_t;

void hy__oslock_init(hy__oslock_t *l);
void hy__oslock_destroy(hy__oslock_t *l);
void hy__oslock_lock(hy__oslock_t *l);
int hy__oslock_trylock(hy__oslock_t *l); /* 1 when taken */
void hy__oslock_unlock(hy__oslock_t *l);

size_t hy__os_page_size(void);

/* Milliseconds of a monotonic clock (the depot's idle trimming). */
uint64_t hy__os_now_ms(void);

/* Maps size bytes (a multiple of the page size) readable and writable.
 * Counts as a backing allocation for hy__mem_fail_at.  NULL on failure. */
void *hy__os_map(size_t size);
/* The same, aligned to align (a power of two, a multiple of the page size). */
void *hy__os_map_aligned(size_t size, size_t align);
void hy__os_unmap(void *p, size_t size);
/* Maps size bytes (a multiple of 2 MiB) aligned to 2 MiB, backed by huge
 * pages where the system has them (Linux: transparent huge pages), such
 * that any page-aligned part can be unmapped by itself with
 * hy__os_unmap.  Counts as a backing allocation.  NULL on failure, and
 * where parts of a mapping cannot go back alone (Windows). */
void *hy__os_map_chunk(size_t size);
/* Makes [p, p+size) inaccessible (a guard page).  Returns 0 or -1. */
int hy__os_guard(void *p, size_t size);
/* How many guard pages go below a task stack: 1 on POSIX.  On Windows 8:
 * the lowest no-access, the seven above it PAGE_GUARD, so that the first
 * touch raises a guard-page exception while there is still stack left for
 * the vectored handler that reports the overflow (hy__os_stack_guard). */
size_t hy__os_stack_guard_pages(void);
int hy__os_stack_guard(void *p, size_t size);
/* The same guard without splitting the mapping it lies in (Linux >= 6.13:
 * madvise(MADV_GUARD_INSTALL), a page-table marker that faults on touch
 * and survives decommit).  Returns 0, or -1 where the system has no such
 * thing (older kernels, Windows): the caller then uses hy__os_stack_guard. */
int hy__os_stack_guard_light(void *p, size_t size);
/* Gives the pages' memory back while keeping the range; hy__os_recommit
 * makes it usable again (zero-filled).  Return 0 or -1. */
int hy__os_decommit(void *p, size_t size);
int hy__os_recommit(void *p, size_t size);

/* Arms hy__mag_thread_exit(arg) (alloc/magazine.c) to run when the calling
 * thread exits; arming again replaces arg, and the hook may re-arm itself.
 * Returns 0 or -1.  Process-wide by nature: one pthread key / FLS index,
 * made once. */
int hy__os_thread_exit_hook(void *arg);

#endif
