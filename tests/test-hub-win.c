/* test-hub-win.c - seed 000's Win32 API (hydra/hub_win.h): the handles
 * ConnectHubEvent returns are ordinary events that every wait function
 * takes; one SetHubEvent releases every consumer exactly once, also one
 * that is not waiting; SetEvent/ResetEvent/PulseEvent/CloseHandle on a
 * consumer's handle touch that consumer alone. */
#ifdef _WIN32
#include <windows.h>
#include <stdatomic.h>

#include "hydra.h"
#include "hydra/hub_win.h"
#include "compat.h"
#include "test.h"

static int sig(HANDLE h, DWORD ms) {
  return WaitForSingleObject(h, ms) == WAIT_OBJECT_0;
}

static HUB_EVENT_INFO info_of(HHEVENT hub) {
  HUB_EVENT_INFO i;
  memset(&i, 0x55, sizeof i);
  ASSERT(GetHubEventInfo(hub, &i, sizeof i));
  return i;
}

typedef struct {
  HANDLE h;
  int pump; /* wait as a message loop does */
  atomic_int started, got;
} hw_t;

static void *hw_wait(void *p) {
  hw_t *q = p;
  atomic_store(&q->started, 1);
  DWORD r = q->pump ? MsgWaitForMultipleObjectsEx(1, &q->h, 30000,
                                                  QS_ALLINPUT, 0)
                    : WaitForSingleObject(q->h, 30000);
  if (r == WAIT_OBJECT_0)
    atomic_store(&q->got, 1);
  return NULL;
}

static void hw_started(hw_t *q) {
  while (!atomic_load(&q->started))
    Sleep(1);
  Sleep(5); /* most likely in its wait by now (not needed to pass) */
}

TEST_IMPL(hubwin_set_releases_each_once) {
  HHEVENT hub = CreateHubEventW(NULL, FALSE, FALSE, L"t/reload");
  ASSERT(hub != NULL);
  HANDLE c[3];
  c[0] = ConnectHubEventW(0, FALSE, L"t/reload");
  c[1] = ConnectHubEventA(SYNCHRONIZE | EVENT_MODIFY_STATE, FALSE, "t/reload");
  c[2] = ConnectHubEvent(SYNCHRONIZE, FALSE, TEXT("t/reload"));
  for (int i = 0; i < 3; i++) {
    ASSERT(c[i] != NULL);
    ASSERT(!sig(c[i], 0));
  }
  /* Nobody waits at the moment of the set: each one still gets it, once. */
  ASSERT(SetHubEvent(hub));
  for (int i = 0; i < 3; i++) {
    ASSERT(sig(c[i], 0));
    ASSERT(!sig(c[i], 0));
  }
  /* Sets not taken yet coalesce. */
  ASSERT(SetHubEvent(hub));
  ASSERT(SetHubEvent(hub));
  ASSERT_EQ(WaitForMultipleObjects(3, c, TRUE, 5000), WAIT_OBJECT_0);
  ASSERT_EQ(WaitForMultipleObjects(3, c, FALSE, 0), WAIT_TIMEOUT);
  /* Waiting threads, one in a message loop's wait: each released once. */
  hw_t q[3];
  pthread_t th[3];
  for (int i = 0; i < 3; i++) {
    q[i] = (hw_t){c[i], i == 1, 0, 0};
    ASSERT_EQ(pthread_create(&th[i], NULL, hw_wait, &q[i]), 0);
  }
  for (int i = 0; i < 3; i++)
    hw_started(&q[i]);
  ASSERT(SetHubEvent(hub));
  for (int i = 0; i < 3; i++) {
    pthread_join(th[i], NULL);
    ASSERT_EQ(atomic_load(&q[i].got), 1);
    ASSERT(!sig(c[i], 0));
  }
  HUB_EVENT_INFO i = info_of(hub);
  ASSERT_EQ(i.nConsumersCount, 3);
  ASSERT_EQ(i.nConsumersTotal, 3);
  ASSERT_EQ(i.bManualReset, FALSE);
  ASSERT_EQ(i.bSignalled, FALSE);
  ASSERT_EQ(i.nSets, 4);
  /* A reset withdraws what was not taken. */
  ASSERT(SetHubEvent(hub));
  ASSERT(ResetHubEvent(hub));
  ASSERT_EQ(WaitForMultipleObjects(3, c, FALSE, 0), WAIT_TIMEOUT);
  for (int k = 0; k < 3; k++)
    ASSERT(CloseHandle(c[k]));
  ASSERT_EQ(info_of(hub).nConsumersCount, 0);
  ASSERT(DestroyHubEvent(hub));
  return 0;
}

