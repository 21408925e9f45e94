/* bench/ref/epoll_echo.c - the near-limit reference for bench/run net: a
 * raw single-thread epoll echo server in plain C.  Level-triggered reads;
 * an echo is written at once, and only what the socket does not take is
 * buffered (then EPOLLOUT is watched until it drains).
 *
 *   epoll_echo PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct conn {
  int fd;
  char *pend; /* unsent echo */
  size_t plen;
} conn;

static void drop(int ep, conn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c->pend);
  free(c);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 7100;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  signal(SIGPIPE, SIG_IGN);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
      listen(lfd, 4096) < 0) {
    perror("epoll_echo: listen");
    return 1;
  }
  int ep = epoll_create1(0);
  struct epoll_event le = {EPOLLIN, {.ptr = NULL}};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le);
  printf("ready\n");
  fflush(stdout);
  static char buf[65536];
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (!c) {
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0)
            break;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conn *nc = calloc(1, sizeof *nc);
          nc->fd = fd;
          struct epoll_event e = {EPOLLIN, {.ptr = nc}};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
        }
        continue;
      }
      if (evs[i].events & EPOLLOUT) {
        ssize_t k = send(c->fd, c->pend, c->plen, MSG_NOSIGNAL);
        if (k > 0) {
          memmove(c->pend, c->pend + k, c->plen - (size_t)k);
          c->plen -= (size_t)k;
        }
        if (c->plen == 0) {
          struct epoll_event e = {EPOLLIN, {.ptr = c}};
          epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
        }
        continue;
      }
      if (c->plen) /* still flushing: read later */
        continue;
      ssize_t k = recv(c->fd, buf, sizeof buf, 0);
      if (k == 0 || (k < 0 && errno != EAGAIN)) {
        drop(ep, c);
        continue;
      }
      if (k < 0)
        continue;
      ssize_t w = send(c->fd, buf, (size_t)k, MSG_NOSIGNAL);
      if (w < 0 && errno != EAGAIN) {
        drop(ep, c);
        continue;
      }
      if (w < 0)
        w = 0;
      if (w < k) {
        c->plen = (size_t)(k - w);
        c->pend = realloc(c->pend, c->plen);
        memcpy(c->pend, buf + w, c->plen);
        struct epoll_event e = {EPOLLOUT, {.ptr = c}};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
      }
    }
  }
}
