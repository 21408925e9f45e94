/* hydra/net.h - addresses, TCP and UDP as awaitable tasks, and the
 * callback-style server.
 *
 * Two faces on one core.  Task style: a task calls hy_tcp_accept,
 * hy_conn_read, hy_conn_write_all ... and parks until the completion port
 * reports the operation done; every blocking call has an `_until` twin
 * taking an absolute deadline (HY_FOREVER: none).  Callback style: a
 * hy_server_t keeps accepts pending on the workers' ports and calls the
 * application's functions (accept, read, write done, close, timeout) on
 * the worker that owns each connection, with per-connection buffers from
 * object caches and enforced limits (max connections, max buffered output,
 * idle/read/write timeouts, accept back-off on EMFILE).
 *
 *   hy_addr_t a;  hy_addr_parse("127.0.0.1:8080", &a);
 *   hy_listener_t *l;  hy_tcp_listen(rt, &a, NULL, &l);      // in a task
 *   hy_conn_t *c;  hy_tcp_accept(l, &c);
 *   char buf[4096];  int n = hy_conn_read(c, buf, sizeof buf);
 *   hy_conn_write_all(c, buf, n);  hy_conn_close(c);
 *
 * Task-style calls that wait must be made from a task of the runtime
 * (HY_EINVAL otherwise).  One read and one write may be in progress on a
 * connection at a time (a second concurrent one gets HY_EBUSY); closing
 * may come from any task or thread.  hy_conn_close makes operations still
 * pending on the connection return HY_ECANCELED, and frees the
 * connection's memory only after the last of them has returned.  Calls
 * that start after the close return HY_ECLOSED (the object stays valid
 * until then, as it is freed by the last one out).  After hy_conn_close
 * returned and no call is in progress, the pointer must not be used.
 *
 * Errors are negative HY_E* codes.  Each socket object also remembers its
 * last failure (which operation, on which address, the HY code and the OS
 * code): hy_net_last_error() and hy_net_error_format().
 */
#ifndef HYDRA_NET_H
#define HYDRA_NET_H

#include <stddef.h>
#include <stdint.h>

#include "hydra/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ addresses */

enum { HY_AF_UNSPEC = 0, HY_AF_INET = 4, HY_AF_INET6 = 6 };

/* An IPv4 or IPv6 socket address with its port.  The storage holds the
 * OS's sockaddr (sockaddr_in or sockaddr_in6). */
typedef struct hy_addr {
  uint32_t len; /* bytes of the sockaddr in use; 0: empty */
  union {
    uint8_t raw[28];
    uint64_t align_;
  } sa;
} hy_addr_t;

#define HY_ADDRSTRLEN 64 /* enough for "[ipv6%scope]:port" */

/* Parses "1.2.3.4:80", "[::1]:80", "1.2.3.4", "::1" or "[::1]" (no port:
 * port 0).  No name lookup.  Returns 0 or HY_EINVAL. */
int hy_addr_parse(const char *s, hy_addr_t *out);

/* Makes an address from a numeric IP ("127.0.0.1", "::1") and a port.
 * Returns 0 or HY_EINVAL. */
int hy_addr_from_ip(const char *ip, int port, hy_addr_t *out);

/* Writes "1.2.3.4:80" or "[::1]:80" into buf.  Returns the length
 * (without the NUL), HY_EINVAL (not an address) or HY_ENOBUFS. */
int hy_addr_format(const hy_addr_t *a, char *buf, size_t cap);

/* HY_AF_INET, HY_AF_INET6, or HY_AF_UNSPEC for an empty address. */
int hy_addr_family(const hy_addr_t *a);
int hy_addr_port(const hy_addr_t *a); /* -1 for an empty address */
int hy_addr_set_port(hy_addr_t *a, int port); /* 0 or HY_EINVAL */
/* 1 if a and b are the same family, IP and port. */
int hy_addr_equal(const hy_addr_t *a, const hy_addr_t *b);