TEST_IMPL(hubwin_consumer_ops_are_local) {
  HHEVENT hub = CreateHubEventA(NULL, FALSE, FALSE, "t/local");
  ASSERT(hub != NULL);
  HANDLE a = ConnectHubEventA(0, FALSE, "t/local");
  HANDLE b = ConnectHubEventA(0, FALSE, "t/local");
  ASSERT(a && b);
  /* SetEvent on a: a alone, and the hub counts no set. */
  ASSERT(SetEvent(a));
  ASSERT(!sig(b, 0));
  ASSERT(sig(a, 0));
  ASSERT(!sig(a, 0));
  ASSERT_EQ(info_of(hub).nSets, 0);
  /* ResetEvent on a withdraws a's release only. */
  ASSERT(SetHubEvent(hub));
  ASSERT(ResetEvent(a));
  ASSERT(!sig(a, 0));
  ASSERT(sig(b, 0));
  /* PulseEvent on a with a thread waiting on a and one on b: a's alone. */
  hw_t qa = {a, 0, 0, 0}, qb = {b, 0, 0, 0};
  pthread_t ta, tb;
  ASSERT_EQ(pthread_create(&ta, NULL, hw_wait, &qa), 0);
  ASSERT_EQ(pthread_create(&tb, NULL, hw_wait, &qb), 0);
  hw_started(&qa);
  hw_started(&qb);
  hy_time_t limit = hy_deadline_in(HY_SEC(20));
  while (!atomic_load(&qa.got)) { /* until the thread is in its wait */
    ASSERT(hy_now() < limit);
    ASSERT(PulseEvent(a));
    Sleep(1);
  }
  pthread_join(ta, NULL);
  ASSERT(!sig(a, 0)); /* nothing left behind */
  ASSERT_EQ(atomic_load(&qb.got), 0);
  /* CloseHandle on a: b and the hub go on, a is disconnected. */
  ASSERT(CloseHandle(a));
  ASSERT(SetHubEvent(hub));
  pthread_join(tb, NULL);
  ASSERT_EQ(atomic_load(&qb.got), 1);
  HUB_EVENT_INFO i = info_of(hub);
  ASSERT_EQ(i.nConsumersCount, 1);
  ASSERT_EQ(i.nConsumersTotal, 2);
  /* A duplicate keeps the consumer: it goes with the last handle. */
  HANDLE dup;
  ASSERT(DuplicateHandle(GetCurrentProcess(), b, GetCurrentProcess(), &dup,
                         0, FALSE, DUPLICATE_SAME_ACCESS));
  ASSERT(CloseHandle(b));
  ASSERT_EQ(info_of(hub).nConsumersCount, 1);
  ASSERT(SetHubEvent(hub));
  ASSERT(sig(dup, 0));
  ASSERT(CloseHandle(dup));
  ASSERT_EQ(info_of(hub).nConsumersCount, 0);
  ASSERT(DestroyHubEvent(hub));
  return 0;
}

