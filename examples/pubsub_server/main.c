/* pubsub_server - Hydra's event model over a line protocol you can type
 * into nc.  The protocol is documented in README.md ("The flagship").
 *
 *   build/release/pubsub_server [--addr 127.0.0.1] [--port 7400]
 *       [--max-conns 64] [--idle-ms 300000] [--grace-ms 500]
 *
 * One task listens; one task per connection waits, with a single select,
 * on its socket, on every receiver it subscribed, on an idle timeout and on
 * the runtime's shutdown ("or terminate").  A supervisor task reads the
 * system broker's sys/signal channel: SIGINT or SIGTERM starts the
 * multi-phase shutdown.  Connection tasks then hand every event still
 * queued for them to their clients before saying BYE: nothing a blocking
 * receiver holds is lost.
 *
 * Limits on by default: connections (--max-conns), line length
 * (MAX_LINE: a longer line closes that connection and nothing else),
 * subscriptions per connection, output (a client that does not read for
 * WRITE_TIMEOUT is disconnected), idle time (--idle-ms).
 */
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hydra.h"

#define MAX_LINE 1024
#define MAX_SUBS 16
#define MAX_PENDING_REQS 32
#define WRITE_TIMEOUT HY_SEC(5)
#define PUB_TIMEOUT HY_SEC(1)
#define REQ_TIMEOUT HY_SEC(5)

typedef struct server {
  hy_runtime_t *rt;
  hy_broker_t *broker;
  hy_listener_t *listener;
  int max_conns;
  int64_t idle_ns;
  int64_t grace_ns;
  atomic_int conns;
  atomic_long accepted, refused, drained, lines;
} server_t;

typedef struct sub {
  hy_receiver_t *rx;
  int id;
  char path[128];
} sub_t;

typedef struct pending_req {
  int id;
  hy_event_t *ev;
} pending_req_t;

typedef struct conn {
  server_t *s;
  hy_conn_t *c;
  char in[MAX_LINE + 1];
  size_t inlen;
  sub_t subs[MAX_SUBS];
  int next_sub, next_req;
  pending_req_t reqs[MAX_PENDING_REQS];
  int closing;
} conn_t;

/* -------------------------------------------------------------- output */

static int say(conn_t *k, const char *fmt, ...) {
  char buf[MAX_LINE + 256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0)
    return n;
  if ((size_t)n > sizeof buf - 2)
    n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  int rc = hy_conn_write_all_until(k->c, buf, (size_t)n, NULL,
                                   hy_deadline_in(WRITE_TIMEOUT));
  if (rc < 0)
    k->closing = 1; /* gone, or not reading: its output bound is spent */
  return rc;
}

static void deliver(conn_t *k, sub_t *sb, hy_event_t *ev) {
  size_t len;
  const char *text = hy_event_data(ev, &len);
  if (hy_event_type_of(ev) != &hy_event_text) {
    text = "(binary)";
    len = 8;
  }
  if (hy_event_expired(ev, hy_now())) {
    hy_event_unref(ev);
    return; /* expired while it waited in the queue */
  }
  if (hy_event_reply_to(ev)) {
    /* A request: keep it until the client answers REPLY <id>. */
    pending_req_t *slot = &k->reqs[k->next_req % MAX_PENDING_REQS];
    if (slot->ev)
      hy_event_unref(slot->ev); /* the oldest unanswered one gives way */
    slot->id = ++k->next_req;
    slot->ev = ev;
    say(k, "REQUEST %d %d %.*s", sb->id, slot->id, (int)len, text);
    return;
  }
  say(k, "EVENT %d %.*s", sb->id, (int)len, text);
  hy_event_unref(ev);
}

/* ------------------------------------------------------------- commands */

/* SUB and PUB create a channel that does not exist yet as a broadcast one
 * (with its missing ancestors), as MQTT-style servers do; CREATE is for
 * channels with a picking limit. */
