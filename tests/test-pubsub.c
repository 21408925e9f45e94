/* test-pubsub.c - the flagship example, examples/pubsub_server, driven the
 * way its README section says: real clients on loopback, then SIGINT. */
#ifndef _WIN32
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hydra.h"
#include "test.h"

extern char **environ;

typedef struct client {
  int fd;
  char buf[8192];
  size_t len;
} client_t;

/* The next line within ms, without its newline; "" on time-out, "<EOF>" at
 * the end of the stream. */
static const char *next_line(client_t *c, char *out, size_t cap, int ms) {
  for (;;) {
    char *nl = memchr(c->buf, '\n', c->len);
    if (nl) {
      size_t n = (size_t)(nl - c->buf);
      snprintf(out, cap, "%.*s", (int)n, c->buf);
      memmove(c->buf, nl + 1, c->len - n - 1);
      c->len -= n + 1;
      return out;
    }
    struct pollfd p = {c->fd, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) {
      out[0] = 0;
      return out;
    }
    ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len - 1);
    if (r <= 0) {
      snprintf(out, cap, "<EOF>");
      return out;
    }
    c->len += (size_t)r;
  }
}

static void expect(client_t *c, const char *want) {
  char line[2048];
  next_line(c, line, sizeof line, 10000);
  if (strncmp(line, want, strlen(want)) != 0)
    TEST_FAIL_("expected a line starting \"%s\", got \"%s\"", want, line);
}

static void send_line(client_t *c, const char *line) {
  size_t n = strlen(line);
  ASSERT_EQ(send(c->fd, line, n, MSG_NOSIGNAL), (ssize_t)n);
  ASSERT_EQ(send(c->fd, "\n", 1, MSG_NOSIGNAL), 1);
}

static void cmd(client_t *c, const char *line, const char *want) {
  send_line(c, line);
  expect(c, want);
}

