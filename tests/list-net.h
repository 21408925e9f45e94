/* list-net.h - tests of this area: TEST(name, flags). */
