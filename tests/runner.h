/* runner.h - the test runner's process interface, one file per OS
 * (proc_posix.c, proc_win.c). */
#ifndef HYDRA_TEST_RUNNER_H
#define HYDRA_TEST_RUNNER_H

#include <stdint.h>
#include <stdio.h>

typedef struct proc {
  intptr_t handle; /* pid on POSIX, HANDLE on Windows */
  int running;
} proc_t;

/* Starts `exe --run test` with HYDRA_BACKEND=backend (if not NULL), its
 * stdout and stderr going to the file at outpath.  Returns 0 or -1. */
int proc_spawn(proc_t *p, const char *exe, const char *test,
               const char *backend, const char *outpath);

/* Called first in a test's own process (--run): the test ends when the
 * runner does, however the runner ended (killed by a time-out, say), so
 * that no test is left running - holding the locks and ports the runner
 * held - once its runner is gone.  Linux: PR_SET_PDEATHSIG; elsewhere
 * nothing. */
void proc_child_init(void);

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

/* An example program run by a test: <prog> (prog.exe on Windows) next to
 * the test binary, started with the space-separated arguments args, its
 * stdout and stderr read line by line from out. */
typedef struct ex_proc {
  intptr_t handle; /* pid on POSIX, the process HANDLE on Windows */
  FILE *out;
} ex_proc_t;

/* Returns 0, -1 if the program could not be started, or -2 on Windows if
 * the test could not take a console of its own (ex_stop's Ctrl+C must
 * reach only the test and its child: the caller skips). */
int ex_start(ex_proc_t *p, const char *prog, const char *args);

/* Asks the example to stop: signal sig on POSIX; on Windows a Ctrl+C
 * (SIGINT), the one console event a process can raise in another, which
 * the test's own handler ignores.  Returns 0 or -1. */
int ex_stop(ex_proc_t *p, int sig);

/* Closes out, waits for the example (killing it after 30 s) and returns
 * its exit code (128+signal for a signal death on POSIX), -1 after the
 * time-out. */
int ex_wait(ex_proc_t *p);

#endif
