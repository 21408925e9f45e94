/* win/guard.c - stack-overflow reports for tasks on Windows.
 *
 * Every task stack has guard pages below it (alloc/): a no-access page at
 * the bottom of the reservation and PAGE_GUARD pages above it.  The
 * context switch (ctx_win64.c) puts the task's bounds in the TIB, so the
 * system treats the task stack as the thread's stack: running into the
 * guard pages raises STATUS_STACK_OVERFLOW while the thread's stack
 * guarantee (set here per worker) still leaves room to run a handler.  A
 * vectored exception handler checks whether the fault lies in the guard
 * area of the task the worker is running and, if so, writes "task NAME
 * overflowed its stack" and ends the process with STATUS_STACK_OVERFLOW: a
 * silent corruption is never an option.  Anything else goes on to the next
 * handler.
 *
 * As on Linux, this file holds the runtime's one piece of process-wide
 * state: the handler's registration and a TLS slot naming the worker that
 * runs on each thread, which a handler has no other way to find.
 */
#ifdef _WIN32
#include <windows.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "runtime/internal.h"

#define GUARANTEE (16 * 1024)  /* stack kept free to report an overflow */
#define GUARD_SPAN (32 * 1024) /* below base: the guard area (alloc/) */

static atomic_int installed;
static DWORD running_slot = TLS_OUT_OF_INDEXES;

static void put(const char *s) {
  DWORD n;
  WriteFile(GetStdHandle(STD_ERROR_HANDLE), s, (DWORD)strlen(s), &n, NULL);
}

static void put_num(uint64_t v) {
  char buf[24];
  int i = (int)sizeof buf;
  buf[--i] = 0;
  do {
    buf[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v && i > 0);
  put(&buf[i]);
}

static int in_guard(const hy__task *t, uintptr_t a) {
  uintptr_t lo = (uintptr_t)t->stack.base - GUARD_SPAN;
  return a >= lo && a < (uintptr_t)t->stack.base;
}

static LONG CALLBACK on_exception(EXCEPTION_POINTERS *ep) {
  DWORD code = ep->ExceptionRecord->ExceptionCode;
  if (code != STATUS_STACK_OVERFLOW && code != STATUS_GUARD_PAGE_VIOLATION &&
      code != STATUS_ACCESS_VIOLATION)
    return EXCEPTION_CONTINUE_SEARCH;
  if (running_slot == TLS_OUT_OF_INDEXES)
    return EXCEPTION_CONTINUE_SEARCH;
  hy__worker *w = TlsGetValue(running_slot);
  hy__task *t = w ? w->current : NULL;
  if (!t || !t->stack.base)
    return EXCEPTION_CONTINUE_SEARCH;
  uintptr_t addr = ep->ExceptionRecord->NumberParameters >= 2
                       ? (uintptr_t)ep->ExceptionRecord->ExceptionInformation[1]
                       : 0;
  uintptr_t sp = (uintptr_t)ep->ContextRecord->Rsp;
  if (!in_guard(t, addr) && !in_guard(t, sp))
    return EXCEPTION_CONTINUE_SEARCH;
  put("hydra: task '");
  put(t->name);
  put("' (");
  put_num(t->slot + 1);
  put(":");
  put_num(t->gen);
  put(") overflowed its stack of ");
  put_num(t->stack.size);
  put(" bytes\n");
  TerminateProcess(GetCurrentProcess(), (UINT)STATUS_STACK_OVERFLOW);
  return EXCEPTION_CONTINUE_SEARCH; /* not reached */
}

void hy__guard_thread_init(hy__worker *w) {
  if (atomic_load(&installed) != 2) {
    int zero = 0;
    if (atomic_compare_exchange_strong(&installed, &zero, 1)) {
      running_slot = TlsAlloc();
      AddVectoredExceptionHandler(1, on_exception);
      atomic_store(&installed, 2);
    } else {
      while (atomic_load(&installed) != 2)
        SwitchToThread();
    }
  }
  if (running_slot != TLS_OUT_OF_INDEXES)
    TlsSetValue(running_slot, w);
  ULONG g = GUARANTEE;
  SetThreadStackGuarantee(&g);
}

void hy__guard_thread_fini(hy__worker *w) {
  (void)w;
  if (running_slot != TLS_OUT_OF_INDEXES)
    TlsSetValue(running_slot, NULL);
}
#endif
