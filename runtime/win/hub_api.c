/* win/hub_api.c - seed 000's Win32 names for hub events
 * (include/hydra/hub_win.h), over hydra/hub.h.
 *
 * Process-wide state, as the Win32 object namespace it stands for is: the
 * list of live hubs (so that a stale HHEVENT is refused, not followed),
 * and the runtime that holds them - an embedded one (no workers), made
 * with the first hub and closed with the last.  One SRW lock guards it
 * all; every call holds it throughout (the layer's calls are short: a set
 * is one SetEvent per consumer).
 *
 * Consumers: each is a hy_hub_consumer_t whose OS handle (an event, see
 * win/evfd.c) stays with the consumer; the caller gets a duplicate.  So a
 * CloseHandle by the caller never leaves the hub signalling a closed (and
 * perhaps reused) handle value.  A consumer whose event has no handle left
 * but the hub's own (NtQueryObject's handle count, which counts handles in
 * every process) was closed by its owner: it is disconnected before each
 * set, reset, info and connect of its hub.
 *
 * Errors: HY_E* codes from the hub layer become Win32 error codes here,
 * once, for SetLastError.
 */
#ifdef _WIN32
#include <windows.h>
#include <winternl.h>
#include <string.h>

#include "alloc/mem.h"
#include "hydra.h"
#include "hydra/hub_win.h"
#include "runtime/win/hubwin.h"

typedef struct cons {
  struct cons *next;
  hy_hub_consumer_t *c;
  HANDLE own; /* the consumer's OS handle, owned by c */
} cons;

struct HubEvent {
  struct HubEvent *next, *prev;
  hy_hub_t *hub;
  cons *cons;
  SIZE_T count, total;
  BOOL manual, initial;
  hy__hubpipe *pipe; /* serves the name to other processes */
  char name[64];
};

static SRWLOCK lock = SRWLOCK_INIT;
static struct HubEvent *hubs; /* live ones */
static int nhubs;             /* in rt: live ones and those being destroyed */
static hy_runtime_t *rt;

static DWORD win_error_of(int rc) {
  switch (rc) {
  case HY_EINVAL: return ERROR_INVALID_PARAMETER;
  case HY_ENOMEM: return ERROR_NOT_ENOUGH_MEMORY;
  case HY_EEXIST: return ERROR_ALREADY_EXISTS;
  case HY_ENOENT: return ERROR_FILE_NOT_FOUND;
  case HY_EPERM: return ERROR_ACCESS_DENIED;
  case HY_EMFILE:
  case HY_ENFILE: return ERROR_NO_SYSTEM_RESOURCES;
  case HY_ECLOSED: return ERROR_INVALID_HANDLE;
  default: return ERROR_GEN_FAILURE;
  }
}

static int fail_rc(int rc) {
  SetLastError(win_error_of(rc));
  return 0;
}

/* ---------------------------------------------------------- helpers */

/* How many handles the object behind h has, in every process; 0 if the
 * system cannot tell (then consumers are never reaped early). */
typedef NTSTATUS(NTAPI *query_object_fn)(HANDLE, OBJECT_INFORMATION_CLASS,
                                         PVOID, ULONG, PULONG);

static ULONG handle_count(HANDLE h) {
  static query_object_fn fn; /* a cache of a process-wide constant */
  query_object_fn f = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);
  if (!f) {
    HMODULE nt = GetModuleHandleW(L"ntdll.dll");
    f = nt ? (query_object_fn)(void (*)(void))GetProcAddress(nt,
                                                             "NtQueryObject")
           : NULL;
    if (!f)
      return 0;
    __atomic_store_n(&fn, f, __ATOMIC_RELEASE);
  }
  PUBLIC_OBJECT_BASIC_INFORMATION bi;
  memset(&bi, 0, sizeof bi);
  ULONG len = 0;
  if (f(h, ObjectBasicInformation, &bi, sizeof bi, &len) != 0)
    return 0;
  return bi.HandleCount;
}

/* pre: lock.  Disconnects the consumers nobody holds a handle to. */
static void reap(struct HubEvent *e) {
  cons **pp = &e->cons;
  while (*pp) {
    cons *k = *pp;
    if (handle_count(k->own) == 1) {
      *pp = k->next;
      hy_hub_disconnect(k->c); /* closes k->own */
      hy__mem_free(k);
      e->count--;
    } else {
      pp = &k->next;
    }
  }
}

/* pre: lock.  The live hub e points to, or NULL. */
static struct HubEvent *live(HHEVENT e) {
  for (struct HubEvent *x = hubs; x; x = x->next)
    if (x == e)
      return x;
  return NULL;
}

static struct HubEvent *find(const char *name) {
  for (struct HubEvent *x = hubs; x; x = x->next)
    if (strcmp(x->name, name) == 0)
      return x;
  return NULL;
}

