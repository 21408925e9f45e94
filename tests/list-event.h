/* list-event.h - tests of this area: TEST(name, flags). */
