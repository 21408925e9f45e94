/* echo_callbacks - the same echo server with the callback-style server
 * object (seed 001): the server keeps accepts pending on every worker,
 * calls on_read with what arrived, and the application queues the echo
 * with hy_sconn_write.  Limits: at most 10,000 connections, 256 KiB of
 * queued output each (a client that does not read is throttled: reading
 * pauses until its output drains), 60 s idle timeout.  SIGINT/SIGTERM
 * stop it through the multi-phase shutdown: accepting stops in quiesce,
 * connections are served through the drain, then closed in cancel.
 *
 *   build/release/echo_callbacks [port] [address]  (default 7001, 127.0.0.1)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hydra.h"

static int on_accept(hy_server_t *s, hy_sconn_t *c) {
  (void)s;
  (void)c;
  return 0;
}

static void on_read(hy_server_t *s, hy_sconn_t *c, const void *d, size_t n) {
  (void)s;
  int rc = hy_sconn_write(c, d, n);
  if (rc == HY_EAGAIN) {
    /* Over the output bound: this reader is slow.  Drop what we could not
     * queue and stop reading until its output has drained. */
    hy_sconn_pause_read(c, 1);
  } else if (rc < 0) {
    hy_sconn_close(c, 0);
  }
}

static void on_write_done(hy_server_t *s, hy_sconn_t *c) {
  (void)s;
  hy_sconn_pause_read(c, 0);
}

static void on_close(hy_server_t *s, hy_sconn_t *c, int reason, int err) {
  (void)s;
  (void)c;
  if (reason == HY_CLOSE_ERROR && err != HY_ECONNRESET && err != HY_EPIPE)
    fprintf(stderr, "echo_callbacks: connection closed: %s\n",
            hy_strerror(err));
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 7001;
  const char *ip = argc > 2 ? argv[2] : "127.0.0.1";
  hy_runtime_t *rt;
  int rc = hy_runtime_new(NULL, &rt);
  if (rc < 0) {
    fprintf(stderr, "echo_callbacks: runtime: %s\n", hy_strerror(rc));
    return 1;
  }
  int sigs[] = {SIGINT, SIGTERM};
  hy_sigrecv_t *sigr;
  if ((rc = hy_signal_subscribe(rt, sigs, 2, &sigr)) < 0) {
    fprintf(stderr, "echo_callbacks: signals: %s\n", hy_strerror(rc));
    return 1;
  }
  hy_server_config_t cfg = HY_SERVER_CONFIG_INIT;
  if ((rc = hy_addr_from_ip(ip, port, &cfg.addr)) < 0) {
    fprintf(stderr, "echo_callbacks: bad address %s\n", ip);
    return 1;
  }
  cfg.max_connections = 10000;
  cfg.max_output = 256 * 1024;
  cfg.idle_timeout = HY_SEC(60);
  hy_server_callbacks_t cb = {on_accept, on_read, on_write_done, NULL,
                              on_close};
  hy_server_t *srv;
  if ((rc = hy_server_start(rt, &cfg, &cb, &srv)) < 0) {
    fprintf(stderr, "echo_callbacks: listen %s:%d: %s\n", ip, port,
            hy_strerror(rc));
    return 1;
  }
  hy_addr_t a;
  hy_server_addr(srv, &a);
  char name[HY_ADDRSTRLEN];
  hy_addr_format(&a, name, sizeof name);
  printf("echo_callbacks: listening on %s (%d workers, %s backend)\n", name,
         hy_runtime_workers(rt), hy_runtime_backend_name(rt));
  fflush(stdout);

  int sig = 0;
  while (hy_signal_read(sigr, &sig) == 0 && sig != SIGINT && sig != SIGTERM)
    ;
  hy_signal_unsubscribe(sigr);
  printf("echo_callbacks: %s, shutting down\n",
         sig == SIGINT ? "SIGINT" : "SIGTERM");
  fflush(stdout);
  hy_runtime_shutdown(rt, HY_MS(500));
  hy_server_stats_t st = {.size = sizeof st};
  hy_server_stats(srv, &st);
  hy_server_close(srv);
  hy_runtime_close(rt);
  printf("echo_callbacks: stopped after %llu connections, %llu bytes echoed\n",
         (unsigned long long)st.accepted, (unsigned long long)st.bytes_out);
  return 0;
}
