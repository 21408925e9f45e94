/* hydra/chan.h - Go-style channels and an Ada-style select.
 *
 * A channel carries fixed-size elements (copied in and out) between tasks
 * on any workers and threads outside the runtime.  Capacity 0 makes it a
 * rendezvous: a send completes when a receiver takes the element.  A
 * bounded channel buffers up to `capacity` elements.  Elements from one
 * sender arrive in the order sent; none is lost or delivered twice.
 *
 *   hy_chan_t *c;
 *   hy_chan_new(rt, sizeof(int), 16, &c);
 *   int v = 42;
 *   hy_chan_send(c, &v);                  // blocks while full
 *   hy_chan_recv(c, &v);                  // blocks while empty
 *   hy_chan_close(c);                     // receivers drain, then HY_ECLOSED
 *   hy_chan_release(c);
 *
 * Blocking calls park the calling task; called from a thread that is not
 * running a task of the channel's runtime, they block that thread on an OS
 * event (no spinning).  Every blocking call has an `_until` twin taking a
 * deadline, and returns HY_ECANCELED when the calling task is cancelled
 * (having sent or taken nothing).
 *
 * Lifetime: a channel is reference-counted.  hy_chan_new returns one
 * reference; hy_chan_retain adds one, hy_chan_release drops one and frees
 * the channel with the last.  A call borrows the caller's reference; a
 * blocking send/recv holds its own while it waits, so a channel closed and
 * released by its owner stays valid for tasks still blocked on it.  A
 * select borrows the references of the caller's arms: keep them for the
 * duration of the call.
 *
 * ------------------------------------------------------------------ select
 *
 * hy_select waits for the first of several alternatives (arms) and returns
 * the index of the one that fired.  Exactly one arm fires; the others leave
 * no trace (a send arm that did not fire sent nothing; an element that was
 * not taken stays in its channel).  Arms are plain structs, built by the
 * hy_arm_* functions of each module (channels here; tasks and terminate in
 * hydra/runtime.h; hub consumers, event receivers and connections in their
 * modules) and gated by a guard (Ada's `when Cond =>`):
 *
 *   // The supervisor of seed 002: read signals, or every 100 ms check on
 *   // the workers' heartbeats; once shutting down, leave when no worker
 *   // is left.
 *   int shutting_down = 0;
 *   for (;;) {
 *     if (shutting_down && !any_worker_active())
 *       break;
 *     sig_t sig;
 *     job_t job;
 *     hy_arm_t arms[] = {
 *         hy_arm_recv(signals, &sig),              // Receiver.Read (Signal)
 *         hy_when(!shutting_down, hy_arm_recv(jobs, &job)),  // when ... =>
 *         hy_arm_timeout(HY_MS(100)),              // or delay 0.1
 *     };  // instead of the delay: hy_arm_else() or hy_arm_terminate(rt)
 *     int i = hy_select(rt, arms, 3);
 *     if (i < 0)                                   // HY_ECANCELED, ...
 *       break;
 *     if (i == 0 && arms[0].result == 0 && is_fatal(&sig) && !shutting_down) {
 *       shutting_down = 1;
 *       tell_workers_to_stop();
 *     } else if (i == 1 && arms[1].result == 0) {
 *       dispatch(&job);
 *     } else if (i == 2) {
 *       check_heartbeats();
 *     }                      // result HY_ECLOSED: that channel has ended
 *   }
 *
 * Among arms ready at the same time the choice is uniform (a random order),
 * so a busy channel cannot starve another; hy_select_ordered prefers the
 * lowest ready index instead (Ada's ordered alternatives).  At most one of
 * delay, else, terminate may be enabled.  Arm records live on the caller's
 * stack: a select with up to HY_SELECT_STACK_ARMS arms allocates nothing.
 */
#ifndef HYDRA_CHAN_H
#define HYDRA_CHAN_H

#include <stddef.h>

#include "hydra/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hy_chan hy_chan_t;

/* Largest element, and largest buffer (elem_size * capacity), in bytes. */
#define HY_CHAN_MAX_ELEM ((size_t)1 << 20)
#define HY_CHAN_MAX_BUFFER ((size_t)1 << 30)

/* Creates a channel of elements of elem_size bytes (0 is allowed: a pure
 * signal) buffering up to capacity of them (0: rendezvous).  Blocking calls
 * on it park tasks of rt.  Returns 0, HY_EINVAL (NULL rt or out, sizes over
 * the limits) or HY_ENOMEM. */
