/* hydra/hub.h - hub events: one producer, any number of consumers, and a
 * set that releases every connected consumer exactly once.
 *
 * A hub is the reliable replacement for PulseEvent.  Each consumer owns its
 * own event, so a set reaches a consumer that is not waiting at that moment
 * too: it finds its event signalled when it next waits.
 *
 *   hy_hub_t *h;
 *   hy_hub_create(rt, "app/reload", HY_HUB_AUTO_RESET, &h);   // producer
 *   hy_hub_consumer_t *c;
 *   hy_hub_connect_name(rt, "app/reload", &c);                // consumer
 *   hy_hub_set(h);                        // releases c (and every other)
 *   hy_hub_wait(c);                       // 0: released once
 *
 * Semantics, per consumer:
 *   - One hy_hub_set releases every consumer connected at that moment
 *     exactly once.  Sets that come before the consumer takes its release
 *     coalesce into one release (auto-reset hubs).
 *   - Auto-reset hub: a wait that returns 0 takes the release; the next
 *     wait blocks until the next set.  Manual-reset hub: consumers stay
 *     released (every wait returns 0 at once) until hy_hub_reset, or the
 *     consumer's own reset.
 *   - A consumer connected after a set does not see that set.  Exception:
 *     a manual-reset hub has a state, and a consumer that connects while it
 *     is set starts released (so that a late subscriber to "sys/shutdown"
 *     still learns that the runtime is shutting down).
 *   - hy_hub_consumer_set/reset/pulse touch that one consumer alone.
 *   - hy_hub_destroy wakes every waiting consumer with HY_ECLOSED; later
 *     waits return a release still pending, then HY_ECLOSED.
 *
 * Waiting: a task awaits a consumer with hy_hub_wait_until (or as a select
 * arm, hy_arm_hub); a thread outside the runtime may call the same
 * functions, or poll the consumer's OS handle (hy_hub_os_handle): an
 * eventfd on Linux that is readable while the consumer is released, and
 * reading it takes the release; on Windows an ordinary event HANDLE,
 * signalled while the consumer is released, that any wait function
 * (WaitForMultipleObjects, MsgWaitForMultipleObjectsEx, ...) accepts.
 * Windows programs may also use the seed's Win32 names (CreateHubEvent,
 * ConnectHubEvent, ...) from hydra/hub_win.h.
 *
 * Names are unique within a runtime; names starting with "sys/" belong to
 * the runtime.  The runtime's own "sys/shutdown" hub (manual-reset) is set
 * when hy_runtime_shutdown begins (the QUIESCE phase).
 *
 * Lifetime: a consumer lives until hy_hub_disconnect; a hub until
 * hy_hub_destroy (its memory stays until its last consumer disconnects).
 * hy_runtime_close frees whatever is left of both.
 */
#ifndef HYDRA_HUB_H
#define HYDRA_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "hydra/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hy_hub hy_hub_t;
typedef struct hy_hub_consumer hy_hub_consumer_t;

enum hy_hub_kind {
  HY_HUB_AUTO_RESET = 0,  /* a wait takes the release */
  HY_HUB_MANUAL_RESET = 1 /* released until reset */
};

/* ------------------------------------------------------------ producer */

/* Creates a hub.  name may be NULL (anonymous: connect with the pointer);
 * it is copied (up to 63 bytes).  kind is enum hy_hub_kind.
 * Returns 0, HY_EINVAL (bad kind, name too long), HY_EEXIST (the name is
 * taken in rt), HY_EPERM (a "sys/" name) or HY_ENOMEM. */
int hy_hub_create(hy_runtime_t *rt, const char *name, int kind,
                  hy_hub_t **out);

/* Destroys the hub: its name is free again, every consumer is closed
 * (waiters wake with HY_ECLOSED).  h is invalid afterwards.
 * Returns 0, HY_EINVAL or HY_EPERM (a runtime hub such as sys/shutdown). */
int hy_hub_destroy(hy_hub_t *h);

/* Releases every connected consumer once.  Any thread, any task.
 * Returns the number of consumers it released, HY_EINVAL or HY_EPERM. */
int hy_hub_set(hy_hub_t *h);

/* Withdraws every release not taken yet (all consumers) and, for a
 * manual-reset hub, clears its state.  Returns 0, HY_EINVAL or HY_EPERM. */
