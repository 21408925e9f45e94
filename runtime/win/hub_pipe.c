/* win/hub_pipe.c - seed 000's hubs reached from other processes: each hub
 * serves its name on a named pipe, \\.\pipe\hydra-hub\<name>, as the
 * seed's own downlevel implementation does.
 *
 * Protocol (one exchange per connection, fixed-size little messages):
 *   client -> server: { access, inherit }
 *   server -> client: { handle value in the client, Win32 error }
 * The server learns the client's process from the pipe itself
 * (GetNamedPipeClientProcessId, not from the message), connects a
 * consumer and duplicates its event into that process; the client only
 * reads the value.  The consumer goes when its last handle anywhere is
 * closed (hub_api.c counts handles), also when the client dies.
 *
 * One pipe instance per hub (made with FILE_FLAG_FIRST_PIPE_INSTANCE, so
 * a second process serving the same name is refused), served by one
 * thread, all I/O overlapped and waited for together with a stop event;
 * a client that stalls is dropped after HY__HUBPIPE_IO_MS.  Clients that
 * find the instance busy wait for it (WaitNamedPipe).
 */
#ifdef _WIN32
#include <windows.h>
#include <stdint.h>
#include <wchar.h>

#include "alloc/mem.h"
#include "runtime/win/hubwin.h"

#define HY__HUBPIPE_IO_MS 5000
#define PREFIX L"\\\\.\\pipe\\hydra-hub\\"

typedef struct {
  DWORD access;
  DWORD inherit;
} request_t;

typedef struct {
  uint64_t handle;
  DWORD error;
  DWORD pad;
} reply_t;

struct hy__hubpipe {
  HANDLE pipe, stop, io, thread;
  HHEVENT hub;
};

/* The pipe's name for a hub's name, or a Win32 error. */
static DWORD pipe_name(LPCWSTR name, WCHAR *out, size_t cap) {
  if (wcschr(name, L'\\'))
    return ERROR_INVALID_NAME;
  if (wcslen(PREFIX) + wcslen(name) + 1 > cap)
    return ERROR_INVALID_PARAMETER;
  wcscpy(out, PREFIX);
  wcscat(out, name);
  return 0;
}

/* Waits for the overlapped op on p->pipe: TRUE if it completed (with n
 * bytes), FALSE on stop, time-out or error (the op is cancelled and its
 * end awaited, so ov can be reused). */
static BOOL finish(hy__hubpipe *p, OVERLAPPED *ov, BOOL started, DWORD *n) {
  if (!started && GetLastError() != ERROR_IO_PENDING)
    return GetLastError() == ERROR_PIPE_CONNECTED; /* connect: already */
  HANDLE w[2] = {ov->hEvent, p->stop};
  DWORD r = WaitForMultipleObjects(2, w, FALSE, HY__HUBPIPE_IO_MS);
  if (r != WAIT_OBJECT_0) {
    CancelIoEx(p->pipe, ov);
    GetOverlappedResult(p->pipe, ov, n, TRUE);
    return FALSE;
  }
  return GetOverlappedResult(p->pipe, ov, n, FALSE);
}

static void serve_one(hy__hubpipe *p, OVERLAPPED *ov) {
  request_t req;
  DWORD n = 0;
  ResetEvent(ov->hEvent);
  BOOL ok = ReadFile(p->pipe, &req, sizeof req, NULL, ov);
  if (!finish(p, ov, ok, &n) || n != sizeof req)
    return;
  reply_t rep = {0, 0, 0};
  ULONG pid = 0;
  HANDLE proc = NULL;
  if (!GetNamedPipeClientProcessId(p->pipe, &pid) ||
      !(proc = OpenProcess(PROCESS_DUP_HANDLE, FALSE, pid))) {
    rep.error = GetLastError();
  } else {
    HANDLE h = hy__hubwin_connect_for(p->hub, proc, req.access,
                                      req.inherit ? TRUE : FALSE, &rep.error);
    rep.handle = (uint64_t)(uintptr_t)h;
  }
  ResetEvent(ov->hEvent);
  ok = WriteFile(p->pipe, &rep, sizeof rep, NULL, ov);
  if ((!finish(p, ov, ok, &n) || n != sizeof rep) && rep.handle && proc) {
    /* The client will never learn the value: close it there. */
    HANDLE mine;
    if (DuplicateHandle(proc, (HANDLE)(uintptr_t)rep.handle,
                        GetCurrentProcess(), &mine, 0, FALSE,
                        DUPLICATE_CLOSE_SOURCE | DUPLICATE_SAME_ACCESS))
      CloseHandle(mine);
  }
  else if (n == sizeof rep) {
    /* Disconnecting drops what the client has not read yet: wait until it
     * closes its end (this read then fails), within the time-out. */
    char b;
    ResetEvent(ov->hEvent);
    ok = ReadFile(p->pipe, &b, 1, NULL, ov);
    finish(p, ov, ok, &n);
  }
  if (proc)
    CloseHandle(proc);
}