/* A wide name as UTF-8 into out[64]: 0, or a Win32 error. */
static DWORD utf8_name(LPCWSTR w, char *out) {
  if (!w || !*w)
    return ERROR_INVALID_PARAMETER;
  int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, out, 64, NULL, NULL);
  if (n <= 0)
    return GetLastError() == ERROR_INSUFFICIENT_BUFFER
               ? ERROR_INVALID_PARAMETER
               : GetLastError();
  return 0;
}

/* An ANSI name as wide: 0, or a Win32 error. */
static DWORD wide_name(LPCSTR a, WCHAR *out, int cap) {
  if (!a || !*a)
    return ERROR_INVALID_PARAMETER;
  if (MultiByteToWideChar(CP_ACP, 0, a, -1, out, cap) <= 0)
    return GetLastError() == ERROR_INSUFFICIENT_BUFFER
               ? ERROR_INVALID_PARAMETER
               : GetLastError();
  return 0;
}

/* pre: lock.  Closes the layer's runtime once it holds no hub. */
static void idle_check(void) {
  if (nhubs || !rt)
    return;
  hy_runtime_shutdown(rt, 0);
  hy_runtime_close(rt);
  rt = NULL;
}

/* --------------------------------------------------------- producer */

HHEVENT WINAPI CreateHubEventW(LPSECURITY_ATTRIBUTES lpEventAttributes,
                               BOOL bManualReset, BOOL bInitialState,
                               LPCWSTR lpName) {
  (void)lpEventAttributes;
  char name[64];
  DWORD err = utf8_name(lpName, name);
  if (err) {
    SetLastError(err);
    return NULL;
  }
  struct HubEvent *e = hy__mem_calloc(1, sizeof *e);
  if (!e) {
    SetLastError(ERROR_NOT_ENOUGH_MEMORY);
    return NULL;
  }
  e->manual = bManualReset ? TRUE : FALSE;
  e->initial = bInitialState ? TRUE : FALSE;
  memcpy(e->name, name, sizeof name);
  AcquireSRWLockExclusive(&lock);
  int rc = 0;
  if (find(name))
    rc = HY_EEXIST;
  if (rc == 0 && !rt) {
    hy_options_t o = HY_OPTIONS_INIT;
    o.workers = 0;
    rc = hy_runtime_new(&o, &rt);
    if (rc < 0)
      rt = NULL;
  }
  if (rc == 0)
    rc = hy_hub_create(rt, name,
                       e->manual ? HY_HUB_MANUAL_RESET : HY_HUB_AUTO_RESET,
                       &e->hub);
  if (rc < 0) {
    idle_check();
    ReleaseSRWLockExclusive(&lock);
    hy__mem_free(e);
    fail_rc(rc);
    return NULL;
  }
  DWORD perr = hy__hubpipe_start(lpName, e, &e->pipe);
  if (perr) { /* the name is served by another process, or unusable */
    hy_hub_destroy(e->hub);
    idle_check();
    ReleaseSRWLockExclusive(&lock);
    hy__mem_free(e);
    SetLastError(perr);
    return NULL;
  }
  nhubs++;
  if (e->manual && e->initial)
    hy_hub_set(e->hub);
  e->next = hubs;
  if (hubs)
    hubs->prev = e;
  hubs = e;
  ReleaseSRWLockExclusive(&lock);
  SetLastError(0);
  return e;
}

HHEVENT WINAPI CreateHubEventA(LPSECURITY_ATTRIBUTES lpEventAttributes,
                               BOOL bManualReset, BOOL bInitialState,
                               LPCSTR lpName) {
  WCHAR w[128];
  DWORD err = wide_name(lpName, w, 128);
  if (err) {
    SetLastError(err);
    return NULL;
  }
  return CreateHubEventW(lpEventAttributes, bManualReset, bInitialState, w);
}

