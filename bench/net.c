/* bench/net.c - TCP echo on loopback (bench/run net): Hydra's echo servers
 * and the load generator that measures every server the same way.
 *
 *   net server-cb PORT [WORKERS]   the callback server (hy_server_t)
 *   net server-task PORT [WORKERS] task per connection (WORKERS: 1)
 *   net load PORT PID NAME CASE C S D [RATE]
 *
 * The load generator is one thread on epoll.  It opens C connections that
 * each send S bytes and wait for the whole echo (closed loop), checks every
 * echoed byte, and after a warm-up measures for D seconds: requests/s,
 * MB/s, latency percentiles, and the server's CPU time (from
 * /proc/PID/stat) over the window.  With RATE > 0 the sends are paced to
 * RATE messages/s in total.  CASE "idle" instead opens C connections,
 * echoes one 64-byte message on each, leaves them idle and reports the
 * server's RSS growth per connection;
 * CASE "connect-rate" has C connectors open, echo S bytes over and reset
 * connections in a loop and reports connections/s; its PORT, PID and NAME
 * may be comma-separated lists of up to 16 servers, which then take turns
 * in slices of 100 ms (see connect_rate).
 * Output: `CASE<TAB>NAME<TAB>value<TAB>unit` lines (see bench/groups/net.sh).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hydra.h"

/* ------------------------------------------------------------- servers */

static void on_read(hy_server_t *s, hy_sconn_t *c, const void *d, size_t n) {
  (void)s;
  if (hy_sconn_write(c, d, n) == HY_EAGAIN)
    hy_sconn_pause_read(c, 1);
}

static void on_write_done(hy_server_t *s, hy_sconn_t *c) {
  (void)s;
  hy_sconn_pause_read(c, 0);
}

static hy_runtime_t *mk(int workers) {
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = workers;
  hy_runtime_t *rt;
  int rc = hy_runtime_new(&o, &rt);
  if (rc < 0) {
    fprintf(stderr, "runtime: %s\n", hy_strerror(rc));
    exit(1);
  }
  return rt;
}

static void wait_signal(void) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  int sig;
  sigwait(&s, &sig);
}

static void block_signals(void) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
}

static int server_cb(int port, int workers) {
  block_signals();
  hy_runtime_t *rt = mk(workers);
  hy_server_config_t cfg = HY_SERVER_CONFIG_INIT;
  hy_addr_from_ip("127.0.0.1", port, &cfg.addr);
  cfg.read_buffer_size = 16384;
  cfg.max_output = 1 << 20;
  cfg.backlog = 4096;
  hy_server_callbacks_t cb = {NULL, on_read, on_write_done, NULL, NULL};
  hy_server_t *s;
  int rc = hy_server_start(rt, &cfg, &cb, &s);
  if (rc < 0) {
    fprintf(stderr, "server: %s\n", hy_strerror(rc));
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  wait_signal();
  hy_runtime_shutdown(rt, HY_MS(10));
  hy_server_close(s);
  hy_runtime_close(rt);
  return 0;
}

typedef struct {
  hy_runtime_t *rt;
  hy_listener_t *l;
} tsrv;

static void *t_conn(void *arg) {
  hy_conn_t *c = arg;
  char buf[16384];
  hy_conn_set_nodelay(c, 1);
  for (;;) {
    int n = hy_conn_read(c, buf, sizeof buf);
    if (n <= 0 || hy_conn_write_all(c, buf, (size_t)n, NULL) != n)
      break;
  }
  hy_conn_close(c);
  return NULL;
}

static void *t_accept(void *arg) {
  tsrv *s = arg;
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.stack_size = 32 * 1024;
  for (;;) {
    hy_conn_t *c;
    int rc = hy_tcp_accept(s->l, &c);
    if (rc == HY_ECANCELED || rc == HY_ECLOSED)
      break;
    if (rc < 0) {
      hy_sleep(s->rt, HY_MS(10));
      continue;
    }
    if (hy_task_spawn(s->rt, t_conn, c, &o, NULL) < 0)
      hy_conn_close(c);
  }
  return NULL;
}

static int server_task(int port, int workers) {
  block_signals();
  tsrv s;
  s.rt = mk(workers);
  hy_addr_t a;
  hy_addr_from_ip("127.0.0.1", port, &a);
  hy_listen_opts_t lo = HY_LISTEN_OPTS_INIT;
  lo.backlog = 4096;
  int rc = hy_tcp_listen(s.rt, &a, &lo, &s.l);
  if (rc < 0) {
    fprintf(stderr, "listen: %s\n", hy_strerror(rc));
    return 1;
  }
  hy_task_spawn(s.rt, t_accept, &s, NULL, NULL);
  printf("ready\n");
  fflush(stdout);
  wait_signal();
  hy_listener_close(s.l);
  hy_runtime_shutdown(s.rt, HY_MS(10));
  hy_runtime_close(s.rt);
  return 0;
}

/* ------------------------------------------------------ load generator */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double cpu_secs(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  char buf[2048];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p)
    return 0;
  unsigned long ut = 0, st = 0;
  /* fields after ")": state(3) ... utime(14) stime(15) */
  int field = 2;
  for (char *q = p + 1; *q && field < 15; q++) {
    if (*q == ' ') {
      field++;
      if (field == 14)
        ut = strtoul(q + 1, NULL, 10);
      if (field == 15)
        st = strtoul(q + 1, NULL, 10);
    }
  }
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* This process's own CPU time (user + system), to tell whether the load
 * generator rather than the server is the bound. */
static double self_cpu_secs(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static long rss_bytes(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/statm", pid);
  FILE *f = fopen(path, "r");
  long pages = 0, res = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &res) != 2)
      res = 0;
    fclose(f);
  }
  return res * sysconf(_SC_PAGESIZE);
}