static void ensure_channel(server_t *s, const char *path) {
  hy_channel_info_t info;
  memset(&info, 0, sizeof info);
  info.size = sizeof info;
  if (hy_channel_info(s->broker, path, &info) == HY_ENOENT)
    hy_channel_create(s->broker, path, 0); /* HY_EEXIST if another won */
}

static sub_t *find_sub(conn_t *k, int id) {
  for (int i = 0; i < MAX_SUBS; i++)
    if (k->subs[i].rx && k->subs[i].id == id)
      return &k->subs[i];
  return NULL;
}

static void list_cb(void *arg, const char *path, int kind) {
  conn_t *k = arg;
  hy_channel_info_t info;
  memset(&info, 0, sizeof info);
  info.size = sizeof info;
  if (kind == HY_CHANNEL_PLAIN && hy_channel_info(k->s->broker, path, &info) == 0)
    say(k, "CHANNEL %s limit=%u receivers=%u", path, (unsigned)info.limit,
        (unsigned)info.receivers);
  else
    say(k, "CHANNEL %s", path);
}

/* Splits off the next space-separated word of *p. */
static char *word(char **p) {
  char *s = *p;
  while (*s == ' ')
    s++;
  if (!*s)
    return NULL;
  char *e = s;
  while (*e && *e != ' ')
    e++;
  if (*e)
    *e++ = 0;
  *p = e;
  return s;
}

static int number(const char *s, long long *out) {
  if (!s || !*s)
    return 0;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (*end)
    return 0;
  *out = v;
  return 1;
}

static void cmd_publish(conn_t *k, char *rest) {
  char *path = word(&rest);
  if (!path) {
    say(k, "ERR usage: PUB <channel> [ttl=<ms>] <text>");
    return;
  }
  hy_time_t expiry = HY_FOREVER;
  while (*rest == ' ')
    rest++;
  if (strncmp(rest, "ttl=", 4) == 0) {
    char *t = word(&rest);
    long long ms;
    if (!number(t + 4, &ms) || ms < 0) {
      say(k, "ERR bad ttl");
      return;
    }
    expiry = hy_deadline_in(HY_MS(ms));
    while (*rest == ' ')
      rest++;
  }
  ensure_channel(k->s, path);
  hy_event_t *ev;
  int rc = hy_event_new(&hy_event_text, rest, strlen(rest), expiry, &ev);
  if (rc == 0) {
    rc = hy_send_to(k->s->broker, path, ev, hy_deadline_in(PUB_TIMEOUT));
    hy_event_unref(ev);
  }
  if (rc >= 0)
    say(k, "OK %d", rc); /* how many receivers it was handed to */
  else
    say(k, "ERR %s", hy_strerror(rc));
}

static void cmd_request(conn_t *k, char *rest) {
  char *path = word(&rest);
  if (!path) {
    say(k, "ERR usage: REQ <channel> <text>");
    return;
  }
  while (*rest == ' ')
    rest++;
  hy_event_t *req, *reply;
  int rc = hy_event_new(&hy_event_text, rest, strlen(rest), HY_FOREVER, &req);
  if (rc == 0) {
    rc = hy_request(k->s->broker, path, req, hy_deadline_in(REQ_TIMEOUT), &reply);
    hy_event_unref(req);
  }
  if (rc < 0) {
    say(k, "ERR %s", hy_strerror(rc));
    return;
  }
  size_t len;
  const char *text = hy_event_data(reply, &len);
  say(k, "REPLY %.*s", (int)len, text);
  hy_event_unref(reply);
}

