/* sock_compat.h - the plain BSD socket calls the net and port tests make on
 * their own side of a connection (clients independent of the library),
 * for Winsock and POSIX alike: open, close, close with a reset,
 * non-blocking mode, a receive time-out, the last socket error, a loopback
 * listener, and the flags Windows lacks.  A test's socket is an int on
 * both (Winsock's SOCKET values fit one).  Include after the system
 * headers. */
#ifndef HYDRA_TEST_SOCK_COMPAT_H
#define HYDRA_TEST_SOCK_COMPAT_H

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <sys/types.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* no SIGPIPE on Windows */
#endif
#ifndef SOCK_CLOEXEC
#define SOCK_CLOEXEC 0 /* Winsock sockets are not inherited unless asked */
#endif

/* A blocking socket (Winsock started for it: the tests' own reference). */
static inline int sock_open(int family, int type) {
  WSADATA wd;
  WSAStartup(MAKEWORD(2, 2), &wd);
  SOCKET s = WSASocketW(family, type & ~SOCK_CLOEXEC, 0, NULL, 0,
                        WSA_FLAG_OVERLAPPED);
  return s == INVALID_SOCKET ? -1 : (int)s;
}

static inline void sock_close(int fd) { closesocket((SOCKET)fd); }
static inline int sock_errno(void) { return WSAGetLastError(); }

static inline int sock_nonblock(int fd, int on) {
  u_long v = on != 0;
  return ioctlsocket((SOCKET)fd, FIONBIO, &v);
}

/* 1 when this Windows program runs under Wine. */
static inline int sock_under_wine(void) {
  HMODULE nt = GetModuleHandleA("ntdll.dll");
  return nt && GetProcAddress(nt, "wine_get_version") != NULL;
}

static inline int sock_rcvtimeo(int fd, int ms) {
  DWORD v = (DWORD)ms;
  return setsockopt((SOCKET)fd, SOL_SOCKET, SO_RCVTIMEO, (const char *)&v,
                    sizeof v);
}

#else
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static inline int sock_open(int family, int type) {
  return socket(family, type, 0);
}

static inline int sock_under_wine(void) { return 0; }

static inline void sock_close(int fd) { close(fd); }
static inline int sock_errno(void) { return errno; }

static inline int sock_nonblock(int fd, int on) {
  int fl = fcntl(fd, F_GETFL);
  return fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

static inline int sock_rcvtimeo(int fd, int ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

#endif

/* A listening TCP socket on 127.0.0.1, on a port the system picks; its
 * address goes to *a.  Returns it, or -1 with nothing left open. */
static inline int sock_listen_loopback(struct sockaddr_in *a, int backlog) {
  int l = sock_open(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
  if (l < 0)
    return -1;
  memset(a, 0, sizeof *a);
  a->sin_family = AF_INET;
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof *a;
  if (bind(l, (struct sockaddr *)a, sizeof *a) != 0 ||
      listen(l, backlog) != 0 ||
      getsockname(l, (struct sockaddr *)a, &al) != 0) {
    sock_close(l);
    return -1;
  }
  return l;
}

#ifndef _WIN32
/* A connected TCP pair on 127.0.0.1, both ends blocking, the client with
 * TCP_NODELAY.  Returns 0, or -1 with nothing left open. */
static inline int sock_tcp_pair(int *client, int *server) {
  struct sockaddr_in sa;
  int l = sock_listen_loopback(&sa, 1);
  if (l < 0)
    return -1;
  int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), s = -1;
  if (c >= 0 && connect(c, (struct sockaddr *)&sa, sizeof sa) == 0)
    s = accept(l, NULL, NULL);
  close(l);
  if (s < 0) {
    if (c >= 0)
      close(c);
    return -1;
  }
  int one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  *client = c;
  *server = s;
  return 0;
}
#endif

/* Closes with a reset (SO_LINGER 0): the peer sees ECONNRESET. */
static inline void sock_close_reset(int fd) {
  struct linger lg;
  lg.l_onoff = 1;
  lg.l_linger = 0;
  setsockopt(fd, SOL_SOCKET, SO_LINGER, (const void *)&lg, sizeof lg);
  sock_close(fd);
}

#endif
