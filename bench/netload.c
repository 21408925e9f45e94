/* bench/netload.c - the load generator of bench/run net: TCP echo on
 * loopback, measuring every server the same way.
 *
 *   netload PORTS PIDS NAMES CASE C S D [RATE]
 *
 * PORTS, PIDS and NAMES are comma-separated lists of up to 16 servers (the
 * same length each).  One thread on epoll.  CASE names the figure:
 *
 *   echo cases  C connections per server each send S bytes and wait for
 *               the whole echo (closed loop), every echoed byte checked;
 *               requests/s, MB/s (S >= 4096), p99 latency (a CASE naming
 *               "p99"), or with RATE > 0 the sends paced to RATE messages/s
 *               in total and the server's CPU us per message.
 *   connect-rate  C connectors open, echo S bytes over and reset
 *               connections in a loop: connections/s.
 *   idle        one server: C connections each echo one 64-byte message
 *               and stay idle; the server's RSS growth per connection.
 *
 * Output: `CASE<TAB>NAME<TAB>value<TAB>unit` lines on stdout, one per
 * server, and a "#" line per server on stderr with the server's and the
 * generator's CPU use (a side near 100% is the bound).
 *
 * Turns.  The servers take turns in slices of 100 ms (NET_BENCH_SLICE_MS
 * sets another length): the generator runs against one server until its
 * slice ends, lets the requests or connections it has begun finish, and
 * moves to the next.  This host's speed moves by tens of percent over
 * seconds; servers measured one after another each met a different
 * stretch of it, and which server a slow stretch hit moved a median of a
 * few rounds by 10% or more, while slices a tenth of a second long spread
 * every stretch over all of them.  Each server gets D seconds of slices,
 * after a warm-up of one slice each (at least RC_WARM_NS in all) that is
 * not counted.  A server's CPU time is read when its slices begin, and
 * what it used from one of its counted slices to its next (or to the end
 * of the run) goes to that slice: work a server leaves for later, such as
 * a garbage collector's, is charged to it even when it runs while the
 * others have their turns.  Idle servers sleep in their poll (none makes
 * system calls while idle), so that span holds nothing else.  Every
 * server's C connections stay open through the run; those not in their
 * turn are idle.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SERVERS 16
#define WARM_NS 500000000LL /* at least, in all */
#define LAT_CAP (1 << 21)   /* latency samples kept per server */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A process's CPU time (user + system) from /proc/PID/stat. */
static double cpu_secs(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  char buf[1024];
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

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  return sa;
}

/* A non-blocking connect to 127.0.0.1:port with TCP_NODELAY (the echo
 * loops send one request after another). */
static int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    perror("socket");
    exit(1);
  }
  struct sockaddr_in sa = loopback(port);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 &&
      errno != EINPROGRESS) {
    perror("connect");
    exit(1);
  }
  return fd;
}

/* ------------------------------------------------------------- turns */

typedef struct lconn lconn;

typedef struct server {
  int port, pid;
  const char *name;
  lconn *conns; /* echo cases: its C connections */
  /* Over its counted slices: */
  long done, errors, late; /* requests or connections; failed; sent late */
  double secs, cpu, ccpu;  /* wall, its CPU, the generator's CPU */
  int64_t *lat;            /* echo latencies (ns) */
  size_t nlat;
  double cpu_mark; /* its CPU time when its last slice began */
  int marked;      /* that slice counts */
} server;

/* A slice of one case against s until t_stop; returns what it completed
 * (adding failures and late sends to s when counted). */
typedef long (*slice_fn)(void *ctx, server *s, int64_t t_stop, int counted);

static int64_t slice_ns(void) {
  const char *e = getenv("NET_BENCH_SLICE_MS");
  return e && atoi(e) > 0 ? atoi(e) * 1000000LL : 100000000LL;
}

/* At the start of s's slice: its CPU time since its previous slice began
 * goes to that slice, if that one counts. */
static void cpu_turn(server *s, int counted) {
  double c = cpu_secs(s->pid);
  if (s->marked)
    s->cpu += c - s->cpu_mark;
  s->cpu_mark = c;
  s->marked = counted;
}

