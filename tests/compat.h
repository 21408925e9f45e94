/* compat.h - the few POSIX facilities the tests use, on Windows: threads
 * (pthread_create/join), usleep, the process's CPU time, waiting for the
 * runtime's OS handle, running a shell command with an environment
 * variable set, and the exit status macros.  On POSIX it includes the
 * real headers and adds the same helpers. */
#ifndef HYDRA_TEST_COMPAT_H
#define HYDRA_TEST_COMPAT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef _WIN32
#include <windows.h>
#include <process.h>

typedef HANDLE pthread_t;

typedef struct compat_thread {
  void *(*fn)(void *);
  void *arg;
} compat_thread;

static unsigned __stdcall compat_thread_main(void *p) {
  compat_thread c = *(compat_thread *)p;
  free(p);
  c.fn(c.arg);
  return 0;
}

static inline int pthread_create(pthread_t *t, const void *attr,
                                 void *(*fn)(void *), void *arg) {
  (void)attr;
  compat_thread *c = malloc(sizeof *c);
  if (!c)
    return 12;
  c->fn = fn;
  c->arg = arg;
  uintptr_t h = _beginthreadex(NULL, 0, compat_thread_main, c, 0, NULL);
  if (!h) {
    free(c);
    return 11;
  }
  *t = (HANDLE)h;
  return 0;
}

static inline int pthread_join(pthread_t t, void **ret) {
  WaitForSingleObject(t, INFINITE);
  CloseHandle(t);
  if (ret)
    *ret = NULL;
  return 0;
}

#undef usleep
#define usleep(us) Sleep((DWORD)(((us) + 999) / 1000))

#define WIFEXITED(st) 1
#define WEXITSTATUS(st) (st)
#define WTERMSIG(st) 0

/* User plus kernel CPU time of this process, in seconds. */
static inline double compat_cpu_seconds(void) {
  FILETIME c, e, k, u;
  GetProcessTimes(GetCurrentProcess(), &c, &e, &k, &u);
  uint64_t kt = ((uint64_t)k.dwHighDateTime << 32) | k.dwLowDateTime;
  uint64_t ut = ((uint64_t)u.dwHighDateTime << 32) | u.dwLowDateTime;
  return (double)(kt + ut) / 1e7;
}

/* Waits up to ms for the runtime's OS handle (an event HANDLE) to be
 * signalled: 1 if it is, 0 on time-out, -1 on error. */
static inline int compat_wait_handle(intptr_t h, int ms) {
  DWORD r = WaitForSingleObject((HANDLE)h, (DWORD)ms);
  return r == WAIT_OBJECT_0 ? 1 : r == WAIT_TIMEOUT ? 0 : -1;
}

/* Builds a command line that runs `exe args` with VAR=VALUE set. */
static inline void compat_env_cmd(char *buf, size_t cap, const char *assign,
                                  const char *exe, const char *args) {
  snprintf(buf, cap, "set %s&& \"%s\" %s", assign, exe, args);
}

#else /* POSIX */
#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static inline double compat_cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static inline int compat_wait_handle(intptr_t fd, int ms) {
  struct pollfd pf = {(int)fd, POLLIN, 0};
  int k = poll(&pf, 1, ms);
  return k < 0 ? -1 : k;
}

static inline void compat_env_cmd(char *buf, size_t cap, const char *assign,
                                  const char *exe, const char *args) {
  snprintf(buf, cap, "%s '%s' %s", assign, exe, args);
}
#endif

/* Writes what fn(arg, FILE *) prints into buf (NUL-terminated). */
static inline void compat_capture(void (*fn)(void *, FILE *), void *arg,
                                  char *buf, size_t cap) {
  FILE *f = tmpfile();
  buf[0] = 0;
  if (!f)
    return;
  fn(arg, f);
  fflush(f);
  rewind(f);
  size_t n = fread(buf, 1, cap - 1, f);
  buf[n] = 0;
  fclose(f);
}

#endif
