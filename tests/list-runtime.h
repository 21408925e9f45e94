/* list-runtime.h - tests of this area: TEST(name, flags). */
