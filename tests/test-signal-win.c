/* test-signal-win.c - signals on Windows: console control events reach the
 * same receivers and sys/signal events as POSIX signals do on Linux.
 *
 * Ctrl+C is real: GenerateConsoleCtrlEvent in a console of the test
 * process's own (each test runs in a process of its own; it leaves the
 * runner's console first, so the event reaches nobody else).  Wine 8's
 * GenerateConsoleCtrlEvent supports CTRL_C_EVENT only, and no API raises
 * the close, logoff and shutdown events anywhere: those go through the
 * console control handler's own code (hy__ctrl_deliver, hy__ctrl_handler)
 * as the system would call it, and each test says so in its output. */
#ifdef _WIN32
#include <windows.h>
#include <io.h>
#include <stdatomic.h>

#include "hydra.h"
#include "compat.h"
#include "runtime/wait.h"
#include "runtime/win/ctrl.h"
#include "drill.h"
#include "rt_util.h"
#include "test.h"

/* A console of this process's own: Ctrl+C from GenerateConsoleCtrlEvent
 * then reaches this process alone. */
static int own_console(void) {
  FreeConsole();
  if (!AllocConsole()) {
    fprintf(stderr, "AllocConsole failed: %lu\n", GetLastError());
    return 0;
  }
  SetConsoleCtrlHandler(NULL, FALSE); /* Ctrl+C is not ignored */
  return 1;
}

static void ctrl_c(void) { ASSERT(GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0)); }

static int read_one(hy_sigrecv_t *r) {
  int s = -1;
  ASSERT_OK(hy_signal_read_until(r, hy_deadline_in(HY_SEC(10)), &s));
  return s;
}

static void wait_pending(hy_sigrecv_t *r, int n) {
  hy_time_t limit = hy_deadline_in(HY_SEC(10));
  while (hy_signal_pending(r) < n) {
    ASSERT(hy_now() < limit);
    Sleep(1);
  }
}

typedef struct {
  hy_sigrecv_t *r;
  atomic_int started;
  int got;
} reader_t;

static void *reader_task(void *p) {
  reader_t *x = p;
  atomic_store(&x->started, 1);
  return (void *)(intptr_t)hy_signal_read(x->r, &x->got);
}

static int sys_signo(hy_receiver_t *rc) {
  hy_event_t *ev;
  ASSERT_OK(hy_receiver_read(rc, &ev, hy_deadline_in(HY_SEC(10))));
  int s = ((const hy_signal_event_t *)hy_event_data(ev, NULL))->signo;
  hy_event_unref(ev);
  return s;
}

TEST_IMPL(sigwin_ctrl_c_reaches_receivers) {
  if (!own_console())
    RETURN_SKIP("no console of its own for GenerateConsoleCtrlEvent");
  hy_runtime_t *a = test_rt_new(1), *b = test_rt_new(2);
  int intr = SIGINT, both[] = {SIGINT, SIGTERM};
  hy_sigrecv_t *ra1, *ra2, *rb;
  ASSERT_OK(hy_signal_subscribe(a, &intr, 1, &ra1));
  ASSERT_OK(hy_signal_subscribe(a, &intr, 1, &ra2));
  ASSERT_OK(hy_signal_subscribe(b, both, 2, &rb));
  hy_recv_opts_t o = HY_RECV_OPTS_INIT;
  hy_receiver_t *ev;
  ASSERT_OK(hy_subscribe(hy_sys_broker(a), "sys/signal", &o, &ev));
  /* A task of b parked in its read is woken by a real Ctrl+C. */
  reader_t x = {rb, 0, 0};
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(b, reader_task, &x, NULL, &t));
  while (!atomic_load(&x.started))
    Sleep(1);
  Sleep(5);
  ctrl_c();
  void *res;
  ASSERT_OK(hy_task_join(b, t, &res));
  ASSERT_EQ((intptr_t)res, 0);
  ASSERT_EQ(x.got, SIGINT);
  for (int i = 0; i < 2; i++) { /* one at a time, each waited for */
    ctrl_c();
    ASSERT_EQ(read_one(rb), SIGINT);
  }
  /* Every receiver of every runtime got each one, and so did sys/signal. */
  wait_pending(ra1, 3);
  wait_pending(ra2, 3);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(read_one(ra1), SIGINT);
    ASSERT_EQ(read_one(ra2), SIGINT);
    ASSERT_EQ(sys_signo(ev), SIGINT);
  }
  int s;
  ASSERT_ERR(hy_signal_read_until(ra1, 0, &s), HY_ETIMEDOUT);
  /* Closing one runtime frees its receivers; the other still gets them. */
  hy_unsubscribe(ev);
  test_rt_close(a, HY_MS(20));
  ctrl_c();
  ASSERT_EQ(read_one(rb), SIGINT);
  /* The select arm takes a signal through the awaitable. */
  ctrl_c();
  wait_pending(rb, 1);
  hy_arm_t arm = hy_arm_signal(rb, &s);
  int result = 1;
  hy__lock_t *l = arm.ops->lock_of(arm.obj);
  hy__lock(l);
  ASSERT_EQ(arm.ops->try_fire(arm.obj, &arm, &result), 1);
  ASSERT_EQ(result, 0);
  ASSERT_EQ(s, SIGINT);
  ASSERT_EQ(arm.ops->try_fire(arm.obj, &arm, &result), 0);
  hy__unlock(l);
  test_rt_close(b, HY_MS(20)); /* frees rb: the handler goes with it */
  ASSERT_EQ(hy__ctrl_deliver(CTRL_C_EVENT), 0);
  return 0;
}