TEST_IMPL(hubwin_manual_reset) {
  /* Starts set: consumers connect released, and stay so. */
  HHEVENT hub = CreateHubEventW(NULL, TRUE, TRUE, L"t/manual");
  ASSERT(hub != NULL);
  HANDLE a = ConnectHubEventW(0, FALSE, L"t/manual");
  ASSERT(a != NULL);
  for (int i = 0; i < 3; i++)
    ASSERT(sig(a, 0));
  HUB_EVENT_INFO i = info_of(hub);
  ASSERT_EQ(i.bManualReset, TRUE);
  ASSERT_EQ(i.bInitialState, TRUE);
  ASSERT_EQ(i.bSignalled, TRUE);
  ASSERT(ResetHubEvent(hub));
  ASSERT(!sig(a, 0));
  ASSERT_EQ(info_of(hub).bSignalled, FALSE);
  HANDLE b = ConnectHubEventW(0, FALSE, L"t/manual");
  ASSERT(!sig(b, 0)); /* reset now: starts reset */
  /* Several threads on each: one set releases all of them. */
  hw_t q[4];
  pthread_t th[4];
  for (int k = 0; k < 4; k++) {
    q[k] = (hw_t){k % 2 ? b : a, k == 3, 0, 0};
    ASSERT_EQ(pthread_create(&th[k], NULL, hw_wait, &q[k]), 0);
  }
  for (int k = 0; k < 4; k++)
    hw_started(&q[k]);
  ASSERT(SetHubEvent(hub));
  for (int k = 0; k < 4; k++) {
    pthread_join(th[k], NULL);
    ASSERT_EQ(atomic_load(&q[k].got), 1);
  }
  /* ResetEvent on one consumer leaves the hub and the other set. */
  ASSERT(ResetEvent(a));
  ASSERT(!sig(a, 0));
  ASSERT(sig(b, 0));
  ASSERT_EQ(info_of(hub).bSignalled, TRUE);
  CloseHandle(a);
  CloseHandle(b);
  ASSERT(DestroyHubEvent(hub));
  /* Auto-reset: the initial state means nothing (nobody was connected). */
  hub = CreateHubEventW(NULL, FALSE, TRUE, L"t/manual");
  a = ConnectHubEventW(0, FALSE, L"t/manual");
  ASSERT(!sig(a, 0));
  CloseHandle(a);
  ASSERT(DestroyHubEvent(hub));
  return 0;
}

