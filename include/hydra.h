/* hydra.h - Hydra, an embeddable actor/task runtime in C11.
 *
 * This umbrella header includes the module headers and nothing else:
 *
 *   hydra/error.h    error codes, hy_strerror(), hy_err_name()
 *   hydra/alloc.h    the slab-allocator family: object caches, stacks
 *   hydra/runtime.h  the runtime object, tasks, timers, embedding
 *   hydra/hub.h      hub events, signals, shutdown phases
 *   hydra/chan.h     Go-style channels and Ada-style select
 *   hydra/event.h    the event model: events, brokers, receivers, batching
 *   hydra/net.h      addresses, TCP/UDP connections, the callback server
 */
#ifndef HYDRA_H
#define HYDRA_H

#include "hydra/error.h"
#include "hydra/alloc.h"
#include "hydra/runtime.h"
#include "hydra/hub.h"
#include "hydra/chan.h"
#include "hydra/event.h"
#include "hydra/net.h"

#endif /* HYDRA_H */