int hy_chan_new(hy_runtime_t *rt, size_t elem_size, size_t capacity,
                hy_chan_t **out);

/* Adds a reference and returns c. */
hy_chan_t *hy_chan_retain(hy_chan_t *c);

/* Drops a reference; the last one frees the channel.  NULL is ignored. */
void hy_chan_release(hy_chan_t *c);

/* Closes the channel: blocked and later senders get HY_ECLOSED; receivers
 * get what is buffered, then HY_ECLOSED.  Returns 0, HY_ECLOSED (already
 * closed) or HY_EINVAL. */
int hy_chan_close(hy_chan_t *c);

/* Copies elem_size bytes from elem into the channel, waiting while it is
 * full (or, unbuffered, until a receiver takes them).  Returns 0,
 * HY_ECLOSED, HY_ETIMEDOUT (_until), HY_ECANCELED or HY_EINVAL (NULL c, or
 * NULL elem with a non-zero element size). */
int hy_chan_send(hy_chan_t *c, const void *elem);
int hy_chan_send_until(hy_chan_t *c, const void *elem, hy_time_t deadline);

/* Takes the next element into out (NULL: discard it), waiting while the
 * channel is empty.  Returns 0, HY_ECLOSED (closed and drained),
 * HY_ETIMEDOUT (_until), HY_ECANCELED or HY_EINVAL. */
int hy_chan_recv(hy_chan_t *c, void *out);
int hy_chan_recv_until(hy_chan_t *c, void *out, hy_time_t deadline);

/* Never block: HY_EAGAIN when the call would have to wait. */
int hy_chan_try_send(hy_chan_t *c, const void *elem);
int hy_chan_try_recv(hy_chan_t *c, void *out);

/* Snapshots: buffered elements, capacity, element size, closed (1/0). */
size_t hy_chan_len(hy_chan_t *c);
size_t hy_chan_cap(hy_chan_t *c);
size_t hy_chan_elem_size(hy_chan_t *c);
int hy_chan_closed(hy_chan_t *c);

/* ------------------------------------------------------------------ arms */

/* Receive into out (NULL: discard).  Fires with result 0, or HY_ECLOSED
 * once the channel is closed and drained (HY_EINVAL for a NULL channel). */
hy_arm_t hy_arm_recv(hy_chan_t *c, void *out);

/* Send *elem (which must stay valid during the select).  Fires with result
 * 0, or HY_ECLOSED on a closed channel. */
hy_arm_t hy_arm_send(hy_chan_t *c, const void *elem);

/* Ada's "or delay": fires at deadline, or ns after the select finds no arm
 * ready (hy_arm_timeout reads the clock only then), if nothing else did. */
hy_arm_t hy_arm_delay(hy_time_t deadline);
hy_arm_t hy_arm_timeout(int64_t ns);

/* Ada's "else": fires at once when no other arm is ready. */
hy_arm_t hy_arm_else(void);

/* Ada's `when cond =>`: the arm takes part only if cond is non-zero. */
static inline hy_arm_t hy_when(int cond, hy_arm_t arm) {
  arm.guard = cond != 0;
  return arm;
}

/* Arms a select handles without allocating. */
#define HY_SELECT_STACK_ARMS 8
/* The most arms one select takes. */
#define HY_SELECT_MAX_ARMS 1024

/* Waits until one enabled arm fires and returns its index; arms[i].result
 * holds that arm's outcome (0 or HY_E*, such as HY_ECLOSED).  Returns
 * HY_ECANCELED if the calling task is cancelled (no arm fired), HY_EINVAL
 * (NULL arms, n out of range, an unknown kind, more than one of delay /
 * else / terminate enabled), HY_EDEADLK (no arm enabled: it would wait
 * forever), HY_ENOMEM (more than HY_SELECT_STACK_ARMS arms and no memory).
 * rt may be NULL on a thread outside every runtime. */
int hy_select(hy_runtime_t *rt, hy_arm_t *arms, int n);

/* Like hy_select, but among ready arms the lowest index wins. */
int hy_select_ordered(hy_runtime_t *rt, hy_arm_t *arms, int n);

#ifdef __cplusplus
}
#endif
#endif /* HYDRA_CHAN_H */