TEST_IMPL(hubwin_destroy_and_errors) {
  HHEVENT hub = CreateHubEventW(NULL, TRUE, FALSE, L"t/gone");
  ASSERT(hub != NULL);
  HANDLE a = ConnectHubEventW(0, FALSE, L"t/gone");
  HANDLE b = ConnectHubEventW(0, FALSE, L"t/gone");
  ASSERT(SetHubEvent(hub));
  ASSERT(ResetEvent(b));
  /* Destroyed: the events stay valid with their state, set no more. */
  ASSERT(DestroyHubEvent(hub));
  ASSERT(sig(a, 0));
  ASSERT(!sig(b, 0));
  SetLastError(0);
  ASSERT(!SetHubEvent(hub));
  ASSERT_EQ(GetLastError(), ERROR_INVALID_HANDLE);
  ASSERT(!ResetHubEvent(hub));
  ASSERT(!DestroyHubEvent(hub));
  ASSERT_EQ(GetLastError(), ERROR_INVALID_HANDLE);
  HUB_EVENT_INFO i;
  ASSERT(!GetHubEventInfo(hub, &i, sizeof i));
  ASSERT_EQ(GetLastError(), ERROR_INVALID_HANDLE);
  ASSERT(!SetHubEvent(NULL));
  ASSERT(ConnectHubEventW(0, FALSE, L"t/gone") == NULL);
  ASSERT_EQ(GetLastError(), ERROR_FILE_NOT_FOUND);
  ASSERT(SetEvent(b) && sig(b, 0)); /* still an event */
  CloseHandle(a);
  CloseHandle(b);
  /* The name is free again; a second producer of one name is refused. */
  hub = CreateHubEventW(NULL, FALSE, FALSE, L"t/gone");
  ASSERT(hub != NULL);
  ASSERT(CreateHubEventA(NULL, TRUE, FALSE, "t/gone") == NULL);
  ASSERT_EQ(GetLastError(), ERROR_ALREADY_EXISTS);
  /* Names: required, at most 63 bytes of UTF-8; non-ASCII ones work. */
  ASSERT(CreateHubEventW(NULL, FALSE, FALSE, NULL) == NULL);
  ASSERT_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
  ASSERT(CreateHubEventA(NULL, FALSE, FALSE, "") == NULL);
  ASSERT_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
  WCHAR longname[80];
  for (int k = 0; k < 79; k++)
    longname[k] = L'x';
  longname[79] = 0;
  ASSERT(CreateHubEventW(NULL, FALSE, FALSE, longname) == NULL);
  ASSERT_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
  ASSERT(CreateHubEventW(NULL, FALSE, FALSE, L"t\\back") == NULL);
  ASSERT_EQ(GetLastError(), ERROR_INVALID_NAME);
  ASSERT(ConnectHubEventW(0, FALSE, NULL) == NULL);
  ASSERT_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
  HHEVENT uni = CreateHubEventW(NULL, FALSE, FALSE, L"t/\x00e9v\x00e9nement");
  ASSERT(uni != NULL);
  HANDLE u = ConnectHubEventW(0, FALSE, L"t/\x00e9v\x00e9nement");
  ASSERT(u != NULL);
  ASSERT(SetHubEvent(uni) && sig(u, 0));
  CloseHandle(u);
  ASSERT(DestroyHubEvent(uni));
  /* Info: the caller's size is honoured, nothing is written past it. */
  ASSERT(!GetHubEventInfo(hub, NULL, sizeof i));
  ASSERT_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
  struct {
    SIZE_T count;
    SIZE_T canary;
  } small = {77, 0x1234};
  ASSERT(GetHubEventInfo(hub, (PHUB_EVENT_INFO)&small, sizeof(SIZE_T)));
  ASSERT_EQ(small.count, 0);
  ASSERT_EQ(small.canary, 0x1234);
  /* Access: a handle that may only wait cannot set. */
  HANDLE w = ConnectHubEventW(SYNCHRONIZE, FALSE, L"t/gone");
  ASSERT(w != NULL);
  ASSERT(!SetEvent(w));
  ASSERT_EQ(GetLastError(), ERROR_ACCESS_DENIED);
  ASSERT(SetHubEvent(hub) && sig(w, 0));
  CloseHandle(w);
  ASSERT(DestroyHubEvent(hub));
  return 0;
}

/* Rounds with consumers connecting and closing all the while: K waiting
 * threads count each SetHubEvent exactly once; a churn thread connects,
 * sometimes waits on, and closes consumers of the same hub. */
typedef struct {
  HANDLE h;
  uint64_t seed; /* from test_rand(), which is for one thread */
  atomic_int rounds, stop;
} rw_t;

static void *round_waiter(void *p) {
  rw_t *w = p;
  uint64_t x = w->seed | 1;
  while (!atomic_load(&w->stop)) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    if ((x & 3) == 0)
      Sleep((DWORD)((x >> 8) % 2)); /* start the wait late, sometimes */
    DWORD r = (x & 16) ? MsgWaitForMultipleObjectsEx(1, &w->h, 50,
                                                     QS_ALLINPUT, 0)
                       : WaitForSingleObject(w->h, 50);
    if (r == WAIT_OBJECT_0)
      atomic_fetch_add(&w->rounds, 1);
  }
  return NULL;
}

typedef struct {
  atomic_int stop, made;
} churn_t;

static void *churner(void *p) {
  churn_t *c = p;
  while (!atomic_load(&c->stop)) {
    HANDLE h = ConnectHubEventW(0, FALSE, L"t/rounds");
    if (!h)
      return (void *)1;
    atomic_fetch_add(&c->made, 1);
    WaitForSingleObject(h, atomic_load(&c->made) % 2);
    CloseHandle(h);
  }
  return NULL;
}

