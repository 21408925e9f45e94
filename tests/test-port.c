/* test-port.c - the completion port (runtime/port.h) on each backend: every
 * op kind on loopback sockets, EOF and resets, cancels and their races,
 * posts and wakes from many threads and a signal handler, the os_handle,
 * timeouts, many ops at once, error paths, the io_uring fallback, and
 * runtime/io.c on top. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#ifndef _WIN32
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

#include "sock_compat.h"
#include "compat.h"
#include "alloc/mem.h"
#include "hydra.h"
#include "runtime/internal.h"
#include "runtime/port.h"
#ifndef _WIN32
#include "runtime/linux/port_linux.h"
#endif
#include "rt_util.h"
#include "test.h"

#define LIMIT HY_SEC(10) /* generous bound on anything that must happen */

#ifdef _WIN32
/* What the POSIX side of these tests uses, on Windows. */
typedef HANDLE sem_t;
static int sem_init(sem_t *s, int shared, unsigned v) {
  (void)shared;
  *s = CreateSemaphoreW(NULL, (LONG)v, 0x7fffffff, NULL);
  return *s ? 0 : -1;
}
static int sem_wait(sem_t *s) {
  return WaitForSingleObject(*s, INFINITE) == WAIT_OBJECT_0 ? 0 : -1;
}
static int sem_post(sem_t *s) { return ReleaseSemaphore(*s, 1, NULL) ? 0 : -1; }
#define sched_yield() SwitchToThread()
#define accept4(l, a, al, fl) ((int)accept((SOCKET)(l), (a), (al)))
#define SHUT_WR SD_SEND
typedef unsigned useconds_t;
#endif

#define OPEN_PORT(p)                                                          \
  do {                                                                        \
    int rc_ = hy__port_open(&(p), test_port_backend(), NULL);                 \
    if (rc_ == HY_ENOSYS)                                                     \
      RETURN_SKIP("backend not available here");                             \
    ASSERT_OK(rc_);                                                           \
    if (test_backend())                                                       \
      ASSERT(strcmp(hy__port_backend_name(p), test_backend()) == 0);          \
  } while (0)

static void op_init(hy__op *op, int kind, intptr_t fd) {
  memset(op, 0, sizeof *op);
  op->kind = (uint8_t)kind;
  op->fd = fd;
}

/* The next completion, within LIMIT. */
static hy__op *wait_one(hy__port *p) {
  int64_t until = hy_now() + LIMIT;
  hy__op *op = NULL;
  while (hy_now() < until) {
    int n = hy__port_wait(p, &op, 1, HY_MS(100));
    ASSERT(n >= 0);
    if (n == 1)
      return op;
  }
  TEST_FAIL_("%s", "no completion within the limit");
  return NULL;
}

/* Waits for exactly the ops in want[] (any order), each once. */
static void wait_set(hy__port *p, hy__op **want, int n) {
  int left = n;
  while (left > 0) {
    hy__op *op = wait_one(p);
    int found = 0;
    for (int i = 0; i < n; i++)
      if (want[i] == op) {
        want[i] = NULL;
        found = 1;
      }
    ASSERT(found);
    left--;
  }
}

/* No completion comes within ns. */
static void expect_none(hy__port *p, int64_t ns) {
  hy__op *ops[4];
  int64_t until = hy_now() + ns;
  int64_t left;
  while ((left = until - hy_now()) > 0)
    ASSERT_EQ(hy__port_wait(p, ops, 4, left), 0);
}

static int listener4(struct sockaddr_in *a) {
  int l = sock_listen_loopback(a, 1024);
  ASSERT(l >= 0);
  return l;
}