/* Resolves host (a name or a numeric IP) and port through getaddrinfo on
 * the runtime's blocking pool, storing up to max addresses (family: one of
 * HY_AF_*, HY_AF_UNSPEC for both).  From a task the task parks; from a
 * foreign thread the lookup runs on the calling thread.  Returns the count
 * (>= 1), HY_ENOENT (no such name), HY_ETIMEDOUT (the deadline passed: the
 * lookup finishes in the background and is dropped), HY_ECANCELED,
 * HY_EINVAL, HY_ENOMEM. */
int hy_resolve(hy_runtime_t *rt, const char *host, int port, int family,
               hy_addr_t *out, int max);
int hy_resolve_until(hy_runtime_t *rt, const char *host, int port,
                     int family, hy_addr_t *out, int max, hy_time_t deadline);

/* --------------------------------------------------------------- errors */

/* What failed, where, and the OS's own code.  `op` is a static string
 * ("listen", "accept", "connect", "read", "write", ...). */
typedef struct hy_net_error {
  const char *op;   /* NULL: no failure recorded */
  int code;         /* HY_E* */
  int os_code;      /* errno / WSA code when the OS reported it, else 0 */
  hy_addr_t addr;   /* the address involved (local or peer), if any */
} hy_net_error_t;

/* Copies the last failure recorded on a hy_listener_t, hy_conn_t or
 * hy_udp_t (pass the object; kind is HY_NET_LISTENER/CONN/UDP).
 * Returns 0, or HY_ENOENT when none was recorded. */
enum { HY_NET_LISTENER = 1, HY_NET_CONN, HY_NET_UDP };
int hy_net_last_error(const void *obj, int kind, hy_net_error_t *out);

/* "connect 127.0.0.1:9: HY_ECONNREFUSED (connection refused, os 111)".
 * Returns the length or HY_ENOBUFS. */
int hy_net_error_format(const hy_net_error_t *e, char *buf, size_t cap);

/* ---------------------------------------------------------- TCP: listen */

typedef struct hy_listener hy_listener_t;
typedef struct hy_conn hy_conn_t;

typedef struct hy_listen_opts {
  size_t size;   /* sizeof(hy_listen_opts_t) */
  int backlog;   /* 0: 511 */
  int reuseaddr; /* SO_REUSEADDR (default 1) */
  int reuseport; /* SO_REUSEPORT (default 0; none on Windows: HY_ENOTSUP) */
  int v6only;    /* IPV6_V6ONLY for an IPv6 address (default 0) */
} hy_listen_opts_t;
#define HY_LISTEN_OPTS_INIT {sizeof(hy_listen_opts_t), 0, 1, 0, 0}

/* Binds and listens on addr (port 0: any free port; see
 * hy_listener_addr).  Any thread.  Returns 0, HY_EADDRINUSE, HY_EACCES,
 * HY_EADDRNOTAVAIL, HY_EAFNOSUPPORT, HY_EMFILE, HY_ENOMEM, HY_EINVAL,
 * HY_ENOTSUP (reuseport on Windows). */
int hy_tcp_listen(hy_runtime_t *rt, const hy_addr_t *addr,
                  const hy_listen_opts_t *o, hy_listener_t **out);

/* The bound address (with the port the OS chose).  0 or HY_E*. */
int hy_listener_addr(hy_listener_t *l, hy_addr_t *out);

/* Waits for a connection.  Several tasks may accept on one listener at
 * once.  Returns 0, HY_ETIMEDOUT, HY_ECANCELED (the task was cancelled or
 * the listener closed meanwhile), HY_ECLOSED, HY_EMFILE/HY_ENFILE (out of
 * descriptors: the caller should back off), HY_ENOMEM. */
int hy_tcp_accept(hy_listener_t *l, hy_conn_t **out);
int hy_tcp_accept_until(hy_listener_t *l, hy_time_t deadline,
                        hy_conn_t **out);

