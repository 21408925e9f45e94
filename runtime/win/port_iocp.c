/* win/port_iocp.c - the completion port on Windows: an I/O completion port.
 *
 * The workers of a runtime share one kernel port (the IOCP thread-pool
 * model): the first worker's hy__port creates it with a concurrency value
 * no worker count reaches, the others join it (hy__port_open's `share`), and
 * every worker dequeues with GetQueuedCompletionStatusEx, so a packet
 * goes to whichever worker is free.  An embedded runtime's host port has a
 * kernel port of its own.
 *
 * Ownership.  The port contract gives an op's completion (and a post) to
 * the port it was started on (posted to): the server's per-worker state and
 * callbacks rely on it.  The worker that dequeues a packet does the work
 * the completion needs (results, AcceptEx/ConnectEx contexts, freeing the
 * record), and hands a packet of another port to that port's inbox,
 * interrupting it (the wake APC) if it is blocked; the owner takes its
 * inbox on its next wait.  A blocking wait that dequeued only packets of
 * other ports goes on waiting.
 *
 * Operations.  Every started op gets an extension record holding its
 * OVERLAPPED (op->pdata[0]), freed when the op is dequeued.  Sockets are
 * associated with completion key KEY_IO and, when the provider is an IFS
 * one, with FILE_SKIP_COMPLETION_PORT_ON_SUCCESS: an op that completes at
 * once then queues no packet, and the port puts it on the starter's own
 * list instead (start and wait run on the owner thread, so that list needs
 * no lock).  Ops that fail at once land on that list too.  AcceptEx takes
 * a fresh socket per op, so any number of accepts can be pending on one
 * listener; ConnectEx binds an unbound socket first.  HY__OP_TIMEOUT uses a
 * thread-pool timer that posts the op; HY__OP_POLL (readable) is the AFD
 * driver's poll (IOCTL_AFD_POLL, issued on the socket through
 * NtDeviceIoControlFile as Winsock's own WSAPoll does, so it completes
 * through the socket's port like any overlapped op): it waits for data, end
 * of stream, a reset, or a connection to accept, on any kind of socket, and
 * takes nothing.  Where ntdll lacks it, a zero-byte WSARecv stands in (for
 * stream sockets only).  A poll for writability alone is reported at
 * once (a socket's send buffer is rarely full, and a send waits anyway).
 *
 * Cancel: CancelIoEx on the op's OVERLAPPED.  The op's one completion still
 * comes through the kernel port (ERROR_OPERATION_ABORTED, or the result if
 * it had completed), and only then is the record freed and the op given
 * back: nothing is reused while the kernel may still write to it.  A
 * cancel from another thread may race with the worker collecting the
 * completion: the canceller holds the op in PS_CANCELLING while it reads
 * the record, and the collector waits for that to end before freeing it.
 *
 * Posts are PostQueuedCompletionStatus packets carrying the op, keyed by
 * the port they were posted to.
 *
 * Wakes must reach one particular port even though the kernel port is
 * shared, so they do not travel as packets (any worker could take one):
 * a wake sets the port's `wake` flag and queues a no-op APC to the thread
 * that last blocked in the port; a blocking wait is alertable, so the APC
 * ends it.  A wake is consumed only by a wait that would block: a wait that
 * finds completions, or is only polling, leaves the flag set, so the next
 * blocking wait returns at once and the wake is never lost.  (When the
 * os_handle has been handed out, the host's wait on that handle is the
 * blocking wait: there, every wait consumes the wake.)
 *
 * os_handle: a manual-reset event, reset at the start of each wait and set
 * again at its end while completions or a wake remain; posts and wakes set
 * it, and ops started after the handle was handed out name it as their
 * OVERLAPPED event, so I/O completions set it too.
 */
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>
#include <stdatomic.h>
#include <string.h>

#include "alloc/mem.h"
#include "hydra/error.h"
#include "hydra/runtime.h"
#include "runtime/port.h"
#include "runtime/wait.h"
#include "runtime/win/win.h"

/* Completion keys: I/O on an associated socket, a finished timeout; any
 * other key is a post, and the key is the port it was posted to. */
enum { KEY_IO = 1, KEY_DONE = 3 };
/* op->pstate: not in flight; with the kernel; being cancelled (the canceller
 * still reads its record: collecting it waits); completed and on a port's
 * own list or inbox. */
enum { PS_IDLE = 0, PS_KERNEL = 1, PS_CANCELLING = 2, PS_LOCAL = 3 };
enum { BATCH = 64, CONCURRENCY = 4096 };

/* The AFD poll, as Winsock's providers use it (not in the SDK headers). */
#define IOCTL_AFD_POLL 0x00012024
enum {
  AFD_POLL_RECEIVE = 0x0001,
  AFD_POLL_SEND = 0x0004,
  AFD_POLL_DISCONNECT = 0x0008,
  AFD_POLL_ABORT = 0x0010,
  AFD_POLL_LOCAL_CLOSE = 0x0020,
  AFD_POLL_ACCEPT = 0x0080,
  AFD_POLL_CONNECT_FAIL = 0x0100
};
#define STATUS_PENDING_ 0x00000103L