/* A connected loopback TCP pair through listener l. */
static void tcp_pair_on(int l, const struct sockaddr_in *a, int *c, int *s) {
  *c = sock_open(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
  ASSERT(*c >= 0);
  ASSERT_EQ(connect(*c, (const struct sockaddr *)a, sizeof *a), 0);
  *s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  ASSERT(*s >= 0);
}

static void tcp_pair(int *c, int *s) {
  struct sockaddr_in a;
  int l = listener4(&a);
  tcp_pair_on(l, &a, c, s);
  sock_close(l);
}

static void reset_close(int fd) { sock_close_reset(fd); }

#ifdef _WIN32
/* Reads n bytes with plain blocking receives (bounded by LIMIT). */
static void read_exact(int fd, void *buf, size_t n) {
  size_t got = 0;
  sock_rcvtimeo(fd, (int)(LIMIT / HY_MS(1)));
  while (got < n) {
    int r = recv((SOCKET)fd, (char *)buf + got, (int)(n - got), 0);
    ASSERT(r > 0);
    got += (size_t)r;
  }
}
#else
/* Reads n bytes from a non-blocking fd, polling (for tests only). */
static void read_exact(int fd, void *buf, size_t n) {
  size_t got = 0;
  int64_t until = hy_now() + LIMIT;
  while (got < n) {
    ssize_t r = recv(fd, (char *)buf + got, n - got, MSG_DONTWAIT);
    if (r > 0) {
      got += (size_t)r;
      continue;
    }
    ASSERT(r < 0 && (errno == EAGAIN || errno == EINTR));
    ASSERT(hy_now() < until);
    struct pollfd pf = {fd, POLLIN, 0};
    poll(&pf, 1, 100);
  }
}
#endif

/* ------------------------------------------------------ nop, post, args */

TEST_IMPL(port_nop_post_and_args) {
  hy__port *p;
  OPEN_PORT(p);
  hy__op *ops[8];
  ASSERT_EQ(hy__port_wait(p, ops, 8, 0), 0);

  hy__op nop;
  op_init(&nop, HY__OP_NOP, -1);
  ASSERT_OK(hy__port_start(p, &nop));
  ASSERT(wait_one(p) == &nop);
  ASSERT_EQ(nop.res, 0);
  ASSERT_ERR(hy__port_cancel(p, &nop), HY_ENOENT);

  /* Cancelled before its completion was dequeued: it had completed. */
  op_init(&nop, HY__OP_NOP, -1);
  ASSERT_OK(hy__port_start(p, &nop));
  ASSERT_OK(hy__port_cancel(p, &nop));
  ASSERT(wait_one(p) == &nop);
  ASSERT_EQ(nop.res, 0);

  hy__op post;
  op_init(&post, HY__OP_POST, -1);
  post.res = 1234;
  ASSERT_OK(hy__port_post(p, &post));
  ASSERT(wait_one(p) == &post);
  ASSERT_EQ(post.res, 1234);
  ASSERT_EQ(post.kind, HY__OP_POST);
  expect_none(p, HY_MS(20));

  /* Ops that cannot start return an error and never complete. */
  hy__op bad;
  op_init(&bad, HY__OP_POST, -1);
  ASSERT_ERR(hy__port_start(p, &bad), HY_EINVAL);
  op_init(&bad, 200, -1);
  ASSERT_ERR(hy__port_start(p, &bad), HY_EINVAL);
  op_init(&bad, HY__OP_RECV, -1);
  ASSERT_ERR(hy__port_start(p, &bad), HY_EBADF);
  op_init(&bad, HY__OP_CONNECT, 0);
  ASSERT_ERR(hy__port_start(p, &bad), HY_EINVAL);
  op_init(&bad, HY__OP_SENDTO, 0);
  ASSERT_ERR(hy__port_start(p, &bad), HY_EINVAL);
  ASSERT_ERR(hy__port_start(p, NULL), HY_EINVAL);
  ASSERT_ERR(hy__port_cancel(p, &bad), HY_ENOENT);
  ASSERT_ERR(hy__port_wait(p, ops, 0, 0), HY_EINVAL);
  ASSERT_ERR(hy__port_associate(p, -1), HY_EBADF);
  expect_none(p, HY_MS(20));

  /* A closed fd: the op completes with HY_EBADF. */
#ifdef _WIN32
  int dead = sock_open(AF_INET, SOCK_STREAM);
  ASSERT(dead >= 0);
  sock_close(dead);
#else
  int dead = dup(0);
  ASSERT(dead >= 0);
  close(dead);
#endif
  char b[4];
  op_init(&bad, HY__OP_RECV, dead);
  bad.buf = b;
  bad.len = sizeof b;
  int rc = hy__port_start(p, &bad);
  if (rc == 0) {
    ASSERT(wait_one(p) == &bad);
    ASSERT_EQ(bad.res, HY_EBADF);
  } else {
    ASSERT_ERR(rc, HY_EBADF);
  }
  hy__port_close(p);
  return 0;
}

/* ------------------------------------------------------------ TCP ops */

TEST_IMPL(port_tcp_ops) {
  hy__port *p;
  OPEN_PORT(p);
  struct sockaddr_in la, peer;
  int l = listener4(&la);
  ASSERT_OK(hy__port_associate(p, l));
  int c = sock_open(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
  ASSERT(c >= 0);
  ASSERT_OK(hy__port_associate(p, c));

  hy__op acc, con;
  op_init(&acc, HY__OP_ACCEPT, l);
  acc.addr = &peer;
  acc.addrlen = sizeof peer;
  op_init(&con, HY__OP_CONNECT, c);
  con.addr = &la;
  con.addrlen = sizeof la;
  ASSERT_OK(hy__port_start(p, &acc));
  ASSERT_OK(hy__port_start(p, &con));
  hy__op *want[2] = {&acc, &con};
  wait_set(p, want, 2);
  ASSERT_EQ(con.res, 0);
  ASSERT(acc.res >= 0);
  int s = (int)acc.res;
  ASSERT_EQ(acc.addrlen, sizeof peer);
  struct sockaddr_in mine;
  socklen_t ml = sizeof mine;
  ASSERT_EQ(getsockname(c, (struct sockaddr *)&mine, &ml), 0);
  ASSERT_EQ(peer.sin_port, mine.sin_port);
  ASSERT_EQ(peer.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
#ifndef _WIN32
  /* The accepted socket is non-blocking already. */
  ASSERT(fcntl(s, F_GETFL) & O_NONBLOCK);
#endif
  ASSERT_OK(hy__port_associate(p, s));

  /* A recv waits for data; a send brings it. */
  char rb[64];
  hy__op rcv, snd;
  op_init(&rcv, HY__OP_RECV, s);
  rcv.buf = rb;
  rcv.len = sizeof rb;
  ASSERT_OK(hy__port_start(p, &rcv));
  expect_none(p, HY_MS(30));
  op_init(&snd, HY__OP_SEND, c);
  snd.buf = "hello";
  snd.len = 5;
  ASSERT_OK(hy__port_start(p, &snd));
  hy__op *want2[2] = {&rcv, &snd};
  wait_set(p, want2, 2);
  ASSERT_EQ(snd.res, 5);
  ASSERT_EQ(rcv.res, 5);
  ASSERT(memcmp(rb, "hello", 5) == 0);

  /* 4 MiB each way... one way: partial sends, a full socket buffer, a
   * send waiting for room while the reader catches up. */
  size_t total = 4u << 20;
  unsigned char *src = malloc(total), *dst = malloc(total);
  ASSERT(src && dst);
  for (size_t i = 0; i < total; i++)
    src[i] = (unsigned char)(i * 7 + (i >> 13));
  size_t sent = 0, recvd = 0;
  int sending = 0, receiving = 0;
  int64_t until = hy_now() + LIMIT;
  /* (An overlapped send on IOCP completes only once all of it is taken,
   * after the reader got most of it: the loop also waits for that.) */
  while (recvd < total || sending) {
    ASSERT(hy_now() < until);
    if (!sending && sent < total) {
      op_init(&snd, HY__OP_SEND, c);
      snd.buf = src + sent;
      snd.len = total - sent;
      ASSERT_OK(hy__port_start(p, &snd));
      sending = 1;
    }
    if (!receiving && recvd < total) {
      op_init(&rcv, HY__OP_RECV, s);
      rcv.buf = dst + recvd;
      rcv.len = (size_t)(1 + test_rand() % 100000);
      if (rcv.len > total - recvd)
        rcv.len = total - recvd;
      ASSERT_OK(hy__port_start(p, &rcv));
      receiving = 1;
    }
    hy__op *op = wait_one(p);
    if (op == &snd) {
      ASSERT_GT(snd.res, 0);
      sent += (size_t)snd.res;
      sending = 0;
    } else {
      ASSERT(op == &rcv);
      ASSERT_GT(rcv.res, 0);
      recvd += (size_t)rcv.res;
      receiving = 0;
    }
  }
  ASSERT_EQ(sent, total);
  ASSERT(memcmp(src, dst, total) == 0);
  free(src);
  free(dst);

  /* POLL: writable at once; readable only when data comes. */
  hy__op pl;
  op_init(&pl, HY__OP_POLL, c);
  pl.flags = HY__POLL_OUT;
  ASSERT_OK(hy__port_start(p, &pl));
  ASSERT(wait_one(p) == &pl);
  ASSERT(pl.res & HY__POLL_OUT);
  op_init(&pl, HY__OP_POLL, s);
  pl.flags = HY__POLL_IN;
  ASSERT_OK(hy__port_start(p, &pl));
  expect_none(p, HY_MS(20));
  ASSERT_EQ(send(c, "x", 1, 0), 1);
  ASSERT(wait_one(p) == &pl);
  ASSERT(pl.res & HY__POLL_IN);
  ASSERT(!(pl.res & HY__POLL_OUT)); /* only what was asked for, and errors */
  char x;
  read_exact(s, &x, 1);
  ASSERT_EQ(x, 'x');

  /* EOF: recv completes with 0, and again with 0. */
  op_init(&rcv, HY__OP_RECV, s);
  rcv.buf = rb;
  rcv.len = sizeof rb;
  ASSERT_OK(hy__port_start(p, &rcv));
  ASSERT_EQ(shutdown(c, SHUT_WR), 0);
  ASSERT(wait_one(p) == &rcv);
  ASSERT_EQ(rcv.res, 0);
  ASSERT_OK(hy__port_start(p, &rcv));
  ASSERT(wait_one(p) == &rcv);
  ASSERT_EQ(rcv.res, 0);

  hy__port_forget(p, s);
  hy__port_forget(p, c);
  hy__port_forget(p, l);
  sock_close(s);
  sock_close(c);
  sock_close(l);
  expect_none(p, HY_MS(10));
  hy__port_close(p);
  return 0;
}

/* An fd closed without hy__port_forget, its number reused by a new socket
 * that is used on the port without hy__port_associate (the ports of a
 * runtime's workers learn of sockets on first use): the new socket works. */
TEST_IMPL(port_fd_reuse_without_forget) {
#ifdef _WIN32
  RETURN_SKIP("IOCP: a socket completes on a port only once associated "
              "with it (port.h: associate before starting ops); only the "
              "Linux backends learn of a socket on first use");
#else
  hy__port *p;
  OPEN_PORT(p);
  for (int round = 0; round < 3; round++) {
    int c, s;
    tcp_pair(&c, &s);
    ASSERT_EQ(fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK), 0);
    char b;
    hy__op rcv;
    op_init(&rcv, HY__OP_RECV, s);
    rcv.buf = &b;
    rcv.len = 1;
    ASSERT_OK(hy__port_start(p, &rcv));
    expect_none(p, HY_MS(5));
    ASSERT_EQ(send(c, "r", 1, 0), 1);
    ASSERT(wait_one(p) == &rcv);
    ASSERT_EQ(rcv.res, 1);
    /* The next round's pair gets the same numbers. */
    close(c);
    close(s);
  }
  hy__port_close(p);
  return 0;
#endif
}

#ifndef _WIN32
/* On epoll, two recvs on one socket complete in the order they started. */
TEST_IMPL(port_epoll_fifo) {
  hy__port *p;
  ASSERT_OK(hy__port_open(&p, HY__BACKEND_EPOLL, NULL));
  int c, s;
  tcp_pair(&c, &s);
  ASSERT_OK(hy__port_associate(p, s));
  char b[8][1];
  hy__op r[8];
  for (int i = 0; i < 8; i++) {
    op_init(&r[i], HY__OP_RECV, s);
    r[i].buf = b[i];
    r[i].len = 1;
    ASSERT_OK(hy__port_start(p, &r[i]));
  }
  ASSERT_EQ(send(c, "abcdefgh", 8, 0), 8);
  for (int i = 0; i < 8; i++) {
    hy__op *op = wait_one(p);
    ASSERT(op == &r[i]);
    ASSERT_EQ(op->res, 1);
    ASSERT_EQ(b[i][0], 'a' + i);
  }
  close(c);
  close(s);
  hy__port_close(p);
  return 0;
}

/* Epoll: an op done inside its start (a send with room in the socket, a
 * recv with data there) goes from idle to done at once: hy__port_done_early
 * says so, its res is final and its buffer free (the bytes are in the
 * kernel), a cancel asked for before it is dequeued leaves the result, and
 * it is dequeued once.  An op that waits is not done early, and a cancel
 * finds it in flight. */
TEST_IMPL(port_epoll_done_early) {
  hy__port *p;
  ASSERT_OK(hy__port_open(&p, HY__BACKEND_EPOLL, NULL));
  int c, s;
  tcp_pair(&c, &s);
  ASSERT_OK(hy__port_associate(p, s));
  for (int i = 0; i < 50; i++) {
    char out[64], in[64], rb[64];
    memset(out, 'a' + i % 26, sizeof out);
    hy__op snd;
    op_init(&snd, HY__OP_SEND, s);
    snd.buf = out;
    snd.len = sizeof out;
    ASSERT_OK(hy__port_start(p, &snd));
    ASSERT(hy__port_done_early(p, &snd));
    ASSERT_EQ(snd.res, (int64_t)sizeof out);
    memset(out, 0, sizeof out); /* the port is done with it */
    if (i % 2)
      ASSERT_OK(hy__port_cancel(p, &snd));
    ASSERT(wait_one(p) == &snd);
    ASSERT_EQ(snd.res, (int64_t)sizeof out);
    ASSERT_ERR(hy__port_cancel(p, &snd), HY_ENOENT);
    ASSERT_EQ(recv(c, in, sizeof in, MSG_WAITALL), (ssize_t)sizeof in);
    ASSERT_EQ(in[0], 'a' + i % 26);
    ASSERT_EQ(in[63], 'a' + i % 26);
    /* A recv that waits: not done early; cancelled, it ends cancelled. */
    hy__op rcv;
    op_init(&rcv, HY__OP_RECV, s);
    rcv.buf = rb;
    rcv.len = sizeof rb;
    ASSERT_OK(hy__port_start(p, &rcv));
    ASSERT(!hy__port_done_early(p, &rcv));
    ASSERT_OK(hy__port_cancel(p, &rcv));
    ASSERT(wait_one(p) == &rcv);
    ASSERT_EQ(rcv.res, HY_ECANCELED);
    /* With data there, a recv is done in its start. */
    ASSERT_EQ(send(c, "xy", 2, 0), 2);
    struct pollfd pf = {s, POLLIN, 0};
    ASSERT_EQ(poll(&pf, 1, 5000), 1);
    op_init(&rcv, HY__OP_RECV, s);
    rcv.buf = rb;
    rcv.len = sizeof rb;
    ASSERT_OK(hy__port_start(p, &rcv));
    ASSERT(hy__port_done_early(p, &rcv));
    ASSERT_EQ(rcv.res, 2);
    ASSERT(wait_one(p) == &rcv);
    ASSERT_EQ(rcv.res, 2);
    ASSERT_EQ(memcmp(rb, "xy", 2), 0);
  }
  expect_none(p, HY_MS(20));
  close(c);
  close(s);
  hy__port_close(p);
  return 0;
}

/* Epoll: a wait that need not block (timeout 0, or completions already
 * waiting to be handed out) does not ask the kernel again when it was
 * asked a moment ago (port_epoll.c, fresh_look).  That skip never loses a
 * completion, never starves the kernel's behind the port's own, and is
 * off once the os_handle is out (a foreign loop told "readable" must find
 * what made it so). */
static void fresh_recv(hy__port *p, hy__op *rcv, int s, char *b) {
  op_init(rcv, HY__OP_RECV, s);
  rcv->buf = b;
  rcv->len = 8;
  ASSERT_OK(hy__port_start(p, rcv));
}

TEST_IMPL(port_epoll_fresh_look) {
  hy__port *p;
  ASSERT_OK(hy__port_open(&p, HY__BACKEND_EPOLL, NULL));
  int c, s;
  tcp_pair(&c, &s);
  ASSERT_OK(hy__port_associate(p, s));
  hy__op *ops[4], rcv, nop;
  char b[8];
  /* Data sent at a random moment after a look comes, to a blocking wait
   * and to a loop of waits that do not block. */
  for (int r = 0; r < 400; r++) {
    fresh_recv(p, &rcv, s, b);
    ASSERT_EQ(hy__port_wait(p, ops, 4, 0), 0);
    int64_t until = hy_now() + (int64_t)(test_rand() % HY_US(40));
    while (hy_now() < until) {
    }
    ASSERT_EQ(send(c, "y", 1, MSG_NOSIGNAL), 1);
    if (r % 2) {
      until = hy_now() + LIMIT;
      int n;
      while ((n = hy__port_wait(p, ops, 4, 0)) == 0)
        ASSERT(hy_now() < until);
      ASSERT_EQ(n, 1);
      ASSERT(ops[0] == &rcv);
    } else {
      ASSERT(wait_one(p) == &rcv);
    }
    ASSERT_EQ(rcv.res, 1);
    ASSERT_EQ(b[0], 'y');
  }
  /* Completions the port makes itself, one per wait, without end: the
   * kernel's still come, and each wait hands out what it had at once. */
  for (int r = 0; r < 50; r++) {
    fresh_recv(p, &rcv, s, b);
    ASSERT_EQ(send(c, "z", 1, MSG_NOSIGNAL), 1);
    int64_t until = hy_now() + LIMIT;
    for (int got = 0; !got;) {
      ASSERT(hy_now() < until);
      op_init(&nop, HY__OP_NOP, -1);
      ASSERT_OK(hy__port_start(p, &nop));
      int n = hy__port_wait(p, ops, 4, 0);
      int had_nop = 0;
      for (int i = 0; i < n; i++) {
        if (ops[i] == &rcv)
          got = 1;
        else if (ops[i] == &nop)
          had_nop = 1;
        else
          ASSERT(0);
      }
      ASSERT(had_nop);
    }
    ASSERT_EQ(rcv.res, 1);
    ASSERT_EQ(b[0], 'z');
  }
  /* With the os_handle out, a wait right after "readable" finds what made
   * it so (a stale wake may make one round's handle readable early, once). */
  int h = (int)hy__port_os_handle(p);
  for (int r = 0; r < 200; r++) {
    fresh_recv(p, &rcv, s, b);
    ASSERT(hy__port_wait(p, ops, 4, 0) >= 0);
    ASSERT_EQ(send(c, "w", 1, MSG_NOSIGNAL), 1);
    int empty = 0;
    for (;;) {
      struct pollfd pf = {h, POLLIN, 0};
      ASSERT_EQ(poll(&pf, 1, (int)(LIMIT / HY_MS(1))), 1);
      int n = hy__port_wait(p, ops, 4, 0);
      ASSERT(n >= 0);
      if (n == 1 && ops[0] == &rcv)
        break;
      ASSERT_EQ(n, 0);
      ASSERT(++empty <= 2);
    }
    ASSERT_EQ(rcv.res, 1);
    ASSERT_EQ(b[0], 'w');
  }
  hy__port_forget(p, s);
  close(c);
  close(s);
  hy__port_close(p);
  return 0;
}

/* Pooled receives (buf NULL, a hy__bufsrc) of a stream whose pieces are
 * often exactly the buffer's size, a few times it, one byte more or less,
 * sent at random moments: every byte comes once and in order, then the
 * end.  On epoll this drives the read that asks for one byte more than
 * the buffer holds after full reads, across reads that find the socket
 * empty (HY_EAGAIN) and edges whose data an earlier read took - once
 * with buffers of just the size, once with slack past it (where that
 * byte more is read into the buffer itself); and on epoll with late reads
 * too (HY__RECV_LATE: completed as HY__RES_READY, read by
 * hy__port_recv_now). */
#define PS_BUF 64
#define PS_TOTAL 300000

typedef struct {
  int c;
  uint64_t seed;
} ps_peer_t;

static unsigned char ps_byte(size_t i) {
  return (unsigned char)(i * 7 + (i >> 8));
}

static void *ps_peer(void *arg) {
  ps_peer_t *a = arg;
  static const size_t sizes[] = {PS_BUF, PS_BUF, 2 * PS_BUF, PS_BUF - 1,
                                 PS_BUF + 1, 1, 3 * PS_BUF};
  unsigned char buf[4 * PS_BUF];
  size_t sent = 0;
  while (sent < PS_TOTAL) {
    a->seed = a->seed * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t r = a->seed >> 33;
    size_t n = r % 4 ? sizes[r % 7] : 1 + (size_t)(r >> 8) % (3 * PS_BUF);
    if (n > PS_TOTAL - sent)
      n = PS_TOTAL - sent;
    for (size_t i = 0; i < n; i++)
      buf[i] = ps_byte(sent + i);
    for (size_t off = 0; off < n;) {
      ssize_t k = send(a->c, buf + off, n - off, MSG_NOSIGNAL);
      ASSERT(k > 0);
      off += (size_t)k;
    }
    sent += n;
    if (r % 8 == 0) {
      int64_t until = hy_now() + (int64_t)((r >> 12) % HY_US(50));
      while (hy_now() < until) {
      }
    }
  }
  ASSERT_EQ(shutdown(a->c, SHUT_WR), 0);
  return NULL;
}

static void *ps_get(hy__bufsrc *src) {
  return hy__mem_alloc(src->size + src->slack);
}
static void ps_put(hy__bufsrc *src, void *b) {
  (void)src;
  hy__mem_free(b);
}

static void pooled_stream(hy__port *p, size_t slack, int late) {
  int c, s;
  tcp_pair(&c, &s);
  ASSERT_OK(hy__port_associate(p, s));
  hy__bufsrc src = {ps_get, ps_put, PS_BUF, slack};
  ps_peer_t a = {c, test_rand() | 1};
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, ps_peer, &a), 0);
  size_t got = 0;
  long readies = 0;
  int64_t until = hy_now() + LIMIT;
  for (;;) {
    ASSERT(hy_now() < until);
    hy__op rcv;
    op_init(&rcv, HY__OP_RECV, s);
    rcv.flags = HY__RECV_OWNED | (late ? HY__RECV_LATE : 0);
    rcv.addr = &src;
    ASSERT_OK(hy__port_start(p, &rcv));
    ASSERT(wait_one(p) == &rcv);
    if (rcv.res == HY__RES_READY) {
      ASSERT(late);
      ASSERT(rcv.buf == NULL);
      readies++;
      rcv.res = hy__port_recv_now(p, &rcv);
    }
    if (rcv.res == HY_EAGAIN) {
      ASSERT(rcv.buf == NULL);
      continue;
    }
    if (rcv.res == 0) {
      ASSERT(rcv.buf == NULL);
      break;
    }
    ASSERT(rcv.res > 0 && rcv.res <= PS_BUF);
    ASSERT(rcv.buf != NULL);
    const unsigned char *b = rcv.buf;
    for (int64_t i = 0; i < rcv.res; i++)
      ASSERT_EQ(b[i], ps_byte(got + (size_t)i));
    got += (size_t)rcv.res;
    src.put(&src, rcv.buf);
  }
  ASSERT_EQ(got, PS_TOTAL);
  if (late)
    ASSERT_GT(readies, 0);
  pthread_join(th, NULL);
  hy__port_forget(p, s);
  close(c);
  close(s);
}

