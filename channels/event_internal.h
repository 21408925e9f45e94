/* channels/event_internal.h - the event model's own structures, shared by
 * channels/event_*.c and channels/broker*.c.
 *
 * Locks (">": may be held while taking):
 *   st->topo > receiver lock > event lock > (runtime: task lock, queues)
 *   st->topo (one per runtime) guards every broker's namespace, channel
 *   trees, bridges, subscriptions, priorities and delivery plans.  It is
 *   held to look things up, to pick receivers and, for a send of a few
 *   copies, to hand them to receivers that need no wait (a receiver lock
 *   each, no event freed): never across a wait or a long loop, so senders
 *   contend on it only briefly.  A sender's owner task sends without it
 *   while the topology version is unchanged (struct hy_sender).
 *   A receiver's lock guards its queue and its two wait queues.
 *
 * Delivery plans: a channel caches, per topology version, the receivers a
 * send reaches (its bridged group and the ancestors of each member, each
 * receiver once, sorted by priority).  Any topology change bumps the
 * version; the next send rebuilds.  A plan is reference-counted and holds
 * a reference to each of its receivers, so a send uses it without the lock;
 * a plan is never changed once built (a priority change is a topology
 * change), so it is read without the lock too.
 */
#ifndef HYDRA_CHANNELS_EVENT_INTERNAL_H
#define HYDRA_CHANNELS_EVENT_INTERNAL_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc/mem.h"
#include "hydra/error.h"
#include "hydra/event.h"
#include "runtime/sys.h"
#include "runtime/wait.h"

typedef struct hy__channel hy__channel;
typedef struct hy__plan hy__plan;
typedef struct hy__evstate hy__evstate;
struct hy__wakes;

/* ------------------------------------------------------------------ events */

typedef struct hy__had {
  const void *key; /* the receiver */
  uint64_t id;     /* and its id, so a reused address is not mistaken */
} hy__had;

struct hy_event {
  atomic_long refs;
  const hy_event_type_t *type;
  hy_time_t expiry;
  atomic_uint picks;
  atomic_int sent;     /* set by the first send: immutable from then on */
  hy__lock_t lock;     /* the had set */
  uint32_t nhad, cap_had;
  hy__had *had;        /* receivers that were picked for it */
  hy__had had_inline[2];/* the first ones, without an allocation */
  char *reply;
  size_t len;
  alignas(16) unsigned char payload[];
};

/* Records that r was picked for ev unless it already was: 1 if newly
 * recorded, 0 if r had it, HY_ENOMEM.  `sole`: the caller holds the only
 * reference to ev (no one else can reach the set: no lock taken). */
int hy__event_pick(hy_event_t *ev, const void *key, uint64_t id, int sole);
int hy__event_had(hy_event_t *ev, const void *key, uint64_t id);

/* Deserialization with a nesting depth (batches hold events). */
int hy__event_deserialize_depth(hy_runtime_t *rt, const void *in, size_t n,
                                int depth, hy_event_t **out);
#define HY__EVENT_MAX_DEPTH 8

/* --------------------------------------------------------------- receivers */

struct hy_receiver {
  /* The queue's line: everything a put and a read touch, and nothing
   * else (a sender's put and its reader on another worker pass this one
   * line between them). */
  alignas(64) hy__lock_t lock;
  int closed;           /* no more events will come */
  uint32_t cap, head, n;
  int policy;
  hy_event_t **ring;
  hy__waitq readers;    /* waiting for an event (select arms too) */
  hy__waitq senders;    /* waiting for room (block policy) */
  /* Written by senders alone (under lock), so it stays with them. */
  alignas(64) uint64_t received, dropped;
  /* Read-mostly. */
  alignas(64) atomic_long refs; /* owner + plans + readers in progress */
  hy__evstate *st;
  hy__channel *ch;      /* under topo; NULL once unsubscribed */
  uint64_t id;
  _Atomic int64_t prio; /* written under topo */
};

void hy__receiver_release(hy_receiver_t *r);

/* Asks for r's queue line, for writing, ahead of a put: a send to many
 * receivers then waits for several of those lines at once rather than for
 * each in turn. */
static inline void hy__receiver_prefetch(hy_receiver_t *r) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(&r->lock, 1, 3);
#else
  (void)r;
