/* test-net-mshot.c - the multishot pooled receive (HY__RECV_MULTI in
 * runtime/port.h) at the port, and the callback server's reads over it
 * (net/server.c), on real loopback sockets.
 *
 * On io_uring with multishot receive one op stays in flight and completes
 * once per chunk with HY__OP_MORE; elsewhere the flag is ignored and every
 * completion is the last.  The tests check what both must give: every
 * byte, once, in order, whatever ends the op in between (the ring of
 * provided buffers running dry, the port's own stop when chunks pile up,
 * a cancel, a forget, the peer's end or reset). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#ifndef _WIN32
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

#include "sock_compat.h"
#include "compat.h"
#include "hydra.h"
#include "alloc/mem.h"
#include "runtime/port.h"
#include "test.h"

/* The byte at offset off of stream `seed`. */
static unsigned char ms_byte(uint64_t off, unsigned seed) {
  return (unsigned char)((off * 131u + seed * 7u + (off >> 9)) & 0xff);
}

static uint64_t ms_rnd(uint64_t *s) {
  uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static void ms_write(int fd, const void *b, size_t n) {
  size_t done = 0;
  while (done < n) {
    int k = (int)send(fd, (const char *)b + done, (int)(n - done),
                      MSG_NOSIGNAL);
    ASSERT(k > 0);
    done += (size_t)k;
  }
}

/* A writer thread: total bytes of stream `seed` in writes of random
 * sizes up to maxw, with random pauses. */
typedef struct {
  int fd;
  unsigned seed;
  long total;
  size_t maxw;
  int pause_pct;
  uint64_t rs;
} ms_writer;

static void *ms_writer_main(void *arg) {
  ms_writer *w = arg;
  static _Thread_local unsigned char b[16384];
  long off = 0;
  size_t maxw = w->maxw < sizeof b ? w->maxw : sizeof b;
  while (off < w->total) {
    size_t n = 1 + (size_t)(ms_rnd(&w->rs) % maxw);
    if ((long)n > w->total - off)
      n = (size_t)(w->total - off);
    for (size_t i = 0; i < n; i++)
      b[i] = ms_byte((uint64_t)off + i, w->seed);
    ms_write(w->fd, b, n);
    off += (long)n;
    if ((int)(ms_rnd(&w->rs) % 100) < w->pause_pct)
      usleep((unsigned)(ms_rnd(&w->rs) % 300));
  }
  return NULL;
}

#ifndef _WIN32

typedef struct {
  hy__bufsrc src;
  long gets, puts;
  atomic_int fail_pct; /* this share of gets find no memory */
} ms_src;

static void *ms_get(hy__bufsrc *s) {
  ms_src *c = (ms_src *)s;
  int f = atomic_load(&c->fail_pct);
  if (f && (int)(test_rand() % 100) < f)
    return NULL;
  c->gets++;
  return hy__mem_alloc(s->size); /* the port's contract: hy__mem */
}

static void ms_put(hy__bufsrc *s, void *b) {
  ms_src *c = (ms_src *)s;
  c->puts++;
  hy__mem_free(b);
}

static int ms_backend(void) {
  const char *b = test_backend();
  if (b && strcmp(b, "uring") == 0)
    return HY__BACKEND_URING;
  if (b && strcmp(b, "epoll") == 0)
    return HY__BACKEND_EPOLL;
  return HY__BACKEND_AUTO;
}

static hy__port *ms_open(void) {
  hy__port *p = NULL;
  int rc = hy__port_open(&p, ms_backend(), NULL);
  if (rc == HY_ENOSYS)
    return NULL;
  ASSERT_OK(rc);
  return p;
}

static void ms_pair(int *client, int *server) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT(l >= 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  ASSERT_EQ(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
  ASSERT_EQ(listen(l, 1), 0);
  ASSERT_EQ(getsockname(l, (struct sockaddr *)&sa, &sl), 0);
  *client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(connect(*client, (struct sockaddr *)&sa, sizeof sa), 0);
  *server = accept(l, NULL, NULL);
  ASSERT(*server >= 0);
  close(l);
  int one = 1;
  setsockopt(*client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void ms_start(hy__port *p, hy__op *op, int fd, ms_src *src) {
  memset(op, 0, sizeof *op);
  op->kind = HY__OP_RECV;
  op->fd = fd;
  op->addr = &src->src;
  op->flags = HY__RECV_OWNED | HY__RECV_MULTI;
  ASSERT_OK(hy__port_start(p, op));
}

/* What the reader saw of one stream. */
typedef struct {
  hy__op op;
  int fd, inflight, eof;
  unsigned seed;
  uint64_t got;
  long more, lasts, again;
} ms_stream;

/* Handles one completion of st's op: checks and counts the bytes, gives
 * the buffer back, starts the op again after a last completion that is
 * not the end.  Returns the completion's res. */
static int64_t ms_handle(hy__port *p, ms_stream *st, ms_src *src) {
  hy__op *op = &st->op;
  int64_t res = op->res;
  int more = (op->flags & HY__OP_MORE) != 0;
  if (res > 0) {
    ASSERT(op->buf != NULL);
    const unsigned char *b = op->buf;
    for (int64_t i = 0; i < res; i++)
      if (b[i] != ms_byte(st->got + (uint64_t)i, st->seed))
        TEST_FAIL_("stream %u: byte %llu wrong", st->seed,
                   (unsigned long long)(st->got + (uint64_t)i));
    st->got += (uint64_t)res;
    ms_put(&src->src, op->buf);
  } else {
    ASSERT(op->buf == NULL);
    ASSERT(!more); /* only data keep the op in flight */
  }
  if (more) {
    st->more++;
    return res;
  }
  st->lasts++;
  st->inflight = 0;
  if (res == HY_EAGAIN)
    st->again++;
  if (res == 0)
    st->eof = 1;
  else if (res > 0 || res == HY_EAGAIN)
    ms_start(p, op, st->fd, src), st->inflight = 1;
  return res;
}

/* One stream, read by one multishot op while a thread writes it: every
 * byte once and in order, the op staying in flight across chunks
 * (io_uring), and the end of the stream as its last completion. */
static int ms_one_stream(hy__port *p, ms_src *src, long total, size_t maxw,
                         int pause_pct, int slow_reader, ms_stream *st) {
  int cfd, sfd;
  ms_pair(&cfd, &sfd);
  ASSERT_OK(hy__port_associate(p, sfd));
  memset(st, 0, sizeof *st);
  st->fd = sfd;
  st->seed = (unsigned)(test_rand() % 1000);
  ms_start(p, &st->op, sfd, src);
  st->inflight = 1;
  ms_writer w = {cfd, st->seed, total, maxw, pause_pct, test_rand()};
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, ms_writer_main, &w), 0);
  int64_t until = hy_now() + HY_SEC(60);
  long peak = 0, seen = 0;
  while (!st->eof && hy_now() < until) {
    hy__op *got[8];
    int n = hy__port_wait(p, got, slow_reader ? 1 : 8, HY_MS(50));
    ASSERT_GE(n, 0);
    ASSERT_LE(n, 1); /* one op: at most one completion per wait */
    if (n == 1) {
      ASSERT(got[0] == &st->op);
      int64_t res = ms_handle(p, st, src);
      ASSERT(res >= 0 || res == HY_EAGAIN);
    }
    if (st->got == (uint64_t)total && w.fd >= 0) {
      pthread_join(th, NULL);
      shutdown(cfd, SHUT_WR); /* the end follows the data */
      w.fd = -1;
    }
    long held = src->gets - src->puts;
    if (held > peak)
      peak = held;
    if (slow_reader == 1 && n == 1 && ++seen % 4096 == 0)
      usleep(2000);
    if (slow_reader == 2 && n == 1)
      usleep(400);
  }
  ASSERT(st->eof);
  ASSERT_EQ(st->got, (uint64_t)total);
  ASSERT(!st->inflight);
  hy__port_forget(p, sfd);
  close(sfd);
  close(cfd);
  return (int)peak;
}

/* Many chunks in order on one op; a reader slower than the writer is
 * throttled (the port stops the op when chunks pile up, and the buffers
 * held stay bounded: the ring's and a few more); a source that finds no
 * memory leaves the ring dry (ENOBUFS ends the op: HY_EAGAIN, started
 * again, nothing lost). */
TEST_IMPL(net_port_multishot_recv) {
  hy__port *p = ms_open();
  if (!p)
    RETURN_SKIP("backend not available here");
  int uring = strcmp(hy__port_backend_name(p), "uring") == 0;
  enum { B = 256, RING = 128 };
  ms_src src = {{ms_get, ms_put, B, 0}, 0, 0, 0};
  ms_stream st;

  /* Paced chunks: many completions of one op. */
  ms_one_stream(p, &src, 200000, 700, 30, 0, &st);
  if (uring && st.more == 0)
    RETURN_SKIP("this kernel has no multishot receive (Linux < 6.0)");
  if (!uring)
    ASSERT_EQ(st.more, 0); /* the flag is ignored: one completion each */
  long lent = src.gets - src.puts; /* io_uring's ring */
  ASSERT_LE(lent, RING);

  /* A reader that takes one completion per wait and sleeps now and then,
   * a writer as fast as it goes: the chunks the port keeps for the op
   * stay bounded (without the stop they would grow with the stream). */
  long peak = ms_one_stream(p, &src, 4 << 20, 16384, 0, 1, &st);
  ASSERT_LE(peak, 3 * RING);
  if (uring)
    ASSERT_GT(st.again, 0); /* ended (the ring ran dry) and started again */
  /* A writer a few times faster than the reader, but not so fast that the
   * ring runs dry between two waits: the port stops the op itself (each
   * start of it may still take at once what waits in the socket, up to a
   * ring's worth; without the stop the chunks grow with the stream). */
  peak = ms_one_stream(p, &src, 300000, 512, 100, 2, &st);
  ASSERT_LE(peak, 2 * RING + 16);
  if (uring)
    ASSERT_GT(st.again, 0);

  /* Dry ring (io_uring's alone: elsewhere a source without memory fails
   * the receive): the source fails every get from now on for a while, so
   * the slots the data take are not refilled; the op ends with ENOBUFS
   * (HY_EAGAIN) and, started again, reads on once there is memory. */
  if (!uring) {
    hy__port_close(p);
    return 0;
  }
  int cfd, sfd;
  ms_pair(&cfd, &sfd);
  ASSERT_OK(hy__port_associate(p, sfd));
  memset(&st, 0, sizeof st);
  st.fd = sfd;
  st.seed = 77;
  ms_start(p, &st.op, sfd, &src);
  st.inflight = 1;
  atomic_store(&src.fail_pct, 100);
  long total = 4L * RING * B; /* more than the ring holds */
  ms_writer w = {cfd, st.seed, total, 200, 20, test_rand()};
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, ms_writer_main, &w), 0);
  int64_t until = hy_now() + HY_SEC(60);
  long again_dry = 0;
  while (st.got < (uint64_t)total && hy_now() < until) {
    hy__op *got;
    int n = hy__port_wait(p, &got, 1, HY_MS(20));
    ASSERT_GE(n, 0);
    if (n == 0) {
      if (!st.inflight) /* never: every end is started again */
        TEST_FAIL_("%s", "op not in flight");
      continue;
    }
    long before = st.again;
    ms_handle(p, &st, &src);
    if (st.again > before && atomic_load(&src.fail_pct)) {
      /* Ended while the ring was being drained: memory comes back. */
      if (++again_dry >= 3)
        atomic_store(&src.fail_pct, 0);
    }
    if (st.got > (uint64_t)(2 * RING * B))
      atomic_store(&src.fail_pct, 0);
  }
  pthread_join(th, NULL);
  ASSERT_EQ(st.got, (uint64_t)total);
  ASSERT_GT(again_dry, 0);
  atomic_store(&src.fail_pct, 0);
  /* The end, once the op is in flight. */
  if (!st.inflight)
    ms_start(p, &st.op, sfd, &src), st.inflight = 1;
  shutdown(cfd, SHUT_WR);
  while (!st.eof && hy_now() < until) {
    hy__op *got;
    if (hy__port_wait(p, &got, 1, HY_MS(20)) == 1)
      ms_handle(p, &st, &src);
  }
  ASSERT(st.eof);
  hy__port_forget(p, sfd);
  close(sfd);
  close(cfd);
  ASSERT_LE(src.gets - src.puts, RING);
  hy__port_close(p); /* the ring's buffers are freed (ASan checks) */
  return 0;
}

