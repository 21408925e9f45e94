/* echo_server - a TCP echo server in task style: one task accepts, one
 * task per connection reads and writes back.  SIGINT or SIGTERM stops it
 * through the runtime's multi-phase shutdown: the listener stops accepting
 * (quiesce), connections finish what they are doing (drain), the rest are
 * cancelled (cancel).
 *
 *   build/release/echo_server [port] [address]     (default 7000, 127.0.0.1)
 *
 * The signals are taken with hy_signal_subscribe and read on the main
 * thread (nothing of the program runs in a signal handler); on Windows
 * they are the console's Ctrl+C (SIGINT) and close events (SIGTERM).
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hydra.h"

typedef struct {
  hy_runtime_t *rt;
  hy_listener_t *l;
  atomic_long conns, bytes;
} server_t;

typedef struct {
  server_t *s;
  hy_conn_t *c;
} conn_job;

static void *serve(void *arg) {
  conn_job *j = arg;
  server_t *s = j->s;
  hy_conn_t *c = j->c;
  free(j);
  hy_conn_set_nodelay(c, 1);
  char *buf = malloc(16384);
  while (buf) {
    int n = hy_conn_read(c, buf, 16384);
    if (n <= 0)
      break; /* end of stream, error, or cancelled at shutdown */
    if (hy_conn_write_all(c, buf, (size_t)n, NULL) != n)
      break;
    atomic_fetch_add(&s->bytes, n);
  }
  free(buf);
  hy_conn_close(c);
  return NULL;
}

static void *accept_loop(void *arg) {
  server_t *s = arg;
  for (;;) {
    hy_conn_t *c;
    int rc = hy_tcp_accept(s->l, &c);
    if (rc == HY_ECANCELED || rc == HY_ECLOSED)
      break;
    if (rc == HY_EMFILE || rc == HY_ENFILE) {
      hy_sleep(s->rt, HY_MS(50)); /* out of descriptors: back off */
      continue;
    }
    if (rc < 0) {
      fprintf(stderr, "accept: %s\n", hy_strerror(rc));
      continue;
    }
    conn_job *j = malloc(sizeof *j);
    if (!j) {
      hy_conn_close(c);
      continue;
    }
    j->s = s;
    j->c = c;
    atomic_fetch_add(&s->conns, 1);
    hy_task_opts_t o = HY_TASK_OPTS_INIT;
    o.name = "echo-conn";
    if (hy_task_spawn(s->rt, serve, j, &o, NULL) < 0) {
      free(j);
      hy_conn_close(c);
    }
  }
  return NULL; /* the listener was closed by on_phase, which frees it */
}

/* Quiesce: stop accepting (closing the listener ends the accept task). */
static void on_phase(void *arg, int phase, int worker) {
  server_t *s = arg;
  if (phase == HY_PHASE_QUIESCE && worker == 0)
    hy_listener_close(s->l);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 7000;
  const char *ip = argc > 2 ? argv[2] : "127.0.0.1";
  server_t s;
  memset(&s, 0, sizeof s);
  int rc = hy_runtime_new(NULL, &s.rt);
  if (rc < 0) {
    fprintf(stderr, "echo_server: runtime: %s\n", hy_strerror(rc));
    return 1;
  }
  int sigs[] = {SIGINT, SIGTERM};
  hy_sigrecv_t *sigr;
  if ((rc = hy_signal_subscribe(s.rt, sigs, 2, &sigr)) < 0) {
    fprintf(stderr, "echo_server: signals: %s\n", hy_strerror(rc));
    return 1;
  }
  hy_addr_t a;
  if ((rc = hy_addr_from_ip(ip, port, &a)) < 0 ||
      (rc = hy_tcp_listen(s.rt, &a, NULL, &s.l)) < 0) {
    fprintf(stderr, "echo_server: listen %s:%d: %s\n", ip, port,
            hy_strerror(rc));
    return 1;
  }
  hy_listener_addr(s.l, &a);
  char name[HY_ADDRSTRLEN];
  hy_addr_format(&a, name, sizeof name);
  hy_runtime_on_phase(s.rt, on_phase, &s);
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.name = "accept";
  if ((rc = hy_task_spawn(s.rt, accept_loop, &s, &o, NULL)) < 0) {
    fprintf(stderr, "echo_server: %s\n", hy_strerror(rc));
    return 1;
  }
  printf("echo_server: listening on %s (%d workers, %s backend)\n", name,
         hy_runtime_workers(s.rt), hy_runtime_backend_name(s.rt));
  fflush(stdout);

  int sig = 0;
  while (hy_signal_read(sigr, &sig) == 0 && sig != SIGINT && sig != SIGTERM)
    ;
  hy_signal_unsubscribe(sigr);
  printf("echo_server: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  fflush(stdout);
  hy_runtime_shutdown(s.rt, HY_MS(500));
  hy_shutdown_summary_t sum = {.size = sizeof sum};
  hy_runtime_shutdown_summary(s.rt, &sum);
  hy_runtime_close(s.rt);
  printf("echo_server: stopped after %ld connections, %ld bytes echoed "
         "(%llu tasks finished, %llu cancelled)\n",
         atomic_load(&s.conns), atomic_load(&s.bytes),
         (unsigned long long)sum.tasks_finished,
         (unsigned long long)sum.tasks_cancelled);
  return 0;
}
