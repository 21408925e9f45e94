/* runtime/hubs.h - what the rest of the runtime needs from hub events
 * (runtime/hub.c) and from the per-consumer OS handle (runtime/<os>/evfd.c).
 */
#ifndef HYDRA_RUNTIME_HUBS_H
#define HYDRA_RUNTIME_HUBS_H

#include <stdint.h>

#include "hydra/hub.h"

/* Creates rt's hub registry and its "sys/shutdown" hub.  0 or HY_ENOMEM. */
int hy__hubs_init(hy_runtime_t *rt);

/* Frees every hub and consumer still there.  pre: nothing runs any more. */
void hy__hubs_free(hy_runtime_t *rt);

/* Sets "sys/shutdown" (QUIESCE).  Idempotent in effect: a manual-reset hub
 * set twice is still just set. */
void hy__hubs_shutdown(hy_runtime_t *rt);

/* Creates / sets / resets a runtime-owned hub (name under "sys/"), which
 * the public calls refuse with HY_EPERM. */
int hy__hub_create_system(hy_runtime_t *rt, const char *name, int kind,
                          hy_hub_t **out);
int hy__hub_set(hy_hub_t *h);

/* ---------------------------------------------- the consumer's OS handle
 * One file per OS (runtime/linux/evfd.c, runtime/win/evfd.c).  A handle is
 * "ready" (readable / signalled) or not; the consumer keeps it in step with
 * its release under the consumer's lock, while a foreign thread may take
 * the release by reading it at any time. */
/* manual: the consumer's hub is manual-reset (Windows makes a manual-reset
 * event for it; Linux's eventfd is the same either way). */
int hy__evfd_open(intptr_t *h, int manual); /* 0, HY_EMFILE, HY_ENFILE, ... */
void hy__evfd_close(intptr_t h);
void hy__evfd_post(intptr_t h);      /* make ready if not already */
int hy__evfd_take(intptr_t h);       /* 1 if it was ready; now it is not */
int hy__evfd_ready(intptr_t h);      /* 1 if ready; takes nothing */
void hy__evfd_post_forever(intptr_t h); /* ready for good (closed) */
void hy__evfd_pulse(intptr_t h);     /* wake its waiters, leave not ready */

/* -------------------------------------------- signals (runtime/signals.c)
 * Drops rt's receivers (restoring handlers if they were the last ones).
 * Called first thing when the runtime is freed. */
void hy__signal_runtime_free(hy_runtime_t *rt);

#endif
