/* list-event.h - tests of this area: TEST(name, flags). */
#ifndef _WIN32
TEST(event_object_basics, 0)
TEST(event_serialize_roundtrip, 0)
TEST(event_deserialize_garbage, T_SLOW)
TEST(event_fuzz_corpus, 0)
TEST(event_tree_delivery, 0)
TEST(event_limit_rules, 0)
TEST(event_priority_fairness, 0)
TEST(event_resend_walks_all, 0)
TEST(event_unicast_concurrent, T_BACKEND)
TEST(event_multicast_concurrent, T_BACKEND)
TEST(event_overflow_block_stress, T_BACKEND)
TEST(event_overflow_drop_policies, 0)
TEST(event_expiry, T_BACKEND)
TEST(event_expiry_stress, T_BACKEND)
#endif
