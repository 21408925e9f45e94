/* list-win.h - tests of the Windows backend: TEST(name, flags). */
#ifdef _WIN32
TEST(win_error_translate, 0)
TEST(win_accept_many_pending, 0)
TEST(win_cancel_then_reuse, 0)
TEST(win_connect_and_errors, 0)
TEST(win_udp_roundtrip, 0)
TEST(win_poll_readable, 0)
TEST(win_posts_many_threads_once, 0)
TEST(win_wakes_targeted_never_lost, 0)
TEST(win_timeout_ops, 0)
TEST(win_os_handle_signalled, 0)
TEST(win_runtime_os_handle_msgwait, 0)
TEST(win_task_io_across_workers, 0)
TEST(win_stack_overflow_child, 0)
TEST(win_console_ctrl_mapping, 0)
TEST(win_console_ctrl_generated, 0)
TEST(win_console_break_generated, 0)
#endif
