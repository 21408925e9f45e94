/* list-examples.h - tests of this area: TEST(name, flags). */
