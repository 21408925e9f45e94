/* test-signal.c - OS signals as events, with real signals (raise, kill),
 * and the signal-driven shutdown. */
/* The runtime has no Windows backend yet: like list-hub.h, this file is
 * for POSIX systems only. */
#ifdef _WIN32
typedef int hydra_posix_only_t;
#else
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hydra.h"
#include "runtime/wait.h"
#include "drill.h"
#include "rt_util.h"
#include "runner.h"
#include "test.h"

static int read_one(hy_sigrecv_t *r) {
  int s = -1;
  ASSERT_OK(hy_signal_read_until(r, hy_deadline_in(HY_SEC(10)), &s));
  return s;
}

static void wait_pending(hy_sigrecv_t *r, int n) {
  hy_time_t limit = hy_deadline_in(HY_SEC(10));
  while (hy_signal_pending(r) < n) {
    ASSERT(hy_now() < limit);
    usleep(200);
  }
}

TEST_IMPL(signal_counts_and_order) {
  hy_runtime_t *rt = test_rt_new(1);
  int sigs[] = {SIGUSR1, SIGUSR2, SIGHUP};
  hy_sigrecv_t *r;
  ASSERT_OK(hy_signal_subscribe(rt, sigs, 3, &r));
  /* raise() runs the handler before it returns: five occurrences. */
  for (int i = 0; i < 5; i++)
    ASSERT_EQ(raise(SIGUSR1), 0);
  wait_pending(r, 5);
  for (int i = 0; i < 5; i++)
    ASSERT_EQ(read_one(r), SIGUSR1);
  int s;
  ASSERT_ERR(hy_signal_read_until(r, 0, &s), HY_ETIMEDOUT);
  /* Mixed signals come out in order of arrival. */
  int seq[] = {SIGUSR2, SIGHUP, SIGUSR1, SIGUSR1, SIGUSR2, SIGHUP, SIGUSR1};
  /* Each one is waited for before the next is raised: TSan defers
   * handlers and then runs them in signal-number order, not arrival order. */
  for (int i = 0; i < 7; i++) {
    ASSERT_EQ(raise(seq[i]), 0);
    wait_pending(r, i + 1);
  }
  ASSERT_EQ(hy_signal_pending(r), 7);
  for (int i = 0; i < 7; i++)
    ASSERT_EQ(read_one(r), seq[i]);
  ASSERT_EQ(hy_signal_pending(r), 0);
  ASSERT_OK(hy_signal_unsubscribe(r));
  ASSERT(strcmp(hy_signal_name(SIGTERM), "SIGTERM") == 0);
  test_rt_close(rt, HY_MS(20));
  return 0;
}

TEST_IMPL(signal_every_receiver_every_runtime) {
  hy_runtime_t *a = test_rt_new(1), *b = test_rt_new(2);
  int usr2 = SIGUSR2;
  hy_sigrecv_t *ra1, *ra2, *rb;
  ASSERT_OK(hy_signal_subscribe(a, &usr2, 1, &ra1));
  ASSERT_OK(hy_signal_subscribe(a, &usr2, 1, &ra2));
  ASSERT_OK(hy_signal_subscribe(b, &usr2, 1, &rb));
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(kill(getpid(), SIGUSR2), 0);
    /* Wait for this one to land before the next: the kernel merges a
     * standard signal that is sent while the previous one is pending. */
    ASSERT_EQ(read_one(rb), SIGUSR2);
  }
  wait_pending(ra1, 3);
  wait_pending(ra2, 3);
  ASSERT_EQ(hy_signal_pending(ra1), 3);
  ASSERT_EQ(hy_signal_pending(ra2), 3);
  /* Closing one runtime frees its receivers; the other still gets them. */
  test_rt_close(a, HY_MS(20));
  ASSERT_EQ(raise(SIGUSR2), 0);
  ASSERT_EQ(read_one(rb), SIGUSR2);
  test_rt_close(b, HY_MS(20));
  return 0;
}

typedef struct {
  hy_runtime_t *rt;
  hy_sigrecv_t *r;
  atomic_int started;
  int got;
} reader_t;

static void *reader_task(void *p) {
  reader_t *x = p;
  atomic_store(&x->started, 1);
  int rc = hy_signal_read(x->r, &x->got);
  return (void *)(intptr_t)rc;
}

/* The signal arrives while the main thread is parked in hy_task_join (the
 * kernel picks the main thread for a process signal when it does not block
 * it): the handler must run there all the same.  Under TSan, which defers a
 * handler until the thread enters an intercepted call, a park on a raw
 * futex held it forever. */
