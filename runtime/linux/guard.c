/* linux/guard.c - stack-overflow reports for tasks.
 *
 * Every task stack has a PROT_NONE guard page below it (alloc/).  A task
 * that runs into it faults; the SIGSEGV handler, running on the worker's
 * alternate signal stack (the task's own stack is unusable by then), checks
 * whether the address lies in the guard area of the task the worker is
 * running and, if so, writes "task NAME overflowed its stack" and lets the
 * fault kill the process: a silent corruption is never an option.  Any
 * other fault goes to the handler that was installed before ours (ASan's,
 * or the default).
 *
 * Signal handlers are process-wide, so this file holds the one piece of
 * process-wide state in the runtime: the previous SIGSEGV action and an
 * install-once flag, plus a thread-local pointer to the worker running on
 * the thread, which a handler has no other way to find.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "runtime/internal.h"

#define ALTSTACK_SIZE (64 * 1024)
#define GUARD_SPAN_PAGES 4 /* a frame may skip a little past the guard */

static atomic_int installed;
static struct sigaction previous;
static _Thread_local hy__worker *running_here;

static void put(const char *s) {
  ssize_t r = write(2, s, strlen(s));
  (void)r;
}

static void put_num(uint64_t v) {
  char buf[24];
  int i = (int)sizeof buf;
  buf[--i] = 0;
  do {
    buf[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v && i > 0);
  put(&buf[i]);
}

static void on_segv(int sig, siginfo_t *si, void *uc) {
  hy__worker *w = running_here;
  hy__task *t = w ? w->current : NULL;
  if (t && t->stack.base) {
    uintptr_t a = (uintptr_t)si->si_addr;
    uintptr_t lo = (uintptr_t)t->stack.base - GUARD_SPAN_PAGES * hy_page_size();
    if (a >= lo && a < (uintptr_t)t->stack.base) {
      put("hydra: task '");
      put(t->name);
      put("' (");
      put_num(t->slot + 1);
      put(":");
      put_num(t->gen);
      put(") overflowed its stack of ");
      put_num(t->stack.size);
      put(" bytes\n");
      signal(SIGSEGV, SIG_DFL);
      return; /* the fault repeats and kills the process */
    }
  }
  if (previous.sa_flags & SA_SIGINFO) {
    if (previous.sa_sigaction) {
      previous.sa_sigaction(sig, si, uc);
      return;
    }
  } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(sig);
    return;
  }
  signal(SIGSEGV, SIG_DFL);
}

void hy__guard_thread_init(hy__worker *w) {
  running_here = w;
  w->altstack = hy__mem_alloc(ALTSTACK_SIZE);
  if (w->altstack) {
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_sp = w->altstack;
    ss.ss_size = ALTSTACK_SIZE;
    if (sigaltstack(&ss, NULL) != 0) {
      hy__mem_free(w->altstack);
      w->altstack = NULL;
    }
  }
  if (atomic_exchange(&installed, 1) == 0) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous);
  }
}

void hy__guard_thread_fini(hy__worker *w) {
  running_here = NULL;
  if (w->altstack) {
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    hy__mem_free(w->altstack);
    w->altstack = NULL;
  }
}
