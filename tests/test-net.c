/* test-net.c - addresses, TCP/UDP in task style, select arms, and the
 * callback server, on real loopback sockets (127.0.0.1 and ::1).  Ports are
 * always 0 (the OS picks) and read back with getsockname. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#ifndef _WIN32
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "sock_compat.h"
#include "compat.h"
#include "hydra.h"
#include "alloc/mem.h"
#include "net/internal.h"
#include "net/sock.h"
#include "runtime/port.h"
#include "runtime/wait.h"
#include "runner.h"
#include "rt_util.h"
#include "test.h"

static hy_runtime_t *new_rt(int workers) { return test_rt_new(workers); }

static void close_rt(hy_runtime_t *rt) {
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(100)));
  ASSERT_OK(hy_runtime_close(rt));
}

/* Runs fn(arg) as a task and returns what it returned. */
static void *run_task(hy_runtime_t *rt, hy_task_fn fn, void *arg) {
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, fn, arg, NULL, &t));
  void *r = NULL;
  ASSERT_OK(hy_task_join(rt, t, &r));
  return r;
}

static int have_ipv6(void) {
  int fd = sock_open(AF_INET6, SOCK_STREAM);
  if (fd < 0)
    return 0;
  struct sockaddr_in6 a;
  memset(&a, 0, sizeof a);
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
  sock_close(fd);
  return ok;
}

static hy_addr_t loop_addr(int six) {
  hy_addr_t a;
  ASSERT_OK(hy_addr_parse(six ? "[::1]:0" : "127.0.0.1:0", &a));
  return a;
}

/* One select arm, waited on through the awaitable contract directly (the
 * way hy_select drives it), with a deadline. */
static int wait_arm(hy_runtime_t *rt, hy_arm_t *a, hy_time_t deadline) {
  hy__wait w;
  int rc = hy__wait_init(&w, rt);
  if (rc < 0)
    return rc;
  hy__lock_t *lk = a->ops->lock_of(a->obj);
  hy__lock(lk);
  int result = 0;
  if (a->ops->try_fire(a->obj, a, &result)) {
    hy__unlock(lk);
    ASSERT(hy__wait_claim(&w, 0));
    hy__wait_fini(&w);
    return result;
  }
  hy__waiter wr;
  memset(&wr, 0, sizeof wr);
  wr.wait = &w;
  a->ops->enqueue(a->obj, a, &wr);
  hy__unlock(lk);
  int st = hy__wait_park(&w, deadline);
  hy__lock(lk);
  a->ops->dequeue(a->obj, a, &wr);
  hy__unlock(lk);
  hy__wait_fini(&w);
  return st >= 0 ? w.result : st == HY__FIRED_TIMEOUT ? HY_ETIMEDOUT
                                                      : HY_ECANCELED;
}

/* test_rand() is for one thread at a time: concurrent clients draw from
 * their own generators, seeded from it before they start. */
static uint64_t rnd(uint64_t *s) {
  uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t seed_for(atomic_ulong *seq, uint64_t base) {
  return base ^ (atomic_fetch_add(seq, 1) + 1) * 0x9E3779B97F4A7C15ull;
}

/* ------------------------------------------------------------- addresses */

TEST_IMPL(net_addr_parse_format) {
  hy_addr_t a;
  char s[HY_ADDRSTRLEN];
  ASSERT_OK(hy_addr_parse("127.0.0.1:8080", &a));
  ASSERT_EQ(hy_addr_family(&a), HY_AF_INET);
  ASSERT_EQ(hy_addr_port(&a), 8080);
  ASSERT_EQ(hy_addr_format(&a, s, sizeof s), (int)strlen("127.0.0.1:8080"));
  ASSERT(strcmp(s, "127.0.0.1:8080") == 0);
  ASSERT_OK(hy_addr_parse("[::1]:443", &a));
  ASSERT_EQ(hy_addr_family(&a), HY_AF_INET6);
  ASSERT_EQ(hy_addr_port(&a), 443);
  ASSERT_OK(hy_addr_format(&a, s, sizeof s));
  ASSERT(strcmp(s, "[::1]:443") == 0);
  ASSERT_OK(hy_addr_parse("::ffff:10.0.0.1", &a));
  ASSERT_EQ(hy_addr_port(&a), 0);
  ASSERT_OK(hy_addr_parse("[fe80::1%1]:7", &a));
  ASSERT_OK(hy_addr_format(&a, s, sizeof s));
  ASSERT(strcmp(s, "[fe80::1%1]:7") == 0);
  /* A scope by interface name (POSIX; Windows takes numeric scopes only). */
#ifndef _WIN32
  ASSERT_OK(hy_addr_parse("[fe80::1%lo]:7", &a));
  ASSERT_OK(hy_addr_format(&a, s, sizeof s));
  char want[32];
  snprintf(want, sizeof want, "[fe80::1%%%u]:7", if_nametoindex("lo"));
  ASSERT(strcmp(s, want) == 0);
#endif
  ASSERT_ERR(hy_addr_parse("[fe80::1%no-such-if0]:7", &a), HY_EINVAL);
  ASSERT_OK(hy_addr_parse("10.1.2.3", &a));
  ASSERT_EQ(hy_addr_port(&a), 0);
  ASSERT_OK(hy_addr_set_port(&a, 65535));
  ASSERT_EQ(hy_addr_port(&a), 65535);
  ASSERT_ERR(hy_addr_set_port(&a, 65536), HY_EINVAL);
  hy_addr_t b;
  ASSERT_OK(hy_addr_from_ip("10.1.2.3", 65535, &b));
  ASSERT(hy_addr_equal(&a, &b));
  ASSERT_OK(hy_addr_set_port(&b, 1));
  ASSERT(!hy_addr_equal(&a, &b));
  /* Bad input is an error, never a crash. */
  const char *bad[] = {"", ":", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:-1",
                       "1.2.3.4:80x", "256.1.1.1:1", "[::1", "[::1]x",
                       "[]:1", "[1.2.3.4]:1", "host:80", "1.2.3:4:5",
                       "::g", "[::1]:99999", NULL};
  /* and one longer than any address (70 digits) */
  char longest[71];
  memset(longest, '1', sizeof longest - 1);
  longest[sizeof longest - 1] = 0;
  bad[sizeof bad / sizeof *bad - 1] = longest;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    if (hy_addr_parse(bad[i], &a) != HY_EINVAL)
      TEST_FAIL_("parsed bad address '%s'", bad[i]);
  }
  ASSERT_ERR(hy_addr_parse(NULL, &a), HY_EINVAL);
  memset(&a, 0, sizeof a);
  ASSERT_EQ(hy_addr_family(&a), HY_AF_UNSPEC);
  ASSERT_EQ(hy_addr_port(&a), -1);
  ASSERT_ERR(hy_addr_format(&a, s, sizeof s), HY_EINVAL);
  ASSERT_OK(hy_addr_parse("[::1]:443", &a));
  ASSERT_ERR(hy_addr_format(&a, s, 5), HY_ENOBUFS);
  /* The error record formats what failed, where and the OS code. */
  hy_net_error_t e;
  memset(&e, 0, sizeof e);
  e.op = "connect";
  e.code = HY_ECONNREFUSED;
  e.os_code = ECONNREFUSED;
  ASSERT_OK(hy_addr_parse("127.0.0.1:9", &e.addr));
  ASSERT_ERR(hy_net_error_format(&e, s, 16), HY_ENOBUFS);
  char line[256];
  ASSERT_GT(hy_net_error_format(&e, line, sizeof line), 0);
  ASSERT(strstr(line, "connect 127.0.0.1:9: HY_ECONNREFUSED") == line);
  char os[32];
  snprintf(os, sizeof os, "os %d", ECONNREFUSED);
  ASSERT(strstr(line, os) != NULL);
  return 0;
}

typedef struct {
  hy_runtime_t *rt;
  int n4, n6, nbad, nnum;
  hy_addr_t a4[4], a6[4], num[2];
} resolve_arg;

static void *resolve_task(void *p) {
  resolve_arg *r = p;
  r->n4 = hy_resolve(r->rt, "localhost", 80, HY_AF_INET, r->a4, 4);
  r->n6 = hy_resolve(r->rt, "localhost", 80, HY_AF_INET6, r->a6, 4);
  r->nbad = hy_resolve_until(r->rt, "no-such-host.invalid", 1, HY_AF_UNSPEC,
                             r->a4 + 2, 1, hy_deadline_in(HY_SEC(10)));
  r->nnum = hy_resolve(r->rt, "::1", 5, HY_AF_UNSPEC, r->num, 2);
  return NULL;
}

TEST_IMPL(net_resolve) {
  hy_runtime_t *rt = new_rt(2);
  resolve_arg r;
  memset(&r, 0, sizeof r);
  r.rt = rt;
  run_task(rt, resolve_task, &r);
  ASSERT_GE(r.n4, 1);
  ASSERT_EQ(hy_addr_family(&r.a4[0]), HY_AF_INET);
  ASSERT_EQ(hy_addr_port(&r.a4[0]), 80);
  char s[HY_ADDRSTRLEN];
  ASSERT_OK(hy_addr_format(&r.a4[0], s, sizeof s));
  ASSERT(strncmp(s, "127.", 4) == 0);
  ASSERT(r.n6 >= 1 || r.n6 == HY_ENOENT);
  ASSERT(r.nbad == HY_ENOENT || r.nbad == HY_EAGAIN || r.nbad == HY_ETIMEDOUT);
  ASSERT_EQ(r.nnum, 1);
  ASSERT_EQ(hy_addr_port(&r.num[0]), 5);
  ASSERT_ERR(hy_resolve(rt, NULL, 1, 0, r.num, 1), HY_EINVAL);
  ASSERT_ERR(hy_resolve(rt, "localhost", 70000, 0, r.num, 1), HY_EINVAL);
  /* From a foreign thread the lookup runs on the calling thread. */
  ASSERT_GE(hy_resolve(rt, "localhost", 1, HY_AF_INET, r.num, 1), 1);
  close_rt(rt);
  return 0;
}

/* hy_blocking and cancellation: fn(arg) runs exactly once when the call
 * returns 0 or HY_ECANCELED (cancelled before or during the call), never
 * otherwise - so arg, freed by fn, never leaks (ASan's leak check) and is
 * never freed twice. */
typedef struct {
  hy_runtime_t *rt;
  atomic_int ran;       /* fn calls */
  atomic_int owed;      /* calls that returned 0 or HY_ECANCELED */
  atomic_int other;     /* any other return */
  atomic_int started;
} bown_t;

typedef struct {
  bown_t *b;
  int pre_cancel;
  uint64_t seed; /* test_rand is the main thread's only */
} bown_arg;

static void *bown_fn(void *p) {
  bown_arg *a = p;
  if (rnd(&a->seed) % 2)
    usleep((useconds_t)(rnd(&a->seed) % 300));
  atomic_fetch_add(&a->b->ran, 1);
  free(a);
  return (void *)1;
}

static void *bown_task(void *p) {
  bown_arg *a = p;
  bown_t *b = a->b;
  atomic_fetch_add(&b->started, 1);
  if (a->pre_cancel)
    hy_task_cancel(b->rt, hy_task_self(b->rt));
  else if (rnd(&a->seed) % 2)
    hy_yield(b->rt);
  void *r = NULL;
  int rc = hy_blocking(b->rt, bown_fn, a, &r); /* a belongs to fn now */
  if (rc == 0) {
    ASSERT_EQ((intptr_t)r, 1);
    atomic_fetch_add(&b->owed, 1);
  } else if (rc == HY_ECANCELED) {
    atomic_fetch_add(&b->owed, 1);
  } else {
    atomic_fetch_add(&b->other, 1);
  }
  return NULL;
}

TEST_IMPL(net_blocking_cancel_ownership) {
  hy_runtime_t *rt = new_rt(2);
  bown_t b;
  memset(&b, 0, sizeof b);
  b.rt = rt;
  enum { N = 400 };
  hy_task_t t[N];
  for (int i = 0; i < N; i++) {
    bown_arg *a = malloc(sizeof *a);
    ASSERT(a != NULL);
    a->b = &b;
    a->pre_cancel = i % 4 == 0; /* cancelled before hy_blocking queues */
    a->seed = test_rand() | 1;
    ASSERT_OK(hy_task_spawn(rt, bown_task, a, NULL, &t[i]));
    if (test_rand() % 3 == 0)
      hy_task_cancel(rt, t[i]); /* before, during or after the call */
    if (test_rand() % 8 == 0)
      usleep((useconds_t)(test_rand() % 200));
  }
  for (int i = 0; i < N; i++) {
    if (test_rand() % 3 == 0)
      hy_task_cancel(rt, t[i]);
    ASSERT_OK(hy_task_join(rt, t[i], NULL));
  }
  ASSERT_EQ(atomic_load(&b.other), 0);
  ASSERT_EQ(atomic_load(&b.owed), N);
  /* Every call that returned owes one run of fn; the pool finishes them. */
  hy_time_t until = hy_deadline_in(HY_SEC(20));
  while (atomic_load(&b.ran) < N && hy_now() < until)
    usleep(1000);
  ASSERT_EQ(atomic_load(&b.ran), N);
  close_rt(rt);
  return 0;
}

/* Name lookups cut short by cancels (the caller's, and the shutdown's
 * cancel phase, which cancels the helper tasks that queue getaddrinfo)
 * leak no lookup record: ASan's leak check at exit fails the test if one
 * does. */
static void *resolve_cancel_task(void *p) {
  hy_runtime_t *rt = p;
  hy_addr_t a[2];
  for (int i = 0; i < 4; i++) {
    int n = hy_resolve_until(rt, "localhost", 80, HY_AF_INET, a, 2,
                             hy_deadline_in(HY_SEC(30)));
    ASSERT(n >= 1 || n == HY_ECANCELED || n == HY_ESHUTDOWN);
    if (n < 0)
      break;
  }
  return NULL;
}

TEST_IMPL(net_resolve_cancel_no_leak) {
  for (int round = 0; round < 6; round++) {
    hy_runtime_t *rt = new_rt(2);
    enum { N = 40 };
    hy_task_t t[N];
    for (int i = 0; i < N; i++)
      ASSERT_OK(hy_task_spawn(rt, resolve_cancel_task, rt, NULL, &t[i]));
    usleep((useconds_t)(test_rand() % 3000));
    for (int i = 0; i < N; i++)
      if (test_rand() % 2)
        hy_task_cancel(rt, t[i]);
    usleep((useconds_t)(test_rand() % 2000));
    /* The rest are cancelled by the shutdown, some of them with their
     * helper task about to queue the lookup. */
    ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(1)));
    ASSERT_OK(hy_runtime_close(rt));
  }
  return 0;
}

/* ------------------------------------------------------ TCP echo, tasks */

typedef struct {
  hy_runtime_t *rt;
  hy_listener_t *l;
  hy_addr_t addr;
  atomic_long conns, bytes;
  int six;
} echo_srv;

static void *echo_conn_task(void *p) {
  echo_srv *e = ((void **)p)[0];
  hy_conn_t *c = ((void **)p)[1];
  free(p);
  size_t cap = 16384;
  char *buf = malloc(cap);
  ASSERT(buf);
  for (;;) {
    int n = hy_conn_read(c, buf, cap);
    if (n <= 0)
      break;
    atomic_fetch_add(&e->bytes, n);
    if (hy_conn_write_all(c, buf, (size_t)n, NULL) != n)
      break;
  }
  free(buf);
  hy_conn_close(c);
  return NULL;
}

