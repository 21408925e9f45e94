/* linux/evfd.c - a hub consumer's OS handle on Linux: an eventfd in
 * semaphore mode.  Its counter is 0 (not ready) or 1 (a release pending);
 * a read by anyone takes the release.  A closed consumer's counter is set
 * so high that it stays readable for good.  Posting checks readiness first
 * (under the consumer's lock, so only foreign readers race with it), which
 * keeps the counter at 1 and makes sets coalesce: if a reader takes the
 * release between the check and the write, the write is a new release. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "hydra/error.h"
#include "runtime/hubs.h"

int hy__evfd_open(intptr_t *h, int manual) {
  (void)manual;
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | EFD_SEMAPHORE);
  if (fd < 0)
    return hy_translate_errno(errno);
  *h = fd;
  return 0;
}

void hy__evfd_close(intptr_t h) { close((int)h); }

int hy__evfd_ready(intptr_t h) {
  struct pollfd p = {(int)h, POLLIN, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void add(intptr_t h, uint64_t v) {
  while (write((int)h, &v, sizeof v) < 0 && errno == EINTR)
    ;
}

void hy__evfd_post(intptr_t h) {
  if (!hy__evfd_ready(h))
    add(h, 1);
}

void hy__evfd_post_forever(intptr_t h) { add(h, UINT64_C(1) << 62); }

int hy__evfd_take(intptr_t h) {
  uint64_t v;
  ssize_t n;
  while ((n = read((int)h, &v, sizeof v)) < 0 && errno == EINTR)
    ;
  return n == (ssize_t)sizeof v;
}

/* A poller of an eventfd cannot be woken without leaving it readable: a
 * pulse reaches the consumer's task and thread waiters only. */
void hy__evfd_pulse(intptr_t h) { (void)h; }