/* Stops listening: pending accepts return HY_ECANCELED; the memory goes
 * when the last of them has returned.  Returns 0 or HY_ECLOSED. */
int hy_listener_close(hy_listener_t *l);

/* -------------------------------------------------------- TCP: connect */

/* Connects to addr.  Returns 0, HY_ECONNREFUSED, HY_ETIMEDOUT,
 * HY_ENETUNREACH, HY_EHOSTUNREACH, HY_ECANCELED, HY_EMFILE, HY_ENOMEM. */
int hy_tcp_connect(hy_runtime_t *rt, const hy_addr_t *addr, hy_conn_t **out);
int hy_tcp_connect_until(hy_runtime_t *rt, const hy_addr_t *addr,
                         hy_time_t deadline, hy_conn_t **out);

/* ----------------------------------------------------- TCP: connection */

/* Reads what is there, up to len (at most INT_MAX) bytes, waiting until
 * something is.  Returns the count, 0 at end of stream, HY_ETIMEDOUT,
 * HY_ECANCELED, HY_ECONNRESET, HY_ECLOSED, HY_EBUSY (another read is in
 * progress). */
int hy_conn_read(hy_conn_t *c, void *buf, size_t len);
int hy_conn_read_until(hy_conn_t *c, void *buf, size_t len,
                       hy_time_t deadline);

/* Reads exactly len bytes.  Returns len, or HY_EOF when the stream ended
 * first (*got, if not NULL, says how many arrived), or the error of the
 * read that failed. */
int hy_conn_read_exactly(hy_conn_t *c, void *buf, size_t len, size_t *got);
int hy_conn_read_exactly_until(hy_conn_t *c, void *buf, size_t len,
                               size_t *got, hy_time_t deadline);

/* Writes all len bytes (at most INT_MAX).  Returns len, HY_ECONNRESET or
 * HY_EPIPE (the peer went away; *sent, if not NULL, says how much the OS
 * took), HY_ETIMEDOUT, HY_ECANCELED, HY_ECLOSED, HY_EBUSY. */
int hy_conn_write_all(hy_conn_t *c, const void *buf, size_t len,
                      size_t *sent);
int hy_conn_write_all_until(hy_conn_t *c, const void *buf, size_t len,
                            size_t *sent, hy_time_t deadline);

/* Half-close: the peer reads end of stream; we can still read.
 * Returns 0, HY_ENOTCONN, HY_ECLOSED. */
int hy_conn_shutdown_write(hy_conn_t *c);

/* Closes the connection.  Pending operations on it return HY_ECANCELED
 * (data that had already arrived is still delivered); the memory is
 * reused only after the last of them has returned.  Any thread.
 * Returns 0, or HY_ECLOSED when a close came first (while the object is
 * still alive: see the top of this file). */
int hy_conn_close(hy_conn_t *c);
/* As hy_conn_close, but the peer gets a reset (SO_LINGER 0), not a FIN. */
int hy_conn_abort(hy_conn_t *c);

int hy_conn_peer_addr(hy_conn_t *c, hy_addr_t *out);
int hy_conn_local_addr(hy_conn_t *c, hy_addr_t *out);

/* Socket options.  Return 0, HY_ECLOSED or the OS's error. */
int hy_conn_set_nodelay(hy_conn_t *c, int on);
/* idle_s > 0 also sets the idle time before the first probe. */
int hy_conn_set_keepalive(hy_conn_t *c, int on, int idle_s);
/* 0 leaves a size unchanged.  The OS may round or double the values. */
int hy_conn_set_buffers(hy_conn_t *c, int rcvbuf, int sndbuf);
int hy_conn_get_buffers(hy_conn_t *c, int *rcvbuf, int *sndbuf);

/* -------------------------------------------------------------- UDP */

typedef struct hy_udp hy_udp_t;

/* Opens a UDP socket bound to addr (port 0: any).  Any thread.
 * reuseaddr: SO_REUSEADDR.  Returns 0 or HY_E* as hy_tcp_listen. */
