/* tcp.c - TCP in task style: listen, accept, connect, read, read-exactly,
 * write-all, half-close, close, options.  Every wait is one port operation
 * awaited by hy__sock_await, so deadlines, task cancellation and close all
 * end it the same way: the op is cancelled and its completion received
 * before the call returns. */
#include <limits.h>
#include <string.h>

#include "net/internal.h"

struct hy_listener {
  hy__sock s; /* first */
  hy_addr_t addr;
};

struct hy_conn {
  hy__sock s; /* first */
};

/* ---------------------------------------------------------------- listen */

static int open_bound(hy_runtime_t *rt, const hy_addr_t *addr, int type,
                      int reuseaddr, int reuseport, int v6only,
                      const char **what, int *os, intptr_t *out) {
  (void)rt;
  int fam = hy__addr_family(addr);
  if (fam == HY_AF_UNSPEC)
    return HY_EINVAL;
  int rc;
  *what = "socket";
  intptr_t fd = hy__sock_open(fam, type, &rc, os);
  if (fd == HY__BAD_SOCK)
    return rc;
  *what = "setsockopt";
  if (reuseaddr && (rc = hy__sock_set(fd, HY__OPT_REUSEADDR, 1, os)) < 0)
    goto fail;
  if (reuseport && (rc = hy__sock_set(fd, HY__OPT_REUSEPORT, 1, os)) < 0)
    goto fail;
  if (fam == HY_AF_INET6 &&
      (rc = hy__sock_set(fd, HY__OPT_V6ONLY, v6only ? 1 : 0, os)) < 0)
    goto fail;
  *what = "bind";
  if ((rc = hy__sock_bind(fd, addr, os)) < 0)
    goto fail;
  *out = fd;
  return 0;
fail:
  hy__fd_close(fd);
  return rc;
}

int hy_tcp_listen(hy_runtime_t *rt, const hy_addr_t *addr,
                  const hy_listen_opts_t *o, hy_listener_t **out) {
  if (!rt || !addr || !out)
    return HY_EINVAL;
  *out = NULL;
  hy_listen_opts_t opt = HY_LISTEN_OPTS_INIT;
  if (o) {
    if (o->size < sizeof opt)
      return HY_EINVAL;
    opt = *o;
  }
  int backlog = opt.backlog > 0 ? opt.backlog : 511;
  const char *what;
  int os = 0;
  intptr_t fd = HY__BAD_SOCK;
  int rc = open_bound(rt, addr, HY__SOCK_STREAM, opt.reuseaddr, opt.reuseport,
                      opt.v6only, &what, &os, &fd);
  if (rc < 0)
    return rc;
  if ((rc = hy__sock_listen(fd, backlog, &os)) < 0) {
    hy__fd_close(fd);
    return rc;
  }
  hy_listener_t *l = hy__mem_calloc(1, sizeof *l);
  if (!l) {
    hy__fd_close(fd);
    return HY_ENOMEM;
  }
  hy__sock_init(&l->s, rt, fd, HY_NET_LISTENER);
  hy__sock_local(fd, &l->addr);
  *out = l;
  return 0;
}

int hy_listener_addr(hy_listener_t *l, hy_addr_t *out) {
  if (!l || !out)
    return HY_EINVAL;
  *out = l->addr;
  return 0;
}

int hy_listener_close(hy_listener_t *l) {
  return l ? hy__sock_close(&l->s, 0) : HY_EINVAL;
}

static hy_conn_t *conn_new(hy_runtime_t *rt, intptr_t fd) {
  hy_conn_t *c = hy__mem_calloc(1, sizeof *c);
  if (!c)
    return NULL;
  hy__sock_init(&c->s, rt, fd, HY_NET_CONN);
  return c;
}

int hy_tcp_accept(hy_listener_t *l, hy_conn_t **out) {
  return hy_tcp_accept_until(l, HY_FOREVER, out);
}

int hy_tcp_accept_until(hy_listener_t *l, hy_time_t deadline,
                        hy_conn_t **out) {
  if (!l || !out)
    return HY_EINVAL;
  *out = NULL;
  int rc = hy__sock_ref(&l->s);
  if (rc < 0)
    return rc;
  /* The handle is made before the accept: a connection taken from the
   * kernel is never reset for want of memory to hold it. */
  hy_conn_t *c = conn_new(l->s.rt, HY__BAD_SOCK);
  if (!c) {
    hy__sock_error(&l->s, "accept", HY_ENOMEM, 0, &l->addr);
    hy__sock_unref(&l->s);
    return HY_ENOMEM;
  }
  hy__nop n;
  memset(&n, 0, sizeof n);
  hy_addr_t peer;
  memset(&peer, 0, sizeof peer);
  n.op.kind = HY__OP_ACCEPT;
  n.op.fd = l->s.fd;
  n.op.addr = peer.sa.raw;
  n.op.addrlen = sizeof peer.sa.raw;
  rc = hy__sock_await(&l->s, &n, deadline);
  if (rc >= 0) {
    c->s.fd = rc;
    *out = c;
    rc = 0;
  } else {
    hy__mem_free(c);
    if (rc != HY_ETIMEDOUT && rc != HY_ECANCELED)
      hy__sock_error(&l->s, "accept", rc, 0, &l->addr);
  }
  hy__sock_unref(&l->s);
  return rc;
}