#endif
}
#define HY__PREFETCH_AHEAD 8
/* How hy__receiver_put treats a full receiver of the "block" policy: wait
 * for room; drop the event; or return HY_EAGAIN at once, having changed
 * nothing (also instead of dropping the oldest, whose last unref could run
 * a type's destroy: TRY is for callers holding topo, which touch no
 * events). */
enum { HY__PUT_BLOCK = 0, HY__PUT_NONBLOCK = 1, HY__PUT_TRY = 2 };
/* Hands ev to r following r's policy, using up one reference the caller
 * added for it when it returns 1 (the caller keeps it otherwise); `mode`
 * as above.  Returns 1 delivered, 0 dropped/closed, 2 expired while it
 * waited for room, HY_ETIMEDOUT, HY_ECANCELED, HY_EAGAIN (TRY only).
 * *dropped += losses. */
/* hy__receiver_put's body, entered with r->lock held (it drops it). */
int hy__receiver_put_locked(hy_receiver_t *r, hy_event_t *ev,
                            hy_time_t deadline, int mode, uint64_t *dropped,
                            struct hy__wakes *wk);
static inline int hy__receiver_put(hy_receiver_t *r, hy_event_t *ev,
                                   hy_time_t deadline, int mode,
                                   uint64_t *dropped, struct hy__wakes *wk) {
  hy__lock(&r->lock);
  /* The common case inline: room, no reader waiting on an empty queue to
   * be handed the event, no blocked sender to pass room on to. */
  if (!r->closed && r->n < r->cap && (r->n || !r->readers.head) &&
      !r->senders.head) {
    uint32_t at = r->head + r->n; /* no division: head, n < cap */
    if (at >= r->cap)
      at -= r->cap;
    r->ring[at] = ev;
    r->n++;
    r->received++;
    hy__unlock(&r->lock);
    return 1;
  }
  return hy__receiver_put_locked(r, ev, deadline, mode, dropped, wk);
}

/* Wakes of readers handed an event, held back until the send has served
 * every receiver (so one wake-up of an idle worker serves many), and
 * always sent before the sender could block. */
typedef struct hy__wakes {
  int n;
  int home;             /* wake each reader on its own worker (broadcast) */
  hy__wait *w[32];
} hy__wakes;
void hy__wakes_flush(hy__wakes *k);
/* Marks r closed (channel deleted): readers drain then see HY_ECLOSED. */
void hy__receiver_close(hy_receiver_t *r);

/* ---------------------------------------------------------------- channels */

struct hy__plan {
  atomic_long refs;
  int n;
  int *gend;            /* gend[i]: the end of r[i]'s group of equals (a
                           priority change rebuilds the plan, so a pick
                           reads no receiver's priority) */
  hy_receiver_t *r[];   /* sorted by priority, highest first */
};
void hy__plan_release(hy__plan *p);

struct hy__channel {
  atomic_long refs;
  hy_broker_t *broker;  /* its broker (owner) */
  char *path;
  int limit;
  int deleted;
  int synthetic;        /* a multiplexor's representative */
  hy_receiver_t **rcv;  /* subscribed receivers */
  int nrcv, caprcv;
  hy__channel **bridge; /* bridged peers (both directions) */
  int nbridge, capbridge;
  hy__plan *plan;       /* cached, for plan_ver */
  uint64_t plan_ver;
  /* Round-robin among equals (event_send.c pick): written with plain
   * atomic loads and stores, also by senders without topo. */
  _Atomic uint32_t turn;     /* turns so far */
  _Atomic uint32_t run_left; /* sends left in this turn */
  _Atomic uint32_t pick_run; /* sends per turn (HY_PICK_RUN) */
  _Atomic uint64_t turn_cache; /* size << 48 | start << 32 | turn: the top
                                  group's start, turn % size */
  uint32_t mark;        /* walk epoch, under topo */
  _Atomic uint64_t sent, planned; /* written under topo: sends, copies to
                                     hand over (and see senders) */
  hy_sender_t *senders; /* under topo: its senders, whose owners count
                           their own sends */
  _Atomic uint64_t undelivered, expired, unpicked, dropped;
};

void hy__channel_release(hy__channel *c);

/* A link: a name in a broker standing for a channel elsewhere. */
typedef struct hy__link {
  char *name;
  hy_broker_t *target;
  char *path;
} hy__link;

/* A name of a multiplexor's view. */
typedef struct hy__view {
  char *name;
  hy__channel *ch;      /* the resolved channel: a member, or the rep */
  int kind;             /* enum hy_channel_kind */
} hy__view;