BOOL WINAPI DestroyHubEvent(HHEVENT hHubEvent) {
  AcquireSRWLockExclusive(&lock);
  struct HubEvent *e = live(hHubEvent);
  if (!e) {
    ReleaseSRWLockExclusive(&lock);
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  if (e->prev)
    e->prev->next = e->next;
  else
    hubs = e->next;
  if (e->next)
    e->next->prev = e->prev;
  /* No longer live: the pipe's thread refuses connects from now on, and
   * may be waiting for the lock to say so. */
  ReleaseSRWLockExclusive(&lock);
  hy__hubpipe_stop(e->pipe);
  AcquireSRWLockExclusive(&lock);
  /* Disconnected before the hub goes, so that their events are left as
   * they are (a destroyed hub would set them once more). */
  while (e->cons) {
    cons *k = e->cons;
    e->cons = k->next;
    hy_hub_disconnect(k->c);
    hy__mem_free(k);
  }
  hy_hub_destroy(e->hub);
  hy__mem_free(e);
  nhubs--;
  idle_check();
  ReleaseSRWLockExclusive(&lock);
  return TRUE;
}

/* Runs op on a live hub, after reaping its closed consumers. */
static BOOL with_hub(HHEVENT h, int (*op)(hy_hub_t *)) {
  AcquireSRWLockExclusive(&lock);
  struct HubEvent *e = live(h);
  if (!e) {
    ReleaseSRWLockExclusive(&lock);
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  reap(e);
  int rc = op(e->hub);
  ReleaseSRWLockExclusive(&lock);
  return rc < 0 ? fail_rc(rc) : TRUE;
}

BOOL WINAPI SetHubEvent(HHEVENT hHubEvent) {
  return with_hub(hHubEvent, hy_hub_set);
}

BOOL WINAPI ResetHubEvent(HHEVENT hHubEvent) {
  return with_hub(hHubEvent, hy_hub_reset);
}

BOOL WINAPI GetHubEventInfo(HHEVENT hHubEvent, PHUB_EVENT_INFO lpHubEventInfo,
                            SIZE_T cbSize) {
  if (!lpHubEventInfo) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return FALSE;
  }
  AcquireSRWLockExclusive(&lock);
  struct HubEvent *e = live(hHubEvent);
  if (!e) {
    ReleaseSRWLockExclusive(&lock);
    SetLastError(ERROR_INVALID_HANDLE);
    return FALSE;
  }
  reap(e);
  hy_hub_info_t hi = {.size = sizeof hi};
  int rc = hy_hub_info(e->hub, &hi);
  HUB_EVENT_INFO all;
  memset(&all, 0, sizeof all);
  all.nConsumersCount = e->count;
  all.nConsumersTotal = e->total;
  all.bManualReset = e->manual;
  all.bInitialState = e->initial;
  all.bSignalled = hi.signalled ? TRUE : FALSE;
  all.nSets = hi.sets;
  ReleaseSRWLockExclusive(&lock);
  if (rc < 0)
    return fail_rc(rc);
  memset(lpHubEventInfo, 0, cbSize);
  memcpy(lpHubEventInfo, &all, cbSize < sizeof all ? cbSize : sizeof all);
  return TRUE;
}

/* --------------------------------------------------------- consumer */

/* pre: lock, e live.  Connects a consumer to e and duplicates its event
 * into process: the handle there, or NULL with *err set. */
static HANDLE connect_locked(struct HubEvent *e, HANDLE process, DWORD access,
                             BOOL inherit, DWORD *err) {
  cons *k = hy__mem_calloc(1, sizeof *k);
  if (!k) {
    *err = ERROR_NOT_ENOUGH_MEMORY;
    return NULL;
  }
  reap(e);
  int rc = hy_hub_connect(e->hub, &k->c);
  intptr_t own = -1;
  if (rc == 0 && (rc = hy_hub_os_handle(k->c, &own)) < 0)
    hy_hub_disconnect(k->c);
  if (rc < 0) {
    hy__mem_free(k);
    *err = win_error_of(rc);
    return NULL;
  }
  k->own = (HANDLE)own;
  HANDLE theirs = NULL;
  if (!DuplicateHandle(GetCurrentProcess(), k->own, process, &theirs, access,
                       inherit ? TRUE : FALSE,
                       access ? 0 : DUPLICATE_SAME_ACCESS)) {
    *err = GetLastError();
    hy_hub_disconnect(k->c);
    hy__mem_free(k);
    return NULL;
  }
  k->next = e->cons;
  e->cons = k;
  e->count++;
  e->total++;
  *err = 0;
  return theirs;
}

HANDLE hy__hubwin_connect_for(HHEVENT h, HANDLE process, DWORD access,
                              BOOL inherit, DWORD *err) {
  AcquireSRWLockExclusive(&lock);
  struct HubEvent *e = live(h);
  HANDLE r = NULL;
  if (e)
    r = connect_locked(e, process, access, inherit, err);
  else
    *err = ERROR_FILE_NOT_FOUND; /* being destroyed */
  ReleaseSRWLockExclusive(&lock);
  return r;
}

HANDLE WINAPI ConnectHubEventW(DWORD dwDesiredAccess, BOOL bInheritHandle,
                               LPCWSTR lpName) {
  char name[64];
  DWORD err = utf8_name(lpName, name);
  if (err) {
    SetLastError(err);
    return NULL;
  }
  AcquireSRWLockExclusive(&lock);
  struct HubEvent *e = find(name);
  HANDLE r = NULL;
  if (e)
    r = connect_locked(e, GetCurrentProcess(), dwDesiredAccess,
                       bInheritHandle, &err);
  ReleaseSRWLockExclusive(&lock);
  if (!e) /* not in this process: perhaps in another */
    return hy__hubpipe_connect(lpName, dwDesiredAccess, bInheritHandle);
  SetLastError(err);
  return r;
}

HANDLE WINAPI ConnectHubEventA(DWORD dwDesiredAccess, BOOL bInheritHandle,
                               LPCSTR lpName) {
  WCHAR w[128];
  DWORD err = wide_name(lpName, w, 128);
  if (err) {
    SetLastError(err);
    return NULL;
  }
  return ConnectHubEventW(dwDesiredAccess, bInheritHandle, w);
}
#endif
