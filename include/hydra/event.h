/* hydra/event.h - the event model (seed 002): events, channel trees,
 * senders and receivers, brokers, multiplexors, the system broker,
 * request/reply and batching.
 *
 * An EVENT is an immutable, reference-counted object: a registered type
 * descriptor, a payload, an expiry time, a picking count and an optional
 * reply channel.  Receivers get shared references; the payload is never
 * copied per receiver.  Once an event has been sent it can no longer be
 * changed (setters return HY_EPERM).
 *
 * A BROKER holds CHANNELS named by path ("app/orders/eu").  The path is the
 * tree: `app/orders` is the parent of `app/orders/eu`, and missing
 * ancestors are created (broadcast) on demand.  An event sent to a channel
 * reaches the receivers of that channel and of every ancestor.
 *
 * PICKING LIMIT, fixed at creation: 0 broadcast (every eligible receiver),
 * 1 unicast, N multicast.  A child's limit may not exceed a non-zero
 * parent's.  For a limited channel, each send picks up to `limit`
 * receivers among the eligible ones (the channel's and its ancestors'):
 * highest priority first, round-robin among equal priorities, never one
 * that already had this event - so resending an event after processing it
 * hands it to a receiver that has not seen it.  With no receiver left the
 * event is dropped and counted on the channel ("unpicked").
 *
 * EXPIRY: every forward (to receivers, or across a multiplexor bridge)
 * checks the expiry first and drops expired events, counted on the channel.
 * An event can still expire while queued: receivers use hy_event_expired().
 *
 * RECEIVERS have bounded queues and an overflow policy: block the sender
 * (default: nothing is lost), drop the newest, or drop the oldest; drops
 * are counted per receiver.  A receiver is an awaitable: read it with a
 * deadline from a task or a foreign thread, or put hy_arm_receiver() in a
 * select.  A reader that is woken takes one event; a reader that runs
 * takes what is queued without anyone being woken (hy_receiver_read_many
 * drains several at once, also behind the event it was woken for).
 *
 * MULTIPLEXORS present the channels of their sub-brokers as one namespace.
 * A name found in one sub-broker is a link to that channel; a name found in
 * several gets a synthetic representative bridged both ways with every
 * same-named channel.  Delivery walks the bridges once per send: each
 * channel of the bridged group (and each ancestor of one) delivers the
 * event once, with no loops, however multiplexors nest.  Changes in a
 * sub-broker show in the multiplexor at once.
 *
 * Every runtime has a SYSTEM BROKER (a multiplexor) with the standard
 * channels sys/signal, sys/shutdown (one event per shutdown phase),
 * sys/task (task exits, with the reason) and sys/log.  The runtime never
 * blocks on them: a full "block" receiver of a system channel loses the
 * event, counted as a drop.
 *
 * Threads: every call is safe from any thread, inside or outside tasks,
 * unless it says otherwise.  Calls that can block take a deadline
 * (HY_FOREVER: none); a cancelled task gets HY_ECANCELED.
 */
#ifndef HYDRA_EVENT_H
#define HYDRA_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "hydra/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hy_event hy_event_t;
typedef struct hy_broker hy_broker_t;
typedef struct hy_sender hy_sender_t;
typedef struct hy_receiver hy_receiver_t;
typedef struct hy_batcher hy_batcher_t;

/* ------------------------------------------------------------ event types */

/* A type descriptor.  It must outlive every event of the type (usually a
 * static const).  Names are at most HY_EVENT_NAME_MAX bytes. */