static void *echo_accept_task(void *p) {
  echo_srv *e = p;
  for (;;) {
    hy_conn_t *c;
    int rc = hy_tcp_accept(e->l, &c);
    if (rc == HY_ECANCELED || rc == HY_ECLOSED)
      break;
    if (rc < 0) {
      hy_sleep(e->rt, HY_MS(5));
      continue;
    }
    atomic_fetch_add(&e->conns, 1);
    void **pair = malloc(2 * sizeof(void *));
    ASSERT(pair);
    pair[0] = e;
    pair[1] = c;
    ASSERT_OK(hy_task_spawn(e->rt, echo_conn_task, pair, NULL, NULL));
  }
  return NULL;
}

static hy_task_t start_echo(echo_srv *e, hy_runtime_t *rt, int six) {
  memset(e, 0, sizeof *e);
  e->rt = rt;
  e->six = six;
  hy_addr_t a = loop_addr(six);
  ASSERT_OK(hy_tcp_listen(rt, &a, NULL, &e->l));
  ASSERT_OK(hy_listener_addr(e->l, &e->addr));
  ASSERT_GT(hy_addr_port(&e->addr), 0);
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, echo_accept_task, e, NULL, &t));
  return t;
}

static void stop_echo(echo_srv *e, hy_task_t t) {
  ASSERT_OK(hy_listener_close(e->l));
  ASSERT_OK(hy_task_join(e->rt, t, NULL));
}

static void fill(unsigned char *b, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    b[i] = (unsigned char)((i * 131u + seed * 7u) ^ (i >> 8));
}

typedef struct {
  echo_srv *e;
  size_t size;
  unsigned seed;
  int ok;
} client_arg;

/* Sends size bytes and reads them back; a second task would be needed to
 * write and read at once for sizes past the socket buffers, so the client
 * writes from a helper task. */
typedef struct {
  hy_conn_t *c;
  const unsigned char *b;
  size_t n;
  int rc;
} writer_arg;

static void *writer_task(void *p) {
  writer_arg *w = p;
  w->rc = hy_conn_write_all(w->c, w->b, w->n, NULL);
  return NULL;
}

static void *echo_client_task(void *p) {
  client_arg *a = p;
  hy_runtime_t *rt = a->e->rt;
  hy_conn_t *c;
  ASSERT_OK(hy_tcp_connect(rt, &a->e->addr, &c));
  ASSERT_OK(hy_conn_set_nodelay(c, 1));
  unsigned char *out = malloc(a->size + 1), *in = malloc(a->size + 1);
  ASSERT(out && in);
  fill(out, a->size, a->seed);
  writer_arg w = {c, out, a->size, 0};
  hy_task_t wt;
  ASSERT_OK(hy_task_spawn(rt, writer_task, &w, NULL, &wt));
  size_t got = 0;
  ASSERT_EQ(hy_conn_read_exactly(c, in, a->size, &got), (int)a->size);
  ASSERT_EQ(got, a->size);
  ASSERT_OK(hy_task_join(rt, wt, NULL));
  ASSERT_EQ(w.rc, (int)a->size);
  ASSERT(memcmp(in, out, a->size) == 0);
  ASSERT_OK(hy_conn_shutdown_write(c));
  /* The server sees end of stream, closes; we see it too. */
  ASSERT_EQ(hy_conn_read(c, in, 1), 0);
  ASSERT_OK(hy_conn_close(c)); /* c may be freed from here on */
  free(out);
  free(in);
  a->ok = 1;
  return NULL;
}

static void echo_sizes(int six) {
  hy_runtime_t *rt = new_rt(2);
  echo_srv e;
  hy_task_t at = start_echo(&e, rt, six);
  size_t sizes[] = {1, 2, 100, 1460, 4096, 65536, 100000, 1 << 20, 4 << 20};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    client_arg a = {&e, sizes[i], (unsigned)i, 0};
    run_task(rt, echo_client_task, &a);
    ASSERT(a.ok);
  }
  long total = 0;
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
    total += (long)sizes[i];
  ASSERT_EQ(atomic_load(&e.bytes), total);
  ASSERT_EQ(atomic_load(&e.conns), (long)(sizeof sizes / sizeof *sizes));
  stop_echo(&e, at);
  close_rt(rt);
}

TEST_IMPL(net_tcp_echo_sizes_v4) {
  echo_sizes(0);
  return 0;
}

TEST_IMPL(net_tcp_echo_sizes_v6) {
  if (!have_ipv6())
    RETURN_SKIP("no IPv6 loopback (::1) on this machine");
  echo_sizes(1);
  return 0;
}

/* -------------------------------------------------- connect: refused, timeout */

typedef struct {
  hy_runtime_t *rt;
  hy_addr_t to;
  int rc;
  int64_t took;
  hy_net_error_t err;
} conn_arg;

static void *connect_task(void *p) {
  conn_arg *a = p;
  hy_conn_t *c = NULL;
  int64_t t0 = hy_now();
  a->rc = hy_tcp_connect_until(a->rt, &a->to, hy_deadline_in(HY_MS(200)), &c);
  a->took = hy_now() - t0;
  if (c)
    hy_conn_close(c);
  return NULL;
}

TEST_IMPL(net_tcp_connect_refused) {
  hy_runtime_t *rt = new_rt(1);
  /* A port that was just free: bind, read the port, close. */
  int fd = sock_open(AF_INET, SOCK_STREAM);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  socklen_t len = sizeof sa;
  getsockname(fd, (struct sockaddr *)&sa, &len);
  sock_close(fd);
  conn_arg a = {.rt = rt};
  ASSERT_OK(hy_addr_from_ip("127.0.0.1", ntohs(sa.sin_port), &a.to));
  run_task(rt, connect_task, &a);
  ASSERT_ERR(a.rc, HY_ECONNREFUSED);
  close_rt(rt);
  return 0;
}

TEST_IMPL(net_tcp_connect_timeout) {
  hy_runtime_t *rt = new_rt(1);
  /* A listener with a full accept queue that nobody accepts from: the
   * kernel drops further SYNs, so connects hang until their deadline. */
  int lfd = sock_open(AF_INET, SOCK_STREAM);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  ASSERT_EQ(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
  ASSERT_EQ(listen(lfd, 0), 0);
  socklen_t len = sizeof sa;
  getsockname(lfd, (struct sockaddr *)&sa, &len);
  int timed_out = 0;
  for (int i = 0; i < 32 && !timed_out; i++) {
    conn_arg a = {.rt = rt};
    ASSERT_OK(hy_addr_from_ip("127.0.0.1", ntohs(sa.sin_port), &a.to));
    run_task(rt, connect_task, &a);
    if (a.rc == HY_ETIMEDOUT) {
      timed_out = 1;
      ASSERT_GE(a.took, HY_MS(200) - HY_MS(1)); /* never early */
      ASSERT_LT(a.took, HY_SEC(5));
    } else {
      ASSERT_OK(a.rc);
    }
  }
  ASSERT(timed_out);
  sock_close(lfd);
  close_rt(rt);
  return 0;
}

/* ---------------------------------------------- deadlines, cancel, close */

typedef struct {
  hy_runtime_t *rt;
  hy_addr_t addr;
  hy_listener_t *l;
  hy_conn_t *c;       /* client side */
  hy_conn_t *s;       /* server side */
  int rc;
  int64_t took;
  atomic_int started;
} pair_arg;

static void *accept_one(void *p) {
  pair_arg *a = p;
  ASSERT_OK(hy_tcp_accept(a->l, &a->s));
  return NULL;
}

/* Connected pair c (client) <-> s (server), made from a task. */
static void make_pair(pair_arg *a, int six) {
  hy_addr_t la = loop_addr(six);
  ASSERT_OK(hy_tcp_listen(a->rt, &la, NULL, &a->l));
  ASSERT_OK(hy_listener_addr(a->l, &a->addr));
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(a->rt, accept_one, a, NULL, &t));
  ASSERT_OK(hy_tcp_connect(a->rt, &a->addr, &a->c));
  ASSERT_OK(hy_task_join(a->rt, t, NULL));
  ASSERT(a->s);
}

static void *deadline_task(void *p) {
  pair_arg *a = p;
  make_pair(a, 0);
  char b[16];
  for (int i = 0; i < 5; i++) {
    int64_t d = HY_MS(1 + (int)(test_rand() % 30));
    int64_t t0 = hy_now();
    ASSERT_ERR(hy_conn_read_until(a->c, b, sizeof b, t0 + d), HY_ETIMEDOUT);
    ASSERT_GE(hy_now() - t0, d); /* never early */
  }
  /* The connection still works after time-outs. */
  ASSERT_EQ(hy_conn_write_all(a->s, "ping", 4, NULL), 4);
  ASSERT_EQ(hy_conn_read_exactly_until(a->c, b, 4, NULL,
                                       hy_deadline_in(HY_SEC(5))), 4);
  ASSERT(memcmp(b, "ping", 4) == 0);
  /* Accept with a deadline. */
  hy_conn_t *none;
  int64_t t0 = hy_now();
  ASSERT_ERR(hy_tcp_accept_until(a->l, t0 + HY_MS(20), &none), HY_ETIMEDOUT);
  ASSERT_GE(hy_now() - t0, HY_MS(20));
  /* Two reads at once: the second is refused. */
  hy_io_t io;
  ASSERT_OK(hy_conn_read_start(a->c, &io, b, sizeof b));
  ASSERT_ERR(hy_conn_read(a->c, b, 1), HY_EBUSY);
  ASSERT_ERR(hy_io_wait(&io, hy_deadline_in(HY_MS(10))), HY_ETIMEDOUT);
  ASSERT(!hy_io_done(&io));
  ASSERT_OK(hy_io_cancel(&io));
  ASSERT_ERR(hy_io_wait(&io, HY_FOREVER), HY_ECANCELED);
  hy_conn_close(a->c);
  hy_conn_close(a->s);
  hy_listener_close(a->l);
  return NULL;
}

TEST_IMPL(net_tcp_deadlines) {
  hy_runtime_t *rt = new_rt(2);
  pair_arg a;
  memset(&a, 0, sizeof a);
  a.rt = rt;
  run_task(rt, deadline_task, &a);
  close_rt(rt);
  return 0;
}

static void *blocked_reader(void *p) {
  pair_arg *a = p;
  char b[16];
  atomic_store(&a->started, 1);
  int64_t t0 = hy_now();
  a->rc = hy_conn_read(a->c, b, sizeof b);
  a->took = hy_now() - t0;
  return NULL;
}

static void *close_pending_task(void *p) {
  pair_arg *a = p;
  make_pair(a, 0);
  for (int round = 0; round < 20; round++) {
    if (round) {
      /* A fresh pair each round; memory of the old one is reused at once
       * (ASan sees a use after free if a pending op outlived close). */
      hy_listener_close(a->l);
      hy_conn_close(a->s);
      a->s = NULL;
      make_pair(a, 0);
    }
    atomic_store(&a->started, 0);
    hy_task_t r;
    ASSERT_OK(hy_task_spawn(a->rt, blocked_reader, a, NULL, &r));
    while (!atomic_load(&a->started))
      hy_yield(a->rt);
    hy_sleep(a->rt, HY_US(test_rand() % 2000));
    ASSERT_OK(hy_conn_close(a->c));
    ASSERT_OK(hy_task_join(a->rt, r, NULL));
    ASSERT_ERR(a->rc, HY_ECANCELED);
  }
  hy_listener_close(a->l);
  hy_conn_close(a->s);
  return NULL;
}

TEST_IMPL(net_tcp_close_with_pending_read) {
  hy_runtime_t *rt = new_rt(2);
  pair_arg a;
  memset(&a, 0, sizeof a);
  a.rt = rt;
  run_task(rt, close_pending_task, &a);
  close_rt(rt);
  return 0;
}

static void *cancel_task_body(void *p) {
  pair_arg *a = p;
  make_pair(a, 0);
  atomic_store(&a->started, 0);
  hy_task_t r;
  ASSERT_OK(hy_task_spawn(a->rt, blocked_reader, a, NULL, &r));
  while (!atomic_load(&a->started))
    hy_yield(a->rt);
  hy_sleep(a->rt, HY_MS(5));
  ASSERT_OK(hy_task_cancel(a->rt, r));
  ASSERT_OK(hy_task_join(a->rt, r, NULL));
  ASSERT_ERR(a->rc, HY_ECANCELED);
  /* The connection survives a cancelled read. */
  char b[4];
  ASSERT_EQ(hy_conn_write_all(a->s, "abcd", 4, NULL), 4);
  ASSERT_EQ(hy_conn_read_exactly(a->c, b, 4, NULL), 4);
  ASSERT(memcmp(b, "abcd", 4) == 0);
  /* A closed listener fails a pending accept with HY_ECANCELED. */
  hy_conn_close(a->c);
  hy_conn_close(a->s);
  hy_listener_close(a->l);
  return NULL;
}

TEST_IMPL(net_tcp_cancel_read) {
  hy_runtime_t *rt = new_rt(2);
  pair_arg a;
  memset(&a, 0, sizeof a);
  a.rt = rt;
  run_task(rt, cancel_task_body, &a);
  close_rt(rt);
  return 0;
}

static void *pending_accept(void *p) {
  pair_arg *a = p;
  hy_conn_t *c;
  atomic_store(&a->started, 1);
  a->rc = hy_tcp_accept(a->l, &c);
  return NULL;
}

static void *listener_close_body(void *p) {
  pair_arg *a = p;
  hy_addr_t la = loop_addr(0);
  ASSERT_OK(hy_tcp_listen(a->rt, &la, NULL, &a->l));
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(a->rt, pending_accept, a, NULL, &t));
  while (!atomic_load(&a->started))
    hy_yield(a->rt);
  hy_sleep(a->rt, HY_MS(2));
  ASSERT_OK(hy_listener_close(a->l));
  ASSERT_OK(hy_task_join(a->rt, t, NULL));
  ASSERT_ERR(a->rc, HY_ECANCELED);
  return NULL;
}

TEST_IMPL(net_listener_close_pending_accept) {
  hy_runtime_t *rt = new_rt(2);
  pair_arg a;
  memset(&a, 0, sizeof a);
  a.rt = rt;
  run_task(rt, listener_close_body, &a);
  close_rt(rt);
  return 0;
}

/* ------------------------------------------------- half-close, reset */

static void *half_close_body(void *p) {
  pair_arg *a = p;
  make_pair(a, 0);
  ASSERT_EQ(hy_conn_write_all(a->c, "question", 8, NULL), 8);
  ASSERT_OK(hy_conn_shutdown_write(a->c));
  char b[64];
  size_t got;
  ASSERT_EQ(hy_conn_read_exactly(a->s, b, 8, &got), 8);
  /* The server sees end of stream, and can still answer. */
  ASSERT_EQ(hy_conn_read(a->s, b, sizeof b), 0);
  ASSERT_ERR(hy_conn_read_exactly(a->s, b, 1, &got), HY_EOF);
  ASSERT_EQ(got, 0);
  ASSERT_EQ(hy_conn_write_all(a->s, "answer", 6, NULL), 6);
  hy_conn_close(a->s);
  ASSERT_ERR(hy_conn_read_exactly(a->c, b, 10, &got), HY_EOF);
  ASSERT_EQ(got, 6);
  ASSERT(memcmp(b, "answer", 6) == 0);
  hy_conn_close(a->c);
  hy_listener_close(a->l);
  return NULL;
}

TEST_IMPL(net_tcp_half_close) {
  hy_runtime_t *rt = new_rt(2);
  pair_arg a;
  memset(&a, 0, sizeof a);
  a.rt = rt;
  run_task(rt, half_close_body, &a);
  close_rt(rt);
  return 0;
}

