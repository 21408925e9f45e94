/* bench/net.c - Hydra's TCP echo servers for bench/run net, measured by
 * bench/netload.c against the references in bench/ref/.
 *
 *   net server-cb PORT [WORKERS]   the callback server (hy_server_t)
 *   net server-task PORT [WORKERS] task per connection (WORKERS: 1)
 *
 * Each prints "ready" once it listens on 127.0.0.1:PORT and stops on
 * SIGINT or SIGTERM.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hydra.h"

/* ------------------------------------------------------------- servers */

static void on_read(hy_server_t *s, hy_sconn_t *c, const void *d, size_t n) {
  (void)s;
  if (hy_sconn_write(c, d, n) == HY_EAGAIN)
    hy_sconn_pause_read(c, 1);
}

static void on_write_done(hy_server_t *s, hy_sconn_t *c) {
  (void)s;
  hy_sconn_pause_read(c, 0);
}

static hy_runtime_t *mk(int workers) {
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = workers;
  hy_runtime_t *rt;
  int rc = hy_runtime_new(&o, &rt);
  if (rc < 0) {
    fprintf(stderr, "runtime: %s\n", hy_strerror(rc));
    exit(1);
  }
  return rt;
}

static void wait_signal(void) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  int sig;
  sigwait(&s, &sig);
}

static void block_signals(void) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
}

static int server_cb(int port, int workers) {
  block_signals();
  hy_runtime_t *rt = mk(workers);
  hy_server_config_t cfg = HY_SERVER_CONFIG_INIT;
  hy_addr_from_ip("127.0.0.1", port, &cfg.addr);
  cfg.read_buffer_size = 16384;
  cfg.max_output = 1 << 20;
  cfg.backlog = 4096;
  hy_server_callbacks_t cb = {NULL, on_read, on_write_done, NULL, NULL};
  hy_server_t *s;
  int rc = hy_server_start(rt, &cfg, &cb, &s);
  if (rc < 0) {
    fprintf(stderr, "server: %s\n", hy_strerror(rc));
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  wait_signal();
  hy_runtime_shutdown(rt, HY_MS(10));
  hy_server_close(s);
  hy_runtime_close(rt);
  return 0;
}

typedef struct {
  hy_runtime_t *rt;
  hy_listener_t *l;
} tsrv;

static void *t_conn(void *arg) {
  hy_conn_t *c = arg;
  char buf[16384];
  hy_conn_set_nodelay(c, 1);
  for (;;) {
    int n = hy_conn_read(c, buf, sizeof buf);
    if (n <= 0 || hy_conn_write_all(c, buf, (size_t)n, NULL) != n)
      break;
  }
  hy_conn_close(c);
  return NULL;
}

static void *t_accept(void *arg) {
  tsrv *s = arg;
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.stack_size = 32 * 1024;
  for (;;) {
    hy_conn_t *c;
    int rc = hy_tcp_accept(s->l, &c);
    if (rc == HY_ECANCELED || rc == HY_ECLOSED)
      break;
    if (rc < 0) {
      hy_sleep(s->rt, HY_MS(10));
      continue;
    }
    if (hy_task_spawn(s->rt, t_conn, c, &o, NULL) < 0)
      hy_conn_close(c);
  }
  return NULL;
}

static int server_task(int port, int workers) {
  block_signals();
  tsrv s;
  s.rt = mk(workers);
  hy_addr_t a;
  hy_addr_from_ip("127.0.0.1", port, &a);
  hy_listen_opts_t lo = HY_LISTEN_OPTS_INIT;
  lo.backlog = 4096;
  int rc = hy_tcp_listen(s.rt, &a, &lo, &s.l);
  if (rc < 0) {
    fprintf(stderr, "listen: %s\n", hy_strerror(rc));
    return 1;
  }
  hy_task_spawn(s.rt, t_accept, &s, NULL, NULL);
  printf("ready\n");
  fflush(stdout);
  wait_signal();
  hy_listener_close(s.l);
  hy_runtime_shutdown(s.rt, HY_MS(10));
  hy_runtime_close(s.rt);
  return 0;
}

int main(int argc, char **argv) {
  int workers = argc >= 4 ? atoi(argv[3]) : 1;
  if (argc >= 3 && strcmp(argv[1], "server-cb") == 0)
    return server_cb(atoi(argv[2]), workers);
  if (argc >= 3 && strcmp(argv[1], "server-task") == 0)
    return server_task(atoi(argv[2]), workers);
  fprintf(stderr, "usage: net server-cb|server-task PORT [WORKERS]\n");
  return 2;
}