typedef struct hy_event_type {
  const char *name;
  size_t size; /* payload bytes; 0: variable, given to hy_event_new */
  /* Releases what the payload holds (not the payload itself).  May be NULL. */
  void (*destroy)(void *payload, size_t len);
  /* Writes the payload as bytes into out (cap bytes).  Returns the number
   * of bytes needed (written only when it fits) or HY_E*.  NULL: the
   * payload bytes as they are (plain data, no pointers). */
  long (*serialize)(const void *payload, size_t len, void *out, size_t cap);
  /* Checks bytes from outside and builds a payload from them, in two
   * passes: with payload NULL it validates `in` and stores the payload size
   * in *len; then it is called again with a zeroed buffer of *len bytes to
   * fill.  Returns 0, HY_EPROTO (garbage) or HY_ENOMEM.  NULL: the bytes
   * are the payload (of exactly `size` bytes for a fixed-size type). */
  int (*deserialize)(hy_runtime_t *rt, const void *in, size_t n,
                     void *payload, size_t *len);
} hy_event_type_t;

#define HY_EVENT_NAME_MAX 63

/* Round-robin among receivers of equal priority moves on every HY_PICK_RUN
 * sends of a channel: a parked receiver is woken for the first event of its
 * run and finds the rest queued when it runs, so it costs one wake per run
 * rather than one per event.  Over time each gets the same share, to
 * within one run. */
#define HY_PICK_RUN 64 /* the default; hy_channel_set_pick_run changes it */

/* Built-in types, known to every runtime. */
extern const hy_event_type_t hy_event_bytes;  /* variable bytes */
extern const hy_event_type_t hy_event_text;   /* text without NUL; len excludes none */
extern const hy_event_type_t hy_event_i64;    /* one int64_t */
extern const hy_event_type_t hy_event_batch;  /* a vector of events */
extern const hy_event_type_t hy_event_phase;  /* struct hy_phase_event */
extern const hy_event_type_t hy_event_task;   /* struct hy_task_event */
extern const hy_event_type_t hy_event_signal; /* struct hy_signal_event */
extern const hy_event_type_t hy_event_log;    /* struct hy_log_event + text */

typedef struct hy_phase_event {
  int32_t phase; /* enum hy_phase */
} hy_phase_event_t;

/* Why a task ended (sys/task).  HY_TASK_NO_STACK: it never ran, for want of
 * memory for its stack when it was to start (its joiner gets HY_ENOMEM); a
 * detached task's spawner learns of it only here. */
enum hy_task_exit {
  HY_TASK_RETURNED = 0,
  HY_TASK_CANCELLED,
  HY_TASK_CRASHED,
  HY_TASK_NO_STACK
};
typedef struct hy_task_event {
  uint64_t task;  /* the hy_task_t id */
  int32_t reason; /* enum hy_task_exit */
  char name[32];
} hy_task_event_t;

typedef struct hy_signal_event {
  int32_t signo;
} hy_signal_event_t;

typedef struct hy_log_event {
  int32_t level;
  char text[]; /* NUL-terminated */
} hy_log_event_t;

/* Registers t with rt so that hy_event_deserialize knows its name.
 * Returns 0, HY_EEXIST (another descriptor has the name), HY_EINVAL,
 * HY_ENOMEM.  Registering the same descriptor twice is 0. */
int hy_event_type_register(hy_runtime_t *rt, const hy_event_type_t *t);
/* The descriptor registered (or built in) under name, or NULL. */
const hy_event_type_t *hy_event_type_find(hy_runtime_t *rt, const char *name);

/* ---------------------------------------------------------------- events */

/* Creates an event of type t with a copy of len payload bytes (len must be
 * t->size for a fixed-size type; payload may be NULL for zeroes), expiring
 * at `expiry` (monotonic ns; HY_FOREVER: never).  The caller holds one
 * reference.  Returns 0, HY_EINVAL or HY_ENOMEM. */
int hy_event_new(const hy_event_type_t *t, const void *payload, size_t len,
                 hy_time_t expiry, hy_event_t **out);

/* Chaining: a new event of type t derived from `from` - it inherits the
 * expiry and the reply channel. */
int hy_event_derive(const hy_event_t *from, const hy_event_type_t *t,
                    const void *payload, size_t len, hy_event_t **out);

hy_event_t *hy_event_ref(hy_event_t *ev); /* returns ev */
void hy_event_unref(hy_event_t *ev);      /* NULL is a no-op */

