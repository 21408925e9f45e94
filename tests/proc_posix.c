/* proc_posix.c - child processes for the test runner on POSIX systems. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "runner.h"

extern char **environ;

int proc_spawn(proc_t *p, const char *exe, const char *test,
               const char *backend, const char *outpath) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  char *argv[] = {(char *)exe, "--run", (char *)test, NULL};
  char envbuf[64];
  size_t n = 0;
  while (environ[n])
    n++;
  char **envp = calloc(n + 3, sizeof *envp);
  if (!envp)
    return -1;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if ((!backend || strncmp(environ[i], "HYDRA_BACKEND=", 14) != 0) &&
        strncmp(environ[i], "HYDRA_TEST_RUNNER=", 18) != 0)
      envp[k++] = environ[i];
  char runner[48];
  snprintf(runner, sizeof runner, "HYDRA_TEST_RUNNER=%ld", (long)getpid());
  envp[k++] = runner;
  if (backend) {
    snprintf(envbuf, sizeof envbuf, "HYDRA_BACKEND=%s", backend);
    envp[k++] = envbuf;
  }
  envp[k] = NULL;

  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, outpath,
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawnattr_init(&at);
  /* Every test starts with default signal dispositions and nothing
   * blocked, however the runner was started (a shell runs a background
   * job with SIGINT and SIGQUIT ignored, and children inherit that). */
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&at, &all);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF |
                                    POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setpgroup(&at, 0);
  pid_t pid;
  int rc = posix_spawn(&pid, exe, &fa, &at, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  free(envp);
  if (rc != 0)
    return -1;
  p->handle = pid;
  p->running = 1;
  return 0;
}

void proc_child_init(void) {
#ifdef __linux__
  /* The runner is single-threaded, so its main thread, the one the death
   * signal watches, is the runner.  If it died before the prctl, the
   * parent is already someone else: leave at once. */
  const char *r = getenv("HYDRA_TEST_RUNNER");
  if (!r)
    return;
  long runner = atol(r);
  /* Processes the test starts itself (a test that runs itself again in
   * a child, through a shell) are not the runner's children. */
  unsetenv("HYDRA_TEST_RUNNER");
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if ((long)getppid() != runner)
    _exit(128 + SIGKILL);
#endif
}

int proc_poll(proc_t *p, int *code) {
  int st;
  pid_t r = waitpid((pid_t)p->handle, &st, WNOHANG);
  if (r == 0)
    return 0;
  if (r < 0) {
    *code = 255;
  } else if (WIFEXITED(st)) {
    *code = WEXITSTATUS(st);
  } else {
    *code = 128 + WTERMSIG(st);
  }
  /* Whatever the test left behind in its group goes with it. */
  kill(-(pid_t)p->handle, SIGKILL);
  p->running = 0;
  return 1;
}

void proc_dump(proc_t *p, const char *outpath) {
  if (system("command -v gdb >/dev/null 2>&1") != 0)
    return;
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "echo '--- threads of the hung test:' >>'%s'; "
           "timeout 60 gdb -p %ld -batch -nx -ex 'thread apply all bt' "
           "</dev/null >>'%s' 2>&1",
           outpath, (long)p->handle, outpath);
  if (system(cmd) != 0) {
    /* gdb could not attach (ptrace not allowed): the output says so */
  }
}

void proc_kill(proc_t *p) {
  int st;
  kill(-(pid_t)p->handle, SIGKILL);
  kill((pid_t)p->handle, SIGKILL);
  waitpid((pid_t)p->handle, &st, 0);
  p->running = 0;
}

int64_t proc_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void proc_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

const char *proc_self_exe(const char *argv0) {
  static char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0)
    return argv0;
  buf[n] = 0;
  return buf;
}

const char *proc_tmpdir(void) {
  const char *t = getenv("TMPDIR");
  return t && *t ? t : "/tmp";
}

int proc_ncpu(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* ------------------------------------------------------------ examples */

const char *test_exe(void);

/* The path of prog next to the test binary. */
static void example_path(char *buf, size_t cap, const char *prog) {
  snprintf(buf, cap, "%s", test_exe());
  char *slash = strrchr(buf, '/');
  size_t at = slash ? (size_t)(slash + 1 - buf) : 0;
  snprintf(buf + at, cap - at, "%s", prog);
}

int ex_start(ex_proc_t *p, const char *prog, const char *args) {
  char exe[1024], words[256];
  example_path(exe, sizeof exe, prog);
  snprintf(words, sizeof words, "%s", args ? args : "");
  char *argv[16] = {exe};
  int argc = 1;
  for (char *w = strtok(words, " "); w && argc < 15; w = strtok(NULL, " "))
    argv[argc++] = w;
  argv[argc] = NULL;
  int out[2];
  if (pipe(out) != 0)
    return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, out[1], 2);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  posix_spawn_file_actions_addclose(&fa, out[1]);
  pid_t pid;
  int rc = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  if (rc != 0) {
    close(out[0]);
    return -1;
  }
  p->handle = pid;
  p->out = fdopen(out[0], "r");
  if (!p->out) {
    close(out[0]);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
  }
  return 0;
}

int ex_stop(ex_proc_t *p, int sig) {
  return kill((pid_t)p->handle, sig) == 0 ? 0 : -1;
}

int ex_wait(ex_proc_t *p) {
  fclose(p->out);
  p->out = NULL;
  int64_t limit = proc_now_ms() + 30000;
  for (;;) {
    int st;
    pid_t r = waitpid((pid_t)p->handle, &st, WNOHANG);
    if (r == (pid_t)p->handle)
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (r < 0 && errno != EINTR)
      return -1;
    if (proc_now_ms() > limit) {
      kill((pid_t)p->handle, SIGKILL);
      waitpid((pid_t)p->handle, &st, 0);
      return -1;
    }
    proc_sleep_ms(5);
  }
}
