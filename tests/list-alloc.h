/* list-alloc.h - tests of this area: TEST(name, flags). */
