/* win/sock.c - the socket calls of net/sock.h on Windows (Winsock 2).
 * WSAGetLastError becomes a HY_E* code here (through hy__win_error) and
 * nowhere else in the net layer.
 *
 * Sockets are opened overlapped (WSA_FLAG_OVERLAPPED), not inherited by
 * child processes, and left in blocking mode: every operation that waits
 * is an overlapped one on the completion port (runtime/win/port_iocp.c,
 * which associates the socket, runs AcceptEx + SO_UPDATE_ACCEPT_CONTEXT
 * and binds before ConnectEx), so the mode never matters to them.
 *
 * Winsock needs WSAStartup before its first call; every completion port
 * holds one, so the calls made with a runtime find it done.  The calls
 * that can come without one (name lookups, address conversion) take their
 * own reference around the call.
 *
 * Options: Windows' SO_REUSEADDR is not the Unix one - it lets a second
 * socket take a port that a live listener holds - while binding a port
 * whose old connections are in TIME_WAIT, which is what the Unix option
 * is for, is allowed by default.  So HY__OPT_REUSEADDR sets nothing, and
 * HY__OPT_REUSEPORT (several listeners sharing a port, the kernel
 * spreading connections over them) has no Windows counterpart:
 * HY_ENOTSUP.  TCP_KEEPIDLE is the TCP_KEEPALIVE option (3) of recent
 * Windows; where it is refused, SIO_KEEPALIVE_VALS sets the same idle time.
 * An IPv6 scope must be numeric ("fe80::1%12"): interface names would
 * need the IP helper library.
 */
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mstcpip.h>
#include <windows.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hydra/error.h"
#include "net/sock.h"
#include "runtime/win/win.h"

#ifndef TCP_KEEPIDLE
#define TCP_KEEPIDLE 3
#endif
#ifndef WSA_FLAG_NO_HANDLE_INHERIT
#define WSA_FLAG_NO_HANDLE_INHERIT 0x80
#endif

_Static_assert(sizeof(SOCKET) <= sizeof(intptr_t), "a SOCKET fits an fd");

static int fail(int *os) {
  int e = WSAGetLastError();
  if (os)
    *os = e;
  return hy__win_error((unsigned long)e);
}

/* A Winsock reference for calls that may come before any port exists. */
static int wsa_up(void) {
  WSADATA wd;
  return WSAStartup(MAKEWORD(2, 2), &wd) == 0;
}