static void *reset_writer(void *p) {
  pair_arg *a = p;
  size_t n = 64 << 20;
  char *big = calloc(1, n);
  ASSERT(big);
  size_t sent = 0;
  atomic_store(&a->started, 1);
  a->rc = hy_conn_write_all(a->c, big, n, &sent);
  ASSERT_LT(sent, n);
  free(big);
  return NULL;
}

static void *reset_body(void *p) {
  pair_arg *a = p;
  make_pair(a, 0);
  ASSERT_OK(hy_conn_set_buffers(a->c, 0, 64 * 1024));
  hy_task_t w;
  ASSERT_OK(hy_task_spawn(a->rt, reset_writer, a, NULL, &w));
  char b[4096];
  ASSERT_GT(hy_conn_read(a->s, b, sizeof b), 0); /* the writer is going */
  ASSERT_OK(hy_conn_abort(a->s));                /* RST mid-write */
  ASSERT_OK(hy_task_join(a->rt, w, NULL));
  if (a->rc != HY_ECONNRESET && a->rc != HY_EPIPE)
    TEST_FAIL_("writer got %s", hy_err_name(a->rc));
  hy_net_error_t e;
  ASSERT_OK(hy_net_last_error(a->c, HY_NET_CONN, &e));
  ASSERT(strcmp(e.op, "write") == 0);
  ASSERT_EQ(e.code, a->rc);
  /* Nothing else broke: a new pair on the same listener works. */
  hy_conn_close(a->c);
  a->s = NULL;
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(a->rt, accept_one, a, NULL, &t));
  ASSERT_OK(hy_tcp_connect(a->rt, &a->addr, &a->c));
  ASSERT_OK(hy_task_join(a->rt, t, NULL));
  ASSERT_EQ(hy_conn_write_all(a->c, "ok", 2, NULL), 2);
  ASSERT_EQ(hy_conn_read_exactly(a->s, b, 2, NULL), 2);
  hy_conn_close(a->c);
  hy_conn_close(a->s);
  hy_listener_close(a->l);
  return NULL;
}

TEST_IMPL(net_tcp_peer_reset_mid_write) {
  hy_runtime_t *rt = new_rt(2);
  pair_arg a;
  memset(&a, 0, sizeof a);
  a.rt = rt;
  run_task(rt, reset_body, &a);
  close_rt(rt);
  return 0;
}

static void *options_body(void *p) {
  pair_arg *a = p;
  make_pair(a, 0);
  ASSERT_OK(hy_conn_set_nodelay(a->c, 1));
  int fd_on = 0;
  ASSERT_OK(hy_conn_set_keepalive(a->c, 1, 30));
  ASSERT_OK(hy_conn_set_buffers(a->c, 32768, 32768));
  int r = 0, s = 0;
  ASSERT_OK(hy_conn_get_buffers(a->c, &r, &s));
  ASSERT_GE(r, 32768); /* Linux doubles what it is given */
  ASSERT_GE(s, 32768);
  (void)fd_on;
  hy_addr_t peer, local;
  ASSERT_OK(hy_conn_peer_addr(a->c, &peer));
  ASSERT(hy_addr_equal(&peer, &a->addr));
  ASSERT_OK(hy_conn_local_addr(a->s, &local));
  ASSERT(hy_addr_equal(&local, &a->addr));
  ASSERT_ERR(hy_conn_set_buffers(a->c, -1, 0), HY_EINVAL);
  hy_conn_close(a->c);
  hy_conn_close(a->s);
  hy_listener_close(a->l);
  /* Listening twice on one port without SO_REUSEPORT fails clearly. */
  hy_addr_t la = loop_addr(0);
  hy_listener_t *l1, *l2;
  ASSERT_OK(hy_tcp_listen(a->rt, &la, NULL, &l1));
  ASSERT_OK(hy_listener_addr(l1, &la));
  ASSERT_ERR(hy_tcp_listen(a->rt, &la, NULL, &l2), HY_EADDRINUSE);
  hy_listener_close(l1);
  /* With SO_REUSEPORT on both, two listeners share it. */
  hy_listen_opts_t o = HY_LISTEN_OPTS_INIT;
  o.reuseport = 1;
  la = loop_addr(0);
#ifdef _WIN32
  /* Windows has no SO_REUSEPORT: said so, not emulated. */
  ASSERT_ERR(hy_tcp_listen(a->rt, &la, &o, &l1), HY_ENOTSUP);
  return NULL;
#endif
  ASSERT_OK(hy_tcp_listen(a->rt, &la, &o, &l1));
  ASSERT_OK(hy_listener_addr(l1, &la));
  ASSERT_OK(hy_tcp_listen(a->rt, &la, &o, &l2));
  hy_listener_close(l1);
  hy_listener_close(l2);
  return NULL;
}

TEST_IMPL(net_tcp_options) {
  hy_runtime_t *rt = new_rt(1);
  pair_arg a;
  memset(&a, 0, sizeof a);
  a.rt = rt;
  run_task(rt, options_body, &a);
  close_rt(rt);
  return 0;
}

/* --------------------------------------------------------------- arms */

static void *arms_body(void *p) {
  pair_arg *a = p;
  make_pair(a, 0);
  /* Not readable: the arm waits until its deadline and leaves no trace. */
  hy_arm_t arm = hy_arm_conn_readable(a->c);
  int64_t t0 = hy_now();
  ASSERT_ERR(wait_arm(a->rt, &arm, t0 + HY_MS(20)), HY_ETIMEDOUT);
  ASSERT_GE(hy_now() - t0, HY_MS(20));
  /* Data comes later: the arm fires, and the data is all still there. */
  hy_io_t wio;
  ASSERT_OK(hy_conn_write_start(a->s, &wio, "hello", 5));
  ASSERT_OK(wait_arm(a->rt, &arm, hy_deadline_in(HY_SEC(5))));
  hy_arm_t done = hy_arm_io(&wio);
  ASSERT_EQ(wait_arm(a->rt, &done, hy_deadline_in(HY_SEC(5))), 5);
  ASSERT_EQ(hy_io_wait(&wio, HY_FOREVER), 5);
  char b[8];
  ASSERT_EQ(hy_conn_read(a->c, b, sizeof b), 5);
  /* A background read is an arm too. */
  hy_io_t rio;
  ASSERT_OK(hy_conn_read_start(a->c, &rio, b, sizeof b));
  hy_arm_t rarm = hy_arm_io(&rio);
  ASSERT_ERR(wait_arm(a->rt, &rarm, hy_deadline_in(HY_MS(10))), HY_ETIMEDOUT);
  ASSERT_EQ(hy_conn_write_all(a->s, "xy", 2, NULL), 2);
  ASSERT_EQ(wait_arm(a->rt, &rarm, hy_deadline_in(HY_SEC(5))), 2);
  ASSERT(memcmp(b, "xy", 2) == 0);
  /* Listener ready. */
  hy_arm_t larm = hy_arm_listener_ready(a->l);
  ASSERT_ERR(wait_arm(a->rt, &larm, hy_deadline_in(HY_MS(10))), HY_ETIMEDOUT);
  /* End of stream makes the readable arm fire too. */
  ASSERT_OK(hy_conn_shutdown_write(a->s));
  ASSERT_OK(wait_arm(a->rt, &arm, hy_deadline_in(HY_SEC(5))));
  ASSERT_EQ(hy_conn_read(a->c, b, sizeof b), 0);
  hy_conn_close(a->s);
  hy_conn_close(a->c);
  hy_listener_close(a->l);
  return NULL;
}

TEST_IMPL(net_select_arms) {
  hy_runtime_t *rt = new_rt(2);
  pair_arg a;
  memset(&a, 0, sizeof a);
  a.rt = rt;
  run_task(rt, arms_body, &a);
  close_rt(rt);
  return 0;
}


/* ------------------------------------------------------------------ UDP */

typedef struct {
  hy_runtime_t *rt;
  int six;
} udp_arg;

static void *udp_body(void *p) {
  udp_arg *a = p;
  hy_addr_t la = loop_addr(a->six);
  hy_udp_t *u1, *u2;
  ASSERT_OK(hy_udp_bind(a->rt, &la, 0, &u1));
  ASSERT_OK(hy_udp_bind(a->rt, &la, 0, &u2));
  hy_addr_t a1, a2, from;
  ASSERT_OK(hy_udp_local_addr(u1, &a1));
  ASSERT_OK(hy_udp_local_addr(u2, &a2));
  char b[2048], big[1500];
  fill((unsigned char *)big, sizeof big, 3);
  for (int i = 0; i < 50; i++) {
    size_t n = 1 + (size_t)(test_rand() % sizeof big);
    ASSERT_EQ(hy_udp_send_to(u1, big, n, &a2), (int)n);
    memset(&from, 0, sizeof from);
    ASSERT_EQ(hy_udp_recv_from_until(u2, b, sizeof b, &from,
                                     hy_deadline_in(HY_SEC(5))), (int)n);
    ASSERT(memcmp(b, big, n) == 0);
    ASSERT(hy_addr_equal(&from, &a1));
  }
  /* Truncation is reported, and the part that fit is delivered. */
  ASSERT_EQ(hy_udp_send_to(u1, big, 100, &a2), 100);
  memset(b, 0, sizeof b);
  ASSERT_ERR(hy_udp_recv_from(u2, b, 10, NULL), HY_EMSGSIZE);
  ASSERT(memcmp(b, big, 10) == 0);
  /* Nothing more queued: the deadline ends the receive, never early. */
  int64_t t0 = hy_now();
  ASSERT_ERR(hy_udp_recv_from_until(u2, b, sizeof b, NULL, t0 + HY_MS(15)),
             HY_ETIMEDOUT);
  ASSERT_GE(hy_now() - t0, HY_MS(15));
  /* Readable arm. */
  hy_arm_t arm = hy_arm_udp_readable(u2);
  ASSERT_ERR(wait_arm(a->rt, &arm, hy_deadline_in(HY_MS(5))), HY_ETIMEDOUT);
  ASSERT_EQ(hy_udp_send_to(u1, "z", 1, &a2), 1);
  ASSERT_OK(wait_arm(a->rt, &arm, hy_deadline_in(HY_SEC(5))));
  ASSERT_EQ(hy_udp_recv(u2, b, sizeof b), 1);
  /* Connected mode: send/recv without addresses; strangers are filtered. */
  ASSERT_OK(hy_udp_connect(u1, &a2));
  ASSERT_OK(hy_udp_connect(u2, &a1));
  ASSERT_EQ(hy_udp_send(u1, "abc", 3), 3);
  ASSERT_EQ(hy_udp_recv_until(u2, b, sizeof b, hy_deadline_in(HY_SEC(5))), 3);
  ASSERT(memcmp(b, "abc", 3) == 0);
  hy_udp_t *u3;
  ASSERT_OK(hy_udp_bind(a->rt, &la, 0, &u3));
  ASSERT_EQ(hy_udp_send_to(u3, "stranger", 8, &a2), 8);
  ASSERT_EQ(hy_udp_send(u1, "friend", 6), 6);
  ASSERT_EQ(hy_udp_recv(u2, b, sizeof b), 6);
  ASSERT(memcmp(b, "friend", 6) == 0);
  hy_udp_close(u3);
  ASSERT_OK(hy_udp_close(u1));
  hy_udp_close(u2);
  return NULL;
}

TEST_IMPL(net_udp_v4) {
  hy_runtime_t *rt = new_rt(2);
  udp_arg a = {rt, 0};
  run_task(rt, udp_body, &a);
  close_rt(rt);
  return 0;
}

TEST_IMPL(net_udp_v6) {
  if (!have_ipv6())
    RETURN_SKIP("no IPv6 loopback (::1) on this machine");
  hy_runtime_t *rt = new_rt(2);
  udp_arg a = {rt, 1};
  run_task(rt, udp_body, &a);
  close_rt(rt);
  return 0;
}

/* ------------------------------------------------ many connections */

typedef struct {
  echo_srv *e;
  int conns_per_task, rounds;
  atomic_long *sent, *echoed;
  uint64_t seed;
  atomic_ulong seq;
} stress_arg;

static void *stress_client(void *p) {
  stress_arg *a = p;
  hy_runtime_t *rt = a->e->rt;
  unsigned char out[8192], in[8192];
  uint64_t rs = seed_for(&a->seq, a->seed);
  for (int k = 0; k < a->conns_per_task; k++) {
    hy_conn_t *c;
    ASSERT_OK(hy_tcp_connect(rt, &a->e->addr, &c));
    for (int r = 0; r < a->rounds; r++) {
      size_t n = 1 + (size_t)(rnd(&rs) % sizeof out);
      fill(out, n, (unsigned)(k * 31 + r));
      ASSERT_EQ(hy_conn_write_all(c, out, n, NULL), (int)n);
      atomic_fetch_add(a->sent, (long)n);
      ASSERT_EQ(hy_conn_read_exactly_until(c, in, n, NULL,
                                           hy_deadline_in(HY_SEC(20))),
                (int)n);
      ASSERT(memcmp(in, out, n) == 0);
      atomic_fetch_add(a->echoed, (long)n);
    }
    hy_conn_close(c);
  }
  return NULL;
}

TEST_IMPL(net_tcp_stress_many_connections) {
  hy_runtime_t *rt = new_rt(2);
  echo_srv e;
  hy_task_t at = start_echo(&e, rt, 0);
  enum { TASKS = 64 };
  atomic_long sent = 0, echoed = 0;
  stress_arg a = {&e, 4, 8, &sent, &echoed, test_rand(), 0};
  hy_task_t t[TASKS];
  for (int i = 0; i < TASKS; i++)
    ASSERT_OK(hy_task_spawn(rt, stress_client, &a, NULL, &t[i]));
  for (int i = 0; i < TASKS; i++)
    ASSERT_OK(hy_task_join(rt, t[i], NULL));
  ASSERT_EQ(atomic_load(&sent), atomic_load(&echoed));
  /* Every byte went through the server exactly once. */
  int64_t until = hy_now() + HY_SEC(5);
  while (atomic_load(&e.bytes) != atomic_load(&sent) && hy_now() < until)
    hy_sleep(NULL, HY_MS(1));
  ASSERT_EQ(atomic_load(&e.bytes), atomic_load(&sent));
  ASSERT_EQ(atomic_load(&e.conns), TASKS * 4);
  stop_echo(&e, at);
  close_rt(rt);
  return 0;
}

/* 10,000 connections open at once, each echoing one message.  The clients
 * live in a child process, so each side needs 10,000 descriptors. */
static int raw_connect(const hy_addr_t *a);

#ifdef _WIN32
/* Windows has no descriptor limit to split between two processes: the
 * clients are a thread of this one. */
typedef struct {
  const hy_addr_t *addr;
  int n;
  atomic_int go;
  int failed;   /* the first step that failed, 0 if none */
  int opened;   /* connections opened */
  int sock_err; /* the socket error of a failed open */
} tenk_arg;

static void *tenk_clients(void *p) {
  tenk_arg *a = p;
  int *fds = calloc((size_t)a->n, sizeof *fds);
  if (!fds) {
    a->failed = 1;
    return NULL;
  }
  int fam = hy_addr_family(a->addr) == HY_AF_INET6 ? AF_INET6 : AF_INET;
  for (int i = 0; i < a->n && !a->failed; i++) {
    fds[i] = sock_open(fam, SOCK_STREAM);
    if (fds[i] < 0 || connect(fds[i], (const struct sockaddr *)a->addr->sa.raw,
                              (int)a->addr->len) != 0) {
      a->sock_err = sock_errno();
      a->failed = 2;
      break;
    }
    a->opened++;
  }
  while (!a->failed && !atomic_load(&a->go))
    Sleep(1);
  for (int i = 0; i < a->n && !a->failed; i++) {
    unsigned v = (unsigned)i, back = 0;
    if (send(fds[i], (const char *)&v, 4, 0) != 4) {
      a->failed = 4;
      break;
    }
    size_t got = 0;
    while (got < 4) {
      int k = recv(fds[i], (char *)&back + got, (int)(4 - got), 0);
      if (k <= 0) {
        a->failed = 5;
        break;
      }
      got += (size_t)k;
    }
    if (!a->failed && back != v)
      a->failed = 6;
  }
  for (int i = 0; i < a->n; i++)
    if (fds[i] > 0)
      sock_close(fds[i]);
  free(fds);
  return NULL;
}
#endif