/* Cancel while armed: an idle op ends with HY_ECANCELED alone; one with
 * chunks already queued hands them over first (nothing read is lost),
 * then ends; a forget (the fd's close) ends an armed op the same way; the
 * peer's reset ends it with an error after the data it sent. */
TEST_IMPL(net_port_multishot_recv_cancel) {
  hy__port *p = ms_open();
  if (!p)
    RETURN_SKIP("backend not available here");
  enum { B = 512 };
  ms_src src = {{ms_get, ms_put, B, 0}, 0, 0, 0};
  int cfd, sfd;
  ms_pair(&cfd, &sfd);
  ASSERT_OK(hy__port_associate(p, sfd));
  ms_stream st;
  memset(&st, 0, sizeof st);
  st.fd = sfd;
  st.seed = 5;

  /* Idle. */
  ms_start(p, &st.op, sfd, &src);
  hy__op *got;
  ASSERT_EQ(hy__port_wait(p, &got, 1, HY_MS(10)), 0);
  ASSERT_OK(hy__port_cancel(p, &st.op));
  int64_t until = hy_now() + HY_SEC(10);
  while (hy__port_wait(p, &got, 1, HY_MS(20)) == 0 && hy_now() < until) {
  }
  ASSERT(got == &st.op);
  ASSERT_EQ(st.op.res, HY_ECANCELED);
  ASSERT_EQ(st.op.flags & HY__OP_MORE, 0);
  ASSERT(st.op.buf == NULL);
  ASSERT_EQ(hy__port_wait(p, &got, 1, HY_MS(10)), 0);

  /* Chunks queued, then a cancel: rounds of random sizes and timing. */
  unsigned char b[4096];
  uint64_t sent = 0;
  for (int round = 0; round < 40; round++) {
    ms_start(p, &st.op, sfd, &src);
    st.inflight = 1;
    int k = 1 + (int)(test_rand() % 6);
    for (int i = 0; i < k; i++) {
      size_t n = 1 + (size_t)(test_rand() % sizeof b);
      for (size_t j = 0; j < n; j++)
        b[j] = ms_byte(sent + j, st.seed);
      ms_write(cfd, b, n);
      sent += n;
      usleep((unsigned)(test_rand() % 500));
    }
    if (test_rand() % 2) /* some reaped (queued as shots) before */
      hy__port_wait(p, &got, 0, 0);
    ASSERT_OK(hy__port_cancel(p, &st.op));
    until = hy_now() + HY_SEC(10);
    while (st.inflight && hy_now() < until) {
      if (hy__port_wait(p, &got, 1, HY_MS(20)) != 1)
        continue;
      int64_t res = st.op.res;
      int more = (st.op.flags & HY__OP_MORE) != 0;
      if (res > 0) {
        for (int64_t i = 0; i < res; i++)
          ASSERT_EQ(((unsigned char *)st.op.buf)[i],
                    ms_byte(st.got + (uint64_t)i, st.seed));
        st.got += (uint64_t)res;
        ms_put(&src.src, st.op.buf);
      } else {
        ASSERT(res == HY_ECANCELED || res == HY_EAGAIN);
        ASSERT(!more);
        ASSERT(st.op.buf == NULL);
      }
      if (!more)
        st.inflight = 0;
    }
    ASSERT(!st.inflight);
  }
  /* What the cancels left in the socket is read on by a new op. */
  ms_start(p, &st.op, sfd, &src);
  st.inflight = 1;
  until = hy_now() + HY_SEC(10);
  while (st.got < sent && hy_now() < until)
    if (hy__port_wait(p, &got, 1, HY_MS(20)) == 1)
      ms_handle(p, &st, &src);
  ASSERT_EQ(st.got, sent);

  /* Forget (the close of the fd) with the op armed. */
  ASSERT(st.inflight);
  hy__port_forget(p, sfd);
  until = hy_now() + HY_SEC(10);
  while (hy__port_wait(p, &got, 1, HY_MS(20)) == 0 && hy_now() < until) {
  }
  ASSERT(got == &st.op);
  ASSERT_EQ(st.op.res, HY_ECANCELED);
  ASSERT_EQ(st.op.flags & HY__OP_MORE, 0);
  close(sfd);
  close(cfd);

  /* The peer resets after sending: its data, then an error, never a
   * completion after the last. */
  ms_pair(&cfd, &sfd);
  ASSERT_OK(hy__port_associate(p, sfd));
  memset(&st, 0, sizeof st);
  st.fd = sfd;
  st.seed = 9;
  ms_start(p, &st.op, sfd, &src);
  st.inflight = 1;
  for (size_t j = 0; j < 1000; j++)
    b[j] = ms_byte(j, st.seed);
  ms_write(cfd, b, 1000);
  until = hy_now() + HY_SEC(10);
  while (st.got < 1000 && hy_now() < until)
    if (hy__port_wait(p, &got, 1, HY_MS(20)) == 1)
      ms_handle(p, &st, &src);
  ASSERT_EQ(st.got, 1000);
  sock_close_reset(cfd);
  until = hy_now() + HY_SEC(10);
  int64_t last = 1;
  while (st.inflight && hy_now() < until) {
    if (hy__port_wait(p, &got, 1, HY_MS(20)) != 1)
      continue;
    last = st.op.res;
    ASSERT(last <= 0 || last == HY_EAGAIN);
    if (last == HY_EAGAIN || !(st.op.flags & HY__OP_MORE))
      st.inflight = 0;
    if (last == HY_EAGAIN) /* ended: start again, the reset comes next */
      ms_start(p, &st.op, sfd, &src), st.inflight = 1;
  }
  ASSERT(!st.inflight);
  ASSERT(last == HY_ECONNRESET || last == 0);
  ASSERT_EQ(hy__port_wait(p, &got, 1, HY_MS(20)), 0);
  hy__port_forget(p, sfd);
  close(sfd);
  ASSERT_LE(src.gets - src.puts, 128);
  hy__port_close(p);
  return 0;
}

#else /* _WIN32 */

TEST_IMPL(net_port_multishot_recv) {
  RETURN_SKIP("IOCP posts each receive with its own buffer: no pooled reads");
}
TEST_IMPL(net_port_multishot_recv_cancel) {
  RETURN_SKIP("IOCP posts each receive with its own buffer: no pooled reads");
}

#endif