typedef struct afd_poll_info {
  LARGE_INTEGER timeout;
  ULONG nhandles;
  ULONG exclusive;
  struct {
    HANDLE handle;
    ULONG events;
    LONG status;
  } h[1];
} afd_poll_info;

typedef LONG(NTAPI *nt_ioctl_fn)(HANDLE file, HANDLE event, void *apc,
                                 void *apc_ctx, void *iosb, ULONG code,
                                 void *in, ULONG inlen, void *out,
                                 ULONG outlen);
typedef ULONG(NTAPI *nt_status_fn)(LONG status);

typedef struct hub {
  HANDLE iocp;
  nt_ioctl_fn nt_ioctl;     /* NULL: no AFD poll here */
  nt_status_fn nt_status;
  atomic_int refs;
  _Atomic(LPFN_CONNECTEX) connectex;
  hy__lock_t lock;      /* the sockets associated without skip-on-success */
  intptr_t *noskip;
  int nnoskip, capnoskip;
  atomic_int any_noskip;
} hub;

struct hy__port {
  hub *hub;
  HANDLE event;             /* os_handle */
  atomic_int handle_used;   /* os_handle was handed out: the host mode */
  atomic_int wake;          /* a wake is pending */
  hy__lock_t tlock;         /* the owner thread, for wake APCs */
  HANDLE thread;
  DWORD tid;
  hy__op *local_head, *local_tail; /* owner only */
  hy__lock_t ilock;         /* the inbox: completions of this port's ops */
  hy__op *in_head, *in_tail; /* that another port of the hub dequeued */
  atomic_int in_any;
  int wsa;                  /* WSAStartup succeeded */
};

typedef struct ext {
  OVERLAPPED ov;
  hy__op *op;
  hub *hub;
  hy__port *owner;          /* the port the op was started on */
  SOCKET as;                /* ACCEPT: the socket being accepted into */
  WSABUF wb;
  DWORD flags;
  INT alen;
  int afd;                  /* POLL: through the AFD poll */
  afd_poll_info poll;
  atomic_int tstate;        /* TIMEOUT: 0 armed, 1 fired or cancelled */
  PTP_TIMER timer;
  char abuf[2 * (sizeof(SOCKADDR_STORAGE) + 16)];
} ext;

static uint8_t pstate_get(const hy__op *op) {
  return __atomic_load_n(&op->pstate, __ATOMIC_ACQUIRE);
}
static void pstate_set(hy__op *op, uint8_t v) {
  __atomic_store_n(&op->pstate, v, __ATOMIC_RELEASE);
}
static int pstate_cas(hy__op *op, uint8_t from, uint8_t to) {
  return __atomic_compare_exchange_n(&op->pstate, &from, to, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* Takes a kernel op back from the kernel's side (its completion is in
 * hand): waits out a cancel that is reading its record, so the record can
 * be freed. */
static void pstate_complete(hy__op *op) {
  for (int spins = 0; !pstate_cas(op, PS_KERNEL, PS_LOCAL); spins++)
    if (spins > 64)
      SwitchToThread();
}

/* ---------------------------------------------------------- open, close */

int hy__port_open(hy__port **out, int backend, hy__port *share) {
  return hy__port_open_for(out, backend, share, 0);
}

int hy__port_open_for(hy__port **out, int backend, hy__port *share,
                      int threads) {
  if (backend != HY__BACKEND_AUTO && backend != HY__BACKEND_IOCP)
    return HY_ENOSYS;
  hy__port *p = hy__mem_calloc(1, sizeof *p);
  if (!p)
    return HY_ENOMEM;
  WSADATA wd;
  p->wsa = WSAStartup(MAKEWORD(2, 2), &wd) == 0;
  p->event = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (!p->event)
    goto fail;
  if (share) {
    p->hub = share->hub;
    atomic_fetch_add(&p->hub->refs, 1);
  } else {
    p->hub = hy__mem_calloc(1, sizeof *p->hub);
    if (!p->hub)
      goto fail;
    /* The concurrency value: the worker count (the IOCP thread-pool
     * model: as many threads run at once as the port releases); a port
     * opened without one (tests) lets every waiter run. */
    p->hub->iocp = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0,
                                          threads > 0 ? (DWORD)threads
                                                      : CONCURRENCY);
    if (!p->hub->iocp) {
      hy__mem_free(p->hub);
      p->hub = NULL;
      goto fail;
    }
    atomic_store(&p->hub->refs, 1);
    HMODULE nt = GetModuleHandleW(L"ntdll.dll");
    if (nt) {
      FARPROC io = GetProcAddress(nt, "NtDeviceIoControlFile");
      FARPROC st = GetProcAddress(nt, "RtlNtStatusToDosError");
      if (io && st) {
        p->hub->nt_ioctl = (nt_ioctl_fn)(void (*)(void))io;
        p->hub->nt_status = (nt_status_fn)(void (*)(void))st;
      }
    }
  }
  *out = p;
  return 0;
fail:;
  int rc = hy__win_last_error();
  if (p->event)
    CloseHandle(p->event);
  if (p->wsa)
    WSACleanup();
  hy__mem_free(p);
  return rc ? rc : HY_ENOMEM;
}