TEST_IMPL(port_pooled_stream) {
  hy__port *p;
  OPEN_PORT(p);
  int late = hy__port_backend(p) == HY__BACKEND_EPOLL;
  for (int l = 0; l <= late; l++) {
    pooled_stream(p, 0, l);
    pooled_stream(p, 1, l);
  }
  hy__port_close(p);
  return 0;
}
#endif

/* ------------------------------------------------------------ UDP ops */

static int udp_ops_on(hy__port *p, int family) {
  struct sockaddr_storage aa, ba, from;
  memset(&aa, 0, sizeof aa);
  socklen_t len;
  if (family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&aa;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof *a;
  } else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&aa;
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    len = sizeof *a;
  }
  ba = aa;
  int a = sock_open(family, SOCK_DGRAM | SOCK_CLOEXEC);
  int b = sock_open(family, SOCK_DGRAM | SOCK_CLOEXEC);
  if (a < 0 || b < 0 || bind(a, (struct sockaddr *)&aa, len) != 0 ||
      bind(b, (struct sockaddr *)&ba, len) != 0) {
    if (a >= 0)
      sock_close(a);
    if (b >= 0)
      sock_close(b);
    return 0; /* no such family here */
  }
  socklen_t l1 = len, l2 = len;
  ASSERT_EQ(getsockname(a, (struct sockaddr *)&aa, &l1), 0);
  ASSERT_EQ(getsockname(b, (struct sockaddr *)&ba, &l2), 0);
  ASSERT_OK(hy__port_associate(p, a));
  ASSERT_OK(hy__port_associate(p, b));

  char rb[32];
  hy__op rf, st;
  op_init(&rf, HY__OP_RECVFROM, b);
  rf.buf = rb;
  rf.len = sizeof rb;
  rf.addr = &from;
  rf.addrlen = sizeof from;
  ASSERT_OK(hy__port_start(p, &rf));
  expect_none(p, HY_MS(20));
  op_init(&st, HY__OP_SENDTO, a);
  st.buf = "datagram";
  st.len = 8;
  st.addr = &ba;
  st.addrlen = len;
  ASSERT_OK(hy__port_start(p, &st));
  hy__op *want[2] = {&rf, &st};
  wait_set(p, want, 2);
  ASSERT_EQ(st.res, 8);
  ASSERT_EQ(rf.res, 8);
  ASSERT(memcmp(rb, "datagram", 8) == 0);
  ASSERT_EQ(rf.addrlen, len);
  ASSERT(memcmp(&from, &aa, len) == 0);

  /* RECVFROM without an address; a datagram waiting already. */
  ASSERT_EQ(sendto(a, (const char *)"zz", 2, 0, (struct sockaddr *)&ba, len),
            2);
  op_init(&rf, HY__OP_RECVFROM, b);
  rf.buf = rb;
  rf.len = sizeof rb;
  ASSERT_OK(hy__port_start(p, &rf));
  ASSERT(wait_one(p) == &rf);
  ASSERT_EQ(rf.res, 2);
  hy__port_forget(p, a);
  hy__port_forget(p, b);
  sock_close(a);
  sock_close(b);
  return 1;
}

TEST_IMPL(port_udp_ops) {
  hy__port *p;
  OPEN_PORT(p);
  ASSERT_EQ(udp_ops_on(p, AF_INET), 1);
  if (!udp_ops_on(p, AF_INET6))
    fprintf(stderr, "no IPv6 loopback here: ::1 part skipped\n");
  hy__port_close(p);
  return 0;
}

/* ------------------------------------------------- resets and refusals */

TEST_IMPL(port_reset_and_refused) {
  hy__port *p;
  OPEN_PORT(p);
  int c, s;
  tcp_pair(&c, &s);
  ASSERT_OK(hy__port_associate(p, s));
  char rb[16];
  hy__op rcv;
  op_init(&rcv, HY__OP_RECV, s);
  rcv.buf = rb;
  rcv.len = sizeof rb;
  ASSERT_OK(hy__port_start(p, &rcv));
  reset_close(c);
  ASSERT(wait_one(p) == &rcv);
  ASSERT_EQ(rcv.res, HY_ECONNRESET);

  /* Sending on the reset socket fails (and raises no SIGPIPE). */
  hy__op snd;
  op_init(&snd, HY__OP_SEND, s);
  snd.buf = "after";
  snd.len = 5;
  ASSERT_OK(hy__port_start(p, &snd));
  ASSERT(wait_one(p) == &snd);
  ASSERT(snd.res == HY_EPIPE || snd.res == HY_ECONNRESET);
  hy__port_forget(p, s);
  sock_close(s);

  /* A send to a peer that closed: EPIPE or ECONNRESET, never a signal. */
  tcp_pair(&c, &s);
  ASSERT_OK(hy__port_associate(p, c));
  sock_close(s);
  int64_t until = hy_now() + LIMIT;
  for (;;) {
    op_init(&snd, HY__OP_SEND, c);
    snd.buf = "more";
    snd.len = 4;
    ASSERT_OK(hy__port_start(p, &snd));
    ASSERT(wait_one(p) == &snd);
    if (snd.res < 0) {
      ASSERT(snd.res == HY_EPIPE || snd.res == HY_ECONNRESET);
      break;
    }
    ASSERT(hy_now() < until);
    usleep(1000);
  }
  hy__port_forget(p, c);
  sock_close(c);

  /* Connecting to a port nobody listens on. */
  struct sockaddr_in la;
  int l = listener4(&la);
  sock_close(l);
  c = sock_open(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
  ASSERT_OK(hy__port_associate(p, c));
  hy__op con;
  op_init(&con, HY__OP_CONNECT, c);
  con.addr = &la;
  con.addrlen = sizeof la;
  ASSERT_OK(hy__port_start(p, &con));
  ASSERT(wait_one(p) == &con);
  ASSERT_EQ(con.res, HY_ECONNREFUSED);
  hy__port_forget(p, c);
  sock_close(c);
  hy__port_close(p);
  return 0;
}

/* ------------------------------------------------------------ timeouts */

TEST_IMPL(port_timeouts_never_early) {
  hy__port *p;
  OPEN_PORT(p);
  enum { N = 300 };
  hy__op *t = calloc(N, sizeof *t);
  ASSERT(t);
  int64_t now = hy_now();
  for (int i = 0; i < N; i++) {
    op_init(&t[i], HY__OP_TIMEOUT, -1);
    /* A few in the past, the rest over the next 40 ms. */
    t[i].deadline = i % 10 == 0 ? now - HY_MS(1)
                                : now + (int64_t)(test_rand() % HY_MS(40));
    ASSERT_OK(hy__port_start(p, &t[i]));
  }
  int seen = 0;
  while (seen < N) {
    hy__op *op = wait_one(p);
    int64_t at = hy_now();
    ASSERT(op >= t && op < t + N);
    ASSERT_EQ(op->res, HY_ETIMEDOUT);
    ASSERT_GE(at, op->deadline);
    ASSERT_EQ(op->kind, HY__OP_TIMEOUT);
    op->kind = HY__OP_KIND_COUNT; /* a second completion would show */
    seen++;
  }
  expect_none(p, HY_MS(20));
  /* wait's own time-out is never early either. */
  hy__op *ops[4];
  for (int i = 0; i < 5; i++) {
    int64_t ns = HY_US(100 + test_rand() % 15000);
    int64_t t0 = hy_now();
    ASSERT_EQ(hy__port_wait(p, ops, 4, ns), 0);
    ASSERT_GE(hy_now() - t0, ns);
  }
  free(t);
  hy__port_close(p);
  return 0;
}

/* -------------------------------------------------------------- cancel */

static void expect_cancelled(hy__port *p, hy__op *op) {
  ASSERT_OK(hy__port_cancel(p, op));
  ASSERT_OK(hy__port_cancel(p, op)); /* asked already: still fine */
  ASSERT(wait_one(p) == op);
  ASSERT_EQ(op->res, HY_ECANCELED);
  ASSERT_ERR(hy__port_cancel(p, op), HY_ENOENT);
  expect_none(p, HY_MS(20)); /* exactly one completion */
}

typedef struct {
  hy__port *p;
  hy__op *op;
  int64_t delay;
} cancel_arg;

static void *cancel_later(void *arg) {
  cancel_arg *a = arg;
  hy__sleep_thread_until(hy_now() + a->delay);
  ASSERT_OK(hy__port_cancel(a->p, a->op));
  return NULL;
}

TEST_IMPL(port_cancel_in_flight) {
  hy__port *p;
  OPEN_PORT(p);
  int c, s;
  tcp_pair(&c, &s);
  ASSERT_OK(hy__port_associate(p, s));
  ASSERT_OK(hy__port_associate(p, c));

  char rb[8];
  hy__op op;
  op_init(&op, HY__OP_RECV, s);
  op.buf = rb;
  op.len = sizeof rb;
  ASSERT_OK(hy__port_start(p, &op));
  expect_cancelled(p, &op);
  /* Nothing was eaten: data sent now is there for the next reader. */
  ASSERT_EQ(send(c, "z", 1, 0), 1);
  read_exact(s, rb, 1);
  ASSERT_EQ(rb[0], 'z');

  struct sockaddr_in la;
  int l = listener4(&la);
  ASSERT_OK(hy__port_associate(p, l));
  op_init(&op, HY__OP_ACCEPT, l);
  ASSERT_OK(hy__port_start(p, &op));
  expect_cancelled(p, &op);

  op_init(&op, HY__OP_POLL, s);
  op.flags = HY__POLL_IN;
  ASSERT_OK(hy__port_start(p, &op));
  expect_cancelled(p, &op);

  op_init(&op, HY__OP_TIMEOUT, -1);
  op.deadline = hy_now() + HY_SEC(60);
  ASSERT_OK(hy__port_start(p, &op));
  expect_cancelled(p, &op);

  /* A send waiting for room in a full socket buffer. */
  static char big[1 << 16];
  for (;;) {
    op_init(&op, HY__OP_SEND, c);
    op.buf = big;
    op.len = sizeof big;
    ASSERT_OK(hy__port_start(p, &op));
    hy__op *got[1];
    int n = hy__port_wait(p, got, 1, HY_MS(50));
    if (n == 0)
      break; /* it waits */
    ASSERT(got[0] == &op && op.res > 0);
  }
  ASSERT_OK(hy__port_cancel(p, &op));
  ASSERT(wait_one(p) == &op);
  ASSERT(op.res == HY_ECANCELED || op.res > 0);
  expect_none(p, HY_MS(20));

  /* From another thread, while the owner blocks in wait. */
  op_init(&op, HY__OP_TIMEOUT, -1);
  op.deadline = hy_now() + HY_SEC(60);
  ASSERT_OK(hy__port_start(p, &op));
  cancel_arg ca = {p, &op, HY_MS(20)};
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, cancel_later, &ca), 0);
  ASSERT(wait_one(p) == &op);
  ASSERT_EQ(op.res, HY_ECANCELED);
  pthread_join(th, NULL);

  /* hy__port_forget cancels what still waits on the fd (a fresh pair: s
   * has the bytes of the sends above waiting). */
  sock_close(c);
  sock_close(s);
  tcp_pair(&c, &s);
  ASSERT_OK(hy__port_associate(p, s));
  op_init(&op, HY__OP_RECV, s);
  op.buf = rb;
  op.len = sizeof rb;
  ASSERT_OK(hy__port_start(p, &op));
  hy__port_forget(p, s);
  ASSERT(wait_one(p) == &op);
  ASSERT_EQ(op.res, HY_ECANCELED);
  expect_none(p, HY_MS(20));

  sock_close(l);
  sock_close(c);
  sock_close(s);
  hy__port_close(p);
  return 0;
}