/* Runs the servers' turns: warm-up slices, then D seconds of slices each. */
static void take_turns(server *sv, int m, double D, slice_fn fn, void *ctx) {
  int64_t len = slice_ns();
  long per = (long)(D * 1e9 / (double)len + 0.5);
  long warm = (WARM_NS + len - 1) / len;
  if (per < 1)
    per = 1;
  if (warm < m)
    warm = m;
  for (long k = 0; k < warm + per * m; k++) {
    server *s = &sv[k % m];
    int counted = k >= warm;
    cpu_turn(s, counted);
    double cc0 = self_cpu_secs();
    int64_t t0 = now_ns();
    long done = fn(ctx, s, t0 + len, counted);
    int64_t t1 = now_ns();
    if (counted) {
      s->done += done;
      s->secs += (double)(t1 - t0) / 1e9;
      s->ccpu += self_cpu_secs() - cc0;
    }
  }
  usleep(100000); /* work the last slices left behind */
  for (int k = 0; k < m; k++)
    cpu_turn(&sv[k], 0);
}

static const char *slices_note(server *s) {
  static char buf[64];
  snprintf(buf, sizeof buf, "in %.1f s of %lld-ms slices", s->secs,
           (long long)(slice_ns() / 1000000));
  return buf;
}

/* ------------------------------------------------------ connect-rate */

/* Connect-rate: C connectors, each in a loop: connect, send S bytes, wait
 * for their echo, close with a reset (RST, so neither side keeps the port
 * in TIME_WAIT and the ephemeral ports are not the limit).
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
 * The generator is still the bound (~99% of its CPU): on loopback the
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

typedef struct {
  int ep, C;
  rconn *conns;
  unsigned char msg[4096];
  size_t S;
  struct sockaddr_in sa; /* the server in its turn */
  long late;             /* requests that waited for the connect */
} rc_ctx;

/* Connects c's socket (made once) again and sends the request if it can.
 * Returns 0, or -1 if that failed. */
static int rc_open(rc_ctx *x, rconn *c) {
  if (c->fd < 0) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
      return -1;
    struct epoll_event e = {EPOLLIN | EPOLLET, {.ptr = c}};
    epoll_ctl(x->ep, EPOLL_CTL_ADD, c->fd, &e);
  }
  c->got = 0;
  if (connect(c->fd, (struct sockaddr *)&x->sa, sizeof x->sa) < 0 &&
      errno != EINPROGRESS)
    return -1;
  ssize_t k = send(c->fd, x->msg, x->S, MSG_NOSIGNAL);
  c->connected = k == (ssize_t)x->S;
  if (!c->connected) {
    if (k >= 0 || (errno != EAGAIN && errno != ENOTCONN))
      return -1;
    x->late++;
    struct epoll_event e = {EPOLLIN | EPOLLOUT | EPOLLET, {.ptr = c}};
    epoll_ctl(x->ep, EPOLL_CTL_MOD, c->fd, &e);
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
  c->active = 0;
}

static void rc_next(rc_ctx *x, rconn *c, long *errors) {
  for (int tries = 0; rc_open(x, c) < 0; tries++) {
    (*errors)++;
    if (c->fd >= 0)
      close(c->fd);
    c->fd = -1;
    if (tries == 1000) {
      fprintf(stderr, "netload: the server refuses connections\n");
      exit(1);
    }
  }
  c->active = 1;
}

/* Reads what has come of c's echo; returns 1 when it is whole, 0 if more
 * is to come, -1 if the connection failed or the bytes are wrong. */
static int rc_read(rc_ctx *x, rconn *c) {
  unsigned char in[4096];
  for (;;) {
    ssize_t k = recv(c->fd, in, x->S - c->got, MSG_DONTWAIT);
    if (k < 0 && errno == EAGAIN)
      return 0;
    if (k <= 0 || memcmp(in, x->msg + c->got, (size_t)k) != 0)
      return -1;
    c->got += (size_t)k;
    if (c->got == x->S)
      return 1;
  }
}

/* One slice: the connectors run against s until t_stop, then finish the
 * connections they have begun (one not done a second after t_stop counts
 * as failed). */
