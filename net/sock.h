/* net/sock.h - the socket calls the net layer needs from the OS, one
 * implementation per platform (runtime/linux/sock.c, runtime/win/sock.c).  Everything here is synchronous and returns 0 / a value >= 0,
 * or a negative HY_E* code; *os (when not NULL) gets the OS's own error
 * number on failure.  Operations that wait go through the completion port
 * (runtime/port.h), never through these.
 */
#ifndef HYDRA_NET_SOCK_H
#define HYDRA_NET_SOCK_H

#include <stdint.h>

#include "hydra/net.h"

#define HY__BAD_SOCK ((intptr_t)-1)

enum { HY__SOCK_STREAM = 1, HY__SOCK_DGRAM = 2 };

/* A non-blocking, close-on-exec socket of addr's family. */
intptr_t hy__sock_open(int family, int type, int *err, int *os);
void hy__fd_close(intptr_t fd);
/* Closes with a reset (SO_LINGER 0) on a stream socket. */
void hy__fd_close_reset(intptr_t fd);

int hy__sock_bind(intptr_t fd, const hy_addr_t *a, int *os);
int hy__sock_listen(intptr_t fd, int backlog, int *os);
/* Connects a datagram socket (immediate). */
int hy__sock_connect_now(intptr_t fd, const hy_addr_t *a, int *os);
int hy__sock_local(intptr_t fd, hy_addr_t *out);
int hy__sock_peer(intptr_t fd, hy_addr_t *out);
int hy__sock_shutdown_write(intptr_t fd, int *os);

/* Options: names below, values int. */
enum {
  HY__OPT_REUSEADDR = 1,
  HY__OPT_REUSEPORT,
  HY__OPT_V6ONLY,
  HY__OPT_NODELAY,
  HY__OPT_KEEPALIVE,
  HY__OPT_KEEPIDLE,
  HY__OPT_RCVBUF,
  HY__OPT_SNDBUF
};
int hy__sock_set(intptr_t fd, int opt, int value, int *os);
int hy__sock_get(intptr_t fd, int opt, int *value);
/* 1 if a socket accepted from a listener starts with the listener's value
 * of opt, so setting it once on the listener sets it on every connection
 * (Linux copies TCP_NODELAY); 0 if it must be set on each one. */
int hy__sock_inherited(int opt);

/* 1 if fd has data, end of stream or an error to report to a reader now,
 * 0 if not (a poll with no wait). */
int hy__sock_readable(intptr_t fd);

/* The flag that makes a datagram receive report the full length of a
 * datagram that was truncated (MSG_TRUNC), and the no-SIGPIPE flag for
 * sends on stream sockets (MSG_NOSIGNAL; 0 where the OS has none). */
uint32_t hy__sock_flag_trunc(void);
uint32_t hy__sock_flag_nosignal(void);

/* getaddrinfo: numeric or named host, port; fills up to max addresses.
 * Returns the count, HY_ENOENT, HY_ENOMEM, HY_EAGAIN (try later)
 * (net/sockaddr.c). */
int hy__sock_getaddrinfo(const char *host, int port, int family,
                         hy_addr_t *out, int max);

/* A reference on the OS's socket library around calls that may come
 * before any port exists (name lookups, address conversion): 0 or
 * HY_ENOSYS; release only after a hold that returned 0.  (Winsock's
 * WSAStartup/WSACleanup; nothing on POSIX.)  An IPv6 scope's interface
 * name to its index: 0, or HY_EINVAL (no such interface; Windows: names
 * are not looked up, only numeric scopes work). */
int hy__sock_lib_hold(void);
void hy__sock_lib_release(void);
int hy__sock_scope_by_name(const char *name, uint32_t *index);

/* Address helpers on the OS's sockaddr layout (net/sockaddr.c). */
int hy__addr_family(const hy_addr_t *a);
int hy__addr_port(const hy_addr_t *a);
int hy__addr_set_port(hy_addr_t *a, int port);
/* Parses a numeric IP of the given family (4 or 6) into a. */
int hy__addr_from_ip(const char *ip, int family, int port, hy_addr_t *a);
/* Writes the numeric IP (no port, no brackets). */
int hy__addr_ip(const hy_addr_t *a, char *buf, size_t cap);

#endif