/* The cancel of a recv races with the data that completes it, from two
 * other threads at random moments.  Every iteration: exactly one
 * completion, either the byte or HY_ECANCELED - and then the byte is
 * still in the socket. */
typedef struct {
  hy__port *p;
  hy__op *op;
  int fd;
  atomic_int iter;    /* the iteration the helpers act on */
  atomic_int send_it; /* this iteration sends a byte */
  atomic_int stop;
  sem_t go[2], done[2]; /* hand-offs: blocking, not spinning, so a loaded
                           machine slows the test down only a little */
  uint64_t seed[2];
} race_t;

static void race_init(race_t *r, hy__port *p, hy__op *op, int fd) {
  memset(r, 0, sizeof *r);
  r->p = p;
  r->op = op;
  r->fd = fd;
  r->seed[0] = test_rand() | 1;
  r->seed[1] = test_rand() | 1;
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(sem_init(&r->go[i], 0, 0), 0);
    ASSERT_EQ(sem_init(&r->done[i], 0, 0), 0);
  }
}

static void sem_wait_all(sem_t *s) {
  while (sem_wait(s) != 0)
    ASSERT_EQ(errno, EINTR);
}

static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void spin(uint64_t n) {
  for (volatile uint64_t i = 0; i < n; i++) {
  }
}

static void *racer(race_t *r, int who) {
  for (;;) {
    sem_wait_all(&r->go[who]);
    if (atomic_load(&r->stop))
      return NULL;
    int it = atomic_load(&r->iter);
    uint64_t d = rnd(&r->seed[who]);
    if (d % 16 == 0)
      usleep((useconds_t)(d % 300));
    else
      spin(d % 3000);
    if (who == 0) {
      int rc = hy__port_cancel(r->p, r->op);
      ASSERT(rc == 0 || rc == HY_ENOENT);
    } else if (atomic_load(&r->send_it)) {
      char b = (char)it;
      ASSERT_EQ(send(r->fd, (const char *)&b, 1, 0), 1);
    }
    sem_post(&r->done[who]);
  }
}

static void race_stop(race_t *r, pthread_t *th, int n) {
  atomic_store(&r->stop, 1);
  for (int i = 0; i < n; i++) {
    sem_post(&r->go[i]);
    pthread_join(th[i], NULL);
  }
}

static void *canceller(void *a) { return racer(a, 0); }
static void *sender(void *a) { return racer(a, 1); }

TEST_IMPL(port_cancel_race_stress) {
  hy__port *p;
  OPEN_PORT(p);
  int c, s;
  tcp_pair(&c, &s);
  ASSERT_OK(hy__port_associate(p, s));
  hy__op op;
  race_t r;
  race_init(&r, p, &op, c);
  pthread_t th[2];
  ASSERT_EQ(pthread_create(&th[0], NULL, canceller, &r), 0);
  ASSERT_EQ(pthread_create(&th[1], NULL, sender, &r), 0);
  int64_t until = hy_now() + HY_SEC(4);
  int iters = 0, got_data = 0, got_cancel = 0;
  char b;
  /* At least 300 rounds however slow the machine, then up to 5000 while
   * the time lasts. */
  for (int it = 1; it <= 5000 && (it <= 300 || hy_now() < until); it++) {
    op_init(&op, HY__OP_RECV, s);
    op.buf = &b;
    op.len = 1;
    op.data = (void *)(intptr_t)it;
    int sends = test_rand() % 4 != 0;
    atomic_store(&r.send_it, sends);
    ASSERT_OK(hy__port_start(p, &op));
    atomic_store(&r.iter, it);
    sem_post(&r.go[0]);
    sem_post(&r.go[1]);
    hy__op *got = wait_one(p);
    ASSERT(got == &op && (intptr_t)op.data == it);
    /* The helpers are done with op before it is used again. */
    sem_wait_all(&r.done[0]);
    sem_wait_all(&r.done[1]);
    if (op.res == 1) {
      ASSERT(sends);
      ASSERT_EQ(b, (char)it);
      got_data++;
    } else {
      ASSERT_EQ(op.res, HY_ECANCELED);
      got_cancel++;
      if (sends) {
        read_exact(s, &b, 1);
        ASSERT_EQ(b, (char)it);
      }
    }
    hy__op *more[2];
    ASSERT_EQ(hy__port_wait(p, more, 2, 0), 0);
    iters++;
  }
  race_stop(&r, th, 2);
  fprintf(stderr, "%d iterations: %d data, %d cancelled\n", iters, got_data,
          got_cancel);
  ASSERT_GE(iters, 300);
  ASSERT_GT(got_cancel, 0);
  expect_none(p, HY_MS(20));
  sock_close(c);
  sock_close(s);
  hy__port_close(p);
  return 0;
}

/* The same race for a timeout that is about to fire. */
TEST_IMPL(port_cancel_timeout_race) {
  hy__port *p;
  OPEN_PORT(p);
  hy__op op;
  race_t r;
  race_init(&r, p, &op, -1);
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, canceller, &r), 0);
  int64_t until = hy_now() + HY_SEC(3);
  int fired = 0, cancelled = 0;
  for (int it = 1; it <= 3000 && (it <= 300 || hy_now() < until); it++) {
    op_init(&op, HY__OP_TIMEOUT, -1);
    op.deadline = hy_now() + (int64_t)(test_rand() % HY_US(200));
    ASSERT_OK(hy__port_start(p, &op));
    atomic_store(&r.iter, it);
    sem_post(&r.go[0]);
    ASSERT(wait_one(p) == &op);
    sem_wait_all(&r.done[0]);
    if (op.res == HY_ETIMEDOUT) {
      ASSERT_GE(hy_now(), op.deadline);
      fired++;
    } else {
      ASSERT_EQ(op.res, HY_ECANCELED);
      cancelled++;
    }
    hy__op *more[2];
    ASSERT_EQ(hy__port_wait(p, more, 2, 0), 0);
  }
  race_stop(&r, &th, 1);
  fprintf(stderr, "%d fired, %d cancelled\n", fired, cancelled);
  ASSERT_GE(fired + cancelled, 300);
  ASSERT_GT(cancelled, 0);
  hy__port_close(p);
  return 0;
}

/* ------------------------------------------------------ posts and wakes */

enum { POSTERS = 8, PER_POSTER = 5000 };

typedef struct {
  hy__port *p;
  hy__op *ops;
  atomic_int *go;
} poster_arg;

static void *poster(void *arg) {
  poster_arg *a = arg;
  while (!atomic_load(a->go))
    sched_yield();
  for (int i = 0; i < PER_POSTER; i++) {
    ASSERT_OK(hy__port_post(a->p, &a->ops[i]));
    if (i % 97 == 0)
      hy__port_wake(a->p);
  }
  return NULL;
}

TEST_IMPL(port_post_from_threads) {
  hy__port *p;
  OPEN_PORT(p);
  hy__op *ops = calloc(POSTERS * PER_POSTER, sizeof *ops);
  unsigned char *seen = calloc(POSTERS * PER_POSTER, 1);
  ASSERT(ops && seen);
  for (int i = 0; i < POSTERS * PER_POSTER; i++) {
    ops[i].kind = HY__OP_POST;
    ops[i].data = (void *)(intptr_t)i;
  }
  atomic_int go = 0;
  poster_arg args[POSTERS];
  pthread_t th[POSTERS];
  for (int t = 0; t < POSTERS; t++) {
    args[t].p = p;
    args[t].ops = ops + t * PER_POSTER;
    args[t].go = &go;
    ASSERT_EQ(pthread_create(&th[t], NULL, poster, &args[t]), 0);
  }
  atomic_store(&go, 1);
  int total = 0;
  int64_t until = hy_now() + HY_SEC(20);
  while (total < POSTERS * PER_POSTER) {
    ASSERT(hy_now() < until);
    hy__op *got[64];
    int n = hy__port_wait(p, got, 64, HY_MS(100));
    ASSERT(n >= 0);
    for (int i = 0; i < n; i++) {
      intptr_t k = got[i] - ops;
      ASSERT(k >= 0 && k < POSTERS * PER_POSTER);
      ASSERT_EQ((intptr_t)got[i]->data, k);
      ASSERT_EQ(seen[k], 0);
      seen[k] = 1;
    }
    total += n;
  }
  for (int t = 0; t < POSTERS; t++)
    pthread_join(th[t], NULL);
  expect_none(p, HY_MS(20));
  free(ops);
  free(seen);
  hy__port_close(p);
  return 0;
}

#ifndef _WIN32
static hy__port *g_sig_port; /* for the signal handler only */