typedef struct lconn {
  int fd;
  int want_out; /* EPOLLOUT is watched: a send was partial */
  size_t sent, got;
  int64_t t0;
  int busy;
  struct lconn *next_idle;
} lconn;

/* Sends what is left of the request; watches EPOLLOUT only while the
 * socket does not take it all. */
static void push(int ep, struct lconn *c, const unsigned char *msg, size_t S) {
  if (c->sent < S) {
    ssize_t k = send(c->fd, msg + c->sent, S - c->sent, MSG_NOSIGNAL);
    if (k > 0)
      c->sent += (size_t)k;
  }
  int want = c->sent < S;
  if (want != c->want_out) {
    struct epoll_event e = {EPOLLIN | EPOLLET | (want ? EPOLLOUT : 0),
                            {.ptr = c}};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
    c->want_out = want;
  }
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* A non-blocking connect to 127.0.0.1:port.  nodelay: set TCP_NODELAY
 * (the echo loops send one request after another; a connect-rate
 * connection sends once, which Nagle never holds back).  linger0: close
 * will reset the connection (SO_LINGER 0). */
static int connect_to(int port, int nodelay, int linger0) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    perror("socket");
    exit(1);
  }
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int one = 1;
  if (nodelay)
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (linger0) {
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 &&
      errno != EINPROGRESS) {
    perror("connect");
    exit(1);
  }
  return fd;
}

/* Connect-rate mode: C connectors, each in a loop: connect, send S bytes,
 * wait for their echo, close with a reset (RST, so neither side keeps the
 * port in TIME_WAIT and the ephemeral ports are not the limit).  Counts
 * the connections completed per second and the server's CPU time per
 * connection.
 *
 * The generator's own cost per connection is kept low, as it is the same
 * for every server and must not be the bound (it was, at ~99% of its CPU
 * with 10 system calls per connection).  Each connector keeps one socket
 * for its whole run: connect(AF_UNSPEC) ends an established connection
 * with a RST (tcp_disconnect) and leaves the socket free to connect again
 * from a new ephemeral port, so the server sees exactly what a fresh
 * socket closed with SO_LINGER 0 would give it (a SYN from a new port, the
 * request, a RST), while the generator skips socket, setsockopt, close and
 * epoll_ctl ADD (the socket stays in the epoll set, EPOLLIN edge-
 * triggered).  On loopback the handshake is done by the time connect
 * returns, so the request is sent at once (EPOLLOUT is waited for only if
 * the socket is not connected yet: "sent late" counts those).  Per
 * connection: connect, send, recv, connect(AF_UNSPEC).
 *
 * Several servers are measured in one run, taking turns in slices of
 * rc_slice_ns: the connectors run against one server until its slice ends,
 * finish the connections they have begun, and move to the next server.
 * The rate of this host changes by tens of percent over seconds (the
 * kernel's share of a connection is most of its cost, and the host's speed
 * at it moves); servers measured one after another each met a different
 * stretch of it, while slices a tenth of a second long spread every
 * stretch over all of them.  Each server gets D seconds of slices after a
 * warm-up of RC_WARM_NS of slices that are not counted.  NET_BENCH_SLICE_MS
 * sets another slice length; one server alone is measured the same way,
 * its slices back to back.
 *
 * The load generator is the bound here (~99% of its CPU): on loopback the
 * kernel's work of a handshake, the listener's side of it included, and of
 * the reset runs on the connecting thread's CPU, ~30 us a connection on
 * this host, so every server whose own cost per connection stays below
 * that gets about the generator's rate. */