static void cmd_reply(conn_t *k, char *rest) {
  long long id;
  if (!number(word(&rest), &id)) {
    say(k, "ERR usage: REPLY <request id> <text>");
    return;
  }
  while (*rest == ' ')
    rest++;
  for (int i = 0; i < MAX_PENDING_REQS; i++) {
    pending_req_t *r = &k->reqs[i];
    if (r->ev && r->id == id) {
      hy_event_t *ev;
      int rc = hy_event_new(&hy_event_text, rest, strlen(rest), HY_FOREVER, &ev);
      if (rc == 0) {
        rc = hy_reply(k->s->broker, r->ev, ev, hy_deadline_in(PUB_TIMEOUT));
        hy_event_unref(ev);
      }
      hy_event_unref(r->ev);
      r->ev = NULL;
      if (rc >= 0)
        say(k, "OK");
      else
        say(k, "ERR %s", hy_strerror(rc));
      return;
    }
  }
  say(k, "ERR no such request");
}

/* Hands the client what is still queued for it (at QUIT and at shutdown);
 * returns how many events that was. */
static long drain(conn_t *k) {
  long n = 0;
  for (int i = 0; i < MAX_SUBS; i++) {
    hy_event_t *ev;
    while (k->subs[i].rx && !k->closing &&
           hy_receiver_try_read(k->subs[i].rx, &ev) == 0) {
      deliver(k, &k->subs[i], ev);
      n++;
    }
  }
  return n;
}

static void command(conn_t *k, char *line) {
  atomic_fetch_add(&k->s->lines, 1);
  char *rest = line;
  char *verb = word(&rest);
  if (!verb)
    return; /* empty line */
  if (strcmp(verb, "CREATE") == 0) {
    char *path = word(&rest);
    long long limit = 0;
    char *l = word(&rest);
    if (!path || (l && (!number(l, &limit) || limit < 0 || limit > 1000))) {
      say(k, "ERR usage: CREATE <channel> [limit: 0 broadcast, 1 unicast, N]");
      return;
    }
    int rc = hy_channel_create(k->s->broker, path, (int)limit);
    /* Typed by hand, sends are slow: alternate at every one of them. */
    if (rc == 0 && limit > 0)
      rc = hy_channel_set_pick_run(k->s->broker, path, 1);
    rc < 0 ? say(k, "ERR %s", hy_strerror(rc)) : say(k, "OK");
  } else if (strcmp(verb, "SUB") == 0) {
    char *path = word(&rest);
    long long prio = 0;
    char *p = word(&rest);
    if (!path || (p && !number(p, &prio))) {
      say(k, "ERR usage: SUB <channel> [priority]");
      return;
    }
    sub_t *sb = NULL;
    for (int i = 0; i < MAX_SUBS && !sb; i++)
      if (!k->subs[i].rx)
        sb = &k->subs[i];
    if (!sb) {
      say(k, "ERR too many subscriptions (at most %d)", MAX_SUBS);
      return;
    }
    hy_recv_opts_t o = HY_RECV_OPTS_INIT;
    o.capacity = 256;
    o.priority = prio;
    ensure_channel(k->s, path);
    int rc = hy_subscribe(k->s->broker, path, &o, &sb->rx);
    if (rc < 0) {
      sb->rx = NULL;
      say(k, "ERR %s", hy_strerror(rc));
      return;
    }
    sb->id = ++k->next_sub;
    snprintf(sb->path, sizeof sb->path, "%s", path);
    say(k, "OK %d", sb->id);
  } else if (strcmp(verb, "UNSUB") == 0 || strcmp(verb, "PRIO") == 0) {
    long long id, prio = 0;
    sub_t *sb = number(word(&rest), &id) ? find_sub(k, (int)id) : NULL;
    if (!sb) {
      say(k, "ERR no such subscription");
      return;
    }
    if (verb[0] == 'U') {
      hy_unsubscribe(sb->rx);
      sb->rx = NULL;
      say(k, "OK");
    } else if (!number(word(&rest), &prio)) {
      say(k, "ERR usage: PRIO <subscription> <priority>");
    } else {
      hy_receiver_set_priority(sb->rx, prio);
      say(k, "OK");
    }
  } else if (strcmp(verb, "PUB") == 0) {
    cmd_publish(k, rest);
  } else if (strcmp(verb, "REQ") == 0) {
    cmd_request(k, rest);
  } else if (strcmp(verb, "REPLY") == 0) {
    cmd_reply(k, rest);
  } else if (strcmp(verb, "LIST") == 0) {
    hy_broker_list(k->s->broker, list_cb, k);
    say(k, "END");
  } else if (strcmp(verb, "HELP") == 0) {
    say(k, "CREATE <ch> [limit] | SUB <ch> [prio] | UNSUB <id> | PRIO <id> "
           "<prio> | PUB <ch> [ttl=<ms>] <text> | REQ <ch> <text> | "
           "REPLY <id> <text> | LIST | QUIT");
  } else if (strcmp(verb, "QUIT") == 0) {
    drain(k);
    say(k, "BYE");
    k->closing = 1;
  } else {
    say(k, "ERR unknown command %.32s (try HELP)", verb);
  }
}

