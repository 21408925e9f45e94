/* game_loop - Hydra embedded in a loop it does not own.
 *
 *   build/release/game_loop [frames] [--os-handle]
 *
 * The main thread runs a fixed-timestep loop at 60 Hz.  The runtime has no
 * worker threads of its own (workers = 0): its tasks run only inside
 * hy_runtime_run_once, which the loop calls each frame after setting the
 * "frame" hub event.  Three tasks await that event - physics, a state
 * broadcaster that sends one UDP datagram per frame, and a bot - and a
 * fourth task, standing in for a client, receives the datagrams on
 * loopback.  The loop prints the time spent inside the runtime per frame
 * against the 16.7 ms budget.
 *
 * Between frames the loop sleeps; with --os-handle it instead polls the
 * runtime's OS handle until the next frame is due, and runs the runtime
 * whenever it has work (here: a datagram arriving early).
 */
#define _POSIX_C_SOURCE 200809L
#ifdef _WIN32
#include <windows.h>
#else
#include <poll.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hydra.h"

#define HZ 60
#define FRAME_NS (HY_SEC(1) / HZ)
#define ENTITIES 256

typedef struct game {
  hy_runtime_t *rt;
  hy_hub_t *frame;
  long frame_no;
  float x[ENTITIES], v[ENTITIES];
  hy_addr_t client_addr;
  long sent, received, bot_moves, physics_steps;
  long last_seq_seen;
} game_t;

typedef struct state_msg {
  int64_t seq;
  float first_x;
} state_msg_t;

static void *physics(void *arg) {
  game_t *g = arg;
  hy_hub_consumer_t *c;
  if (hy_hub_connect(g->frame, &c) < 0)
    return (void *)1;
  while (hy_hub_wait(c) == 0) {
    for (int i = 0; i < ENTITIES; i++) {
      g->x[i] += g->v[i] / HZ;
      if (g->x[i] < 0 || g->x[i] > 100)
        g->v[i] = -g->v[i];
    }
    g->physics_steps++;
  }
  hy_hub_disconnect(c);
  return NULL;
}

static void *bot(void *arg) {
  game_t *g = arg;
  hy_hub_consumer_t *c;
  if (hy_hub_connect(g->frame, &c) < 0)
    return (void *)1;
  while (hy_hub_wait(c) == 0) {
    if (g->frame_no % 4 == 0) { /* thinks every fourth frame */
      g->v[g->frame_no % ENTITIES] += 1.0f;
      g->bot_moves++;
    }
  }
  hy_hub_disconnect(c);
  return NULL;
}

static void *broadcaster(void *arg) {
  game_t *g = arg;
  hy_hub_consumer_t *c;
  hy_udp_t *u;
  hy_addr_t any;
  hy_addr_parse("127.0.0.1:0", &any);
  if (hy_hub_connect(g->frame, &c) < 0)
    return (void *)1;
  if (hy_udp_bind(g->rt, &any, 0, &u) < 0) {
    hy_hub_disconnect(c);
    return (void *)1;
  }
  while (hy_hub_wait(c) == 0) {
    state_msg_t m = {g->frame_no, g->x[0]};
    if (hy_udp_send_to(u, &m, sizeof m, &g->client_addr) == (int)sizeof m)
      g->sent++;
  }
  hy_udp_close(u);
  hy_hub_disconnect(c);
  return NULL;
}

typedef struct client_arg {
  game_t *g;
  hy_udp_t *u;
} client_arg_t;

static void *client_main(void *arg) {
  client_arg_t *a = arg;
  state_msg_t m;
  hy_addr_t from;
  for (;;) {
    int n = hy_udp_recv_from(a->u, &m, sizeof m, &from);
    if (n < 0)
      break; /* cancelled at shutdown */
    if (n == (int)sizeof m) {
      a->g->received++;
      a->g->last_seq_seen = (long)m.seq;
    }
  }
  return NULL;
}

/* The two calls a host loop makes to its OS: sleep, and wait at most ms
 * milliseconds for the runtime's handle (an fd, or a Win32 event). */
static void sleep_until(hy_time_t t) {
  hy_time_t now = hy_now();
  if (t <= now)
    return;
#ifdef _WIN32
  Sleep((DWORD)((t - now + HY_MS(1) - 1) / HY_MS(1)));
#else
  struct timespec ts = {(time_t)((t - now) / HY_SEC(1)),
                        (long)((t - now) % HY_SEC(1))};
  nanosleep(&ts, NULL);
#endif
}

static int handle_ready(intptr_t handle, int ms) {
#ifdef _WIN32
  return WaitForSingleObject((HANDLE)handle, (DWORD)ms) == WAIT_OBJECT_0;
#else
  struct pollfd pfd = {(int)handle, POLLIN, 0};
  return poll(&pfd, 1, ms) > 0;
#endif
}