void hy__port_close(hy__port *p) {
  if (!p)
    return;
  if (atomic_fetch_sub(&p->hub->refs, 1) == 1) {
    CloseHandle(p->hub->iocp);
    hy__mem_free(p->hub->noskip);
    hy__mem_free(p->hub);
  }
  if (p->thread)
    CloseHandle(p->thread);
  CloseHandle(p->event);
  if (p->wsa)
    WSACleanup();
  hy__mem_free(p);
}

const char *hy__port_backend_name(const hy__port *p) {
  (void)p;
  return "iocp";
}
int hy__port_backend(const hy__port *p) {
  (void)p;
  return HY__BACKEND_IOCP;
}

/* ------------------------------------------------- sockets: association */

static int noskip_find(hub *h, intptr_t fd) {
  for (int i = 0; i < h->nnoskip; i++)
    if (h->noskip[i] == fd)
      return i;
  return -1;
}

/* Whether an op on fd that completes at once still queues a packet. */
static int queues_on_success(hub *h, intptr_t fd) {
  if (!atomic_load_explicit(&h->any_noskip, memory_order_acquire))
    return 0;
  hy__lock(&h->lock);
  int r = noskip_find(h, fd) >= 0;
  hy__unlock(&h->lock);
  return r;
}

static int noskip_add(hub *h, intptr_t fd) {
  hy__lock(&h->lock);
  if (noskip_find(h, fd) < 0) {
    if (h->nnoskip == h->capnoskip) {
      int cap = h->capnoskip ? 2 * h->capnoskip : 16;
      intptr_t *v = hy__mem_realloc(h->noskip, (size_t)cap * sizeof *v);
      if (!v) {
        hy__unlock(&h->lock);
        return HY_ENOMEM;
      }
      h->noskip = v;
      h->capnoskip = cap;
    }
    h->noskip[h->nnoskip++] = fd;
    atomic_store(&h->any_noskip, 1);
  }
  hy__unlock(&h->lock);
  return 0;
}

static void noskip_remove(hub *h, intptr_t fd) {
  if (!atomic_load(&h->any_noskip))
    return;
  hy__lock(&h->lock);
  int i = noskip_find(h, fd);
  if (i >= 0)
    h->noskip[i] = h->noskip[--h->nnoskip];
  hy__unlock(&h->lock);
}

int hy__port_associate(hy__port *p, intptr_t fd) {
  if (fd == (intptr_t)INVALID_SOCKET)
    return HY_EBADF;
  SOCKET s = (SOCKET)fd;
  WSAPROTOCOL_INFOW info;
  int len = sizeof info;
  if (getsockopt(s, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info, &len) != 0)
    return hy__wsa_last_error();
  if (!CreateIoCompletionPort((HANDLE)s, p->hub->iocp, KEY_IO, 0)) {
    /* A handle is associated with one kernel port for life.  The ports of
     * a runtime share theirs, and a socket is associated again by each
     * worker it is used on: ERROR_INVALID_PARAMETER says it already is
     * (the modes below were set the first time). */
    DWORD err = GetLastError();
    return err == ERROR_INVALID_PARAMETER ? 0 : hy__win_error(err);
  }
  if (info.iSocketType == SOCK_DGRAM) {
    /* An ICMP port-unreachable must not fail the next receive. */
    BOOL no = FALSE;
    DWORD got;
    WSAIoctl(s, SIO_UDP_CONNRESET, &no, sizeof no, NULL, 0, &got, NULL, NULL);
  }
  /* Skipping the packet of an op that completed at once is safe only when
   * no layered provider sits between us and the kernel (IFS handles). */
  if (!(info.dwServiceFlags1 & XP1_IFS_HANDLES) ||
      !SetFileCompletionNotificationModes((HANDLE)s,
                                          FILE_SKIP_COMPLETION_PORT_ON_SUCCESS))
    return noskip_add(p->hub, fd);
  return 0;
}

/* Ends the ops still in flight on fd: each still completes, cancelled
 * unless it had completed. */
void hy__port_forget(hy__port *p, intptr_t fd) {
  if (fd != (intptr_t)INVALID_SOCKET)
    CancelIoEx((HANDLE)fd, NULL);
  noskip_remove(p->hub, fd);
}

/* ---------------------------------------------------------- operations */

static void local_push(hy__port *p, hy__op *op) {
  op->next = NULL;
  if (p->local_tail)
    p->local_tail->next = op;
  else
    p->local_head = op;
  p->local_tail = op;
}

static void ext_free(ext *e) {
  if (e->timer) {
    SetThreadpoolTimer(e->timer, NULL, 0, 0);
    WaitForThreadpoolTimerCallbacks(e->timer, TRUE);
    CloseThreadpoolTimer(e->timer);
  }
  if (e->as != INVALID_SOCKET)
    closesocket(e->as);
  hy__mem_free(e);
}

