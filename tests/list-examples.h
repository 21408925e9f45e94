/* list-examples.h - tests of this area: TEST(name, flags). */
TEST(example_hello, T_BACKEND)