int hy_udp_bind(hy_runtime_t *rt, const hy_addr_t *addr, int reuseaddr,
                hy_udp_t **out);
int hy_udp_local_addr(hy_udp_t *u, hy_addr_t *out);

/* Sends one datagram.  Returns len, HY_EMSGSIZE, HY_ETIMEDOUT,
 * HY_ECANCELED, HY_ECLOSED, or the OS's error. */
int hy_udp_send_to(hy_udp_t *u, const void *buf, size_t len,
                   const hy_addr_t *to);
int hy_udp_send_to_until(hy_udp_t *u, const void *buf, size_t len,
                         const hy_addr_t *to, hy_time_t deadline);

/* Receives one datagram into buf; *from (if not NULL) gets its source.
 * Returns its length, or HY_EMSGSIZE when it was longer than len (the
 * first len bytes are in buf, the rest is lost), HY_ETIMEDOUT,
 * HY_ECANCELED, HY_ECLOSED. */
int hy_udp_recv_from(hy_udp_t *u, void *buf, size_t len, hy_addr_t *from);
int hy_udp_recv_from_until(hy_udp_t *u, void *buf, size_t len,
                           hy_addr_t *from, hy_time_t deadline);

/* Connected mode: datagrams go to `to` by default and only datagrams from
 * it are received.  Then hy_udp_send / hy_udp_recv. */
int hy_udp_connect(hy_udp_t *u, const hy_addr_t *to);
int hy_udp_send(hy_udp_t *u, const void *buf, size_t len);
int hy_udp_send_until(hy_udp_t *u, const void *buf, size_t len,
                      hy_time_t deadline);
int hy_udp_recv(hy_udp_t *u, void *buf, size_t len);
int hy_udp_recv_until(hy_udp_t *u, void *buf, size_t len,
                      hy_time_t deadline);

/* As hy_conn_close: pending operations return HY_ECANCELED. */
int hy_udp_close(hy_udp_t *u);

/* ----------------------------------------------------------- select */

/* An arm that fires when c has data to read, has reached end of stream or
 * has an error (then hy_conn_read returns at once), or is closed
 * (result HY_ECLOSED).  Firing consumes nothing: an arm that did not fire
 * left no trace.  c must stay open while the arm is in use. */
hy_arm_t hy_arm_conn_readable(hy_conn_t *c);
hy_arm_t hy_arm_udp_readable(hy_udp_t *u);
/* Fires when a connection is waiting to be accepted. */
hy_arm_t hy_arm_listener_ready(hy_listener_t *l);

/* An operation started in the background, awaited later - alone
 * (hy_io_wait) or as a select arm (hy_arm_io).  The caller owns the
 * record; it must stay in place until the operation has completed
 * (hy_io_wait returned, or the arm fired).  Started from a task. */
typedef struct hy_io {
  uint64_t opaque_[40];
} hy_io_t;

/* Starts a read of up to len bytes (completes with the count, 0 at end of
 * stream, or HY_E*) or a write of all len bytes.  Returns 0 (started),
 * HY_ECLOSED, HY_EBUSY (a read, or write, is already in progress),
 * HY_EINVAL (not in a task). */
int hy_conn_read_start(hy_conn_t *c, hy_io_t *io, void *buf, size_t len);
int hy_conn_write_start(hy_conn_t *c, hy_io_t *io, const void *buf,
                        size_t len);

/* Waits for io to complete and returns its result; HY_ETIMEDOUT leaves it
 * running (wait again, or cancel).  HY_ECANCELED: the waiting task was
 * cancelled (io keeps running). */
int hy_io_wait(hy_io_t *io, hy_time_t deadline);
/* Asks the port to cancel io; it still completes (HY_ECANCELED, or its
 * result if it had already finished).  Returns 0. */