const hy_event_type_t *hy_event_type_of(const hy_event_t *ev);
/* The payload (read-only) and its length (len may be NULL). */
const void *hy_event_data(const hy_event_t *ev, size_t *len);
hy_time_t hy_event_expiry(const hy_event_t *ev);
/* 1 if the event's expiry is before `now`. */
int hy_event_expired(const hy_event_t *ev, hy_time_t now);
/* How many times a receiver has been handed this event. */
unsigned hy_event_picks(const hy_event_t *ev);

/* Names the channel replies go to (a callback).  Before the first send
 * only: HY_EPERM afterwards.  NULL clears it. */
int hy_event_set_reply(hy_event_t *ev, const char *path);
const char *hy_event_reply_to(const hy_event_t *ev); /* NULL if none */

/* The wire form: writes at most cap bytes; returns the size needed (the
 * bytes are written only when it is <= cap) or HY_E*.  The expiry travels
 * as the time left (clocks differ between machines). */
long hy_event_serialize(const hy_event_t *ev, void *out, size_t cap);
/* Builds an event from bytes from outside; checks every length and the
 * type name (registered with rt).  Returns 0, HY_EPROTO (malformed),
 * HY_ENOENT (unknown type) or HY_ENOMEM. */
int hy_event_deserialize(hy_runtime_t *rt, const void *in, size_t n,
                         hy_event_t **out);

/* A batch event holding references to n events (taken here).  The
 * batch's expiry is the latest of theirs. */
int hy_event_batch_new(hy_event_t *const *evs, size_t n, hy_event_t **out);
/* The events of a batch (NULL and *n = 0 if ev is not a batch). */
hy_event_t *const *hy_event_batch_items(const hy_event_t *ev, size_t *n);

/* --------------------------------------------------------------- brokers */

/* A plain broker / a multiplexor of rt.  name is copied.  Returns 0,
 * HY_EINVAL, HY_ENOMEM. */
int hy_broker_new(hy_runtime_t *rt, const char *name, hy_broker_t **out);
int hy_mux_new(hy_runtime_t *rt, const char *name, hy_broker_t **out);
/* Deletes the broker's channels (their receivers see HY_ECLOSED once
 * drained) and frees it.  Returns 0, or HY_EBUSY while it is a sub-broker. */
int hy_broker_free(hy_broker_t *b);
const char *hy_broker_name(const hy_broker_t *b);

/* Adds/removes a sub-broker of a multiplexor.  Returns 0, HY_EINVAL (not a
 * multiplexor, other runtime, or a cycle), HY_EEXIST, HY_ENOENT. */
int hy_mux_add(hy_broker_t *mux, hy_broker_t *sub);
int hy_mux_remove(hy_broker_t *mux, hy_broker_t *sub);

/* The runtime's system broker (a multiplexor), or NULL without memory.
 * Register applications' brokers with hy_mux_add(hy_sys_broker(rt), b). */
hy_broker_t *hy_sys_broker(hy_runtime_t *rt);

/* Creates a channel with a picking limit (0 broadcast, 1 unicast, N
 * multicast); missing ancestors are created as broadcast channels.
 * Returns 0, HY_EEXIST, HY_EINVAL (bad path, negative limit, or a limit
 * above a non-zero parent's), HY_ENOMEM. */
int hy_channel_create(hy_broker_t *b, const char *path, int limit);
/* Sets how many consecutive sends of a limited channel go to one receiver
 * before round-robin moves on (HY_PICK_RUN by default): 1 alternates at
 * every send, which suits channels fed at human speed; longer runs save
 * wake-ups under load.  Returns 0, HY_ENOENT or HY_EINVAL (run < 1). */
int hy_channel_set_pick_run(hy_broker_t *b, const char *path, int run);
/* Deletes a channel and its subtree: their receivers drain what is queued,
 * then read HY_ECLOSED; their senders get HY_ECLOSED.  HY_ENOENT if the
 * broker has no such channel of its own. */
int hy_channel_delete(hy_broker_t *b, const char *path);
/* Renames a channel with its subtree.  HY_ENOENT, HY_EEXIST, HY_EINVAL (a
 * limit above the new parent's, or moving under itself). */