static void *kill_later(void *p) {
  reader_t *x = p;
  sigset_t mine;
  sigemptyset(&mine);
  sigaddset(&mine, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &mine, NULL); /* not for this thread */
  while (!atomic_load(&x->started))
    usleep(100);
  usleep(20000); /* most likely the main thread is parked by now */
  kill(getpid(), SIGUSR2);
  return NULL;
}

TEST_IMPL(signal_reaches_parked_main) {
  hy_runtime_t *rt = test_rt_new(2);
  int usr2 = SIGUSR2;
  hy_sigrecv_t *r;
  ASSERT_OK(hy_signal_subscribe(rt, &usr2, 1, &r));
  for (int rep = 0; rep < 3; rep++) {
    reader_t x = {rt, r, 0, 0};
    hy_task_t t;
    ASSERT_OK(hy_task_spawn(rt, reader_task, &x, NULL, &t));
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, kill_later, &x), 0);
    void *res;
    ASSERT_OK(hy_task_join(rt, t, &res)); /* parked until the signal */
    ASSERT_EQ((intptr_t)res, 0);
    ASSERT_EQ(x.got, SIGUSR2);
    pthread_join(th, NULL);
  }
  ASSERT_OK(hy_signal_unsubscribe(r));
  test_rt_close(rt, HY_MS(20));
  return 0;
}

TEST_IMPL(signal_task_awaits_kill) {
  hy_runtime_t *rt = test_rt_new(2);
  int term = SIGTERM;
  hy_sigrecv_t *r;
  ASSERT_OK(hy_signal_subscribe(rt, &term, 1, &r));
  reader_t x = {rt, r, 0, 0};
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, reader_task, &x, NULL, &t));
  while (!atomic_load(&x.started))
    usleep(100);
  usleep(5000);
  ASSERT_EQ(kill(getpid(), SIGTERM), 0); /* would kill us unhandled */
  void *res;
  ASSERT_OK(hy_task_join(rt, t, &res));
  ASSERT_EQ((intptr_t)res, 0);
  ASSERT_EQ(x.got, SIGTERM);
  /* A deadline with nothing arriving: never early. */
  int s;
  hy_time_t d = hy_deadline_in(HY_MS(20));
  ASSERT_ERR(hy_signal_read_until(r, d, &s), HY_ETIMEDOUT);
  ASSERT_GE(hy_now(), d);
  /* A cancelled reader takes nothing: the signal stays for the next. */
  x.started = 0;
  ASSERT_OK(hy_task_spawn(rt, reader_task, &x, NULL, &t));
  while (!atomic_load(&x.started))
    usleep(100);
  usleep(2000);
  ASSERT_OK(hy_task_cancel(rt, t));
  ASSERT_OK(hy_task_join(rt, t, &res));
  ASSERT_EQ((intptr_t)res, HY_ECANCELED);
  ASSERT_EQ(raise(SIGTERM), 0);
  ASSERT_EQ(read_one(r), SIGTERM);
  /* The select arm takes a signal through the awaitable. */
  hy_arm_t arm = hy_arm_signal(r, &s);
  ASSERT(arm.ops && arm.guard && arm.kind == HY_ARM_OBJECT);
  ASSERT(strcmp(arm.ops->name, "signal") == 0);
  ASSERT_EQ(raise(SIGTERM), 0);
  wait_pending(r, 1);
  int result = 1;
  s = 0;
  hy__lock_t *l = arm.ops->lock_of(arm.obj);
  hy__lock(l);
  ASSERT_EQ(arm.ops->try_fire(arm.obj, &arm, &result), 1);
  ASSERT_EQ(result, 0);
  ASSERT_EQ(s, SIGTERM);
  ASSERT_EQ(arm.ops->try_fire(arm.obj, &arm, &result), 0);
  hy__unlock(l);
  /* Left subscribed: hy_runtime_close frees it and restores SIGTERM. */
  test_rt_close(rt, HY_MS(20));
  struct sigaction cur;
  ASSERT_EQ(sigaction(SIGTERM, NULL, &cur), 0);
  ASSERT(cur.sa_handler == SIG_DFL);
  return 0;
}

static atomic_int old_calls;
static void old_handler(int s) {
  (void)s;
  atomic_fetch_add(&old_calls, 1);
}