static void connect_to(client_t *c, int port) {
  memset(c, 0, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT(c->fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
}

/* Starts the server on a free port with the given limits; returns the
 * port, with its pid and a reader of its output. */
static int start_server(const char *max_conns, const char *idle_ms,
                        pid_t *pid, client_t *srv) {
  char exe[1024], path[1100];
  snprintf(exe, sizeof exe, "%s", test_exe());
  snprintf(path, sizeof path, "%s/pubsub_server", dirname(exe));
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  char *argv[] = {path, "--port", "0", "--max-conns", (char *)max_conns,
                  "--idle-ms", (char *)idle_ms, "--grace-ms", "200", NULL};
  ASSERT_EQ(posix_spawn(pid, path, &fa, NULL, argv, environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  memset(srv, 0, sizeof *srv);
  srv->fd = out[0];
  char line[2048];
  next_line(srv, line, sizeof line, 10000);
  fprintf(stderr, "server: %s\n", line);
  char *at = strstr(line, "127.0.0.1:");
  ASSERT(at != NULL);
  int port = atoi(at + 10);
  ASSERT_GT(port, 0);
  return port;
}

/* An idle connection is closed after --idle-ms, not before; a connection
 * that talks is not.  The talker speaks every 100 ms until the idle one
 * is closed: a gap of up to 900 ms (a loaded machine) still keeps it. */
TEST_IMPL(example_pubsub_server_idle) {
  pid_t pid;
  client_t srv, a, b;
  char line[2048];
  int port = start_server("8", "1000", &pid, &srv);
  int64_t t0 = hy_now();
  connect_to(&a, port);
  expect(&a, "HELLO");
  connect_to(&b, port);
  expect(&b, "HELLO");
  cmd(&b, "SUB keepalive", "OK 1");
  for (;;) {
    next_line(&a, line, sizeof line, 100);
    if (*line)
      break;
    ASSERT_LT(hy_now() - t0, HY_SEC(20));
    cmd(&b, "BOGUS", "ERR"); /* any line counts as talking */
  }
  if (strcmp(line, "BYE idle for 1000 ms") != 0)
    TEST_FAIL_("expected the idle close, got \"%s\"", line);
  ASSERT_GE(hy_now() - t0, HY_MS(1000));
  expect(&a, "<EOF>");
  cmd(&b, "PUB keepalive x", "OK 1");
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  close(a.fd);
  close(b.fd);
  close(srv.fd);
  return 0;
}

TEST_IMPL(example_pubsub_server) {
  pid_t pid;
  client_t srv;
  char line[2048];
  int port = start_server("4", "60000", &pid, &srv);

  client_t a, b, c, e, f;
  connect_to(&a, port);
  expect(&a, "HELLO");
  connect_to(&b, port);
  expect(&b, "HELLO");
  connect_to(&c, port);
  expect(&c, "HELLO");

  /* Hierarchy: a receiver on app sees what is sent to app/orders/eu. */
  cmd(&a, "SUB app", "OK 1");
  cmd(&b, "PUB app/orders/eu hello world", "OK 1");
  expect(&a, "EVENT 1 hello world");

  /* Unicast: each job goes to exactly one of the two subscribers. */
  cmd(&b, "CREATE work 1", "OK");
  cmd(&a, "SUB work", "OK 2");
  cmd(&b, "SUB work", "OK 1");
  for (int i = 0; i < 4; i++) {
    char job[32];
    snprintf(job, sizeof job, "PUB work job%d", i);
    cmd(&c, job, "OK 1");
  }
  /* ... taking turns: two each. */
  int ja = 0, jb = 0;
  while (*next_line(&a, line, sizeof line, 300))
    ja += strncmp(line, "EVENT 2 job", 11) == 0;
  while (*next_line(&b, line, sizeof line, 300))
    jb += strncmp(line, "EVENT 1 job", 11) == 0;
  ASSERT_EQ(ja, 2);
  ASSERT_EQ(jb, 2);

  /* Expiry: an event already expired reaches nobody. */
  cmd(&c, "PUB app ttl=0 stale", "OK 0");
  cmd(&c, "PUB app ttl=60000 fresh", "OK 1");
  expect(&a, "EVENT 1 fresh");

  /* A malformed line gets an error and the connection stays usable. */
  cmd(&c, "BOGUS", "ERR");
  cmd(&c, "SUB", "ERR usage");
  cmd(&c, "PUB app ttl=x y", "ERR bad ttl");
  send_line(&c, "LIST");
  int saw_work = 0;
  for (;;) {
    next_line(&c, line, sizeof line, 10000);
    if (strcmp(line, "END") == 0 || !*line)
      break;
    saw_work |= strcmp(line, "CHANNEL work limit=1 receivers=2") == 0;
  }
  ASSERT(saw_work);

  /* Request/reply through a callback channel. */
  cmd(&b, "SUB svc", "OK 2");
  send_line(&c, "REQ svc what time");
  expect(&b, "REQUEST 2 1 what time");
  cmd(&b, "REPLY 1 noon", "OK");
  expect(&c, "REPLY noon");

  /* The connection limit (4): the fifth is refused, the others go on. */
  connect_to(&e, port);
  expect(&e, "HELLO");
  connect_to(&f, port);
  expect(&f, "ERR server full");
  expect(&f, "<EOF>");
  close(f.fd);
  /* QUIT hands over what is still queued for the client first: its own
   * publication, queued for it while the same read's lines ran. */
  cmd(&e, "SUB app", "OK 1");
  send_line(&e, "PUB app last words\nQUIT");
  expect(&e, "OK 2");
  expect(&e, "EVENT 1 last words");
  expect(&e, "BYE");
  expect(&e, "<EOF>");
  expect(&a, "EVENT 1 last words");
  close(e.fd);

  /* An oversized line closes that connection and nothing else. */
  char big[3000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = 0;
  memcpy(big, "PUB app ", 8);
  send_line(&c, big);
  expect(&c, "ERR line too long");
  expect(&c, "<EOF>");
  close(c.fd);
  cmd(&b, "PUB app still here", "OK 1");
  expect(&a, "EVENT 1 still here");

  /* Ctrl+C: everything published before it reaches the subscriber, then
   * BYE; the server prints its phases and exits 0. */
  for (int i = 0; i < 20; i++) {
    char msg[32];
    snprintf(msg, sizeof msg, "PUB app e%d", i);
    cmd(&b, msg, "OK 1");
  }
  ASSERT_EQ(kill(pid, SIGINT), 0);
  for (int i = 0; i < 20; i++) {
    char want[32];
    snprintf(want, sizeof want, "EVENT 1 e%d", i);
    expect(&a, want);
  }
  expect(&a, "BYE server shutting down");
  expect(&a, "<EOF>");
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  char all[8192] = "";
  while (*next_line(&srv, line, sizeof line, 2000) && strcmp(line, "<EOF>")) {
    fprintf(stderr, "server: %s\n", line);
    strncat(all, line, sizeof all - strlen(all) - 2);
    strcat(all, "\n");
  }
  ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  ASSERT(strstr(all, "supervisor: SIGINT: shutting down") != NULL);
  ASSERT(strstr(all, "shutdown: quiesce") != NULL);
  ASSERT(strstr(all, "shutdown: drain") != NULL);
  ASSERT(strstr(all, "shutdown: cancel") != NULL);
  ASSERT(strstr(all, "pubsub_server: done") != NULL);
  close(a.fd);
  close(b.fd);
  close(srv.fd);
  return 0;
}
#endif
