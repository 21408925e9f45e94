/* bench/ref/libuv_echo.c - the libuv reference for bench/run net: a
 * single-loop echo server on libuv in plain C.  Reads land in one buffer
 * shared by every connection (libuv calls read_cb before it asks for the
 * next buffer); the echo is tried at once with uv_try_write, and only what
 * the socket does not take is copied into a write request, with reading
 * stopped until it is written.
 *
 *   libuv_echo PORT
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

typedef struct wreq {
  uv_write_t req;
  uv_buf_t buf;
} wreq;

static char shared[65536];
static uv_loop_t *loop;

static void on_alloc(uv_handle_t *h, size_t want, uv_buf_t *b) {
  (void)h;
  (void)want;
  *b = uv_buf_init(shared, sizeof shared);
}

static void on_closed(uv_handle_t *h) { free(h); }

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

static void on_written(uv_write_t *r, int status) {
  wreq *w = (wreq *)r;
  uv_stream_t *s = r->handle;
  free(w->buf.base);
  free(w);
  if (status < 0) {
    if (!uv_is_closing((uv_handle_t *)s))
      uv_close((uv_handle_t *)s, on_closed);
    return;
  }
  uv_read_start(s, on_alloc, on_read);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  if (n < 0) {
    uv_close((uv_handle_t *)s, on_closed);
    return;
  }
  if (n == 0)
    return;
  int w = uv_try_write(s, &(uv_buf_t){.base = b->base, .len = (size_t)n}, 1);
  if (w == UV_EAGAIN)
    w = 0;
  if (w < 0) {
    uv_close((uv_handle_t *)s, on_closed);
    return;
  }
  if (w < n) {
    wreq *r = malloc(sizeof *r);
    size_t left = (size_t)(n - w);
    r->buf = uv_buf_init(malloc(left), (unsigned)left);
    memcpy(r->buf.base, b->base + w, left);
    uv_read_stop(s);
    uv_write(&r->req, s, &r->buf, 1, on_written);
  }
}

static void on_conn(uv_stream_t *srv, int status) {
  if (status < 0)
    return;
  uv_tcp_t *c = malloc(sizeof *c);
  uv_tcp_init(loop, c);
  if (uv_accept(srv, (uv_stream_t *)c) < 0) {
    uv_close((uv_handle_t *)c, on_closed);
    return;
  }
  uv_tcp_nodelay(c, 1);
  uv_read_start((uv_stream_t *)c, on_alloc, on_read);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 7100;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  signal(SIGPIPE, SIG_IGN);
  loop = uv_default_loop();
  uv_tcp_t srv;
  uv_tcp_init(loop, &srv);
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", port, &sa);
  int r = uv_tcp_bind(&srv, (const struct sockaddr *)&sa, 0);
  if (r == 0)
    r = uv_listen((uv_stream_t *)&srv, 4096, on_conn);
  if (r < 0) {
    fprintf(stderr, "libuv_echo: listen: %s\n", uv_strerror(r));
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  return uv_run(loop, UV_RUN_DEFAULT);
}