static long rc_slice(void *ctx, server *s, int64_t t_stop, int counted) {
  rc_ctx *x = ctx;
  x->sa = loopback(s->port);
  long late0 = x->late, errors = 0, done = 0;
  int active = 0;
  for (int i = 0; i < x->C; i++, active++)
    rc_next(x, &x->conns[i], &errors);
  struct epoll_event evs[256];
  while (active > 0) {
    int64_t now = now_ns();
    int stopping = now >= t_stop;
    if (now >= t_stop + 1000000000LL) {
      for (int i = 0; i < x->C; i++) {
        if (x->conns[i].active) {
          errors++;
          rc_close_reset(&x->conns[i]);
        }
      }
      break;
    }
    int n = epoll_wait(x->ep, evs, 256, 100);
    for (int i = 0; i < n; i++) {
      rconn *c = evs[i].data.ptr;
      int r;
      if (!c->active)
        continue; /* an edge left from this connector's last reset */
      if (!c->connected) {
        /* The slow path: the connect had not finished at once. */
        ssize_t k = send(c->fd, x->msg, x->S, MSG_NOSIGNAL);
        if (k < 0 && (errno == EAGAIN || errno == ENOTCONN))
          continue;
        r = -1;
        if (k == (ssize_t)x->S) {
          c->connected = 1;
          struct epoll_event e = {EPOLLIN | EPOLLET, {.ptr = c}};
          epoll_ctl(x->ep, EPOLL_CTL_MOD, c->fd, &e);
          continue;
        }
      } else {
        /* Edge-triggered: read until the echo is whole or the socket is
         * empty (the server sends nothing but the echo). */
        r = rc_read(x, c);
        if (r == 0)
          continue;
      }
      if (r > 0)
        done++;
      else
        errors++;
      rc_close_reset(c);
      if (!stopping)
        rc_next(x, c, &errors);
      else
        active--;
    }
  }
  if (counted) {
    s->errors += errors;
    s->late += x->late - late0;
  }
  return done;
}

static int connect_rate(server *sv, int m, const char *cs, int C, size_t S,
                        double D) {
  rc_ctx *x = calloc(1, sizeof *x);
  x->S = S == 0 ? 1 : S > sizeof x->msg ? sizeof x->msg : S;
  for (size_t i = 0; i < x->S; i++)
    x->msg[i] = (unsigned char)(i * 7 + 1);
  x->ep = epoll_create1(0);
  x->C = C;
  x->conns = calloc((size_t)C, sizeof *x->conns);
  for (int i = 0; i < C; i++)
    x->conns[i].fd = -1;
  take_turns(sv, m, D, rc_slice, x);
  for (int k = 0; k < m; k++) {
    server *s = &sv[k];
    double rate = s->secs > 0 ? (double)s->done / s->secs : 0;
    double per = s->done ? 1e6 / (double)s->done : 0.0;
    printf("%s\t%s\t%.0f\tconn/s\n", cs, s->name, rate);
    fprintf(stderr, "# %s %s: %.0f conn/s %s, %ld failed, %ld sent late, "
            "server cpu %.0f%% (%.1f us/conn), client cpu %.0f%% "
            "(%.1f us/conn)\n", cs, s->name, rate, slices_note(s), s->errors,
            s->late, s->secs > 0 ? s->cpu * 100 / s->secs : 0.0,
            s->cpu * per, s->secs > 0 ? s->ccpu * 100 / s->secs : 0.0,
            s->ccpu * per);
  }
  for (int i = 0; i < C; i++) {
    rc_close_reset(&x->conns[i]);
    if (x->conns[i].fd >= 0)
      close(x->conns[i].fd);
  }
  close(x->ep);
  free(x->conns);
  free(x);
  return 0;
}

/* -------------------------------------------------------------- echo */

struct lconn {
  int fd;
  int want_out; /* EPOLLOUT is watched: a send was partial */
  int busy;     /* a request is out */
  size_t sent, got;
  int64_t t0;
  lconn *next_idle;
};

typedef struct {
  int ep, C;
  size_t S;
  double rate; /* messages/s in total, or 0: closed loop */
  unsigned char *msg, *in;
} echo_ctx;

/* Sends what is left of the request; watches EPOLLOUT only while the
 * socket does not take it all. */
static void push(echo_ctx *x, lconn *c) {
  if (c->sent < x->S) {
    ssize_t k = send(c->fd, x->msg + c->sent, x->S - c->sent, MSG_NOSIGNAL);
    if (k > 0)
      c->sent += (size_t)k;
  }
  int want = c->sent < x->S;
  if (want != c->want_out) {
    struct epoll_event e = {EPOLLIN | EPOLLET | (want ? EPOLLOUT : 0),
                            {.ptr = c}};
    epoll_ctl(x->ep, EPOLL_CTL_MOD, c->fd, &e);
    c->want_out = want;
  }
}

static void start(echo_ctx *x, lconn *c, int64_t now) {
  c->busy = 1;
  c->sent = c->got = 0;
  c->t0 = now;
  push(x, c);
}

/* Reads what has come of c's echo; returns 1 when it is whole.  A lost
 * connection or a wrong byte ends the run. */