typedef struct rconn {
  int fd;
  int connected;
  int active; /* has begun a connection of this slice */
  size_t got;
} rconn;

typedef struct rserver {
  struct sockaddr_in sa;
  int pid;
  const char *name;
  long conns, errors, late;
  double secs, cpu, ccpu;
} rserver;

#define RC_WARM_NS 500000000LL /* 500 ms over all servers */
static long long rc_slice_ns = 100000000LL; /* 100 ms */

static long rc_late; /* requests that waited for the connect to finish */
static struct sockaddr_in rc_sa;

/* Connects c's socket (made once) again and sends the request if it can.
 * Returns 0, or -1 if that failed. */
static int rc_open(int ep, rconn *c, const unsigned char *msg, size_t S) {
  if (c->fd < 0) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
      return -1;
    struct epoll_event e = {EPOLLIN | EPOLLET, {.ptr = c}};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
  }
  c->got = 0;
  if (connect(c->fd, (struct sockaddr *)&rc_sa, sizeof rc_sa) < 0 &&
      errno != EINPROGRESS)
    return -1;
  ssize_t k = send(c->fd, msg, S, MSG_NOSIGNAL);
  c->connected = k == (ssize_t)S;
  if (!c->connected) {
    if (k >= 0 || (errno != EAGAIN && errno != ENOTCONN))
      return -1;
    rc_late++;
    struct epoll_event e = {EPOLLIN | EPOLLOUT | EPOLLET, {.ptr = c}};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
  }
  return 0;
}

/* Ends c's connection with a reset: connect(AF_UNSPEC) disconnects an
 * established TCP socket with a RST and leaves it free to connect again. */
static void rc_close_reset(rconn *c) {
  struct sockaddr sa = {.sa_family = AF_UNSPEC};
  if (c->fd >= 0 && connect(c->fd, &sa, sizeof sa) < 0) {
    close(c->fd);
    c->fd = -1;
  }
}

static void rc_next(int ep, rconn *c, const unsigned char *msg,
                    size_t S, long *errors) {
  for (int tries = 0; rc_open(ep, c, msg, S) < 0; tries++) {
    (*errors)++;
    if (c->fd >= 0)
      close(c->fd);
    c->fd = -1;
    if (tries == 1000) {
      fprintf(stderr, "load: the server refuses connections\n");
      exit(1);
    }
  }
  c->active = 1;
}

/* One slice: the C connectors run against the server at rc_sa until
 * t_stop, then finish the connections they have begun (a connection not
 * done a second after t_stop counts as failed).  Returns the connections
 * completed; adds the failed ones to *errors. */
static long rc_slice(int ep, rconn *cs_, int C, const unsigned char *msg,
                     size_t S, int64_t t_stop, long *errors) {
  unsigned char in[4096];
  int active = 0;
  long done = 0;
  for (int i = 0; i < C; i++) {
    rc_next(ep, &cs_[i], msg, S, errors);
    active++;
  }
  struct epoll_event evs[256];
  while (active > 0) {
    int64_t now = now_ns();
    int stopping = now >= t_stop;
    if (now >= t_stop + 1000000000LL) {
      for (int i = 0; i < C; i++) {
        if (cs_[i].active) {
          (*errors)++;
          cs_[i].active = 0;
          rc_close_reset(&cs_[i]);
        }
      }
      break;
    }
    int n = epoll_wait(ep, evs, 256, 100);
    for (int i = 0; i < n; i++) {
      rconn *c = evs[i].data.ptr;
      int failed = 0;
      if (!c->active)
        continue; /* an edge left from this connector's last reset */
      if (!c->connected) {
        /* The slow path: the connect had not finished at once. */
        ssize_t k = send(c->fd, msg, S, MSG_NOSIGNAL);
        if (k < 0 && (errno == EAGAIN || errno == ENOTCONN))
          continue;
        if (k != (ssize_t)S) {
          failed = 1;
        } else {
          c->connected = 1;
          struct epoll_event e = {EPOLLIN | EPOLLET, {.ptr = c}};
          epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
          continue;
        }
      } else {
        /* Edge-triggered: read until the echo is whole or the socket is
         * empty (the server sends nothing but the echo). */
        for (;;) {
          ssize_t k = recv(c->fd, in, S - c->got, MSG_DONTWAIT);
          if (k < 0 && errno == EAGAIN)
            break;
          if (k <= 0 || memcmp(in, msg + c->got, (size_t)k) != 0) {
            failed = 1;
            break;
          }
          c->got += (size_t)k;
          if (c->got == S)
            break;
        }
        if (!failed && c->got < S)
          continue;
        if (!failed)
          done++;
      }
      if (failed)
        (*errors)++;
      rc_close_reset(c);
      c->active = 0;
      if (!stopping) {
        rc_next(ep, c, msg, S, errors);
      } else {
        active--;
      }
    }
  }
  return done;
}