/* Fills op->res (and the op's outputs) for an op whose I/O finished with
 * `bytes` and error `err` (0: success). */
static void finish(ext *e, DWORD bytes, DWORD err) {
  hy__op *op = e->op;
  if (err) {
    op->res = err == ERROR_OPERATION_ABORTED ? HY_ECANCELED : hy__win_error(err);
    return;
  }
  switch (op->kind) {
  case HY__OP_ACCEPT: {
    SOCKET ls = (SOCKET)op->fd;
    if (setsockopt(e->as, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (char *)&ls,
                   sizeof ls) != 0) {
      op->res = hy__wsa_last_error();
      return;
    }
    if (op->addr) {
      struct sockaddr *lo = NULL, *re = NULL;
      INT llen = 0, rlen = 0;
      GetAcceptExSockaddrs(e->abuf, 0, sizeof(SOCKADDR_STORAGE) + 16,
                           sizeof(SOCKADDR_STORAGE) + 16, &lo, &llen, &re,
                           &rlen);
      if (re && rlen > 0) {
        memcpy(op->addr, re,
               (size_t)rlen < op->addrlen ? (size_t)rlen : op->addrlen);
        op->addrlen = (uint32_t)rlen;
      } else {
        op->addrlen = 0;
      }
    }
    op->res = (int64_t)e->as;
    e->as = INVALID_SOCKET; /* the caller's now */
    return;
  }
  case HY__OP_CONNECT:
    if (setsockopt((SOCKET)op->fd, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT,
                   NULL, 0) != 0) {
      op->res = hy__wsa_last_error();
      return;
    }
    op->res = 0;
    return;
  case HY__OP_RECVFROM:
    op->addrlen = (uint32_t)e->alen;
    op->res = (int64_t)bytes;
    return;
  case HY__OP_POLL: {
    if (!e->afd) {
      op->res = HY__POLL_IN | (op->flags & HY__POLL_OUT);
      return;
    }
    ULONG ev = e->poll.nhandles ? e->poll.h[0].events : 0;
    int m = 0;
    if (ev & (AFD_POLL_RECEIVE | AFD_POLL_DISCONNECT | AFD_POLL_ABORT |
              AFD_POLL_LOCAL_CLOSE | AFD_POLL_ACCEPT | AFD_POLL_CONNECT_FAIL))
      m |= HY__POLL_IN;
    if (ev & AFD_POLL_SEND)
      m |= HY__POLL_OUT;
    if (ev & (AFD_POLL_ABORT | AFD_POLL_CONNECT_FAIL | AFD_POLL_LOCAL_CLOSE))
      m |= HY__POLL_ERR;
    op->res = m & ((op->flags & (HY__POLL_IN | HY__POLL_OUT)) | HY__POLL_ERR);
    if (!op->res)
      op->res = m;
    return;
  }
  default:
    op->res = (int64_t)bytes;
    return;
  }
}

/* The result of a kernel-completed op: the error, if any, from its
 * OVERLAPPED. */
static DWORD ov_error(ext *e, DWORD *bytes) {
  if (e->ov.Internal == 0)
    return 0;
  DWORD flags = 0;
  if (WSAGetOverlappedResult((SOCKET)e->op->fd, &e->ov, bytes, FALSE, &flags))
    return 0;
  DWORD err = (DWORD)WSAGetLastError();
  /* 0xC0000120: STATUS_CANCELLED */
  int cancelled = e->ov.Internal == (ULONG_PTR)0xC0000120;
  /* An accept whose listener is still there failed for the connection it
   * was taking, which its peer reset first: Windows says so
   * (ERROR_NETNAME_DELETED), Wine reports what the host said when it took
   * the connection (ENOTCONN, EINVAL: WSAENOTCONN, WSAEINVAL).  The peer's
   * doing, not the listener's (the server accepts again at once). */
  if (e->op->kind == HY__OP_ACCEPT &&
      (err == WSAEINVAL || err == WSAENOTCONN) && !cancelled) {
    int type = 0, len = sizeof type;
    if (getsockopt((SOCKET)e->op->fd, SOL_SOCKET, SO_TYPE, (char *)&type,
                   &len) == 0)
      return WSAECONNABORTED;
  }
  if (err == WSAENOTSOCK || err == WSAEINVAL) /* the socket is gone */
    err = cancelled ? ERROR_OPERATION_ABORTED : ERROR_INVALID_HANDLE;
  return err;
}

static LPFN_CONNECTEX get_connectex(hub *h, SOCKET s) {
  LPFN_CONNECTEX fn = atomic_load(&h->connectex);
  if (fn)
    return fn;
  GUID id = WSAID_CONNECTEX;
  DWORD got = 0;
  if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &id, sizeof id, &fn,
               sizeof fn, &got, NULL, NULL) != 0)
    return NULL;
  atomic_store(&h->connectex, fn);
  return fn;
}