TEST_IMPL(hubwin_rounds_with_churn) {
  enum { K = 6, ROUNDS = 150 };
  HHEVENT hub = CreateHubEventW(NULL, FALSE, FALSE, L"t/rounds");
  ASSERT(hub != NULL);
  rw_t w[K];
  pthread_t th[K], ct;
  for (int i = 0; i < K; i++) {
    w[i].h = ConnectHubEventW(0, FALSE, L"t/rounds");
    ASSERT(w[i].h != NULL);
    w[i].seed = test_rand();
    w[i].rounds = 0;
    w[i].stop = 0;
    ASSERT_EQ(pthread_create(&th[i], NULL, round_waiter, &w[i]), 0);
  }
  churn_t ch = {0, 0};
  ASSERT_EQ(pthread_create(&ct, NULL, churner, &ch), 0);
  for (int round = 1; round <= ROUNDS; round++) {
    ASSERT(SetHubEvent(hub));
    hy_time_t limit = hy_deadline_in(HY_SEC(20));
    for (int i = 0; i < K; i++)
      while (atomic_load(&w[i].rounds) < round) {
        ASSERT(hy_now() < limit);
        Sleep(0);
      }
    for (int i = 0; i < K; i++)
      ASSERT_EQ(atomic_load(&w[i].rounds), round); /* not twice */
  }
  atomic_store(&ch.stop, 1);
  void *cr;
  pthread_join(ct, &cr);
  ASSERT(atomic_load(&ch.made) > 0);
  for (int i = 0; i < K; i++) {
    atomic_store(&w[i].stop, 1);
    pthread_join(th[i], NULL);
    ASSERT_EQ(atomic_load(&w[i].rounds), ROUNDS);
  }
  HUB_EVENT_INFO i = info_of(hub);
  ASSERT_EQ(i.nConsumersCount, K); /* the churn's consumers are gone */
  ASSERT_EQ(i.nConsumersTotal, (SIZE_T)(K + atomic_load(&ch.made)));
  ASSERT_EQ(i.nSets, ROUNDS);
  for (int k = 0; k < K; k++)
    CloseHandle(w[k].h);
  ASSERT_EQ(info_of(hub).nConsumersCount, 0);
  ASSERT(DestroyHubEvent(hub));
  return 0;
}

/* A consumer's handle inherited by a child process: the child waits on
 * it; the parent closes its own copy (the consumer stays: the child holds
 * the event) and sets the hub; when the child is gone, so is the consumer. */
TEST_IMPL(hubwin_handle_in_child) {
  const char *role = getenv("HYDRA_HUBWIN_HANDLE");
  if (role) {
    HANDLE h = (HANDLE)(intptr_t)_strtoi64(role, NULL, 10);
    printf("child waits\n");
    fflush(stdout);
    DWORD r = WaitForSingleObject(h, 20000);
    printf("child: %s\n", r == WAIT_OBJECT_0 ? "released" : "not released");
    return r == WAIT_OBJECT_0 ? 0 : 1;
  }
  HHEVENT hub = CreateHubEventW(NULL, FALSE, FALSE, L"t/child");
  ASSERT(hub != NULL);
  HANDLE h = ConnectHubEventW(SYNCHRONIZE, TRUE, L"t/child");
  ASSERT(h != NULL);
  char val[32], cmd[2048];
  snprintf(val, sizeof val, "%lld", (long long)(intptr_t)h);
  snprintf(cmd, sizeof cmd, "\"%s\" --run hubwin_handle_in_child", test_exe());
  STARTUPINFOA si;
  PROCESS_INFORMATION pi;
  memset(&si, 0, sizeof si);
  si.cb = sizeof si;
  SetEnvironmentVariableA("HYDRA_HUBWIN_HANDLE", val);
  BOOL ok = CreateProcessA(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si,
                           &pi);
  SetEnvironmentVariableA("HYDRA_HUBWIN_HANDLE", NULL);
  ASSERT(ok);
  ASSERT(CloseHandle(h));
  ASSERT_EQ(info_of(hub).nConsumersCount, 1);
  Sleep(50); /* the child most likely waits by now (not needed to pass) */
  ASSERT(SetHubEvent(hub));
  ASSERT_EQ(WaitForSingleObject(pi.hProcess, 30000), WAIT_OBJECT_0);
  DWORD code = 99;
  GetExitCodeProcess(pi.hProcess, &code);
  CloseHandle(pi.hProcess);
  CloseHandle(pi.hThread);
  ASSERT_EQ(code, 0);
  ASSERT_EQ(info_of(hub).nConsumersCount, 0);
  ASSERT(DestroyHubEvent(hub));
  return 0;
}

