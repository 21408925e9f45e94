/* bench/port.c - the completion port on each backend (bench/run port).
 *
 *   port post-rtt BACKEND    two threads, each with a port, bounce one
 *                            posted op: ns per round trip (reference: the
 *                            same bounce over two eventfds, blocking reads)
 *   port post-local BACKEND  post then dequeue on one thread: ns per op
 *   port pingpong BACKEND    one thread, one port, a loopback TCP pair:
 *                            1-byte recv+send each way, ns per round trip
 *                            (reference: the same four blocking syscalls)
 *
 * Each prints `workload<TAB>system<TAB>value<TAB>unit` lines, the workload
 * named after the backend (post-rtt-uring, ...), system hydra or the
 * reference's name.  Lower is better for all.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hydra.h"
#include "runtime/port.h"

static int backend;
static const char *bname;

static hy__port *open_port(void) {
  hy__port *p;
  if (hy__port_open(&p, backend, NULL) != 0) {
    fprintf(stderr, "# port: backend %s not available\n", bname);
    exit(0);
  }
  return p;
}

static hy__op *wait1(hy__port *p) {
  hy__op *op;
  while (hy__port_wait(p, &op, 1, -1) != 1) {
  }
  return op;
}

/* ------------------------------------------------------------ post-rtt */

#define RTT_N 200000

static hy__port *pa, *pb;

static void *bouncer(void *arg) {
  (void)arg;
  for (int i = 0; i < RTT_N; i++) {
    hy__op *op = wait1(pb);
    hy__port_post(pa, op);
  }
  return NULL;
}

static int efa, efb;

static void *efd_bouncer(void *arg) {
  (void)arg;
  uint64_t v;
  for (int i = 0; i < RTT_N; i++) {
    if (read(efb, &v, 8) != 8 || write(efa, &v, 8) != 8)
      exit(1);
  }
  return NULL;
}

static void post_rtt(void) {
  pa = open_port();
  pb = open_port();
  hy__op op;
  memset(&op, 0, sizeof op);
  op.kind = HY__OP_POST;
  pthread_t th;
  pthread_create(&th, NULL, bouncer, NULL);
  int64_t t0 = hy_now();
  for (int i = 0; i < RTT_N; i++) {
    hy__port_post(pb, &op);
    wait1(pa);
  }
  double ns = (double)(hy_now() - t0) / RTT_N;
  pthread_join(th, NULL);
  printf("post-rtt-%s\thydra\t%.0f\tns/rtt\n", bname, ns);
  hy__port_close(pa);
  hy__port_close(pb);

  efa = eventfd(0, EFD_CLOEXEC);
  efb = eventfd(0, EFD_CLOEXEC);
  pthread_create(&th, NULL, efd_bouncer, NULL);
  t0 = hy_now();
  uint64_t one = 1, v;
  for (int i = 0; i < RTT_N; i++)
    if (write(efb, &one, 8) != 8 || read(efa, &v, 8) != 8)
      exit(1);
  ns = (double)(hy_now() - t0) / RTT_N;
  pthread_join(th, NULL);
  printf("post-rtt-%s\teventfd\t%.0f\tns/rtt\n", bname, ns);
  close(efa);
  close(efb);
}

/* ---------------------------------------------------------- post-local */

static void post_local(void) {
  enum { N = 2000000, BATCH = 32 };
  hy__port *p = open_port();
  hy__op ops[BATCH];
  memset(ops, 0, sizeof ops);
  for (int i = 0; i < BATCH; i++)
    ops[i].kind = HY__OP_POST;
  hy__op *got[BATCH];
  int64_t t0 = hy_now();
  for (int i = 0; i < N / BATCH; i++) {
    for (int k = 0; k < BATCH; k++)
      hy__port_post(p, &ops[k]);
    int n = 0;
    while (n < BATCH)
      n += hy__port_wait(p, got, BATCH, 0);
  }
  double ns = (double)(hy_now() - t0) / N;
  printf("post-local-%s\thydra\t%.1f\tns/op\n", bname, ns);
  hy__port_close(p);
}

/* ------------------------------------------------------------ pingpong */

static void tcp_pair(int *c, int *s) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int l = socket(AF_INET, SOCK_STREAM, 0);
  socklen_t al = sizeof a;
  if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
      getsockname(l, (struct sockaddr *)&a, &al))
    exit(1);
  *c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(*c, (struct sockaddr *)&a, sizeof a))
    exit(1);
  *s = accept(l, NULL, NULL);
  close(l);
  int one = 1;
  setsockopt(*c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(*s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void one_way(hy__port *p, int from, int to) {
  char sb = 'x', rb;
  hy__op r, s;
  memset(&r, 0, sizeof r);
  memset(&s, 0, sizeof s);
  r.kind = HY__OP_RECV;
  r.fd = to;
  r.buf = &rb;
  r.len = 1;
  s.kind = HY__OP_SEND;
  s.fd = from;
  s.buf = &sb;
  s.len = 1;
  hy__port_start(p, &r);
  hy__port_start(p, &s);
  wait1(p);
  wait1(p);
}

static void pingpong(void) {
  enum { N = 100000 };
  hy__port *p = open_port();
  int c, s;
  tcp_pair(&c, &s);
  hy__port_associate(p, c);
  hy__port_associate(p, s);
  for (int i = 0; i < 1000; i++) { /* warm up */
    one_way(p, c, s);
    one_way(p, s, c);
  }
  int64_t t0 = hy_now();
  for (int i = 0; i < N; i++) {
    one_way(p, c, s);
    one_way(p, s, c);
  }
  double ns = (double)(hy_now() - t0) / N;
  printf("pingpong-%s\thydra\t%.0f\tns/rtt\n", bname, ns);
  hy__port_forget(p, c);
  hy__port_forget(p, s);
  close(c);
  close(s);
  hy__port_close(p);

  /* Reference: the four syscalls and nothing else. */
  tcp_pair(&c, &s);
  char b = 'x';
  t0 = hy_now();
  for (int i = 0; i < N; i++) {
    if (send(c, &b, 1, 0) != 1 || recv(s, &b, 1, 0) != 1 ||
        send(s, &b, 1, 0) != 1 || recv(c, &b, 1, 0) != 1)
      exit(1);
  }
  ns = (double)(hy_now() - t0) / N;
  printf("pingpong-%s\tsyscalls\t%.0f\tns/rtt\n", bname, ns);
  close(c);
  close(s);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: port post-rtt|post-local|pingpong uring|epoll\n");
    return 2;
  }
  bname = argv[2];
  backend = strcmp(bname, "epoll") == 0 ? HY__BACKEND_EPOLL : HY__BACKEND_URING;
  if (strcmp(argv[1], "post-rtt") == 0)
    post_rtt();
  else if (strcmp(argv[1], "post-local") == 0)
    post_local();
  else if (strcmp(argv[1], "pingpong") == 0)
    pingpong();
  else
    return 2;
  return 0;
}