TEST_IMPL(signal_restores_old_handlers) {
  struct sigaction sa, cur;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = old_handler;
  ASSERT_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
  ASSERT_EQ(sigaction(SIGHUP, NULL, &cur), 0);
  ASSERT(cur.sa_handler == SIG_DFL);
  hy_runtime_t *a = test_rt_new(1), *b = test_rt_new(1);
  int usr1 = SIGUSR1;
  hy_sigrecv_t *ra, *rb, *rb2;
  ASSERT_OK(hy_signal_subscribe(a, &usr1, 1, &ra));
  ASSERT_OK(hy_signal_subscribe(b, &usr1, 1, &rb));
  int hup = SIGHUP;
  ASSERT_OK(hy_signal_subscribe(b, &hup, 1, &rb2));
  ASSERT_EQ(raise(SIGUSR1), 0);
  ASSERT_EQ(read_one(ra), SIGUSR1);
  ASSERT_EQ(read_one(rb), SIGUSR1);
  ASSERT_EQ(atomic_load(&old_calls), 0);
  /* Hydra handles SIGQUIT too while it has receivers. */
  ASSERT_EQ(sigaction(SIGQUIT, NULL, &cur), 0);
  ASSERT(cur.sa_handler != SIG_DFL);
  /* SIGHUP's last receiver goes: SIGHUP is restored, SIGUSR1 is not. */
  ASSERT_OK(hy_signal_unsubscribe(rb2));
  ASSERT_EQ(sigaction(SIGHUP, NULL, &cur), 0);
  ASSERT(cur.sa_handler == SIG_DFL);
  test_rt_close(a, HY_MS(20));
  ASSERT_EQ(raise(SIGUSR1), 0);
  ASSERT_EQ(read_one(rb), SIGUSR1);
  ASSERT_EQ(atomic_load(&old_calls), 0);
  /* The last runtime goes: the old handlers are back. */
  test_rt_close(b, HY_MS(20));
  ASSERT_EQ(sigaction(SIGUSR1, NULL, &cur), 0);
  ASSERT(cur.sa_handler == old_handler);
  ASSERT_EQ(sigaction(SIGQUIT, NULL, &cur), 0);
  ASSERT(cur.sa_handler == SIG_DFL);
  ASSERT_EQ(raise(SIGUSR1), 0);
  ASSERT_EQ(atomic_load(&old_calls), 1);
  /* And it all works again from scratch. */
  hy_runtime_t *c = test_rt_new(1);
  hy_sigrecv_t *rc;
  ASSERT_OK(hy_signal_subscribe(c, &usr1, 1, &rc));
  ASSERT_EQ(raise(SIGUSR1), 0);
  ASSERT_EQ(read_one(rc), SIGUSR1);
  ASSERT_OK(hy_signal_unsubscribe(rc));
  ASSERT_EQ(raise(SIGUSR1), 0);
  ASSERT_EQ(atomic_load(&old_calls), 2);
  test_rt_close(c, HY_MS(20));
  return 0;
}

/* Threads raise signals at themselves as fast as they can while the
 * runtime's workers are busy: every occurrence the handlers saw is read. */
typedef struct {
  int n;
  int sig;
} raiser_t;

static void *raiser(void *p) {
  raiser_t *r = p;
  for (int i = 0; i < r->n; i++)
    raise(r->sig);
  return NULL;
}

static void *spin_task(void *p) {
  hy_runtime_t *rt = p;
  while (hy_yield(rt) == 0)
    ;
  return NULL;
}

TEST_IMPL(signal_counts_survive_bursts) {
  enum { T = 4, N = 500 };
  hy_runtime_t *rt = test_rt_new(2);
  hy_task_t sp[2];
  for (int i = 0; i < 2; i++)
    ASSERT_OK(hy_task_spawn(rt, spin_task, rt, NULL, &sp[i]));
  int sigs[] = {SIGUSR1, SIGUSR2};
  hy_sigrecv_t *r;
  ASSERT_OK(hy_signal_subscribe(rt, sigs, 2, &r));
  pthread_t th[T];
  raiser_t rs[T];
  for (int i = 0; i < T; i++) {
    rs[i] = (raiser_t){N, i % 2 ? SIGUSR2 : SIGUSR1};
    ASSERT_EQ(pthread_create(&th[i], NULL, raiser, &rs[i]), 0);
  }
  for (int i = 0; i < T; i++)
    pthread_join(th[i], NULL);
  int n1 = 0, n2 = 0;
  for (int i = 0; i < T * N; i++) {
    int s = read_one(r);
    n1 += s == SIGUSR1;
    n2 += s == SIGUSR2;
  }
  ASSERT_EQ(n1, T / 2 * N);
  ASSERT_EQ(n2, T / 2 * N);
  int s;
  ASSERT_ERR(hy_signal_read_until(r, hy_deadline_in(HY_MS(20)), &s),
             HY_ETIMEDOUT);
  test_rt_close(rt, HY_MS(20));
  return 0;
}

