/* runtime.c - the runtime object: options, creation, run / run_once,
 * posting functions in from any thread, close, stats and the task dump.
 *
 * Workers are created with the runtime and run until the shutdown's last
 * phase.  In embedded mode (0 workers) there is one worker structure, the
 * host's, with its own port; it runs only while the host is inside
 * hy_runtime_run_once or hy_runtime_run, and its port's fd is the runtime's
 * os_handle: every way work can arrive for it (a wake from another thread,
 * a post, a completion) ends up as something readable there.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/fiber.h"
#include "runtime/hubs.h"
#include "runtime/internal.h"

static const char *backend_names[] = {"auto", "uring", "epoll", "iocp"};

static void read_env(hy_options_t *o) {
  const char *b = hy__getenv("HYDRA_BACKEND");
  if (b && *b) {
    int found = 0;
    for (int i = 0; i < 4; i++)
      if (strcmp(b, backend_names[i]) == 0) {
        o->backend = i;
        found = 1;
      }
    if (!found)
      fprintf(stderr, "hydra: HYDRA_BACKEND=%s is not a backend; ignored\n", b);
  }
  const char *w = hy__getenv("HYDRA_WORKERS");
  if (w && *w) {
    char *end;
    long n = strtol(w, &end, 10);
    if (*end == 0 && n >= 0 && n <= 1024)
      o->workers = (int)n;
    else
      fprintf(stderr, "hydra: HYDRA_WORKERS=%s is not a count; ignored\n", w);
  }
  const char *v = hy__getenv("HY_VERBOSE");
  if (v && *v == '1')
    o->verbose = 1;
}

static void post_done(hy__completion *c, hy__op *op);

typedef struct post_rec {
  hy__op op;
  hy__completion c;
  void (*fn)(void *);
  void *arg;
} post_rec;

static void post_done(hy__completion *c, hy__op *op) {
  (void)op;
  post_rec *p = (post_rec *)((char *)c - offsetof(post_rec, c));
  p->fn(p->arg);
  hy__mem_free(p);
}

static void free_runtime(hy_runtime_t *rt) {
  int n = rt->nworkers ? rt->nworkers : 1;
  hy__signal_runtime_free(rt);
  if (rt->workers) {
    for (int i = 0; i < n; i++) {
      hy__worker *w = &rt->workers[i];
      if (w->port) {
        /* Posts that raced with the end: run their functions now, so
         * nothing handed to us is dropped. */
        hy__op *ops[64];
        int k;
        while ((k = hy__port_wait(w->port, ops, 64, 0)) > 0)
          for (int j = 0; j < k; j++)
            hy__complete(w, ops[j]);
        hy__port_close(w->port);
      }
      hy__heap_free(&w->heap);
    }
    hy__mem_free(rt->workers);
  }
  hy__event_free(rt);
  hy__task_release_handles(rt);
  hy__task_tables_free(rt);
  hy__hubs_free(rt);
  if (rt->stacks)
    hy_stack_cache_destroy(rt->stacks);
  for (int i = 0; i < HY__XSTACK_CLASSES; i++)
    if (rt->xstacks[i])
      hy_stack_cache_destroy(rt->xstacks[i]);
  hy__barrier_destroy(&rt->barrier);
  hy__cond_destroy(&rt->cv);
  hy__mutex_destroy(&rt->mu);
  hy__tls_free(rt->tls);
  hy__mem_free(rt);
}

