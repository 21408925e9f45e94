/* list-port.h - tests of the completion port (runtime/port.h): TEST(name, flags). */
TEST(port_nop_post_and_args, T_BACKEND)
TEST(port_tcp_ops, T_BACKEND)
TEST(port_fd_reuse_without_forget, T_BACKEND)
#ifndef _WIN32 /* Linux backends only */
TEST(port_epoll_fifo, 0)
TEST(port_epoll_fresh_look, 0)
TEST(port_pooled_stream, T_BACKEND)
#endif
TEST(port_udp_ops, T_BACKEND)
TEST(port_reset_and_refused, T_BACKEND)
TEST(port_timeouts_never_early, T_BACKEND)
TEST(port_cancel_in_flight, T_BACKEND)
TEST(port_cancel_race_stress, T_BACKEND)
TEST(port_cancel_timeout_race, T_BACKEND)
TEST(port_post_from_threads, T_BACKEND)
TEST(port_wake_semantics, T_BACKEND)
TEST(port_wake_never_lost, T_BACKEND)
TEST(port_os_handle_readable, T_BACKEND)
TEST(port_many_in_flight, T_BACKEND | T_SLOW)
TEST(port_error_paths, T_BACKEND)
#ifndef _WIN32
TEST(port_uring_fallback, 0)
TEST(port_look_before_block, T_BACKEND)
TEST(port_look_judge, 0)
TEST(port_look_judged, T_BACKEND)
TEST(port_associate_accepted, T_BACKEND)
#endif
TEST(port_io_await, T_BACKEND)
