/* test-net-nomem.c - out-of-memory sweeps over the net layer.
 *
 * Classic sweeps: for n = 1, 2, 3 ... the nth backing allocation from now
 * on fails (hy__mem_fail_at), one operation runs, the injection is
 * disarmed.  The operation either works or fails with a clean HY_E* code
 * (HY_ENOMEM, or the error of a step that could not go on because an
 * earlier one failed), leaves nothing behind (ASan's leak check and the
 * runtime's own accounting at close) and the next run without a failure
 * works.  A sweep ends when an operation completes without reaching the
 * nth allocation.  The counter is process-wide: an allocation made by a
 * worker of the runtime can be the one that fails, which is the point.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#ifndef _WIN32
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

#include "sock_compat.h"
#include "compat.h"
#include "hydra.h"
#include "alloc/mem.h"
#include "rt_util.h"
#include "test.h"

/* Sweeps stop far below this; reaching it means an operation that never
 * ends without consuming the failure. */
#define SWEEP_MAX 4000

/* 1 when hy__mem_fail_at really makes an allocation fail (the interim
 * allocator cannot). */
static int can_fail(void) {
  hy__mem_fail_at(1);
  void *probe = hy__mem_alloc(16);
  hy__mem_fail_at(0);
  hy__mem_free(probe);
  return probe == NULL;
}

static hy_addr_t loop4(void) {
  hy_addr_t a;
  ASSERT_OK(hy_addr_parse("127.0.0.1:0", &a));
  return a;
}

static void pattern(unsigned char *b, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    b[i] = (unsigned char)(seed * 131u + i * 7u + (i >> 8));
}

/* Runs fn(arg) as a task and returns what it returned, or the spawn's
 * error (itself allowed to be HY_ENOMEM). */
static intptr_t run_task(hy_runtime_t *rt, hy_task_fn fn, void *arg) {
  hy_task_t t;
  int rc = hy_task_spawn(rt, fn, arg, NULL, &t);
  if (rc < 0)
    return rc;
  void *r = NULL;
  ASSERT_OK(hy_task_join(rt, t, &r));
  return (intptr_t)r;
}

/* An error an operation may return when memory ran out in it or in the
 * runtime under it. */
static int clean_error(int rc) { return rc == HY_ENOMEM; }

/* ------------------------------------------------------------ TCP, tasks */

/* One run of a task-style scenario (TCP or UDP), in a task. */
typedef struct {
  hy_runtime_t *rt;
  long arm;        /* > 0: hy__mem_fail_at(arm) when the task starts */
  long left;       /* hy__mem_fail_at(0) when the task ended */
  size_t len;      /* bytes echoed */
  unsigned seed;
  const char *step;/* the step that failed */
  int accept_retried;
} net_run;

/* Sweeps a scenario (a task taking a net_run, returning 0, 1 - went
 * through after a retry - or the HY_E* of the step that failed) twice: on
 * one runtime, warm (its caches and the ports' tables already made), and
 * on a fresh runtime per run, where the ports' first allocations
 * (descriptor tables, message nodes) are part of the run.  Each run with
 * a failure armed must fail cleanly or go through, and a clean run right
 * after it, with memory again, must go through. */
static void sweep_twice(void *(*scenario)(void *), size_t max_len) {
  for (int fresh = 0; fresh < 2; fresh++) {
    hy_runtime_t *rt = fresh ? NULL : test_rt_new(2);
    long n;
    int failures = 0, retried = 0;
    for (n = 1; n < SWEEP_MAX; n++) {
      if (fresh)
        rt = test_rt_new(2);
      net_run r = {rt, n, 0, 1 + (size_t)(test_rand() % max_len),
                   (unsigned)n, NULL, 0};
      int rc = (int)run_task(rt, scenario, &r);
      retried += rc == 1;
      if (rc < 0) {
        if (!clean_error(rc))
          TEST_FAIL_("run %ld: %s failed with %s", n, r.step, hy_err_name(rc));
        failures++;
      }
      net_run ok = {rt, 0, 0, 1 + (size_t)(test_rand() % max_len),
                    (unsigned)n + 7, NULL, 0};
      rc = (int)run_task(rt, scenario, &ok);
      if (rc < 0)
        TEST_FAIL_("clean run after %ld: %s failed with %s", n, ok.step,
                   hy_err_name(rc));
      if (fresh)
        test_rt_close(rt, HY_MS(100));
      if (r.left > 0)
        break; /* the operation ended before its nth allocation */
    }
    fprintf(stderr, "sweep (%s): %ld runs, %d failed cleanly, %d went "
                    "through after a retry\n", fresh ? "fresh" : "warm", n,
            failures, retried);
    ASSERT_LT(n, SWEEP_MAX);
    ASSERT_GT(failures, 0);
    if (!fresh)
      test_rt_close(rt, HY_MS(100));
  }
}