int hy_runtime_new(const hy_options_t *o, hy_runtime_t **out) {
  if (!out)
    return HY_EINVAL;
  *out = NULL;
  hy_options_t opt = HY_OPTIONS_INIT;
  if (o) {
    if (o->size < offsetof(hy_options_t, workers) + sizeof(int) ||
        o->size > sizeof opt)
      return HY_EINVAL;
    memcpy(&opt, o, o->size);
    opt.size = sizeof opt;
  }
  read_env(&opt);
  if (opt.backend < 0 || opt.backend > HY_BACKEND_IOCP || opt.workers < -1)
    return HY_EINVAL;
  if (opt.stack_size == 0)
    opt.stack_size = 64 * 1024;
  if (opt.shutdown_grace <= 0)
    opt.shutdown_grace = HY_SEC(2);
  if (opt.blocking_threads <= 0)
    opt.blocking_threads = 4;

  hy_runtime_t *rt = hy__mem_calloc(1, sizeof *rt);
  if (!rt)
    return HY_ENOMEM;
  rt->opt = opt;
  rt->nworkers = opt.workers < 0 ? hy__ncpu() : opt.workers;
  /* Parks for a quiet wait need no fence if a cancel can run a
   * process-wide barrier instead (runtime/wait.c, runtime/task.c). */
  rt->park_fence = !hy__heavy_barrier_init();
  rt->grace = opt.shutdown_grace;
  int n = rt->nworkers ? rt->nworkers : 1;
  int rc = hy__tls_new(&rt->tls);
  if (rc < 0) {
    hy__mem_free(rt);
    return rc;
  }
  hy__mutex_init(&rt->mu);
  hy__cond_init(&rt->cv);
  hy__barrier_init(&rt->barrier, n);
  if ((rc = hy__task_tables_init(rt)) < 0 || (rc = hy__hubs_init(rt)) < 0 ||
      (rc = hy_stack_cache_create(opt.stack_size, 0, &rt->stacks)) < 0)
    goto fail;
  rt->workers = hy__mem_calloc((size_t)n, sizeof *rt->workers);
  if (!rt->workers) {
    rc = HY_ENOMEM;
    goto fail;
  }
  for (int i = 0; i < n; i++) {
    hy__worker *w = &rt->workers[i];
    w->rt = rt;
    w->id = i;
    int backend = i == 0 ? opt.backend : rt->backend;
    rc = hy__port_open_for(&w->port, backend, i ? rt->workers[0].port : NULL,
                           rt->nworkers ? rt->nworkers : 1);
    if (rc < 0)
      goto fail;
    if (i == 0)
      rt->backend = hy__port_backend(w->port);
  }
  if (opt.verbose)
    fprintf(stderr, "hydra: workers=%d backend=%s stack=%zu grace=%lldms\n",
            rt->nworkers, hy__port_backend_name(rt->workers[0].port),
            opt.stack_size, (long long)(opt.shutdown_grace / 1000000));
  for (int i = 0; i < rt->nworkers; i++) {
    hy__worker *w = &rt->workers[i];
    char name[32];
    snprintf(name, sizeof name, "hydra-w%d", i);
    rc = hy__thread_start(&w->thread, hy__worker_main, w, 256 * 1024, name);
    if (rc < 0) {
      /* Stop the ones already running, then fail. */
      rt->nworkers = i;
      hy__barrier_destroy(&rt->barrier);
      hy__barrier_init(&rt->barrier, i ? i : 1);
      hy_runtime_shutdown(rt, 0);
      for (int k = 0; k < i; k++)
        hy__thread_join(rt->workers[k].thread);
      rt->nworkers = n; /* so free_runtime closes every port */
      goto fail;
    }
    atomic_fetch_add(&rt->threads_started, 1);
  }
  *out = rt;
  return 0;
fail:
  free_runtime(rt);
  return rc;
}

int hy_runtime_run(hy_runtime_t *rt) {
  if (!rt)
    return HY_EINVAL;
  if (hy__worker_current(rt))
    return HY_EBUSY;
  if (rt->nworkers == 0) {
    int zero = 0;
    if (!atomic_compare_exchange_strong(&rt->host_busy, &zero, 1))
      return HY_EBUSY;
    hy__worker *w = &rt->workers[0];
    hy__tls_set(rt->tls, w);
    hy__fiber_worker_init(w);
    while (atomic_load(&rt->phase) != HY__PH_DONE) {
      if (atomic_load(&rt->phase) != HY__PH_RUNNING) {
        hy__shutdown_worker_step(w);
      } else {
        w->loop_phase = HY__PH_RUNNING;
        hy__worker_run_once(w, -1);
      }
    }
    hy__tls_set(rt->tls, NULL);
    atomic_store(&rt->host_busy, 0);
    return 0;
  }
  hy__mutex_lock(&rt->mu);
  while (atomic_load(&rt->phase) != HY__PH_DONE)
    hy__cond_wait(&rt->cv, &rt->mu, HY_FOREVER);
  hy__mutex_unlock(&rt->mu);
  return 0;
}

int hy_runtime_run_once(hy_runtime_t *rt, int64_t timeout) {
  if (!rt)
    return HY_EINVAL;
  if (rt->nworkers != 0)
    return HY_EINVAL;
  if (atomic_load(&rt->phase) == HY__PH_DONE)
    return HY_ESHUTDOWN;
  int zero = 0;
  if (!atomic_compare_exchange_strong(&rt->host_busy, &zero, 1))
    return HY_EBUSY;
  hy__worker *w = &rt->workers[0];
  hy__tls_set(rt->tls, w);
  hy__fiber_worker_init(w);
  int total = 0;
  if (atomic_load(&rt->phase) != HY__PH_RUNNING) {
    hy__shutdown_worker_step(w);
    total = 1;
  } else {
    w->loop_phase = HY__PH_RUNNING;
    total = hy__worker_run_once(w, timeout < 0 ? -1 : timeout);
    /* Run what the first round made ready, a bounded number of times so a
     * task that keeps yielding cannot hold the host's frame. */
    for (int i = 0; i < 8; i++) {
      int k = hy__worker_run_once(w, 0);
      if (k <= 0)
        break;
      total += k;
    }
  }
  hy__tls_set(rt->tls, NULL);
  atomic_store(&rt->host_busy, 0);
  return total;
}