int main(int argc, char **argv) {
  long frames = 120;
  int use_handle = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--os-handle") == 0)
      use_handle = 1;
    else if ((frames = atol(argv[i])) < 1 || frames > 1000000) {
      fprintf(stderr, "usage: game_loop [frames] [--os-handle]\n");
      return 2;
    }
  }
  static game_t g;
  for (int i = 0; i < ENTITIES; i++) {
    g.x[i] = (float)(i % 100);
    g.v[i] = (float)(i % 7) - 3.0f;
  }
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = 0; /* embedded: tasks run inside run_once only */
  int rc = hy_runtime_new(&o, &g.rt);
  if (rc < 0) {
    fprintf(stderr, "game_loop: %s\n", hy_strerror(rc));
    return 1;
  }
  hy_udp_t *cu;
  hy_addr_t caddr;
  hy_addr_parse("127.0.0.1:0", &caddr);
  if ((rc = hy_hub_create(g.rt, "frame", HY_HUB_AUTO_RESET, &g.frame)) < 0 ||
      (rc = hy_udp_bind(g.rt, &caddr, 0, &cu)) < 0 ||
      (rc = hy_udp_local_addr(cu, &g.client_addr)) < 0) {
    fprintf(stderr, "game_loop: setup: %s\n", hy_strerror(rc));
    return 1;
  }
  client_arg_t ca = {&g, cu};
  hy_task_t t[4];
  hy_task_spawn(g.rt, physics, &g, NULL, &t[0]);
  hy_task_spawn(g.rt, bot, &g, NULL, &t[1]);
  hy_task_spawn(g.rt, broadcaster, &g, NULL, &t[2]);
  hy_task_spawn(g.rt, client_main, &ca, NULL, &t[3]);
  hy_runtime_run_once(g.rt, 0); /* the tasks connect to the hub */
  printf("game_loop: %ld frames at %d Hz, %s between frames, %s backend\n",
         frames, HZ, use_handle ? "polling the runtime's OS handle" : "sleeping",
         hy_runtime_backend_name(g.rt));

  intptr_t handle = hy_runtime_os_handle(g.rt);
  int64_t worst = 0, total = 0, between = 0;
  long over = 0, early_runs = 0;
  hy_time_t next = hy_now();
  for (g.frame_no = 0; g.frame_no < frames; g.frame_no++) {
    hy_time_t f0 = hy_now();
    hy_hub_set(g.frame); /* releases every task awaiting the frame */
    while (hy_runtime_run_once(g.rt, 0) > 0 && hy_now() - f0 < FRAME_NS / 2) {
    }
    int64_t spent = hy_now() - f0;
    total += spent;
    if (spent > worst)
      worst = spent;
    if (spent > FRAME_NS)
      over++;
    if (g.frame_no % 30 == 0 || g.frame_no == frames - 1)
      printf("frame %4ld: %6.3f ms in the runtime of a %.1f ms budget\n",
             g.frame_no, (double)spent / 1e6, (double)FRAME_NS / 1e6);
    next += FRAME_NS;
    if (use_handle) {
      /* Until the next frame: wake when the runtime has work. */
      for (;;) {
        hy_time_t now = hy_now();
        if (now >= next)
          break;
        int ms = (int)((next - now + HY_MS(1) - 1) / HY_MS(1));
        if (handle_ready(handle, ms)) {
          hy_time_t b0 = hy_now();
          hy_runtime_run_once(g.rt, 0);
          between += hy_now() - b0;
          early_runs++;
        }
      }
    } else {
      sleep_until(next);
    }
  }
  /* The last datagrams may still be on their way. */
  hy_time_t give_up = hy_deadline_in(HY_SEC(2));
  while (g.received < g.sent && hy_now() < give_up)
    hy_runtime_run_once(g.rt, HY_MS(5));
  printf("%ld frames: mean %.3f ms, worst %.3f ms in the runtime; %ld over "
         "budget\n", frames, (double)total / 1e6 / (double)frames,
         (double)worst / 1e6, over);
  if (use_handle)
    printf("runtime woke the loop %ld times between frames (%.3f ms in all)\n",
           early_runs, (double)between / 1e6);
  printf("physics steps %ld, bot moves %ld, datagrams sent %ld, received %ld\n",
         g.physics_steps, g.bot_moves, g.sent, g.received);
  hy_runtime_shutdown(g.rt, HY_MS(50));
  for (int i = 0; i < 4; i++)
    hy_task_join(g.rt, t[i], NULL);
  hy_udp_close(cu);
  hy_hub_destroy(g.frame);
  hy_runtime_close(g.rt);
  int ok = g.physics_steps == frames && g.sent == frames && g.received == g.sent;
  if (!ok)
    fprintf(stderr, "game_loop: a frame or a datagram went missing\n");
  return ok ? 0 : 1;
}