static void on_usr1(int sig) {
  (void)sig;
  hy__port_wake(g_sig_port);
}
#endif

typedef struct {
  hy__port *p;
  pthread_t target;
  int how; /* 0: wake, 1: signal */
} waker_arg;

static void *waker(void *arg) {
  waker_arg *a = arg;
  hy__sleep_thread_until(hy_now() + HY_MS(20));
  if (a->how == 0)
    hy__port_wake(a->p);
#ifndef _WIN32
  else
    pthread_kill(a->target, SIGUSR1);
#endif
  return NULL;
}

TEST_IMPL(port_wake_semantics) {
  hy__port *p;
  OPEN_PORT(p);
  hy__op *ops[4];
  /* A wake before the wait ends the next wait. */
  hy__port_wake(p);
  int64_t t0 = hy_now();
  ASSERT_EQ(hy__port_wait(p, ops, 4, HY_SEC(10)), 0);
  ASSERT_LT(hy_now() - t0, HY_SEC(5));
  /* Many wakes coalesce into one: the wait after it runs to its time-out. */
  for (int i = 0; i < 100; i++)
    hy__port_wake(p);
  t0 = hy_now();
  ASSERT_EQ(hy__port_wait(p, ops, 4, HY_SEC(10)), 0);
  ASSERT_LT(hy_now() - t0, HY_SEC(5));
  t0 = hy_now();
  ASSERT_EQ(hy__port_wait(p, ops, 4, HY_MS(30)), 0);
  ASSERT_GE(hy_now() - t0, HY_MS(30));
  /* Non-blocking waits leave a wake to the next wait that would block;
   * that one takes it. */
  hy__port_wake(p);
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(hy__port_wait(p, ops, 4, 0), 0);
  t0 = hy_now();
  ASSERT_EQ(hy__port_wait(p, ops, 4, HY_SEC(10)), 0);
  ASSERT_LT(hy_now() - t0, HY_SEC(5));
  t0 = hy_now();
  ASSERT_EQ(hy__port_wait(p, ops, 4, HY_MS(30)), 0);
  ASSERT_GE(hy_now() - t0, HY_MS(30));
  /* ... also while a post is dequeued by the non-blocking wait. */
  hy__port_wake(p);
  hy__op pst;
  op_init(&pst, HY__OP_POST, -1);
  ASSERT_OK(hy__port_post(p, &pst));
  ASSERT_EQ(hy__port_wait(p, ops, 4, 0), 1);
  ASSERT(ops[0] == &pst);
  t0 = hy_now();
  ASSERT_EQ(hy__port_wait(p, ops, 4, HY_SEC(10)), 0);
  ASSERT_LT(hy_now() - t0, HY_SEC(5));

  /* From another thread, and from a signal handler, while blocked (no
   * POSIX signals on Windows: the console events are tested with the
   * hub's signals). */
#ifdef _WIN32
  for (int how = 0; how < 1; how++) {
#else
  g_sig_port = p;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
  for (int how = 0; how < 2; how++) {
#endif
    for (int rep = 0; rep < 5; rep++) {
#ifdef _WIN32
      waker_arg a = {p, NULL, how};
#else
      waker_arg a = {p, pthread_self(), how};
#endif
      pthread_t th;
      ASSERT_EQ(pthread_create(&th, NULL, waker, &a), 0);
      t0 = hy_now();
      ASSERT_EQ(hy__port_wait(p, ops, 4, -1), 0);
      ASSERT_LT(hy_now() - t0, HY_SEC(5));
      pthread_join(th, NULL);
    }
  }
#ifndef _WIN32
  signal(SIGUSR1, SIG_DFL);
#endif
  hy__port_close(p);
  return 0;
}

/* Ping-pong: the owner blocks without a time limit, another thread wakes
 * it at a random moment after it has said it is about to wait, many times.
 * Each wake must end a blocked wait: a wake that lands between the owner's
 * look at the flag and its consumption of the eventfd's edge (the uring
 * backend once reaped that edge as stale and slept on) hangs the owner, and
 * the test times out. */
typedef struct {
  hy__port *p;
  atomic_int round; /* the owner is about to wait for wake #round */
  int rounds;
  atomic_int stop;  /* the owner took its last wake */
} pingpong_t;

static void *pp_waker(void *arg) {
  pingpong_t *a = arg;
  uint64_t seed = test_rand();
  for (int i = 0; i < a->rounds; i++) {
    for (unsigned spins = 0; atomic_load(&a->round) != i; spins++) {
      if (atomic_load(&a->stop))
        return NULL;
      if (spins > 100000)
        hy__thread_yield(); /* the owner is not running: let it */
    }
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (volatile unsigned k = (unsigned)(seed >> 54); k > 0; k--) {
    } /* 0..1023 empty turns: a random point of the owner's wait */
    hy__port_wake(a->p);
  }
  return NULL;
}

TEST_IMPL(port_wake_never_lost) {
  hy__port *p;
  OPEN_PORT(p);
  /* At least 10,000 rounds however slow the machine (a round costs ~2 ms
   * under Wine, where every wake is an APC through the wineserver), then
   * up to 100,000 while 30 s last. */
  enum { ROUNDS = 100000, MIN_ROUNDS = 10000 };
  pingpong_t a = {p, 0, ROUNDS, 0};
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, pp_waker, &a), 0);
  hy__op *ops[4];
  int64_t until = hy_now() + HY_SEC(30);
  int i;
  for (i = 0; i < ROUNDS && (i < MIN_ROUNDS || hy_now() < until); i++) {
    atomic_store(&a.round, i);
    ASSERT_EQ(hy__port_wait(p, ops, 4, -1), 0); /* only the wake ends it */
  }
  atomic_store(&a.stop, 1);
  pthread_join(th, NULL);
  fprintf(stderr, "%d rounds\n", i);
  hy__port_close(p);
  return 0;
}

/* -------------------------------------------------------------- os_handle */

static int readable(intptr_t fd, int ms) {
#ifdef _WIN32
  return compat_wait_handle(fd, ms) == 1;
#else
  struct pollfd pf = {(int)fd, POLLIN, 0};
  int r;
  while ((r = poll(&pf, 1, ms)) < 0 && errno == EINTR) {
  }
  return r == 1 && (pf.revents & POLLIN);
#endif
}

static void drain_all(hy__port *p) {
  hy__op *ops[64];
  while (hy__port_wait(p, ops, 64, 0) > 0) {
  }
}

typedef struct {
  hy__port *p;
  hy__op *op;
} post_later_arg;

static void *post_later(void *arg) {
  post_later_arg *a = arg;
  hy__sleep_thread_until(hy_now() + HY_MS(20));
  ASSERT_OK(hy__port_post(a->p, a->op));
  return NULL;
}

TEST_IMPL(port_os_handle_readable) {
  hy__port *p;
  OPEN_PORT(p);
  intptr_t fd = hy__port_os_handle(p);
  ASSERT(fd >= 0);
  drain_all(p);
  ASSERT(!readable(fd, 0));

  /* A post from another thread. */
  hy__op post;
  op_init(&post, HY__OP_POST, -1);
  post_later_arg pa = {p, &post};
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, post_later, &pa), 0);
  ASSERT(readable(fd, 10000));
  hy__op *ops[8];
  ASSERT_EQ(hy__port_wait(p, ops, 8, 0), 1);
  ASSERT(ops[0] == &post);
  pthread_join(th, NULL);
  drain_all(p);
  ASSERT(!readable(fd, 0));

  /* An op that completes at once. */
  hy__op nop;
  op_init(&nop, HY__OP_NOP, -1);
  ASSERT_OK(hy__port_start(p, &nop));
  ASSERT(readable(fd, 10000));
  ASSERT_EQ(hy__port_wait(p, ops, 8, 0), 1);
  drain_all(p);
  ASSERT(!readable(fd, 0));

  /* A recv that waits, then data. */
  int c, s;
  tcp_pair(&c, &s);
  ASSERT_OK(hy__port_associate(p, s));
  char b;
  hy__op rcv;
  op_init(&rcv, HY__OP_RECV, s);
  rcv.buf = &b;
  rcv.len = 1;
  ASSERT_OK(hy__port_start(p, &rcv));
  drain_all(p);
  ASSERT(!readable(fd, 20));
  ASSERT_EQ(send(c, "k", 1, 0), 1);
  ASSERT(readable(fd, 10000));
  ASSERT(wait_one(p) == &rcv);
  ASSERT_EQ(rcv.res, 1);
  drain_all(p);
  ASSERT(!readable(fd, 0));

  /* A timeout: readable once due, not before. */
  hy__op to;
  op_init(&to, HY__OP_TIMEOUT, -1);
  to.deadline = hy_now() + HY_MS(30);
  ASSERT_OK(hy__port_start(p, &to));
  drain_all(p);
  ASSERT(readable(fd, 10000));
  ASSERT(wait_one(p) == &to);
  ASSERT_GE(hy_now(), to.deadline);
  ASSERT_EQ(to.res, HY_ETIMEDOUT);
  drain_all(p);

  /* A wake, and more completions than one wait takes: still readable. */
  hy__port_wake(p);
  ASSERT(readable(fd, 10000));
  drain_all(p);
  ASSERT(!readable(fd, 0));
  hy__op nops[10];
  for (int i = 0; i < 10; i++) {
    op_init(&nops[i], HY__OP_NOP, -1);
    ASSERT_OK(hy__port_start(p, &nops[i]));
  }
  int got = 0;
  while (got < 10) {
    ASSERT(readable(fd, 10000));
    int n = hy__port_wait(p, ops, 3, 0);
    ASSERT(n >= 0);
    got += n;
  }
  drain_all(p);
  ASSERT(!readable(fd, 0));
  /* The same for posts. */
  for (int i = 0; i < 10; i++) {
    op_init(&nops[i], HY__OP_POST, -1);
    ASSERT_OK(hy__port_post(p, &nops[i]));
  }
  got = 0;
  while (got < 10) {
    ASSERT(readable(fd, 10000));
    int n = hy__port_wait(p, ops, 3, 0);
    ASSERT(n >= 0);
    got += n;
  }
  drain_all(p);
  ASSERT(!readable(fd, 0));
  hy__port_forget(p, s);
  sock_close(c);
  sock_close(s);
  hy__port_close(p);
  return 0;
}

/* ------------------------------------------------------ many in flight */

