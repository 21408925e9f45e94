/* list-runtime.h - tests of this area: TEST(name, flags). */
/* The runtime's Windows backend is not built yet: these run on Linux. */
#ifndef _WIN32
/* runtime core */
TEST(rt_spawn_join, T_BACKEND)
TEST(rt_yield_interleaves, T_BACKEND)
TEST(rt_sleep_never_early, T_BACKEND)
TEST(rt_join_deadline_and_cancel, T_BACKEND)
TEST(rt_cancel_every_await, T_BACKEND)
TEST(rt_handles, T_BACKEND)
TEST(rt_million_tasks, T_BACKEND | T_SLOW)
TEST(rt_spawn_tree_across_workers, T_BACKEND)
TEST(rt_two_runtimes, T_BACKEND)
TEST(rt_embedded_run_once, T_BACKEND)
TEST(rt_embedded_poll_os_handle, T_BACKEND)
TEST(rt_post_from_threads, T_BACKEND)
TEST(rt_fairness_spinner_vs_sleeper, T_BACKEND)
TEST(rt_idle_uses_no_cpu, T_BACKEND | T_SERIAL)
TEST(rt_stack_overflow_named, 0)
TEST(rt_task_locals, T_BACKEND)
TEST(rt_blocking_pool, T_BACKEND)
TEST(rt_stats_and_dump, T_BACKEND)
TEST(rt_options, 0)
TEST(rt_timer_heap_million, 0)
TEST(rt_no_stack_is_an_error, 0)
/* shutdown */
TEST(shutdown_phases_in_order, T_BACKEND)
TEST(shutdown_drain_follows_activity, T_BACKEND)
TEST(shutdown_from_task_and_run, T_BACKEND)
TEST(shutdown_concurrent_callers, T_BACKEND)
TEST(shutdown_embedded, T_BACKEND)
TEST(shutdown_terminate_arm_ready, 0)
#endif