static void *named_sleeper(void *p) {
  hy_sleep((hy_runtime_t *)p, HY_SEC(60));
  return NULL;
}

static int file_has(const char *path, const char *what) {
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  char buf[8192];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  return strstr(buf, what) != NULL;
}

TEST_IMPL(signal_sigquit_dumps_tasks) {
  char path[4096];
  snprintf(path, sizeof path, "%s/hydra-sigquit-XXXXXX", proc_tmpdir());
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  int saved = dup(2);
  hy_runtime_t *rt = test_rt_new(1);
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.name = "quit-me-dumper";
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, named_sleeper, rt, &o, &t));
  int usr1 = SIGUSR1;
  hy_sigrecv_t *r;
  ASSERT_OK(hy_signal_subscribe(rt, &usr1, 1, &r));
  usleep(20000); /* let the task reach its sleep */
  fflush(stderr);
  dup2(fd, 2);
  ASSERT_EQ(raise(SIGQUIT), 0); /* not subscribed: the dump */
  hy_time_t limit = hy_deadline_in(HY_SEC(10));
  while (!file_has(path, "quit-me-dumper") && hy_now() < limit)
    usleep(1000);
  fflush(stderr);
  dup2(saved, 2);
  ASSERT(file_has(path, "quit-me-dumper"));
  ASSERT(file_has(path, "awaiting sleep"));
  /* Subscribed: the application gets it, no dump. */
  int quit = SIGQUIT;
  hy_sigrecv_t *rq;
  ASSERT_OK(hy_signal_subscribe(rt, &quit, 1, &rq));
  ASSERT_EQ(ftruncate(fd, 0), 0);
  dup2(fd, 2);
  ASSERT_EQ(raise(SIGQUIT), 0);
  int got = read_one(rq);
  fflush(stderr);
  dup2(saved, 2);
  ASSERT_EQ(got, SIGQUIT);
  ASSERT(!file_has(path, "quit-me-dumper"));
  close(fd);
  unlink(path);
  close(saved);
  test_rt_close(rt, HY_MS(20));
  return 0;
}

TEST_IMPL(signal_errors) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_sigrecv_t *r;
  int bad[] = {SIGKILL, SIGSEGV, SIGSTOP, 0, -1, 1000};
  for (int i = 0; i < 6; i++)
    ASSERT_ERR(hy_signal_subscribe(rt, &bad[i], 1, &r), HY_EINVAL);
  int ok = SIGINT;
  ASSERT_ERR(hy_signal_subscribe(rt, &ok, 0, &r), HY_EINVAL);
  ASSERT_ERR(hy_signal_subscribe(NULL, &ok, 1, &r), HY_EINVAL);
  ASSERT_ERR(hy_signal_subscribe(rt, NULL, 1, &r), HY_EINVAL);
  ASSERT_ERR(hy_signal_subscribe(rt, &ok, 1, NULL), HY_EINVAL);
  ASSERT_ERR(hy_signal_unsubscribe(NULL), HY_EINVAL);
  int s;
  ASSERT_ERR(hy_signal_read(NULL, &s), HY_EINVAL);
  ASSERT_ERR(hy_signal_pending(NULL), HY_EINVAL);
  /* Nothing was installed by the failures. */
  struct sigaction cur;
  ASSERT_EQ(sigaction(SIGINT, NULL, &cur), 0);
  ASSERT(cur.sa_handler == SIG_DFL);
  ASSERT_EQ(sigaction(SIGQUIT, NULL, &cur), 0);
  ASSERT(cur.sa_handler == SIG_DFL);
  ASSERT_OK(hy_signal_subscribe(rt, &ok, 1, &r));
  ASSERT_ERR(hy_signal_read(r, NULL), HY_EINVAL);
  ASSERT_OK(hy_signal_unsubscribe(r));
  test_rt_close(rt, HY_MS(20));
  return 0;
}

/* ---------------------------------------- shutdown driven by SIGTERM
 * The drill of drill.h, with a real SIGTERM; the runtime's handler is gone
 * once it is closed. */

TEST_IMPL(shutdown_by_signal) {
  drill_t d;
  drill_start(&d, test_rt_new(2));
  ASSERT_EQ(kill(getpid(), SIGTERM), 0);
  ASSERT_OK(hy_runtime_run(d.rt));
  drill_check_and_close(&d);
  struct sigaction cur;
  ASSERT_EQ(sigaction(SIGTERM, NULL, &cur), 0);
  ASSERT(cur.sa_handler == SIG_DFL);
  return 0;
}

#endif /* _WIN32 */