TEST_IMPL(port_many_in_flight) {
  hy__port *p;
  OPEN_PORT(p);
  enum { PAIRS = 1000 };
  struct sockaddr_in la;
  int l = listener4(&la);
  int *cs = calloc(PAIRS, sizeof *cs), *ss = calloc(PAIRS, sizeof *ss);
  hy__op *ops = calloc(PAIRS, sizeof *ops);
  char *bufs = calloc(PAIRS, 1);
  ASSERT(cs && ss && ops && bufs);
  for (int i = 0; i < PAIRS; i++) {
    tcp_pair_on(l, &la, &cs[i], &ss[i]);
    ASSERT_OK(hy__port_associate(p, ss[i]));
  }
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < PAIRS; i++) {
      op_init(&ops[i], HY__OP_RECV, ss[i]);
      ops[i].buf = &bufs[i];
      ops[i].len = 1;
      ASSERT_OK(hy__port_start(p, &ops[i]));
    }
    expect_none(p, HY_MS(10));
    if (round == 0) {
      /* Data on every pair, in random order. */
      int *order = calloc(PAIRS, sizeof *order);
      for (int i = 0; i < PAIRS; i++)
        order[i] = i;
      for (int i = PAIRS - 1; i > 0; i--) {
        int j = (int)(test_rand() % (uint64_t)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
      }
      for (int i = 0; i < PAIRS; i++) {
        char b = (char)(order[i] * 31);
        ASSERT_EQ(send(cs[order[i]], (const char *)&b, 1, 0), 1);
      }
      free(order);
    } else {
      /* Every one cancelled, from another thread. */
      for (int i = 0; i < PAIRS; i++) {
        cancel_arg ca = {p, &ops[i], 0};
        if (i == 0) {
          pthread_t th;
          ASSERT_EQ(pthread_create(&th, NULL, cancel_later, &ca), 0);
          pthread_join(th, NULL);
        } else {
          ASSERT_OK(hy__port_cancel(p, &ops[i]));
        }
      }
    }
    unsigned char *seen = calloc(PAIRS, 1);
    int total = 0;
    int64_t until = hy_now() + HY_SEC(20);
    while (total < PAIRS) {
      ASSERT(hy_now() < until);
      hy__op *got[64];
      int n = hy__port_wait(p, got, 64, HY_MS(100));
      ASSERT(n >= 0);
      for (int k = 0; k < n; k++) {
        intptr_t i = got[k] - ops;
        ASSERT(i >= 0 && i < PAIRS);
        ASSERT_EQ(seen[i], 0);
        seen[i] = 1;
        if (round == 0) {
          ASSERT_EQ(got[k]->res, 1);
          ASSERT_EQ(bufs[i], (char)(i * 31));
        } else {
          ASSERT_EQ(got[k]->res, HY_ECANCELED);
        }
      }
      total += n;
    }
    free(seen);
    expect_none(p, HY_MS(10));
  }
  for (int i = 0; i < PAIRS; i++) {
    hy__port_forget(p, ss[i]);
    sock_close(ss[i]);
    sock_close(cs[i]);
  }
  sock_close(l);

  /* More completions than the kernel's completion queue holds, started
   * without a wait in between. */
  enum { MANY = 12000 };
  hy__op *many = calloc(MANY, sizeof *many);
  unsigned char *seen = calloc(MANY, 1);
  int64_t past = hy_now() - 1;
  for (int i = 0; i < MANY; i++) {
    op_init(&many[i], i % 3 == 0 ? HY__OP_TIMEOUT : HY__OP_NOP, -1);
    many[i].deadline = past;
    ASSERT_OK(hy__port_start(p, &many[i]));
  }
  int total = 0;
  while (total < MANY) {
    hy__op *got[64];
    int n = hy__port_wait(p, got, 64, HY_MS(100));
    ASSERT(n > 0);
    for (int k = 0; k < n; k++) {
      intptr_t i = got[k] - many;
      ASSERT(i >= 0 && i < MANY);
      ASSERT_EQ(seen[i], 0);
      seen[i] = 1;
      ASSERT_EQ(got[k]->res, i % 3 == 0 ? HY_ETIMEDOUT : 0);
    }
    total += n;
  }
  expect_none(p, HY_MS(10));
  free(many);
  free(seen);
  free(cs);
  free(ss);
  free(ops);
  free(bufs);
  hy__port_close(p);
  return 0;
}

/* ------------------------------------------------------------ errors */

TEST_IMPL(port_error_paths) {
  hy__port *p;
  OPEN_PORT(p);
  struct sockaddr_in la;
  int l = listener4(&la);
  ASSERT_OK(hy__port_associate(p, l));
  int c = sock_open(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
  ASSERT_EQ(connect(c, (struct sockaddr *)&la, sizeof la), 0);
  hy__op acc;
  int rc;
  hy__port *q = NULL;

#ifdef _WIN32
  fprintf(stderr, "no descriptor limit to lower on Windows: EMFILE part "
                  "skipped\n");
#else
  /* Out of descriptors: the accept fails with HY_EMFILE; so does opening
   * another port.  Nothing crashes. */
  struct rlimit old, lim;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  int lowest = dup(0);
  ASSERT(lowest >= 0);
  close(lowest);
  lim = old;
  lim.rlim_cur = (rlim_t)lowest;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);
  op_init(&acc, HY__OP_ACCEPT, l);
  ASSERT_OK(hy__port_start(p, &acc));
  ASSERT(wait_one(p) == &acc);
  ASSERT_EQ(acc.res, HY_EMFILE);
  rc = hy__port_open(&q, test_port_backend(), NULL);
  ASSERT(rc < 0);
  ASSERT(q == NULL);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
#endif
  /* With room again, the waiting connection is accepted. */
  op_init(&acc, HY__OP_ACCEPT, l);
  ASSERT_OK(hy__port_start(p, &acc));
  ASSERT(wait_one(p) == &acc);
  ASSERT(acc.res >= 0);
  sock_close((int)acc.res);

  /* Out of memory while opening (when the allocator can be made to fail:
   * the interim one cannot). */
  hy__mem_fail_here_at(1);
  void *probe = hy__mem_alloc(16);
  if (probe) {
    hy__mem_fail_at(0);
    hy__mem_free(probe);
    fprintf(stderr, "allocator cannot fail on demand: ENOMEM part skipped\n");
  } else {
    hy__mem_fail_here_at(1);
    rc = hy__port_open(&q, test_port_backend(), NULL);
    hy__mem_fail_at(0);
    ASSERT_ERR(rc, HY_ENOMEM);
  }

  hy__port_forget(p, l);
  sock_close(l);
  sock_close(c);
  hy__port_close(p);
  return 0;
}

/* ------------------------------------------------------------ fallback */

#ifndef _WIN32
TEST_IMPL(port_uring_fallback) {
  unsetenv("HYDRA_BACKEND");
  hy__port *p = NULL;
  int have_uring = hy__port_open(&p, HY__BACKEND_URING, NULL) == 0;
  if (have_uring) {
    ASSERT_EQ(hy__port_backend(p), HY__BACKEND_URING);
    hy__port_close(p);
    ASSERT_OK(hy__port_open(&p, HY__BACKEND_AUTO, NULL));
    ASSERT(strcmp(hy__port_backend_name(p), "uring") == 0);
    hy__port_close(p);
  }

  ASSERT_EQ(setenv("HYDRA_URING_DISABLE", "1", 1), 0);
  ASSERT_ERR(hy__port_open(&p, HY__BACKEND_URING, NULL), HY_ENOSYS);
  ASSERT_OK(hy__port_open(&p, HY__BACKEND_AUTO, NULL));
  ASSERT_EQ(hy__port_backend(p), HY__BACKEND_EPOLL);
  ASSERT(strcmp(hy__port_backend_name(p), "epoll") == 0);
  /* The port it fell back to works. */
  hy__op nop;
  op_init(&nop, HY__OP_NOP, -1);
  ASSERT_OK(hy__port_start(p, &nop));
  ASSERT(wait_one(p) == &nop);
  hy__port_close(p);
  ASSERT_ERR(hy__port_open(&p, HY__BACKEND_IOCP, NULL), HY_ENOSYS);

  /* Through the runtime: auto is epoll now, uring is refused. */
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = 2;
  hy_runtime_t *rt = NULL;
  ASSERT_OK(hy_runtime_new(&o, &rt));
  ASSERT(strcmp(hy_runtime_backend_name(rt), "epoll") == 0);
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(100)));
  ASSERT_OK(hy_runtime_close(rt));
  o.backend = HY_BACKEND_URING;
  ASSERT_ERR(hy_runtime_new(&o, &rt), HY_ENOSYS);
  ASSERT(rt == NULL);
  unsetenv("HYDRA_URING_DISABLE");

  if (have_uring) {
    o.backend = HY_BACKEND_AUTO;
    ASSERT_OK(hy_runtime_new(&o, &rt));
    ASSERT(strcmp(hy_runtime_backend_name(rt), "uring") == 0);
    ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(100)));
    ASSERT_OK(hy_runtime_close(rt));
  }
  return 0;
}

#endif

#ifndef _WIN32
/* ------------------------------------------------ looking before blocking */

typedef struct {
  hy__port *p;
  int c;             /* the client end: the peer sends on it */
  hy__op post;
  atomic_int round;  /* the round the owner waits in */
  atomic_int stop;
  atomic_int done;   /* the last round the peer acted in */
} look_t;

/* In each round, after a random pause of 0-60 us (often inside the
 * owner's look, sometimes after it, in the block): a post, a wake, or a
 * byte for the owner's pending recv, by turns. */
static void *look_peer(void *arg) {
  look_t *a = arg;
  uint64_t seed = test_rand();
  for (int r = 0;; r++) {
    for (unsigned spins = 0; atomic_load(&a->round) != r; spins++) {
      if (atomic_load(&a->stop))
        return NULL;
      if (spins > 100000)
        hy__thread_yield(); /* the owner is not running: let it */
    }
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    int64_t until = hy_now() + (int64_t)(seed >> 33) % HY_US(60);
    while (hy_now() < until) {
    }
    switch (r % 3) {
    case 0:
      op_init(&a->post, HY__OP_POST, -1);
      hy__port_post(a->p, &a->post);
      break;
    case 1:
      hy__port_wake(a->p);
      break;
    default:
      ASSERT_EQ(send(a->c, "x", 1, MSG_NOSIGNAL), 1);
      break;
    }
    atomic_store(&a->done, r);
  }
}

/* Sets the port's verdict on looking (see HY__LOOK_TRIAL), to hold for
 * as long as the test runs. */
static void look_verdict(hy__port *p, int pays) {
  p->judge.phase = HY__LOOK_HOLD;
  p->judge.pays = p->judge.verdict = pays;
  p->judge.end = hy_now() + HY_SEC(3600);
}

TEST_IMPL(port_look_before_block) {
  hy__port *p;
  OPEN_PORT(p);
  hy__op *ops[4];
  /* io_uring looks in its CQ ring in user space; on epoll a look is a
   * system call per try, which costs more CPU per message than the block
   * it saves: epoll never looks. */
  int looks = hy__port_backend(p) == HY__BACKEND_URING;
  look_verdict(p, 1); /* looking pays (the judge is tested below) */
  /* A fresh port has never blocked briefly: it blocks at once, and a
   * timed wait is never early. */
  int64_t t0 = hy_now();
  ASSERT_EQ(hy__port_wait(p, ops, 4, HY_MS(3)), 0);
  ASSERT(hy_now() - t0 >= HY_MS(3));
  ASSERT_EQ(p->spins, 0);
  ASSERT_EQ(p->spin, 0);
  if (!looks) {
    /* Short blocks do not turn looking on, nor does asking for it. */
    for (int i = 0; i < 200; i++)
      ASSERT_EQ(hy__port_wait(p, ops, 4, HY_US(5)), 0);
    p->spin = 1;
    t0 = hy_now();
    ASSERT_EQ(hy__port_wait(p, ops, 4, HY_MS(3)), 0);
    ASSERT(hy_now() - t0 >= HY_MS(3));
    ASSERT_EQ(p->spins, 0);
  } else {
    /* A short block turns looking on (a loaded machine may stretch one
     * past the window: a bounded number of tries). */
    for (int i = 0; i < 2000 && !p->spin; i++)
      ASSERT_EQ(hy__port_wait(p, ops, 4, HY_US(5)), 0);
    ASSERT_EQ(p->spin, 1);
    /* The next wait that would block looks first, then blocks for the
     * rest of its time (never early), and that long block turns looking
     * off.  (Long enough to reach the point where it would block on a
     * slow host: see port_look_judged.) */
    uint64_t s0 = p->spins;
    t0 = hy_now();
    ASSERT_EQ(hy__port_wait(p, ops, 4, HY_MS(20)), 0);
    ASSERT(hy_now() - t0 >= HY_MS(20));
    ASSERT_EQ(p->spins, s0 + 1);
    ASSERT_EQ(p->spin, 0);
    ASSERT_EQ(hy__port_wait(p, ops, 4, HY_MS(1)), 0);
    ASSERT_EQ(p->spins, s0 + 1); /* off: no look */
    /* A wait that does not block never looks. */
    p->spin = 1;
    ASSERT_EQ(hy__port_wait(p, ops, 4, 0), 0);
    ASSERT_EQ(p->spins, s0 + 1);
  }

  /* Nothing that comes during a look is lost: posts, wakes and received
   * data, at random points of the look or of the block after it.  Each
   * round's wait has no time limit but the test's: only what the peer
   * does ends it. */
  look_t a;
  memset(&a, 0, sizeof a);
  a.p = p;
  atomic_init(&a.round, -1);
  atomic_init(&a.stop, 0);
  atomic_init(&a.done, -1);
  int s;
  tcp_pair(&a.c, &s);
  ASSERT_OK(hy__port_associate(p, s));
  char rb[8];
  hy__op rcv;
  op_init(&rcv, HY__OP_RECV, s);
  rcv.buf = rb;
  rcv.len = sizeof rb;
  ASSERT_OK(hy__port_start(p, &rcv));
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, look_peer, &a), 0);
  uint64_t looks0 = p->spins;
  int64_t end = hy_now() + HY_SEC(2);
  int r;
  for (r = 0; r < 3000 && (r < 300 || hy_now() < end); r++) {
    p->spin = 1; /* this wait looks first */
    atomic_store(&a.round, r);
    int64_t until = hy_now() + LIMIT;
    for (;;) {
      int n = hy__port_wait(p, ops, 4, LIMIT);
      ASSERT(n >= 0);
      ASSERT(hy_now() < until);
      if (r % 3 == 1) {
        ASSERT_EQ(n, 0); /* only a wake ends it */
        break;
      }
      if (n == 0)
        continue; /* the wake of an earlier round's post or wake, late */
      ASSERT_EQ(n, 1);
      if (r % 3 == 0) {
        ASSERT(ops[0] == &a.post);
        break;
      }
      ASSERT(ops[0] == &rcv);
      ASSERT_EQ(rcv.res, 1);
      ASSERT_EQ(rb[0], 'x');
      op_init(&rcv, HY__OP_RECV, s);
      rcv.buf = rb;
      rcv.len = sizeof rb;
      ASSERT_OK(hy__port_start(p, &rcv));
      break;
    }
    while (atomic_load(&a.done) != r)
      ASSERT(hy_now() < until);
  }
  atomic_store(&a.stop, 1);
  pthread_join(th, NULL);
  if (looks)
    ASSERT(p->spins - looks0 >= (uint64_t)r / 2); /* the looks happened */
  else
    ASSERT_EQ(p->spins, 0);
  fprintf(stderr, "%d rounds, %llu looks\n", r,
          (unsigned long long)(p->spins - looks0));
  hy__port_forget(p, s);
  wait_one(p); /* the recv, cancelled */
  sock_close(a.c);
  sock_close(s);
  hy__port_close(p);
  return 0;
}