TEST_IMPL(net_tcp_10k_connections) {
#ifdef HY_TSAN
  /* Under TSan every task's fiber needs its own trace mapping, which the
   * machine cannot give 10,000 times: the races are checked with 2,000,
   * the scale in the other configurations. */
  enum { N = 2000 };
#else
  enum { N = 10000 };
#endif
#ifdef _WIN32
  if (sock_under_wine()) {
    /* Both ends of every connection, plus the listener, at once. */
    enum { NEED = 2 * N + 100 };
    int *probe = calloc(NEED, sizeof *probe);
    ASSERT(probe);
    int got = 0, err = 0;
    while (got < NEED && (probe[got] = sock_open(AF_INET, SOCK_STREAM)) >= 0)
      got++;
    if (got < NEED)
      err = sock_errno();
    for (int i = 0; i < got; i++)
      sock_close(probe[i]);
    free(probe);
    if (got < NEED && err == WSAEMFILE) {
      fprintf(stderr, "%d sockets open at once, then WSAEMFILE\n", got);
      RETURN_SKIP("Wine: wineserver keeps a Unix descriptor for every "
                  "socket of every Wine process, so both ends of 10,000 "
                  "loopback connections need 20,000+ descriptors in that "
                  "one process, above this machine's hard RLIMIT_NOFILE");
    }
  }
  hy_runtime_t *rt = new_rt(2);
  echo_srv e;
  hy_task_t at = start_echo(&e, rt, 0);
  tenk_arg ta = {&e.addr, N, 0, 0, 0, 0};
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, tenk_clients, &ta), 0);
  int64_t until = hy_now() + HY_SEC(120);
  while (atomic_load(&e.conns) < N && !ta.failed && hy_now() < until)
    hy_sleep(NULL, HY_MS(5));
  if (!ta.failed) {
    ASSERT_EQ(atomic_load(&e.conns), N); /* all held at once */
    atomic_store(&ta.go, 1);
  }
  pthread_join(th, NULL);
  if (ta.failed)
    TEST_FAIL_("client thread failed at step %d after %d connections "
               "(socket error %d)", ta.failed, ta.opened, ta.sock_err);
  ASSERT_EQ(atomic_load(&e.bytes), 4L * N);
  stop_echo(&e, at);
  close_rt(rt);
  return 0;
#else
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rlim_t need = N + 200;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
    RETURN_SKIP("hard RLIMIT_NOFILE below 10200: cannot hold 10,000 "
                "connections");
  rl.rlim_cur = need;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  hy_runtime_t *rt = new_rt(2);
  echo_srv e;
  hy_task_t at = start_echo(&e, rt, 0);
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    static int fds[N];
    for (int i = 0; i < N; i++)
      if ((fds[i] = raw_connect(&e.addr)) < 0)
        _exit(2);
    /* All are open: wait until the server holds them all. */
    char c;
    if (read(go[0], &c, 1) != 1)
      _exit(3);
    for (int i = 0; i < N; i++) {
      unsigned v = (unsigned)i, back = 0;
      if (send(fds[i], &v, 4, MSG_NOSIGNAL) != 4)
        _exit(4);
      size_t got = 0;
      while (got < 4) {
        ssize_t k = recv(fds[i], (char *)&back + got, 4 - got, 0);
        if (k <= 0)
          _exit(5);
        got += (size_t)k;
      }
      if (back != v)
        _exit(6);
    }
    _exit(0);
  }
  int64_t until = hy_now() + HY_SEC(60);
  while (atomic_load(&e.conns) < N && hy_now() < until)
    hy_sleep(NULL, HY_MS(5));
  ASSERT_EQ(atomic_load(&e.conns), N); /* all held at once */
  ASSERT_EQ(write(go[1], "g", 1), 1);
  int status;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    TEST_FAIL_("client process failed: status %d", status);
  ASSERT_EQ(atomic_load(&e.bytes), 4L * N);
  stop_echo(&e, at);
  close_rt(rt);
  return 0;
#endif
}

/* --------------------------------------------------- the callback server */

typedef struct {
  atomic_long accepts, reads, bytes, write_dones, closes, refuse_every;
  atomic_long reasons[16];
  atomic_long timeouts_seen;
  atomic_long eagain;
  atomic_long max_pending;
  atomic_long peer_ok, last_peer_port; /* hy_sconn_peer_addr in on_accept */
  int echo;            /* echo what arrives */
  int pause_on_eagain; /* backpressure: pause reading until drained */
  int keep_on_timeout;
  int close_every;     /* every close_every-th read: close after the echo */
  int split_echo;      /* echo as a small write, then the rest */
  _Atomic int64_t last_read_at, closed_at; /* the server's view, hy_now() */
} cb_state;

static int cb_accept(hy_server_t *s, hy_sconn_t *c) {
  cb_state *st = hy_server_user(s);
  hy_sconn_set_user(c, st);
  hy_addr_t peer;
  if (hy_sconn_peer_addr(c, &peer) == 0) {
    ASSERT(hy_addr_family(&peer) == HY_AF_INET ||
           hy_addr_family(&peer) == HY_AF_INET6);
    ASSERT_GT(hy_addr_port(&peer), 0);
    atomic_store(&st->last_peer_port, hy_addr_port(&peer));
    atomic_fetch_add(&st->peer_ok, 1);
  }
  /* Counted last: a test that waits for the count sees the peer too. */
  long n = atomic_fetch_add(&st->accepts, 1) + 1;
  long every = atomic_load(&st->refuse_every);
  return every && n % every == 0 ? -1 : 0;
}

static void cb_read(hy_server_t *s, hy_sconn_t *c, const void *d, size_t n) {
  cb_state *st = hy_server_user(s);
  ASSERT(hy_sconn_user(c) == st);
  atomic_store(&st->last_read_at, hy_now());
  atomic_fetch_add(&st->reads, 1);
  atomic_fetch_add(&st->bytes, (long)n);
  if (!st->echo)
    return;
  if (st->split_echo && n > 1) {
    /* A small write (copied), then the rest from on_read's own buffer
     * (sent from it, when 4 KiB or more): the bytes go out in order. */
    size_t k = n / 4 < 100 ? n / 4 : 100;
    if (k)
      ASSERT_OK(hy_sconn_write(c, d, k));
    ASSERT_OK(hy_sconn_write(c, (const char *)d + k, n - k));
    return;
  }
  int rc = hy_sconn_write(c, d, n);
  long pend = (long)hy_sconn_pending(c);
  long mp = atomic_load(&st->max_pending);
  while (pend > mp && !atomic_compare_exchange_weak(&st->max_pending, &mp, pend))
    ;
  if (rc == HY_EAGAIN) {
    atomic_fetch_add(&st->eagain, 1);
    ASSERT(st->pause_on_eagain);
    hy_sconn_pause_read(c, 1);
    /* Keep the bytes: in this test they are a constant pattern, so the
     * count alone matters; the rest is re-sent once drained. */
    return;
  }
  ASSERT_OK(rc);
  long r = atomic_load(&st->reads);
  if (st->close_every && r % st->close_every == 0)
    hy_sconn_close(c, (int)(r / st->close_every % 2)); /* flush or not */
}

static void cb_write_done(hy_server_t *s, hy_sconn_t *c) {
  cb_state *st = hy_server_user(s);
  atomic_fetch_add(&st->write_dones, 1);
  ASSERT_EQ(hy_sconn_pending(c), 0);
  hy_sconn_pause_read(c, 0);
}

static int cb_timeout(hy_server_t *s, hy_sconn_t *c, int kind) {
  cb_state *st = hy_server_user(s);
  (void)c;
  ASSERT(kind >= HY_TIMEOUT_IDLE && kind <= HY_TIMEOUT_WRITE);
  atomic_fetch_add(&st->timeouts_seen, 1);
  return st->keep_on_timeout;
}

static void cb_close(hy_server_t *s, hy_sconn_t *c, int reason, int err) {
  cb_state *st = hy_server_user(s);
  (void)c;
  (void)err;
  ASSERT(reason >= 1 && reason <= HY_CLOSE_SHUTDOWN);
  ASSERT(reason != HY_CLOSE_REFUSED); /* refused ones get no on_close */
  atomic_store(&st->closed_at, hy_now());
  atomic_fetch_add(&st->reasons[reason], 1);
  atomic_fetch_add(&st->closes, 1);
}

/* A read timeout that closed a connection was not early: the close came at
 * least `t` after the last byte the server read was sent (sent[i]: when
 * byte i was sent, hy_now() just before the send).  Counting from the
 * byte the server read, not the last one the client sent, leaves no race
 * with a byte sent just as the close happened, and holds under Wine too,
 * where a byte can reach the server long after it was sent. */
static void read_timeout_not_early(cb_state *st, const int64_t *sent,
                                   int64_t t) {
  long n = atomic_load(&st->bytes);
  ASSERT_GE(n, 1);
  ASSERT_GE(atomic_load(&st->closed_at) - sent[n - 1], t);
}

static const hy_server_callbacks_t test_cbs = {cb_accept, cb_read,
                                               cb_write_done, cb_timeout,
                                               cb_close};

static hy_server_t *start_server(hy_runtime_t *rt, cb_state *st,
                                 hy_server_config_t *cfg) {
  hy_server_config_t c = HY_SERVER_CONFIG_INIT;
  if (cfg)
    c = *cfg;
  if (hy_addr_family(&c.addr) == HY_AF_UNSPEC)
    c.addr = loop_addr(0);
  c.user = st;
  hy_server_t *s;
  ASSERT_OK(hy_server_start(rt, &c, &test_cbs, &s));
  return s;
}

/* Blocking POSIX clients: independent of the library's own client side. */
static int raw_connect(const hy_addr_t *a) {
  int fam = hy_addr_family(a) == HY_AF_INET6 ? AF_INET6 : AF_INET;
  int fd = sock_open(fam, SOCK_STREAM | SOCK_CLOEXEC);
  if (fd < 0)
    TEST_FAIL_("socket: error %d", sock_errno());
  if (connect(fd, (const struct sockaddr *)a->sa.raw, (int)a->len) < 0) {
    /* Said, so that a test that did not expect it tells why. */
    fprintf(stderr, "raw_connect: connect failed, error %d\n", sock_errno());
    sock_close(fd);
    return -1;
  }
  sock_rcvtimeo(fd, 20000);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, (const void *)&one, sizeof one);
  return fd;
}

static void raw_write(int fd, const void *b, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t k = send(fd, (const char *)b + done, n - done, MSG_NOSIGNAL);
    ASSERT(k > 0);
    done += (size_t)k;
  }
}

static void raw_read(int fd, void *b, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t k = recv(fd, (char *)b + done, n - done, 0);
    if (k <= 0)
      TEST_FAIL_("raw_read: %d (socket error %d) after %zu of %zu", (int)k,
                 sock_errno(), done, n);
    done += (size_t)k;
  }
}

/* 0 at EOF, -1 on error (reset), else bytes. */
static ssize_t raw_read_some(int fd, void *b, size_t n) {
  return recv(fd, (char *)b, n, 0);
}

typedef struct {
  hy_addr_t addr;
  int conns, msgs;
  atomic_long *bytes;
  uint64_t seed;
  atomic_ulong seq;
} raw_client_arg;

static void *raw_echo_client(void *p) {
  raw_client_arg *a = p;
  unsigned char out[4096], in[4096];
  uint64_t rs = seed_for(&a->seq, a->seed);
  for (int k = 0; k < a->conns; k++) {
    int fd = raw_connect(&a->addr);
    ASSERT(fd >= 0);
    for (int m = 0; m < a->msgs; m++) {
      size_t n = 1 + (size_t)(rnd(&rs) % sizeof out);
      fill(out, n, (unsigned)m);
      raw_write(fd, out, n);
      raw_read(fd, in, n);
      ASSERT(memcmp(in, out, n) == 0);
      atomic_fetch_add(a->bytes, (long)n);
    }
    sock_close(fd);
  }
  return NULL;
}

static void wait_for(atomic_long *v, long want, int64_t ns) {
  int64_t until = hy_now() + ns;
  while (atomic_load(v) < want && hy_now() < until)
    usleep(1000);
  ASSERT_EQ(atomic_load(v), want);
}

TEST_IMPL(net_server_echo) {
  hy_runtime_t *rt = new_rt(2);
  static cb_state st;
  st.echo = 1;
  hy_server_t *s = start_server(rt, &st, NULL);
  hy_addr_t a;
  ASSERT_OK(hy_server_addr(s, &a));
  enum { THREADS = 8, CONNS = 10, MSGS = 20 };
  atomic_long bytes = 0;
  raw_client_arg ca = {a, CONNS, MSGS, &bytes, test_rand(), 0};
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++)
    ASSERT_EQ(pthread_create(&th[i], NULL, raw_echo_client, &ca), 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  wait_for(&st.closes, THREADS * CONNS, HY_SEC(10));
  ASSERT_EQ(atomic_load(&st.accepts), THREADS * CONNS);
  /* The peer is known (looked up late after a multishot accept). */
  ASSERT_EQ(atomic_load(&st.peer_ok), THREADS * CONNS);
  ASSERT_EQ(atomic_load(&st.bytes), atomic_load(&bytes));
  ASSERT_EQ(atomic_load(&st.reasons[HY_CLOSE_PEER]), THREADS * CONNS);
  ASSERT_GT(atomic_load(&st.write_dones), 0);
  hy_server_stats_t ss = {.size = sizeof ss};
  ASSERT_OK(hy_server_stats(s, &ss));
  ASSERT_EQ(ss.accepted, THREADS * CONNS);
  ASSERT_EQ(ss.bytes_in, (uint64_t)atomic_load(&bytes));
  ASSERT_EQ(ss.bytes_out, (uint64_t)atomic_load(&bytes));
  ASSERT_EQ(ss.live, 0);
  ASSERT_OK(hy_server_close(s));
  close_rt(rt);
  return 0;
}

/* Connections that go away while an answer is on its way, from either
 * side: the server closes in on_read right after queueing the echo (with
 * and without flushing it), clients reset or close right after writing.
 * On io_uring the read after an answer waits for the answer's send (see
 * defer_read in net/server.c): such a connection is released only after
 * that wait ends, exactly once, with every callback before on_close. */
typedef struct {
  hy_addr_t addr;
  uint64_t seed;
  atomic_ulong seq;
  atomic_long echoed;
} abrupt_arg;

