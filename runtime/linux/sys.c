/* linux/sys.c - threads, mutexes, TLS keys, the clock and futex-based
 * foreign-thread events on Linux (POSIX + futex). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "hydra/error.h"
#include "hydra/runtime.h"
#include "runtime/sys.h"
#include "runtime/wait.h"

_Static_assert(sizeof(pthread_mutex_t) <= sizeof(hy__mutex_t), "mutex size");
_Static_assert(sizeof(pthread_cond_t) <= sizeof(hy__cond_t), "cond size");

hy_time_t hy_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (hy_time_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec abs_realtime(int64_t deadline) {
  /* pthread_cond_timedwait wants CLOCK_MONOTONIC when the condattr says so,
   * which it does (see hy__cond_init). */
  struct timespec ts;
  ts.tv_sec = (time_t)(deadline / 1000000000);
  ts.tv_nsec = (long)(deadline % 1000000000);
  return ts;
}

int hy__thread_start(hy__thread_t *t, void *(*fn)(void *), void *arg,
                     size_t stack_size, const char *name) {
  pthread_attr_t a;
  pthread_t th;
  pthread_attr_init(&a);
  if (stack_size)
    pthread_attr_setstacksize(&a, stack_size);
  int rc = pthread_create(&th, &a, fn, arg);
  pthread_attr_destroy(&a);
  if (rc != 0)
    return hy_translate_errno(rc);
  if (name) {
    char n[16];
    strncpy(n, name, sizeof n - 1);
    n[15] = 0;
    pthread_setname_np(th, n);
  }
  t->h = (uintptr_t)th;
  return 0;
}

void hy__thread_join(hy__thread_t t) { pthread_join((pthread_t)t.h, NULL); }

void hy__thread_yield(void) { sched_yield(); }

/* linux/membarrier.h's commands, spelled out for older headers. */
#define HY_MEMBARRIER_CMD_QUERY 0
#define HY_MEMBARRIER_CMD_PRIVATE_EXPEDITED (1 << 3)
#define HY_MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED (1 << 4)

int hy__heavy_barrier_init(void) {
#ifdef SYS_membarrier
  long cmds = syscall(SYS_membarrier, HY_MEMBARRIER_CMD_QUERY, 0, 0);
  if (cmds < 0 || !(cmds & HY_MEMBARRIER_CMD_PRIVATE_EXPEDITED))
    return 0;
  /* Once per process; registering again is harmless. */
  return syscall(SYS_membarrier, HY_MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                 0, 0) == 0;
#else
  return 0;
#endif
}

void hy__heavy_barrier(void) {
#ifdef SYS_membarrier
  /* Registered by hy__heavy_barrier_init, which returned 1: cannot fail. */
  if (syscall(SYS_membarrier, HY_MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
    return;
#endif
  abort();
}

int hy__mutex_init(hy__mutex_t *m) {
  return -pthread_mutex_init((pthread_mutex_t *)m, NULL) ? HY_ENOMEM : 0;
}
void hy__mutex_destroy(hy__mutex_t *m) {
  pthread_mutex_destroy((pthread_mutex_t *)m);
}
void hy__mutex_lock(hy__mutex_t *m) { pthread_mutex_lock((pthread_mutex_t *)m); }
void hy__mutex_unlock(hy__mutex_t *m) {
  pthread_mutex_unlock((pthread_mutex_t *)m);
}

int hy__cond_init(hy__cond_t *c) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  int rc = pthread_cond_init((pthread_cond_t *)c, &a);
  pthread_condattr_destroy(&a);
  return rc ? HY_ENOMEM : 0;
}
void hy__cond_destroy(hy__cond_t *c) { pthread_cond_destroy((pthread_cond_t *)c); }
void hy__cond_signal(hy__cond_t *c) { pthread_cond_signal((pthread_cond_t *)c); }
void hy__cond_broadcast(hy__cond_t *c) {
  pthread_cond_broadcast((pthread_cond_t *)c);
}
int hy__cond_wait(hy__cond_t *c, hy__mutex_t *m, int64_t deadline) {
  if (deadline == HY_FOREVER) {
    pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m);
    return 0;
  }
  struct timespec ts = abs_realtime(deadline);
  int rc = pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m,
                                  &ts);
  return rc == ETIMEDOUT ? HY_ETIMEDOUT : 0;
}