/* The judge of whether looking pays (port_linux.h), on made-up times:
 * a trial with looks, one without, a verdict from their rates that holds
 * for longer each time it is the same again. */
TEST_IMPL(port_look_judge) {
  hy__look_judge j;
  memset(&j, 0, sizeof j);
  const int64_t T = HY__LOOK_TRIAL;
  int64_t t = HY_SEC(1);
  /* A zeroed judge begins with the trial with looks. */
  hy__look_step(&j, t);
  ASSERT_EQ(j.phase, HY__LOOK_TRY_ON);
  ASSERT_EQ(j.pays, 1);
  /* Nothing changes before a phase's end. */
  hy__look_count(&j, 300);
  hy__look_count(&j, -1);
  hy__look_count(&j, 0);
  hy__look_step(&j, t + T - 1);
  ASSERT_EQ(j.phase, HY__LOOK_TRY_ON);
  ASSERT_EQ(j.done, 300);
  /* Then the trial without looks. */
  t += T;
  hy__look_step(&j, t);
  ASSERT_EQ(j.phase, HY__LOOK_TRY_OFF);
  ASSERT_EQ(j.pays, 0);
  ASSERT_EQ(j.done, 0);
  /* Three times the completions with looks: looking pays, for
   * HY__LOOK_HOLD_MIN. */
  hy__look_count(&j, 100);
  t += T;
  hy__look_step(&j, t);
  ASSERT_EQ(j.phase, HY__LOOK_HOLD);
  ASSERT_EQ(j.pays, 1);
  ASSERT_EQ(j.hold, HY__LOOK_HOLD_MIN);
  hy__look_step(&j, t + HY__LOOK_HOLD_MIN - 1);
  ASSERT_EQ(j.phase, HY__LOOK_HOLD);
  /* The same verdict again and again: it holds twice as long each time,
   * up to HY__LOOK_HOLD_MAX. */
  int64_t hold = HY__LOOK_HOLD_MIN;
  for (int i = 0; i < 12; i++) {
    t += j.hold;
    hy__look_step(&j, t);
    ASSERT_EQ(j.phase, HY__LOOK_TRY_ON);
    ASSERT_EQ(j.pays, 1);
    hy__look_count(&j, 300);
    t += T;
    hy__look_step(&j, t);
    ASSERT_EQ(j.pays, 0);
    hy__look_count(&j, 100);
    t += T;
    hy__look_step(&j, t);
    ASSERT_EQ(j.pays, 1);
    hold = hold * 2 < HY__LOOK_HOLD_MAX ? hold * 2 : HY__LOOK_HOLD_MAX;
    ASSERT_EQ(j.hold, hold);
  }
  ASSERT_EQ(j.hold, HY__LOOK_HOLD_MAX);
  /* Each case: completions in the trial with looks (and its length),
   * without (and its length), and whether looking pays. */
  static const struct {
    uint64_t on, off;
    int on_len, off_len; /* in trials */
    int pays;
  } cases[] = {
      {300, 280, 1, 1, 0}, /* about the same: it does not */
      {225, 200, 1, 1, 0}, /* 9/8 is not more than 9/8 */
      {226, 200, 1, 1, 1},
      {120, 100, 1, 1, 1},
      {300, 200, 2, 1, 0}, /* rates: the trial with looks ended late */
      {300, 100, 1, 3, 1}, /* ... or the one without did */
      {HY__LOOK_MIN - 1, 0, 1, 1, 0}, /* too few to judge by */
      {HY__LOOK_MIN, 0, 1, 1, 1},
      {0, 0, 1, 1, 0}, /* an idle port */
  };
  int last = j.verdict;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    t += j.hold;
    hy__look_step(&j, t);
    ASSERT_EQ(j.phase, HY__LOOK_TRY_ON);
    hy__look_count(&j, (int)cases[i].on);
    t += cases[i].on_len * T;
    hy__look_step(&j, t);
    ASSERT_EQ(j.phase, HY__LOOK_TRY_OFF);
    hy__look_count(&j, (int)cases[i].off);
    t += cases[i].off_len * T;
    int64_t before = j.hold;
    hy__look_step(&j, t);
    ASSERT_EQ(j.phase, HY__LOOK_HOLD);
    ASSERT_EQ(j.pays, cases[i].pays);
    ASSERT_EQ(j.verdict, cases[i].pays);
    /* A changed verdict holds for the shortest time again. */
    if (cases[i].pays != last)
      ASSERT_EQ(j.hold, HY__LOOK_HOLD_MIN);
    else
      ASSERT(j.hold == before * 2 || j.hold == HY__LOOK_HOLD_MAX);
    last = cases[i].pays;
  }
  return 0;
}

/* The judge on a port (io_uring; epoll never looks): waits count what
 * they hand out, a phase ends at a wait that would block, and a port whose
 * verdict is that looking does not pay never looks, however short its
 * blocks. */
TEST_IMPL(port_look_judged) {
  hy__port *p;
  OPEN_PORT(p);
  if (hy__port_backend(p) != HY__BACKEND_URING) {
    hy__port_close(p);
    return 0;
  }
  hy__op *ops[4];
  ASSERT_EQ(hy__port_wait(p, ops, 4, HY_US(100)), 0); /* sets the port up */
  /* Completions of I/O are counted, by waits that block or not; posts
   * are not. */
  look_verdict(p, 0);
  uint64_t d0 = p->judge.done;
  hy__op po[3], nop[3];
  for (int i = 0; i < 3; i++) {
    op_init(&po[i], HY__OP_POST, -1);
    hy__port_post(p, &po[i]);
    op_init(&nop[i], HY__OP_NOP, -1);
    ASSERT_OK(hy__port_start(p, &nop[i]));
  }
  int got = 0;
  for (int i = 0; i < 100 && got < 6; i++) {
    int n = hy__port_wait(p, ops, 4, i % 2 ? 0 : HY_MS(10));
    ASSERT(n >= 0);
    got += n;
  }
  ASSERT_EQ(got, 6);
  ASSERT_EQ(p->judge.done, d0 + 3);
  /* Looking does not pay: no look, however short the blocks. */
  uint64_t s0 = p->spins;
  for (int i = 0; i < 50; i++) {
    p->spin = 1;
    ASSERT_EQ(hy__port_wait(p, ops, 4, HY_US(40)), 0);
  }
  ASSERT_EQ(p->spins, s0);
  /* It pays: every wait that would block looks (its last block short).
   * These waits are long enough to reach the point where they would
   * block on a slow host too (under TSan, on two busy CPUs, a wait of
   * 40 us once found its time up before it got there, and neither looked
   * nor judged); a look takes at most HY__SPIN_NS of them. */
  look_verdict(p, 1);
  for (int i = 0; i < 5; i++) {
    p->spin = 1;
    int64_t t0 = hy_now();
    ASSERT_EQ(hy__port_wait(p, ops, 4, HY_MS(20)), 0);
    ASSERT(hy_now() - t0 >= HY_MS(20)); /* a look is never a time-out */
  }
  ASSERT_EQ(p->spins, s0 + 5);
  /* A verdict that ran out: the next wait that would block begins the
   * trial with looks, and looks; a wait that does not block changes
   * nothing. */
  look_verdict(p, 0);
  p->judge.end = hy_now() - 1;
  p->spin = 1;
  ASSERT_EQ(hy__port_wait(p, ops, 4, 0), 0);
  ASSERT_EQ(p->judge.phase, HY__LOOK_HOLD);
  ASSERT_EQ(p->spins, s0 + 5);
  ASSERT_EQ(hy__port_wait(p, ops, 4, HY_MS(20)), 0);
  ASSERT_EQ(p->judge.phase, HY__LOOK_TRY_ON);
  ASSERT_EQ(p->spins, s0 + 6);
  /* The trials run their course on a real clock: an idle port ends with
   * the verdict that looking does not pay. */
  int64_t until = hy_now() + HY_SEC(5);
  while (p->judge.phase != HY__LOOK_HOLD) {
    ASSERT(hy_now() < until);
    ASSERT_EQ(hy__port_wait(p, ops, 4, HY_MS(1)), 0);
  }
  ASSERT_EQ(p->judge.pays, 0);
  hy__port_close(p);
  return 0;
}

/* A socket from the port's accept (plain or multishot) is non-blocking,
 * and hy__port_associate_accepted (no system call on io_uring) prepares
 * it for ops as hy__port_associate does. */