/* Splits the input into lines and runs them.  Returns 0, or -1 when a line
 * is longer than MAX_LINE (the connection is closed then). */
static int take_lines(conn_t *k) {
  for (;;) {
    char *nl = memchr(k->in, '\n', k->inlen);
    if (!nl) {
      if (k->inlen >= MAX_LINE) {
        say(k, "ERR line too long (at most %d bytes); closing", MAX_LINE);
        return -1;
      }
      return 0;
    }
    *nl = 0;
    if (nl > k->in && nl[-1] == '\r')
      nl[-1] = 0;
    command(k, k->in);
    size_t used = (size_t)(nl + 1 - k->in);
    memmove(k->in, nl + 1, k->inlen - used);
    k->inlen -= used;
    if (k->closing)
      return 0;
  }
}

/* ---------------------------------------------------------- connections */

static void *conn_main(void *arg) {
  conn_t *k = arg;
  server_t *s = k->s;
  say(k, "HELLO hydra pubsub (HELP for commands)");
  hy_arm_t arms[3 + MAX_SUBS];
  hy_event_t *got[MAX_SUBS];
  int shutting_down = 0;
  /* Ada allows one of "or delay" and "or terminate" in a select; the idle
   * time-out is the delay, and the shutdown is watched through the
   * runtime's sys/shutdown hub, which is set when the shutdown begins. */
  hy_hub_consumer_t *stop = NULL;
  if (hy_hub_connect_name(s->rt, "sys/shutdown", &stop) < 0)
    k->closing = 1;
  while (!k->closing) {
    int n = 0;
    arms[n++] = hy_arm_conn_readable(k->c);
    arms[n++] = hy_arm_hub(stop);
    arms[n++] = hy_arm_timeout(s->idle_ns);
    for (int i = 0; i < MAX_SUBS; i++) {
      got[i] = NULL;
      arms[n] = hy_arm_receiver(k->subs[i].rx, &got[i]);
      arms[n].guard = k->subs[i].rx != NULL; /* Ada's "when" */
      n++;
    }
    int i = hy_select(s->rt, arms, n);
    if (i < 0) { /* cancelled: the shutdown's last phase */
      shutting_down = 1;
      break;
    }
    if (i == 0) {
      int r = hy_conn_read_until(k->c, k->in + k->inlen, MAX_LINE - k->inlen,
                                 hy_deadline_in(HY_SEC(1)));
      if (r <= 0)
        break; /* end of stream, reset, error */
      k->inlen += (size_t)r;
      if (take_lines(k) < 0) {
        /* Say why, let the client read it, discard the rest of the line. */
        hy_conn_shutdown_write(k->c);
        hy_time_t until = hy_deadline_in(HY_MS(200));
        while (hy_conn_read_until(k->c, k->in, sizeof k->in, until) > 0) {
        }
        break;
      }
    } else if (i == 1) {
      shutting_down = 1;
      break;
    } else if (i == 2) {
      say(k, "BYE idle for %lld ms", (long long)(s->idle_ns / HY_MS(1)));
      break;
    } else if (arms[i].result == 0) {
      deliver(k, &k->subs[i - 3], got[i - 3]);
    } else { /* the channel went away */
      sub_t *sb = &k->subs[i - 3];
      say(k, "GONE %d %s", sb->id, sb->path);
      hy_unsubscribe(sb->rx);
      sb->rx = NULL;
    }
  }
  if (shutting_down && !k->closing) {
    atomic_fetch_add(&s->drained, drain(k));
    say(k, "BYE server shutting down");
  }
  for (int i = 0; i < MAX_SUBS; i++)
    if (k->subs[i].rx)
      hy_unsubscribe(k->subs[i].rx);
  for (int i = 0; i < MAX_PENDING_REQS; i++)
    hy_event_unref(k->reqs[i].ev);
  if (stop)
    hy_hub_disconnect(stop);
  hy_conn_close(k->c);
  atomic_fetch_sub(&s->conns, 1);
  free(k);
  return NULL;
}

