/* runner.h - the test runner's process interface, one file per OS
 * (proc_posix.c, proc_win.c). */
#ifndef HYDRA_TEST_RUNNER_H
#define HYDRA_TEST_RUNNER_H

#include <stdint.h>

typedef struct proc {
  intptr_t handle; /* pid on POSIX, HANDLE on Windows */
  int running;
} proc_t;

/* Starts `exe --run test` with HYDRA_BACKEND=backend (if not NULL), its
 * stdout and stderr going to the file at outpath.  Returns 0 or -1. */
int proc_spawn(proc_t *p, const char *exe, const char *test,
               const char *backend, const char *outpath);

/* Returns 1 and sets *code when the child has exited (code 128+signal for a
 * signal death), 0 while it runs. */
int proc_poll(proc_t *p, int *code);

/* Appends the stacks of every thread of a hung child to the file at
 * outpath (gdb on POSIX, when installed; nothing on Windows), so that a
 * time-out in CI says where the test stood. */
void proc_dump(proc_t *p, const char *outpath);

/* Kills the child (and its process group on POSIX) and reaps it. */
void proc_kill(proc_t *p);

/* Monotonic milliseconds; sleeping a little; the runner's own path. */
int64_t proc_now_ms(void);
void proc_sleep_ms(int ms);
const char *proc_self_exe(const char *argv0);
const char *proc_tmpdir(void);
int proc_ncpu(void);

#endif
