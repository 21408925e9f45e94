/* list-nomem.h - out-of-memory sweeps (tests/test-nomem.c): TEST(name, flags). */
TEST(nomem_chan_send_recv, T_BACKEND | T_SLOW)
TEST(nomem_select_arms, T_BACKEND | T_SLOW)
TEST(nomem_task_spawn_join_cancel, T_BACKEND | T_SLOW)
TEST(nomem_hub_events, T_BACKEND | T_SLOW)
TEST(nomem_timers_never_early, T_BACKEND | T_SLOW)
TEST(nomem_runtime_new_post_shutdown, T_BACKEND | T_SLOW)
TEST(nomem_batcher_flusher, T_BACKEND)
TEST(nomem_task_reap_unrun, 0)