struct hy_broker {
  hy__evstate *st;
  char *name;
  int is_mux;
  int internal;          /* owned by the runtime (sys) */
  hy__channel **ch;      /* own channels (for a mux: its reps and own) */
  int nch, capch;
  hy__link *links;
  int nlinks, caplinks;
  hy_broker_t **subs;    /* a multiplexor's sub-brokers */
  int nsubs, capsubs;
  hy_broker_t **parents; /* multiplexors this one is a sub-broker of */
  int nparents, capparents;
  hy__view *view;        /* a multiplexor's merged namespace */
  int nview, capview;
  hy_broker_t *next_all; /* the runtime's list of brokers */
  hy_broker_t *prev_all;
};

/* -------------------------------------------------------- per-runtime state */

typedef struct hy__typereg {
  const hy_event_type_t **v;
  int n, cap;
} hy__typereg;

typedef struct hy__batchlist hy__batchlist;

struct hy__evstate {
  hy_runtime_t *rt;
  hy__lock_t topo;
  _Atomic uint64_t version; /* topology version (changed under topo; read
                               without it by senders' owners) */
  uint32_t epoch;        /* walk marks */
  uint64_t next_id;      /* receiver ids */
  uint64_t next_reply;   /* reply channel names */
  atomic_long nreceivers;/* all receivers of the runtime (fast checks) */
  hy_broker_t *all;      /* every broker of the runtime */
  hy__lock_t typelock;
  hy__typereg types;
  hy_broker_t *sys;      /* the system multiplexor */
  hy_broker_t *sysrt;    /* its runtime broker: sys/... */
  hy__channel *ch_signal, *ch_shutdown, *ch_task, *ch_log;
  hy__lock_t batch_lock;
  struct hy_batcher *batchers; /* flushed on shutdown */
};

/* The runtime's event state, created on first use (NULL without memory). */
hy__evstate *hy__evstate_get(hy_runtime_t *rt);
/* Already created, or NULL: for hooks that must stay cheap. */
hy__evstate *hy__evstate_peek(hy_runtime_t *rt);
/* Frees everything (runtime close). */
void hy__evstate_free(hy_runtime_t *rt);

/* Under topo.  Looks a name up in b: own channel, link, or view entry. */
hy__channel *hy__broker_resolve(hy_broker_t *b, const char *path, int *kind);
/* The parent channel of c in its broker's namespace, or NULL. */
hy__channel *hy__channel_parent(hy__channel *c);
/* A multiplexor view rebuild after any change in b (recurses upwards). */
int hy__mux_refresh_up(hy_broker_t *b);
int hy__mux_rebuild(hy_broker_t *m);
/* Creates a channel object owned by b (no name checks), under topo. */
hy__channel *hy__channel_alloc(hy_broker_t *b, const char *path, int limit);
/* Removes c from its broker, closes its receivers and bridges, under topo. */
void hy__channel_kill(hy__channel *c);
int hy__grow(void **v, int *cap, int need, size_t elem);

/* A sender.  The first task that sends through it becomes its owner and
 * keeps the plan it used (event_send.c): while the topology version stays
 * the same its sends take no topo.  Other tasks and foreign threads send
 * the ordinary way. */
struct hy_sender {
  hy__evstate *st;
  hy__channel *ch;
  hy_sender_t *next, *prev;  /* the channel's senders, under topo */
  _Atomic(void *) owner;     /* the owning task, set once */
  hy__plan *plan;            /* the owner's, with a reference: replaced
                                by the owner under topo */
  uint64_t ver;              /* the version plan is current for */
  _Atomic uint64_t sent, planned; /* the owner's fast sends (owner-written) */
};

/* Sends ev into c.  nonblock: see hy__receiver_put. */
int hy__send_channel(hy__evstate *st, hy__channel *c, hy_event_t *ev,
                     hy_time_t deadline, int nonblock);
/* The same through s (NULL: none), whose owner may send without topo. */
int hy__send_via(hy__evstate *st, hy__channel *c, hy_sender_t *s,
                 hy_event_t *ev, hy_time_t deadline, int nonblock);

int hy__sender_send(hy_sender_t *s, hy_event_t *ev, hy_time_t deadline,
                    int nonblock);

/* Flushing batchers at shutdown (channels/event_batch.c). */
void hy__batchers_shutdown(hy__evstate *st);

#endif
