/* win/signal.c - the Windows source of signals (runtime/signals.h):
 * console control events, through the process's console control handler
 * (runtime/win/ctrl.c), as signal numbers:
 *   Ctrl+C -> SIGINT, Ctrl+Break -> SIGQUIT,
 *   close, logoff, shutdown -> SIGTERM.
 * The system runs the handler on a thread of its own, so the occurrence is
 * handed to the portable layer (hy__signal_deliver) right there: no pipe
 * and no dispatcher thread are needed.  The layer's first receiver adds a
 * subscriber to the handler, its last removes it (after which ctrl.c calls
 * it no more).  An event nobody in the process wants is left to the next
 * handler - in the end the default one, which ends the process, as an
 * uncaught signal does on POSIX.  SIGHUP is accepted for portable programs
 * and never occurs.
 *
 * Catching is counted per signal only: the console control handler
 * receives every event anyway, and hy__signal_deliver knows who wants
 * which.
 */
#ifdef _WIN32
#include "runtime/signals.h"
#include "runtime/win/ctrl.h"

static int on_ctrl_signal(void *arg, int signo) {
  (void)arg;
  return hy__signal_deliver(signo);
}

int hy__sigsrc_start(void) { return hy__ctrl_add(on_ctrl_signal, 0); }

void hy__sigsrc_stop(void) { hy__ctrl_remove(on_ctrl_signal, 0); }

int hy__sigsrc_catch(int s) {
  (void)s;
  return 0;
}

void hy__sigsrc_release(int s) { (void)s; }
#endif
