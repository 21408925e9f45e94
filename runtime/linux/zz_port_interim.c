/* zz_port_interim.c - a placeholder port (posts and wakes only, on epoll
 * and an eventfd) until the real backends land. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <stdint.h>

#include "hydra/error.h"
#include "runtime/port.h"
#include "runtime/wait.h"

struct hy__port {
  int ep, ev;
  hy__lock_t lock;
  hy__op *head, *tail;
};

int hy__port_open(hy__port **out, int backend, hy__port *share) {
  (void)share;
  if (backend == HY__BACKEND_URING || backend == HY__BACKEND_IOCP)
    return HY_ENOSYS;
  hy__port *p = calloc(1, sizeof *p);
  if (!p)
    return HY_ENOMEM;
  p->ep = epoll_create1(EPOLL_CLOEXEC);
  p->ev = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  struct epoll_event e = {EPOLLIN, {.ptr = NULL}};
  epoll_ctl(p->ep, EPOLL_CTL_ADD, p->ev, &e);
  *out = p;
  return 0;
}
void hy__port_close(hy__port *p) {
  close(p->ep);
  close(p->ev);
  free(p);
}
const char *hy__port_backend_name(const hy__port *p) { (void)p; return "epoll"; }
int hy__port_backend(const hy__port *p) { (void)p; return HY__BACKEND_EPOLL; }
int hy__port_associate(hy__port *p, intptr_t fd) { (void)p; (void)fd; return 0; }
void hy__port_forget(hy__port *p, intptr_t fd) { (void)p; (void)fd; }
int hy__port_start(hy__port *p, hy__op *op) { (void)p; (void)op; return HY_ENOSYS; }
int hy__port_cancel(hy__port *p, hy__op *op) { (void)p; (void)op; return HY_ENOENT; }
int hy__port_post(hy__port *p, hy__op *op) {
  op->next = NULL;
  hy__lock(&p->lock);
  if (p->tail) p->tail->next = op; else p->head = op;
  p->tail = op;
  hy__unlock(&p->lock);
  hy__port_wake(p);
  return 0;
}
void hy__port_wake(hy__port *p) {
  uint64_t one = 1;
  ssize_t r = write(p->ev, &one, 8);
  (void)r;
}
int hy__port_wait(hy__port *p, hy__op **ops, int max, int64_t timeout_ns) {
  int n = 0;
  hy__lock(&p->lock);
  while (p->head && n < max) {
    ops[n++] = p->head;
    p->head = p->head->next;
    if (!p->head) p->tail = NULL;
  }
  hy__unlock(&p->lock);
  if (n) return n;
  struct epoll_event e;
  int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
  int k = epoll_wait(p->ep, &e, 1, ms);
  if (k > 0) {
    uint64_t v;
    ssize_t r = read(p->ev, &v, 8);
    (void)r;
  }
  hy__lock(&p->lock);
  while (p->head && n < max) {
    ops[n++] = p->head;
    p->head = p->head->next;
    if (!p->head) p->tail = NULL;
  }
  hy__unlock(&p->lock);
  return n;
}
intptr_t hy__port_os_handle(const hy__port *p) { return p->ep; }
