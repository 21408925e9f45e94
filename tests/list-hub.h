/* list-hub.h - tests of this area: TEST(name, flags). */
/* hub events */
TEST(hub_set_reaches_idle_consumers, 0)
TEST(hub_sets_coalesce, 0)
TEST(hub_manual_reset, 0)
TEST(hub_consumer_ops_are_local, T_BACKEND)
TEST(hub_destroy_wakes_closed, T_BACKEND)
TEST(hub_names_and_errors, 0)
TEST(hub_wait_deadline_and_cancel, T_BACKEND)
TEST(hub_foreign_thread_waits, T_BACKEND)
TEST(hub_os_handle, T_BACKEND)
#ifdef _WIN32
TEST(hub_os_handle_manual, 0)
/* seed 000's Win32 API (hydra/hub_win.h) */
TEST(hubwin_set_releases_each_once, 0)
TEST(hubwin_consumer_ops_are_local, 0)
TEST(hubwin_manual_reset, 0)
TEST(hubwin_destroy_and_errors, 0)
TEST(hubwin_rounds_with_churn, 0)
TEST(hubwin_handle_in_child, 0)
TEST(hubwin_connect_from_other_process, 0)
TEST(hubwin_destroy_while_other_process_connects, 0)
/* signals: console control events */
TEST(sigwin_ctrl_c_reaches_receivers, T_BACKEND)
TEST(sigwin_break_and_term_events, T_BACKEND)
TEST(sigwin_unwanted_goes_on, 0)
TEST(sigwin_shutdown_by_close_event, T_BACKEND)
TEST(sigwin_errors, 0)
#endif
TEST(hub_os_handle_rounds, T_BACKEND)
TEST(hub_10k_consumers_released_once, T_BACKEND | T_SLOW)
TEST(hub_stress_rounds, T_BACKEND | T_SLOW)
TEST(hub_select_arm, 0)
TEST(hub_sys_shutdown_at_quiesce, T_BACKEND)
TEST(hub_shared_consumer_is_one_event, T_BACKEND)
TEST(hub_embedded_host, T_BACKEND)
#ifndef _WIN32
/* signals */
TEST(signal_counts_and_order, 0)
TEST(signal_every_receiver_every_runtime, T_BACKEND)
TEST(signal_task_awaits_kill, T_BACKEND)
TEST(signal_reaches_parked_main, T_BACKEND)
TEST(signal_restores_old_handlers, 0)
TEST(signal_counts_survive_bursts, T_BACKEND)
TEST(signal_sigquit_dumps_tasks, 0)
TEST(signal_errors, 0)
TEST(shutdown_by_signal, T_BACKEND)
#endif
