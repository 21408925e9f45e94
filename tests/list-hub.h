/* list-hub.h - tests of this area: TEST(name, flags). */