static void *abrupt_client(void *p) {
  abrupt_arg *a = p;
  uint64_t rs = seed_for(&a->seq, a->seed);
  unsigned char out[2048], in[2048];
  for (int k = 0; k < 30; k++) {
    int fd = raw_connect(&a->addr);
    ASSERT(fd >= 0);
    int how = (int)(rnd(&rs) % 3); /* 0: read every echo, 1: reset, 2: close */
    int msgs = 1 + (int)(rnd(&rs) % 6);
    for (int m = 0; m < msgs; m++) {
      size_t n = 1 + (size_t)(rnd(&rs) % sizeof out);
      fill(out, n, (unsigned)(k * 8 + m));
      if (send(fd, (const char *)out, n, MSG_NOSIGNAL) != (ssize_t)n)
        break; /* the server closed it */
      if (how != 0 && m == msgs - 1)
        break;
      size_t got = 0;
      while (got < n) {
        ssize_t r = recv(fd, (char *)in + got, n - got, 0);
        if (r <= 0)
          break;
        got += (size_t)r;
      }
      ASSERT(memcmp(in, out, got) == 0); /* what came back is right */
      if (got < n)
        break; /* closed by the server after (part of) its answer */
      atomic_fetch_add(&a->echoed, 1);
    }
    if (how == 1) {
      struct linger lg = {1, 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, (const void *)&lg, sizeof lg);
    }
    sock_close(fd);
  }
  return NULL;
}

TEST_IMPL(net_server_close_while_answering) {
  hy_runtime_t *rt = new_rt(2);
  static cb_state st;
  st.echo = 1;
  st.close_every = 3;
  hy_server_t *s = start_server(rt, &st, NULL);
  enum { THREADS = 4 };
  static abrupt_arg aa;
  ASSERT_OK(hy_server_addr(s, &aa.addr));
  aa.seed = test_rand();
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++)
    ASSERT_EQ(pthread_create(&th[i], NULL, abrupt_client, &aa), 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  /* Every connection is accepted and then closed once - or, on IOCP, one
   * its client reset before the server's AcceptEx took it fails that
   * accept (Linux accepts it anyway): counted as an accept error, without
   * a back-off. */
  hy_server_stats_t ss = {.size = sizeof ss};
  int64_t until = hy_now() + HY_SEC(10);
  for (;;) {
    ASSERT_OK(hy_server_stats(s, &ss));
    if (atomic_load(&st.closes) + (long)ss.accept_errors >= THREADS * 30 ||
        hy_now() >= until)
      break;
    usleep(1000);
  }
  if (ss.backoffs)
    TEST_FAIL_("the server backed off (last accept error %s)",
               hy_err_name(ss.last_accept_error));
#ifndef _WIN32
  ASSERT_EQ(ss.accept_errors, 0);
  ASSERT_EQ(ss.last_accept_error, 0);
#endif
  ASSERT_EQ(atomic_load(&st.closes) + (long)ss.accept_errors, THREADS * 30);
  ASSERT_EQ(atomic_load(&st.accepts), atomic_load(&st.closes));
  ASSERT_GT(atomic_load(&aa.echoed), 0);
  ASSERT_GT(atomic_load(&st.reasons[HY_CLOSE_APP]), 0);
  ASSERT_OK(hy_server_stats(s, &ss));
  ASSERT_EQ(ss.live, 0);
  ASSERT_EQ(ss.closed, (uint64_t)atomic_load(&st.closes));
  ASSERT_EQ(ss.accepted, (uint64_t)atomic_load(&st.accepts));
  ASSERT_LE(ss.bytes_out, ss.bytes_in);
  ASSERT_OK(hy_server_close(s));
  close_rt(rt);
  return 0;
}

/* Answers written from on_read's own buffer are sent from it, without a
 * copy: the buffer goes back to the pool only once they are sent.  Many
 * connections with messages of up to three read buffers keep several such
 * buffers out at once while new reads take others; any buffer given back
 * early would be reused under a send and corrupt an echo. */
typedef struct {
  hy_addr_t addr;
  uint64_t seed;
  atomic_ulong seq;
  atomic_long bytes;
} big_arg;

static void *big_echo_client(void *p) {
  big_arg *a = p;
  uint64_t rs = seed_for(&a->seq, a->seed);
  static _Thread_local unsigned char out[3 * 16384], in[3 * 16384];
  for (int k = 0; k < 4; k++) {
    int fd = raw_connect(&a->addr);
    ASSERT(fd >= 0);
    for (int m = 0; m < 25; m++) {
      size_t n = 1 + (size_t)(rnd(&rs) % sizeof out);
      fill(out, n, (unsigned)(rnd(&rs)));
      raw_write(fd, out, n);
      raw_read(fd, in, n);
      ASSERT(memcmp(in, out, n) == 0);
      atomic_fetch_add(&a->bytes, (long)n);
    }
    sock_close(fd);
  }
  return NULL;
}

TEST_IMPL(net_server_echo_from_read_buffer) {
  hy_runtime_t *rt = new_rt(2);
  static cb_state st;
  st.echo = 1;
  st.split_echo = 1;
  hy_server_config_t cfg = HY_SERVER_CONFIG_INIT;
  cfg.read_buffer_size = 16384;
  cfg.max_output = 16 * 1024 * 1024; /* the echo never waits */
  hy_server_t *s = start_server(rt, &st, &cfg);
  enum { THREADS = 8 };
  static big_arg ba;
  ASSERT_OK(hy_server_addr(s, &ba.addr));
  ba.seed = test_rand();
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++)
    ASSERT_EQ(pthread_create(&th[i], NULL, big_echo_client, &ba), 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  wait_for(&st.closes, THREADS * 4, HY_SEC(10));
  hy_server_stats_t ss = {.size = sizeof ss};
  ASSERT_OK(hy_server_stats(s, &ss));
  ASSERT_EQ(ss.bytes_in, (uint64_t)atomic_load(&ba.bytes));
  ASSERT_EQ(ss.bytes_out, (uint64_t)atomic_load(&ba.bytes));
  /* Every borrowed buffer came back: what the workers keep, as when idle
   * (see net_server_pooled_reads). */
  ASSERT_LE(ss.read_buffers, 2 * (16 + 1 + 128));
  ASSERT_OK(hy_server_close(s));
  close_rt(rt);
  return 0;
}

/* On epoll a write from on_read with nothing queued is sent at once (no
 * op), and a send the port made inside its start is accounted for at
 * once: hy_sconn_pending says 0 right after the write, and on_write_done
 * still comes once per on_read whose writes all went out so.  A read
 * buffer is not reused while on_read runs: here on_read echoes (8 KiB,
 * from its buffer), then pauses and resumes its connection, which starts
 * a read at once - the client wrote two messages, so that read finds the
 * second one - and checks that its data did not change under it (a
 * buffer given back early is the first the new read takes). */
typedef struct {
  atomic_long reads, at_once, borrowed, write_dones;
} early_state;

enum { EARLY_MSG = 8192, EARLY_ROUNDS = 40 };

static void early_read(hy_server_t *s, hy_sconn_t *c, const void *d,
                       size_t n) {
  early_state *st = hy_server_user(s);
  static _Thread_local unsigned char saved[EARLY_MSG];
  ASSERT_LE(n, EARLY_MSG);
  memcpy(saved, d, n);
  atomic_fetch_add(&st->reads, 1);
  ASSERT_OK(hy_sconn_write(c, d, n));
  if (hy_sconn_pending(c) == 0)
    atomic_fetch_add(&st->at_once, 1);
  if (n >= 4096)
    atomic_fetch_add(&st->borrowed, 1);
  hy_sconn_pause_read(c, 1);
  hy_sconn_pause_read(c, 0); /* a read now, while d is still on_read's */
  ASSERT(memcmp(saved, d, n) == 0);
}

static void early_write_done(hy_server_t *s, hy_sconn_t *c) {
  early_state *st = hy_server_user(s);
  ASSERT_EQ(hy_sconn_pending(c), 0);
  atomic_fetch_add(&st->write_dones, 1);
}

TEST_IMPL(net_server_sent_at_once) {
  hy_runtime_t *rt = new_rt(1);
  static early_state st;
  hy_server_config_t cfg = HY_SERVER_CONFIG_INIT;
  cfg.addr = loop_addr(0);
  cfg.read_buffer_size = EARLY_MSG;
  cfg.user = &st;
  hy_server_callbacks_t cb = {NULL, early_read, early_write_done, NULL,
                              NULL};
  hy_server_t *s;
  ASSERT_OK(hy_server_start(rt, &cfg, &cb, &s));
  hy_addr_t a;
  ASSERT_OK(hy_server_addr(s, &a));
  int fd = raw_connect(&a);
  ASSERT(fd >= 0);
  static unsigned char out[2 * EARLY_MSG], in[2 * EARLY_MSG];
  for (int r = 0; r < EARLY_ROUNDS; r++) {
    fill(out, EARLY_MSG, (unsigned)(2 * r));
    fill(out + EARLY_MSG, EARLY_MSG, (unsigned)(2 * r + 1));
    raw_write(fd, out, sizeof out);
    raw_read(fd, in, sizeof in);
    ASSERT(memcmp(in, out, sizeof out) == 0);
  }
  sock_close(fd);
  ASSERT_GE(atomic_load(&st.reads), 2 * EARLY_ROUNDS);
  ASSERT_GT(atomic_load(&st.borrowed), 0);
  ASSERT_GT(atomic_load(&st.write_dones), 0);
  const char *b = test_backend();
  if (b && strcmp(b, "epoll") == 0) {
    ASSERT_GT(atomic_load(&st.at_once), 0);
    /* every on_read's echo went out at once: one on_write_done each */
    int64_t until = hy_now() + HY_SEC(10);
    while (atomic_load(&st.write_dones) < atomic_load(&st.at_once) &&
           hy_now() < until)
      usleep(1000);
    ASSERT_GE(atomic_load(&st.write_dones), atomic_load(&st.at_once));
  }
  ASSERT_OK(hy_server_close(s));
  close_rt(rt);
  return 0;
}

/* Accepted connections get TCP_NODELAY unless config.nagle asks for
 * Nagle's algorithm (on Linux through the listener, which they inherit it
 * from; on Windows one by one), and hy_sconn_set_nodelay turns it either
 * way on one connection.  on_accept reads the option off the socket. */
typedef struct {
  atomic_int seen[2]; /* TCP_NODELAY as accepted, after the flip; -1 unset */
  atomic_int flip_rc;
} nodelay_state;

static int nodelay_accept(hy_server_t *s, hy_sconn_t *c) {
  nodelay_state *st = hy_server_user(s);
  int v = -1;
  ASSERT_OK(hy__sock_get(hy__sconn_fd(c), HY__OPT_NODELAY, &v));
  atomic_store(&st->seen[0], v != 0);
  atomic_store(&st->flip_rc, hy_sconn_set_nodelay(c, !v));
  v = -1;
  ASSERT_OK(hy__sock_get(hy__sconn_fd(c), HY__OPT_NODELAY, &v));
  atomic_store(&st->seen[1], v != 0);
  return 0;
}

static void nodelay_read(hy_server_t *s, hy_sconn_t *c, const void *d,
                         size_t n) {
  (void)s;
  ASSERT_OK(hy_sconn_write(c, d, n));
}

TEST_IMPL(net_server_nodelay) {
  hy_runtime_t *rt = new_rt(2);
  ASSERT_EQ(hy_sconn_set_nodelay(NULL, 1), HY_EINVAL);
  for (int nagle = 0; nagle < 2; nagle++) {
    static nodelay_state st;
    atomic_store(&st.seen[0], -1);
    atomic_store(&st.seen[1], -1);
    atomic_store(&st.flip_rc, 1);
    hy_server_config_t cfg = HY_SERVER_CONFIG_INIT;
    cfg.addr = loop_addr(0);
    cfg.nagle = nagle;
    cfg.user = &st;
    hy_server_callbacks_t cb = {nodelay_accept, nodelay_read, NULL, NULL,
                                NULL};
    hy_server_t *s;
    ASSERT_OK(hy_server_start(rt, &cfg, &cb, &s));
    hy_addr_t a;
    ASSERT_OK(hy_server_addr(s, &a));
    int fd = raw_connect(&a);
    ASSERT(fd >= 0);
    unsigned char out[64], in[64];
    fill(out, sizeof out, (unsigned)nagle);
    raw_write(fd, out, sizeof out);
    raw_read(fd, in, sizeof in); /* on_accept has run */
    ASSERT(memcmp(in, out, sizeof out) == 0);
    ASSERT_EQ(atomic_load(&st.seen[0]), !nagle);
    ASSERT_EQ(atomic_load(&st.flip_rc), 0);
    ASSERT_EQ(atomic_load(&st.seen[1]), nagle);
    sock_close(fd);
    ASSERT_OK(hy_server_close(s));
  }
  close_rt(rt);
  return 0;
}

/* ------------------------------------------- pooled reads, server and port */

#ifdef _WIN32
/* Pooled reads are for the readiness-based ports (io_uring, epoll): on
 * IOCP a receive is posted with its buffer, so each connection owns one
 * (net/server.c). */
TEST_IMPL(net_server_pooled_reads) {
  RETURN_SKIP("IOCP posts each receive with its own buffer: no pooled reads");
}
TEST_IMPL(net_port_pooled_recv) {
  RETURN_SKIP("IOCP posts each receive with its own buffer: no pooled reads");
}
TEST_IMPL(net_port_multishot_accept) {
  RETURN_SKIP("multishot accept is io_uring's; IOCP keeps AcceptEx ops pending");
}
TEST_IMPL(net_port_multishot_accept_drops) {
  RETURN_SKIP("multishot accept is io_uring's; IOCP keeps AcceptEx ops pending");
}
TEST_IMPL(net_port_pooled_recv_backlog) {
  RETURN_SKIP("IOCP posts each receive with its own buffer: no pooled reads");
}
TEST_IMPL(net_port_pooled_recv_full) {
  RETURN_SKIP("IOCP posts each receive with its own buffer: no pooled reads");
}
#else
/* Many connections that each spoke once and went quiet hold no read
 * buffer: the server's buffers stay at what its workers keep, not one per
 * connection; every byte still comes back right, across many connections
 * sharing the workers' buffers. */
TEST_IMPL(net_server_pooled_reads) {
  hy_runtime_t *rt = new_rt(2);
  static cb_state st;
  st.echo = 1;
  hy_server_config_t cfg = HY_SERVER_CONFIG_INIT;
  cfg.read_buffer_size = 4096;
  hy_server_t *s = start_server(rt, &st, &cfg);
  hy_addr_t a;
  ASSERT_OK(hy_server_addr(s, &a));
  enum { N = 400 };
  static int fds[N];
  static unsigned char out[3 * 4096], in[3 * 4096];
  long sent = 0;
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < N; i++) {
      if (round == 0) {
        fds[i] = raw_connect(&a);
        ASSERT(fds[i] >= 0);
        if (i == 0) {
          /* on_accept saw this client's own address */
          struct sockaddr_in me;
          socklen_t ml = sizeof me;
          ASSERT_EQ(getsockname(fds[0], (struct sockaddr *)&me, &ml), 0);
          wait_for(&st.accepts, 1, HY_SEC(10));
          ASSERT_EQ(atomic_load(&st.last_peer_port), ntohs(me.sin_port));
        }
      }
      ASSERT(fds[i] >= 0);
    }
    /* Every connection writes before any reads its echo, so the server
     * has many reads in hand at once (sizes up to 3 buffers). */
    size_t len[N];
    for (int i = 0; i < N; i++) {
      len[i] = 1 + (size_t)(test_rand() % sizeof out);
      fill(out, len[i], (unsigned)(i * 7 + round));
      raw_write(fds[i], out, len[i]);
      sent += (long)len[i];
    }
    for (int i = 0; i < N; i++) {
      raw_read(fds[i], in, len[i]);
      fill(out, len[i], (unsigned)(i * 7 + round));
      ASSERT(memcmp(in, out, len[i]) == 0);
    }
    /* All idle now: at most what the two workers keep free (16 each),
     * plus the one a worker may still hold for the on_read call whose
     * echo the client already has, plus (io_uring) the 128 lent to each
     * port's buffer ring - a bound that does not grow with N. */
    hy_server_stats_t ss = {.size = sizeof ss};
    ASSERT_OK(hy_server_stats(s, &ss));
    ASSERT_EQ(ss.live, N);
    ASSERT_LE(ss.read_buffers, 2 * (16 + 1 + 128));
  }
  for (int i = 0; i < N; i++)
    close(fds[i]);
  wait_for(&st.closes, N, HY_SEC(10));
  ASSERT_EQ(atomic_load(&st.bytes), sent);
  hy_server_stats_t ss = {.size = sizeof ss};
  ASSERT_OK(hy_server_stats(s, &ss));
  ASSERT_LE(ss.read_buffers, 2 * (16 + 1 + 128));
  ASSERT_OK(hy_server_close(s));
  close_rt(rt);
  return 0;
}

