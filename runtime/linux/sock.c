/* linux/sock.c - the socket calls of net/sock.h on Linux (BSD sockets).
 * errno becomes a HY_E* code here and nowhere else in the net layer. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hydra/error.h"
#include "net/sock.h"


static int fail(int *os) {
  int e = errno;
  if (os)
    *os = e;
  return hy_translate_errno(e);
}

intptr_t hy__sock_open(int family, int type, int *err, int *os) {
  int af = family == HY_AF_INET6 ? AF_INET6 : AF_INET;
  int ty = type == HY__SOCK_DGRAM ? SOCK_DGRAM : SOCK_STREAM;
  int fd = socket(af, ty | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = fail(os);
    return HY__BAD_SOCK;
  }
  *err = 0;
  return fd;
}

void hy__fd_close(intptr_t fd) { close((int)fd); }

void hy__fd_close_reset(intptr_t fd) {
  struct linger lg = {1, 0};
  setsockopt((int)fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close((int)fd);
}

int hy__sock_bind(intptr_t fd, const hy_addr_t *a, int *os) {
  if (bind((int)fd, (const struct sockaddr *)a->sa.raw, a->len) < 0)
    return fail(os);
  return 0;
}

int hy__sock_listen(intptr_t fd, int backlog, int *os) {
  if (listen((int)fd, backlog) < 0)
    return fail(os);
  return 0;
}

int hy__sock_connect_now(intptr_t fd, const hy_addr_t *a, int *os) {
  if (connect((int)fd, (const struct sockaddr *)a->sa.raw, a->len) < 0)
    return fail(os);
  return 0;
}

int hy__sock_local(intptr_t fd, hy_addr_t *out) {
  socklen_t len = sizeof out->sa.raw;
  memset(out, 0, sizeof *out);
  if (getsockname((int)fd, (struct sockaddr *)out->sa.raw, &len) < 0)
    return fail(NULL);
  out->len = len;
  return 0;
}

int hy__sock_peer(intptr_t fd, hy_addr_t *out) {
  socklen_t len = sizeof out->sa.raw;
  memset(out, 0, sizeof *out);
  if (getpeername((int)fd, (struct sockaddr *)out->sa.raw, &len) < 0)
    return fail(NULL);
  out->len = len;
  return 0;
}

int hy__sock_shutdown_write(intptr_t fd, int *os) {
  if (shutdown((int)fd, SHUT_WR) < 0)
    return fail(os);
  return 0;
}

static int opt_of(int opt, int *level, int *name) {
  switch (opt) {
  case HY__OPT_REUSEADDR: *level = SOL_SOCKET; *name = SO_REUSEADDR; return 0;
  case HY__OPT_REUSEPORT: *level = SOL_SOCKET; *name = SO_REUSEPORT; return 0;
  case HY__OPT_V6ONLY: *level = IPPROTO_IPV6; *name = IPV6_V6ONLY; return 0;
  case HY__OPT_NODELAY: *level = IPPROTO_TCP; *name = TCP_NODELAY; return 0;
  case HY__OPT_KEEPALIVE: *level = SOL_SOCKET; *name = SO_KEEPALIVE; return 0;
  case HY__OPT_KEEPIDLE: *level = IPPROTO_TCP; *name = TCP_KEEPIDLE; return 0;
  case HY__OPT_RCVBUF: *level = SOL_SOCKET; *name = SO_RCVBUF; return 0;
  case HY__OPT_SNDBUF: *level = SOL_SOCKET; *name = SO_SNDBUF; return 0;
  default: return HY_EINVAL;
  }
}

int hy__sock_set(intptr_t fd, int opt, int value, int *os) {
  int level, name;
  if (opt_of(opt, &level, &name) < 0)
    return HY_EINVAL;
  if (setsockopt((int)fd, level, name, &value, sizeof value) < 0)
    return fail(os);
  return 0;
}

int hy__sock_get(intptr_t fd, int opt, int *value) {
  int level, name;
  if (opt_of(opt, &level, &name) < 0)
    return HY_EINVAL;
  socklen_t len = sizeof *value;
  if (getsockopt((int)fd, level, name, value, &len) < 0)
    return fail(NULL);
  return 0;
}

/* Linux clones an accepted socket from its listener, Nagle's setting
 * with it. */
int hy__sock_inherited(int opt) { return opt == HY__OPT_NODELAY; }

int hy__sock_readable(intptr_t fd) {
  struct pollfd p = {(int)fd, POLLIN, 0};
  int n = poll(&p, 1, 0);
  return n > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR | POLLRDHUP)) != 0;
}

uint32_t hy__sock_flag_trunc(void) { return MSG_TRUNC; }
uint32_t hy__sock_flag_nosignal(void) { return MSG_NOSIGNAL; }

/* ------------------------------------------------------------ addresses */

/* The BSD socket library needs no start. */
int hy__sock_lib_hold(void) { return 0; }
void hy__sock_lib_release(void) {}

int hy__sock_scope_by_name(const char *name, uint32_t *index) {
  unsigned id = if_nametoindex(name);
  if (!id)
    return HY_EINVAL;
  *index = id;
  return 0;
}
