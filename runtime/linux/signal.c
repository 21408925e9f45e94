/* linux/signal.c - the POSIX source of signals (runtime/signals.h): the
 * handlers, a self-pipe and the dispatcher thread that hands occurrences
 * to the portable layer (runtime/signals.c).
 *
 * Process-wide state `src`, as signal dispositions are: per signal, a count
 * of occurrences the handler saw and the dispatcher has not handed out
 * yet, how many catch it, and the handler Hydra replaced; the pipe; the
 * dispatcher.
 *
 * The handler (on_signal) is async-signal-safe: it adds one to the
 * signal's count and writes the signal's number to the pipe (non-blocking;
 * if the pipe is full the count still has it).  The dispatcher thread reads
 * the pipe and hands each occurrence to hy__signal_deliver - in the order
 * the bytes came, then whatever the counts hold beyond the bytes.  So
 * counts are never lost, and order is kept unless the pipe overflowed.
 *
 * Stop: the dispatcher is told to leave, woken with a byte and joined; the
 * pipe is closed after waiting for handlers still running on other threads
 * (src.inflight), so that none writes to a closed (or reused) fd.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "hydra/error.h"
#include "runtime/signals.h"

#define NSIGS 65

static struct {
  int installed[NSIGS];        /* catches per signal, under the table lock */
  struct sigaction old[NSIGS];
  int rfd;                     /* the pipe's read end, -1: none */
  atomic_int wfd;              /* its write end, read by the handler */
  atomic_int inflight;         /* handlers running now */
  atomic_ulong pending[NSIGS]; /* seen by the handler, not dispatched */
  atomic_int stop;             /* the dispatcher should leave */
  pthread_t thread;
} src = {.rfd = -1, .wfd = -1};

static void on_signal(int s) {
  int saved = errno;
  atomic_fetch_add(&src.inflight, 1);
  if (s > 0 && s < NSIGS) {
    atomic_fetch_add(&src.pending[s], 1);
    int fd = atomic_load(&src.wfd);
    if (fd >= 0) {
      unsigned char b = (unsigned char)s;
      ssize_t n = write(fd, &b, 1);
      (void)n; /* full pipe: the count has it */
    }
  }
  atomic_fetch_sub(&src.inflight, 1);
  errno = saved;
}

int hy__sigsrc_catch(int s) {
  if (src.installed[s]++)
    return 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigfillset(&sa.sa_mask);
  if (sigaction(s, &sa, &src.old[s]) != 0) {
    src.installed[s]--;
    return hy_translate_errno(errno);
  }
  return 0;
}

void hy__sigsrc_release(int s) {
  if (--src.installed[s] == 0)
    sigaction(s, &src.old[s], NULL);
}

static int take_pending(int s) {
  unsigned long v = atomic_load(&src.pending[s]);
  while (v > 0)
    if (atomic_compare_exchange_weak(&src.pending[s], &v, v - 1))
      return 1;
  return 0;
}

static void *dispatcher(void *arg) {
  (void)arg;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  for (;;) {
    unsigned char buf[256];
    ssize_t n = read(src.rfd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] > 0 && buf[i] < NSIGS && take_pending(buf[i]))
        hy__signal_deliver(buf[i]);
    for (int s = 1; s < NSIGS; s++)
      for (unsigned long k = atomic_exchange(&src.pending[s], 0); k; k--)
        hy__signal_deliver(s);
    if (atomic_load(&src.stop) || n <= 0)
      return NULL;
  }
}

int hy__sigsrc_start(void) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0)
    return hy_translate_errno(errno);
  fcntl(p[1], F_SETFL, fcntl(p[1], F_GETFL) | O_NONBLOCK);
  src.rfd = p[0];
  atomic_store(&src.wfd, p[1]);
  atomic_store(&src.stop, 0);
  for (int s = 1; s < NSIGS; s++)
    atomic_store(&src.pending[s], 0);
  int rc = pthread_create(&src.thread, NULL, dispatcher, NULL);
  if (rc != 0) {
    atomic_store(&src.wfd, -1);
    close(p[0]);
    close(p[1]);
    src.rfd = -1;
    return hy_translate_errno(rc);
  }
  return 0;
}

void hy__sigsrc_stop(void) {
  atomic_store(&src.stop, 1);
  int wfd = atomic_load(&src.wfd);
  unsigned char zero = 0;
  while (write(wfd, &zero, 1) < 0 && errno == EINTR)
    ;
  pthread_join(src.thread, NULL);
  atomic_store(&src.wfd, -1);
  while (atomic_load(&src.inflight) > 0)
    sched_yield();
  close(wfd);
  close(src.rfd);
  src.rfd = -1;
}