typedef struct {
  hy__bufsrc src;
  long gets, puts;
  int fail_pct; /* this share of gets find no memory */
} count_src;

static void *csrc_get(hy__bufsrc *s) {
  count_src *c = (count_src *)s;
  if (c->fail_pct && (int)(test_rand() % 100) < c->fail_pct)
    return NULL;
  c->gets++;
  return hy__mem_alloc(s->size); /* the port's contract: hy__mem */
}

static void csrc_put(hy__bufsrc *s, void *b) {
  count_src *c = (count_src *)s;
  c->puts++;
  hy__mem_free(b);
}

/* A connected TCP pair on 127.0.0.1 (blocking POSIX calls). */
static void tcp_pair(int *client, int *server) {
  ASSERT_EQ(sock_tcp_pair(client, server), 0);
}

static hy__op *port_wait1(hy__port *p, int64_t tmo) {
  hy__op *got = NULL;
  int64_t until = hy_now() + tmo;
  while (!got && hy_now() < until) {
    int n = hy__port_wait(p, &got, 1, HY_MS(50));
    ASSERT_GE(n, 0);
  }
  return got;
}

typedef struct {
  int fd;
  long total;
  uint64_t seed;
} pwriter;

static void *pooled_writer(void *p) {
  pwriter *w = p;
  uint64_t rs = w->seed;
  unsigned char b[9000];
  long off = 0;
  while (off < w->total) {
    size_t n = 1 + (size_t)(rnd(&rs) % sizeof b);
    if ((long)n > w->total - off)
      n = (size_t)(w->total - off);
    for (size_t i = 0; i < n; i++)
      b[i] = (unsigned char)((off + (long)i) * 31 + 7);
    raw_write(w->fd, b, n);
    off += (long)n;
    if (rnd(&rs) % 4 == 0)
      usleep((useconds_t)(rnd(&rs) % 300));
  }
  return NULL;
}

/* The port's pooled receive (buf NULL, a buffer source): receives that
 * wait hold no buffer each (io_uring lends a fixed ring of them to the
 * kernel, shared by all); data comes in a buffer from the source; cancel
 * and EOF give none; HY__RECV_OWNED reads (pooled or not) lose no byte and
 * never hang when a read that emptied the socket skips the next try
 * (epoll).  Buffers left in the ring are freed by the port (ASan checks). */
TEST_IMPL(net_port_pooled_recv) {
  hy__port *p;
  int rc = hy__port_open(&p, test_port_backend(), NULL);
  if (rc == HY_ENOSYS) {
    fprintf(stderr, "SKIP: backend not available here\n");
    return TEST_SKIP;
  }
  ASSERT_OK(rc);
  int cfd, sfd;
  tcp_pair(&cfd, &sfd);
  ASSERT_OK(hy__port_associate(p, sfd));
  count_src cs = {{csrc_get, csrc_put, 1024, 0}, 0, 0, 0};
  hy__op op;

  /* Waiting holds nothing; data arrives in the source's buffer. */
  memset(&op, 0, sizeof op);
  op.kind = HY__OP_RECV;
  op.fd = sfd;
  op.addr = &cs.src;
  op.flags = HY__RECV_OWNED;
  ASSERT_OK(hy__port_start(p, &op));
  hy__op *got = NULL;
  ASSERT_EQ(hy__port_wait(p, &got, 1, HY_MS(20)), 0);
  long lent = cs.gets - cs.puts; /* 0, or io_uring's ring */
  ASSERT_LE(lent, 1024);
  if (strcmp(hy__port_backend_name(p), "uring") == 0)
    ASSERT_GT(lent, 0); /* buffer rings: Linux >= 5.19, as multishot */
  /* 40 more receives waiting on 40 more sockets take no more. */
  enum { W = 40 };
  int wc[W], ws[W];
  static hy__op wop[W];
  for (int i = 0; i < W; i++) {
    tcp_pair(&wc[i], &ws[i]);
    ASSERT_OK(hy__port_associate(p, ws[i]));
    memset(&wop[i], 0, sizeof wop[i]);
    wop[i].kind = HY__OP_RECV;
    wop[i].fd = ws[i];
    wop[i].addr = &cs.src;
    wop[i].flags = HY__RECV_OWNED;
    ASSERT_OK(hy__port_start(p, &wop[i]));
  }
  ASSERT_EQ(hy__port_wait(p, &got, 1, HY_MS(20)), 0);
  ASSERT_EQ(cs.gets - cs.puts, lent);
  for (int i = 0; i < W; i++) {
    ASSERT_OK(hy__port_cancel(p, &wop[i]));
    hy__op *c = port_wait1(p, HY_SEC(10));
    ASSERT(c != NULL && c != &op);
    ASSERT_EQ(c->res, HY_ECANCELED);
    ASSERT(c->buf == NULL);
  }
  for (int i = 0; i < W; i++) {
    hy__port_forget(p, ws[i]);
    close(ws[i]);
    close(wc[i]);
  }
  ASSERT_EQ(cs.gets - cs.puts, lent);
  raw_write(cfd, "pooled", 6);
  ASSERT(port_wait1(p, HY_SEC(10)) == &op);
  ASSERT_EQ(op.res, 6);
  ASSERT(op.buf != NULL);
  ASSERT_EQ(cs.gets - cs.puts, lent + 1);
  ASSERT(memcmp(op.buf, "pooled", 6) == 0);
  csrc_put(&cs.src, op.buf);

  /* That read emptied the socket.  Data that comes while no read is
   * started - its readiness seen by a wait in between - is still read by
   * the next owned read. */
  raw_write(cfd, "x", 1);
  usleep(20000);
  ASSERT_EQ(hy__port_wait(p, &got, 1, HY_MS(20)), 0);
  memset(&op, 0, sizeof op);
  op.kind = HY__OP_RECV;
  op.fd = sfd;
  op.addr = &cs.src;
  op.flags = HY__RECV_OWNED;
  ASSERT_OK(hy__port_start(p, &op));
  ASSERT(port_wait1(p, HY_SEC(10)) == &op);
  ASSERT_EQ(op.res, 1);
  ASSERT_EQ(*(char *)op.buf, 'x');
  csrc_put(&cs.src, op.buf);
  ASSERT_EQ(cs.gets - cs.puts, lent);

  /* Cancelled while waiting: HY_ECANCELED, no buffer. */
  memset(&op, 0, sizeof op);
  op.kind = HY__OP_RECV;
  op.fd = sfd;
  op.addr = &cs.src;
  op.flags = HY__RECV_OWNED;
  ASSERT_OK(hy__port_start(p, &op));
  ASSERT_OK(hy__port_cancel(p, &op));
  ASSERT(port_wait1(p, HY_SEC(10)) == &op);
  ASSERT_EQ(op.res, HY_ECANCELED);
  ASSERT(op.buf == NULL);
  ASSERT_EQ(cs.gets - cs.puts, lent);

  /* A stream of random-sized writes read by owned reads, pooled and into
   * a fixed buffer at random: every byte, in order - also while the
   * source often has no memory (the read fails with HY_ENOMEM, or HY_EAGAIN
   * once io_uring's ring ran dry, and is started again; the ring's empty
   * slots are refilled later). */
  pwriter w = {cfd, 400000, test_rand()};
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, pooled_writer, &w), 0);
  static unsigned char fixed[700];
  long off = 0;
  uint64_t rs = test_rand();
  int retries = 0;
  while (off < w.total) {
    cs.fail_pct = off > w.total / 3 && off < 2 * w.total / 3 ? 60 : 0;
    memset(&op, 0, sizeof op);
    op.kind = HY__OP_RECV;
    op.fd = sfd;
    op.flags = HY__RECV_OWNED;
    if (rnd(&rs) % 2) {
      op.addr = &cs.src;
    } else {
      op.buf = fixed;
      op.len = 1 + (size_t)(rnd(&rs) % sizeof fixed);
    }
    ASSERT_OK(hy__port_start(p, &op));
    got = port_wait1(p, HY_SEC(10));
    if (got != &op)
      TEST_FAIL_("owned read hangs after %ld of %ld bytes", off, w.total);
    if (op.res == HY_ENOMEM || op.res == HY_EAGAIN) {
      ASSERT(op.buf == NULL || !op.addr);
      ASSERT_LT(++retries, 1000000);
      continue;
    }
    ASSERT_GT(op.res, 0);
    const unsigned char *d = op.buf;
    for (int64_t i = 0; i < op.res; i++)
      ASSERT_EQ(d[i], (unsigned char)((off + i) * 31 + 7));
    off += (long)op.res;
    if (op.addr)
      csrc_put(&cs.src, op.buf);
  }
  pthread_join(th, NULL);
  ASSERT_EQ(off, w.total);
  /* Slots left empty by failed gets are refilled by later reads. */
  cs.fail_pct = 0;
  ASSERT_LE(cs.gets - cs.puts, lent);

  /* End of stream: res 0, no buffer. */
  close(cfd);
  memset(&op, 0, sizeof op);
  op.kind = HY__OP_RECV;
  op.fd = sfd;
  op.addr = &cs.src;
  op.flags = HY__RECV_OWNED;
  ASSERT_OK(hy__port_start(p, &op));
  ASSERT(port_wait1(p, HY_SEC(10)) == &op);
  ASSERT_EQ(op.res, 0);
  ASSERT(op.buf == NULL);
  ASSERT_EQ(cs.gets - cs.puts, lent);
  hy__port_forget(p, sfd);
  close(sfd);
  hy__port_close(p);
  return 0;
}

/* A multishot accept (io_uring): one op, many connections, each handed
 * over in its own completion with HY__OP_MORE while the op stays in
 * flight, never twice in one wait; cancel ends it.  Elsewhere a plain
 * accept, started again after each. */
/* Pooled receives that complete together, more than one wait hands over:
 * the ones left for the next waits must not keep io_uring's ring of
 * provided buffers short (its slots are refilled as completions are
 * taken), or the receives started next find it dry and fail with
 * HY_EAGAIN - each to be started again, which on a busy server filled
 * the completion queue with failures (1000 connections: 5 per message).
 * The counts are set against the port's ring of 128: 100 + 90 > 128. */
TEST_IMPL(net_port_pooled_recv_backlog) {
  hy__port *p;
  int rc = hy__port_open(&p, test_port_backend(), NULL);
  if (rc == HY_ENOSYS) {
    fprintf(stderr, "SKIP: backend not available here\n");
    return TEST_SKIP;
  }
  ASSERT_OK(rc);
  enum { N = 200, HALF = 100, MAX = 10 };
  static int cl[N], sv[N];
  static hy__op op[N];
  count_src cs = {{csrc_get, csrc_put, 512, 0}, 0, 0, 0};
  for (int i = 0; i < N; i++) {
    tcp_pair(&cl[i], &sv[i]);
    ASSERT_OK(hy__port_associate(p, sv[i]));
  }
  int done[N] = {0}, ndone = 0;
  for (int half = 0; half < 2; half++) {
    /* Data first, then the receives: each finds its data at once. */
    for (int i = half * HALF; i < (half + 1) * HALF; i++) {
      char msg[16];
      int len = snprintf(msg, sizeof msg, "m%d", i);
      raw_write(cl[i], msg, (size_t)len);
    }
    for (int i = half * HALF; i < (half + 1) * HALF; i++) {
      memset(&op[i], 0, sizeof op[i]);
      op[i].kind = HY__OP_RECV;
      op[i].fd = sv[i];
      op[i].addr = &cs.src;
      op[i].flags = HY__RECV_OWNED;
      op[i].data = &done[i];
      ASSERT_OK(hy__port_start(p, &op[i]));
    }
    /* The first half: one wait's worth only, the rest left in the port.
     * The second: everything. */
    int want = half == 0 ? MAX : N;
    int64_t until = hy_now() + HY_SEC(10);
    while (ndone < want && hy_now() < until) {
      hy__op *got[MAX];
      int room = want - ndone < MAX ? want - ndone : MAX;
      int n = hy__port_wait(p, got, room, HY_MS(50));
      ASSERT_GE(n, 0);
      for (int k = 0; k < n; k++) {
        int i = (int)(got[k] - op);
        ASSERT(i >= 0 && i < N && !done[i]);
        ASSERT_NE(got[k]->res, HY_EAGAIN); /* the ring was never dry */
        char msg[16];
        int len = snprintf(msg, sizeof msg, "m%d", i);
        ASSERT_EQ(got[k]->res, len);
        ASSERT(got[k]->buf && memcmp(got[k]->buf, msg, (size_t)len) == 0);
        csrc_put(&cs.src, got[k]->buf);
        done[i] = 1;
        ndone++;
      }
    }
    ASSERT_EQ(ndone, want); /* the first time, 90 are left in the port */
  }
  ASSERT_EQ(ndone, N);
  for (int i = 0; i < N; i++) {
    hy__port_forget(p, sv[i]);
    close(sv[i]);
    close(cl[i]);
  }
  hy__port_close(p);
  return 0;
}

/* Pooled reads that fill their buffer exactly (epoll asks for a byte
 * more, kept for the next read when it comes: see try_recv_pooled): the
 * stream goes on in order across pooled reads, reads into the op's own
 * buffer and peeks; a full read that emptied the socket waits for more;
 * the end of the stream right after a kept byte is still seen. */
static hy__op *pooled_read(hy__port *p, int fd, hy__bufsrc *src, void *buf,
                           size_t len, uint32_t flags) {
  static hy__op op;
  memset(&op, 0, sizeof op);
  op.kind = HY__OP_RECV;
  op.fd = fd;
  op.flags = HY__RECV_OWNED | flags;
  if (buf) {
    op.buf = buf;
    op.len = len;
  } else {
    op.addr = src;
  }
  ASSERT_OK(hy__port_start(p, &op));
  hy__op *got = port_wait1(p, HY_SEC(10));
  ASSERT(got == &op);
  return got;
}

