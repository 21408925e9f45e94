/* supervisor - a program that stops without losing work.
 *
 * Workers are tasks that take jobs and watch the runtime's "sys/shutdown"
 * hub.  A supervisor task subscribes to SIGINT, SIGTERM and SIGHUP and
 * loops on "read a signal, or after 0.1 s check the workers' heartbeats".
 * On SIGINT or SIGTERM it starts the multi-phase shutdown, which sets
 * sys/shutdown: every worker finishes the job in its hands and stops.  The
 * supervisor keeps checking until every worker has stopped, then ends; the
 * shutdown phases go by (each printed) and main prints what happened.
 *
 *   build/release/supervisor [workers]      then: kill -TERM <pid>, or ^C
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "hydra.h"

#ifdef _WIN32
#include <process.h>
#define getpid _getpid
#ifndef SIGHUP
#define SIGHUP 1 /* no such signal there: never arrives */
#endif
#else
#include <unistd.h>
#endif

#define MAX_WORKERS 64
#define HEARTBEAT_LATE HY_MS(500)

typedef struct {
  int id;
  _Atomic int64_t beat; /* when it last finished a job */
  atomic_int stopped;
} worker_t;

static hy_runtime_t *rt;
static worker_t workers[MAX_WORKERS];
static int nworkers;
static atomic_long jobs_taken, jobs_done;

static void *work(void *arg) {
  worker_t *w = arg;
  hy_hub_consumer_t *stop;
  if (hy_hub_connect_name(rt, "sys/shutdown", &stop) < 0) {
    atomic_store(&w->stopped, 1);
    return NULL;
  }
  for (;;) {
    /* Between jobs, look for the stop signal (and rest a little). */
    int rc = hy_hub_wait_until(stop, hy_deadline_in(HY_MS(20)));
    if (rc != HY_ETIMEDOUT)
      break; /* released: the runtime is shutting down */
    atomic_fetch_add(&jobs_taken, 1);
    hy_sleep(rt, HY_MS(5)); /* the job; finished even during shutdown */
    atomic_fetch_add(&jobs_done, 1);
    atomic_store(&w->beat, hy_now());
  }
  hy_hub_disconnect(stop);
  printf("worker %d: stopped\n", w->id);
  atomic_store(&w->stopped, 1);
  return NULL;
}

static int fatal(int sig) { return sig == SIGINT || sig == SIGTERM; }

static void *supervise(void *arg) {
  (void)arg;
  int sigs[] = {SIGINT, SIGTERM, SIGHUP};
  hy_sigrecv_t *signals;
  int rc = hy_signal_subscribe(rt, sigs, 3, &signals);
  if (rc < 0) {
    fprintf(stderr, "supervisor: subscribe: %s\n", hy_strerror(rc));
    hy_runtime_shutdown(rt, HY_MS(500));
    return NULL;
  }
  printf("supervisor: subscribed to SIGINT, SIGTERM, SIGHUP\n");
  int shutting_down = 0, last_alive = -1;
  hy_time_t last_report = 0;
  for (;;) {
    if (shutting_down) {
      int active = 0;
      for (int i = 0; i < nworkers; i++)
        active += !atomic_load(&workers[i].stopped);
      if (!active)
        break;
    }
    int sig;
    rc = hy_signal_read_until(signals, hy_deadline_in(HY_MS(100)), &sig);
    if (rc == 0) {
      if (fatal(sig) && !shutting_down) {
        printf("received %s: shutting down\n", hy_signal_name(sig));
        shutting_down = 1;
        /* From a task this only starts the shutdown; it sets sys/shutdown,
         * which tells every worker to stop. */
        hy_runtime_shutdown(rt, HY_SEC(1));
      } else {
        printf("received %s\n", hy_signal_name(sig));
      }
      continue;
    }
    if (rc != HY_ETIMEDOUT) {
      fprintf(stderr, "supervisor: %s\n", hy_strerror(rc));
      break;
    }
    /* 0.1 s without a signal: check on the workers' heartbeats. */
    hy_time_t now = hy_now();
    if (shutting_down)
      continue; /* stopped workers beat no more; the top checks them */
    int alive = 0;
    for (int i = 0; i < nworkers; i++)
      alive += !atomic_load(&workers[i].stopped) &&
               now - atomic_load(&workers[i].beat) < HEARTBEAT_LATE;
    if (alive != last_alive || now - last_report >= HY_SEC(1)) {
      printf("heartbeats: %d of %d workers alive\n", alive, nworkers);
      last_alive = alive;
      last_report = now;
    }
  }
  printf("supervisor: all %d workers stopped\n", nworkers);
  hy_signal_unsubscribe(signals);
  return NULL;
}

static void on_phase(void *arg, int phase, int worker) {
  (void)arg;
  if (worker == 0) /* every worker passes each phase; report it once */
    printf("phase %s\n", hy_phase_name(phase));
}

int main(int argc, char **argv) {
#ifdef _WIN32
  setvbuf(stdout, NULL, _IONBF, 0); /* its C runtime has no line buffering */
#else
  setvbuf(stdout, NULL, _IOLBF, 0);
#endif
  nworkers = argc > 1 ? atoi(argv[1]) : 4;
  if (nworkers < 1 || nworkers > MAX_WORKERS)
    nworkers = 4;
  hy_options_t o = HY_OPTIONS_INIT;
  o.workers = 2;
  int rc = hy_runtime_new(&o, &rt);
  if (rc < 0) {
    fprintf(stderr, "supervisor: %s\n", hy_strerror(rc));
    return 1;
  }
  hy_runtime_on_phase(rt, on_phase, NULL);
  hy_task_opts_t to = HY_TASK_OPTS_INIT;
  for (int i = 0; i < nworkers; i++) {
    char name[32];
    snprintf(name, sizeof name, "worker-%d", i);
    to.name = name;
    workers[i].id = i;
    atomic_store(&workers[i].beat, hy_now());
    if ((rc = hy_task_spawn(rt, work, &workers[i], &to, NULL)) < 0) {
      fprintf(stderr, "spawn: %s\n", hy_strerror(rc));
      return 1;
    }
  }
  to.name = "supervisor";
  if ((rc = hy_task_spawn(rt, supervise, NULL, &to, NULL)) < 0) {
    fprintf(stderr, "spawn: %s\n", hy_strerror(rc));
    return 1;
  }
  printf("supervisor: pid %ld, %d workers; send SIGTERM or press ^C\n",
         (long)getpid(), nworkers);
  hy_runtime_run(rt); /* returns once the shutdown has finished */
  hy_shutdown_summary_t sum = {.size = sizeof sum};
  hy_runtime_shutdown_summary(rt, &sum);
  long taken = atomic_load(&jobs_taken), done = atomic_load(&jobs_done);
  printf("jobs taken: %ld, done: %ld, jobs lost: %ld\n", taken, done,
         taken - done);
  printf("tasks finished: %llu, tasks cancelled: %llu\n",
         (unsigned long long)sum.tasks_finished,
         (unsigned long long)sum.tasks_cancelled);
  hy_runtime_close(rt);
  return taken == done ? 0 : 1;
}
