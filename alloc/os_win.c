/* os_win.c - alloc/os.h on Windows: VirtualAlloc/VirtualProtect/VirtualFree,
 * SRW locks and a fiber-local-storage index whose callback is the
 * thread-exit hook. */
#ifdef _WIN32
#include <windows.h>

#include "alloc/internal.h"
#include "alloc/os.h"

_Static_assert(sizeof(SRWLOCK) <= sizeof(hy__oslock_t), "lock size");

void hy__oslock_init(hy__oslock_t *l) { InitializeSRWLock((SRWLOCK *)l); }
void hy__oslock_destroy(hy__oslock_t *l) { (void)l; }
void hy__oslock_lock(hy__oslock_t *l) { AcquireSRWLockExclusive((SRWLOCK *)l); }
int hy__oslock_trylock(hy__oslock_t *l) {
  return TryAcquireSRWLockExclusive((SRWLOCK *)l) != 0;
}
void hy__oslock_unlock(hy__oslock_t *l) { ReleaseSRWLockExclusive((SRWLOCK *)l); }

size_t hy__os_page_size(void) {
  SYSTEM_INFO si;
  GetSystemInfo(&si);
  return (size_t)si.dwPageSize;
}

uint64_t hy__os_now_ms(void) { return (uint64_t)GetTickCount64(); }

void *hy__os_map(size_t size) {
  if (hy__mem_injected_failure())
    return NULL;
  return VirtualAlloc(NULL, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
}

void hy__os_unmap(void *p, size_t size) {
  (void)size;
  VirtualFree(p, 0, MEM_RELEASE);
}

/* VirtualFree gives back whole reservations only: no chunks here. */
void *hy__os_map_chunk(size_t size) {
  (void)size;
  return NULL;
}

void *hy__os_map_aligned(size_t size, size_t align) {
  if (hy__mem_injected_failure())
    return NULL;
  /* Reserve more than needed, free it, and map at the aligned address
   * inside; another thread may take the range in between: try again. */
  for (int tries = 0; tries < 64; tries++) {
    char *p = VirtualAlloc(NULL, size + align, MEM_RESERVE, PAGE_NOACCESS);
    if (!p)
      return NULL;
    char *a = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
    VirtualFree(p, 0, MEM_RELEASE);
    void *r = VirtualAlloc(a, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (r)
      return r;
  }
  return NULL;
}

int hy__os_guard(void *p, size_t size) {
  DWORD old;
  return VirtualProtect(p, size, PAGE_NOACCESS, &old) ? 0 : -1;
}

size_t hy__os_stack_guard_pages(void) { return 8; }

int hy__os_stack_guard(void *p, size_t size) {
  size_t pg = hy__os_page_size();
  DWORD old;
  if (!VirtualProtect(p, pg, PAGE_NOACCESS, &old))
    return -1;
  if (size > pg &&
      !VirtualProtect((char *)p + pg, size - pg, PAGE_READWRITE | PAGE_GUARD, &old))
    return -1;
  return 0;
}

int hy__os_stack_guard_light(void *p, size_t size) {
  (void)p; /* no such thing: hy__os_stack_guard's protections it is */
  (void)size;
  return -1;
}

int hy__os_decommit(void *p, size_t size) {
  return VirtualFree(p, size, MEM_DECOMMIT) ? 0 : -1;
}

int hy__os_recommit(void *p, size_t size) {
  return VirtualAlloc(p, size, MEM_COMMIT, PAGE_READWRITE) ? 0 : -1;
}

static INIT_ONCE exit_once = INIT_ONCE_STATIC_INIT;
static DWORD exit_index = FLS_OUT_OF_INDEXES;

static void WINAPI exit_trampoline(void *arg) {
  if (arg)
    hy__mag_thread_exit(arg);
}
static BOOL CALLBACK exit_index_make(INIT_ONCE *o, void *p, void **ctx) {
  (void)o; (void)p; (void)ctx;
  exit_index = FlsAlloc(exit_trampoline);
  return TRUE;
}

int hy__os_thread_exit_hook(void *arg) {
  InitOnceExecuteOnce(&exit_once, exit_index_make, NULL, NULL);
  if (exit_index == FLS_OUT_OF_INDEXES)
    return -1;
  return FlsSetValue(exit_index, arg) ? 0 : -1;
}
#endif