/* listen, connect, accept, write_all both ways, read, close: one task.
 * Loopback completes the handshake without the accept, so one task can
 * play both ends.  Returns 0 or the first error (everything closed). */
static void *tcp_scenario(void *p) {
  net_run *r = p;
  static unsigned char out[70000], in[70000], back[70000];
  hy_listener_t *l = NULL;
  hy_conn_t *cl = NULL, *sv = NULL;
  int rc;
  ASSERT(r->len <= sizeof out);
  pattern(out, r->len, r->seed);
  memset(back, 0, r->len);
  hy_addr_t a = loop4(), la;
  if (r->arm)
    hy__mem_fail_at(r->arm);
  r->step = "listen";
  if ((rc = hy_tcp_listen(r->rt, &a, NULL, &l)) < 0)
    goto done;
  ASSERT_OK(hy_listener_addr(l, &la));
  r->step = "connect";
  if ((rc = hy_tcp_connect(r->rt, &la, &cl)) < 0)
    goto done;
  r->step = "accept";
  if ((rc = hy_tcp_accept(l, &sv)) < 0) {
    if (rc != HY_ENOMEM)
      goto done;
    /* Nothing was lost: with memory again, the connection is there for
     * the next accept, and the echo below goes through it. */
    r->left = hy__mem_fail_at(0);
    r->arm = 0;
    r->accept_retried = 1;
    if ((rc = hy_tcp_accept_until(l, hy_now() + HY_SEC(10), &sv)) < 0)
      TEST_FAIL_("accept after HY_ENOMEM: %s", hy_err_name(rc));
  }
  r->step = "write";
  size_t sent = 0;
  if ((rc = hy_conn_write_all(cl, out, r->len, &sent)) < 0)
    goto done;
  ASSERT_EQ(sent, r->len);
  r->step = "read";
  size_t got = 0;
  if ((rc = hy_conn_read_exactly(sv, in, r->len, &got)) < 0)
    goto done;
  ASSERT(memcmp(in, out, r->len) == 0);
  r->step = "echo";
  if ((rc = hy_conn_write_all(sv, in, r->len, NULL)) < 0)
    goto done;
  r->step = "read back";
  if ((rc = hy_conn_read_exactly(cl, back, r->len, &got)) < 0)
    goto done;
  ASSERT(memcmp(back, out, r->len) == 0);
  /* End of stream arrives after the close. */
  r->step = "close";
  ASSERT_OK(hy_conn_close(sv));
  sv = NULL;
  char c;
  rc = hy_conn_read(cl, &c, 1);
  if (rc > 0)
    TEST_FAIL_("a byte after the echo: %d", rc);
  if (rc == 0)
    rc = r->accept_retried; /* 1: it went through, after a retry */
done:
  if (r->arm)
    r->left = hy__mem_fail_at(0);
  if (sv)
    ASSERT_OK(hy_conn_close(sv));
  if (cl)
    ASSERT_OK(hy_conn_close(cl));
  if (l)
    ASSERT_OK(hy_listener_close(l));
  return (void *)(intptr_t)rc;
}

TEST_IMPL(net_nomem_tcp_task) {
  if (!can_fail())
    RETURN_SKIP("allocator cannot fail on demand");
  sweep_twice(tcp_scenario, 70000);
  return 0;
}

/* ------------------------------------------------------------------ UDP */

/* Receives on u the r->len bytes of out (from whom in *from, unless NULL):
 * returns their count, or the receive's HY_E*.  Loopback does not drop a
 * datagram that was sent, so a time-out (the deadline only bounds a hang)
 * fails the test; `what` names the datagram. */