/* --------------------------------------------------------------- connect */

int hy_tcp_connect(hy_runtime_t *rt, const hy_addr_t *addr, hy_conn_t **out) {
  return hy_tcp_connect_until(rt, addr, HY_FOREVER, out);
}

int hy_tcp_connect_until(hy_runtime_t *rt, const hy_addr_t *addr,
                         hy_time_t deadline, hy_conn_t **out) {
  if (!rt || !addr || !out)
    return HY_EINVAL;
  *out = NULL;
  int fam = hy__addr_family(addr);
  if (fam == HY_AF_UNSPEC)
    return HY_EINVAL;
  if (!hy__in_task(rt))
    return HY_EINVAL;
  int rc, os = 0;
  intptr_t fd = hy__sock_open(fam, HY__SOCK_STREAM, &rc, &os);
  if (fd == HY__BAD_SOCK)
    return rc;
  hy_conn_t *c = conn_new(rt, fd);
  if (!c) {
    hy__fd_close(fd);
    return HY_ENOMEM;
  }
  hy_addr_t target = *addr;
  hy__nop n;
  memset(&n, 0, sizeof n);
  n.op.kind = HY__OP_CONNECT;
  n.op.fd = fd;
  n.op.addr = target.sa.raw;
  n.op.addrlen = target.len;
  c->s.refs++; /* the call's reference */
  rc = hy__sock_await(&c->s, &n, deadline);
  if (rc < 0) {
    hy__sock_error(&c->s, "connect", rc, 0, addr);
    hy__sock_unref(&c->s);
    hy__sock_close(&c->s, 0);
    return rc;
  }
  hy__sock_unref(&c->s);
  *out = c;
  return 0;
}

/* ------------------------------------------------------------ read/write */

static int begin(hy__sock *s, int *flag) {
  hy__lock(&s->lock);
  if (s->closed) {
    hy__unlock(&s->lock);
    return HY_ECLOSED;
  }
  if (*flag) {
    hy__unlock(&s->lock);
    return HY_EBUSY;
  }
  *flag = 1;
  s->refs++;
  hy__unlock(&s->lock);
  return 0;
}

static void end(hy__sock *s, int *flag) {
  hy__lock(&s->lock);
  *flag = 0;
  hy__unlock(&s->lock);
  hy__sock_unref(s);
}

static int recv_once(hy__sock *s, void *buf, size_t len, int64_t deadline) {
  hy__nop n;
  memset(&n, 0, sizeof n);
  n.op.kind = HY__OP_RECV;
  n.op.fd = s->fd;
  /* Every port that starts an op on the fd has it associated, and each
   * forgets it before the fd closes (core.c, last_ref). */
  n.op.flags = HY__RECV_OWNED;
  n.op.buf = buf;
  n.op.len = len > INT_MAX ? INT_MAX : len;
  return hy__sock_await(s, &n, deadline);
}

static int send_once(hy__sock *s, const void *buf, size_t len,
                     int64_t deadline) {
  hy__nop n;
  memset(&n, 0, sizeof n);
  n.op.kind = HY__OP_SEND;
  n.op.fd = s->fd;
  n.op.buf = (void *)buf;
  n.op.len = len > INT_MAX ? INT_MAX : len;
  n.op.flags = hy__sock_flag_nosignal();
  return hy__sock_await(s, &n, deadline);
}

static void note(hy__sock *s, const char *op, int rc) {
  if (rc < 0 && rc != HY_ETIMEDOUT && rc != HY_ECANCELED)
    hy__sock_error(s, op, rc, 0, NULL);
}

int hy_conn_read(hy_conn_t *c, void *buf, size_t len) {
  return hy_conn_read_until(c, buf, len, HY_FOREVER);
}

int hy_conn_read_until(hy_conn_t *c, void *buf, size_t len,
                       hy_time_t deadline) {
  if (!c || (!buf && len))
    return HY_EINVAL;
  int rc = begin(&c->s, &c->s.reading);
  if (rc < 0)
    return rc;
  rc = recv_once(&c->s, buf, len, deadline);
  note(&c->s, "read", rc);
  end(&c->s, &c->s.reading);
  return rc;
}

int hy_conn_read_exactly(hy_conn_t *c, void *buf, size_t len, size_t *got) {
  return hy_conn_read_exactly_until(c, buf, len, got, HY_FOREVER);
}

int hy_conn_read_exactly_until(hy_conn_t *c, void *buf, size_t len,
                               size_t *got, hy_time_t deadline) {
  if (got)
    *got = 0;
  if (!c || (!buf && len) || len > INT_MAX)
    return HY_EINVAL;
  int rc = begin(&c->s, &c->s.reading);
  if (rc < 0)
    return rc;
  size_t have = 0;
  while (have < len) {
    rc = recv_once(&c->s, (char *)buf + have, len - have, deadline);
    if (rc <= 0)
      break;
    have += (size_t)rc;
  }
  if (got)
    *got = have;
  if (have == len)
    rc = (int)len;
  else if (rc == 0)
    rc = HY_EOF;
  note(&c->s, "read", rc);
  end(&c->s, &c->s.reading);
  return rc;
}