static void *burst(void *p) {
  DWORD type = (intptr_t)p % 2 ? CTRL_CLOSE_EVENT : CTRL_BREAK_EVENT;
  for (int i = 0; i < 300; i++)
    hy__ctrl_deliver(type);
  return NULL;
}

/* Ctrl+Break, close, logoff, shutdown: in order, as SIGQUIT and SIGTERM. */
TEST_IMPL(sigwin_break_and_term_events) {
  hy_runtime_t *rt = test_rt_new(2);
  int sigs[] = {SIGINT, SIGTERM, SIGQUIT, SIGHUP};
  hy_sigrecv_t *r;
  ASSERT_OK(hy_signal_subscribe(rt, sigs, 4, &r));
  int real_break = own_console() &&
                   GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, 0);
  if (real_break) {
    ASSERT_EQ(read_one(r), SIGQUIT);
  } else {
    fprintf(stderr, "Ctrl+Break not generated (%lu): Wine 8 generates "
                    "CTRL_C_EVENT only; delivered by the handler's code\n",
            GetLastError());
  }
  static const DWORD seq[] = {CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT,
                              CTRL_C_EVENT, CTRL_LOGOFF_EVENT,
                              CTRL_SHUTDOWN_EVENT, CTRL_BREAK_EVENT};
  static const int want[] = {SIGQUIT, SIGTERM, SIGINT, SIGTERM, SIGTERM,
                             SIGQUIT};
  for (int i = 0; i < 6; i++)
    ASSERT_EQ(hy__ctrl_deliver(seq[i]), 1);
  ASSERT_EQ(hy_signal_pending(r), 6);
  for (int i = 0; i < 6; i++)
    ASSERT_EQ(read_one(r), want[i]);
  ASSERT_EQ(hy__ctrl_deliver(99), 0); /* not a control event */
  ASSERT_EQ(hy_signal_pending(r), 0);
  ASSERT(strcmp(hy_signal_name(SIGQUIT), "SIGQUIT") == 0);
  ASSERT(strcmp(hy_signal_name(SIGHUP), "SIGHUP") == 0);
  /* Bursts from several threads: every occurrence is counted. */
  enum { T = 4, N = 300 };
  pthread_t th[T];
  for (int i = 0; i < T; i++)
    ASSERT_EQ(pthread_create(&th[i], NULL, burst, (void *)(intptr_t)i), 0);
  for (int i = 0; i < T; i++)
    pthread_join(th[i], NULL);
  int nq = 0, nt = 0;
  for (int i = 0; i < T * N; i++) {
    int s = read_one(r);
    nq += s == SIGQUIT;
    nt += s == SIGTERM;
  }
  ASSERT_EQ(nq, T / 2 * N);
  ASSERT_EQ(nt, T / 2 * N);
  ASSERT_OK(hy_signal_unsubscribe(r));
  ASSERT_EQ(hy__ctrl_deliver(CTRL_C_EVENT), 0); /* nobody listens now */
  test_rt_close(rt, HY_MS(20));
  return 0;
}

/* An event nobody in the process wants goes on to the next handler (here
 * the test's own; by default the one that ends the process), also after
 * the last receiver went.  SIGQUIT is taken while any receiver exists: a
 * runtime without a SIGQUIT receiver writes its task dump. */
static atomic_int mine_calls;
static BOOL WINAPI mine(DWORD type) {
  (void)type;
  atomic_fetch_add(&mine_calls, 1);
  return TRUE;
}

static void wait_mine(int n) {
  hy_time_t limit = hy_deadline_in(HY_SEC(10));
  while (atomic_load(&mine_calls) < n) {
    ASSERT(hy_now() < limit);
    Sleep(1);
  }
}

static void *named_sleeper(void *p) {
  hy_sleep((hy_runtime_t *)p, HY_SEC(60));
  return NULL;
}

static int file_has(const char *path, const char *what) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return 0;
  char buf[8192];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  return strstr(buf, what) != NULL;
}

