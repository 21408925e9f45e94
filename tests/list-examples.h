/* list-examples.h - tests of this area: TEST(name, flags). */
TEST(example_hello, T_BACKEND)
TEST(example_worker_pool, T_BACKEND)
TEST(example_game_loop, T_BACKEND)
TEST(example_supervisor, T_BACKEND)
/* These drive the server with POSIX process control (spawn, signals). */
#ifndef _WIN32
TEST(example_pubsub_server, T_BACKEND)
TEST(example_pubsub_server_idle, T_BACKEND)
#endif