/* Another process connects by name, through the hub's pipe: its event is
 * released by each set once, its own SetEvent stays its own, a second
 * producer of the name there is refused, and when it exits its consumer
 * goes. */
static size_t slurp(const char *path, char *buf, size_t cap) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return 0;
  size_t n = fread(buf, 1, cap - 1, f);
  buf[n] = 0;
  fclose(f);
  return n;
}

static void wait_text(const char *path, const char *what, HANDLE proc) {
  static char buf[4096];
  hy_time_t limit = hy_deadline_in(HY_SEC(20));
  while (slurp(path, buf, sizeof buf), !strstr(buf, what)) {
    ASSERT(hy_now() < limit);
    ASSERT_EQ(WaitForSingleObject(proc, 5), WAIT_TIMEOUT); /* still there */
  }
}

TEST_IMPL(hubwin_connect_from_other_process) {
  const char *name = getenv("HYDRA_HUBWIN_XPROC");
  if (name) {
    HANDLE h = ConnectHubEventA(SYNCHRONIZE | EVENT_MODIFY_STATE, FALSE, name);
    if (!h) {
      printf("connect failed: %lu\n", GetLastError());
      return 1;
    }
    if (CreateHubEventA(NULL, FALSE, FALSE, name) ||
        GetLastError() != ERROR_ALREADY_EXISTS) {
      printf("second producer not refused: %lu\n", GetLastError());
      return 2;
    }
    if (ConnectHubEventA(0, FALSE, "t/no-such-hub-anywhere") ||
        GetLastError() != ERROR_FILE_NOT_FOUND) {
      printf("unknown name: %lu\n", GetLastError());
      return 3;
    }
    if (!SetEvent(h) || WaitForSingleObject(h, 0) != WAIT_OBJECT_0)
      return 4;
    printf("connected\n");
    fflush(stdout);
    for (int i = 1; i <= 2; i++) {
      if (WaitForSingleObject(h, 20000) != WAIT_OBJECT_0)
        return 10 + i;
      printf("released %d\n", i);
      fflush(stdout);
    }
    return 0; /* exits with h open: the process's end closes it */
  }
  char hub_name[64];
  snprintf(hub_name, sizeof hub_name, "t/xproc-%lu", GetCurrentProcessId());
  HHEVENT hub = CreateHubEventA(NULL, FALSE, FALSE, hub_name);
  ASSERT(hub != NULL);
  HANDLE a = ConnectHubEventA(0, FALSE, hub_name);
  ASSERT(a != NULL);
  char dir[MAX_PATH], path[MAX_PATH], cmd[2048];
  GetTempPathA(sizeof dir, dir);
  GetTempFileNameA(dir, "hyx", 0, path);
  SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE};
  HANDLE out = CreateFileA(path, GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE,
                           &sa, CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
  ASSERT(out != INVALID_HANDLE_VALUE);
  snprintf(cmd, sizeof cmd, "\"%s\" --run hubwin_connect_from_other_process",
           test_exe());
  STARTUPINFOA si;
  PROCESS_INFORMATION pi;
  memset(&si, 0, sizeof si);
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdOutput = out;
  si.hStdError = out;
  SetEnvironmentVariableA("HYDRA_HUBWIN_XPROC", hub_name);
  BOOL ok = CreateProcessA(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si,
                           &pi);
  SetEnvironmentVariableA("HYDRA_HUBWIN_XPROC", NULL);
  CloseHandle(out);
  ASSERT(ok);
  wait_text(path, "connected", pi.hProcess);
  ASSERT_EQ(info_of(hub).nConsumersCount, 2);
  ASSERT(!sig(a, 0)); /* the child's SetEvent was its own */
  ASSERT(SetHubEvent(hub));
  wait_text(path, "released 1", pi.hProcess);
  ASSERT(sig(a, 0));
  ASSERT(SetHubEvent(hub));
  ASSERT_EQ(WaitForSingleObject(pi.hProcess, 30000), WAIT_OBJECT_0);
  DWORD code = 99;
  GetExitCodeProcess(pi.hProcess, &code);
  CloseHandle(pi.hProcess);
  CloseHandle(pi.hThread);
  char text[4096];
  slurp(path, text, sizeof text);
  DeleteFileA(path);
  fprintf(stderr, "%s", text);
  ASSERT_EQ(code, 0);
  ASSERT(strstr(text, "released 2") != NULL);
  HUB_EVENT_INFO i = info_of(hub);
  ASSERT_EQ(i.nConsumersCount, 1); /* the child's went with it */
  ASSERT_EQ(i.nConsumersTotal, 2);
  ASSERT(sig(a, 0));
  CloseHandle(a);
  ASSERT(DestroyHubEvent(hub));
  /* Destroyed: the name is served no more. */
  ASSERT(ConnectHubEventA(0, FALSE, hub_name) == NULL);
  ASSERT_EQ(GetLastError(), ERROR_FILE_NOT_FOUND);
  return 0;
}