TEST_IMPL(port_associate_accepted) {
  hy__port *p;
  OPEN_PORT(p);
  struct sockaddr_in la;
  int l = listener4(&la);
  ASSERT_OK(hy__port_associate(p, l));
  ASSERT_ERR(hy__port_associate_accepted(p, -1), HY_EBADF);
  for (int multi = 0; multi < 2; multi++) {
    hy__op acc;
    op_init(&acc, HY__OP_ACCEPT, l);
    acc.flags = multi ? HY__ACCEPT_MULTI : 0;
    ASSERT_OK(hy__port_start(p, &acc));
    int c = sock_open(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
    ASSERT(c >= 0);
    ASSERT_EQ(connect(c, (struct sockaddr *)&la, sizeof la), 0);
    ASSERT(wait_one(p) == &acc);
    ASSERT(acc.res >= 0);
    int s = (int)acc.res;
    if (acc.flags & HY__OP_MORE) {
      ASSERT_OK(hy__port_cancel(p, &acc));
      ASSERT(wait_one(p) == &acc);
      if (acc.res >= 0) /* accepted just before the cancel */
        sock_close((int)acc.res);
    }
    ASSERT(fcntl(s, F_GETFL) & O_NONBLOCK);
    ASSERT_OK(hy__port_associate_accepted(p, s));
    char rb[8];
    hy__op rcv;
    op_init(&rcv, HY__OP_RECV, s);
    rcv.buf = rb;
    rcv.len = sizeof rb;
    rcv.flags = HY__RECV_OWNED;
    ASSERT_OK(hy__port_start(p, &rcv));
    expect_none(p, HY_MS(20));
    ASSERT_EQ(send(c, "ab", 2, MSG_NOSIGNAL), 2);
    ASSERT(wait_one(p) == &rcv);
    ASSERT_EQ(rcv.res, 2);
    ASSERT(memcmp(rb, "ab", 2) == 0);
    hy__port_forget_idle(p, s);
    sock_close(s);
    sock_close(c);
  }
  hy__port_forget(p, l);
  sock_close(l);
  hy__port_close(p);
  return 0;
}

/* hy__port_send_now: on epoll a send now, without an op, in order with the
 * fd's ops - HY_EAGAIN while a send op waits (the socket was full), so
 * the bytes come after that op's; the others send through ops only
 * (HY_ENOSYS). */
TEST_IMPL(port_send_now) {
  hy__port *p;
  OPEN_PORT(p);
  int c, s;
  tcp_pair(&c, &s);
  ASSERT_OK(hy__port_associate(p, s));
  int epoll = hy__port_backend(p) == HY__BACKEND_EPOLL;
  int64_t k = hy__port_send_now(p, s, "ab", 2, 0);
  if (!epoll) {
    ASSERT_ERR(k, HY_ENOSYS);
    sock_close(c);
    sock_close(s);
    hy__port_close(p);
    return 0;
  }
  ASSERT_EQ(k, 2);
  char in[2];
  ASSERT_EQ(recv(c, in, 2, MSG_WAITALL), 2);
  ASSERT_EQ(memcmp(in, "ab", 2), 0);
  /* Fill the socket: bytes of 'x', until it takes no more. */
  static char bulk[1 << 16];
  memset(bulk, 'x', sizeof bulk);
  size_t filled = 0;
  while ((k = hy__port_send_now(p, s, bulk, sizeof bulk, 0)) > 0)
    filled += (size_t)k;
  ASSERT_ERR(k, HY_EAGAIN);
  ASSERT_GT(filled, 0);
  /* A send op waits for room; a send now must not pass it. */
  hy__op snd;
  op_init(&snd, HY__OP_SEND, s);
  snd.buf = "o";
  snd.len = 1;
  ASSERT_OK(hy__port_start(p, &snd));
  ASSERT(!hy__port_done_early(p, &snd));
  static char sink[1 << 16];
  int64_t until = hy_now() + LIMIT;
  size_t got = 0;
  int sent_now = 0, op_done = 0;
  /* Read everything: the 'x's, the op's 'o', then the send now's 'n'. */
  while (got < filled + 2) {
    ASSERT(hy_now() < until);
    if (!sent_now) {
      k = hy__port_send_now(p, s, "n", 1, 0);
      if (op_done) {
        ASSERT_EQ(k, 1); /* no op waits now, and there is room */
        sent_now = 1;
      } else {
        ASSERT_ERR(k, HY_EAGAIN); /* the op waits */
      }
    }
    ssize_t r = recv(c, sink, sizeof sink, MSG_DONTWAIT);
    if (r > 0) {
      for (ssize_t i = 0; i < r; i++, got++)
        ASSERT_EQ(sink[i], got < filled ? 'x' : got == filled ? 'o' : 'n');
    }
    hy__op *ops[4];
    int n = hy__port_wait(p, ops, 4, HY_MS(1));
    ASSERT(n >= 0);
    if (n == 1) {
      ASSERT(ops[0] == &snd);
      ASSERT_EQ(snd.res, 1);
      op_done = 1;
    }
  }
  ASSERT(sent_now && op_done);
  ASSERT_ERR(hy__port_send_now(p, -1, "n", 1, 0), HY_EBADF);
  hy__port_forget(p, s);
  sock_close(c);
  sock_close(s);
  hy__port_close(p);
  return 0;
}
#endif

/* -------------------------------------------------- runtime/io.c on top */

typedef struct {
  hy_runtime_t *rt;
  int fd;
  int64_t rc;
  int64_t waited;
} io_task_arg;

static void *io_recv_task(void *arg) {
  io_task_arg *a = arg;
  char b[4];
  hy__op op;
  op_init(&op, HY__OP_RECV, a->fd);
  op.buf = b;
  op.len = sizeof b;
  int64_t t0 = hy_now();
  int64_t deadline = a->waited ? t0 + a->waited : HY_FOREVER;
  a->rc = hy__io_await(a->rt, &op, deadline);
  a->waited = hy_now() - t0;
  if (a->rc == 1)
    a->rc = 1000 + b[0];
  return NULL;
}

/* Short deadlines race with a sender: bytes that arrived are reported,
 * never lost. */
typedef struct {
  hy_runtime_t *rt;
  int fd;
  int total;
  int got;
  int timeouts;
} io_race_arg;

static void *io_race_task(void *arg) {
  io_race_arg *a = arg;
  unsigned char expect = 0;
  int64_t until = hy_now() + HY_SEC(20);
  while (a->got < a->total && hy_now() < until) {
    unsigned char b[16];
    hy__op op;
    op_init(&op, HY__OP_RECV, a->fd);
    op.buf = b;
    op.len = sizeof b;
    int rc = hy__io_await(a->rt, &op, hy_now() + HY_US(50 + hy_now() % 300));
    if (rc == HY_ETIMEDOUT) {
      a->timeouts++;
      continue;
    }
    ASSERT(rc > 0);
    for (int i = 0; i < rc; i++)
      ASSERT_EQ(b[i], expect++);
    a->got += rc;
  }
  return NULL;
}

TEST_IMPL(port_io_await) {
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = 2;
  hy_runtime_t *rt = NULL;
  int rc = hy_runtime_new(&o, &rt);
  if (rc == HY_ENOSYS)
    RETURN_SKIP("backend not available here");
  ASSERT_OK(rc);
  if (test_backend())
    ASSERT(strcmp(hy_runtime_backend_name(rt), test_backend()) == 0);
  int c, s;
  tcp_pair(&c, &s);
#ifdef _WIN32
  /* IOCP: associated before use; the workers share one kernel port. */
  ASSERT_OK(hy__port_associate(rt->workers[0].port, s));
#else
  ASSERT_EQ(fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK), 0);
#endif

  /* A deadline ends the await; it is never early. */
  io_task_arg a = {rt, s, 0, HY_MS(20)};
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, io_recv_task, &a, NULL, &t));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_EQ(a.rc, HY_ETIMEDOUT);
  ASSERT_GE(a.waited, HY_MS(20));

  /* Data ends it. */
  io_task_arg b = {rt, s, 0, 0};
  ASSERT_OK(hy_task_spawn(rt, io_recv_task, &b, NULL, &t));
  hy__sleep_thread_until(hy_now() + HY_MS(10));
  ASSERT_EQ(send(c, "q", 1, 0), 1);
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_EQ(b.rc, 1000 + 'q');

  /* A cancel ends it with HY_ECANCELED; the op is given back first. */
  io_task_arg d = {rt, s, 0, 0};
  ASSERT_OK(hy_task_spawn(rt, io_recv_task, &d, NULL, &t));
  hy__sleep_thread_until(hy_now() + HY_MS(20));
  ASSERT_OK(hy_task_cancel(rt, t));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_EQ(d.rc, HY_ECANCELED);

  /* Deadlines racing with data: every byte arrives once, in order. */
  io_race_arg r = {rt, s, 20000, 0, 0};
  ASSERT_OK(hy_task_spawn(rt, io_race_task, &r, NULL, &t));
  unsigned char buf[20000];
  for (int i = 0; i < r.total; i++)
    buf[i] = (unsigned char)i;
  for (int off = 0; off < r.total;) {
    int n = 1 + (int)(test_rand() % 200);
    if (n > r.total - off)
      n = r.total - off;
    ASSERT_EQ(send(c, (const char *)buf + off, (size_t)n, 0), n);
    off += n;
    if (test_rand() % 4 == 0)
      usleep((useconds_t)(test_rand() % 300));
  }
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_EQ(r.got, r.total);
  fprintf(stderr, "io race: %d time-outs\n", r.timeouts);

  sock_close(c);
  sock_close(s);
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(100)));
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

/* A port used by one thread after another (an embedded host may run its
 * loop from several threads in turn; close comes from whoever frees the
 * runtime).  On io_uring the first waiting thread registers the ring fd
 * for its own entries: every other thread must enter with the fd itself,
 * including while the registering thread lives on, and close from another
 * thread. */
typedef struct turn_arg {
  hy__port *p;
  int rc; /* 0: a NOP started and completed on this thread */
  atomic_int done, release;
} turn_arg;

static void *turn_nop(void *arg) {
  turn_arg *a = arg;
  hy__op nop;
  op_init(&nop, HY__OP_NOP, -1);
  a->rc = hy__port_start(a->p, &nop);
  if (a->rc == 0) {
    hy__op *op = NULL;
    int n = 0;
    int64_t until = hy_now() + LIMIT;
    while (n == 0 && hy_now() < until)
      n = hy__port_wait(a->p, &op, 1, HY_MS(100));
    a->rc = n == 1 && op == &nop && nop.res == 0 ? 0 : n < 0 ? n : -1;
  }
  atomic_store(&a->done, 1);
  while (!atomic_load(&a->release)) /* stays alive while the port is used */
    usleep(1000);
  return NULL;
}

static void turn_run(turn_arg *a, hy__port *p, pthread_t *th) {
  memset(a, 0, sizeof *a);
  a->p = p;
  ASSERT_EQ(pthread_create(th, NULL, turn_nop, a), 0);
  int64_t until = hy_now() + LIMIT * 2;
  while (!atomic_load(&a->done)) {
    ASSERT(hy_now() < until);
    usleep(1000);
  }
}

TEST_IMPL(port_threads_in_turn) {
  hy__port *p;
  OPEN_PORT(p);
  turn_arg a, b;
  pthread_t ta, tb;
  turn_run(&a, p, &ta); /* the first waiter */
  ASSERT_OK(a.rc);
  /* This thread: a receive and a send on a socket, a NOP. */
  int c, s;
  tcp_pair(&c, &s);
  ASSERT_OK(hy__port_associate(p, s));
  char in[8];
  hy__op rcv, snd, nop;
  op_init(&rcv, HY__OP_RECV, s);
  rcv.buf = in;
  rcv.len = sizeof in;
  ASSERT_OK(hy__port_start(p, &rcv));
  op_init(&nop, HY__OP_NOP, -1);
  ASSERT_OK(hy__port_start(p, &nop));
  ASSERT(wait_one(p) == &nop);
  ASSERT_EQ(send(c, "hi", 2, 0), 2);
  ASSERT(wait_one(p) == &rcv);
  ASSERT_EQ(rcv.res, 2);
  ASSERT_EQ(memcmp(in, "hi", 2), 0);
  turn_run(&b, p, &tb); /* a third thread, while the first lives on */
  ASSERT_OK(b.rc);
  atomic_store(&b.release, 1);
  pthread_join(tb, NULL);
  op_init(&snd, HY__OP_SEND, s);
  snd.buf = "ok";
  snd.len = 2;
  ASSERT_OK(hy__port_start(p, &snd));
  ASSERT(wait_one(p) == &snd);
  ASSERT_EQ(snd.res, 2);
  ASSERT_EQ(recv(c, in, 2, MSG_WAITALL), 2);
  ASSERT_EQ(memcmp(in, "ok", 2), 0);
  /* A receive left in flight: forget (a cancel submitted at once) ends
   * it, from this thread. */
  op_init(&rcv, HY__OP_RECV, s);
  rcv.buf = in;
  rcv.len = sizeof in;
  ASSERT_OK(hy__port_start(p, &rcv));
  hy__port_forget(p, s);
  ASSERT(wait_one(p) == &rcv);
  ASSERT_ERR(rcv.res, HY_ECANCELED);
  hy__port_close(p); /* the first waiter still lives */
  atomic_store(&a.release, 1);
  pthread_join(ta, NULL);
  sock_close(c);
  sock_close(s);
  return 0;
}