static int udp_recv_same(net_run *r, hy_udp_t *u, const unsigned char *out,
                         hy_addr_t *from, const char *what) {
  unsigned char in[1300];
  int rc = hy_udp_recv_from_until(u, in, sizeof in, from,
                                  hy_now() + HY_SEC(10));
  if (rc == HY_ETIMEDOUT)
    TEST_FAIL_("a %s sent (%zu bytes) never arrived", what, r->len);
  if (rc < 0)
    return rc;
  ASSERT_EQ(rc, r->len);
  ASSERT(memcmp(in, out, r->len) == 0);
  return rc;
}

static void *udp_scenario(void *p) {
  net_run *r = p;
  unsigned char out[1200];
  hy_udp_t *x = NULL, *y = NULL;
  hy_addr_t a = loop4(), ya, from;
  int rc;
  pattern(out, r->len, r->seed);
  if (r->arm)
    hy__mem_fail_at(r->arm);
  r->step = "bind";
  if ((rc = hy_udp_bind(r->rt, &a, 0, &x)) < 0)
    goto done;
  r->step = "bind 2";
  if ((rc = hy_udp_bind(r->rt, &a, 0, &y)) < 0)
    goto done;
  ASSERT_OK(hy_udp_local_addr(y, &ya));
  r->step = "send";
  if ((rc = hy_udp_send_to(x, out, r->len, &ya)) < 0)
    goto done;
  ASSERT_EQ(rc, r->len);
  r->step = "recv";
  if ((rc = udp_recv_same(r, y, out, &from, "datagram")) < 0)
    goto done;
  r->step = "reply";
  if ((rc = hy_udp_send_to(y, out, r->len, &from)) < 0)
    goto done;
  r->step = "recv reply";
  if ((rc = udp_recv_same(r, x, out, NULL, "reply")) < 0)
    goto done;
  rc = 0;
done:
  if (r->arm)
    r->left = hy__mem_fail_at(0);
  if (x)
    ASSERT_OK(hy_udp_close(x));
  if (y)
    ASSERT_OK(hy_udp_close(y));
  return (void *)(intptr_t)rc;
}

TEST_IMPL(net_nomem_udp) {
  if (!can_fail())
    RETURN_SKIP("allocator cannot fail on demand");
  sweep_twice(udp_scenario, 1200);
  return 0;
}

/* -------------------------------------------------------------- resolve */

typedef struct {
  hy_runtime_t *rt;
  long arm, left;
  const char *host;
  hy_addr_t addrs[4];
} res_run;

static void *res_scenario(void *p) {
  res_run *r = p;
  if (r->arm)
    hy__mem_fail_at(r->arm);
  int rc = hy_resolve(r->rt, r->host, 80, HY_AF_INET, r->addrs, 4);
  if (r->arm)
    r->left = hy__mem_fail_at(0);
  return (void *)(intptr_t)rc;
}

static void check_localhost(const res_run *r, int rc) {
  ASSERT_GE(rc, 1);
  char ip[HY_ADDRSTRLEN];
  for (int i = 0; i < rc; i++) {
    ASSERT_EQ(hy_addr_family(&r->addrs[i]), HY_AF_INET);
    ASSERT_EQ(hy_addr_port(&r->addrs[i]), 80);
    ASSERT_GT(hy_addr_format(&r->addrs[i], ip, sizeof ip), 0);
  }
}

/* A runtime whose every task stack is a backing allocation of its own
 * (stacks so large that a chunk of the stack cache holds one), so that a
 * task that is to start can find no memory for its stack. */
static hy_runtime_t *rt_big_stacks(int workers) {
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = workers;
  o.stack_size = (size_t)5 << 20;
  return test_rt_new_with(&o);
}

/* A fresh runtime each run, with stacks that each need a new mapping: the
 * lookup's helper task can find no stack when it is to start. */
