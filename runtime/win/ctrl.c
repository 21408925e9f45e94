/* win/ctrl.c - console control events (Ctrl+C, Ctrl+Break, close, logoff,
 * shutdown) delivered as signal numbers to subscribers; see ctrl.h.
 *
 * Process-wide state, like the signal dispositions it stands for on POSIX:
 * the subscriber list, its lock and whether the handler is installed. */
#ifdef _WIN32
#include <windows.h>

#include "alloc/mem.h"
#include "hydra/error.h"
#include "runtime/win/ctrl.h"
#include "runtime/win/win.h"

typedef struct sub {
  hy__ctrl_fn fn;
  void *arg;
} sub;

static SRWLOCK lock = SRWLOCK_INIT;
static CONDITION_VARIABLE gone = CONDITION_VARIABLE_INIT;
static sub *subs;
static int nsubs, capsubs;

int hy__ctrl_signo(unsigned long ctrl_type) {
  switch (ctrl_type) {
  case CTRL_C_EVENT: return SIGINT;
  case CTRL_BREAK_EVENT: return HY__SIGQUIT;
  case CTRL_CLOSE_EVENT:
  case CTRL_LOGOFF_EVENT:
  case CTRL_SHUTDOWN_EVENT: return SIGTERM;
  default: return 0;
  }
}

int hy__ctrl_deliver(unsigned long ctrl_type) {
  int signo = hy__ctrl_signo(ctrl_type);
  if (!signo)
    return 0;
  AcquireSRWLockShared(&lock);
  int n = nsubs;
  int took = 0;
  for (int i = 0; i < n; i++)
    took += subs[i].fn(subs[i].arg, signo) != 0;
  ReleaseSRWLockShared(&lock);
  return took;
}

static BOOL WINAPI on_ctrl(DWORD type) {
  if (hy__ctrl_deliver(type) == 0)
    return FALSE; /* nobody listens: the next handler (or the default) */
  if (hy__ctrl_signo(type) == SIGTERM) {
    /* The process ends when this returns: give the subscribers' runtimes
     * the time to shut down and unsubscribe. */
    ULONGLONG end = GetTickCount64() + HY__CTRL_TERM_WAIT_MS;
    AcquireSRWLockExclusive(&lock);
    while (nsubs > 0) {
      ULONGLONG now = GetTickCount64();
      if (now >= end)
        break;
      SleepConditionVariableSRW(&gone, &lock, (DWORD)(end - now), 0);
    }
    ReleaseSRWLockExclusive(&lock);
  }
  return TRUE;
}

int hy__ctrl_handler(unsigned long ctrl_type) {
  return on_ctrl((DWORD)ctrl_type) ? 1 : 0;
}

int hy__ctrl_add(hy__ctrl_fn fn, void *arg) {
  int rc = 0;
  AcquireSRWLockExclusive(&lock);
  if (nsubs == capsubs) {
    int cap = capsubs ? 2 * capsubs : 8;
    sub *v = hy__mem_realloc(subs, (size_t)cap * sizeof *v);
    if (!v) {
      ReleaseSRWLockExclusive(&lock);
      return HY_ENOMEM;
    }
    subs = v;
    capsubs = cap;
  }
  if (nsubs == 0 && !SetConsoleCtrlHandler(on_ctrl, TRUE))
    rc = hy__win_last_error();
  if (rc == 0)
    subs[nsubs++] = (sub){fn, arg};
  ReleaseSRWLockExclusive(&lock);
  return rc;
}

void hy__ctrl_remove(hy__ctrl_fn fn, void *arg) {
  AcquireSRWLockExclusive(&lock);
  for (int i = 0; i < nsubs; i++) {
    if (subs[i].fn == fn && subs[i].arg == arg) {
      subs[i] = subs[--nsubs];
      break;
    }
  }
  if (nsubs == 0) {
    SetConsoleCtrlHandler(on_ctrl, FALSE);
    hy__mem_free(subs);
    subs = NULL;
    capsubs = 0;
  }
  ReleaseSRWLockExclusive(&lock);
  WakeAllConditionVariable(&gone);
}
#endif
