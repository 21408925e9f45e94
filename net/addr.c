/* addr.c - parsing, formatting and resolving socket addresses.
 *
 * Parsing is numeric only ("1.2.3.4:80", "[::1]:80", "::1"); names go
 * through hy_resolve, which runs getaddrinfo on the runtime's blocking
 * pool.  A resolve with a deadline cannot stop getaddrinfo, so the lookup
 * runs as a detached job holding its own copy of the arguments: the task
 * leaves at the deadline and the job frees itself when getaddrinfo returns.
 */
#include <string.h>

#include "net/internal.h"

int hy_addr_from_ip(const char *ip, int port, hy_addr_t *out) {
  if (!ip || !out)
    return HY_EINVAL;
  int fam = strchr(ip, ':') ? HY_AF_INET6 : HY_AF_INET;
  return hy__addr_from_ip(ip, fam, port, out);
}

static int parse_port(const char *s, int *port) {
  if (!*s)
    return HY_EINVAL;
  long v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return HY_EINVAL;
    v = v * 10 + (*s - '0');
    if (v > 65535)
      return HY_EINVAL;
  }
  *port = (int)v;
  return 0;
}

int hy_addr_parse(const char *s, hy_addr_t *out) {
  if (!s || !out)
    return HY_EINVAL;
  memset(out, 0, sizeof *out);
  char ip[HY_ADDRSTRLEN];
  int port = 0;
  size_t n = strlen(s);
  if (n == 0 || n >= sizeof ip)
    return HY_EINVAL;
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    if (!close || close == s + 1)
      return HY_EINVAL;
    size_t k = (size_t)(close - s - 1);
    memcpy(ip, s + 1, k);
    ip[k] = 0;
    if (close[1] == ':') {
      if (parse_port(close + 2, &port) < 0)
        return HY_EINVAL;
    } else if (close[1] != 0) {
      return HY_EINVAL;
    }
    return hy__addr_from_ip(ip, HY_AF_INET6, port, out);
  }
  const char *colon = strchr(s, ':');
  if (colon && strchr(colon + 1, ':')) /* bare IPv6, no port */
    return hy__addr_from_ip(s, HY_AF_INET6, 0, out);
  if (colon) {
    size_t k = (size_t)(colon - s);
    memcpy(ip, s, k);
    ip[k] = 0;
    if (parse_port(colon + 1, &port) < 0)
      return HY_EINVAL;
    return hy__addr_from_ip(ip, HY_AF_INET, port, out);
  }
  return hy__addr_from_ip(s, HY_AF_INET, 0, out);
}

int hy_addr_format(const hy_addr_t *a, char *buf, size_t cap) {
  if (!buf || cap == 0)
    return HY_ENOBUFS;
  char ip[HY_ADDRSTRLEN];
  int rc = hy__addr_ip(a, ip, sizeof ip);
  if (rc < 0)
    return rc;
  int six = hy__addr_family(a) == HY_AF_INET6;
  int n = snprintf(buf, cap, six ? "[%s]:%d" : "%s:%d", ip, hy__addr_port(a));
  if (n < 0 || (size_t)n >= cap) {
    buf[0] = 0;
    return HY_ENOBUFS;
  }
  return n;
}

int hy_addr_family(const hy_addr_t *a) { return hy__addr_family(a); }
int hy_addr_port(const hy_addr_t *a) { return hy__addr_port(a); }
int hy_addr_set_port(hy_addr_t *a, int port) {
  return a ? hy__addr_set_port(a, port) : HY_EINVAL;
}

int hy_addr_equal(const hy_addr_t *a, const hy_addr_t *b) {
  if (!a || !b || hy__addr_family(a) == HY_AF_UNSPEC ||
      hy__addr_family(a) != hy__addr_family(b) ||
      hy__addr_port(a) != hy__addr_port(b))
    return 0;
  char x[HY_ADDRSTRLEN], y[HY_ADDRSTRLEN];
  if (hy__addr_ip(a, x, sizeof x) < 0 || hy__addr_ip(b, y, sizeof y) < 0)
    return 0;
  return strcmp(x, y) == 0;
}

/* --------------------------------------------------------------- resolve */

#define RESOLVE_MAX 16

typedef struct lookup {
  hy__lock_t lock;
  int refs;            /* the task and the job */
  int done;
  int rc;
  int port, family;
  hy_addr_t addrs[RESOLVE_MAX];
  char host[];
} lookup_t;

static void lookup_unref(lookup_t *k) {
  hy__lock(&k->lock);
  int last = --k->refs == 0;
  hy__unlock(&k->lock);
  if (last)
    hy__mem_free(k);
}

/* The lookup ended with rc (seen by the task once the helper ended), and
 * drops the job's reference. */