TEST_IMPL(net_port_pooled_recv_full) {
  hy__port *p;
  int rc = hy__port_open(&p, test_port_backend(), NULL);
  if (rc == HY_ENOSYS) {
    fprintf(stderr, "SKIP: backend not available here\n");
    return TEST_SKIP;
  }
  ASSERT_OK(rc);
  enum { B = 512 };
  int cfd, sfd;
  tcp_pair(&cfd, &sfd);
  ASSERT_OK(hy__port_associate(p, sfd));
  count_src cs = {{csrc_get, csrc_put, B, 0}, 0, 0, 0};
  static unsigned char out[8 * B], own[4 * B]; /* the six rounds: < 7 B */
  fill(out, sizeof out, 5);
  size_t off = 0; /* of out: what the stream has delivered so far */
  for (int round = 0; round < 6; round++) {
    /* Exactly one buffer (nothing more there), then a buffer and a bit. */
    size_t n = round % 2 ? B + 1 + (size_t)round : B;
    raw_write(cfd, out + off, n);
    usleep(2000); /* all of it in the socket before the read */
    size_t want = off + n;
    while (off < want) {
      hy__op *op;
      if (round >= 4 && off % 3 == 1) {
        /* The op's own buffer, after a peek at the next byte. */
        unsigned char peek = 0;
        op = pooled_read(p, sfd, NULL, &peek, 1, MSG_PEEK);
        ASSERT_EQ(op->res, 1);
        ASSERT_EQ(peek, out[off]);
        op = pooled_read(p, sfd, NULL, own, sizeof own, 0);
        ASSERT_GT(op->res, 0);
        ASSERT(memcmp(own, out + off, (size_t)op->res) == 0);
      } else {
        op = pooled_read(p, sfd, &cs.src, NULL, 0, 0);
        ASSERT_GT(op->res, 0);
        ASSERT_LE(op->res, B);
        ASSERT(memcmp(op->buf, out + off, (size_t)op->res) == 0);
        csrc_put(&cs.src, op->buf);
      }
      off += (size_t)op->res;
    }
    ASSERT_EQ(off, want);
  }
  /* A full read that emptied the socket: the next read waits for data. */
  static hy__op w;
  memset(&w, 0, sizeof w);
  w.kind = HY__OP_RECV;
  w.fd = sfd;
  w.flags = HY__RECV_OWNED;
  w.addr = &cs.src;
  ASSERT_OK(hy__port_start(p, &w));
  hy__op *got = NULL;
  ASSERT_EQ(hy__port_wait(p, &got, 1, HY_MS(30)), 0);
  raw_write(cfd, out, 3);
  ASSERT(port_wait1(p, HY_SEC(10)) == &w);
  ASSERT_EQ(w.res, 3);
  ASSERT(memcmp(w.buf, out, 3) == 0);
  csrc_put(&cs.src, w.buf);
  /* A buffer and one byte, then the end: B, 1, then 0 (no hang). */
  raw_write(cfd, out, B + 1);
  usleep(2000);
  shutdown(cfd, SHUT_WR);
  usleep(2000);
  size_t got_n = 0;
  for (;;) {
    hy__op *op = pooled_read(p, sfd, &cs.src, NULL, 0, 0);
    ASSERT_GE(op->res, 0);
    if (op->res == 0)
      break;
    ASSERT(memcmp(op->buf, out + got_n, (size_t)op->res) == 0);
    got_n += (size_t)op->res;
    csrc_put(&cs.src, op->buf);
  }
  ASSERT_EQ(got_n, B + 1);
  hy__port_forget(p, sfd);
  close(sfd);
  close(cfd);
  hy__port_close(p);
  return 0;
}