TEST_IMPL(net_nomem_resolve) {
  if (!can_fail())
    RETURN_SKIP("allocator cannot fail on demand");
  /* "localhost" comes from the hosts file: no network needed.  The
   * numeric one needs no lookup and allocates nothing. */
  const char *hosts[] = {"localhost", "127.0.0.1"};
  for (int h = 0; h < 2; h++) {
    long n;
    int failures = 0;
    for (n = 1; n < SWEEP_MAX; n++) {
      hy_runtime_t *rt = rt_big_stacks(2);
      res_run r = {rt, n, 0, hosts[h], {{0, {{0}}}}};
      int rc = (int)run_task(rt, res_scenario, &r);
      if (rc < 0) {
        if (!clean_error(rc))
          TEST_FAIL_("run %ld (%s) failed with %s", n, hosts[h],
                     hy_err_name(rc));
        failures++;
      } else {
        check_localhost(&r, rc);
      }
      res_run ok = {rt, 0, 0, hosts[h], {{0, {{0}}}}};
      rc = (int)run_task(rt, res_scenario, &ok);
      check_localhost(&ok, rc);
      test_rt_close(rt, HY_MS(100));
      if (r.left > 0)
        break;
    }
    fprintf(stderr, "sweep %s: %ld runs, %d failed cleanly\n", hosts[h], n,
            failures);
    ASSERT_LT(n, SWEEP_MAX);
    if (h == 0)
      ASSERT_GT(failures, 0);
  }
  return 0;
}

/* --------------------------------------------------------------- server */

typedef struct {
  atomic_long accepts, closes, errors, write_enomem;
  atomic_long reasons[16];
  atomic_long bytes;
} srv_state;

static int s_accept(hy_server_t *s, hy_sconn_t *c) {
  srv_state *st = hy_server_user(s);
  (void)c;
  atomic_fetch_add(&st->accepts, 1);
  return 0;
}

/* Echoes; output the server cannot buffer (no memory) ends the
 * connection, so that the peer sees a close and not a silent gap. */
static void s_read(hy_server_t *s, hy_sconn_t *c, const void *d, size_t n) {
  srv_state *st = hy_server_user(s);
  atomic_fetch_add(&st->bytes, (long)n);
  int rc = hy_sconn_write(c, d, n);
  if (rc == HY_ENOMEM) {
    atomic_fetch_add(&st->write_enomem, 1);
    hy_sconn_close(c, 0);
  } else if (rc < 0) {
    TEST_FAIL_("hy_sconn_write: %s", hy_err_name(rc));
  }
}

static void s_close(hy_server_t *s, hy_sconn_t *c, int reason, int error) {
  srv_state *st = hy_server_user(s);
  (void)c;
  ASSERT(reason >= HY_CLOSE_PEER && reason <= HY_CLOSE_SHUTDOWN);
  if (error)
    atomic_fetch_add(&st->errors, 1);
  atomic_fetch_add(&st->reasons[reason], 1);
  atomic_fetch_add(&st->closes, 1);
}

static const hy_server_callbacks_t srv_cb = {s_accept, s_read, NULL, NULL,
                                             s_close};

static hy_server_config_t srv_config(srv_state *st) {
  hy_server_config_t cfg = HY_SERVER_CONFIG_INIT;
  cfg.addr = loop4();
  cfg.user = st;
  cfg.read_buffer_size = 4096;
  return cfg;
}

static size_t client_echo(const hy_addr_t *a, size_t len, unsigned seed);

/* A fresh runtime each time, so that the server's own task (its drainer)
 * needs a new stack when it first runs, and that can fail too. */
