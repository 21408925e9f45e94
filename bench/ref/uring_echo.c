/* bench/ref/uring_echo.c - the io_uring reference for bench/run net: a
 * single-thread echo server on liburing in plain C.  Multishot accept
 * where the kernel has it (else one accept re-posted per connection); per
 * connection one RECV in flight into its own buffer, and after it one SEND
 * of what came (re-sent until all is gone), then the next RECV: the IOCP
 * shape, a fresh receive posted per message.  SQEs are submitted in one
 * batch per loop turn, together with the wait.
 *
 *   uring_echo PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 16384

enum { K_ACCEPT = 1, K_RECV, K_SEND };

typedef struct conn {
  int fd;
  size_t len, off; /* buf[off, len) is still to send */
  char *buf;
} conn;

static struct io_uring ring;
static int lfd, multishot;

static struct io_uring_sqe *sqe(void) {
  struct io_uring_sqe *s = io_uring_get_sqe(&ring);
  while (!s) {
    io_uring_submit(&ring);
    s = io_uring_get_sqe(&ring);
  }
  return s;
}

/* user_data: the conn pointer with the kind in its low bits. */
static uint64_t tag(conn *c, int kind) { return (uint64_t)(uintptr_t)c | kind; }

static void post_accept(void) {
  struct io_uring_sqe *s = sqe();
  if (multishot)
    io_uring_prep_multishot_accept(s, lfd, NULL, NULL, 0);
  else
    io_uring_prep_accept(s, lfd, NULL, NULL, 0);
  s->user_data = K_ACCEPT;
}

static void post_recv(conn *c) {
  struct io_uring_sqe *s = sqe();
  io_uring_prep_recv(s, c->fd, c->buf, BUF, 0);
  s->user_data = tag(c, K_RECV);
}

static void post_send(conn *c) {
  struct io_uring_sqe *s = sqe();
  io_uring_prep_send(s, c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
  s->user_data = tag(c, K_SEND);
}

static void drop(conn *c) {
  close(c->fd);
  free(c->buf);
  free(c);
}

static int has_multishot_accept(void) {
  /* IORING_ACCEPT_MULTISHOT came with Linux 5.19, as did the
   * IORING_OP_SOCKET opcode: probe for that. */
  struct io_uring_probe *p = io_uring_get_probe_ring(&ring);
  int ok = p && io_uring_opcode_supported(p, IORING_OP_SOCKET);
  if (p)
    io_uring_free_probe(p);
  return ok;
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 7100;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  signal(SIGPIPE, SIG_IGN);
  lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
      listen(lfd, 4096) < 0) {
    perror("uring_echo: listen");
    return 1;
  }
  struct io_uring_params prm;
  memset(&prm, 0, sizeof prm);
  prm.flags = IORING_SETUP_CQSIZE;
  prm.cq_entries = 16384;
  int r = io_uring_queue_init_params(1024, &ring, &prm);
  if (r < 0) {
    fprintf(stderr, "uring_echo: io_uring: %s\n", strerror(-r));
    return 1;
  }
  multishot = has_multishot_accept();
  post_accept();
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    struct io_uring_cqe *cqe;
    r = io_uring_submit_and_wait(&ring, 1);
    if (r < 0 && r != -EINTR) {
      fprintf(stderr, "uring_echo: wait: %s\n", strerror(-r));
      return 1;
    }
    unsigned head, n = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      n++;
      uint64_t ud = cqe->user_data;
      int res = cqe->res;
      if (ud == K_ACCEPT) {
        if (!multishot || !(cqe->flags & IORING_CQE_F_MORE))
          post_accept();
        if (res < 0)
          continue;
        setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = calloc(1, sizeof *c);
        c->fd = res;
        c->buf = malloc(BUF);
        post_recv(c);
        continue;
      }
      conn *c = (conn *)(uintptr_t)(ud & ~(uint64_t)3);
      if ((ud & 3) == K_RECV) {
        if (res <= 0) {
          drop(c);
          continue;
        }
        c->len = (size_t)res;
        c->off = 0;
        post_send(c);
      } else {
        if (res <= 0) {
          drop(c);
          continue;
        }
        c->off += (size_t)res;
        if (c->off < c->len)
          post_send(c);
        else
          post_recv(c);
      }
    }
    io_uring_cq_advance(&ring, n);
  }
}