static DWORD WINAPI server(void *arg) {
  hy__hubpipe *p = arg;
  OVERLAPPED ov;
  for (;;) {
    memset(&ov, 0, sizeof ov);
    ov.hEvent = p->io;
    ResetEvent(p->io);
    DWORD n;
    BOOL ok = ConnectNamedPipe(p->pipe, &ov);
    BOOL connected = finish(p, &ov, ok, &n);
    if (WaitForSingleObject(p->stop, 0) == WAIT_OBJECT_0)
      break;
    if (connected)
      serve_one(p, &ov);
    DisconnectNamedPipe(p->pipe);
  }
  DisconnectNamedPipe(p->pipe);
  return 0;
}

DWORD hy__hubpipe_start(LPCWSTR name, HHEVENT e, hy__hubpipe **out) {
  WCHAR path[256];
  DWORD err = pipe_name(name, path, 256);
  if (err)
    return err;
  hy__hubpipe *p = hy__mem_calloc(1, sizeof *p);
  if (!p)
    return ERROR_NOT_ENOUGH_MEMORY;
  p->hub = e;
  p->pipe = CreateNamedPipeW(path,
                             PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED |
                                 FILE_FLAG_FIRST_PIPE_INSTANCE,
                             PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT |
                                 PIPE_REJECT_REMOTE_CLIENTS,
                             1, sizeof(reply_t), sizeof(request_t), 0, NULL);
  if (p->pipe == INVALID_HANDLE_VALUE) {
    err = GetLastError();
    hy__mem_free(p);
    return err == ERROR_ACCESS_DENIED || err == ERROR_PIPE_BUSY
               ? ERROR_ALREADY_EXISTS
               : err;
  }
  p->stop = CreateEventW(NULL, TRUE, FALSE, NULL);
  p->io = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (p->stop && p->io)
    p->thread = CreateThread(NULL, 64 * 1024, server, p,
                             STACK_SIZE_PARAM_IS_A_RESERVATION, NULL);
  if (!p->thread) {
    err = GetLastError();
    if (p->stop)
      CloseHandle(p->stop);
    if (p->io)
      CloseHandle(p->io);
    CloseHandle(p->pipe);
    hy__mem_free(p);
    return err ? err : ERROR_NOT_ENOUGH_MEMORY;
  }
  *out = p;
  return 0;
}

void hy__hubpipe_stop(hy__hubpipe *p) {
  SetEvent(p->stop);
  WaitForSingleObject(p->thread, INFINITE);
  CloseHandle(p->thread);
  CloseHandle(p->pipe);
  CloseHandle(p->stop);
  CloseHandle(p->io);
  hy__mem_free(p);
}

HANDLE hy__hubpipe_connect(LPCWSTR name, DWORD access, BOOL inherit) {
  WCHAR path[256];
  DWORD err = pipe_name(name, path, 256);
  if (err) {
    SetLastError(err == ERROR_INVALID_NAME ? ERROR_FILE_NOT_FOUND : err);
    return NULL;
  }
  ULONGLONG end = GetTickCount64() + HY__HUBPIPE_IO_MS;
  for (;;) {
    HANDLE h = CreateFileW(path, GENERIC_READ | GENERIC_WRITE, 0, NULL,
                           OPEN_EXISTING, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) {
      err = GetLastError();
      if (err != ERROR_PIPE_BUSY || GetTickCount64() >= end) {
        SetLastError(err == ERROR_PIPE_BUSY ? ERROR_TIMEOUT
                     : err == ERROR_PATH_NOT_FOUND ? ERROR_FILE_NOT_FOUND
                                                   : err);
        return NULL;
      }
      WaitNamedPipeW(path, 100);
      continue;
    }
    request_t req = {access, inherit ? 1u : 0u};
    reply_t rep = {0, ERROR_BROKEN_PIPE, 0};
    DWORD n = 0;
    BOOL ok = WriteFile(h, &req, sizeof req, &n, NULL) && n == sizeof req &&
              ReadFile(h, &rep, sizeof rep, &n, NULL) && n == sizeof rep;
    err = ok ? rep.error : GetLastError();
    CloseHandle(h);
    if (ok && rep.handle) {
      SetLastError(0);
      return (HANDLE)(uintptr_t)rep.handle;
    }
    /* The server dropped the connection (its hub is being destroyed, or it
     * timed out): ask again; a hub that is gone is not found then. */
    if (!ok && (err == ERROR_BROKEN_PIPE || err == ERROR_PIPE_NOT_CONNECTED ||
                err == ERROR_NO_DATA) && GetTickCount64() < end)
      continue;
    SetLastError(err ? err : ERROR_GEN_FAILURE);
    return NULL;
  }
}
#endif
