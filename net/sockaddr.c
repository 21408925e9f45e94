/* sockaddr.c - hy_addr_t on the OS's sockaddr layout (sockaddr_in and
 * sockaddr_in6 are laid out alike on POSIX and Winsock), its text forms and
 * name lookups (getaddrinfo).  What differs is the backend's, in sock.c:
 * holding the socket library around the calls and a scope's interface
 * name (hy__sock_lib_hold/release, hy__sock_scope_by_name). */
#ifndef _WIN32
#define _GNU_SOURCE /* getaddrinfo and its flags */
#endif
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
typedef ADDRESS_FAMILY hy__family_t;
#else
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
typedef sa_family_t hy__family_t;
#endif
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hydra/error.h"
#include "net/sock.h"

_Static_assert(sizeof(struct sockaddr_in6) <= sizeof(((hy_addr_t *)0)->sa.raw),
               "hy_addr_t holds a sockaddr_in6");

/* Network byte order by hand: no OS call, no Winsock needed. */
static uint16_t be16(uint16_t v) { return (uint16_t)((v >> 8) | (v << 8)); }
static int little_endian(void) {
  const uint16_t one = 1;
  return *(const uint8_t *)&one == 1;
}
static uint16_t net16(uint16_t v) { return little_endian() ? be16(v) : v; }

int hy__addr_family(const hy_addr_t *a) {
  if (!a || a->len < sizeof(hy__family_t))
    return HY_AF_UNSPEC;
  hy__family_t f;
  memcpy(&f, a->sa.raw, sizeof f);
  if (f == AF_INET && a->len >= sizeof(struct sockaddr_in))
    return HY_AF_INET;
  if (f == AF_INET6 && a->len >= sizeof(struct sockaddr_in6))
    return HY_AF_INET6;
  return HY_AF_UNSPEC;
}

/* Where the port sits in a's sockaddr, or -1. */
static ptrdiff_t port_at(const hy_addr_t *a) {
  switch (hy__addr_family(a)) {
  case HY_AF_INET:
    return (ptrdiff_t)offsetof(struct sockaddr_in, sin_port);
  case HY_AF_INET6:
    return (ptrdiff_t)offsetof(struct sockaddr_in6, sin6_port);
  default:
    return -1;
  }
}

int hy__addr_port(const hy_addr_t *a) {
  ptrdiff_t at = port_at(a);
  if (at < 0)
    return -1;
  uint16_t p;
  memcpy(&p, a->sa.raw + at, 2);
  return net16(p);
}

int hy__addr_set_port(hy_addr_t *a, int port) {
  ptrdiff_t at = port < 0 || port > 65535 ? -1 : port_at(a);
  if (at < 0)
    return HY_EINVAL;
  uint16_t p = net16((uint16_t)port);
  memcpy(a->sa.raw + at, &p, 2);
  return 0;
}

/* inet_pton/inet_ntop, the library held around them: 0 or HY_EINVAL. */
static int pton(int af, const char *ip, void *dst) {
  if (hy__sock_lib_hold() < 0)
    return HY_EINVAL;
  int ok = inet_pton(af, ip, dst) == 1;
  hy__sock_lib_release();
  return ok ? 0 : HY_EINVAL;
}

static int ntop(int af, const void *src, char *buf, size_t cap) {
  if (hy__sock_lib_hold() < 0)
    return HY_EINVAL;
  int ok = inet_ntop(af, src, buf, (socklen_t)cap) != NULL;
  hy__sock_lib_release();
  return ok ? 0 : HY_EINVAL;
}

/* "fe80::1%eth0" or "%2": splits the scope off into tmp and *scope. */
static int split_scope(const char **ip, char *tmp, size_t cap,
                       uint32_t *scope) {
  const char *pct = strchr(*ip, '%');
  *scope = 0;
  if (!pct)
    return 0;
  size_t n = (size_t)(pct - *ip);
  if (n >= cap)
    return HY_EINVAL;
  memcpy(tmp, *ip, n);
  tmp[n] = 0;
  char *end;
  unsigned long id = strtoul(pct + 1, &end, 10);
  if (*end || end == pct + 1 || id > 0xffffffffu) {
    int rc = hy__sock_scope_by_name(pct + 1, scope);
    if (rc < 0)
      return rc;
  } else {
    *scope = (uint32_t)id;
  }
  *ip = tmp;
  return 0;
}

