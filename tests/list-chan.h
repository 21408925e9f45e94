/* list-chan.h - tests of this area: TEST(name, flags). */
