/* list-examples.h - tests of this area: TEST(name, flags). */
TEST(example_hello, T_BACKEND)
/* These need the Windows socket layer (net/) or POSIX process control. */
#ifndef _WIN32
TEST(example_worker_pool, T_BACKEND)
TEST(example_game_loop, T_BACKEND)
TEST(example_pubsub_server, T_BACKEND)
TEST(example_pubsub_server_idle, T_BACKEND)
#endif
