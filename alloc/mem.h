/* alloc/mem.h - general-purpose memory for the whole library.
 *
 * Everything that is not a fixed-size object of a cache (buffers, strings,
 * tables) comes from here: mimalloc on Linux, the system heap on Windows
 * (mimalloc is not packaged for MinGW).  Tests can make the Nth backing
 * allocation fail (hy__mem_fail_at) to drive the HY_ENOMEM paths; the
 * counter is process-wide on purpose, since it stands for the machine
 * running out of memory.
 */
#ifndef HYDRA_ALLOC_MEM_H
#define HYDRA_ALLOC_MEM_H

#include <stddef.h>

void *hy__mem_alloc(size_t size);            /* NULL on failure */
void *hy__mem_calloc(size_t n, size_t size); /* zeroed; NULL on failure */
void *hy__mem_realloc(void *p, size_t size);
void *hy__mem_aligned(size_t size, size_t align);
void hy__mem_free(void *p);
char *hy__mem_strdup(const char *s);

/* Returns memory the allocator keeps cached to the system (mi_collect). */
void hy__mem_collect(void);

/* Testing: the nth backing allocation from now on fails (1 = the next),
 * and every one after it succeeds again; 0 disarms.  Backing allocations
 * are these functions and the pages of slabs and stacks (alloc/os.h).
 * Returns how many allocations were still to go before the failure set
 * earlier (0: it happened, or none was set). */
long hy__mem_fail_at(long nth);

/* The same, counting only the calling thread's allocations: for a test
 * that expects one exact call to fail while other threads allocate.
 * hy__mem_fail_at (either: both disarm with 0) ends it. */
long hy__mem_fail_here_at(long nth);

/* As hy__mem_fail_here_at, and the count - 1 allocations after the nth
 * fail too (a run of count failures in a row). */
long hy__mem_fail_here_run(long nth, long count);

#endif