int hy_io_cancel(hy_io_t *io);
/* 1 when io has completed. */
int hy_io_done(hy_io_t *io);
/* An arm that fires when io has completed; arm.result is io's result
 * (the byte count or HY_E*). */
hy_arm_t hy_arm_io(hy_io_t *io);

/* ------------------------------------------------ the callback server */

typedef struct hy_server hy_server_t;
typedef struct hy_sconn hy_sconn_t; /* a connection of a server */

/* Why a server connection closed (the close callback's reason). */
enum hy_close_reason {
  HY_CLOSE_PEER = 1,     /* the peer closed (end of stream) */
  HY_CLOSE_APP,          /* hy_sconn_close */
  HY_CLOSE_ERROR,        /* an I/O error: see the error code */
  HY_CLOSE_IDLE_TIMEOUT, /* no read or write for idle_timeout */
  HY_CLOSE_READ_TIMEOUT, /* nothing read for read_timeout */
  HY_CLOSE_WRITE_TIMEOUT,/* output stuck for write_timeout */
  HY_CLOSE_REFUSED,      /* the accept callback refused it */
  HY_CLOSE_SHUTDOWN      /* the server or runtime stopped */
};
const char *hy_close_reason_name(int reason);

/* Which timeout fired (the timeout callback's kind). */
enum { HY_TIMEOUT_IDLE = 1, HY_TIMEOUT_READ, HY_TIMEOUT_WRITE };

typedef struct hy_server_callbacks {
  /* A connection arrived.  Return 0 to keep it, anything else to refuse
   * (it is closed at once, and on_close is not called).  May set the
   * connection's user data. */
  int (*on_accept)(hy_server_t *s, hy_sconn_t *c);
  /* Bytes arrived.  data is valid during the call only. */
  void (*on_read)(hy_server_t *s, hy_sconn_t *c, const void *data,
                  size_t len);
  /* All output buffered so far has been sent (the buffer is empty). */
  void (*on_write_done)(hy_server_t *s, hy_sconn_t *c);
  /* A timeout passed.  Return 0 to close the connection (the default when
   * NULL), 1 to keep it (the timer restarts). */
  int (*on_timeout)(hy_server_t *s, hy_sconn_t *c, int kind);
  /* The connection is closing: the last call for c.  error is 0 or the
   * HY_E* code that caused it. */
  void (*on_close)(hy_server_t *s, hy_sconn_t *c, int reason, int error);
} hy_server_callbacks_t;

typedef struct hy_server_config {
  size_t size;              /* sizeof(hy_server_config_t) */
  hy_addr_t addr;           /* where to listen (port 0: any) */
  int backlog;              /* 0: 511 */
  int reuseport;            /* SO_REUSEPORT (HY_ENOTSUP on Windows) */
  int pending_accepts;      /* accepts kept in flight per worker; 0: 4 */
  int max_connections;      /* 0: no limit; excess is accepted, closed */
  size_t read_buffer_size;  /* per connection; 0: 16 KiB */
  size_t max_output;        /* max buffered output per connection; 0: 1 MiB */
  int64_t idle_timeout;     /* ns without reads or writes; 0: none */
  int64_t read_timeout;     /* ns without a read; 0: none */
  int64_t write_timeout;    /* ns with output pending but none sent; 0: none */
  uint64_t worker_mask;     /* workers that accept (bit i: worker i); 0: all */
  void *user;               /* hy_server_user() */
  int nagle;                /* 0: accepted connections get TCP_NODELAY, so a
                               small write goes out at once, not after the
                               peer's delayed ACK; 1: keep Nagle's algorithm
                               (fewer, fuller segments for many tiny writes) */
} hy_server_config_t;
#define HY_SERVER_CONFIG_INIT                                                 \
  {sizeof(hy_server_config_t), {0, {{0}}}, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, 0}

/* Creates a server, listens, and starts accepting on the workers.  Callbacks
 * run on worker threads, outside tasks: they must not block.  Calls about
 * one connection never overlap (they all run on its worker).  Any thread.
 * Returns 0, HY_EINVAL, HY_ENOMEM, or hy_tcp_listen's errors. */