static void *listen_main(void *arg) {
  server_t *s = arg;
  for (;;) {
    hy_arm_t arms[2] = {hy_arm_listener_ready(s->listener),
                        hy_arm_terminate(s->rt)};
    int i = hy_select(s->rt, arms, 2);
    if (i != 0)
      break; /* shutting down */
    hy_conn_t *c;
    int rc = hy_tcp_accept_until(s->listener, hy_deadline_in(HY_MS(100)), &c);
    if (rc < 0)
      continue; /* another took it, or EMFILE: try again later */
    atomic_fetch_add(&s->accepted, 1);
    conn_t *k = calloc(1, sizeof *k);
    if (!k || atomic_fetch_add(&s->conns, 1) >= s->max_conns) {
      if (k)
        atomic_fetch_sub(&s->conns, 1);
      atomic_fetch_add(&s->refused, 1);
      hy_conn_write_all_until(c, "ERR server full\n", 16, NULL,
                              hy_deadline_in(HY_MS(100)));
      hy_conn_close(c);
      free(k);
      continue;
    }
    k->s = s;
    k->c = c;
    hy_task_opts_t o = HY_TASK_OPTS_INIT;
    o.name = "pubsub-conn";
    hy_task_t t;
    if (hy_task_spawn(s->rt, conn_main, k, &o, &t) < 0) {
      atomic_fetch_sub(&s->conns, 1);
      hy_conn_close(c);
      free(k);
      continue;
    }
    hy_task_detach(s->rt, t);
  }
  hy_listener_close(s->listener);
  return NULL;
}

/* ----------------------------------------------------------- supervisor */

static void *supervisor_main(void *arg) {
  server_t *s = arg;
  hy_receiver_t *sig;
  if (hy_subscribe(hy_sys_broker(s->rt), "sys/signal", NULL, &sig) < 0)
    return (void *)1;
  for (;;) {
    hy_event_t *ev;
    hy_arm_t arms[2] = {hy_arm_receiver(sig, &ev), hy_arm_terminate(s->rt)};
    int i = hy_select(s->rt, arms, 2);
    if (i != 0 || arms[0].result != 0)
      break;
    const hy_signal_event_t *se = hy_event_data(ev, NULL);
    int signo = se ? se->signo : 0;
    hy_event_unref(ev);
    if (signo == SIGINT || signo == SIGTERM) {
      printf("supervisor: %s: shutting down\n", hy_signal_name(signo));
      fflush(stdout);
      hy_runtime_shutdown(s->rt, s->grace_ns); /* from a task: returns */
      break;
    }
  }
  hy_unsubscribe(sig);
  return NULL;
}

static void on_phase(void *arg, int phase, int worker) {
  server_t *s = arg;
  if (worker != 0)
    return; /* one line per phase, not one per worker */
  printf("shutdown: %-8s connections %d, events handed over %ld\n",
         hy_phase_name(phase), atomic_load(&s->conns), atomic_load(&s->drained));
  fflush(stdout);
}