TEST_IMPL(sigwin_unwanted_goes_on) {
  if (!own_console())
    RETURN_SKIP("no console of its own for GenerateConsoleCtrlEvent");
  ASSERT(SetConsoleCtrlHandler(mine, TRUE));
  hy_runtime_t *rt = test_rt_new(1);
  int term = SIGTERM, intr = SIGINT;
  hy_sigrecv_t *rt_term, *rt_int;
  ASSERT_OK(hy_signal_subscribe(rt, &term, 1, &rt_term));
  /* Only SIGTERM is wanted: Ctrl+C goes on to the test's handler. */
  ctrl_c();
  wait_mine(1);
  ASSERT_EQ(hy_signal_pending(rt_term), 0);
  ASSERT_EQ(hy__ctrl_handler(CTRL_C_EVENT), 0);
  /* Now it is wanted: Hydra takes it, the next handler sees nothing. */
  ASSERT_OK(hy_signal_subscribe(rt, &intr, 1, &rt_int));
  ctrl_c();
  ASSERT_EQ(read_one(rt_int), SIGINT);
  Sleep(20);
  ASSERT_EQ(atomic_load(&mine_calls), 1);
  /* SIGQUIT with no SIGQUIT receiver: the task dump, on stderr. */
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.name = "quit-me-dumper";
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, named_sleeper, rt, &o, &t));
  Sleep(20); /* let the task reach its sleep */
  char dir[MAX_PATH], path[MAX_PATH];
  GetTempPathA(sizeof dir, dir);
  GetTempFileNameA(dir, "hyq", 0, path);
  FILE *f = fopen(path, "wb");
  ASSERT(f);
  fflush(stderr);
  int saved = _dup(2);
  _dup2(_fileno(f), 2);
  int took = hy__ctrl_deliver(CTRL_BREAK_EVENT);
  fflush(stderr);
  _dup2(saved, 2);
  _close(saved);
  fclose(f);
  ASSERT_EQ(took, 1);
  ASSERT(file_has(path, "quit-me-dumper"));
  DeleteFileA(path);
  ASSERT_EQ(hy_signal_pending(rt_int), 0);
  ASSERT_EQ(hy_signal_pending(rt_term), 0);
  /* The last receiver goes: Hydra's handler is gone. */
  ASSERT_OK(hy_signal_unsubscribe(rt_int));
  ASSERT_OK(hy_signal_unsubscribe(rt_term));
  ctrl_c();
  wait_mine(2);
  ASSERT_EQ(hy__ctrl_deliver(CTRL_C_EVENT), 0);
  ASSERT_OK(hy_task_cancel(rt, t));
  test_rt_close(rt, HY_MS(20));
  ASSERT(SetConsoleCtrlHandler(mine, FALSE));
  return 0;
}

/* ------------------------------------------ shutdown driven by SIGTERM
 * The drill of drill.h, raised by the console's close event through the
 * handler as the system calls it: the handler returns (and with it, on
 * Windows, the process would end) only once the receivers are gone. */

typedef struct {
  atomic_int ret, unsub_seen;
  drill_t *d;
} closer_t;

static void *close_event(void *p) {
  closer_t *c = p;
  int r = hy__ctrl_handler(CTRL_CLOSE_EVENT);
  atomic_store(&c->unsub_seen, atomic_load(&c->d->unsubscribed));
  atomic_store(&c->ret, r);
  return NULL;
}

TEST_IMPL(sigwin_shutdown_by_close_event) {
  drill_t d;
  drill_start(&d, test_rt_new(2));
  closer_t c = {-1, 0, &d};
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, close_event, &c), 0);
  ASSERT_OK(hy_runtime_run(d.rt));
  pthread_join(th, NULL);
  ASSERT_EQ(atomic_load(&c.ret), 1);        /* taken */
  ASSERT_EQ(atomic_load(&c.unsub_seen), 1); /* not before the receiver went */
  drill_check_and_close(&d);
  /* Nobody listens any more: the handler lets the event go on at once. */
  ASSERT_EQ(hy__ctrl_deliver(CTRL_CLOSE_EVENT), 0);
  return 0;
}

TEST_IMPL(sigwin_errors) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_sigrecv_t *r;
  int bad[] = {SIGSEGV, SIGILL, SIGABRT, 0, -1, 1000, 10 /* no SIGUSR1 */};
  for (int i = 0; i < 7; i++)
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
  ASSERT_EQ(hy__ctrl_deliver(CTRL_C_EVENT), 0);
  ASSERT_OK(hy_signal_subscribe(rt, &ok, 1, &r));
  ASSERT_ERR(hy_signal_read(r, NULL), HY_EINVAL);
  /* A deadline with nothing arriving: never early. */
  hy_time_t d = hy_deadline_in(HY_MS(20));
  ASSERT_ERR(hy_signal_read_until(r, d, &s), HY_ETIMEDOUT);
  ASSERT_GE(hy_now(), d);
  /* Left subscribed: hy_runtime_close frees it and removes the handler. */
  test_rt_close(rt, HY_MS(20));
  ASSERT_EQ(hy__ctrl_deliver(CTRL_C_EVENT), 0);
  return 0;
}

#else
typedef int hydra_windows_only_t;
#endif