static void lookup_finish(lookup_t *k, int rc) {
  hy__lock(&k->lock);
  k->rc = rc;
  k->done = 1;
  hy__unlock(&k->lock);
  lookup_unref(k);
}

/* The lookup, on the blocking pool (called by the helper task; the task
 * that asked joins the helper, with its deadline). */
static void *lookup_run(void *arg) {
  lookup_t *k = arg;
  lookup_finish(k, hy__sock_getaddrinfo(k->host, k->port, k->family,
                                        k->addrs, RESOLVE_MAX));
  return NULL;
}

typedef struct spawn_arg {
  hy_runtime_t *rt;
  lookup_t *k;
} spawn_arg;

int hy_resolve(hy_runtime_t *rt, const char *host, int port, int family,
               hy_addr_t *out, int max) {
  return hy_resolve_until(rt, host, port, family, out, max, HY_FOREVER);
}

static void *resolver_task(void *arg);

int hy_resolve_until(hy_runtime_t *rt, const char *host, int port,
                     int family, hy_addr_t *out, int max,
                     hy_time_t deadline) {
  if (!rt || !host || !out || max <= 0 || port < 0 || port > 65535 ||
      (family != HY_AF_UNSPEC && family != HY_AF_INET &&
       family != HY_AF_INET6))
    return HY_EINVAL;
  /* A numeric address needs no lookup. */
  hy_addr_t a;
  if ((family != HY_AF_INET6 &&
       hy__addr_from_ip(host, HY_AF_INET, port, &a) == 0) ||
      (family != HY_AF_INET &&
       hy__addr_from_ip(host, HY_AF_INET6, port, &a) == 0)) {
    out[0] = a;
    return 1;
  }
  if (!hy__in_task(rt)) {
    int n = hy__sock_getaddrinfo(host, port, family, out, max);
    return n;
  }
  size_t hl = strlen(host);
  if (hl > 1024)
    return HY_EINVAL;
  lookup_t *k = hy__mem_calloc(1, sizeof *k + hl + 1);
  if (!k)
    return HY_ENOMEM;
  memcpy(k->host, host, hl + 1);
  k->port = port;
  k->family = family;
  k->refs = 2;
  /* The job runs in a helper task that calls hy_blocking: that task, not
   * this one, waits for getaddrinfo, so this one can leave at its deadline.
   * This one joins the helper: a helper that never ran (no memory for its
   * stack when it was to start) is seen that way, and not waited for
   * forever. */
  spawn_arg *sa = hy__mem_calloc(1, sizeof *sa);
  if (!sa) {
    hy__mem_free(k);
    return HY_ENOMEM;
  }
  sa->rt = rt;
  sa->k = k;
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.name = "resolve";
  hy_task_t h;
  int rc = hy_task_spawn(rt, resolver_task, sa, &o, &h);
  if (rc < 0) {
    hy__mem_free(sa);
    hy__mem_free(k);
    return rc;
  }
  rc = hy_task_join_until(rt, h, deadline, NULL);
  if (rc == HY_ENOMEM) {
    /* It never ran: its argument and the job's reference are ours. */
    hy__mem_free(sa);
    lookup_unref(k);
    lookup_unref(k);
    return HY_ENOMEM;
  }
  if (rc < 0) {
    /* The deadline passed, or this task was cancelled: the helper finishes
     * in the background (its lookup, too) and lets its resources go. */
    hy_task_detach(rt, h);
    lookup_unref(k);
    return rc == HY_ETIMEDOUT ? HY_ETIMEDOUT : HY_ECANCELED;
  }
  hy__lock(&k->lock);
  int done = k->done;
  rc = k->rc;
  hy__unlock(&k->lock);
  if (!done) {
    /* The helper was cancelled (shutdown) while getaddrinfo still runs on
     * the pool, which ends the lookup and drops the job's reference. */
    lookup_unref(k);
    return HY_ECANCELED;
  }
  int n = 0;
  if (rc > 0) {
    n = rc < max ? rc : max;
    memcpy(out, k->addrs, (size_t)n * sizeof *out);
  }
  lookup_unref(k);
  return rc > 0 ? n : rc;
}

static void *resolver_task(void *arg) {
  spawn_arg *sa = arg;
  hy_runtime_t *rt = sa->rt;
  lookup_t *k = sa->k;
  hy__mem_free(sa);
  /* hy_blocking runs lookup_run exactly once when it returns 0 or
   * HY_ECANCELED (this helper cancelled at shutdown, before or during the
   * call: getaddrinfo still runs to its end on the pool, and lookup_run
   * drops the helper's reference), and never on any other return. */
  int rc = hy_blocking(rt, lookup_run, k, NULL);
  if (rc < 0 && rc != HY_ECANCELED)
    lookup_finish(k, rc); /* never queued: the lookup failed */
  return NULL;
}