intptr_t hy__sock_open(int family, int type, int *err, int *os) {
  int af = family == HY_AF_INET6 ? AF_INET6 : AF_INET;
  int ty = type == HY__SOCK_DGRAM ? SOCK_DGRAM : SOCK_STREAM;
  int proto = type == HY__SOCK_DGRAM ? IPPROTO_UDP : IPPROTO_TCP;
  SOCKET s = WSASocketW(af, ty, proto, NULL, 0,
                        WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (s == INVALID_SOCKET && WSAGetLastError() == WSAEINVAL)
    /* Windows before 7 SP1 does not know the no-inherit flag. */
    s = WSASocketW(af, ty, proto, NULL, 0, WSA_FLAG_OVERLAPPED);
  if (s == INVALID_SOCKET) {
    *err = fail(os);
    return HY__BAD_SOCK;
  }
  *err = 0;
  return (intptr_t)s;
}

void hy__fd_close(intptr_t fd) { closesocket((SOCKET)fd); }

void hy__fd_close_reset(intptr_t fd) {
  struct linger lg;
  lg.l_onoff = 1;
  lg.l_linger = 0;
  setsockopt((SOCKET)fd, SOL_SOCKET, SO_LINGER, (const char *)&lg, sizeof lg);
  closesocket((SOCKET)fd);
}

int hy__sock_bind(intptr_t fd, const hy_addr_t *a, int *os) {
  if (bind((SOCKET)fd, (const struct sockaddr *)a->sa.raw, (int)a->len) != 0)
    return fail(os);
  return 0;
}

int hy__sock_listen(intptr_t fd, int backlog, int *os) {
  if (listen((SOCKET)fd, backlog) != 0)
    return fail(os);
  return 0;
}

int hy__sock_connect_now(intptr_t fd, const hy_addr_t *a, int *os) {
  if (connect((SOCKET)fd, (const struct sockaddr *)a->sa.raw, (int)a->len) != 0)
    return fail(os);
  return 0;
}

int hy__sock_local(intptr_t fd, hy_addr_t *out) {
  int len = (int)sizeof out->sa.raw;
  memset(out, 0, sizeof *out);
  if (getsockname((SOCKET)fd, (struct sockaddr *)out->sa.raw, &len) != 0)
    return fail(NULL);
  out->len = (uint32_t)len;
  return 0;
}

int hy__sock_peer(intptr_t fd, hy_addr_t *out) {
  int len = (int)sizeof out->sa.raw;
  memset(out, 0, sizeof *out);
  if (getpeername((SOCKET)fd, (struct sockaddr *)out->sa.raw, &len) != 0)
    return fail(NULL);
  out->len = (uint32_t)len;
  return 0;
}

int hy__sock_shutdown_write(intptr_t fd, int *os) {
  if (shutdown((SOCKET)fd, SD_SEND) != 0)
    return fail(os);
  return 0;
}

/* 1: set through setsockopt at level, name; 0: nothing to set here;
 * HY_E*: not an option, or none on Windows. */
static int opt_of(int opt, int *level, int *name) {
  switch (opt) {
  case HY__OPT_REUSEADDR: return 0; /* the default here (see the top) */
  case HY__OPT_REUSEPORT: return HY_ENOTSUP;
  case HY__OPT_V6ONLY: *level = IPPROTO_IPV6; *name = IPV6_V6ONLY; return 1;
  case HY__OPT_NODELAY: *level = IPPROTO_TCP; *name = TCP_NODELAY; return 1;
  case HY__OPT_KEEPALIVE: *level = SOL_SOCKET; *name = SO_KEEPALIVE; return 1;
  case HY__OPT_KEEPIDLE: *level = IPPROTO_TCP; *name = TCP_KEEPIDLE; return 1;
  case HY__OPT_RCVBUF: *level = SOL_SOCKET; *name = SO_RCVBUF; return 1;
  case HY__OPT_SNDBUF: *level = SOL_SOCKET; *name = SO_SNDBUF; return 1;
  default: return HY_EINVAL;
  }
}

/* Keep-alive on, with the idle time in seconds (the interval between
 * probes stays at a second, as Windows' own default). */
static int keepalive_vals(SOCKET s, int idle_s, int *os) {
  struct tcp_keepalive ka;
  ka.onoff = 1;
  ka.keepalivetime = (ULONG)idle_s * 1000u;
  ka.keepaliveinterval = 1000;
  DWORD got = 0;
  if (WSAIoctl(s, SIO_KEEPALIVE_VALS, &ka, sizeof ka, NULL, 0, &got, NULL,
               NULL) != 0)
    return fail(os);
  return 0;
}

int hy__sock_set(intptr_t fd, int opt, int value, int *os) {
  int level = 0, name = 0;
  int k = opt_of(opt, &level, &name);
  if (k <= 0)
    return k;
  if (opt == HY__OPT_KEEPIDLE && value <= 0)
    return HY_EINVAL;
  DWORD v = (DWORD)value;
  if (setsockopt((SOCKET)fd, level, name, (const char *)&v, sizeof v) != 0) {
    if (opt == HY__OPT_KEEPIDLE && WSAGetLastError() == WSAENOPROTOOPT)
      return keepalive_vals((SOCKET)fd, value, os);
    return fail(os);
  }
  return 0;
}

int hy__sock_get(intptr_t fd, int opt, int *value) {
  int level = 0, name = 0;
  int k = opt_of(opt, &level, &name);
  if (k < 0)
    return k;
  if (k == 0) {
    *value = 1;
    return 0;
  }
  DWORD v = 0;
  int len = sizeof v;
  if (getsockopt((SOCKET)fd, level, name, (char *)&v, &len) != 0)
    return fail(NULL);
  *value = (int)v;
  return 0;
}

/* Not relied on here: an AcceptEx socket starts in the default state, and
 * what SO_UPDATE_ACCEPT_CONTEXT copies from the listener is not specified
 * option by option. */
int hy__sock_inherited(int opt) {
  (void)opt;
  return 0;
}

int hy__sock_readable(intptr_t fd) {
  fd_set rd, ex;
  FD_ZERO(&rd);
  FD_ZERO(&ex);
  FD_SET((SOCKET)fd, &rd);
  FD_SET((SOCKET)fd, &ex);
  struct timeval tv = {0, 0};
  /* Readable covers data, end of stream, a reset and, on a listener, a
   * connection waiting; a failed connect shows in the except set. */
  return select(0, &rd, NULL, &ex, &tv) > 0;
}

/* A datagram longer than the buffer fails its receive with WSAEMSGSIZE
 * (HY_EMSGSIZE) on its own; there is no SIGPIPE to suppress. */
uint32_t hy__sock_flag_trunc(void) { return 0; }
uint32_t hy__sock_flag_nosignal(void) { return 0; }

/* ------------------------------------------------------------ addresses */

/* Name lookups and address conversion may come before any port exists:
 * they take a Winsock reference of their own around the call. */
int hy__sock_lib_hold(void) { return wsa_up() ? 0 : HY_ENOSYS; }
void hy__sock_lib_release(void) { WSACleanup(); }

int hy__sock_scope_by_name(const char *name, uint32_t *index) {
  (void)name;
  (void)index;
  return HY_EINVAL; /* interface names would need the IP helper library */
}
#endif