int hy_hub_reset(hy_hub_t *h);

typedef struct hy_hub_info {
  size_t size;       /* sizeof(hy_hub_info_t), set by the caller */
  int kind;          /* enum hy_hub_kind */
  int consumers;     /* connected now */
  uint64_t sets;     /* hy_hub_set calls so far */
  int signalled;     /* manual-reset: set and not reset; auto-reset: 0 */
  char name[64];     /* "" if anonymous */
} hy_hub_info_t;

/* Fills in *info.  Returns 0 or HY_EINVAL. */
int hy_hub_info(hy_hub_t *h, hy_hub_info_t *info);

/* Finds a hub by name.  Returns 0, HY_EINVAL or HY_ENOENT. */
int hy_hub_find(hy_runtime_t *rt, const char *name, hy_hub_t **out);

/* ------------------------------------------------------------ consumer */

/* Connects a new consumer to h / to the hub called name in rt.
 * Returns 0, HY_EINVAL, HY_ENOENT (no such name), HY_ECLOSED (destroyed)
 * or HY_ENOMEM. */
int hy_hub_connect(hy_hub_t *h, hy_hub_consumer_t **out);
int hy_hub_connect_name(hy_runtime_t *rt, const char *name,
                        hy_hub_consumer_t **out);

/* Disconnects and frees c (and closes its OS handle).  Nobody may be
 * waiting on c.  Returns 0 or HY_EINVAL. */
int hy_hub_disconnect(hy_hub_consumer_t *c);

/* Waits until c is released (then, on an auto-reset hub, takes the
 * release).  From a task or any thread.  deadline is absolute (hy_now
 * based; 0 or a past time: do not block).  Returns 0, HY_ETIMEDOUT,
 * HY_ECANCELED (the waiting task was cancelled; a release is not taken
 * then), HY_ECLOSED (hub destroyed, no release pending) or HY_EINVAL. */
int hy_hub_wait(hy_hub_consumer_t *c);
int hy_hub_wait_until(hy_hub_consumer_t *c, hy_time_t deadline);

/* The consumer's own event, as Win32's SetEvent/ResetEvent/PulseEvent on
 * it: set releases c (one waiter on an auto-reset hub, all on a manual
 * one, or leaves c released if nobody waits); reset withdraws c's pending
 * release; pulse releases whoever waits on c now and leaves nothing
 * pending (on Windows also the threads waiting on c's OS handle, as
 * PulseEvent does - with PulseEvent's caveat that a thread taken out of its
 * wait for a moment by the system misses it).  Other consumers and the hub
 * are not affected.
 * Returns 0 (set, reset) or the number of waiters released (pulse),
 * or HY_EINVAL. */
int hy_hub_consumer_set(hy_hub_consumer_t *c);
int hy_hub_consumer_reset(hy_hub_consumer_t *c);
int hy_hub_consumer_pulse(hy_hub_consumer_t *c);

/* An OS handle for foreign loops, made on first use and kept in step with
 * c's release from then on.  Owned by c: do not close it.
 *   Linux: an eventfd, readable while c is released (or closed); reading
 *   it takes the release.
 *   Windows: an event HANDLE, auto-reset for an auto-reset hub and
 *   manual-reset for a manual-reset one, signalled while c is released;
 *   a wait that returns WAIT_OBJECT_0 on an auto-reset one takes the
 *   release.  SetEvent/ResetEvent/PulseEvent on it act as
 *   hy_hub_consumer_set/reset/pulse (on c alone).  When the hub is
 *   destroyed the event is set once more (a manual-reset one stays set):
 *   a waiter woken then learns from hy_hub_wait_until(c, 0) whether it was
 *   a release (0) or the end (HY_ECLOSED).
 * Returns 0 and sets *handle, HY_EINVAL, HY_EMFILE/HY_ENFILE or
 * HY_ENOMEM. */
int hy_hub_os_handle(hy_hub_consumer_t *c, intptr_t *handle);

/* A select arm that fires when c is released (taking the release on an
 * auto-reset hub); its result is 0 or HY_ECLOSED. */
hy_arm_t hy_arm_hub(hy_hub_consumer_t *c);

#ifdef __cplusplus
}
#endif

#include "hydra/signal.h"

#endif /* HYDRA_HUB_H */