/* ------------------------------------------------------------------ main */

static int usage(void) {
  fprintf(stderr, "usage: pubsub_server [--addr IP] [--port N] [--max-conns N]"
                  " [--idle-ms N] [--grace-ms N]\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *ip = "127.0.0.1";
  long long port = 7400, max_conns = 64, idle_ms = 300000, grace_ms = 500;
  for (int i = 1; i < argc; i++) {
    long long *v = NULL;
    if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc) {
      ip = argv[++i];
      continue;
    }
    if (strcmp(argv[i], "--port") == 0) v = &port;
    else if (strcmp(argv[i], "--max-conns") == 0) v = &max_conns;
    else if (strcmp(argv[i], "--idle-ms") == 0) v = &idle_ms;
    else if (strcmp(argv[i], "--grace-ms") == 0) v = &grace_ms;
    if (!v || i + 1 >= argc || !number(argv[++i], v) || *v < 0)
      return usage();
  }
  if (port > 65535 || max_conns < 1)
    return usage();
  server_t s;
  memset(&s, 0, sizeof s);
  s.max_conns = (int)max_conns;
  s.idle_ns = HY_MS(idle_ms);
  s.grace_ns = HY_MS(grace_ms);
  int rc = hy_runtime_new(NULL, &s.rt);
  if (rc < 0) {
    fprintf(stderr, "pubsub_server: %s\n", hy_strerror(rc));
    return 1;
  }
  /* Catch SIGINT and SIGTERM; each then shows on sys/signal. */
  int sigs[] = {SIGINT, SIGTERM};
  hy_sigrecv_t *catcher;
  hy_addr_t addr;
  if ((rc = hy_signal_subscribe(s.rt, sigs, 2, &catcher)) < 0 ||
      (rc = hy_addr_from_ip(ip, (int)port, &addr)) < 0 ||
      (rc = hy_broker_new(s.rt, "pubsub", &s.broker)) < 0 ||
      (rc = hy_tcp_listen(s.rt, &addr, NULL, &s.listener)) < 0) {
    fprintf(stderr, "pubsub_server: %s:%lld: %s\n", ip, port, hy_strerror(rc));
    return 1;
  }
  hy_addr_t bound;
  char name[HY_ADDRSTRLEN];
  hy_listener_addr(s.listener, &bound);
  hy_addr_format(&bound, name, sizeof name);
  hy_runtime_on_phase(s.rt, on_phase, &s);
  hy_task_t lt, st;
  hy_task_spawn(s.rt, listen_main, &s, NULL, &lt);
  hy_task_spawn(s.rt, supervisor_main, &s, NULL, &st);
  printf("pubsub_server: listening on %s (%d workers, %s backend); "
         "try: nc %s %d\n", name, hy_runtime_workers(s.rt),
         hy_runtime_backend_name(s.rt), ip, hy_addr_port(&bound));
  fflush(stdout);
  /* The main thread waits for the supervisor; the workers do the rest. */
  hy_task_join(s.rt, st, NULL);
  hy_runtime_shutdown(s.rt, s.grace_ns); /* waits for the phases to end */
  hy_task_join(s.rt, lt, NULL);
  hy_shutdown_summary_t sum = {.size = sizeof sum};
  hy_runtime_shutdown_summary(s.rt, &sum);
  printf("pubsub_server: done; %ld connections served, %ld refused, %ld "
         "lines, %ld queued events handed over at shutdown; tasks finished "
         "%llu, cancelled %llu\n", atomic_load(&s.accepted),
         atomic_load(&s.refused), atomic_load(&s.lines),
         atomic_load(&s.drained), (unsigned long long)sum.tasks_finished,
         (unsigned long long)sum.tasks_cancelled);
  hy_signal_unsubscribe(catcher);
  hy_broker_free(s.broker);
  hy_runtime_close(s.rt);
  return 0;
}
