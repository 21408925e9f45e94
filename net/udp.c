/* udp.c - UDP sockets: bind, send-to, receive-from (truncation reported
 * as HY_EMSGSIZE through MSG_TRUNC), connected mode. */
#include <limits.h>
#include <string.h>

#include "net/internal.h"

struct hy_udp {
  hy__sock s; /* first */
};

hy__sock *hy__udp_sock(hy_udp_t *u) { return u ? &u->s : NULL; }

int hy_udp_bind(hy_runtime_t *rt, const hy_addr_t *addr, int reuseaddr,
                hy_udp_t **out) {
  if (!rt || !addr || !out)
    return HY_EINVAL;
  *out = NULL;
  int fam = hy__addr_family(addr);
  if (fam == HY_AF_UNSPEC)
    return HY_EINVAL;
  int rc, os = 0;
  intptr_t fd = hy__sock_open(fam, HY__SOCK_DGRAM, &rc, &os);
  if (fd == HY__BAD_SOCK)
    return rc;
  if ((reuseaddr && (rc = hy__sock_set(fd, HY__OPT_REUSEADDR, 1, &os)) < 0) ||
      (rc = hy__sock_bind(fd, addr, &os)) < 0) {
    hy__fd_close(fd);
    return rc;
  }
  hy_udp_t *u = hy__mem_calloc(1, sizeof *u);
  if (!u) {
    hy__fd_close(fd);
    return HY_ENOMEM;
  }
  hy__sock_init(&u->s, rt, fd, HY_NET_UDP);
  *out = u;
  return 0;
}

int hy_udp_local_addr(hy_udp_t *u, hy_addr_t *out) {
  if (!u || !out)
    return HY_EINVAL;
  int rc = hy__sock_ref(&u->s);
  if (rc < 0)
    return rc;
  rc = hy__sock_local(u->s.fd, out);
  hy__sock_unref(&u->s);
  return rc;
}

int hy_udp_connect(hy_udp_t *u, const hy_addr_t *to) {
  if (!u || !to)
    return HY_EINVAL;
  int rc = hy__sock_ref(&u->s);
  if (rc < 0)
    return rc;
  int os = 0;
  rc = hy__sock_connect_now(u->s.fd, to, &os);
  if (rc < 0)
    hy__sock_error(&u->s, "connect", rc, os, to);
  hy__sock_unref(&u->s);
  return rc;
}

int hy_udp_close(hy_udp_t *u) { return u ? hy__sock_close(&u->s, 0) : HY_EINVAL; }

static int xfer(hy_udp_t *u, int kind, void *buf, size_t len,
                hy_addr_t *addr, hy_time_t deadline) {
  if (!u || (!buf && len) || len > INT_MAX)
    return HY_EINVAL;
  int rc = hy__sock_ref(&u->s);
  if (rc < 0)
    return rc;
  hy__nop n;
  memset(&n, 0, sizeof n);
  hy_addr_t a;
  memset(&a, 0, sizeof a);
  n.op.kind = (uint8_t)kind;
  n.op.fd = u->s.fd;
  n.op.buf = buf;
  n.op.len = len;
  if (kind == HY__OP_RECVFROM || kind == HY__OP_RECV)
    n.op.flags = hy__sock_flag_trunc();
  if (kind == HY__OP_SENDTO) {
    a = *addr;
    n.op.addr = a.sa.raw;
    n.op.addrlen = a.len;
  } else if (kind == HY__OP_RECVFROM) {
    n.op.addr = a.sa.raw;
    n.op.addrlen = sizeof a.sa.raw;
  }
  rc = hy__sock_await(&u->s, &n, deadline);
  if (rc >= 0 && kind == HY__OP_RECVFROM && addr) {
    a.len = n.op.addrlen;
    *addr = a;
  }
  if (rc > (int)len && (kind == HY__OP_RECVFROM || kind == HY__OP_RECV))
    rc = HY_EMSGSIZE; /* MSG_TRUNC: the datagram was longer */
  if (rc < 0 && rc != HY_ETIMEDOUT && rc != HY_ECANCELED)
    hy__sock_error(&u->s,
                   kind == HY__OP_SENDTO || kind == HY__OP_SEND ? "send"
                                                                : "recv",
                   rc, 0, kind == HY__OP_SENDTO ? addr : NULL);
  hy__sock_unref(&u->s);
  return rc;
}

int hy_udp_send_to(hy_udp_t *u, const void *buf, size_t len,
                   const hy_addr_t *to) {
  return hy_udp_send_to_until(u, buf, len, to, HY_FOREVER);
}

int hy_udp_send_to_until(hy_udp_t *u, const void *buf, size_t len,
                         const hy_addr_t *to, hy_time_t deadline) {
  if (!to || hy__addr_family(to) == HY_AF_UNSPEC)
    return HY_EINVAL;
  return xfer(u, HY__OP_SENDTO, (void *)buf, len, (hy_addr_t *)to, deadline);
}

int hy_udp_recv_from(hy_udp_t *u, void *buf, size_t len, hy_addr_t *from) {
  return hy_udp_recv_from_until(u, buf, len, from, HY_FOREVER);
}

int hy_udp_recv_from_until(hy_udp_t *u, void *buf, size_t len,
                           hy_addr_t *from, hy_time_t deadline) {
  return xfer(u, HY__OP_RECVFROM, buf, len, from, deadline);
}

int hy_udp_send(hy_udp_t *u, const void *buf, size_t len) {
  return hy_udp_send_until(u, buf, len, HY_FOREVER);
}

int hy_udp_send_until(hy_udp_t *u, const void *buf, size_t len,
                      hy_time_t deadline) {
  return xfer(u, HY__OP_SEND, (void *)buf, len, NULL, deadline);
}

int hy_udp_recv(hy_udp_t *u, void *buf, size_t len) {
  return hy_udp_recv_until(u, buf, len, HY_FOREVER);
}

int hy_udp_recv_until(hy_udp_t *u, void *buf, size_t len,
                      hy_time_t deadline) {
  return xfer(u, HY__OP_RECV, buf, len, NULL, deadline);
}