static int connect_rate(rserver *sv, int m, const char *cs, int C, size_t S,
                        double D) {
  if (S == 0)
    S = 1;
  if (S > 4096)
    S = 4096;
  unsigned char msg[4096];
  for (size_t i = 0; i < S; i++)
    msg[i] = (unsigned char)(i * 7 + 1);
  int ep = epoll_create1(0);
  rconn *cs_ = calloc((size_t)C, sizeof *cs_);
  for (int i = 0; i < C; i++)
    cs_[i].fd = -1;
  long per = (long)(D * 1e9 / (double)rc_slice_ns + 0.5);
  if (per < 1)
    per = 1;
  long warm = (RC_WARM_NS + rc_slice_ns - 1) / rc_slice_ns;
  for (long k = 0; k < warm + per * m; k++) {
    rserver *s = &sv[k % m];
    int counted = k >= warm;
    rc_sa = s->sa;
    long late0 = rc_late, errors = 0;
    double cpu0 = cpu_secs(s->pid), ccpu0 = self_cpu_secs();
    int64_t t0 = now_ns();
    long done = rc_slice(ep, cs_, C, msg, S, t0 + rc_slice_ns, &errors);
    int64_t t1 = now_ns();
    if (counted) {
      s->conns += done;
      s->errors += errors;
      s->late += rc_late - late0;
      s->secs += (double)(t1 - t0) / 1e9;
      s->cpu += cpu_secs(s->pid) - cpu0;
      s->ccpu += self_cpu_secs() - ccpu0;
    }
  }
  for (int k = 0; k < m; k++) {
    rserver *s = &sv[k];
    double rate = s->secs > 0 ? (double)s->conns / s->secs : 0;
    double per_conn = s->conns ? 1e6 / (double)s->conns : 0.0;
    printf("%s\t%s\t%.0f\tconn/s\n", cs, s->name, rate);
    fprintf(stderr, "# %s %s: %.0f conn/s in %ld slices of %lld ms, "
            "%ld failed, %ld sent late, server cpu %.0f%% (%.1f us/conn), "
            "client cpu %.0f%% (%.1f us/conn)\n", cs, s->name, rate, per,
            rc_slice_ns / 1000000, s->errors, s->late,
            s->secs > 0 ? s->cpu * 100 / s->secs : 0.0, s->cpu * per_conn,
            s->secs > 0 ? s->ccpu * 100 / s->secs : 0.0, s->ccpu * per_conn);
  }
  fflush(stdout);
  for (int i = 0; i < C; i++) {
    rc_close_reset(&cs_[i]);
    if (cs_[i].fd >= 0)
      close(cs_[i].fd);
  }
  free(cs_);
  close(ep);
  return 0;
}

/* Splits "a,b,c" into at most max fields in place; returns how many. */
static int split_list(char *s, char **out, int max) {
  int n = 0;
  for (char *p = s; n < max;) {
    out[n++] = p;
    p = strchr(p, ',');
    if (!p)
      break;
    *p++ = 0;
  }
  return n;
}