/* Another process connects and closes as fast as it can while this one
 * sets, then destroys the hub: every connect either gets an event or
 * ERROR_FILE_NOT_FOUND (after the destroy), never hangs; the destroy
 * stops the pipe's thread in the middle of its traffic. */
TEST_IMPL(hubwin_destroy_while_other_process_connects) {
  const char *name = getenv("HYDRA_HUBWIN_CHURN");
  if (name) {
    int n = 0;
    DWORD err = 0;
    ULONGLONG end = GetTickCount64() + 30000;
    while (GetTickCount64() < end) {
      HANDLE h = ConnectHubEventA(SYNCHRONIZE, FALSE, name);
      if (!h) {
        err = GetLastError();
        break;
      }
      n++;
      WaitForSingleObject(h, n % 2);
      CloseHandle(h);
    }
    printf("connects %d, then error %lu\n", n, err);
    return n > 0 && err == ERROR_FILE_NOT_FOUND ? 0 : 1;
  }
  char hub_name[64];
  snprintf(hub_name, sizeof hub_name, "t/churn-%lu", GetCurrentProcessId());
  HHEVENT hub = CreateHubEventA(NULL, FALSE, FALSE, hub_name);
  ASSERT(hub != NULL);
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "\"%s\" --run hubwin_destroy_while_other_process_connects",
           test_exe());
  STARTUPINFOA si;
  PROCESS_INFORMATION pi;
  memset(&si, 0, sizeof si);
  si.cb = sizeof si;
  SetEnvironmentVariableA("HYDRA_HUBWIN_CHURN", hub_name);
  BOOL ok = CreateProcessA(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si,
                           &pi);
  SetEnvironmentVariableA("HYDRA_HUBWIN_CHURN", NULL);
  ASSERT(ok);
  hy_time_t limit = hy_deadline_in(HY_SEC(20));
  int target = 20 + (int)(test_rand() % 20);
  while (info_of(hub).nConsumersTotal < (SIZE_T)target) {
    ASSERT(hy_now() < limit);
    ASSERT(SetHubEvent(hub));
    Sleep(1);
  }
  ASSERT(DestroyHubEvent(hub));
  ASSERT_EQ(WaitForSingleObject(pi.hProcess, 30000), WAIT_OBJECT_0);
  DWORD code = 99;
  GetExitCodeProcess(pi.hProcess, &code);
  CloseHandle(pi.hProcess);
  CloseHandle(pi.hThread);
  ASSERT_EQ(code, 0);
  /* The name is free again, in this process and for the others. */
  hub = CreateHubEventA(NULL, FALSE, FALSE, hub_name);
  ASSERT(hub != NULL);
  ASSERT(DestroyHubEvent(hub));
  return 0;
}
#else
typedef int hydra_windows_only_t;
#endif