int hy__tls_new(hy__tls_t *k) {
  pthread_key_t key;
  int rc = pthread_key_create(&key, NULL);
  if (rc)
    return hy_translate_errno(rc);
  k->k = (uintptr_t)key;
  return 0;
}

/* The calling thread's last key read or written and its value, in front
 * of pthread's table (hy__tls_get, runtime/sys.h): pthread_getspecific
 * behind the PLT cost a ping-pong round trip between two tasks about 5 ns
 * (6-7% of it).  Values are per thread and change only through
 * hy__tls_set on the thread itself, which keeps the pair current; every
 * thread that sets a runtime's key clears it again before the runtime is
 * closed and the key deleted (workers as they exit, a host thread after
 * each run_once), so a key number reused by a later runtime never meets a
 * stale value here. */
__thread uintptr_t hy__tls_last_key
    __attribute__((tls_model("initial-exec"))) = UINTPTR_MAX;
__thread void *hy__tls_last_val __attribute__((tls_model("initial-exec")));

void hy__tls_free(hy__tls_t k) {
  pthread_key_delete((pthread_key_t)k.k);
  if (hy__tls_last_key == k.k)
    hy__tls_last_key = UINTPTR_MAX;
}

void *hy__tls_get_slow(hy__tls_t k) {
  void *v = pthread_getspecific((pthread_key_t)k.k);
  hy__tls_last_key = k.k;
  hy__tls_last_val = v;
  return v;
}

void hy__tls_set(hy__tls_t k, void *v) {
  pthread_setspecific((pthread_key_t)k.k, v);
  hy__tls_last_key = k.k;
  hy__tls_last_val = v;
}

int hy__ncpu(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

void hy__sleep_thread_until(int64_t deadline) {
  struct timespec ts = abs_realtime(deadline);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
}

const char *hy__getenv(const char *name) { return getenv(name); }

/* ------------------------------------------------ foreign-thread events */

/* v: 0 not signalled, 1 signalled.  The waiter sleeps on the futex word. */
int hy__osev_init(hy__osev_t *e) {
  atomic_store(&e->v, 0);
  e->h = NULL;
  return 0;
}

void hy__osev_destroy(hy__osev_t *e) { (void)e; }

void hy__osev_signal(hy__osev_t *e) {
  atomic_store(&e->v, 1);
  syscall(SYS_futex, &e->v, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

int hy__osev_wait(hy__osev_t *e, int64_t deadline) {
  for (;;) {
    int one = 1;
    if (atomic_compare_exchange_strong(&e->v, &one, 0))
      return 1;
    struct timespec rel, *tp = NULL;
    if (deadline != HY_FOREVER) {
      int64_t left = deadline - hy_now();
      if (left <= 0)
        return 0;
      rel.tv_sec = (time_t)(left / 1000000000);
      rel.tv_nsec = (long)(left % 1000000000);
      tp = &rel;
    }
#ifdef HY_TSAN
    /* TSan defers a signal's handler until the thread next enters a
     * function it intercepts, and the raw futex call is not one: a thread
     * parked here (say, main in hy_task_join) that the kernel picks for
     * SIGINT would hold it forever.  Wake up now and then and pass through
     * an intercepted call, which runs what is pending. */
    struct timespec slice = {0, 50 * 1000000};
    if (!tp || rel.tv_sec > 0 || rel.tv_nsec > slice.tv_nsec)
      tp = &slice;
    syscall(SYS_futex, &e->v, FUTEX_WAIT_PRIVATE, 0, tp, NULL, 0);
    usleep(0);
#else
    syscall(SYS_futex, &e->v, FUTEX_WAIT_PRIVATE, 0, tp, NULL, 0);
#endif
  }
}
