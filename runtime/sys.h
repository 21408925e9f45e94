/* runtime/sys.h - the operating-system primitives the runtime needs, one
 * implementation per OS (runtime/linux/sys.c, runtime/win/sys.c): threads,
 * a mutex and condition variable for the slow paths, a thread-local key per
 * runtime, the CPU count, and the clock (hy_now in the public header).
 */
#ifndef HYDRA_RUNTIME_SYS_H
#define HYDRA_RUNTIME_SYS_H

#include <stddef.h>
#include <stdint.h>

typedef struct hy__thread {
  uintptr_t h;
} hy__thread_t;

/* Starts fn(arg) on a new thread with a stack of stack_size (0: default).
 * Returns 0 or HY_E*. */
int hy__thread_start(hy__thread_t *t, void *(*fn)(void *), void *arg,
                     size_t stack_size, const char *name);
void hy__thread_join(hy__thread_t t);
void hy__thread_yield(void);

/* One pause of a spin loop: tells the CPU (and a sibling hyperthread) that
 * this thread is waiting. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define hy__cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define hy__cpu_relax() __asm__ __volatile__("yield")
#else
#define hy__cpu_relax() ((void)0)
#endif

/* A process-wide memory barrier: when it returns, every thread of the
 * process has run a full barrier since the call began (membarrier's
 * private expedited command on Linux, FlushProcessWriteBuffers on
 * Windows).  It lets a rare party (a cancel) pay for the fence that a
 * frequent one (a park) would otherwise run every time: the frequent side
 * needs only a compiler barrier.  hy__heavy_barrier_init returns 1 when
 * the barrier is available (then hy__heavy_barrier may be called), 0 when
 * not; it is safe to call more than once. */
int hy__heavy_barrier_init(void);
void hy__heavy_barrier(void);

/* Mutex and condition variable: for the slow paths only (idle workers,
 * barriers, the blocking pool).  Opaque storage sized for every OS. */
typedef struct hy__mutex {
  uint64_t s[8];
} hy__mutex_t;
typedef struct hy__cond {
  uint64_t s[12];
} hy__cond_t;

int hy__mutex_init(hy__mutex_t *m);
void hy__mutex_destroy(hy__mutex_t *m);
void hy__mutex_lock(hy__mutex_t *m);
void hy__mutex_unlock(hy__mutex_t *m);
int hy__cond_init(hy__cond_t *c);
void hy__cond_destroy(hy__cond_t *c);
void hy__cond_signal(hy__cond_t *c);
void hy__cond_broadcast(hy__cond_t *c);
/* Waits until signalled or the monotonic deadline; returns 0, or
 * HY_ETIMEDOUT. Spurious wake-ups happen: callers loop on a predicate. */
int hy__cond_wait(hy__cond_t *c, hy__mutex_t *m, int64_t deadline);

/* Thread-local storage keyed per runtime (no process-wide "current
 * runtime"): each runtime makes its own key. */
typedef struct hy__tls {
  uintptr_t k;
} hy__tls_t;
int hy__tls_new(hy__tls_t *k);
void hy__tls_free(hy__tls_t k);
void hy__tls_set(hy__tls_t k, void *v);
/* hy__tls_peek(k, &v): 1 with the value in v where it can be read
 * without a call, else 0 (call hy__tls_get). */
#if defined(_WIN32)
void *hy__tls_get(hy__tls_t k);
static inline int hy__tls_peek(hy__tls_t k, void **v) {
  (void)k;
  (void)v;
  return 0;
}
#else
/* The calling thread's last key read or written and its value, in front
 * of pthread's table (runtime/linux/sys.c): a worker reads its runtime's
 * key on every channel operation, where a call costs as much as the
 * look.  Initial-exec: one %fs-relative load, also in the shared
 * library. */
extern __thread uintptr_t hy__tls_last_key
    __attribute__((tls_model("initial-exec")));
extern __thread void *hy__tls_last_val
    __attribute__((tls_model("initial-exec")));
void *hy__tls_get_slow(hy__tls_t k);
static inline void *hy__tls_get(hy__tls_t k) {
  if (k.k == hy__tls_last_key)
    return hy__tls_last_val;
  return hy__tls_get_slow(k);
}
static inline int hy__tls_peek(hy__tls_t k, void **v) {
  if (k.k != hy__tls_last_key)
    return 0;
  *v = hy__tls_last_val;
  return 1;
}
#endif

int hy__ncpu(void);

/* Sleeps the calling thread until the monotonic deadline. */
void hy__sleep_thread_until(int64_t deadline);

/* Reads an environment variable (NULL when unset). */
const char *hy__getenv(const char *name);

#endif