int hy_conn_write_all(hy_conn_t *c, const void *buf, size_t len,
                      size_t *sent) {
  return hy_conn_write_all_until(c, buf, len, sent, HY_FOREVER);
}

int hy_conn_write_all_until(hy_conn_t *c, const void *buf, size_t len,
                            size_t *sent, hy_time_t deadline) {
  if (sent)
    *sent = 0;
  if (!c || (!buf && len) || len > INT_MAX)
    return HY_EINVAL;
  int rc = begin(&c->s, &c->s.writing);
  if (rc < 0)
    return rc;
  size_t done = 0;
  rc = 0;
  while (done < len) {
    rc = send_once(&c->s, (const char *)buf + done, len - done, deadline);
    if (rc < 0)
      break;
    if (rc == 0) { /* a stream send that takes nothing: the peer is gone */
      rc = HY_EPIPE;
      break;
    }
    done += (size_t)rc;
  }
  if (sent)
    *sent = done;
  if (done == len)
    rc = (int)len;
  note(&c->s, "write", rc);
  end(&c->s, &c->s.writing);
  return rc;
}

int hy_conn_shutdown_write(hy_conn_t *c) {
  if (!c)
    return HY_EINVAL;
  int rc = hy__sock_ref(&c->s);
  if (rc < 0)
    return rc;
  int os = 0;
  rc = hy__sock_shutdown_write(c->s.fd, &os);
  if (rc < 0)
    hy__sock_error(&c->s, "shutdown", rc, os, NULL);
  hy__sock_unref(&c->s);
  return rc;
}

int hy_conn_close(hy_conn_t *c) { return c ? hy__sock_close(&c->s, 0) : HY_EINVAL; }
int hy_conn_abort(hy_conn_t *c) { return c ? hy__sock_close(&c->s, 1) : HY_EINVAL; }

static int with_fd(hy_conn_t *c, int (*fn)(intptr_t, hy_addr_t *),
                   hy_addr_t *out) {
  if (!c || !out)
    return HY_EINVAL;
  int rc = hy__sock_ref(&c->s);
  if (rc < 0)
    return rc;
  rc = fn(c->s.fd, out);
  hy__sock_unref(&c->s);
  return rc;
}

int hy_conn_peer_addr(hy_conn_t *c, hy_addr_t *out) {
  return with_fd(c, hy__sock_peer, out);
}

int hy_conn_local_addr(hy_conn_t *c, hy_addr_t *out) {
  return with_fd(c, hy__sock_local, out);
}

static int set_opt(hy_conn_t *c, int opt, int v, const char *what) {
  if (!c)
    return HY_EINVAL;
  int rc = hy__sock_ref(&c->s);
  if (rc < 0)
    return rc;
  int os = 0;
  rc = hy__sock_set(c->s.fd, opt, v, &os);
  if (rc < 0)
    hy__sock_error(&c->s, what, rc, os, NULL);
  hy__sock_unref(&c->s);
  return rc;
}

int hy_conn_set_nodelay(hy_conn_t *c, int on) {
  return set_opt(c, HY__OPT_NODELAY, on != 0, "setsockopt nodelay");
}

int hy_conn_set_keepalive(hy_conn_t *c, int on, int idle_s) {
  int rc = set_opt(c, HY__OPT_KEEPALIVE, on != 0, "setsockopt keepalive");
  if (rc == 0 && on && idle_s > 0)
    rc = set_opt(c, HY__OPT_KEEPIDLE, idle_s, "setsockopt keepidle");
  return rc;
}

int hy_conn_set_buffers(hy_conn_t *c, int rcvbuf, int sndbuf) {
  if (rcvbuf < 0 || sndbuf < 0)
    return HY_EINVAL;
  int rc = 0;
  if (rcvbuf)
    rc = set_opt(c, HY__OPT_RCVBUF, rcvbuf, "setsockopt rcvbuf");
  if (rc == 0 && sndbuf)
    rc = set_opt(c, HY__OPT_SNDBUF, sndbuf, "setsockopt sndbuf");
  return rc;
}

int hy_conn_get_buffers(hy_conn_t *c, int *rcvbuf, int *sndbuf) {
  if (!c)
    return HY_EINVAL;
  int rc = hy__sock_ref(&c->s);
  if (rc < 0)
    return rc;
  if (rcvbuf && rc == 0)
    rc = hy__sock_get(c->s.fd, HY__OPT_RCVBUF, rcvbuf);
  if (sndbuf && rc == 0)
    rc = hy__sock_get(c->s.fd, HY__OPT_SNDBUF, sndbuf);
  hy__sock_unref(&c->s);
  return rc;
}

hy__sock *hy__conn_sock(hy_conn_t *c) { return c ? &c->s : NULL; }
hy__sock *hy__listener_sock(hy_listener_t *l) { return l ? &l->s : NULL; }