TEST_IMPL(net_port_multishot_accept) {
  hy__port *p;
  int rc = hy__port_open(&p, test_port_backend(), NULL);
  if (rc == HY_ENOSYS) {
    fprintf(stderr, "SKIP: backend not available here\n");
    return TEST_SKIP;
  }
  ASSERT_OK(rc);
  struct sockaddr_in sa;
  int l = sock_listen_loopback(&sa, 256);
  ASSERT(l >= 0);
  ASSERT_OK(hy__port_associate(p, l));
  int uring = strcmp(hy__port_backend_name(p), "uring") == 0;
  hy__op op;
  memset(&op, 0, sizeof op);
  op.kind = HY__OP_ACCEPT;
  op.fd = l;
  op.flags = HY__ACCEPT_MULTI;
  ASSERT_OK(hy__port_start(p, &op));
  enum { K = 60 };
  int cl[K], acc[K], nacc = 0, more = 0, inflight = 1;
  for (int round = 0; round < 3; round++) {
    /* Bursts: several connections wait at once, so several CQEs of the
     * one op come in one reap. */
    int base = round * (K / 3);
    for (int i = base; i < base + K / 3; i++) {
      cl[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      ASSERT_EQ(connect(cl[i], (struct sockaddr *)&sa, sizeof sa), 0);
    }
    usleep((useconds_t)(test_rand() % 5000));
    int64_t until = hy_now() + HY_SEC(10);
    while (nacc < base + K / 3 && hy_now() < until) {
      if (!inflight) {
        memset(&op, 0, sizeof op);
        op.kind = HY__OP_ACCEPT;
        op.fd = l;
        op.flags = HY__ACCEPT_MULTI;
        ASSERT_OK(hy__port_start(p, &op));
        inflight = 1;
      }
      hy__op *ops[64];
      int n = hy__port_wait(p, ops, 64, HY_MS(50));
      ASSERT_GE(n, 0);
      ASSERT_LE(n, 1); /* one op: at most one completion per wait */
      for (int i = 0; i < n; i++) {
        ASSERT(ops[i] == &op);
        ASSERT_GE(op.res, 0);
        acc[nacc++] = (int)op.res;
        if (op.flags & HY__OP_MORE)
          more++;
        else
          inflight = 0;
      }
    }
    ASSERT_EQ(nacc, base + K / 3);
  }
  /* Each accepted socket is a distinct live connection. */
  for (int i = 0; i < K; i++)
    for (int j = i + 1; j < K; j++)
      ASSERT(acc[i] != acc[j]);
  if (uring)
    ASSERT_GT(more, 0); /* the op did stay in flight (Linux >= 5.19) */
  else
    ASSERT_EQ(more, 0);
  /* Cancel ends it: a last completion without HY__OP_MORE. */
  if (!inflight) {
    memset(&op, 0, sizeof op);
    op.kind = HY__OP_ACCEPT;
    op.fd = l;
    op.flags = HY__ACCEPT_MULTI;
    ASSERT_OK(hy__port_start(p, &op));
  }
  ASSERT_OK(hy__port_cancel(p, &op));
  ASSERT(port_wait1(p, HY_SEC(10)) == &op);
  ASSERT_EQ(op.res, HY_ECANCELED);
  ASSERT_EQ(op.flags & HY__OP_MORE, 0);
  hy__op *none;
  ASSERT_EQ(hy__port_wait(p, &none, 1, HY_MS(20)), 0);
  for (int i = 0; i < K; i++) {
    close(acc[i]);
    close(cl[i]);
  }
  hy__port_forget(p, l);
  close(l);
  hy__port_close(p);
  return 0;
}

/* A multishot accept with no memory to keep a connection resets it and
 * tells its owner (HY_ENOMEM, the op still in flight).  Two of them on
 * one port, dropping in the same reap, are both told: each has a node of
 * its own in reserve for that. */
TEST_IMPL(net_port_multishot_accept_drops) {
  hy__port *p;
  int rc = hy__port_open(&p, test_port_backend(), NULL);
  if (rc == HY_ENOSYS)
    RETURN_SKIP("backend not available here");
  ASSERT_OK(rc);
  if (strcmp(hy__port_backend_name(p), "uring") != 0) {
    hy__port_close(p);
    RETURN_SKIP("multishot accept is io_uring's");
  }
  hy__mem_fail_here_at(1);
  void *probe = hy__mem_alloc(16);
  hy__mem_fail_at(0);
  if (probe) {
    hy__mem_free(probe);
    hy__port_close(p);
    RETURN_SKIP("allocator cannot fail on demand");
  }
  int l[2], cl[2];
  struct sockaddr_in sa[2];
  hy__op op[2];
  for (int i = 0; i < 2; i++) {
    l[i] = sock_listen_loopback(&sa[i], 16);
    ASSERT(l[i] >= 0);
    ASSERT_OK(hy__port_associate(p, l[i]));
    memset(&op[i], 0, sizeof op[i]);
    op[i].kind = HY__OP_ACCEPT;
    op[i].fd = l[i];
    op[i].flags = HY__ACCEPT_MULTI;
    ASSERT_OK(hy__port_start(p, &op[i]));
  }
  hy__op *ops[8];
  ASSERT_EQ(hy__port_wait(p, ops, 8, HY_MS(10)), 0); /* submitted */
  for (int i = 0; i < 2; i++) {
    cl[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(connect(cl[i], (struct sockaddr *)&sa[i], sizeof sa[i]), 0);
  }
  /* Both connections' nodes cannot be had. */
  hy__mem_fail_here_run(1, 2);
  int told[2] = {0, 0};
  int64_t until = hy_now() + HY_SEC(10);
  while (!(told[0] && told[1]) && hy_now() < until) {
    int n = hy__port_wait(p, ops, 8, HY_MS(50));
    ASSERT_GE(n, 0);
    for (int k = 0; k < n; k++) {
      int i = ops[k] == &op[1];
      ASSERT(ops[k] == &op[i]);
      if (!(op[i].flags & HY__OP_MORE)) {
        hy__mem_fail_at(0);
        RETURN_SKIP("kernel without multishot accept");
      }
      ASSERT_ERR(op[i].res, HY_ENOMEM);
      told[i]++;
    }
  }
  ASSERT_EQ(hy__mem_fail_at(0), 0); /* both failures happened */
  if (!told[0] || !told[1])
    TEST_FAIL_("a dropped connection was not reported: accept 0 told %d "
               "times, accept 1 told %d times", told[0], told[1]);
  /* The dropped connections were reset, and both accepts go on. */
  for (int i = 0; i < 2; i++) {
    char c;
    ASSERT(recv(cl[i], &c, 1, 0) < 0 && errno == ECONNRESET);
    close(cl[i]);
    cl[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(connect(cl[i], (struct sockaddr *)&sa[i], sizeof sa[i]), 0);
  }
  int acc[2] = {-1, -1};
  until = hy_now() + HY_SEC(10);
  while ((acc[0] < 0 || acc[1] < 0) && hy_now() < until) {
    int n = hy__port_wait(p, ops, 8, HY_MS(50));
    ASSERT_GE(n, 0);
    for (int k = 0; k < n; k++) {
      int i = ops[k] == &op[1];
      ASSERT(op[i].flags & HY__OP_MORE);
      ASSERT_GE(op[i].res, 0);
      acc[i] = (int)op[i].res;
    }
  }
  ASSERT(acc[0] >= 0 && acc[1] >= 0);
  for (int i = 0; i < 2; i++) {
    ASSERT_OK(hy__port_cancel(p, &op[i]));
    ASSERT(port_wait1(p, HY_SEC(10)) != NULL);
  }
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(op[i].res, HY_ECANCELED);
    ASSERT_EQ(op[i].flags & HY__OP_MORE, 0);
    close(acc[i]);
    close(cl[i]);
    hy__port_forget(p, l[i]);
    close(l[i]);
  }
  hy__port_close(p);
  return 0;
}

#endif /* _WIN32 */

TEST_IMPL(net_server_refuse_and_max_connections) {
  hy_runtime_t *rt = new_rt(2);
  static cb_state st;
  st.echo = 1;
  atomic_store(&st.refuse_every, 3); /* every third is refused */
  hy_server_config_t cfg = HY_SERVER_CONFIG_INIT;
  cfg.max_connections = 4;
  hy_server_t *s = start_server(rt, &st, &cfg);
  hy_addr_t a;
  ASSERT_OK(hy_server_addr(s, &a));
  /* Open connections one by one, checking each with a ping. */
  int fds[12], kept = 0, refused = 0, over = 0;
  for (int i = 0; i < 12; i++) {
    /* A refused connection may be reset before the ping is sent, or even
     * before connect returns (the server may accept and refuse it before
     * this thread runs again); the counts below tell them apart. */
    fds[i] = raw_connect(&a);
    ssize_t k = -1;
    if (fds[i] >= 0) {
      ssize_t w = send(fds[i], "p", 1, MSG_NOSIGNAL);
      (void)w;
      char b;
      k = raw_read_some(fds[i], &b, 1);
    }
    if (k == 1) {
      kept++;
    } else {
      ASSERT_LE(k, 0); /* closed at once: EOF or reset */
      if (fds[i] >= 0)
        sock_close(fds[i]);
      fds[i] = -1;
      hy_server_stats_t ss = {.size = sizeof ss};
      ASSERT_OK(hy_server_stats(s, &ss));
      refused = (int)ss.refused;
      over = (int)ss.over_limit;
    }
  }
  ASSERT_EQ(kept, 4); /* the limit held */
  ASSERT_GT(refused, 0);
  ASSERT_GT(over, 0);
  hy_server_stats_t ss = {.size = sizeof ss};
  ASSERT_OK(hy_server_stats(s, &ss));
  ASSERT_EQ(ss.live, 4);
  ASSERT_EQ(ss.accepted, 12);
  ASSERT_EQ(ss.refused + ss.over_limit + 4, 12);
  /* Closing one makes room for a new one. */
  for (int i = 0; i < 12; i++)
    if (fds[i] >= 0) {
      sock_close(fds[i]);
      fds[i] = -1;
      break;
    }
  wait_for(&st.closes, 1, HY_SEC(5));
  atomic_store(&st.refuse_every, 0);
  int fd = raw_connect(&a);
  raw_write(fd, "q", 1);
  char b;
  ASSERT_EQ(raw_read_some(fd, &b, 1), 1);
  sock_close(fd);
  for (int i = 0; i < 12; i++)
    if (fds[i] >= 0)
      sock_close(fds[i]);
  ASSERT_OK(hy_server_close(s));
  close_rt(rt);
  return 0;
}

TEST_IMPL(net_server_output_bound) {
  hy_runtime_t *rt = new_rt(2);
  static cb_state st;
  st.echo = 1;
  st.pause_on_eagain = 1;
  hy_server_config_t cfg = HY_SERVER_CONFIG_INIT;
  cfg.max_output = 64 * 1024;
  cfg.read_buffer_size = 4096;
  hy_server_t *s = start_server(rt, &st, &cfg);
  hy_addr_t a;
  ASSERT_OK(hy_server_addr(s, &a));
  int fd = raw_connect(&a);
  /* A client that writes and never reads: the server's buffered output
   * stops at the bound, reading pauses, TCP throttles the client until its
   * sends make no progress at all. */
  char chunk[16384];
  memset(chunk, 'a', sizeof chunk);
  sock_nonblock(fd, 1);
  size_t sent = 0;
  int64_t until = hy_now() + HY_SEC(20), last_progress = hy_now();
  /* Until the server has hit its bound (causal: a stall of a loaded
   * machine is no throttle), and then until sends make no progress. */
  while (hy_now() < until && (atomic_load(&st.eagain) == 0 ||
                              hy_now() - last_progress < HY_MS(500))) {
    ssize_t k = send(fd, chunk, sizeof chunk, MSG_NOSIGNAL);
    if (k > 0) {
      sent += (size_t)k;
      last_progress = hy_now();
    } else {
      usleep(2000);
    }
  }
  ASSERT_GT(sent, 0);
  ASSERT_GE(hy_now() - last_progress, HY_MS(500)); /* throttled */
  ASSERT_LE(atomic_load(&st.max_pending), 64 * 1024); /* never past the bound */
  ASSERT_GT(atomic_load(&st.eagain), 0);
  /* Now drain: everything that was accepted into the server's buffer comes
   * back, and the server resumes. */
  sock_nonblock(fd, 0);
  long got = 0;
  char in[65536];
  sock_rcvtimeo(fd, 300);
  for (;;) {
    ssize_t k = recv(fd, in, sizeof in, 0);
    if (k <= 0)
      break;
    for (ssize_t i = 0; i < k; i++)
      ASSERT_EQ(in[i], 'a');
    got += k;
  }
  ASSERT_GT(got, 0);
  ASSERT_GT(atomic_load(&st.write_dones), 0);
  sock_close(fd);
  wait_for(&st.closes, 1, HY_SEC(5));
  ASSERT_OK(hy_server_close(s));
  close_rt(rt);
  return 0;
}

TEST_IMPL(net_server_idle_and_read_timeouts) {
  hy_runtime_t *rt = new_rt(2);
  static cb_state st;
  st.echo = 1;
  hy_server_config_t cfg = HY_SERVER_CONFIG_INIT;
  cfg.idle_timeout = HY_MS(150);
  cfg.read_timeout = HY_MS(400);
  hy_server_t *s = start_server(rt, &st, &cfg);
  hy_addr_t a;
  ASSERT_OK(hy_server_addr(s, &a));
  /* An idle client is closed after the idle time, never before. */
  int64_t t0 = hy_now();
  int fd = raw_connect(&a);
  char b;
  ssize_t k = raw_read_some(fd, &b, 1);
  int64_t took = hy_now() - t0;
  ASSERT_LE(k, 0);
  ASSERT_GE(took, HY_MS(150));
  ASSERT_LT(took, HY_SEC(5));
  sock_close(fd);
  wait_for(&st.closes, 1, HY_SEC(5));
  ASSERT_EQ(atomic_load(&st.reasons[HY_CLOSE_IDLE_TIMEOUT]), 1);
  ASSERT_OK(hy_server_close(s));

  /* Slowloris: a byte every 100 ms keeps it from being idle, but the read
   * deadline still closes it, since on_timeout says so... here the app
   * uses the read timeout as "a request must complete within": a client
   * trickling bytes is closed by the idle timer if it goes quiet, and by
   * the write-side if it never reads.  With keep_on_timeout the callback
   * decides to keep the connection, and it is kept. */
  static cb_state st2;
  st2.echo = 0;
  hy_server_config_t c2 = HY_SERVER_CONFIG_INIT;
  c2.read_timeout = HY_MS(100);
  s = start_server(rt, &st2, &c2);
  ASSERT_OK(hy_server_addr(s, &a));
  fd = raw_connect(&a);
  t0 = hy_now();
  /* Trickle a byte every 30 ms: each byte restarts the read deadline, so
   * the server closes no sooner than 100 ms after the last byte it read
   * was sent.  (A loaded machine can hold this thread longer than that
   * between bytes; the close is then due, and what is checked is that it
   * was not early.) */
  int64_t sent[10];
  sent[0] = hy_now();
  raw_write(fd, "x", 1);
  for (int i = 1; i < 10; i++) {
    usleep(30000);
    if (atomic_load(&st2.closes) > 0)
      break;
    sent[i] = hy_now();
    if (send(fd, "x", 1, MSG_NOSIGNAL) != 1)
      break; /* closed after the look above */
  }
  wait_for(&st2.closes, 1, HY_SEC(5));
  read_timeout_not_early(&st2, sent, HY_MS(100));
  /* Stop sending: closed by the read timeout. */
  k = raw_read_some(fd, &b, 1);
  ASSERT_LE(k, 0);
  sock_close(fd);
  wait_for(&st2.closes, 1, HY_SEC(5));
  ASSERT_EQ(atomic_load(&st2.reasons[HY_CLOSE_READ_TIMEOUT]), 1);
  ASSERT_GE(atomic_load(&st2.timeouts_seen), 1);
  ASSERT_OK(hy_server_close(s));

  /* on_timeout returning 1 keeps the connection. */
  static cb_state st3;
  st3.keep_on_timeout = 1;
  s = start_server(rt, &st3, &c2);
  ASSERT_OK(hy_server_addr(s, &a));
  fd = raw_connect(&a);
  /* Two read timeouts in a row, counted, not timed: the first one kept
   * the connection, or there would be no second. */
  hy_time_t limit = hy_deadline_in(HY_SEC(20));
  while (atomic_load(&st3.timeouts_seen) < 2 && hy_now() < limit)
    usleep(1000);
  ASSERT_GE(atomic_load(&st3.timeouts_seen), 2);
  ASSERT_EQ(atomic_load(&st3.closes), 0);
  sock_close(fd);
  wait_for(&st3.closes, 1, HY_SEC(5));
  ASSERT_OK(hy_server_close(s));
  close_rt(rt);
  return 0;
}

TEST_IMPL(net_server_peer_reset) {
  hy_runtime_t *rt = new_rt(2);
  static cb_state st;
  st.echo = 1;
  hy_server_t *s = start_server(rt, &st, NULL);
  hy_addr_t a;
  ASSERT_OK(hy_server_addr(s, &a));
  /* More resets than the accept errors in a row that pause accepting
   * (64, net/server.c): a reset is never a reason to back off. */
  enum { RESETS = 100 };
  for (int i = 0; i < RESETS; i++) {
    int fd = raw_connect(&a);
    char big[65536];
    memset(big, 'r', sizeof big);
    raw_write(fd, big, 1 + (size_t)(test_rand() % sizeof big));
    sock_close_reset(fd); /* RST while the server is echoing */
  }
  hy_server_stats_t ss = {.size = sizeof ss};
#ifdef _WIN32
  /* On Windows a connection reset while it still waits in the backlog
   * fails its AcceptEx (counted as an accept error) instead of being
   * accepted: each one is one or the other. */
  /* Settled once every connection is accounted for and every accepted
   * one closed: the stats are read before the closes, since a close read
   * first could belong to an accept that came after it. */
  int64_t until = hy_now() + HY_SEC(10);
  long closes;
  for (;;) {
    ASSERT_OK(hy_server_stats(s, &ss));
    closes = atomic_load(&st.closes);
    if ((ss.accepted + ss.accept_errors == RESETS &&
         closes == (long)ss.accepted) ||
        hy_now() > until)
      break;
    usleep(1000);
  }
  ASSERT_EQ(ss.accepted + ss.accept_errors, RESETS);
  ASSERT_EQ(closes, (long)ss.accepted);
  ASSERT_EQ(atomic_load(&st.reasons[HY_CLOSE_ERROR]) +
                atomic_load(&st.reasons[HY_CLOSE_PEER]),
            (long)ss.accepted);
#else
  /* Linux accepts a connection reset in the backlog like any other. */
  wait_for(&st.closes, RESETS, HY_SEC(10));
  ASSERT_EQ(atomic_load(&st.reasons[HY_CLOSE_ERROR]) +
                atomic_load(&st.reasons[HY_CLOSE_PEER]),
            RESETS);
  ASSERT_OK(hy_server_stats(s, &ss));
  ASSERT_EQ(ss.accepted, RESETS);
  ASSERT_EQ(ss.accept_errors, 0);
#endif
  if (ss.backoffs)
    TEST_FAIL_("the server backed off (last accept error %s)",
               hy_err_name(ss.last_accept_error));
  /* The server keeps going. */
  atomic_long bytes = 0;
  raw_client_arg ca = {a, 2, 5, &bytes, test_rand(), 0};
  raw_echo_client(&ca);
  ASSERT_OK(hy_server_close(s));
  close_rt(rt);
  return 0;
}

TEST_IMPL(net_server_emfile_backoff) {
#ifdef _WIN32
  RETURN_SKIP("Windows has no per-process descriptor limit (RLIMIT_NOFILE) "
              "to lower, so accept cannot be made to fail with EMFILE");
#else
  /* Server and clients are in different processes: the server's process
   * runs out of descriptors, the client's does not. */
  int pp[2], done[2];
  ASSERT_EQ(pipe(pp), 0);
  ASSERT_EQ(pipe(done), 0);
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    /* Client: 30 connections at once, each sends one byte and waits for
     * its echo; they are closed one by one as their echo arrives. */
    close(pp[1]);
    hy_addr_t a;
    ASSERT_EQ(read(pp[0], &a, sizeof a), (ssize_t)sizeof a);
    int fds[30];
    for (int i = 0; i < 30; i++) {
      fds[i] = raw_connect(&a);
      ASSERT(fds[i] >= 0);
      raw_write(fds[i], "e", 1);
    }
    int ok = 0;
    for (int i = 0; i < 30; i++) {
      char b;
      raw_read(fds[i], &b, 1);
      ok += b == 'e';
      sock_close(fds[i]);
    }
    _exit(ok == 30 ? 0 : 1);
  }
  close(pp[0]);
  hy_runtime_t *rt = new_rt(2);
  /* Room for the listening socket and a handful of connections only -
   * set before the server starts: io_uring reads the limit when an accept
   * is prepared, and a multishot accept is prepared once. */
  int probe = dup(0);
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = (rlim_t)probe + 1 + 4;
  close(probe);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  static cb_state st;
  st.echo = 1;
  hy_server_t *s = start_server(rt, &st, NULL);
  hy_addr_t a;
  ASSERT_OK(hy_server_addr(s, &a));
  ASSERT_EQ(write(pp[1], &a, sizeof a), (ssize_t)sizeof a);
  int status;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  wait_for(&st.closes, 30, HY_SEC(10));
  hy_server_stats_t ss = {.size = sizeof ss};
  ASSERT_OK(hy_server_stats(s, &ss));
  ASSERT_EQ(ss.accepted, 30);
  ASSERT_GT(ss.backoffs, 0);
  ASSERT(ss.last_accept_error == HY_EMFILE ||
         ss.last_accept_error == HY_ENFILE);
  /* Backing off, not spinning: each back-off ends one failed accept per
   * pending accept slot, and back-offs are at least 10 ms apart. */
  ASSERT_LE(ss.accept_errors, (ss.backoffs + 1) * 2 * 4 * 2);
  fprintf(stderr, "accept errors %" PRIu64 ", back-offs %" PRIu64 "\n",
          ss.accept_errors, ss.backoffs);
  ASSERT_OK(hy_server_close(s));
  close_rt(rt);
  close(done[0]);
  close(done[1]);
  return 0;
#endif
}

/* Shutdown with 1,000 live connections: every request that was accepted
 * gets its answer (the drain phase serves them), then the cancel phase
 * closes the connections with HY_CLOSE_SHUTDOWN.  The requests go out
 * while the shutdown starts, so some may reach a connection already
 * closed: a request the server read must be answered, and one whose send
 * ended before the shutdown began must have been read. */
typedef struct {
  hy_addr_t addr;
  int from, to;
  int *fds;
  atomic_long *answered;
  int64_t *sent_at; /* per connection: when its request was fully sent */
  char *got;        /* per connection: its answer came back */
} shut_arg;

static void *shut_connect(void *p) {
  shut_arg *a = p;
  for (int i = a->from; i < a->to; i++) {
    a->fds[i] = raw_connect(&a->addr);
    ASSERT(a->fds[i] >= 0);
  }
  return NULL;
}

static void *shut_request(void *p) {
  shut_arg *a = p;
  for (int i = a->from; i < a->to; i++) {
    unsigned v = (unsigned)i, back = 0;
    a->sent_at[i] = HY_FOREVER;
    if (send(a->fds[i], (const char *)&v, 4, MSG_NOSIGNAL) != 4)
      continue; /* closed by the shutdown already */
    a->sent_at[i] = hy_now();
    size_t done = 0;
    while (done < 4) {
      long k = recv(a->fds[i], (char *)&back + done, 4 - done, 0);
      if (k <= 0)
        break;
      done += (size_t)k;
    }
    if (done == 4) {
      ASSERT_EQ(back, v);
      a->got[i] = 1;
      atomic_fetch_add(a->answered, 1);
    }
  }
  return NULL;
}

TEST_IMPL(net_server_shutdown_1000) {
  enum { N = 1000, TH = 10 };
#ifndef _WIN32
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 2 * N + 100)
    RETURN_SKIP("hard RLIMIT_NOFILE below 2100");
  if (rl.rlim_cur < 2 * N + 100) {
    rl.rlim_cur = 2 * N + 100;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  }
#endif
  hy_runtime_t *rt = new_rt(2);
  static cb_state st;
  st.echo = 1;
  hy_server_t *s = start_server(rt, &st, NULL);
  hy_addr_t a;
  ASSERT_OK(hy_server_addr(s, &a));
  int *fds = calloc(N, sizeof *fds);
  int64_t *sent_at = calloc(N, sizeof *sent_at);
  char *got = calloc(N, 1);
  ASSERT(fds && sent_at && got);
  atomic_long answered = 0;
  shut_arg sa[TH];
  pthread_t th[TH];
  for (int i = 0; i < TH; i++) {
    sa[i] = (shut_arg){a,       i * (N / TH), (i + 1) * (N / TH), fds,
                       &answered, sent_at,     got};
    pthread_create(&th[i], NULL, shut_connect, &sa[i]);
  }
  for (int i = 0; i < TH; i++)
    pthread_join(th[i], NULL);
  wait_for(&st.accepts, N, HY_SEC(20));
  /* Requests go out on every connection while the shutdown starts. */
  for (int i = 0; i < TH; i++)
    pthread_create(&th[i], NULL, shut_request, &sa[i]);
  int64_t shut_at = hy_now();
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(300)));
  for (int i = 0; i < TH; i++)
    pthread_join(th[i], NULL);
  /* No accepted request lost: the server answered all it read, and read
   * every request sent before the shutdown began. */
  ASSERT_EQ(atomic_load(&st.bytes), 4 * atomic_load(&answered));
  long before = 0;
  for (int i = 0; i < N; i++)
    if (sent_at[i] < shut_at) {
      before++;
      ASSERT(got[i]);
    }
  fprintf(stderr, "%ld of %d answered, %ld sent before the shutdown\n",
          atomic_load(&answered), N, before);
  ASSERT_EQ(atomic_load(&st.closes), N);
  ASSERT_EQ(atomic_load(&st.reasons[HY_CLOSE_SHUTDOWN]), N);
  /* The clients see the end. */
  for (int i = 0; i < N; i++) {
    char b;
    ASSERT_LE(raw_read_some(fds[i], &b, 1), 0);
    sock_close(fds[i]);
  }
  free(fds);
  free(sent_at);
  free(got);
  ASSERT_OK(hy_server_close(s));
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

/* ------------------------------------------------------------- examples */

/* Starts build/<config>/<prog> 0 127.0.0.1 (any port), reads its
 * "listening on ADDR" line, echoes through it, stops it with SIGINT (a
 * Ctrl+C on Windows) and checks it reports a clean stop. */
static void example_echo(const char *prog) {
  ex_proc_t p;
  int rc = ex_start(&p, prog, "0 127.0.0.1");
  if (rc == -2) {
    fprintf(stderr, "SKIP: no console of its own for the example's Ctrl+C\n");
    exit(TEST_SKIP);
  }
  ASSERT_EQ(rc, 0);
  char line[512] = "";
  ASSERT(fgets(line, sizeof line, p.out));
  fprintf(stderr, "%s", line);
  char *at = strstr(line, "listening on ");
  ASSERT(at);
  char addr[HY_ADDRSTRLEN];
  ASSERT_EQ(sscanf(at + 13, "%63s", addr), 1);
  hy_addr_t a;
  ASSERT_OK(hy_addr_parse(addr, &a));
  for (int k = 0; k < 3; k++) {
    int fd = raw_connect(&a);
    ASSERT(fd >= 0);
    unsigned char msg[3000], back[3000];
    fill(msg, sizeof msg, (unsigned)k);
    raw_write(fd, msg, sizeof msg);
    raw_read(fd, back, sizeof back);
    ASSERT(memcmp(msg, back, sizeof msg) == 0);
    sock_close(fd);
  }
  ASSERT_OK(ex_stop(&p, SIGINT));
  int saw_stop = 0;
  while (fgets(line, sizeof line, p.out)) {
    fprintf(stderr, "%s", line);
    if (strstr(line, "stopped after 3 connections, 9000 bytes echoed"))
      saw_stop = 1;
  }
  ASSERT_EQ(ex_wait(&p), 0);
  ASSERT(saw_stop);
}

TEST_IMPL(net_example_echo_server) {
  example_echo("echo_server");
  return 0;
}

TEST_IMPL(net_example_echo_callbacks) {
  example_echo("echo_callbacks");
  return 0;
}