TEST_IMPL(net_nomem_server_start) {
  if (!can_fail())
    RETURN_SKIP("allocator cannot fail on demand");
  static srv_state st;
  hy_server_config_t cfg = srv_config(&st);
  long n;
  int failures = 0;
  for (n = 1; n < SWEEP_MAX; n++) {
    hy_runtime_t *rt = test_rt_new(2);
    hy_server_t *s = NULL;
    hy__mem_fail_at(n);
    int rc = hy_server_start(rt, &cfg, &srv_cb, &s);
    /* Long enough for the workers to take the start packets and run the
     * drainer while the failure may still be to come. */
    hy_sleep(NULL, HY_MS(2));
    long left = hy__mem_fail_at(0);
    if (rc < 0) {
      if (!clean_error(rc))
        TEST_FAIL_("run %ld: hy_server_start failed with %s", n,
                   hy_err_name(rc));
      ASSERT(s == NULL);
      failures++;
    } else {
      /* It serves (accepts that failed are started again after a
       * back-off), and closes. */
      hy_addr_t a;
      ASSERT_OK(hy_server_addr(s, &a));
      size_t got = client_echo(&a, 1000, (unsigned)n);
      if (got != 1000) {
        hy_server_stats_t ss = {.size = sizeof ss};
        ASSERT_OK(hy_server_stats(s, &ss));
        TEST_FAIL_("run %ld: %zu of 1000 bytes echoed after a start that "
                   "%s (accepted %" PRIu64 ", accept errors %" PRIu64
                   ", backoffs %" PRIu64 ", closes %ld, errors %ld, "
                   "write HY_ENOMEM %ld)", n, got,
                   left ? "did not fail" : "had a failure", ss.accepted,
                   ss.accept_errors, ss.backoffs, atomic_load(&st.closes),
                   atomic_load(&st.errors), atomic_load(&st.write_enomem));
      }
      ASSERT_OK(hy_server_close(s));
    }
    test_rt_close(rt, HY_MS(100));
    if (left > 0)
      break;
  }
  fprintf(stderr, "sweep: %ld runs, %d failed cleanly\n", n, failures);
  ASSERT_LT(n, SWEEP_MAX);
  ASSERT_GT(failures, 0);
  return 0;
}

/* One client connection: sends len bytes (all of them before reading: the
 * server buffers its answer while the client does not read, as with a
 * slow peer), then reads.  Returns how many echoed bytes came back (all
 * of them matching), len when served fully.  A client never waits more
 * than the socket timeouts: a connection left hanging fails the test. */
enum { CLIENT_MAX = 300000 };