intptr_t hy_runtime_os_handle(hy_runtime_t *rt) {
  if (!rt || rt->nworkers != 0)
    return -1;
  return hy__port_os_handle(rt->workers[0].port);
}

int hy_runtime_post(hy_runtime_t *rt, void (*fn)(void *), void *arg) {
  if (!rt || !fn)
    return HY_EINVAL;
  if (atomic_load(&rt->phase) >= HY__PH_FINALIZE)
    return HY_ESHUTDOWN;
  post_rec *p = hy__mem_calloc(1, sizeof *p);
  if (!p)
    return HY_ENOMEM;
  p->fn = fn;
  p->arg = arg;
  p->c.fn = post_done;
  p->op.kind = HY__OP_POST;
  p->op.data = &p->c;
  hy__worker *w = hy__worker_current(rt);
  if (!w) {
    int n = rt->nworkers ? rt->nworkers : 1;
    w = &rt->workers[(unsigned)atomic_fetch_add(&rt->rr, 1) % (unsigned)n];
  } else {
    HY__STAT_INC(w->st.posts);
  }
  int rc = hy__port_post(w->port, &p->op);
  if (rc < 0) {
    hy__mem_free(p);
    return rc;
  }
  return 0;
}

int hy_runtime_close(hy_runtime_t *rt) {
  if (!rt)
    return HY_EINVAL;
  if (hy__worker_current(rt))
    return HY_EBUSY;
  if (atomic_load(&rt->phase) == HY__PH_RUNNING) {
    if (hy__alive(rt) > 0)
      return HY_EBUSY;
    hy_runtime_shutdown(rt, 0);
  } else {
    hy_runtime_shutdown(rt, -1); /* wait for the one in progress */
  }
  for (int i = 0; i < rt->nworkers; i++)
    hy__thread_join(rt->workers[i].thread);
  hy__blocking_stop(rt);
  free_runtime(rt);
  return 0;
}

const char *hy_runtime_backend_name(hy_runtime_t *rt) {
  return rt ? hy__port_backend_name(rt->workers[0].port) : "none";
}

int hy_runtime_workers(hy_runtime_t *rt) { return rt ? rt->nworkers : 0; }

int hy_runtime_stats(hy_runtime_t *rt, hy_runtime_stats_t *s) {
  if (!rt || !s || s->size < sizeof *s)
    return HY_EINVAL;
  hy__wstats w;
  memset(&w, 0, sizeof w);
  hy__worker_stats_sum(rt, &w);
  memset((char *)s + sizeof s->size, 0, sizeof *s - sizeof s->size);
  s->version = HY_RUNTIME_STATS_VERSION;
  s->tasks_spawned = w.spawned + atomic_load(&rt->spawned_outside);
  s->tasks_alive = (uint64_t)hy__alive(rt);
  s->tasks_cancelled = w.cancelled;
  s->switches = w.switches;
  s->steals = w.steals;
  s->completions = w.completions;
  s->wakeups = atomic_load(&rt->wakeups);
  s->parks = w.parks;
  s->posts = w.posts;
  s->timers_fired = w.timers_fired;
  return 0;
}

typedef struct {
  FILE *f;
  int64_t now;
} dump_ctx;

/* pre: t->lock (hy__task_each). */
static void dump_task(hy__task *t, void *arg) {
  dump_ctx *d = arg;
  const char *st = !atomic_load_explicit(&t->started, memory_order_relaxed)
                       ? "new"
                   : atomic_load(&t->wstate) == HY__PARKED ? "parked"
                                                           : "ready";
  const char *what = atomic_load_explicit(&t->await_what, memory_order_relaxed);
  int64_t since = atomic_load_explicit(&t->await_since, memory_order_relaxed);
  if (what)
    fprintf(d->f, "  task %u:%u %-20s %-7s awaiting %s for %.3f ms%s\n",
            t->slot + 1, t->gen, t->name, st, what,
            (double)(d->now - since) / 1e6,
            atomic_load(&t->cancelled) ? " (cancelled)" : "");
  else
    fprintf(d->f, "  task %u:%u %-20s %-7s%s\n", t->slot + 1, t->gen, t->name,
            st, atomic_load(&t->cancelled) ? " (cancelled)" : "");
}

void hy_runtime_dump(hy_runtime_t *rt, FILE *f) {
  if (!rt || !f)
    return;
  dump_ctx d = {f, hy_now()};
  fprintf(f, "hydra: %ld live task(s), backend %s, %d worker(s)\n",
          (long)hy__alive(rt), hy_runtime_backend_name(rt),
          rt->nworkers);
  hy__task_each(rt, dump_task, &d);
}