static void CALLBACK timer_fired(PTP_CALLBACK_INSTANCE inst, void *arg,
                                 PTP_TIMER timer) {
  (void)inst;
  (void)timer;
  ext *e = arg;
  int zero = 0;
  if (atomic_compare_exchange_strong(&e->tstate, &zero, 1)) {
    hy__port *owner = e->owner;
    e->op->res = HY_ETIMEDOUT;
    PostQueuedCompletionStatus(e->hub->iocp, 0, KEY_DONE, &e->ov);
    if (atomic_load(&owner->handle_used))
      SetEvent(owner->event); /* a packet without an OVERLAPPED event */
  }
}

/* Issues the Winsock call for op; returns 0 (pending or done), with *now
 * set when it finished at once (and *bytes what it moved), or the Winsock
 * error. */
static DWORD issue(hy__port *p, ext *e, int *now, DWORD *bytes) {
  hy__op *op = e->op;
  SOCKET s = (SOCKET)op->fd;
  int rc;
  *now = 0;
  *bytes = 0;
  switch (op->kind) {
  case HY__OP_ACCEPT: {
    WSAPROTOCOL_INFOW info;
    int len = sizeof info;
    if (getsockopt(s, SOL_SOCKET, SO_PROTOCOL_INFOW, (char *)&info, &len) != 0)
      return (DWORD)WSAGetLastError();
    e->as = WSASocketW(info.iAddressFamily, info.iSocketType, info.iProtocol,
                       NULL, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (e->as == INVALID_SOCKET)
      e->as = WSASocketW(info.iAddressFamily, info.iSocketType, info.iProtocol,
                         NULL, 0, WSA_FLAG_OVERLAPPED);
    if (e->as == INVALID_SOCKET)
      return (DWORD)WSAGetLastError();
    if (AcceptEx(s, e->as, e->abuf, 0, sizeof(SOCKADDR_STORAGE) + 16,
                 sizeof(SOCKADDR_STORAGE) + 16, bytes, &e->ov)) {
      *now = 1;
      return 0;
    }
    break;
  }
  case HY__OP_CONNECT: {
    LPFN_CONNECTEX cx = get_connectex(p->hub, s);
    if (!cx)
      return (DWORD)WSAGetLastError();
    SOCKADDR_STORAGE me;
    int mlen = sizeof me;
    if (getsockname(s, (struct sockaddr *)&me, &mlen) != 0) {
      /* ConnectEx wants a bound socket: bind to the wildcard address. */
      memset(&me, 0, sizeof me);
      me.ss_family = ((struct sockaddr *)op->addr)->sa_family;
      mlen = me.ss_family == AF_INET6 ? (int)sizeof(struct sockaddr_in6)
                                      : (int)sizeof(struct sockaddr_in);
      if (bind(s, (struct sockaddr *)&me, mlen) != 0)
        return (DWORD)WSAGetLastError();
    }
    if (cx(s, op->addr, (int)op->addrlen, NULL, 0, NULL, &e->ov)) {
      *now = 1;
      return 0;
    }
    break;
  }
  case HY__OP_POLL:
    if (p->hub->nt_ioctl) {
      /* The poll names the base socket (below any layered provider). */
      SOCKET base = s;
      DWORD got = 0;
      if (WSAIoctl(s, SIO_BASE_HANDLE, NULL, 0, &base, sizeof base, &got,
                   NULL, NULL) != 0)
        base = s;
      e->afd = 1;
      e->poll.timeout.QuadPart = INT64_MAX;
      e->poll.nhandles = 1;
      e->poll.exclusive = FALSE;
      e->poll.h[0].handle = (HANDLE)base;
      e->poll.h[0].status = 0;
      e->poll.h[0].events =
          AFD_POLL_RECEIVE | AFD_POLL_DISCONNECT | AFD_POLL_ABORT |
          AFD_POLL_LOCAL_CLOSE | AFD_POLL_ACCEPT | AFD_POLL_CONNECT_FAIL |
          (op->flags & HY__POLL_OUT ? AFD_POLL_SEND : 0);
      e->ov.Internal = (ULONG_PTR)STATUS_PENDING_;
      /* The OVERLAPPED's first two fields are the IO_STATUS_BLOCK; it is
       * the context the completion packet carries, as for Winsock's own
       * overlapped calls. */
      LONG st = p->hub->nt_ioctl((HANDLE)s, e->ov.hEvent, NULL, &e->ov, &e->ov,
                                 IOCTL_AFD_POLL, &e->poll, sizeof e->poll,
                                 &e->poll, sizeof e->poll);
      if (st == STATUS_PENDING_)
        return 0;
      if (st >= 0) {
        *now = 1;
        return 0;
      }
      return p->hub->nt_status(st);
    }
    /* fall through */
  case HY__OP_RECV:
    e->wb.buf = op->kind == HY__OP_POLL ? NULL : op->buf;
    e->wb.len = op->kind == HY__OP_POLL ? 0 : (ULONG)op->len;
    e->flags = op->kind == HY__OP_POLL ? 0 : op->flags & (MSG_PEEK | MSG_OOB);
    rc = WSARecv(s, &e->wb, 1, bytes, &e->flags, &e->ov, NULL);
    if (rc == 0) {
      *now = 1;
      return 0;
    }
    break;
  case HY__OP_SEND:
    e->wb.buf = op->buf;
    e->wb.len = (ULONG)op->len;
    rc = WSASend(s, &e->wb, 1, bytes, op->flags & (MSG_OOB | MSG_DONTROUTE),
                 &e->ov, NULL);
    if (rc == 0) {
      *now = 1;
      return 0;
    }
    break;
  case HY__OP_RECVFROM:
    e->wb.buf = op->buf;
    e->wb.len = (ULONG)op->len;
    e->flags = op->flags & (MSG_PEEK | MSG_OOB);
    e->alen = (INT)op->addrlen;
    rc = WSARecvFrom(s, &e->wb, 1, bytes, &e->flags, op->addr,
                     op->addr ? &e->alen : NULL, &e->ov, NULL);
    if (rc == 0) {
      *now = 1;
      return 0;
    }
    break;
  case HY__OP_SENDTO:
    e->wb.buf = op->buf;
    e->wb.len = (ULONG)op->len;
    rc = WSASendTo(s, &e->wb, 1, bytes, op->flags & (MSG_OOB | MSG_DONTROUTE),
                   op->addr, (int)op->addrlen, &e->ov, NULL);
    if (rc == 0) {
      *now = 1;
      return 0;
    }
    break;
  default:
    return WSAEINVAL;
  }
  DWORD err = (DWORD)WSAGetLastError();
  return err == WSA_IO_PENDING ? 0 : err;
}

int hy__port_start(hy__port *p, hy__op *op) {
  if (!op)
    return HY_EINVAL;
  if (op->kind == HY__OP_NOP) {
    op->res = 0;
    pstate_set(op, PS_LOCAL);
    local_push(p, op);
    if (atomic_load(&p->handle_used))
      SetEvent(p->event);
    return 0;
  }
  if (op->kind == HY__OP_POST || op->kind >= HY__OP_KIND_COUNT)
    return HY_EINVAL;
  if (op->kind != HY__OP_TIMEOUT && op->fd == (intptr_t)INVALID_SOCKET)
    return HY_EBADF; /* not a socket at all: not started */
  if ((op->kind == HY__OP_CONNECT || op->kind == HY__OP_SENDTO) &&
      (!op->addr || op->addrlen < sizeof(struct sockaddr)))
    return HY_EINVAL; /* no address: not started */
  if (op->kind == HY__OP_RECVFROM && op->addr && op->addrlen == 0)
    return HY_EINVAL;
  if (op->kind == HY__OP_POLL && !(op->flags & HY__POLL_IN)) {
    /* Writability has no completion of its own: report it at once. */
    op->res = op->flags & HY__POLL_OUT;
    pstate_set(op, PS_LOCAL);
    local_push(p, op);
    if (atomic_load(&p->handle_used))
      SetEvent(p->event);
    return 0;
  }
  ext *e = hy__mem_calloc(1, sizeof *e);
  if (!e)
    return HY_ENOMEM;
  e->op = op;
  e->hub = p->hub;
  e->owner = p;
  e->as = INVALID_SOCKET;
  op->pdata[0] = (uint64_t)(uintptr_t)e;
  if (op->kind == HY__OP_TIMEOUT) {
    e->timer = CreateThreadpoolTimer(timer_fired, e, NULL);
    if (!e->timer) {
      int rc = hy__win_last_error();
      hy__mem_free(e);
      return rc ? rc : HY_ENOMEM;
    }
    pstate_set(op, PS_KERNEL);
    int64_t left = op->deadline - hy_now();
    if (left < 0)
      left = 0;
    /* Relative due time in 100 ns units, rounded up: never early. */
    int64_t due = -((left + 99) / 100);
    FILETIME ft;
    ft.dwLowDateTime = (DWORD)((uint64_t)due & 0xffffffffu);
    ft.dwHighDateTime = (DWORD)((uint64_t)due >> 32);
    SetThreadpoolTimer(e->timer, &ft, 0, 0);
    return 0;
  }
  if (atomic_load(&p->handle_used))
    e->ov.hEvent = p->event;
  pstate_set(op, PS_KERNEL);
  int now;
  DWORD bytes;
  DWORD err = issue(p, e, &now, &bytes);
  if (err == 0 && !now)
    return 0; /* pending: its packet comes */
  if (err == 0 && queues_on_success(p->hub, op->fd))
    return 0; /* done, and its packet comes all the same */
  /* Done at once (skip-on-success) or failed at once: no packet. */
  finish(e, bytes, err);
  pstate_complete(op);
  op->pdata[0] = 0;
  ext_free(e);
  local_push(p, op);
  if (atomic_load(&p->handle_used))
    SetEvent(p->event);
  return 0;
}

int64_t hy__port_send_now(hy__port *p, intptr_t fd, const void *buf,
                          size_t len, uint32_t flags) {
  (void)p;
  (void)fd;
  (void)buf;
  (void)len;
  (void)flags;
  return HY_ENOSYS; /* sends are posted as ops */
}

int64_t hy__port_recv_now(hy__port *p, hy__op *op) {
  (void)p;
  (void)op;
  return HY_ENOSYS; /* no op completes with HY__RES_READY here */
}

int hy__port_done_early(const hy__port *p, const hy__op *op) {
  (void)p;
  (void)op;
  return 0; /* every completion comes through the IOCP */
}

int hy__port_cancel(hy__port *p, hy__op *op) {
  (void)p;
  uint8_t s = pstate_get(op);
  if (s == PS_IDLE)
    return HY_ENOENT;
  /* Only while the op is with the kernel is its record there to read;
   * holding it in PS_CANCELLING keeps the port that collects its
   * completion from freeing the record meanwhile.  Otherwise it completed
   * (its completion is queued) or another thread is cancelling it. */
  if (!pstate_cas(op, PS_KERNEL, PS_CANCELLING))
    return 0;
  ext *e = (ext *)(uintptr_t)op->pdata[0];
  if (op->kind == HY__OP_TIMEOUT) {
    int zero = 0;
    if (atomic_compare_exchange_strong(&e->tstate, &zero, 1)) {
      hy__port *owner = e->owner;
      op->res = HY_ECANCELED;
      PostQueuedCompletionStatus(e->hub->iocp, 0, KEY_DONE, &e->ov);
      if (atomic_load(&owner->handle_used))
        SetEvent(owner->event);
    }
  } else {
    /* ERROR_NOT_FOUND: it completed; its packet is on the way. */
    CancelIoEx((HANDLE)op->fd, &e->ov);
  }
  pstate_set(op, PS_KERNEL);
  return 0;
}

int hy__port_post(hy__port *p, hy__op *op) {
  if (!PostQueuedCompletionStatus(p->hub->iocp, 0, (ULONG_PTR)p,
                                  (OVERLAPPED *)op))
    return HY_ENOMEM;
  if (atomic_load(&p->handle_used))
    SetEvent(p->event);
  return 0;
}

/* ---------------------------------------------------------- wake, wait */

static void CALLBACK wake_apc(ULONG_PTR arg) { (void)arg; }

void hy__port_wake(hy__port *p) {
  if (atomic_exchange(&p->wake, 1) != 0)
    return; /* one is pending already: wakes coalesce */
  if (atomic_load(&p->handle_used))
    SetEvent(p->event);
  hy__lock(&p->tlock);
  if (p->thread)
    QueueUserAPC(wake_apc, p->thread, 0);
  hy__unlock(&p->tlock);
}

/* Records the calling thread as the one a wake must interrupt. */
static void own(hy__port *p) {
  DWORD tid = GetCurrentThreadId();
  if (p->tid == tid)
    return;
  HANDLE h = NULL;
  DuplicateHandle(GetCurrentProcess(), GetCurrentThread(), GetCurrentProcess(),
                  &h, 0, FALSE, DUPLICATE_SAME_ACCESS);
  hy__lock(&p->tlock);
  HANDLE old = p->thread;
  p->thread = h;
  p->tid = tid;
  hy__unlock(&p->tlock);
  if (old)
    CloseHandle(old);
}

/* Hands op, completed, to its own port, which another port of the hub
 * dequeued: into the owner's inbox, and the owner is interrupted if it
 * is blocked in its port. */
static void route(hy__port *owner, hy__op *op) {
  op->next = NULL;
  hy__lock(&owner->ilock);
  if (owner->in_tail)
    owner->in_tail->next = op;
  else
    owner->in_head = op;
  owner->in_tail = op;
  /* Only the first packet of an empty inbox interrupts the owner: until
   * it takes the inbox, that interruption is pending or under way. */
  int first = !atomic_exchange(&owner->in_any, 1);
  hy__unlock(&owner->ilock);
  if (!first)
    return;
  if (atomic_load(&owner->handle_used))
    SetEvent(owner->event);
  hy__lock(&owner->tlock);
  if (owner->thread)
    QueueUserAPC(wake_apc, owner->thread, 0);
  hy__unlock(&owner->tlock);
}

/* Turns packets that port p dequeued into ops: the completions of p's own
 * ops and posts go to ops[], those of other ports go to their owners. */
static int collect(hy__port *p, OVERLAPPED_ENTRY *ent, ULONG k, hy__op **ops) {
  int n = 0;
  for (ULONG i = 0; i < k; i++) {
    ULONG_PTR key = ent[i].lpCompletionKey;
    if (key != KEY_IO && key != KEY_DONE) { /* a post, keyed by its port */
      hy__op *op = (hy__op *)ent[i].lpOverlapped;
      if ((hy__port *)key == p)
        ops[n++] = op;
      else
        route((hy__port *)key, op);
      continue;
    }
    ext *e = (ext *)ent[i].lpOverlapped;
    hy__op *op = e->op;
    hy__port *owner = e->owner;
    if (key == KEY_IO) {
      DWORD bytes = ent[i].dwNumberOfBytesTransferred;
      DWORD err = ov_error(e, &bytes);
      finish(e, bytes, err);
    }
    pstate_complete(op);
    op->pdata[0] = 0;
    ext_free(e);
    if (owner != p) {
      route(owner, op);
      continue;
    }
    pstate_set(op, PS_IDLE);
    ops[n++] = op;
  }
  return n;
}

static int take_inbox(hy__port *p, hy__op **ops, int max) {
  if (max <= 0 || !atomic_load(&p->in_any))
    return 0;
  int n = 0;
  hy__lock(&p->ilock);
  while (p->in_head && n < max) {
    hy__op *op = p->in_head;
    p->in_head = op->next;
    op->next = NULL;
    pstate_set(op, PS_IDLE);
    ops[n++] = op;
  }
  if (!p->in_head) {
    p->in_tail = NULL;
    atomic_store(&p->in_any, 0);
  }
  hy__unlock(&p->ilock);
  return n;
}

static int take_local(hy__port *p, hy__op **ops, int max) {
  int n = 0;
  while (p->local_head && n < max) {
    hy__op *op = p->local_head;
    p->local_head = op->next;
    if (!p->local_head)
      p->local_tail = NULL;
    op->next = NULL;
    pstate_set(op, PS_IDLE);
    ops[n++] = op;
  }
  return n;
}

/* Dequeues up to max packets from the kernel port; *got: how many came
 * (some may have gone to other ports); *woken: an APC ended the wait.
 * Returns the ops of p's own, or HY_E*. */
static int dequeue(hy__port *p, hy__op **ops, int max, DWORD ms, int alertable,
                   int *woken, ULONG *got) {
  OVERLAPPED_ENTRY ent[BATCH];
  ULONG k = 0;
  if (max > BATCH)
    max = BATCH;
  *woken = 0;
  *got = 0;
  if (!GetQueuedCompletionStatusEx(p->hub->iocp, ent, (ULONG)max, &k, ms,
                                   alertable)) {
    DWORD err = GetLastError();
    if (err == WAIT_IO_COMPLETION)
      *woken = 1;
    else if (err != WAIT_TIMEOUT)
      return hy__win_error(err);
    return 0;
  }
  *got = k;
  return collect(p, ent, k, ops);
}

int hy__port_wait(hy__port *p, hy__op **ops, int max, int64_t timeout_ns) {
  if (max <= 0)
    return HY_EINVAL;
  int host = atomic_load(&p->handle_used);
  int woken;
  ULONG got;
  if (host)
    ResetEvent(p->event);
  if (timeout_ns != 0)
    own(p);
  int n = take_local(p, ops, max);
  n += take_inbox(p, ops + n, max - n);
  int more = n == max; /* the port may hold more than this wait took */
  if (n < max) {
    int want = max - n < BATCH ? max - n : BATCH;
    int k = dequeue(p, ops + n, want, 0, FALSE, &woken, &got);
    if (k < 0 && n == 0)
      return k;
    if (k > 0)
      n += k;
    more = got == (ULONG)want;
  }
  if (n == 0 && timeout_ns != 0 && !atomic_exchange(&p->wake, 0)) {
    /* Nothing there and no wake pending: this wait blocks - until one of
     * this port's completions, a wake, or the time-out (packets of other
     * ports dequeued meanwhile are passed on, and the wait goes on). */
    int64_t end = timeout_ns > 0 ? hy_now() + timeout_ns : -1;
    int want = max < BATCH ? max : BATCH;
    for (;;) {
      DWORD ms = INFINITE;
      if (end >= 0) {
        int64_t left = end - hy_now();
        if (left < 0)
          left = 0;
        int64_t m = (left + 999999) / 1000000;
        ms = m >= (int64_t)INFINITE ? INFINITE - 1 : (DWORD)m;
      }
      int k = dequeue(p, ops, want, ms, TRUE, &woken, &got);
      if (k < 0)
        return k;
      n = k;
      more = got == (ULONG)want;
      if (woken) {
        /* A wake, a completion passed on by another port - or the APC of
         * a wake that an earlier wait took without blocking: then the
         * wait goes on. */
        int w = atomic_exchange(&p->wake, 0);
        n += take_inbox(p, ops + n, max - n);
        if (w || n > 0 || ms == 0)
          break;
        continue;
      }
      if (n > 0 || got == 0 || ms == 0)
        break;
      n = take_inbox(p, ops, max);
      if (n > 0 || atomic_exchange(&p->wake, 0))
        break;
    }
  }
  if (host) {
    /* The host waits on the handle, not here: its wait consumed the wake. */
    if (n > 0 || timeout_ns == 0)
      atomic_store(&p->wake, 0);
    if (p->local_head || more || atomic_load(&p->wake) ||
        atomic_load(&p->in_any))
      SetEvent(p->event);
  }
  return n;
}

intptr_t hy__port_os_handle(const hy__port *p) {
  hy__port *mp = (hy__port *)p; /* handing it out switches on host mode */
  if (!atomic_exchange(&mp->handle_used, 1))
    SetEvent(mp->event); /* anything already queued may be there: look */
  return (intptr_t)p->event;
}
#endif
