/* win/sys.c - threads, locks, TLS slots, the clock and foreign-thread
 * events on Windows: the runtime/sys.h primitives over Win32 (SRW locks,
 * condition variables, WaitOnAddress), mirroring runtime/linux/sys.c. */
#ifdef _WIN32
#include <windows.h>
#include <process.h>
#include <stdlib.h>

#include "alloc/mem.h"
#include "hydra/error.h"
#include "hydra/runtime.h"
#include "runtime/sys.h"
#include "runtime/wait.h"
#include "runtime/win/win.h"

_Static_assert(sizeof(SRWLOCK) <= sizeof(hy__mutex_t), "mutex size");
_Static_assert(sizeof(CONDITION_VARIABLE) <= sizeof(hy__cond_t), "cond size");

hy_time_t hy_now(void) {
  LARGE_INTEGER c, f;
  QueryPerformanceCounter(&c);
  QueryPerformanceFrequency(&f);
  int64_t q = c.QuadPart / f.QuadPart, r = c.QuadPart % f.QuadPart;
  return q * 1000000000 + r * 1000000000 / f.QuadPart;
}

/* Milliseconds until deadline, rounded up so that a wait never ends early;
 * INFINITE for HY_FOREVER, 0 once it has passed. */
static DWORD ms_until(int64_t deadline) {
  if (deadline == HY_FOREVER)
    return INFINITE;
  int64_t left = deadline - hy_now();
  if (left <= 0)
    return 0;
  int64_t ms = (left + 999999) / 1000000;
  return ms >= (int64_t)INFINITE ? INFINITE - 1 : (DWORD)ms;
}

typedef struct start_rec {
  void *(*fn)(void *);
  void *arg;
} start_rec;

static unsigned __stdcall thread_entry(void *p) {
  start_rec r = *(start_rec *)p;
  hy__mem_free(p);
  r.fn(r.arg);
  return 0;
}

/* Names a thread for debuggers and profilers where the system can
 * (SetThreadDescription: Windows 10 1607 and later, looked up at run time). */
typedef HRESULT(WINAPI *set_desc_fn)(HANDLE, PCWSTR);

static void name_thread(HANDLE h, const char *name) {
  HMODULE k = GetModuleHandleW(L"kernel32.dll");
  set_desc_fn f = k ? (set_desc_fn)(void (*)(void))GetProcAddress(
                          k, "SetThreadDescription")
                    : NULL;
  if (!f)
    return;
  wchar_t w[32];
  int n = MultiByteToWideChar(CP_UTF8, 0, name, -1, w, 32);
  if (n <= 0)
    return;
  w[31] = 0;
  f(h, w);
}

int hy__thread_start(hy__thread_t *t, void *(*fn)(void *), void *arg,
                     size_t stack_size, const char *name) {
  start_rec *r = hy__mem_alloc(sizeof *r);
  if (!r)
    return HY_ENOMEM;
  r->fn = fn;
  r->arg = arg;
  uintptr_t h = _beginthreadex(NULL, (unsigned)stack_size, thread_entry, r,
                               stack_size ? STACK_SIZE_PARAM_IS_A_RESERVATION
                                          : 0,
                               NULL);
  if (h == 0) {
    int rc = hy__win_last_error();
    hy__mem_free(r);
    return rc ? rc : HY_ENOMEM;
  }
  t->h = h;
  if (name)
    name_thread((HANDLE)h, name);
  return 0;
}

void hy__thread_join(hy__thread_t t) {
  WaitForSingleObject((HANDLE)t.h, INFINITE);
  CloseHandle((HANDLE)t.h);
}

void hy__thread_yield(void) { SwitchToThread(); }

/* Wine (8.x) implements FlushProcessWriteBuffers as a stub that returns
 * without any barrier: there parks keep their fence (hy__heavy_barrier_init
 * says the barrier is not available). */
int hy__heavy_barrier_init(void) {
  HMODULE ntdll = GetModuleHandleA("ntdll.dll");
  return !(ntdll && GetProcAddress(ntdll, "wine_get_version"));
}

void hy__heavy_barrier(void) { FlushProcessWriteBuffers(); }

int hy__mutex_init(hy__mutex_t *m) {
  InitializeSRWLock((SRWLOCK *)m);
  return 0;
}
void hy__mutex_destroy(hy__mutex_t *m) { (void)m; }
void hy__mutex_lock(hy__mutex_t *m) { AcquireSRWLockExclusive((SRWLOCK *)m); }
void hy__mutex_unlock(hy__mutex_t *m) { ReleaseSRWLockExclusive((SRWLOCK *)m); }

int hy__cond_init(hy__cond_t *c) {
  InitializeConditionVariable((CONDITION_VARIABLE *)c);
  return 0;
}
void hy__cond_destroy(hy__cond_t *c) { (void)c; }
void hy__cond_signal(hy__cond_t *c) { WakeConditionVariable((CONDITION_VARIABLE *)c); }
void hy__cond_broadcast(hy__cond_t *c) {
  WakeAllConditionVariable((CONDITION_VARIABLE *)c);
}
int hy__cond_wait(hy__cond_t *c, hy__mutex_t *m, int64_t deadline) {
  DWORD ms = ms_until(deadline);
  if (ms == 0)
    return HY_ETIMEDOUT;
  SleepConditionVariableSRW((CONDITION_VARIABLE *)c, (SRWLOCK *)m, ms, 0);
  /* A time-out is reported only once the deadline has really passed: the
   * millisecond timer may fire a little early. */
  if (deadline != HY_FOREVER && hy_now() >= deadline)
    return HY_ETIMEDOUT;
  return 0;
}

int hy__tls_new(hy__tls_t *k) {
  DWORD i = TlsAlloc();
  if (i == TLS_OUT_OF_INDEXES)
    return HY_ENOMEM;
  k->k = (uintptr_t)i;
  return 0;
}
void hy__tls_free(hy__tls_t k) { TlsFree((DWORD)k.k); }
void *hy__tls_get(hy__tls_t k) { return TlsGetValue((DWORD)k.k); }
void hy__tls_set(hy__tls_t k, void *v) { TlsSetValue((DWORD)k.k, v); }

int hy__ncpu(void) {
  SYSTEM_INFO si;
  GetSystemInfo(&si);
  return si.dwNumberOfProcessors > 0 ? (int)si.dwNumberOfProcessors : 1;
}

void hy__sleep_thread_until(int64_t deadline) {
  for (;;) {
    DWORD ms = ms_until(deadline);
    if (ms == 0)
      return;
    Sleep(ms);
  }
}

const char *hy__getenv(const char *name) { return getenv(name); }

/* ------------------------------------------------ foreign-thread events */

/* v: 0 not signalled, 1 signalled; the waiter sleeps in WaitOnAddress on
 * the word, the Windows counterpart of the Linux futex. */
int hy__osev_init(hy__osev_t *e) {
  atomic_store(&e->v, 0);
  e->h = NULL;
  return 0;
}

void hy__osev_destroy(hy__osev_t *e) { (void)e; }

void hy__osev_signal(hy__osev_t *e) {
  atomic_store(&e->v, 1);
  WakeByAddressSingle((void *)&e->v);
}

int hy__osev_wait(hy__osev_t *e, int64_t deadline) {
  for (;;) {
    int one = 1;
    if (atomic_compare_exchange_strong(&e->v, &one, 0))
      return 1;
    DWORD ms = ms_until(deadline);
    if (ms == 0)
      return 0;
    int zero = 0;
    WaitOnAddress((volatile void *)&e->v, &zero, sizeof zero, ms);
  }
}
#endif
