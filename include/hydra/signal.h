/* hydra/signal.h - OS signals as events a task can await.
 *
 * A signal receiver subscribes to some of SIGINT, SIGTERM, SIGHUP, SIGQUIT,
 * SIGUSR1 and SIGUSR2 and receives every occurrence the process gets, in
 * order of arrival, as a signal number: any number of receivers in any
 * number of runtimes each get their own copy.  Nothing runs in the signal
 * handler but two atomic operations and a write to a pipe; a dispatcher
 * thread does the rest.  No occurrence the handler sees is lost while the
 * runtime is busy (each receiver counts them; order is kept for the last
 * 256 unread ones).  The kernel itself merges a standard signal sent again
 * before it was delivered once.
 *
 * Catching is opt-in per signal: while a runtime has a receiver for a
 * signal, every occurrence is also published as a hy_event_signal event on
 * the `sys/signal` channel of that runtime's system broker (hydra/event.h),
 * so event receivers (and select arms on them) see it too.
 *
 *   int sigs[] = {SIGINT, SIGTERM};
 *   hy_sigrecv_t *r;
 *   hy_signal_subscribe(rt, sigs, 2, &r);
 *   int signo;
 *   if (hy_signal_read_until(r, hy_deadline_in(HY_MS(100)), &signo) == 0)
 *     ...;                                     // signo: SIGINT or SIGTERM
 *
 * Process-wide state (the one exception to "everything hangs off the
 * runtime", because a signal disposition is process-wide): Hydra installs
 * its handler for a signal when the first receiver in the process
 * subscribes to it and restores the previous handler when the last one
 * goes (unsubscribed, or its runtime closed).  While any receiver exists,
 * Hydra also handles SIGQUIT: a runtime that has no SIGQUIT receiver writes
 * its task dump (hy_runtime_dump) to stderr and goes on.
 *
 * Windows: console control events are the signals - Ctrl+C is SIGINT,
 * Ctrl+Break SIGQUIT, and closing the console window, logging off or
 * shutting down SIGTERM - with the same receivers and the same sys/signal
 * events.  Hydra adds its console control handler with the first receiver
 * in the process and removes it with the last; an event nobody subscribed
 * to goes on to the next handler (by default, the process ends).  For the
 * SIGTERM events Windows ends the process once the handler returns, so the
 * handler waits up to 4.5 s for the receivers to go (their runtimes shut
 * down and closed) first.  SIGHUP is accepted and never occurs; SIGUSR1
 * and SIGUSR2 do not exist there.  <signal.h> of the Windows C runtime
 * lacks SIGHUP and SIGQUIT: this header defines them (1 and 3) if missing.
 */
#ifndef HYDRA_SIGNAL_H
#define HYDRA_SIGNAL_H

#include <signal.h>

#include "hydra/runtime.h"

#ifdef _WIN32
#ifndef SIGHUP
#define SIGHUP 1
#endif
#ifndef SIGQUIT
#define SIGQUIT 3
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hy_sigrecv hy_sigrecv_t;

/* Creates a receiver of the n signals in signos (n >= 1).
 * Returns 0, HY_EINVAL (a signal outside the list above), HY_ENOMEM,
 * HY_EMFILE (no fd for the pipe), or the error of installing the handler. */
int hy_signal_subscribe(hy_runtime_t *rt, const int *signos, int n,
                        hy_sigrecv_t **out);

/* Frees r; signals it had not read are dropped.  Nobody may be waiting on
 * r.  Returns 0 or HY_EINVAL. */
int hy_signal_unsubscribe(hy_sigrecv_t *r);

/* Takes the oldest unread signal into *signo, waiting for one until
 * deadline (0 or a past time: do not block).  From a task or any thread.
 * Returns 0, HY_ETIMEDOUT, HY_ECANCELED (nothing taken) or HY_EINVAL. */
int hy_signal_read(hy_sigrecv_t *r, int *signo);
int hy_signal_read_until(hy_sigrecv_t *r, hy_time_t deadline, int *signo);

/* The number of signals r holds unread. */
int hy_signal_pending(hy_sigrecv_t *r);

/* A select arm that fires when r has a signal and takes it into *signo. */
hy_arm_t hy_arm_signal(hy_sigrecv_t *r, int *signo);

/* "SIGTERM" etc. for the signals above, "signal" for others. */
const char *hy_signal_name(int signo);

#ifdef __cplusplus
}
#endif
#endif /* HYDRA_SIGNAL_H */