int hy_server_start(hy_runtime_t *rt, const hy_server_config_t *cfg,
                    const hy_server_callbacks_t *cb, hy_server_t **out);

int hy_server_addr(hy_server_t *s, hy_addr_t *out);
void *hy_server_user(hy_server_t *s);

/* Stops accepting (also done by the runtime's quiesce phase).  Open
 * connections go on.  Returns 0. */
int hy_server_stop_accepting(hy_server_t *s);

/* Stops accepting and closes every connection (reason HY_CLOSE_SHUTDOWN;
 * the runtime's cancel phase does this too), waits until every callback
 * has returned and every operation has completed, and frees the server.
 * Not from a callback of this server.  Returns 0 or HY_EINVAL. */
int hy_server_close(hy_server_t *s);

typedef struct hy_server_stats {
  size_t size;           /* sizeof(hy_server_stats_t), set by the caller */
  uint64_t accepted;     /* connections accepted (kept or not) */
  uint64_t refused;      /* refused by on_accept */
  uint64_t over_limit;   /* closed at once for max_connections */
  uint64_t accept_errors;/* failed accepts (EMFILE, ...), and connections
                            reset by their peer before they were accepted
                            (IOCP reports those; they cause no back-off) */
  uint64_t backoffs;     /* accept pauses after EMFILE/ENFILE */
  uint64_t closed;       /* connections closed */
  uint64_t timeouts;     /* connections closed by a timeout */
  uint64_t bytes_in, bytes_out;
  uint64_t live;         /* connections open now */
  uint64_t read_buffers; /* read buffers allocated now: with pooled reads
                            (io_uring, epoll) those being read into, a few
                            kept free per worker and (io_uring) those lent
                            to the kernel's buffer ring, however many
                            connections are idle; else one per connection */
  int32_t last_accept_error; /* the HY_E* code of the latest accept error
                                counted in accept_errors (hy_err_name says
                                which); 0: none yet */
} hy_server_stats_t;
int hy_server_stats(hy_server_t *s, hy_server_stats_t *out);

/* Queues len bytes for sending.  Returns 0, or HY_EAGAIN when that would
 * take the connection's buffered output past max_output (nothing was
 * queued: wait for on_write_done), HY_ECLOSED, HY_ENOMEM (nothing was
 * queued either), or the error of a send that could not be started (c
 * is closed: on_close follows).  From c's
 * callbacks, or from any thread while the application knows c is open
 * (until its on_close): the send is then started on c's worker. */
int hy_sconn_write(hy_sconn_t *c, const void *data, size_t len);
/* Bytes queued and not yet sent. */
size_t hy_sconn_pending(hy_sconn_t *c);
/* Stops or resumes reading (a paused connection keeps its data in the
 * kernel: TCP's window throttles the peer).  From a callback of c. */
void hy_sconn_pause_read(hy_sconn_t *c, int paused);
/* Closes after the buffered output has been sent (flush != 0) or at once.
 * on_close follows with HY_CLOSE_APP.  From a callback of c. */
void hy_sconn_close(hy_sconn_t *c, int flush);
void hy_sconn_set_user(hy_sconn_t *c, void *user);
void *hy_sconn_user(hy_sconn_t *c);
int hy_sconn_peer_addr(hy_sconn_t *c, hy_addr_t *out);
int hy_sconn_worker(hy_sconn_t *c); /* the owning worker's index */
/* Sets (on != 0) or clears TCP_NODELAY on c, overriding the server's
 * config.nagle for this connection.  From a callback of c.  Returns 0,
 * HY_ECLOSED (c is closing), or the OS's error. */
int hy_sconn_set_nodelay(hy_sconn_t *c, int on);

#ifdef __cplusplus
}
#endif
#endif /* HYDRA_NET_H */