static int load(int port, int pid, const char *name, const char *cs, int C,
                size_t S, double D, double rate) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  if (strcmp(cs, "idle") == 0) {
    long before = rss_bytes(pid);
    int *fds = calloc((size_t)C, sizeof *fds);
    for (int i = 0; i < C; i++) {
      fds[i] = connect_to(port, 1, 0);
      if (i % 256 == 255)
        usleep(1000);
    }
    /* Each connection echoes one message first (a kept-alive client that
     * went quiet, not one that never spoke), so what the server keeps per
     * connection after serving it shows. */
    unsigned char m[64], e[64];
    memset(m, 'i', sizeof m);
    for (int i = 0; i < C; i++) {
      struct pollfd pf = {fds[i], POLLOUT, 0};
      poll(&pf, 1, 5000);
      if (send(fds[i], m, sizeof m, MSG_NOSIGNAL) != (ssize_t)sizeof m) {
        fprintf(stderr, "load: idle send failed\n");
        return 1;
      }
      size_t got = 0;
      while (got < sizeof m) {
        pf.events = POLLIN;
        if (poll(&pf, 1, 5000) <= 0) {
          fprintf(stderr, "load: idle echo timed out\n");
          return 1;
        }
        ssize_t k = recv(fds[i], e + got, sizeof m - got, MSG_DONTWAIT);
        if (k <= 0 && !(k < 0 && errno == EAGAIN)) {
          fprintf(stderr, "load: idle connection lost\n");
          return 1;
        }
        if (k > 0)
          got += (size_t)k;
      }
    }
    sleep(2);
    long after = rss_bytes(pid);
    printf("%s\t%s\t%.0f\tbytes/conn\n", cs, name,
           (double)(after - before) / C);
    for (int i = 0; i < C; i++)
      close(fds[i]);
    return 0;
  }
  int ep = epoll_create1(0);
  lconn *cs_ = calloc((size_t)C, sizeof *cs_);
  unsigned char *msg = malloc(S), *in = malloc(S > 65536 ? S : 65536);
  for (size_t i = 0; i < S; i++)
    msg[i] = (unsigned char)(i * 7 + 1);
  for (int i = 0; i < C; i++) {
    cs_[i].fd = connect_to(port, 1, 0);
    struct epoll_event e = {EPOLLIN | EPOLLET, {.ptr = &cs_[i]}};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs_[i].fd, &e);
  }
  size_t cap = 1 << 22;
  int64_t *lat = malloc(cap * sizeof *lat);
  size_t nlat = 0;
  long done = 0, done_at_start = 0;
  int64_t t_start = now_ns(), warm = t_start + 500000000LL;
  int64_t t_end = warm + (int64_t)(D * 1e9);
  int measuring = 0;
  double cpu0 = 0, ccpu0 = 0;
  lconn *idle = NULL;
  long due_sent = 0;
  /* start: every connection sends (closed loop), or joins the idle list */
  for (int i = 0; i < C; i++) {
    if (rate > 0) {
      cs_[i].next_idle = idle;
      idle = &cs_[i];
    } else {
      cs_[i].busy = 1;
      cs_[i].t0 = now_ns();
      push(ep, &cs_[i], msg, S);
    }
  }
  struct epoll_event evs[256];
  for (;;) {
    int64_t now = now_ns();
    if (!measuring && now >= warm) {
      measuring = 1;
      done_at_start = done;
      cpu0 = cpu_secs(pid);
      ccpu0 = self_cpu_secs();
      nlat = 0;
    }
    if (now >= t_end)
      break;
    if (rate > 0) {
      long due = (long)((double)(now - t_start) * rate / 1e9);
      while (due_sent < due && idle) {
        lconn *c = idle;
        idle = c->next_idle;
        c->busy = 1;
        c->sent = c->got = 0;
        c->t0 = now;
        due_sent++;
        push(ep, c, msg, S);
      }
      if (due_sent < due && !idle)
        due_sent = due; /* every connection busy: the rate is not met */
    }
    int n = epoll_wait(ep, evs, 256, rate > 0 ? 1 : 100);
    for (int i = 0; i < n; i++) {
      lconn *c = evs[i].data.ptr;
      if (!c->busy)
        continue;
      if (c->sent < S && (evs[i].events & EPOLLOUT))
        push(ep, c, msg, S);
      if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        for (;;) {
          ssize_t k = recv(c->fd, in, S - c->got < 65536 ? S - c->got : 65536,
                           0);
          if (k == 0 || (k < 0 && errno != EAGAIN)) {
            fprintf(stderr, "load: connection lost\n");
            return 1;
          }
          if (k < 0)
            break;
          if (memcmp(in, msg + c->got, (size_t)k) != 0) {
            fprintf(stderr, "load: echo mismatch\n");
            return 1;
          }
          c->got += (size_t)k;
          if (c->got == S)
            break;
        }
        if (c->got == S) {
          int64_t t = now_ns();
          if (measuring && nlat < cap)
            lat[nlat++] = t - c->t0;
          done++;
          c->sent = c->got = 0;
          if (rate > 0) {
            c->busy = 0;
            c->next_idle = idle;
            idle = c;
          } else {
            c->t0 = t;
            push(ep, c, msg, S);
          }
        }
      }
    }
  }
  double secs = (double)(now_ns() - warm) / 1e9;
  double cpu = cpu_secs(pid) - cpu0, ccpu = self_cpu_secs() - ccpu0;
  long reqs = done - done_at_start;
  qsort(lat, nlat, sizeof *lat, cmp64);
  double p50 = nlat ? lat[nlat / 2] / 1e3 : 0;
  double p99 = nlat ? lat[(size_t)(nlat * 0.99)] / 1e3 : 0;
  double p999 = nlat ? lat[(size_t)(nlat * 0.999)] / 1e3 : 0;
  if (rate > 0) {
    printf("%s\t%s\t%.2f\tus-cpu/msg\n", cs, name,
           reqs ? cpu * 1e6 / (double)reqs : 0.0);
  } else if (strstr(cs, "p99")) {
    printf("%s\t%s\t%.1f\tus\n", cs, name, p99);
  } else if (S >= 4096) {
    printf("%s\t%s\t%.1f\tMB/s\n", cs, name,
           (double)reqs * (double)S / secs / 1e6);
  } else {
    printf("%s\t%s\t%.0f\treq/s\n", cs, name, (double)reqs / secs);
  }
  fprintf(stderr, "# %s %s: %.0f req/s, p50 %.1f us, p99 %.1f us, "
          "p99.9 %.1f us, server cpu %.0f%% (%.2f us/req), client cpu %.0f%% "
          "(%.2f us/req)\n", cs, name, (double)reqs / secs, p50, p99, p999,
          cpu * 100 / secs, reqs ? cpu * 1e6 / (double)reqs : 0.0,
          ccpu * 100 / secs, reqs ? ccpu * 1e6 / (double)reqs : 0.0);
  return 0;
}

