/* win/evfd.c - a hub consumer's OS handle on Windows: an ordinary Win32
 * event object, auto-reset or manual-reset as the consumer's hub is, so it
 * works with every wait function (WaitForSingleObject,
 * WaitForMultipleObjects, MsgWaitForMultipleObjectsEx, ...) and with
 * SetEvent/ResetEvent/PulseEvent.
 *
 * The event's state *is* the consumer's pending release (runtime/hub.c keeps
 * `sig` at 0 once the handle exists): posting is SetEvent (idempotent, so
 * sets coalesce), taking is a zero-time wait on an auto-reset event (which
 * the kernel makes atomic against foreign waiters) or check-and-ResetEvent
 * on a manual-reset one, and a look that takes nothing asks the kernel for
 * the state (NtQueryEvent) instead of waiting, which would take the release
 * of an auto-reset event.
 *
 * "Ready for good" (a closed consumer): an event cannot be made to stay
 * signalled through waits that consume it, so a closed consumer's event is
 * set once more - a manual-reset one then stays signalled until someone
 * resets it, an auto-reset one wakes one waiter, who learns from
 * hy_hub_wait_until that the hub is gone. */
#ifdef _WIN32
#include <windows.h>
#include <stdint.h>

#include "hydra/error.h"
#include "runtime/hubs.h"
#include "runtime/win/win.h"

int hy__evfd_open(intptr_t *h, int manual) {
  HANDLE e = CreateEventW(NULL, manual ? TRUE : FALSE, FALSE, NULL);
  if (!e) {
    *h = -1;
    return hy__win_last_error();
  }
  *h = (intptr_t)e;
  return 0;
}

void hy__evfd_close(intptr_t h) { CloseHandle((HANDLE)h); }

void hy__evfd_post(intptr_t h) { SetEvent((HANDLE)h); }

void hy__evfd_post_forever(intptr_t h) { SetEvent((HANDLE)h); }

void hy__evfd_pulse(intptr_t h) { PulseEvent((HANDLE)h); }

/* The event's type and state without changing them, through NtQueryEvent
 * (EventBasicInformation: type 0 manual-reset, 1 auto-reset; then the
 * state).  ntdll is always loaded; the function is looked up once. */
typedef struct {
  int type;
  LONG state;
} hy__event_basic;
typedef LONG(NTAPI *query_event_fn)(HANDLE, int, void *, ULONG, ULONG *);

static int query(HANDLE e, int *manual, int *state) {
  static query_event_fn fn; /* a cache of a process-wide constant */
  query_event_fn f = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);
  if (!f) {
    HMODULE nt = GetModuleHandleW(L"ntdll.dll");
    f = nt ? (query_event_fn)(void (*)(void))GetProcAddress(nt, "NtQueryEvent")
           : NULL;
    if (!f)
      return -1;
    __atomic_store_n(&fn, f, __ATOMIC_RELEASE);
  }
  hy__event_basic b = {0, 0};
  ULONG len = 0;
  if (f(e, 0 /* EventBasicInformation */, &b, sizeof b, &len) != 0)
    return -1;
  *manual = b.type == 0;
  *state = b.state != 0;
  return 0;
}

int hy__evfd_ready(intptr_t h) {
  int manual, st;
  if (query((HANDLE)h, &manual, &st) == 0)
    return st;
  /* No NtQueryEvent: take and give back (a foreign waiter may be delayed
   * by the gap, never loses the release). */
  if (WaitForSingleObject((HANDLE)h, 0) != WAIT_OBJECT_0)
    return 0;
  SetEvent((HANDLE)h);
  return 1;
}

int hy__evfd_take(intptr_t h) {
  HANDLE e = (HANDLE)h;
  int manual, st;
  if (query(e, &manual, &st) == 0) {
    if (!st)
      return 0;
    if (!manual) /* the wait takes it, atomically against other waiters */
      return WaitForSingleObject(e, 0) == WAIT_OBJECT_0;
    /* A manual-reset event is not consumed by a wait.  A SetEvent from
     * elsewhere just before the reset is withdrawn with the rest, as if it
     * came before the look. */
    ResetEvent(e);
    return 1;
  }
  if (WaitForSingleObject(e, 0) != WAIT_OBJECT_0)
    return 0;
  /* Manual-reset, or auto-reset and taken by the wait: this path runs only
   * without NtQueryEvent, where the reset may also withdraw a set that came
   * in between. */
  ResetEvent(e);
  return 1;
}
#endif
