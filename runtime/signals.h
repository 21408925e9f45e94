/* runtime/signals.h - between the portable half of signal receivers
 * (runtime/signals.c: receivers, their queues and waits, delivery to every
 * runtime and its sys/signal channel) and the OS source of signals, one
 * file per OS:
 *   runtime/linux/signal.c  POSIX handlers, a self-pipe and a dispatcher
 *                           thread (nothing runs in the handler but a count
 *                           and a write);
 *   runtime/win/signal.c    console control events (runtime/win/ctrl.c),
 *                           whose handler runs on a thread of its own.
 *
 * Locks (runtime/signals.c): the layer's life lock serialises the start and
 * stop of the source (and is held across them) > its table lock (receivers,
 * runtimes; held across catch/release and during each delivery) >
 * a receiver's lock.  The source never calls into the layer with a lock of
 * its own held that start/stop take, so stop may wait for a delivery that
 * is running.
 */
#ifndef HYDRA_RUNTIME_SIGNALS_H
#define HYDRA_RUNTIME_SIGNALS_H

/* ---------------------------------------- the OS side (runtime/<os>/) */

/* The first receiver in the process is coming: get ready to deliver.
 * pre: life lock, not the table lock.  0 or HY_E*. */
int hy__sigsrc_start(void);

/* The last receiver went: stop.  After it returns no hy__signal_deliver
 * call is running or will be made.  pre: life lock, not the table lock;
 * every catch was released. */
void hy__sigsrc_stop(void);

/* Starts / stops catching signal s (counted: the first catch installs, the
 * last release restores what was there).  pre: table lock.  0 or HY_E*. */
int hy__sigsrc_catch(int s);
void hy__sigsrc_release(int s);

/* ------------------------------- the portable side (runtime/signals.c) */

/* Hands one occurrence of s to every receiver of s in every runtime (and
 * its sys/signal channel); a runtime with receivers but none for SIGQUIT
 * writes its task dump on SIGQUIT instead.  From an ordinary thread, never
 * a signal handler; takes the table lock.  Returns 1 if anything in the
 * process took the occurrence, 0 if nobody wanted it. */
int hy__signal_deliver(int s);

#endif