static int echo_read(echo_ctx *x, lconn *c) {
  for (;;) {
    size_t want = x->S - c->got < 65536 ? x->S - c->got : 65536;
    ssize_t k = recv(c->fd, x->in, want, 0);
    if (k == 0 || (k < 0 && errno != EAGAIN)) {
      fprintf(stderr, "netload: connection lost\n");
      exit(1);
    }
    if (k < 0)
      return 0;
    if (memcmp(x->in, x->msg + c->got, (size_t)k) != 0) {
      fprintf(stderr, "netload: echo mismatch\n");
      exit(1);
    }
    c->got += (size_t)k;
    if (c->got == x->S)
      return 1;
  }
}

/* One slice: every connection of s sends (closed loop), or sends are paced
 * at the rate from the slice's start, until t_stop; then the requests out
 * finish.  Latencies go to s when the slice counts. */
static long echo_slice(void *ctx, server *s, int64_t t_stop, int counted) {
  echo_ctx *x = ctx;
  int64_t t0 = now_ns();
  lconn *idle = NULL;
  long due_sent = 0, done = 0;
  int busy = 0;
  for (int i = 0; i < x->C; i++) {
    lconn *c = &s->conns[i];
    if (x->rate > 0) {
      c->next_idle = idle;
      idle = c;
    } else {
      start(x, c, t0);
      busy++;
    }
  }
  struct epoll_event evs[256];
  for (;;) {
    int64_t now = now_ns();
    int stopping = now >= t_stop;
    if (stopping && busy == 0)
      break;
    if (now >= t_stop + 5000000000LL) {
      fprintf(stderr, "netload: %s: echoes still out 5 s after the slice\n",
              s->name);
      exit(1);
    }
    if (x->rate > 0 && !stopping) {
      long due = (long)((double)(now - t0) * x->rate / 1e9);
      for (; due_sent < due && idle; due_sent++, busy++) {
        lconn *c = idle;
        idle = c->next_idle;
        start(x, c, now);
      }
      if (due_sent < due)
        due_sent = due; /* every connection busy: the rate is not met */
    }
    int n = epoll_wait(x->ep, evs, 256, x->rate > 0 ? 1 : 100);
    for (int i = 0; i < n; i++) {
      lconn *c = evs[i].data.ptr;
      if (!c->busy)
        continue;
      if (c->sent < x->S && (evs[i].events & EPOLLOUT))
        push(x, c);
      if (!(evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ||
          !echo_read(x, c))
        continue;
      int64_t t = now_ns();
      if (counted && s->nlat < LAT_CAP)
        s->lat[s->nlat++] = t - c->t0;
      done++;
      if (x->rate > 0 || stopping) {
        c->busy = 0;
        busy--;
        if (x->rate > 0) {
          c->next_idle = idle;
          idle = c;
        }
      } else {
        start(x, c, t);
      }
    }
  }
  return done;
}

static int echo(server *sv, int m, const char *cs, int C, size_t S, double D,
                double rate) {
  echo_ctx x = {.ep = epoll_create1(0), .C = C, .S = S, .rate = rate};
  x.msg = malloc(S);
  x.in = malloc(S > 65536 ? S : 65536);
  for (size_t i = 0; i < S; i++)
    x.msg[i] = (unsigned char)(i * 7 + 1);
  for (int k = 0; k < m; k++) {
    server *s = &sv[k];
    s->conns = calloc((size_t)C, sizeof *s->conns);
    s->lat = malloc(LAT_CAP * sizeof *s->lat);
    for (int i = 0; i < C; i++) {
      s->conns[i].fd = connect_to(s->port);
      struct epoll_event e = {EPOLLIN | EPOLLET, {.ptr = &s->conns[i]}};
      epoll_ctl(x.ep, EPOLL_CTL_ADD, s->conns[i].fd, &e);
    }
  }
  take_turns(sv, m, D, echo_slice, &x);
  for (int k = 0; k < m; k++) {
    server *s = &sv[k];
    double secs = s->secs > 0 ? s->secs : 1;
    double reqs = (double)s->done;
    qsort(s->lat, s->nlat, sizeof *s->lat, cmp64);
    double p50 = s->nlat ? (double)s->lat[s->nlat / 2] / 1e3 : 0;
    double p99 = s->nlat ? (double)s->lat[(size_t)(s->nlat * 0.99)] / 1e3 : 0;
    double p999 =
        s->nlat ? (double)s->lat[(size_t)(s->nlat * 0.999)] / 1e3 : 0;
    if (rate > 0)
      printf("%s\t%s\t%.2f\tus-cpu/msg\n", cs, s->name,
             reqs > 0 ? s->cpu * 1e6 / reqs : 0.0);
    else if (strstr(cs, "p99"))
      printf("%s\t%s\t%.1f\tus\n", cs, s->name, p99);
    else if (S >= 4096)
      printf("%s\t%s\t%.1f\tMB/s\n", cs, s->name, reqs * (double)S / secs / 1e6);
    else
      printf("%s\t%s\t%.0f\treq/s\n", cs, s->name, reqs / secs);
    fprintf(stderr, "# %s %s: %.0f req/s %s, p50 %.1f us, p99 %.1f us, "
            "p99.9 %.1f us, server cpu %.0f%% (%.2f us/req), client cpu "
            "%.0f%% (%.2f us/req)\n", cs, s->name, reqs / secs,
            slices_note(s), p50, p99, p999, s->cpu * 100 / secs,
            reqs > 0 ? s->cpu * 1e6 / reqs : 0.0, s->ccpu * 100 / secs,
            reqs > 0 ? s->ccpu * 1e6 / reqs : 0.0);
    for (int i = 0; i < C; i++)
      close(s->conns[i].fd);
    free(s->conns);
    free(s->lat);
  }
  close(x.ep);
  free(x.msg);
  free(x.in);
  return 0;
}

/* -------------------------------------------------------------- idle */

/* C connections each echo one message first (a kept-alive client that
 * went quiet, not one that never spoke), so what the server keeps per
 * connection after serving it shows. */
static int idle(server *s, const char *cs, int C) {
  long before = rss_bytes(s->pid);
  int *fds = calloc((size_t)C, sizeof *fds);
  for (int i = 0; i < C; i++) {
    fds[i] = connect_to(s->port);
    if (i % 256 == 255)
      usleep(1000);
  }
  unsigned char m[64], e[64];
  memset(m, 'i', sizeof m);
  for (int i = 0; i < C; i++) {
    struct pollfd pf = {fds[i], POLLOUT, 0};
    poll(&pf, 1, 5000);
    if (send(fds[i], m, sizeof m, MSG_NOSIGNAL) != (ssize_t)sizeof m) {
      fprintf(stderr, "netload: idle send failed\n");
      return 1;
    }
    size_t got = 0;
    while (got < sizeof m) {
      pf.events = POLLIN;
      if (poll(&pf, 1, 5000) <= 0) {
        fprintf(stderr, "netload: idle echo timed out\n");
        return 1;
      }
      ssize_t k = recv(fds[i], e + got, sizeof m - got, MSG_DONTWAIT);
      if (k <= 0 && !(k < 0 && errno == EAGAIN)) {
        fprintf(stderr, "netload: idle connection lost\n");
        return 1;
      }
      if (k > 0)
        got += (size_t)k;
    }
  }
  sleep(2);
  long after = rss_bytes(s->pid);
  printf("%s\t%s\t%.0f\tbytes/conn\n", cs, s->name,
         (double)(after - before) / C);
  for (int i = 0; i < C; i++)
    close(fds[i]);
  free(fds);
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

int main(int argc, char **argv) {
  if (argc < 8) {
    fprintf(stderr, "usage: netload PORT,... PID,... NAME,... CASE C S D "
                    "[RATE]\n");
    return 2;
  }
  char *ports[MAX_SERVERS], *pids[MAX_SERVERS], *names[MAX_SERVERS];
  int m = split_list(argv[1], ports, MAX_SERVERS);
  if (split_list(argv[2], pids, MAX_SERVERS) != m ||
      split_list(argv[3], names, MAX_SERVERS) != m) {
    fprintf(stderr, "netload: the PORT, PID and NAME lists differ\n");
    return 2;
  }
  static server sv[MAX_SERVERS];
  for (int k = 0; k < m; k++) {
    sv[k].port = atoi(ports[k]);
    sv[k].pid = atoi(pids[k]);
    sv[k].name = names[k];
  }
  const char *cs = argv[4];
  int C = atoi(argv[5]);
  size_t S = (size_t)atol(argv[6]);
  double D = atof(argv[7]), rate = argc > 8 ? atof(argv[8]) : 0;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  if (strcmp(cs, "idle") == 0) {
    if (m != 1) {
      fprintf(stderr, "netload: idle takes one server\n");
      return 2;
    }
    return idle(&sv[0], cs, C);
  }
  if (C < 1 || S < 1 || D <= 0) {
    fprintf(stderr, "netload: C, S and D must be positive\n");
    return 2;
  }
  if (strcmp(cs, "connect-rate") == 0)
    return connect_rate(sv, m, cs, C, S, D);
  return echo(sv, m, cs, C, S, D, rate);
}