static size_t client_echo(const hy_addr_t *a, size_t len, unsigned seed) {
  unsigned char *out = malloc(CLIENT_MAX), *in = malloc(CLIENT_MAX);
  ASSERT(out && in && len <= CLIENT_MAX);
  int fd = sock_open(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
  ASSERT(fd >= 0);
  if (connect(fd, (const struct sockaddr *)a->sa.raw, (int)a->len) < 0)
    TEST_FAIL_("connect: error %d", sock_errno());
  sock_rcvtimeo(fd, 15000);
#ifndef _WIN32
  struct timeval tv = {15, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
#endif
  pattern(out, len, seed);
  size_t done = 0;
  int cut = 0;
  while (done < len) {
    ssize_t k = send(fd, (const char *)out + done, len - done, MSG_NOSIGNAL);
    if (k <= 0) {
      int e = sock_errno();
      if (k < 0 && e == EINTR) /* see rt_host_thread_not_interrupted */
        TEST_FAIL_("send interrupted (EINTR) after %zu of %zu bytes", done,
                   len);
      if (e == EAGAIN || e == EWOULDBLOCK)
        TEST_FAIL_("send hangs after %zu of %zu bytes", done, len);
      cut = 1; /* closed by the server */
      break;
    }
    done += (size_t)k;
  }
  if (!cut)
    shutdown(fd, 1); /* the server sees the end after the data */
  size_t got = 0;
  for (;;) {
    ssize_t k = recv(fd, (char *)in + got, CLIENT_MAX - got, 0);
    if (k < 0) {
      int e = sock_errno();
      if (e == EINTR)
        TEST_FAIL_("recv interrupted (EINTR) after %zu of %zu bytes", got,
                   len);
      if (e == EAGAIN || e == EWOULDBLOCK)
        TEST_FAIL_("no answer and no close after %zu of %zu bytes", got, len);
      break; /* reset */
    }
    if (k == 0)
      break;
    got += (size_t)k;
    ASSERT(got <= len);
  }
  ASSERT(memcmp(in, out, got) == 0);
  sock_close(fd);
  free(out);
  free(in);
  return got;
}

typedef struct {
  hy_addr_t addr;
  size_t len;
  unsigned seed;
  size_t got;
} client_arg;

static void *client_thread(void *p) {
  client_arg *c = p;
  c->got = client_echo(&c->addr, c->len, c->seed);
  return NULL;
}

static void wait_closes(srv_state *st, long want) {
  int64_t until = hy_now() + HY_SEC(15);
  while (atomic_load(&st->closes) < want && hy_now() < until)
    hy_sleep(NULL, HY_MS(1));
  ASSERT_GE(atomic_load(&st->closes), want);
}

/* Connections arriving at once while allocations fail in the server (its
 * accepts, per-connection state, read buffers, output kept for peers that
 * do not read yet): each is served fully, or closed with the reason
 * visible (on_close with an error, a write the server could not buffer,
 * or an accept error in the stats).  The server goes on serving, and
 * closes cleanly. */
TEST_IMPL(net_nomem_server_conns) {
  if (!can_fail())
    RETURN_SKIP("allocator cannot fail on demand");
  hy_runtime_t *rt = test_rt_new(2);
  static srv_state st;
  hy_server_config_t cfg = srv_config(&st);
  hy_server_t *s;
  ASSERT_OK(hy_server_start(rt, &cfg, &srv_cb, &s));
  hy_addr_t a;
  ASSERT_OK(hy_server_addr(s, &a));
  enum { CLIENTS = 6 };
  long n, cut = 0, consumed = 0;
  hy_server_stats_t ss = {.size = sizeof ss};
  for (n = 1; n < SWEEP_MAX; n++) {
    ASSERT_OK(hy_server_stats(s, &ss));
    uint64_t errs0 = ss.accept_errors;
    long e0 = atomic_load(&st.errors) + atomic_load(&st.write_enomem);
    client_arg ca[CLIENTS];
    pthread_t th[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
      ca[i].addr = a;
      /* One large answer each time: kept in output chunks while its
       * client is still sending. */
      ca[i].len = i == 0 ? 100000 + (size_t)(test_rand() % 200000)
                         : 1 + (size_t)(test_rand() % 20000);
      ca[i].seed = (unsigned)(n * CLIENTS + i);
      ca[i].got = 0;
    }
    hy__mem_fail_at(n);
    for (int i = 0; i < CLIENTS; i++)
      ASSERT_EQ(pthread_create(&th[i], NULL, client_thread, &ca[i]), 0);
    for (int i = 0; i < CLIENTS; i++)
      pthread_join(th[i], NULL);
    long left = hy__mem_fail_at(0);
    if (left == 0)
      consumed++;
    int short_ones = 0;
    for (int i = 0; i < CLIENTS; i++)
      short_ones += ca[i].got < ca[i].len;
    if (short_ones) {
      /* Not served fully: the server must say why. */
      cut += short_ones;
      int64_t until = hy_now() + HY_SEC(10);
      for (;;) {
        ASSERT_OK(hy_server_stats(s, &ss));
        long e = atomic_load(&st.errors) + atomic_load(&st.write_enomem);
        if (e > e0 || ss.accept_errors > errs0)
          break;
        if (hy_now() > until)
          TEST_FAIL_("run %ld: %d connections cut, and no error reported "
                     "(accepted %ld, closes %ld, accept errors %" PRIu64
                     ", live %" PRIu64 ")", n, short_ones,
                     atomic_load(&st.accepts), atomic_load(&st.closes),
                     ss.accept_errors, ss.live);
        hy_sleep(NULL, HY_MS(1));
      }
    }
    /* Every accepted connection ends with on_close. */
    wait_closes(&st, atomic_load(&st.accepts));
    /* With memory again, the server serves. */
    size_t len2 = 1 + (size_t)(test_rand() % 50000);
    ASSERT_EQ(client_echo(&a, len2, (unsigned)n + 1), len2);
    if (left > 0)
      break;
  }
  fprintf(stderr, "sweep: %ld runs, %ld failures consumed, %ld connections "
                  "cut\n", n, consumed, cut);
  ASSERT_LT(n, SWEEP_MAX);
  ASSERT_GT(consumed, 0);
  wait_closes(&st, atomic_load(&st.accepts));
  ASSERT_OK(hy_server_stats(s, &ss));
  ASSERT_EQ(ss.live, 0);
  ASSERT_EQ(atomic_load(&st.closes), atomic_load(&st.accepts));
  ASSERT_OK(hy_server_close(s));
  test_rt_close(rt, HY_MS(100));
  return 0;
}

/* The server's drainer, its one task, holds the runtime's drain and cancel
 * phases open while connections remain.  It gets its stack when it first
 * runs, and if that fails the quiesce spawns another.  On an embedded
 * runtime this thread runs everything, so the failure can be aimed at it
 * (hy__mem_fail_here_at): the sweep stops at the allocation that was the
 * drainer's stack (no task is left after it).  A connection that sends
 * its request only once the drain has begun is then still answered.
 * Without a drainer the drain, with no task left, ends at once, and the
 * cancel closes the connection before the request comes. */
typedef struct {
  hy_addr_t addr;
  atomic_int connected, drain;
  long got;
} drain_run;

static void drain_phase(void *arg, int phase, int worker) {
  (void)worker;
  if (phase == HY_PHASE_DRAIN)
    atomic_store(&((drain_run *)arg)->drain, 1);
}

static void *drain_client(void *p) {
  drain_run *d = p;
  int fd = sock_open(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
  ASSERT(fd >= 0);
  if (connect(fd, (const struct sockaddr *)d->addr.sa.raw, (int)d->addr.len) <
      0)
    TEST_FAIL_("connect: error %d", sock_errno());
  sock_rcvtimeo(fd, 15000);
  atomic_store(&d->connected, 1);
  int64_t until = hy_now() + HY_SEC(15);
  while (!atomic_load(&d->drain) && hy_now() < until)
    hy_sleep(NULL, HY_MS(1));
  ASSERT(atomic_load(&d->drain));
  hy_sleep(NULL, HY_MS(50)); /* well into the drain */
  unsigned char out[64], in[64];
  pattern(out, sizeof out, 7);
  d->got = 0;
  if (send(fd, (const char *)out, sizeof out, MSG_NOSIGNAL) ==
      (long)sizeof out) {
    while (d->got < (long)sizeof in) {
      long k = recv(fd, (char *)in + d->got, sizeof in - (size_t)d->got, 0);
      if (k <= 0)
        break;
      d->got += k;
    }
    ASSERT(memcmp(in, out, (size_t)d->got) == 0);
  }
  sock_close(fd); /* the last connection: the drain can end */
  return NULL;
}

TEST_IMPL(net_nomem_server_drainer) {
  if (!can_fail())
    RETURN_SKIP("allocator cannot fail on demand");
  static srv_state st;
  hy_server_config_t cfg = srv_config(&st);
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = 0;
  for (long n = 1;; n++) {
    ASSERT_LT(n, SWEEP_MAX);
    hy_runtime_t *rt = test_rt_new_with(&o);
    hy_server_t *s;
    ASSERT_OK(hy_server_start(rt, &cfg, &srv_cb, &s));
    hy__mem_fail_here_at(n);
    hy_runtime_run_once(rt, 0);
    long left = hy__mem_fail_at(0);
    if (left > 0)
      TEST_FAIL_("run %ld: the drainer ran without failing", n);
    if (test_tasks_alive(rt) > 0) { /* the failure was another allocation's */
      ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(100)));
      ASSERT_OK(hy_server_close(s));
      ASSERT_OK(hy_runtime_close(rt));
      continue;
    }
    memset(&st, 0, sizeof st);
    drain_run d = {0};
    ASSERT_OK(hy_server_addr(s, &d.addr));
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, drain_client, &d), 0);
    int64_t until = hy_now() + HY_SEC(15);
    while ((!atomic_load(&d.connected) || atomic_load(&st.accepts) < 1) &&
           hy_now() < until)
      hy_runtime_run_once(rt, HY_MS(1));
    ASSERT_EQ(atomic_load(&st.accepts), 1);
    hy_runtime_on_phase(rt, drain_phase, &d);
    /* A grace far longer than the client's wait: the drain lasts until
     * the client has had its answer and closed, which ends the run. */
    ASSERT_OK(hy_runtime_shutdown(rt, HY_SEC(5)));
    pthread_join(th, NULL);
    fprintf(stderr, "run %ld: the drainer's stack failed; %ld of 64 bytes "
                    "answered in the drain\n", n, d.got);
    ASSERT_EQ(d.got, 64);
    ASSERT_EQ(atomic_load(&st.closes), 1);
    ASSERT_EQ(atomic_load(&st.reasons[HY_CLOSE_PEER]), 1);
    ASSERT_OK(hy_server_close(s));
    ASSERT_OK(hy_runtime_close(rt));
    return 0;
  }
}
