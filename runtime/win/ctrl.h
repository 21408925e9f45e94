/* runtime/win/ctrl.h - console control events as signal numbers: the
 * Windows source of the signal layer (include/hydra/signal.h).
 *
 *   CTRL_C_EVENT                                  -> SIGINT
 *   CTRL_BREAK_EVENT                              -> SIGQUIT (3: the CRT has
 *                                                    no SIGQUIT; its value)
 *   CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT,
 *   CTRL_SHUTDOWN_EVENT                           -> SIGTERM
 *
 * Subscribers are process-wide (a console control handler is): the first
 * one installs the handler with SetConsoleCtrlHandler, the last one to go
 * removes it.  The system runs the handler on a thread of its own; it calls
 * every subscriber's fn(arg, signo) there, so fn must be short and must not
 * block nor add or remove subscribers (set a hub, write a pipe, post to a
 * runtime).  fn returns 1 if it took the event, 0 if nobody it stands for
 * wanted that signal; when no subscriber took it the handler returns FALSE
 * and the next handler runs (in the end the default one, which ends the
 * process - as an uncaught signal does on POSIX).  After hy__ctrl_remove
 * returns, fn is never called again.  For the SIGTERM events the system
 * ends the process when the handler returns, so the handler waits (up to
 * HY__CTRL_TERM_WAIT_MS) for the subscribers to go - their runtimes
 * shutting down - before it returns.
 */
#ifndef HYDRA_RUNTIME_WIN_CTRL_H
#define HYDRA_RUNTIME_WIN_CTRL_H

#include <signal.h>

#ifdef SIGQUIT
#define HY__SIGQUIT SIGQUIT
#else
#define HY__SIGQUIT 3
#endif

#define HY__CTRL_TERM_WAIT_MS 4500

typedef int (*hy__ctrl_fn)(void *arg, int signo);

/* The signal number for a console control event, 0 for others. */
int hy__ctrl_signo(unsigned long ctrl_type);

/* Adds / removes a subscriber.  add: 0, HY_ENOMEM or a translated error. */
int hy__ctrl_add(hy__ctrl_fn fn, void *arg);
void hy__ctrl_remove(hy__ctrl_fn fn, void *arg);

/* Hands ctrl_type to every subscriber, as the handler does (without the
 * wait for SIGTERM events).  Returns how many took it. */
int hy__ctrl_deliver(unsigned long ctrl_type);

/* The handler itself, as the system calls it (for tests: the close,
 * logoff and shutdown events cannot be generated): 1 (TRUE) if a
 * subscriber took the event - after waiting for the subscribers to go, for
 * the SIGTERM ones - or 0 (FALSE). */
int hy__ctrl_handler(unsigned long ctrl_type);

#endif