int hy__addr_from_ip(const char *ip, int family, int port, hy_addr_t *a) {
  memset(a, 0, sizeof *a);
  if (port < 0 || port > 65535)
    return HY_EINVAL;
  if (family == HY_AF_INET) {
    struct sockaddr_in s;
    memset(&s, 0, sizeof s);
    s.sin_family = AF_INET;
    s.sin_port = net16((uint16_t)port);
    if (pton(AF_INET, ip, &s.sin_addr) < 0)
      return HY_EINVAL;
    memcpy(a->sa.raw, &s, sizeof s);
    a->len = sizeof s;
    return 0;
  }
  if (family == HY_AF_INET6) {
    struct sockaddr_in6 s;
    memset(&s, 0, sizeof s);
    s.sin6_family = AF_INET6;
    s.sin6_port = net16((uint16_t)port);
    char tmp[64];
    uint32_t scope;
    if (split_scope(&ip, tmp, sizeof tmp, &scope) < 0 ||
        pton(AF_INET6, ip, &s.sin6_addr) < 0)
      return HY_EINVAL;
    s.sin6_scope_id = scope;
    memcpy(a->sa.raw, &s, sizeof s);
    a->len = sizeof s;
    return 0;
  }
  return HY_EINVAL;
}

int hy__addr_ip(const hy_addr_t *a, char *buf, size_t cap) {
  char tmp[INET6_ADDRSTRLEN + 16];
  switch (hy__addr_family(a)) {
  case HY_AF_INET: {
    struct sockaddr_in s;
    memcpy(&s, a->sa.raw, sizeof s);
    if (ntop(AF_INET, &s.sin_addr, tmp, sizeof tmp) < 0)
      return HY_EINVAL;
    break;
  }
  case HY_AF_INET6: {
    struct sockaddr_in6 s;
    memcpy(&s, a->sa.raw, sizeof s);
    if (ntop(AF_INET6, &s.sin6_addr, tmp, sizeof tmp) < 0)
      return HY_EINVAL;
    if (s.sin6_scope_id) {
      size_t n = strlen(tmp);
      snprintf(tmp + n, sizeof tmp - n, "%%%lu",
               (unsigned long)s.sin6_scope_id);
    }
    break;
  }
  default:
    return HY_EINVAL;
  }
  size_t n = strlen(tmp);
  if (n + 1 > cap)
    return HY_ENOBUFS;
  memcpy(buf, tmp, n + 1);
  return (int)n;
}

/* ---------------------------------------------------------- name lookup */

static int eai_error(int rc) {
  switch (rc) {
  case EAI_MEMORY: return HY_ENOMEM;
  case EAI_AGAIN: return HY_EAGAIN;
#ifdef EAI_SYSTEM
  case EAI_SYSTEM: return hy_translate_errno(errno);
#endif
  default: return HY_ENOENT;
  }
}

int hy__sock_getaddrinfo(const char *host, int port, int family,
                         hy_addr_t *out, int max) {
  int rc = hy__sock_lib_hold();
  if (rc < 0)
    return rc;
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = family == HY_AF_INET    ? AF_INET
                    : family == HY_AF_INET6 ? AF_INET6
                                            : AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  char serv[16];
  snprintf(serv, sizeof serv, "%d", port);
  rc = getaddrinfo(host, serv, &hints, &res);
  if (rc != 0) {
    rc = eai_error(rc);
    hy__sock_lib_release();
    return rc;
  }
  int n = 0;
  for (struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof out[n].sa.raw ||
        (ai->ai_family != AF_INET && ai->ai_family != AF_INET6))
      continue;
    memset(&out[n], 0, sizeof out[n]);
    memcpy(out[n].sa.raw, ai->ai_addr, ai->ai_addrlen);
    out[n].len = (uint32_t)ai->ai_addrlen;
    n++;
  }
  freeaddrinfo(res);
  hy__sock_lib_release();
  return n ? n : HY_ENOENT;
}