int hy_channel_rename(hy_broker_t *b, const char *from, const char *to);
/* Adds a link: `name` in b stands for `path` in `target` (a channel, or
 * through a multiplexor a representative).  HY_ENOENT, HY_EEXIST. */
int hy_broker_link(hy_broker_t *b, const char *name, hy_broker_t *target,
                   const char *path);

enum hy_channel_kind {
  HY_CHANNEL_PLAIN = 0, /* a channel of this broker */
  HY_CHANNEL_LINK,      /* a link to a channel elsewhere */
  HY_CHANNEL_REPRESENTATIVE /* a multiplexor's bridge of same-named channels */
};

typedef struct hy_channel_info {
  size_t size;       /* sizeof(hy_channel_info_t), by the caller */
  int kind;          /* enum hy_channel_kind */
  int limit;
  int receivers;     /* subscribed to the (resolved) channel itself */
  uint64_t sent;     /* sends into this channel */
  uint64_t delivered;/* copies handed to receivers by those sends */
  uint64_t expired;  /* dropped because expired, before a forward */
  uint64_t unpicked; /* limited channel, no receiver left to pick */
  uint64_t dropped;  /* copies lost to full drop-policy receivers */
} hy_channel_info_t;

/* Looks a name up (channel, link or representative).  Returns 0, HY_ENOENT,
 * HY_EINVAL. */
int hy_channel_info(hy_broker_t *b, const char *path, hy_channel_info_t *info);

/* Calls cb for every name visible in b (for a multiplexor, the merged
 * namespace), sorted, and returns how many there were.  cb may be NULL.
 * cb runs without locks held but must not free b. */
typedef void (*hy_name_cb)(void *arg, const char *path, int kind);
int hy_broker_list(hy_broker_t *b, hy_name_cb cb, void *arg);

/* ---------------------------------------------------------------- senders */

/* A sender into path (a name visible in b).  Returns 0, HY_ENOENT,
 * HY_ENOMEM. */
int hy_publish(hy_broker_t *b, const char *path, hy_sender_t **out);
void hy_sender_free(hy_sender_t *s);

/* Sends ev (the caller keeps its reference).  Returns the number of
 * receivers it was handed to (0: none, it expired, or nobody was left to
 * pick), HY_ECLOSED (channel deleted), HY_ETIMEDOUT / HY_ECANCELED (a
 * "block" receiver stayed full; receivers served before keep their copy). */
int hy_send(hy_sender_t *s, hy_event_t *ev, hy_time_t deadline);
/* The same through a name, without a sender object. */
int hy_send_to(hy_broker_t *b, const char *path, hy_event_t *ev,
               hy_time_t deadline);

/* ------------------------------------------------------------- receivers */

enum hy_overflow {
  HY_OVERFLOW_BLOCK = 0,   /* the sender waits: nothing is lost */
  HY_OVERFLOW_DROP_NEWEST, /* the arriving event is dropped */
  HY_OVERFLOW_DROP_OLDEST  /* the oldest queued event is dropped */
};

typedef struct hy_recv_opts {
  size_t size;       /* sizeof(hy_recv_opts_t) */
  uint32_t capacity; /* queue bound; 0: 64 */
  int overflow;      /* enum hy_overflow */
  int64_t priority;  /* for limited channels; default 0 */
} hy_recv_opts_t;
#define HY_RECV_OPTS_INIT {sizeof(hy_recv_opts_t), 0, HY_OVERFLOW_BLOCK, 0}

/* Subscribes to path (a name visible in b); opts may be NULL.  Returns 0,
 * HY_ENOENT, HY_EINVAL, HY_ENOMEM. */
int hy_subscribe(hy_broker_t *b, const char *path, const hy_recv_opts_t *o,
                 hy_receiver_t **out);
/* Stops delivery, drops what is queued, wakes readers with HY_ECLOSED and
 * frees the receiver once nobody reads it any more. */