int main(int argc, char **argv) {
  int workers = argc >= 4 ? atoi(argv[3]) : 1;
  if (argc >= 3 && strcmp(argv[1], "server-cb") == 0)
    return server_cb(atoi(argv[2]), workers);
  if (argc >= 3 && strcmp(argv[1], "server-task") == 0)
    return server_task(atoi(argv[2]), workers);
  if (argc >= 9 && strcmp(argv[1], "load") == 0 &&
      strcmp(argv[5], "connect-rate") == 0) {
    /* PORT, PID and NAME may be lists: the servers take turns. */
    char *ports[16], *pids[16], *names[16];
    int m = split_list(argv[2], ports, 16);
    if (split_list(argv[3], pids, 16) != m ||
        split_list(argv[4], names, 16) != m) {
      fprintf(stderr, "load: PORT, PID and NAME lists differ in length\n");
      return 2;
    }
    const char *sl = getenv("NET_BENCH_SLICE_MS");
    if (sl && atoi(sl) > 0)
      rc_slice_ns = atoi(sl) * 1000000LL;
    rserver sv[16];
    memset(sv, 0, sizeof sv);
    for (int k = 0; k < m; k++) {
      sv[k].sa.sin_family = AF_INET;
      sv[k].sa.sin_port = htons((uint16_t)atoi(ports[k]));
      sv[k].sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      sv[k].pid = atoi(pids[k]);
      sv[k].name = names[k];
    }
    return connect_rate(sv, m, argv[5], atoi(argv[6]), (size_t)atol(argv[7]),
                        atof(argv[8]));
  }
  if (argc >= 9 && strcmp(argv[1], "load") == 0)
    return load(atoi(argv[2]), atoi(argv[3]), argv[4], argv[5], atoi(argv[6]),
                (size_t)atol(argv[7]), atof(argv[8]),
                argc > 9 ? atof(argv[9]) : 0);
  fprintf(stderr,
          "usage: net server-cb|server-task PORT [WORKERS]\n"
          "       net load PORT PID NAME CASE C S D [RATE]\n"
          "       net load PORT,... PID,... NAME,... connect-rate C S D\n");
  return 2;
}
