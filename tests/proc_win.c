/* proc_win.c - child processes for the test runner on Windows. */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>

#include "runner.h"

/* The job every test process is put in: it is closed when the runner ends,
 * however it ends, and closing it ends the tests still running (as a
 * killed runner's children are ended on POSIX, see proc_child_init).
 * NULL if it could not be made: tests then outlive a killed runner. */
static HANDLE kill_on_close_job(void) {
  static HANDLE job;
  static int tried;
  if (!tried) {
    tried = 1;
    job = CreateJobObjectA(NULL, NULL);
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION li;
    ZeroMemory(&li, sizeof li);
    li.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    if (job && !SetInformationJobObject(job, JobObjectExtendedLimitInformation,
                                        &li, sizeof li)) {
      CloseHandle(job);
      job = NULL;
    }
  }
  return job;
}

/* Runs the command line cmd with stdout and stderr going to out, in the
 * runner's job: started suspended, so that it runs no code outside it. */
static BOOL start_with_output(char *cmd, HANDLE out, PROCESS_INFORMATION *pi) {
  STARTUPINFOA si;
  ZeroMemory(&si, sizeof si);
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
  si.hStdOutput = out;
  si.hStdError = out;
  HANDLE job = kill_on_close_job();
  if (!CreateProcessA(NULL, cmd, NULL, NULL, TRUE, job ? CREATE_SUSPENDED : 0,
                      NULL, NULL, &si, pi))
    return FALSE;
  if (job) {
    AssignProcessToJobObject(job, pi->hProcess); /* else: outside it */
    ResumeThread(pi->hThread);
  }
  return TRUE;
}

int proc_spawn(proc_t *p, const char *exe, const char *test,
               const char *backend, const char *outpath) {
  SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE};
  HANDLE out = CreateFileA(outpath, GENERIC_WRITE, FILE_SHARE_READ, &sa,
                           CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
  if (out == INVALID_HANDLE_VALUE)
    return -1;
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "\"%s\" --run %s", exe, test);
  PROCESS_INFORMATION pi;
  /* The runner is single-threaded: setting the variable just for this
   * spawn is safe, and the child inherits it. */
  SetEnvironmentVariableA("HYDRA_BACKEND", backend);
  BOOL ok = start_with_output(cmd, out, &pi);
  DWORD why = ok ? 0 : GetLastError();
  SetEnvironmentVariableA("HYDRA_BACKEND", NULL);
  CloseHandle(out);
  if (!ok) {
    fprintf(stderr, "runner: CreateProcess for %s failed, error %lu\n", test,
            (unsigned long)why);
    return -1;
  }
  CloseHandle(pi.hThread);
  p->handle = (intptr_t)pi.hProcess;
  p->running = 1;
  return 0;
}

/* Nothing here: the runner's job ends a killed runner's tests (see
 * kill_on_close_job). */
void proc_child_init(void) {}

int proc_poll(proc_t *p, int *code) {
  HANDLE h = (HANDLE)p->handle;
  if (WaitForSingleObject(h, 0) != WAIT_OBJECT_0)
    return 0;
  DWORD st = 255;
  GetExitCodeProcess(h, &st);
  /* abort() exits with 3 under the MSVC runtime; keep codes small. */
  *code = (int)(st & 0xff) == 0 && st != 0 ? 255 : (int)(st & 0xff);
  CloseHandle(h);
  p->running = 0;
  return 1;
}

void proc_dump(proc_t *p, const char *outpath) {
  (void)p;
  (void)outpath;
}

void proc_kill(proc_t *p) {
  HANDLE h = (HANDLE)p->handle;
  TerminateProcess(h, 255);
  WaitForSingleObject(h, INFINITE);
  CloseHandle(h);
  p->running = 0;
}

int64_t proc_now_ms(void) { return (int64_t)GetTickCount64(); }

void proc_sleep_ms(int ms) { Sleep((DWORD)ms); }

const char *proc_self_exe(const char *argv0) {
  static char buf[MAX_PATH];
  DWORD n = GetModuleFileNameA(NULL, buf, sizeof buf);
  return n > 0 && n < sizeof buf ? buf : argv0;
}

const char *proc_tmpdir(void) {
  static char buf[MAX_PATH];
  DWORD n = GetTempPathA(sizeof buf, buf);
  if (n == 0 || n >= sizeof buf)
    return ".";
  if (buf[n - 1] == '\\')
    buf[n - 1] = 0;
  return buf;
}

int proc_ncpu(void) {
  SYSTEM_INFO si;
  GetSystemInfo(&si);
  return si.dwNumberOfProcessors > 0 ? (int)si.dwNumberOfProcessors : 1;
}

/* ------------------------------------------------------------ examples */

#include <fcntl.h>
#include <io.h>

const char *test_exe(void);

static BOOL WINAPI ignore_ctrl(DWORD ev) {
  (void)ev;
  return TRUE; /* the Ctrl+C is for the example, not for the test */
}

int ex_start(ex_proc_t *p, const char *prog, const char *args) {
  /* A console of the test's own, shared with the example only. */
  FreeConsole();
  if (!AllocConsole()) {
    fprintf(stderr, "AllocConsole failed: %lu\n", GetLastError());
    return -2;
  }
  SetConsoleCtrlHandler(NULL, FALSE); /* Ctrl+C is not ignored */
  SetConsoleCtrlHandler(ignore_ctrl, TRUE);
  char exe[MAX_PATH];
  snprintf(exe, sizeof exe, "%s", test_exe());
  char *slash = strrchr(exe, '/'), *bs = strrchr(exe, '\\');
  if (!slash || (bs && bs > slash))
    slash = bs;
  size_t at = slash ? (size_t)(slash + 1 - exe) : 0;
  snprintf(exe + at, sizeof exe - at, "%s.exe", prog);
  SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE};
  HANDLE rd, wr;
  if (!CreatePipe(&rd, &wr, &sa, 0))
    return -1;
  SetHandleInformation(rd, HANDLE_FLAG_INHERIT, 0);
  PROCESS_INFORMATION pi;
  char cmd[1400];
  snprintf(cmd, sizeof cmd, "\"%s\" %s", exe, args ? args : "");
  BOOL ok = start_with_output(cmd, wr, &pi);
  CloseHandle(wr);
  if (!ok) {
    CloseHandle(rd);
    return -1;
  }
  CloseHandle(pi.hThread);
  p->handle = (intptr_t)pi.hProcess;
  p->out = _fdopen(_open_osfhandle((intptr_t)rd, _O_RDONLY), "r");
  if (!p->out) {
    TerminateProcess(pi.hProcess, 255);
    CloseHandle(pi.hProcess);
    return -1;
  }
  return 0;
}

int ex_stop(ex_proc_t *p, int sig) {
  (void)p;
  (void)sig;
  return GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0) ? 0 : -1;
}

int ex_wait(ex_proc_t *p) {
  fclose(p->out);
  p->out = NULL;
  HANDLE h = (HANDLE)p->handle;
  DWORD w = WaitForSingleObject(h, 30000);
  if (w != WAIT_OBJECT_0)
    TerminateProcess(h, 255);
  DWORD code = 255;
  GetExitCodeProcess(h, &code);
  CloseHandle(h);
  return w == WAIT_OBJECT_0 ? (int)code : -1;
}
