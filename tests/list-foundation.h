/* list-foundation.h - tests of the error table and the runner itself. */
TEST(error_table, 0)
TEST(error_translate, 0)
TEST(runner_child_crash_is_isolated, 0)