void hy_unsubscribe(hy_receiver_t *r);

/* Takes the oldest queued event (the caller owns the reference) or waits
 * for one until deadline.  Returns 0, HY_ETIMEDOUT, HY_ECANCELED, or
 * HY_ECLOSED (the channel was deleted and the queue is empty).
 * hy_receiver_try_read does not wait (HY_EAGAIN when empty). */
int hy_receiver_read(hy_receiver_t *r, hy_event_t **ev, hy_time_t deadline);
int hy_receiver_try_read(hy_receiver_t *r, hy_event_t **ev);
/* Takes up to max events, waiting until deadline for the first one only.
 * Returns the count (> 0) or the errors of hy_receiver_read. */
int hy_receiver_read_many(hy_receiver_t *r, hy_event_t **evs, int max,
                          hy_time_t deadline);

/* Priority for picking on limited channels (higher first).  Any time. */
int hy_receiver_set_priority(hy_receiver_t *r, int64_t priority);
int64_t hy_receiver_priority(const hy_receiver_t *r);

typedef struct hy_recv_stats {
  size_t size;       /* sizeof(hy_recv_stats_t), by the caller */
  uint64_t received; /* events put in the queue (or handed to a reader) */
  uint64_t dropped;  /* lost to the overflow policy */
  uint32_t queued, capacity;
  int overflow;
  int closed;
  uint32_t readers;  /* reads and select arms waiting on it right now */
} hy_recv_stats_t;
int hy_receiver_stats(hy_receiver_t *r, hy_recv_stats_t *s);

/* A select arm that fires when r has an event (stored in *out, owned by
 * the caller) or is closed (result HY_ECLOSED).  An arm that does not
 * fire takes nothing.  r must not be unsubscribed while a select holds the
 * arm (a reader blocked in hy_receiver_read may: it gets HY_ECLOSED). */
hy_arm_t hy_arm_receiver(hy_receiver_t *r, hy_event_t **out);

/* ------------------------------------------------------ request and reply */

/* Callback: creates a unicast reply channel in b (named "reply/<n>"),
 * names it in req (which must not have been sent), sends req to path and
 * waits until deadline for the first reply.  Returns 0 with *reply owned
 * by the caller, HY_ETIMEDOUT, HY_ECANCELED, HY_ENOENT, HY_EPERM. */
int hy_request(hy_broker_t *b, const char *path, hy_event_t *req,
               hy_time_t deadline, hy_event_t **reply);
/* Sends reply to the channel named in req.  HY_EINVAL if req names none. */
int hy_reply(hy_broker_t *b, const hy_event_t *req, hy_event_t *reply,
             hy_time_t deadline);

/* -------------------------------------------------------------- batching */

/* A batcher sends one batch event through s after `count` events, or
 * `max_wait` ns after the first event of a batch, whichever comes first,
 * and flushes what it holds when the runtime shuts down and when freed.
 * It keeps a reference to s (which must outlive it).  Returns 0,
 * HY_EINVAL, HY_ENOMEM, HY_ESHUTDOWN. */
int hy_batcher_new(hy_runtime_t *rt, hy_sender_t *s, int count,
                   int64_t max_wait, hy_batcher_t **out);
/* Adds ev (a reference is taken); may send a full batch (blocking like
 * hy_send until deadline).  Returns 0 or the errors of hy_send. */
int hy_batcher_feed(hy_batcher_t *b, hy_event_t *ev, hy_time_t deadline);
/* Sends what is held now (if anything).  Returns hy_send's count or 0. */
int hy_batcher_flush(hy_batcher_t *b, hy_time_t deadline);
/* Flushes and frees. */
void hy_batcher_free(hy_batcher_t *b);

/* ------------------------------------------------------------ system log */

/* Publishes a log event on sys/log (never blocks).  Returns the number of
 * receivers reached, or HY_ENOMEM. */
int hy_log_event(hy_runtime_t *rt, int level, const char *text);

#ifdef __cplusplus
}
#endif
#endif /* HYDRA_EVENT_H */
