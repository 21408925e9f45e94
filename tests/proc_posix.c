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
  char **envp = calloc(n + 2, sizeof *envp);
  if (!envp)
    return -1;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (!backend || strncmp(environ[i], "HYDRA_BACKEND=", 14) != 0)
      envp[k++] = environ[i];
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
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
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
