/* test-event.c - the event model: event objects and their wire form,
 * channel trees, picking limits and priorities, expiry, overflow policies,
 * brokers and multiplexors, the system broker, request/reply, batching. */
/* Built on POSIX only for now: its registrations in list-event.h are too
 * (the runtime's Windows backend is not there yet). */
#ifndef _WIN32
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "alloc/mem.h"
#include "hydra.h"
#include "runtime/internal.h"
#include "runtime/wait.h"
#include "rt_util.h"
#include "test.h"

static hy_event_t *i64_event(int64_t v, hy_time_t expiry) {
  hy_event_t *ev;
  ASSERT_OK(hy_event_new(&hy_event_i64, &v, sizeof v, expiry, &ev));
  return ev;
}

static int64_t i64_of(const hy_event_t *ev) {
  size_t len;
  const void *p = hy_event_data(ev, &len);
  ASSERT_EQ(len, 8);
  int64_t v;
  memcpy(&v, p, 8);
  return v;
}

static hy_receiver_t *sub(hy_broker_t *b, const char *path, uint32_t cap,
                          int policy, int64_t prio) {
  hy_recv_opts_t o = HY_RECV_OPTS_INIT;
  o.capacity = cap;
  o.overflow = policy;
  o.priority = prio;
  hy_receiver_t *r;
  ASSERT_OK(hy_subscribe(b, path, &o, &r));
  return r;
}

static uint32_t queued(hy_receiver_t *r) {
  hy_recv_stats_t s = {.size = sizeof s};
  ASSERT_OK(hy_receiver_stats(r, &s));
  return s.queued;
}

static uint64_t dropped(hy_receiver_t *r) {
  hy_recv_stats_t s = {.size = sizeof s};
  ASSERT_OK(hy_receiver_stats(r, &s));
  return s.dropped;
}

static hy_channel_info_t info(hy_broker_t *b, const char *path) {
  hy_channel_info_t i = {.size = sizeof i};
  ASSERT_OK(hy_channel_info(b, path, &i));
  return i;
}

/* Reads everything queued, returning the count (and unrefs). */
static int drain(hy_receiver_t *r) {
  int n = 0;
  hy_event_t *ev;
  while (hy_receiver_try_read(r, &ev) == 0) {
    hy_event_unref(ev);
    n++;
  }
  return n;
}

/* ------------------------------------------------------------- objects */

static int destroyed;
static void count_destroy(void *payload, size_t len) {
  (void)payload;
  (void)len;
  destroyed++;
}
static const hy_event_type_t counted_type = {"test.counted", 4, count_destroy,
                                             NULL, NULL};

TEST_IMPL(event_object_basics) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_event_t *ev;
  uint32_t v = 7;
  ASSERT_ERR(hy_event_new(&counted_type, &v, 3, HY_FOREVER, &ev), HY_EINVAL);
  ASSERT_ERR(hy_event_new(NULL, &v, 4, HY_FOREVER, &ev), HY_EINVAL);
  ASSERT_ERR(hy_event_new(&counted_type, &v, 4, HY_FOREVER, NULL), HY_EINVAL);
  ASSERT_OK(hy_event_new(&counted_type, &v, 4, hy_now() + HY_SEC(10), &ev));
  ASSERT(hy_event_type_of(ev) == &counted_type);
  size_t len;
  ASSERT_EQ(*(const uint32_t *)hy_event_data(ev, &len), 7);
  ASSERT_EQ(len, 4);
  ASSERT_EQ(hy_event_expired(ev, hy_now()), 0);
  ASSERT_EQ(hy_event_expired(ev, hy_now() + HY_SEC(11)), 1);
  ASSERT_EQ(hy_event_picks(ev), 0);
  ASSERT_OK(hy_event_set_reply(ev, "reply/here"));
  ASSERT(strcmp(hy_event_reply_to(ev), "reply/here") == 0);
  ASSERT_ERR(hy_event_set_reply(ev, ""), HY_EINVAL);
  /* References: destroy runs once, at the last unref. */
  destroyed = 0;
  hy_event_ref(ev);
  hy_event_unref(ev);
  ASSERT_EQ(destroyed, 0);

  /* Chaining inherits expiry and reply channel. */
  hy_event_t *d;
  ASSERT_OK(hy_event_derive(ev, &hy_event_text, "next", 4, &d));
  ASSERT_EQ(hy_event_expiry(d), hy_event_expiry(ev));
  ASSERT(strcmp(hy_event_reply_to(d), "reply/here") == 0);
  hy_event_unref(d);

  /* Sending makes it immutable. */
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "c", 0));
  ASSERT_EQ(hy_send_to(b, "c", ev, HY_FOREVER), 0);
  ASSERT_ERR(hy_event_set_reply(ev, "x"), HY_EPERM);
  hy_event_unref(ev);
  ASSERT_EQ(destroyed, 1);
  hy_event_unref(NULL);

  /* Out of memory is an error, not a crash (where the allocator can be
   * made to fail: the interim one cannot).  Only this thread's allocations
   * count: the workers may be starting up and allocating too. */
  hy__mem_fail_here_at(1);
  void *probe = hy__mem_alloc(16);
  hy__mem_free(probe);
  if (!probe) {
    hy__mem_fail_here_at(1);
    ASSERT_ERR(hy_event_new(&hy_event_bytes, "abc", 3, HY_FOREVER, &ev), HY_ENOMEM);
    hy__mem_fail_here_at(1);
    hy_receiver_t *r;
    ASSERT_ERR(hy_subscribe(b, "c", NULL, &r), HY_ENOMEM);
    hy__mem_fail_here_at(2);
    ASSERT_ERR(hy_subscribe(b, "c", NULL, &r), HY_ENOMEM);
  }
  hy__mem_fail_at(0);

  /* Type registry. */
  ASSERT_OK(hy_event_type_register(rt, &counted_type));
  ASSERT_OK(hy_event_type_register(rt, &counted_type));
  static const hy_event_type_t clash = {"test.counted", 0, NULL, NULL, NULL};
  ASSERT_ERR(hy_event_type_register(rt, &clash), HY_EEXIST);
  static const hy_event_type_t clash2 = {"i64", 0, NULL, NULL, NULL};
  ASSERT_ERR(hy_event_type_register(rt, &clash2), HY_EEXIST);
  ASSERT(hy_event_type_find(rt, "test.counted") == &counted_type);
  ASSERT(hy_event_type_find(rt, "batch") == &hy_event_batch);
  ASSERT(hy_event_type_find(rt, "nope") == NULL);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* --------------------------------------------------------- wire form */

static hy_event_t *roundtrip(hy_runtime_t *rt, hy_event_t *ev) {
  long n = hy_event_serialize(ev, NULL, 0);
  ASSERT_GT(n, 0);
  unsigned char *buf = malloc((size_t)n);
  ASSERT_EQ(hy_event_serialize(ev, buf, (size_t)n), n);
  hy_event_t *back;
  ASSERT_OK(hy_event_deserialize(rt, buf, (size_t)n, &back));
  /* Every truncation and every extension is refused. */
  for (long k = 0; k < n; k++) {
    hy_event_t *bad = NULL;
    ASSERT_ERR(hy_event_deserialize(rt, buf, (size_t)k, &bad), HY_EPROTO);
    ASSERT(bad == NULL);
  }
  unsigned char *more = malloc((size_t)n + 1);
  memcpy(more, buf, (size_t)n);
  more[n] = 0;
  hy_event_t *bad;
  ASSERT_ERR(hy_event_deserialize(rt, more, (size_t)n + 1, &bad), HY_EPROTO);
  free(more);
  free(buf);
  return back;
}

static int same_bytes(const hy_event_t *a, const hy_event_t *b) {
  size_t la, lb;
  const void *pa = hy_event_data(a, &la), *pb = hy_event_data(b, &lb);
  return la == lb && memcmp(pa, pb, la) == 0 &&
         hy_event_type_of(a) == hy_event_type_of(b);
}

TEST_IMPL(event_serialize_roundtrip) {
  hy_runtime_t *rt = test_rt_new(0);
  hy_event_t *ev, *back;

  ASSERT_OK(hy_event_new(&hy_event_bytes, "\0\1\2\3", 4, HY_FOREVER, &ev));
  back = roundtrip(rt, ev);
  ASSERT(same_bytes(ev, back));
  ASSERT_EQ(hy_event_expiry(back), HY_FOREVER);
  hy_event_unref(back);
  hy_event_unref(ev);

  ASSERT_OK(hy_event_new(&hy_event_text, "hello", 5, hy_now() + HY_SEC(60), &ev));
  ASSERT_OK(hy_event_set_reply(ev, "reply/7"));
  back = roundtrip(rt, ev);
  ASSERT(same_bytes(ev, back));
  ASSERT(strcmp(hy_event_reply_to(back), "reply/7") == 0);
  /* The expiry travels as the time left: never later than the original. */
  ASSERT_LE(hy_event_expiry(back) - hy_event_expiry(ev), HY_SEC(1));
  ASSERT_GT(hy_event_expiry(back), hy_now() + HY_SEC(50));
  hy_event_unref(back);
  hy_event_unref(ev);
  /* Text with a NUL inside is garbage. */
  unsigned char buf[256];
  ASSERT_OK(hy_event_new(&hy_event_text, "abc", 3, HY_FOREVER, &ev));
  long n = hy_event_serialize(ev, buf, sizeof buf);
  buf[n - 2] = 0;
  hy_event_t *bad;
  ASSERT_ERR(hy_event_deserialize(rt, buf, (size_t)n, &bad), HY_EPROTO);
  hy_event_unref(ev);

  ev = i64_event(-1234567890123LL, HY_FOREVER);
  back = roundtrip(rt, ev);
  ASSERT_EQ(i64_of(back), -1234567890123LL);
  hy_event_unref(back);
  hy_event_unref(ev);

  hy_phase_event_t ph = {HY_PHASE_DRAIN};
  ASSERT_OK(hy_event_new(&hy_event_phase, &ph, sizeof ph, HY_FOREVER, &ev));
  back = roundtrip(rt, ev);
  ASSERT(same_bytes(ev, back));
  hy_event_unref(back);
  hy_event_unref(ev);
  ph.phase = 99;
  ASSERT_OK(hy_event_new(&hy_event_phase, &ph, sizeof ph, HY_FOREVER, &ev));
  n = hy_event_serialize(ev, buf, sizeof buf);
  ASSERT_ERR(hy_event_deserialize(rt, buf, (size_t)n, &bad), HY_EPROTO);
  hy_event_unref(ev);

  hy_task_event_t te;
  memset(&te, 0, sizeof te);
  te.task = 0x1234567800000009ULL;
  te.reason = HY_TASK_CANCELLED;
  strcpy(te.name, "worker-3");
  ASSERT_OK(hy_event_new(&hy_event_task, &te, sizeof te, HY_FOREVER, &ev));
  back = roundtrip(rt, ev);
  ASSERT(same_bytes(ev, back));
  hy_event_unref(back);
  hy_event_unref(ev);

  hy_signal_event_t se = {15};
  ASSERT_OK(hy_event_new(&hy_event_signal, &se, sizeof se, HY_FOREVER, &ev));
  back = roundtrip(rt, ev);
  ASSERT(same_bytes(ev, back));
  hy_event_unref(back);
  hy_event_unref(ev);

  char lb[sizeof(hy_log_event_t) + 6];
  hy_log_event_t *le = (hy_log_event_t *)lb;
  le->level = 3;
  memcpy(le->text, "hello", 6);
  ASSERT_OK(hy_event_new(&hy_event_log, lb, sizeof lb, HY_FOREVER, &ev));
  back = roundtrip(rt, ev);
  ASSERT(same_bytes(ev, back));
  hy_event_unref(back);
  hy_event_unref(ev);

  /* Batches, nested. */
  hy_event_t *items[3];
  items[0] = i64_event(1, HY_FOREVER);
  ASSERT_OK(hy_event_new(&hy_event_text, "two", 3, HY_FOREVER, &items[1]));
  ASSERT_OK(hy_event_batch_new(items, 2, &items[2]));
  hy_event_t *outer;
  ASSERT_OK(hy_event_batch_new(items, 3, &outer));
  back = roundtrip(rt, outer);
  size_t k;
  hy_event_t *const *v = hy_event_batch_items(back, &k);
  ASSERT_EQ(k, 3);
  ASSERT_EQ(i64_of(v[0]), 1);
  ASSERT(same_bytes(v[1], items[1]));
  size_t k2;
  hy_event_t *const *v2 = hy_event_batch_items(v[2], &k2);
  ASSERT_EQ(k2, 2);
  ASSERT_EQ(i64_of(v2[0]), 1);
  ASSERT(hy_event_batch_items(v[0], &k2) == NULL && k2 == 0);
  hy_event_unref(back);
  hy_event_unref(outer);
  for (int i = 0; i < 3; i++)
    hy_event_unref(items[i]);

  /* Nesting deeper than the limit is refused. */
  hy_event_t *deep = i64_event(0, HY_FOREVER);
  for (int i = 0; i < 12; i++) {
    hy_event_t *w;
    ASSERT_OK(hy_event_batch_new(&deep, 1, &w));
    hy_event_unref(deep);
    deep = w;
  }
  n = hy_event_serialize(deep, NULL, 0);
  unsigned char *db = malloc((size_t)n);
  ASSERT_EQ(hy_event_serialize(deep, db, (size_t)n), n);
  ASSERT_ERR(hy_event_deserialize(rt, db, (size_t)n, &bad), HY_EPROTO);
  free(db);
  hy_event_unref(deep);

  /* A registered user type round-trips; an unknown one is HY_ENOENT. */
  ASSERT_OK(hy_event_new(&counted_type, "abcd", 4, HY_FOREVER, &ev));
  n = hy_event_serialize(ev, buf, sizeof buf);
  ASSERT_ERR(hy_event_deserialize(rt, buf, (size_t)n, &bad), HY_ENOENT);
  ASSERT_OK(hy_event_type_register(rt, &counted_type));
  destroyed = 0;
  back = roundtrip(rt, ev);
  ASSERT(same_bytes(ev, back));
  hy_event_unref(back);
  hy_event_unref(ev);
  ASSERT_EQ(destroyed, 2);
  ASSERT_ERR(hy_event_deserialize(rt, NULL, 5, &bad), HY_EINVAL);
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* Random garbage and random mutations of valid forms never crash and
 * either fail cleanly or produce an event that serializes again. */
static void feed_bytes(hy_runtime_t *rt, const unsigned char *p, size_t n) {
  hy_event_t *ev = NULL;
  int rc = hy_event_deserialize(rt, p, n, &ev);
  if (rc == 0) {
    ASSERT(ev != NULL);
    long m = hy_event_serialize(ev, NULL, 0);
    ASSERT_GT(m, 0);
    hy_event_unref(ev);
  } else {
    ASSERT(rc == HY_EPROTO || rc == HY_ENOENT);
    ASSERT(ev == NULL);
  }
}

TEST_IMPL(event_deserialize_garbage) {
  hy_runtime_t *rt = test_rt_new(0);
  hy_event_t *items[2];
  items[0] = i64_event(5, HY_FOREVER);
  ASSERT_OK(hy_event_new(&hy_event_text, "xyz", 3, hy_now() + HY_SEC(5), &items[1]));
  hy_event_t *batch;
  ASSERT_OK(hy_event_batch_new(items, 2, &batch));
  unsigned char good[512], buf[512];
  long n = hy_event_serialize(batch, good, sizeof good);
  ASSERT_GT(n, 0);
  for (int iter = 0; iter < 200000; iter++) {
    size_t len = (size_t)n;
    memcpy(buf, good, len);
    int flips = 1 + (int)(test_rand() % 4);
    for (int f = 0; f < flips; f++) {
      switch (test_rand() % 3) {
      case 0:
        buf[test_rand() % len] = (unsigned char)test_rand();
        break;
      case 1:
        len = test_rand() % (len + 1);
        break;
      default:
        if (len < sizeof buf)
          buf[len++] = (unsigned char)test_rand();
        break;
      }
      if (len == 0)
        break;
    }
    feed_bytes(rt, buf, len);
  }
  for (int iter = 0; iter < 20000; iter++) {
    size_t len = test_rand() % 64;
    for (size_t i = 0; i < len; i++)
      buf[i] = (unsigned char)test_rand();
    if (len >= 4 && iter % 2)
      memcpy(buf, "HYE1", 4);
    feed_bytes(rt, buf, len);
  }
  hy_event_unref(batch);
  hy_event_unref(items[0]);
  hy_event_unref(items[1]);
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* The fuzz corpus (tests/fuzz/corpus/event), run as a normal test. */
TEST_IMPL(event_fuzz_corpus) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", test_exe());
  char *slash = strrchr(dir, '/');
  ASSERT(slash);
  strcpy(slash, "/../../tests/fuzz/corpus/event");
  DIR *d = opendir(dir);
  if (!d) {
    strcpy(dir, "tests/fuzz/corpus/event");
    d = opendir(dir);
  }
  ASSERT(d != NULL);
  hy_runtime_t *rt = test_rt_new(0);
  int files = 0, good = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "rb");
    ASSERT(f);
    unsigned char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    hy_event_t *ev = NULL;
    if (hy_event_deserialize(rt, buf, n, &ev) == 0) {
      good++;
      hy_event_unref(ev);
    }
    feed_bytes(rt, buf, n);
    files++;
  }
  closedir(d);
  ASSERT_GE(files, 8);
  ASSERT_GE(good, 5);
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* ---------------------------------------------------------- the tree */

TEST_IMPL(event_tree_delivery) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "app", &b));
  ASSERT_OK(hy_channel_create(b, "app/orders/eu", 0));
  ASSERT_OK(hy_channel_create(b, "app/orders/us", 0));
  ASSERT_OK(hy_channel_create(b, "other", 0));
  hy_receiver_t *app = sub(b, "app", 100, 0, 0);
  hy_receiver_t *orders = sub(b, "app/orders", 100, 0, 0);
  hy_receiver_t *eu = sub(b, "app/orders/eu", 100, 0, 0);
  hy_receiver_t *us = sub(b, "app/orders/us", 100, 0, 0);
  hy_receiver_t *other = sub(b, "other", 100, 0, 0);
  hy_event_t *ev = i64_event(1, HY_FOREVER);
  ASSERT_EQ(hy_send_to(b, "app/orders/eu", ev, HY_FOREVER), 3);
  ASSERT_EQ(hy_send_to(b, "app/orders", ev, HY_FOREVER), 2);
  ASSERT_EQ(hy_send_to(b, "app", ev, HY_FOREVER), 1);
  ASSERT_EQ(hy_send_to(b, "app/orders/us", ev, HY_FOREVER), 3);
  ASSERT_EQ(queued(app), 4);
  ASSERT_EQ(queued(orders), 3);
  ASSERT_EQ(queued(eu), 1);
  ASSERT_EQ(queued(us), 1);
  ASSERT_EQ(queued(other), 0);
  /* Copies are logical: every receiver holds the same object. */
  hy_event_t *got;
  ASSERT_OK(hy_receiver_try_read(eu, &got));
  ASSERT(got == ev);
  hy_event_unref(got);
  ASSERT_EQ(hy_event_picks(ev), 9);
  hy_channel_info_t i = info(b, "app/orders/eu");
  ASSERT_EQ(i.sent, 1);
  ASSERT_EQ(i.delivered, 3);
  ASSERT_EQ(i.kind, HY_CHANNEL_PLAIN);
  hy_event_unref(ev);
  hy_unsubscribe(app);
  hy_unsubscribe(orders);
  hy_unsubscribe(eu);
  hy_unsubscribe(us);
  hy_unsubscribe(other);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

TEST_IMPL(event_limit_rules) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "work", 3));
  ASSERT_OK(hy_channel_create(b, "work/a", 3));
  ASSERT_OK(hy_channel_create(b, "work/b", 1));
  ASSERT_ERR(hy_channel_create(b, "work/c", 4), HY_EINVAL);
  ASSERT_ERR(hy_channel_create(b, "work/d", 0), HY_EINVAL);
  ASSERT_ERR(hy_channel_create(b, "work/a", 1), HY_EEXIST);
  ASSERT_ERR(hy_channel_create(b, "x", -1), HY_EINVAL);
  /* Made ancestors inherit the limit, so the rule holds all the way. */
  ASSERT_OK(hy_channel_create(b, "work/deep/er", 2));
  ASSERT_EQ(info(b, "work/deep").limit, 3);
  ASSERT_ERR(hy_channel_create(b, "work/deep/er2", 0), HY_EINVAL);
  /* Broadcast parent: any child limit. */
  ASSERT_OK(hy_channel_create(b, "free/one", 1));
  ASSERT_OK(hy_channel_create(b, "free/many", 7));
  ASSERT_EQ(info(b, "free").limit, 0);
  /* Bad paths. */
  const char *bad[] = {"", "/a", "a/", "a//b", NULL};
  for (int k = 0; bad[k]; k++)
    ASSERT_ERR(hy_channel_create(b, bad[k], 0), HY_EINVAL);
  ASSERT_ERR(hy_channel_create(b, NULL, 0), HY_EINVAL);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* Priority order and round-robin fairness among equals. */
TEST_IMPL(event_priority_fairness) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "jobs", 1));
  enum { N = 100000 };
  hy_receiver_t *r[4], *low;
  for (int i = 0; i < 4; i++)
    r[i] = sub(b, "jobs", N, HY_OVERFLOW_BLOCK, 0);
  low = sub(b, "jobs", N, HY_OVERFLOW_BLOCK, -1);
  hy_sender_t *s;
  ASSERT_OK(hy_publish(b, "jobs", &s));
  for (int i = 0; i < N; i++) {
    hy_event_t *ev = i64_event(i, HY_FOREVER);
    ASSERT_EQ(hy_send(s, ev, HY_FOREVER), 1);
    ASSERT_EQ(hy_event_picks(ev), 1);
    hy_event_unref(ev);
  }
  for (int i = 0; i < 4; i++) {
    ASSERT_GE(queued(r[i]), N / 4 * 95 / 100);
    ASSERT_LE(queued(r[i]), N / 4 * 105 / 100);
    /* Round-robin in runs: exact to within one run. */
    int got = drain(r[i]);
    ASSERT_GE(got, N / 4 - HY_PICK_RUN);
    ASSERT_LE(got, N / 4 + HY_PICK_RUN);
  }
  ASSERT_EQ(queued(low), 0);
  /* Raised priority takes everything; lowered again, shares. */
  ASSERT_OK(hy_receiver_set_priority(low, 10));
  ASSERT_EQ(hy_receiver_priority(low), 10);
  for (int i = 0; i < 1000; i++) {
    hy_event_t *ev = i64_event(i, HY_FOREVER);
    ASSERT_EQ(hy_send(s, ev, HY_FOREVER), 1);
    hy_event_unref(ev);
  }
  ASSERT_EQ(queued(low), 1000);
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(queued(r[i]), 0);
  /* Multicast 3 with priorities 10 (low), 0 x4: low + two of the four. */
  ASSERT_OK(hy_channel_create(b, "multi", 3));
  hy_receiver_t *m[4], *top = sub(b, "multi", 4000, 0, 10);
  for (int i = 0; i < 4; i++)
    m[i] = sub(b, "multi", 4000, 0, 0);
  for (int i = 0; i < 4000; i++) {
    hy_event_t *ev = i64_event(i, HY_FOREVER);
    ASSERT_EQ(hy_send_to(b, "multi", ev, HY_FOREVER), 3);
    hy_event_unref(ev);
  }
  ASSERT_EQ(queued(top), 4000);
  for (int i = 0; i < 4; i++) {
    ASSERT_GE(queued(m[i]), 2000 - 2 * HY_PICK_RUN);
    ASSERT_LE(queued(m[i]), 2000 + 2 * HY_PICK_RUN);
  }
  hy_sender_free(s);
  for (int i = 0; i < 4; i++) {
    hy_unsubscribe(r[i]);
    hy_unsubscribe(m[i]);
  }
  hy_unsubscribe(low);
  hy_unsubscribe(top);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* Resending walks every receiver once, then the event is dropped. */
TEST_IMPL(event_resend_walks_all) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "q", 0));
  ASSERT_OK(hy_channel_create(b, "q/uni", 1));
  enum { R = 5 };
  hy_receiver_t *r[R];
  for (int i = 0; i < R - 1; i++)
    r[i] = sub(b, "q/uni", 4, 0, i % 2); /* two priorities */
  r[R - 1] = sub(b, "q", 4, 0, 0);      /* an ancestor's receiver counts */
  hy_event_t *ev = i64_event(42, HY_FOREVER);
  int seen[R] = {0};
  for (int hop = 0; hop < R; hop++) {
    ASSERT_EQ(hy_send_to(b, "q/uni", ev, HY_FOREVER), 1);
    int who = -1;
    for (int i = 0; i < R; i++) {
      hy_event_t *got;
      if (hy_receiver_try_read(r[i], &got) == 0) {
        ASSERT(who == -1);
        ASSERT(got == ev);
        who = i;
        hy_event_unref(got);
      }
    }
    ASSERT(who >= 0);
    ASSERT_EQ(seen[who], 0);
    seen[who] = 1;
    /* Higher priority (1) first: r[1] and r[3] get it before the rest. */
    if (hop < 2)
      ASSERT(who == 1 || who == 3);
  }
  ASSERT_EQ(hy_send_to(b, "q/uni", ev, HY_FOREVER), 0);
  ASSERT_EQ(info(b, "q/uni").unpicked, 1);
  ASSERT_EQ(hy_event_picks(ev), R);
  hy_event_unref(ev);
  for (int i = 0; i < R; i++)
    hy_unsubscribe(r[i]);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* ------------------------------------------------------- concurrency */

typedef struct rarg {
  hy_runtime_t *rt;
  hy_receiver_t *r;
  uint8_t *seen; /* per event id */
  long got;
  uint64_t rnd;
  int batch;     /* read_many */
} rarg;

static uint64_t xs(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void *reader_task(void *p) {
  rarg *a = p;
  for (;;) {
    hy_event_t *evs[16];
    int n = a->batch ? hy_receiver_read_many(a->r, evs, 16, HY_FOREVER)
                     : hy_receiver_read(a->r, &evs[0], HY_FOREVER);
    if (n == HY_ECLOSED)
      break;
    ASSERT_GE(n, 0);
    if (!a->batch)
      n = 1;
    for (int i = 0; i < n; i++) {
      a->seen[i64_of(evs[i])]++;
      hy_event_unref(evs[i]);
      a->got++;
    }
    if (xs(&a->rnd) % 8 == 0)
      hy_yield(a->rt);
  }
  return NULL;
}

typedef struct sarg {
  hy_runtime_t *rt;
  hy_sender_t *s;
  int base, count, expect;
  uint64_t rnd;
} sarg;

static void *sender_task(void *p) {
  sarg *a = p;
  for (int i = 0; i < a->count; i++) {
    hy_event_t *ev = i64_event(a->base + i, HY_FOREVER);
    int rc = hy_send(a->s, ev, HY_FOREVER);
    ASSERT_EQ(rc, a->expect);
    hy_event_unref(ev);
    if (xs(&a->rnd) % 16 == 0)
      hy_yield(a->rt);
  }
  return NULL;
}

/* limit: 0 broadcast, else picking limit; R receivers, S senders x K. */
static void picking_run(int limit, int R, int S, int K, int policy_cap) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "top", limit));
  ASSERT_OK(hy_channel_create(b, "top/ch", limit));
  int total = S * K;
  rarg ra[16];
  hy_task_t rt_[16], st_[16];
  for (int i = 0; i < R; i++) {
    /* Half on the channel, half on its parent: all are eligible. */
    ra[i].rt = rt;
    ra[i].r = sub(b, i % 2 ? "top" : "top/ch", (uint32_t)policy_cap,
                  HY_OVERFLOW_BLOCK, 0);
    ra[i].seen = calloc((size_t)total, 1);
    ra[i].got = 0;
    ra[i].rnd = test_rand() | 1;
    ra[i].batch = i % 3 == 0;
    ASSERT_OK(hy_task_spawn(rt, reader_task, &ra[i], NULL, &rt_[i]));
  }
  sarg sa[16];
  int expect = limit == 0 ? R : (limit < R ? limit : R);
  for (int i = 0; i < S; i++) {
    sa[i].rt = rt;
    ASSERT_OK(hy_publish(b, "top/ch", &sa[i].s));
    sa[i].base = i * K;
    sa[i].count = K;
    sa[i].expect = expect;
    sa[i].rnd = test_rand() | 1;
    ASSERT_OK(hy_task_spawn(rt, sender_task, &sa[i], NULL, &st_[i]));
  }
  for (int i = 0; i < S; i++) {
    ASSERT_OK(hy_task_join(rt, st_[i], NULL));
    hy_sender_free(sa[i].s);
  }
  ASSERT_OK(hy_channel_delete(b, "top"));
  for (int i = 0; i < R; i++)
    ASSERT_OK(hy_task_join(rt, rt_[i], NULL));
  long sum = 0;
  for (int e = 0; e < total; e++) {
    int copies = 0;
    for (int i = 0; i < R; i++) {
      ASSERT_LE(ra[i].seen[e], 1); /* never twice to one receiver */
      copies += ra[i].seen[e];
    }
    ASSERT_EQ(copies, expect);
    sum += copies;
  }
  for (int i = 0; i < R; i++) {
    ASSERT_EQ(dropped(ra[i].r), 0);
    /* Round-robin among equals spreads the work. */
    if (limit)
      ASSERT_GE(ra[i].got, (long)total * expect / R / 2);
    hy_unsubscribe(ra[i].r);
    free(ra[i].seen);
  }
  ASSERT_EQ(sum, (long)total * expect);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
}

TEST_IMPL(event_unicast_concurrent) {
  picking_run(1, 6, 4, 5000, 8);
  return 0;
}

TEST_IMPL(event_multicast_concurrent) {
  picking_run(3, 6, 4, 4000, 8);
  return 0;
}

/* Blocking loses nothing under 8 concurrent senders (tiny queues). */
TEST_IMPL(event_overflow_block_stress) {
  picking_run(0, 3, 8, 3000, 2);
  return 0;
}

/* A broadcast send wakes each parked reader on the worker it last ran on
 * (hy__wait_wake_home), also past the 32 wakes a send holds back, and a
 * reader frees a blocked sender the same way: with 40 readers on tiny
 * queues, readers and senders pausing at random (so that a home worker is
 * often asleep in its port when a wake is queued on it), and one reader a
 * foreign thread, every reader gets every event exactly once and nothing
 * is dropped.  Two senders: one woken for room that hands its event
 * straight to a waiting reader must pass the room on to the other (it
 * used to sleep forever beside an empty queue). */
typedef struct farg {
  hy_runtime_t *rt;
  hy_receiver_t *r;
  uint8_t *seen;
  long got;
  uint64_t rnd;
  int mode; /* 0 read, 1 read_many, 2 select arm */
} farg;

static void *fan_reader(void *p) {
  farg *a = p;
  for (;;) {
    hy_event_t *evs[8];
    int n;
    if (a->mode == 1) {
      n = hy_receiver_read_many(a->r, evs, 8, HY_FOREVER);
    } else if (a->mode == 2) {
      hy_arm_t arm = hy_arm_receiver(a->r, &evs[0]);
      int which = hy_select(a->rt, &arm, 1);
      n = which == 0 ? (arm.result < 0 ? arm.result : 1) : which;
    } else {
      n = hy_receiver_read(a->r, &evs[0], HY_FOREVER);
      n = n < 0 ? n : 1;
    }
    if (n == HY_ECLOSED)
      break;
    ASSERT_GE(n, 1);
    for (int i = 0; i < n; i++) {
      a->seen[i64_of(evs[i])]++;
      hy_event_unref(evs[i]);
      a->got++;
    }
    uint64_t x = xs(&a->rnd);
    if (x % 64 == 0)
      hy_sleep(a->rt, HY_US((int64_t)(x >> 8) % 50));
    else if (x % 8 == 0)
      hy_yield(a->rt);
  }
  return NULL;
}

static void *fan_reader_thread(void *p) {
  farg *a = p;
  hy_runtime_t *rt = a->rt;
  a->rt = NULL; /* a foreign thread: no yields; sleeps are the thread's */
  a->mode = 3;
  for (;;) {
    hy_event_t *ev;
    int rc = hy_receiver_read(a->r, &ev, HY_FOREVER);
    if (rc == HY_ECLOSED)
      break;
    ASSERT_OK(rc);
    a->seen[i64_of(ev)]++;
    hy_event_unref(ev);
    a->got++;
    if (xs(&a->rnd) % 128 == 0)
      usleep(20);
  }
  a->rt = rt;
  return NULL;
}

static void *fan_sender(void *p) {
  sarg *a = p;
  for (int i = 0; i < a->count; i++) {
    hy_event_t *ev = i64_event(a->base + i, HY_FOREVER);
    ASSERT_EQ(hy_send(a->s, ev, HY_FOREVER), a->expect);
    hy_event_unref(ev);
    uint64_t x = xs(&a->rnd);
    if (x % 256 == 0)
      hy_sleep(a->rt, HY_US((int64_t)(x >> 8) % 100));
  }
  return NULL;
}

TEST_IMPL(event_broadcast_wakes_stress) {
  enum { R = 40, S = 2, K = 1500 };
  hy_runtime_t *rt = test_rt_new(2);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "fan", 0));
  static farg ra[R];
  hy_task_t rt_[R], st_[S];
  pthread_t th;
  for (int i = 0; i < R; i++) {
    ra[i].rt = rt;
    ra[i].r = sub(b, "fan", 1 + (uint32_t)(test_rand() % 3), HY_OVERFLOW_BLOCK, 0);
    ra[i].seen = calloc((size_t)S * K, 1);
    ra[i].got = 0;
    ra[i].rnd = test_rand() | 1;
    ra[i].mode = i % 3;
    if (i == R - 1)
      ASSERT_EQ(pthread_create(&th, NULL, fan_reader_thread, &ra[i]), 0);
    else
      ASSERT_OK(hy_task_spawn(rt, fan_reader, &ra[i], NULL, &rt_[i]));
  }
  sarg sa[S];
  for (int i = 0; i < S; i++) {
    sa[i].rt = rt;
    ASSERT_OK(hy_publish(b, "fan", &sa[i].s));
    sa[i].base = i * K;
    sa[i].count = K;
    sa[i].expect = R;
    sa[i].rnd = test_rand() | 1;
    ASSERT_OK(hy_task_spawn(rt, fan_sender, &sa[i], NULL, &st_[i]));
  }
  for (int i = 0; i < S; i++) {
    ASSERT_OK(hy_task_join(rt, st_[i], NULL));
    hy_sender_free(sa[i].s);
  }
  ASSERT_OK(hy_channel_delete(b, "fan"));
  for (int i = 0; i < R - 1; i++)
    ASSERT_OK(hy_task_join(rt, rt_[i], NULL));
  ASSERT_EQ(pthread_join(th, NULL), 0);
  for (int i = 0; i < R; i++) {
    ASSERT_EQ(ra[i].got, (long)S * K);
    for (int e = 0; e < S * K; e++)
      ASSERT_EQ(ra[i].seen[e], 1);
    ASSERT_EQ(dropped(ra[i].r), 0);
    hy_unsubscribe(ra[i].r);
    free(ra[i].seen);
  }
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

static void *race_sender(void *p) {
  sarg *a = p;
  for (int i = 0; i < a->count; i++) {
    hy_event_t *ev = i64_event(a->base + i, HY_FOREVER);
    ASSERT_GE(hy_send(a->s, ev, HY_FOREVER), 0);
    hy_event_unref(ev);
    uint64_t x = xs(&a->rnd);
    if (x % 128 == 0)
      hy_sleep(a->rt, HY_US((int64_t)(x >> 8) % 100));
  }
  return NULL;
}

/* Reads with deadlines and cancels racing the hand-over: readers (tasks
 * and a foreign thread) read one or many with short random deadlines, so
 * time-outs race puts that claim them; "victim" readers are cancelled at
 * random moments while the sender runs.  Nothing is lost or seen twice:
 * every reader sees every event exactly once; a victim's events are read by
 * it, or still queued afterwards, or dropped (drop newest, counted). */
typedef struct rrarg {
  hy_runtime_t *rt;
  hy_receiver_t *r;
  uint8_t *seen;
  long got;
  uint64_t rnd;
  int mode;   /* 0 read, 1 read_many */
  int victim; /* stops at HY_ECANCELED */
} rrarg;

static void *race_reader(void *p) {
  rrarg *a = p;
  for (;;) {
    hy_event_t *evs[8];
    uint64_t x = xs(&a->rnd);
    int max = 1 + (int)(x % 8);
    hy_time_t dl = (x >> 3) % 4 == 0 ? HY_FOREVER
                                      : hy_now() + HY_US((int64_t)(x >> 5) % 300);
    int n;
    if (a->mode == 1) {
      n = hy_receiver_read_many(a->r, evs, max, dl);
    } else {
      n = hy_receiver_read(a->r, &evs[0], dl);
      n = n < 0 ? n : 1;
    }
    if (n == HY_ECLOSED || (a->victim && n == HY_ECANCELED))
      break;
    if (n == HY_ETIMEDOUT)
      continue;
    ASSERT_GE(n, 1);
    ASSERT_LE(n, max);
    for (int i = 0; i < n; i++) {
      a->seen[i64_of(evs[i])]++;
      hy_event_unref(evs[i]);
      a->got++;
    }
    if (a->rt && x % 16 == 0)
      hy_yield(a->rt);
  }
  return NULL;
}

static void *race_reader_thread(void *p) {
  rrarg *a = p;
  a->rt = NULL; /* a foreign thread */
  return race_reader(a);
}

TEST_IMPL(event_read_races_deadline_cancel) {
  enum { R = 9, V = 4, K = 3000 };
  hy_runtime_t *rt = test_rt_new(2);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "race", 0));
  static rrarg ra[R + V];
  hy_task_t t[R + V];
  pthread_t th;
  for (int i = 0; i < R + V; i++) {
    int victim = i >= R;
    ra[i].rt = rt;
    ra[i].r = sub(b, "race", 1 + (uint32_t)(test_rand() % 4),
                  victim ? HY_OVERFLOW_DROP_NEWEST : HY_OVERFLOW_BLOCK, 0);
    ra[i].seen = calloc(K, 1);
    ra[i].got = 0;
    ra[i].rnd = test_rand() | 1;
    ra[i].mode = i % 2;
    ra[i].victim = victim;
    if (i == R - 1)
      ASSERT_EQ(pthread_create(&th, NULL, race_reader_thread, &ra[i]), 0);
    else
      ASSERT_OK(hy_task_spawn(rt, race_reader, &ra[i], NULL, &t[i]));
  }
  sarg sa = {rt, NULL, 0, K, 0, test_rand() | 1};
  ASSERT_OK(hy_publish(b, "race", &sa.s));
  hy_task_t st;
  ASSERT_OK(hy_task_spawn(rt, race_sender, &sa, NULL, &st));
  /* The victims go at random moments while the sender runs. */
  for (int i = R; i < R + V; i++) {
    usleep((useconds_t)(test_rand() % 3000));
    ASSERT_OK(hy_task_cancel(rt, t[i]));
  }
  ASSERT_OK(hy_task_join(rt, st, NULL));
  hy_sender_free(sa.s);
  /* (A victim whose cancel landed outside a read ends at the close.) */
  ASSERT_OK(hy_channel_delete(b, "race"));
  for (int i = 0; i < R + V; i++)
    if (i != R - 1)
      ASSERT_OK(hy_task_join(rt, t[i], NULL));
  ASSERT_EQ(pthread_join(th, NULL), 0);
  for (int i = 0; i < R + V; i++) {
    hy_event_t *ev;
    int rc;
    while ((rc = hy_receiver_try_read(ra[i].r, &ev)) == 0) {
      ra[i].seen[i64_of(ev)]++;
      hy_event_unref(ev);
      ra[i].got++;
    }
    ASSERT_EQ(rc, HY_ECLOSED);
    long once = 0;
    for (int e = 0; e < K; e++) {
      ASSERT_LE(ra[i].seen[e], 1);
      once += ra[i].seen[e];
    }
    ASSERT_EQ(once, ra[i].got);
    if (i < R) {
      ASSERT_EQ(ra[i].got, (long)K);
      ASSERT_EQ(dropped(ra[i].r), 0);
    } else {
      ASSERT_EQ(ra[i].got + (long)dropped(ra[i].r), (long)K);
    }
    hy_unsubscribe(ra[i].r);
    free(ra[i].seen);
  }
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* hy__wait_wake_home itself: a task parks again and again and another
 * task claims and wakes it with hy__wait_wake_home, sometimes before it
 * has parked (a notified task), sometimes while its worker sleeps; each
 * round ends with the parker running again.  Rounds go on until enough of
 * them had the waker on another worker than the parker's (the wake queued
 * on a worker that is not the caller's), within a generous bound; then a
 * foreign thread's wait is signalled the same way. */
typedef struct harg {
  hy_runtime_t *rt;
  _Atomic(hy__wait *) slot;
  _Atomic(int) parker_worker; /* where the parker parked, -1: a thread */
  atomic_int rounds, remote, stop;
  int n;
  int quiet; /* the task's quiet wait, as channel operations and select */
  uint64_t rnd;
} harg;

static int worker_id(hy_runtime_t *rt) {
  hy__worker *w = hy__worker_current(rt);
  return w && hy__in_task(rt) ? w->id : -1;
}

static void *home_parker(void *p) {
  harg *a = p;
  uint64_t rnd = a->rnd;
  hy_time_t until = hy_deadline_in(HY_SEC(30));
  for (int i = 0; i < a->n || (a->rt && hy__in_task(a->rt) &&
                               atomic_load(&a->remote) < 20 && hy_now() < until);
       i++) {
    hy__wait own, *w = &own;
    if (a->quiet) {
      ASSERT_OK(hy__wait_init_quiet(&w, &own, a->rt));
      hy__wait_open(w);
    } else {
      ASSERT_OK(hy__wait_init(w, a->rt));
    }
    atomic_store(&a->parker_worker, worker_id(a->rt));
    atomic_store(&a->slot, w);
    ASSERT_EQ(hy__wait_park(w, HY_FOREVER), 0);
    ASSERT_EQ(w->result, 0);
    hy__wait_fini(w);
    atomic_fetch_add(&a->rounds, 1);
    uint64_t x = xs(&rnd);
    if (a->rt && hy__in_task(a->rt) && x % 16 == 0)
      hy_sleep(a->rt, HY_US((int64_t)(x >> 8) % 30));
  }
  return NULL;
}

static void *home_waker(void *p) {
  harg *a = p;
  uint64_t rnd = a->rnd * 3 + 1;
  while (!atomic_load(&a->stop)) {
    hy__wait *w = atomic_exchange(&a->slot, NULL);
    if (!w) {
      hy_yield(a->rt);
      continue;
    }
    uint64_t x = xs(&rnd);
    if (x % 4 == 0)
      hy_sleep(a->rt, HY_US((int64_t)(x >> 8) % 20)); /* let it park */
    int pw = atomic_load(&a->parker_worker);
    if (pw >= 0 && pw != worker_id(a->rt))
      atomic_fetch_add(&a->remote, 1);
    ASSERT(hy__wait_claim(w, 0));
    w->result = 0;
    hy__wait_wake_home(w);
  }
  return NULL;
}

TEST_IMPL(event_wake_home_no_lost_wake) {
  hy_runtime_t *rt = test_rt_new(2);
  harg a;
  memset(&a, 0, sizeof a);
  a.rt = rt;
  a.n = 3000;
  a.rnd = test_rand() | 1;
  hy_task_t pk, wk;
  ASSERT_OK(hy_task_spawn(rt, home_waker, &a, NULL, &wk));
  ASSERT_OK(hy_task_spawn(rt, home_parker, &a, NULL, &pk));
  ASSERT_OK(hy_task_join(rt, pk, NULL));
  ASSERT_GE(atomic_load(&a.rounds), a.n);
  ASSERT_GE(atomic_load(&a.remote), 20);
  /* The same with the task's quiet wait, which parks without looking for
   * an early wake: its claimer must wait for the switch-out. */
  harg q;
  memset(&q, 0, sizeof q);
  q.rt = rt;
  q.n = 3000;
  q.quiet = 1;
  q.rnd = test_rand() | 1;
  hy_task_t qp, qw;
  ASSERT_OK(hy_task_spawn(rt, home_waker, &q, NULL, &qw));
  ASSERT_OK(hy_task_spawn(rt, home_parker, &q, NULL, &qp));
  ASSERT_OK(hy_task_join(rt, qp, NULL));
  ASSERT_GE(atomic_load(&q.rounds), q.n);
  ASSERT_GE(atomic_load(&q.remote), 20);
  atomic_store(&q.stop, 1);
  ASSERT_OK(hy_task_join(rt, qw, NULL));
  /* A foreign thread (this one) parks on an OS event instead. */
  harg f;
  memset(&f, 0, sizeof f);
  f.rt = rt;
  f.n = 200;
  f.rnd = test_rand() | 1;
  hy_task_t fw;
  ASSERT_OK(hy_task_spawn(rt, home_waker, &f, NULL, &fw));
  home_parker(&f);
  ASSERT_EQ(atomic_load(&f.rounds), f.n);
  atomic_store(&a.stop, 1);
  atomic_store(&f.stop, 1);
  ASSERT_OK(hy_task_join(rt, wk, NULL));
  ASSERT_OK(hy_task_join(rt, fw, NULL));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

TEST_IMPL(event_overflow_drop_policies) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "c", 0));
  hy_receiver_t *newest = sub(b, "c", 4, HY_OVERFLOW_DROP_NEWEST, 0);
  hy_receiver_t *oldest = sub(b, "c", 4, HY_OVERFLOW_DROP_OLDEST, 0);
  hy_receiver_t *roomy = sub(b, "c", 100, HY_OVERFLOW_BLOCK, 0);
  for (int i = 0; i < 10; i++) {
    hy_event_t *ev = i64_event(i, HY_FOREVER);
    /* drop-newest refuses 6 of them; drop-oldest takes each one. */
    ASSERT_EQ(hy_send_to(b, "c", ev, HY_FOREVER), i < 4 ? 3 : 2);
    hy_event_unref(ev);
  }
  ASSERT_EQ(dropped(newest), 6);
  ASSERT_EQ(dropped(oldest), 6);
  ASSERT_EQ(dropped(roomy), 0);
  ASSERT_EQ(info(b, "c").dropped, 12);
  for (int i = 0; i < 4; i++) {
    hy_event_t *ev;
    ASSERT_OK(hy_receiver_try_read(newest, &ev));
    ASSERT_EQ(i64_of(ev), i);      /* the first four stayed */
    hy_event_unref(ev);
    ASSERT_OK(hy_receiver_try_read(oldest, &ev));
    ASSERT_EQ(i64_of(ev), 6 + i);  /* the last four stayed */
    hy_event_unref(ev);
  }
  hy_event_t *ev;
  ASSERT_ERR(hy_receiver_try_read(newest, &ev), HY_EAGAIN);
  ASSERT_EQ(drain(roomy), 10);
  hy_recv_stats_t st = {.size = sizeof st};
  ASSERT_OK(hy_receiver_stats(oldest, &st));
  ASSERT_EQ(st.received, 10);
  ASSERT_EQ(st.capacity, 4);
  ASSERT_EQ(st.overflow, HY_OVERFLOW_DROP_OLDEST);
  /* Bad options. */
  hy_recv_opts_t o = HY_RECV_OPTS_INIT;
  o.overflow = 9;
  hy_receiver_t *r;
  ASSERT_ERR(hy_subscribe(b, "c", &o, &r), HY_EINVAL);
  ASSERT_ERR(hy_subscribe(b, "nope", NULL, &r), HY_ENOENT);
  hy_unsubscribe(newest);
  hy_unsubscribe(oldest);
  hy_unsubscribe(roomy);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* ------------------------------------------------------------- expiry */

typedef struct xarg {
  hy_runtime_t *rt;
  hy_broker_t *b;
  int rc;
  hy_time_t expiry;
} xarg;

static void *send_expiring(void *p) {
  xarg *a = p;
  hy_event_t *ev = i64_event(2, a->expiry);
  a->rc = hy_send_to(a->b, "c", ev, HY_FOREVER);
  hy_event_unref(ev);
  return NULL;
}

TEST_IMPL(event_expiry) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "c", 0));
  hy_receiver_t *r = sub(b, "c", 1, HY_OVERFLOW_BLOCK, 0);
  /* Expired before the forward: dropped, counted. */
  hy_event_t *ev = i64_event(1, hy_now() - 1);
  ASSERT_EQ(hy_send_to(b, "c", ev, HY_FOREVER), 0);
  hy_event_unref(ev);
  ASSERT_EQ(queued(r), 0);
  ASSERT_EQ(info(b, "c").expired, 1);
  /* Expires while its sender waits for room: checked again, dropped. */
  ev = i64_event(1, HY_FOREVER);
  ASSERT_EQ(hy_send_to(b, "c", ev, HY_FOREVER), 1);
  hy_event_unref(ev);
  /* (On a slow machine the task may start after the expiry: then it is
   * dropped before the first forward, counted the same.) */
  xarg a = {rt, b, -99, hy_now() + HY_MS(100)};
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, send_expiring, &a, NULL, &t));
  hy_sleep(rt, HY_MS(200));
  ASSERT_OK(hy_receiver_try_read(r, &ev));
  ASSERT_EQ(i64_of(ev), 1);
  hy_event_unref(ev);
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_EQ(a.rc, 0);
  ASSERT_EQ(queued(r), 0);
  ASSERT_EQ(info(b, "c").expired, 2);
  /* Expiring while queued: still read, and the reader can tell. */
  ev = i64_event(3, hy_now() + HY_MS(10));
  ASSERT_EQ(hy_send_to(b, "c", ev, HY_FOREVER), 1);
  hy_event_unref(ev);
  hy_sleep(rt, HY_MS(20));
  ASSERT_OK(hy_receiver_read(r, &ev, HY_FOREVER));
  ASSERT_EQ(hy_event_expired(ev, hy_now()), 1);
  hy_event_unref(ev);
  hy_unsubscribe(r);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* Stress: events with expiries around "now"; none delivered that had
 * expired before its send began, every one accounted for. */
typedef struct estress {
  hy_runtime_t *rt;
  hy_broker_t *b;
  hy_time_t *sent_at, *expiry;
  int n;
  long delivered;
} estress;

static void *expiry_sender(void *p) {
  estress *e = p;
  hy_sender_t *s;
  ASSERT_OK(hy_publish(e->b, "c", &s));
  uint64_t rnd = test_rand() | 1;
  for (int i = 0; i < e->n; i++) {
    e->sent_at[i] = hy_now();
    e->expiry[i] = e->sent_at[i] + (int64_t)(xs(&rnd) % 200000) - 100000;
    hy_event_t *ev = i64_event(i, e->expiry[i]);
    int rc = hy_send(s, ev, HY_FOREVER);
    ASSERT_GE(rc, 0);
    e->delivered += rc;
    hy_event_unref(ev);
  }
  hy_sender_free(s);
  return NULL;
}

TEST_IMPL(event_expiry_stress) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "c", 0));
  enum { N = 20000 };
  estress e = {rt, b, calloc(N, sizeof(hy_time_t)), calloc(N, sizeof(hy_time_t)),
               N, 0};
  rarg ra = {rt, sub(b, "c", 4, HY_OVERFLOW_BLOCK, 0), calloc(N, 1), 0, 77, 0};
  hy_task_t rtk, stk;
  ASSERT_OK(hy_task_spawn(rt, reader_task, &ra, NULL, &rtk));
  ASSERT_OK(hy_task_spawn(rt, expiry_sender, &e, NULL, &stk));
  ASSERT_OK(hy_task_join(rt, stk, NULL));
  ASSERT_OK(hy_channel_delete(b, "c"));
  ASSERT_OK(hy_task_join(rt, rtk, NULL));
  long expired_before = 0;
  for (int i = 0; i < N; i++) {
    if (e.expiry[i] < e.sent_at[i]) {
      ASSERT_EQ(ra.seen[i], 0);
      expired_before++;
    }
  }
  ASSERT_EQ(ra.got, e.delivered);
  ASSERT_GT(expired_before, 0);
  ASSERT_LE(ra.got, N - expired_before);
  hy_unsubscribe(ra.r);
  free(ra.seen);
  free(e.sent_at);
  free(e.expiry);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* ------------------------------------------------------ reading, waits */

typedef struct rdarg {
  hy_runtime_t *rt;
  hy_receiver_t *r;
  hy_time_t deadline;
  int rc;
  int64_t value;
  hy_time_t returned;
} rdarg;

static void *read_one(void *p) {
  rdarg *a = p;
  hy_event_t *ev = NULL;
  a->rc = hy_receiver_read(a->r, &ev, a->deadline);
  a->returned = hy_now();
  if (a->rc == 0) {
    a->value = i64_of(ev);
    hy_event_unref(ev);
  }
  return NULL;
}

static void *read_one_thread(void *p) { return read_one(p); }

TEST_IMPL(event_read_deadline_cancel) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "c", 0));
  hy_receiver_t *r = sub(b, "c", 8, 0, 0);
  hy_event_t *ev;
  ASSERT_ERR(hy_receiver_try_read(r, &ev), HY_EAGAIN);
  ASSERT_ERR(hy_receiver_read(NULL, &ev, HY_FOREVER), HY_EINVAL);
  /* A task times out, never early. */
  rdarg a = {rt, r, hy_now() + HY_MS(30), 1, 0, 0};
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, read_one, &a, NULL, &t));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_EQ(a.rc, HY_ETIMEDOUT);
  ASSERT_GE(a.returned, a.deadline);
  /* A foreign thread too. */
  a.deadline = hy_now() + HY_MS(30);
  read_one(&a);
  ASSERT_EQ(a.rc, HY_ETIMEDOUT);
  ASSERT_GE(a.returned, a.deadline);
  /* A past deadline with an event queued still reads it. */
  ev = i64_event(5, HY_FOREVER);
  ASSERT_EQ(hy_send_to(b, "c", ev, HY_FOREVER), 1);
  hy_event_unref(ev);
  a.deadline = hy_now() - 1;
  read_one(&a);
  ASSERT_EQ(a.rc, 0);
  ASSERT_EQ(a.value, 5);
  /* A cancelled reader returns HY_ECANCELED and takes nothing. */
  a.deadline = HY_FOREVER;
  ASSERT_OK(hy_task_spawn(rt, read_one, &a, NULL, &t));
  hy_sleep(rt, HY_MS(20));
  ASSERT_OK(hy_task_cancel(rt, t));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_EQ(a.rc, HY_ECANCELED);
  /* A foreign thread blocked forever is woken by a task's send. */
  pthread_t th;
  a.rc = 1;
  ASSERT_EQ(pthread_create(&th, NULL, read_one_thread, &a), 0);
  hy_sleep(rt, HY_MS(20));
  ev = i64_event(9, HY_FOREVER);
  ASSERT_EQ(hy_send_to(b, "c", ev, HY_FOREVER), 1);
  hy_event_unref(ev);
  pthread_join(th, NULL);
  ASSERT_EQ(a.rc, 0);
  ASSERT_EQ(a.value, 9);
  /* read_many takes what is queued. */
  for (int i = 0; i < 5; i++) {
    ev = i64_event(i, HY_FOREVER);
    ASSERT_EQ(hy_send_to(b, "c", ev, HY_FOREVER), 1);
    hy_event_unref(ev);
  }
  hy_event_t *evs[10];
  ASSERT_EQ(hy_receiver_read_many(r, evs, 10, HY_FOREVER), 5);
  for (int i = 0; i < 5; i++) {
    ASSERT_EQ(i64_of(evs[i]), i);
    hy_event_unref(evs[i]);
  }
  ASSERT_ERR(hy_receiver_read_many(r, evs, 0, HY_FOREVER), HY_EINVAL);
  /* Deleting the channel: queued events drain, then HY_ECLOSED; readers
   * waiting are woken; senders get HY_ECLOSED. */
  ev = i64_event(11, HY_FOREVER);
  hy_sender_t *s;
  ASSERT_OK(hy_publish(b, "c", &s));
  ASSERT_EQ(hy_send(s, ev, HY_FOREVER), 1);
  ASSERT_OK(hy_channel_delete(b, "c"));
  ASSERT_ERR(hy_send(s, ev, HY_FOREVER), HY_ECLOSED);
  hy_event_unref(ev);
  hy_sender_free(s);
  ASSERT_OK(hy_receiver_read(r, &ev, HY_FOREVER));
  ASSERT_EQ(i64_of(ev), 11);
  hy_event_unref(ev);
  ASSERT_ERR(hy_receiver_read(r, &ev, HY_FOREVER), HY_ECLOSED);
  ASSERT_ERR(hy_publish(b, "c", &s), HY_ENOENT);
  hy_unsubscribe(r);
  /* A reader waiting when the channel goes away. */
  ASSERT_OK(hy_channel_create(b, "d", 0));
  r = sub(b, "d", 8, 0, 0);
  a.r = r;
  a.deadline = HY_FOREVER;
  ASSERT_OK(hy_task_spawn(rt, read_one, &a, NULL, &t));
  hy_sleep(rt, HY_MS(20));
  ASSERT_OK(hy_channel_delete(b, "d"));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_EQ(a.rc, HY_ECLOSED);
  hy_unsubscribe(r);
  /* Unsubscribed under a blocked reader: it wakes with HY_ECLOSED and the
   * receiver goes only after it left. */
  ASSERT_OK(hy_channel_create(b, "e", 0));
  a.r = sub(b, "e", 8, 0, 0);
  a.rc = 1;
  ASSERT_OK(hy_task_spawn(rt, read_one, &a, NULL, &t));
  /* Unsubscribing before the read began would free r under it (a use
   * after free the caller owns): wait until the reader waits. */
  for (hy_time_t until = hy_now() + HY_SEC(10);;) {
    hy_recv_stats_t rs = {.size = sizeof rs};
    ASSERT_OK(hy_receiver_stats(a.r, &rs));
    if (rs.readers == 1)
      break;
    ASSERT_LT(hy_now(), until);
    hy_sleep(rt, HY_MS(1));
  }
  hy_unsubscribe(a.r);
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_EQ(a.rc, HY_ECLOSED);
  ASSERT_EQ(hy_send_to(b, "e", ev = i64_event(1, HY_FOREVER), HY_FOREVER), 0);
  hy_event_unref(ev);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* A sender blocked on a full receiver: deadline and cancel. */
typedef struct bsarg {
  hy_runtime_t *rt;
  hy_broker_t *b;
  hy_time_t deadline;
  int rc;
} bsarg;

static void *blocked_send(void *p) {
  bsarg *a = p;
  hy_event_t *ev = i64_event(1, HY_FOREVER);
  a->rc = hy_send_to(a->b, "c", ev, a->deadline);
  hy_event_unref(ev);
  return NULL;
}

TEST_IMPL(event_blocked_sender) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "c", 0));
  hy_receiver_t *r = sub(b, "c", 1, HY_OVERFLOW_BLOCK, 0);
  hy_event_t *ev = i64_event(0, HY_FOREVER);
  ASSERT_EQ(hy_send_to(b, "c", ev, HY_FOREVER), 1);
  hy_event_unref(ev);
  bsarg a = {rt, b, hy_now() + HY_MS(30), 1};
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, blocked_send, &a, NULL, &t));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_EQ(a.rc, HY_ETIMEDOUT);
  ASSERT_GE(hy_now(), a.deadline);
  a.deadline = HY_FOREVER;
  ASSERT_OK(hy_task_spawn(rt, blocked_send, &a, NULL, &t));
  hy_sleep(rt, HY_MS(20));
  ASSERT_OK(hy_task_cancel(rt, t));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_EQ(a.rc, HY_ECANCELED);
  /* A foreign thread blocks too, and unsubscribing releases it. */
  a.rc = 1;
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, (void *(*)(void *))blocked_send, &a), 0);
  hy_sleep(rt, HY_MS(20));
  ASSERT_EQ(a.rc, 1);
  hy_unsubscribe(r);
  pthread_join(th, NULL);
  ASSERT_EQ(a.rc, 0);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* The receiver as a select arm, driven through the awaitable contract the
 * way any select does: lock, try_fire, enqueue, park, dequeue. */
typedef struct post_arg {
  hy_broker_t *b;
  const char *path;
  int64_t v;
} post_arg;

static void *post_later(void *p) {
  post_arg *a = p;
  usleep(20000);
  hy_event_t *ev = i64_event(a->v, HY_FOREVER);
  ASSERT_EQ(hy_send_to(a->b, a->path, ev, HY_FOREVER), 1);
  hy_event_unref(ev);
  return NULL;
}

TEST_IMPL(event_receiver_arm) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "one", 0));
  ASSERT_OK(hy_channel_create(b, "two", 0));
  hy_receiver_t *r1 = sub(b, "one", 8, 0, 0), *r2 = sub(b, "two", 8, 0, 0);
  hy_event_t *e1 = NULL, *e2 = NULL;
  hy_arm_t arms[2] = {hy_arm_receiver(r1, &e1), hy_arm_receiver(r2, &e2)};
  ASSERT_EQ(arms[0].kind, HY_ARM_OBJECT);
  ASSERT_EQ(arms[0].guard, 1);
  ASSERT_EQ(hy_arm_receiver(NULL, &e1).guard, 0);
  for (int round = 0; round < 50; round++) {
    hy__wait w;
    ASSERT_OK(hy__wait_init(&w, rt));
    hy__waiter ws[2];
    memset(ws, 0, sizeof ws);
    hy__lock_t *locks[2];
    for (int i = 0; i < 2; i++)
      locks[i] = arms[i].ops->lock_of(arms[i].obj);
    hy__lock_all(locks, 2);
    int res;
    ASSERT_EQ(arms[0].ops->try_fire(arms[0].obj, &arms[0], &res), 0);
    ASSERT_EQ(arms[1].ops->try_fire(arms[1].obj, &arms[1], &res), 0);
    for (int i = 0; i < 2; i++) {
      ws[i].wait = &w;
      ws[i].arm = i;
      arms[i].ops->enqueue(arms[i].obj, &arms[i], &ws[i]);
    }
    hy__unlock_all(locks, 2);
    int which = round % 2;
    post_arg pa = {b, which ? "two" : "one", round};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, post_later, &pa), 0);
    int state = hy__wait_park(&w, hy_now() + HY_SEC(10));
    ASSERT_EQ(state, which);
    ASSERT_EQ(w.result, 0);
    pthread_join(th, NULL);
    /* The other arm did not fire: a send now stays queued there. */
    hy_event_t *ev = i64_event(1000 + round, HY_FOREVER);
    ASSERT_EQ(hy_send_to(b, which ? "one" : "two", ev, HY_FOREVER), 1);
    hy_event_unref(ev);
    for (int i = 0; i < 2; i++) {
      hy__lock(locks[i]);
      arms[i].ops->dequeue(arms[i].obj, &arms[i], &ws[i]);
      hy__unlock(locks[i]);
    }
    hy__wait_fini(&w);
    hy_event_t *fired = which ? e2 : e1;
    ASSERT_EQ(i64_of(fired), round);
    hy_event_unref(fired);
    e1 = e2 = NULL;
    /* try_fire takes the queued one. */
    hy_arm_t *other = &arms[!which];
    hy__lock(locks[!which]);
    ASSERT_EQ(other->ops->try_fire(other->obj, other, &res), 1);
    hy__unlock(locks[!which]);
    ASSERT_EQ(res, 0);
    hy_event_t *got = which ? e1 : e2;
    ASSERT_EQ(i64_of(got), 1000 + round);
    hy_event_unref(got);
    e1 = e2 = NULL;
    ASSERT_EQ(queued(r1) + queued(r2), 0);
  }
  /* A closed receiver fires with HY_ECLOSED. */
  ASSERT_OK(hy_channel_delete(b, "one"));
  int res = 0;
  hy__lock(arms[0].ops->lock_of(r1));
  ASSERT_EQ(arms[0].ops->try_fire(r1, &arms[0], &res), 1);
  hy__unlock(arms[0].ops->lock_of(r1));
  ASSERT_EQ(res, HY_ECLOSED);
  hy_unsubscribe(r1);
  hy_unsubscribe(r2);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* ------------------------------------------------------------- names */

static char listed[64][64];
static int nlisted;
static void list_cb(void *arg, const char *path, int kind) {
  (void)arg;
  snprintf(listed[nlisted], sizeof listed[0], "%s:%d", path, kind);
  nlisted++;
}

static int has(const char *s) {
  for (int i = 0; i < nlisted; i++)
    if (strcmp(listed[i], s) == 0)
      return 1;
  return 0;
}

TEST_IMPL(event_broker_names) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_broker_t *b, *o;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_broker_new(rt, "o", &o));
  ASSERT(strcmp(hy_broker_name(b), "b") == 0);
  ASSERT_OK(hy_channel_create(b, "app/orders/eu", 0));
  ASSERT_OK(hy_channel_create(o, "elsewhere", 0));
  nlisted = 0;
  ASSERT_EQ(hy_broker_list(b, list_cb, NULL), 3);
  ASSERT(strcmp(listed[0], "app:0") == 0);
  ASSERT(strcmp(listed[2], "app/orders/eu:0") == 0);
  hy_receiver_t *r = sub(b, "app/orders/eu", 8, 0, 0);
  hy_receiver_t *top = sub(b, "app", 8, 0, 0);
  /* Rename moves the subtree; receivers stay subscribed. */
  ASSERT_OK(hy_channel_rename(b, "app/orders", "app/sales"));
  ASSERT_ERR(hy_channel_info(b, "app/orders/eu", &(hy_channel_info_t){.size = sizeof(hy_channel_info_t)}), HY_ENOENT);
  ASSERT_EQ(info(b, "app/sales/eu").receivers, 1);
  hy_event_t *ev = i64_event(1, HY_FOREVER);
  ASSERT_EQ(hy_send_to(b, "app/sales/eu", ev, HY_FOREVER), 2);
  ASSERT_ERR(hy_channel_rename(b, "app/sales", "app/sales/x"), HY_EINVAL);
  ASSERT_ERR(hy_channel_rename(b, "nope", "x"), HY_ENOENT);
  ASSERT_ERR(hy_channel_rename(b, "app/sales", "app"), HY_EEXIST);
  ASSERT_OK(hy_channel_rename(b, "app/sales", "moved/here"));
  ASSERT_EQ(hy_send_to(b, "moved/here/eu", ev, HY_FOREVER), 1); /* not app now */
  /* Links. */
  ASSERT_OK(hy_broker_link(b, "ext", o, "elsewhere"));
  ASSERT_ERR(hy_broker_link(b, "ext", o, "elsewhere"), HY_EEXIST);
  ASSERT_ERR(hy_broker_link(b, "ext2", o, "missing"), HY_ENOENT);
  ASSERT_EQ(info(b, "ext").kind, HY_CHANNEL_LINK);
  hy_receiver_t *er = sub(b, "ext", 8, 0, 0);
  ASSERT_EQ(hy_send_to(o, "elsewhere", ev, HY_FOREVER), 1);
  ASSERT_EQ(drain(er), 1);
  nlisted = 0;
  hy_broker_list(b, list_cb, NULL);
  ASSERT(has("ext:1"));
  ASSERT(has("moved/here/eu:0"));
  ASSERT_OK(hy_channel_delete(b, "ext"));
  ASSERT_ERR(hy_channel_info(b, "ext", &(hy_channel_info_t){.size = sizeof(hy_channel_info_t)}), HY_ENOENT);
  /* Delete takes the subtree. */
  ASSERT_OK(hy_channel_delete(b, "moved"));
  ASSERT_ERR(hy_channel_delete(b, "moved"), HY_ENOENT);
  ASSERT_EQ(hy_broker_list(b, NULL, NULL), 1); /* app */
  ASSERT_EQ(drain(r), 2);
  ASSERT_ERR(hy_receiver_try_read(r, &ev), HY_ECLOSED);
  ASSERT_ERR(hy_channel_info(b, "x", NULL), HY_EINVAL);
  hy_event_unref(ev);
  hy_unsubscribe(r);
  hy_unsubscribe(top);
  hy_unsubscribe(er);
  ASSERT_OK(hy_broker_free(b));
  ASSERT_OK(hy_broker_free(o));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* -------------------------------------------------------- multiplexors */

TEST_IMPL(event_mux_bridge) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_broker_t *a, *b, *c, *m, *n;
  ASSERT_OK(hy_broker_new(rt, "a", &a));
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_broker_new(rt, "c", &c));
  ASSERT_OK(hy_mux_new(rt, "m", &m));
  ASSERT_OK(hy_mux_new(rt, "n", &n));
  ASSERT_OK(hy_channel_create(a, "app/x", 0));
  ASSERT_OK(hy_channel_create(a, "only/a", 0));
  ASSERT_OK(hy_channel_create(b, "app/x", 0));
  ASSERT_OK(hy_channel_create(c, "app/x", 0));
  ASSERT_OK(hy_mux_add(m, a));
  ASSERT_OK(hy_mux_add(m, b));
  ASSERT_ERR(hy_mux_add(m, b), HY_EEXIST);
  ASSERT_ERR(hy_mux_add(a, b), HY_EINVAL);  /* not a multiplexor */
  ASSERT_OK(hy_mux_add(n, m));
  ASSERT_OK(hy_mux_add(n, c));
  ASSERT_ERR(hy_mux_add(m, n), HY_EINVAL);  /* a cycle */
  ASSERT_EQ(info(m, "app/x").kind, HY_CHANNEL_REPRESENTATIVE);
  ASSERT_EQ(info(m, "only/a").kind, HY_CHANNEL_LINK);
  ASSERT_EQ(info(n, "app/x").kind, HY_CHANNEL_REPRESENTATIVE);
  ASSERT_EQ(info(n, "only/a").kind, HY_CHANNEL_LINK);
  /* One receiver on each app/x, one on each app. */
  hy_broker_t *bs[5] = {a, b, c, m, n};
  hy_receiver_t *rx[5], *rp[5];
  for (int i = 0; i < 5; i++) {
    rx[i] = sub(bs[i], "app/x", 64, 0, 0);
    rp[i] = sub(bs[i], "app", 64, 0, 0);
  }
  hy_event_t *ev = i64_event(1, HY_FOREVER);
  /* Wherever it is sent, each of the 10 receivers gets it exactly once. */
  for (int i = 0; i < 5; i++) {
    ASSERT_EQ(hy_send_to(bs[i], "app/x", ev, HY_FOREVER), 10);
    for (int k = 0; k < 5; k++) {
      ASSERT_EQ(drain(rx[k]), 1);
      ASSERT_EQ(drain(rp[k]), 1);
    }
  }
  /* Sent to app: only the app receivers, once each. */
  ASSERT_EQ(hy_send_to(c, "app", ev, HY_FOREVER), 5);
  for (int k = 0; k < 5; k++) {
    ASSERT_EQ(drain(rx[k]), 0);
    ASSERT_EQ(drain(rp[k]), 1);
  }
  /* A link reaches only its channel (and its ancestors). */
  hy_receiver_t *ra = sub(n, "only/a", 8, 0, 0);
  ASSERT_EQ(hy_send_to(a, "only/a", ev, HY_FOREVER), 1);
  ASSERT_EQ(drain(ra), 1);
  /* Expiry is checked before the bridged forward too. */
  hy_event_t *old = i64_event(2, hy_now() - 1);
  ASSERT_EQ(hy_send_to(a, "app/x", old, HY_FOREVER), 0);
  hy_event_unref(old);
  for (int k = 0; k < 5; k++)
    ASSERT_EQ(queued(rx[k]), 0);
  /* Unicast through the bridge: exactly one of all the receivers. */
  ASSERT_OK(hy_channel_create(a, "job", 1));
  ASSERT_OK(hy_channel_create(c, "job", 1));
  hy_receiver_t *ja = sub(a, "job", 1000, 0, 0), *jc = sub(c, "job", 1000, 0, 0);
  hy_receiver_t *jn = sub(n, "job", 1000, 0, 0);
  /* (capacity 1000 > 2 runs) */
  for (int i = 0; i < 6 * HY_PICK_RUN; i++) {
    hy_event_t *job = i64_event(i, HY_FOREVER);
    ASSERT_EQ(hy_send_to(n, "job", job, HY_FOREVER), 1);
    hy_event_unref(job);
  }
  ASSERT_EQ(drain(ja), 2 * HY_PICK_RUN);
  ASSERT_EQ(drain(jc), 2 * HY_PICK_RUN);
  ASSERT_EQ(drain(jn), 2 * HY_PICK_RUN);
  hy_unsubscribe(ja);
  hy_unsubscribe(jc);
  hy_unsubscribe(jn);
  hy_event_unref(ev);
  hy_unsubscribe(ra);
  for (int i = 0; i < 5; i++) {
    hy_unsubscribe(rx[i]);
    hy_unsubscribe(rp[i]);
  }
  ASSERT_ERR(hy_broker_free(a), HY_EBUSY);
  ASSERT_ERR(hy_mux_remove(m, c), HY_ENOENT);
  ASSERT_OK(hy_mux_remove(n, c));
  ASSERT_OK(hy_mux_remove(n, m));
  ASSERT_OK(hy_mux_remove(m, a));
  ASSERT_OK(hy_mux_remove(m, b));
  for (int i = 0; i < 5; i++)
    ASSERT_OK(hy_broker_free(bs[i]));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

TEST_IMPL(event_mux_changes_visible) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_broker_t *a, *b, *m;
  ASSERT_OK(hy_broker_new(rt, "a", &a));
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_mux_new(rt, "m", &m));
  ASSERT_OK(hy_mux_add(m, a));
  ASSERT_OK(hy_mux_add(m, b));
  hy_channel_info_t i = {.size = sizeof i};
  ASSERT_ERR(hy_channel_info(m, "t", &i), HY_ENOENT);
  ASSERT_OK(hy_channel_create(a, "t", 0));
  ASSERT_EQ(info(m, "t").kind, HY_CHANNEL_LINK);
  ASSERT_OK(hy_channel_create(b, "t", 0));
  ASSERT_EQ(info(m, "t").kind, HY_CHANNEL_REPRESENTATIVE);
  hy_receiver_t *rm = sub(m, "t", 8, 0, 0);
  hy_event_t *ev = i64_event(1, HY_FOREVER);
  ASSERT_EQ(hy_send_to(a, "t", ev, HY_FOREVER), 1);
  ASSERT_EQ(drain(rm), 1);
  /* Rename in a sub-broker: the old name now links to b's, the new one
   * to a's; the representative still bridges b. */
  ASSERT_OK(hy_channel_rename(a, "t", "u"));
  ASSERT_EQ(info(m, "u").kind, HY_CHANNEL_LINK);
  ASSERT_EQ(info(m, "t").kind, HY_CHANNEL_REPRESENTATIVE);
  ASSERT_EQ(hy_send_to(a, "u", ev, HY_FOREVER), 0);
  ASSERT_EQ(hy_send_to(b, "t", ev, HY_FOREVER), 1);
  ASSERT_EQ(drain(rm), 1);
  nlisted = 0;
  ASSERT_EQ(hy_broker_list(m, list_cb, NULL), 2);
  ASSERT(has("t:2") && has("u:1"));
  /* Deleting the last member deletes the representative: its receiver
   * drains and sees HY_ECLOSED. */
  ASSERT_OK(hy_channel_delete(b, "t"));
  ASSERT_ERR(hy_channel_info(m, "t", &i), HY_ENOENT);
  hy_event_t *got;
  ASSERT_ERR(hy_receiver_try_read(rm, &got), HY_ECLOSED);
  ASSERT_ERR(hy_channel_delete(m, "u"), HY_ENOENT); /* a link of a sub */
  /* A multiplexor's own channel bridges with same-named sub channels. */
  ASSERT_OK(hy_channel_create(m, "own", 0));
  ASSERT_EQ(info(m, "own").kind, HY_CHANNEL_PLAIN);
  ASSERT_OK(hy_channel_create(a, "own", 0));
  hy_receiver_t *ro = sub(m, "own", 8, 0, 0), *rao = sub(a, "own", 8, 0, 0);
  ASSERT_EQ(hy_send_to(a, "own", ev, HY_FOREVER), 2);
  ASSERT_EQ(hy_send_to(m, "own", ev, HY_FOREVER), 2);
  ASSERT_EQ(drain(ro) + drain(rao), 4);
  hy_event_unref(ev);
  hy_unsubscribe(ro);
  hy_unsubscribe(rao);
  hy_unsubscribe(rm);
  ASSERT_OK(hy_broker_free(m) == 0 ? 0 : -1);
  ASSERT_OK(hy_broker_free(a));
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* ------------------------------------------------------- system broker */

void hy__event_publish_signal(hy_runtime_t *rt, int signo); /* internal */

static void *quick(void *p) { return p; }

static void *sleeper(void *p) {
  hy_runtime_t *rt = p;
  hy_sleep(rt, HY_SEC(100));
  return NULL;
}

TEST_IMPL(event_sys_broker) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_broker_t *sys = hy_sys_broker(rt);
  ASSERT(sys != NULL);
  ASSERT(hy_sys_broker(rt) == sys);
  ASSERT_ERR(hy_broker_free(sys), HY_EPERM);
  nlisted = 0;
  hy_broker_list(sys, list_cb, NULL);
  ASSERT(has("sys/signal:1") && has("sys/shutdown:1") && has("sys/task:1") &&
         has("sys/log:1"));
  hy_receiver_t *phases = sub(sys, "sys/shutdown", 16, 0, 0);
  hy_receiver_t *tasks = sub(sys, "sys/task", 64, 0, 0);
  hy_receiver_t *logs = sub(sys, "sys/log", 16, 0, 0);
  hy_receiver_t *all = sub(sys, "sys", 256, HY_OVERFLOW_DROP_OLDEST, 0);
  /* Task exits, with the reason. */
  hy_task_opts_t o = HY_TASK_OPTS_INIT;
  o.name = "quick-one";
  hy_task_t t1, t2;
  ASSERT_OK(hy_task_spawn(rt, quick, NULL, &o, &t1));
  ASSERT_OK(hy_task_join(rt, t1, NULL));
  o.name = "sleepy";
  ASSERT_OK(hy_task_spawn(rt, sleeper, rt, &o, &t2));
  hy_sleep(rt, HY_MS(10));
  ASSERT_OK(hy_task_cancel(rt, t2));
  ASSERT_OK(hy_task_join(rt, t2, NULL));
  hy_event_t *ev;
  ASSERT_OK(hy_receiver_read(tasks, &ev, hy_deadline_in(HY_SEC(5))));
  ASSERT(hy_event_type_of(ev) == &hy_event_task);
  const hy_task_event_t *te = hy_event_data(ev, NULL);
  ASSERT(strcmp(te->name, "quick-one") == 0);
  ASSERT_EQ(te->reason, HY_TASK_RETURNED);
  ASSERT_EQ(te->task, t1.id);
  hy_event_unref(ev);
  ASSERT_OK(hy_receiver_read(tasks, &ev, hy_deadline_in(HY_SEC(5))));
  te = hy_event_data(ev, NULL);
  ASSERT(strcmp(te->name, "sleepy") == 0);
  ASSERT_EQ(te->reason, HY_TASK_CANCELLED);
  hy_event_unref(ev);
  /* Signals (the signal layer's hook). */
  hy_receiver_t *sig = sub(sys, "sys/signal", 4, 0, 0);
  hy__event_publish_signal(rt, 15);
  ASSERT_OK(hy_receiver_try_read(sig, &ev));
  ASSERT_EQ(((const hy_signal_event_t *)hy_event_data(ev, NULL))->signo, 15);
  hy_event_unref(ev);
  hy_unsubscribe(sig);
  /* Logs. */
  ASSERT_EQ(hy_log_event(rt, 4, "disk full"), 2);
  ASSERT_OK(hy_receiver_read(logs, &ev, HY_FOREVER));
  const hy_log_event_t *le = hy_event_data(ev, NULL);
  ASSERT_EQ(le->level, 4);
  ASSERT(strcmp(le->text, "disk full") == 0);
  hy_event_unref(ev);
  /* An application broker registered with the system broker. */
  hy_broker_t *app;
  ASSERT_OK(hy_broker_new(rt, "app", &app));
  ASSERT_OK(hy_channel_create(app, "app/events", 0));
  ASSERT_OK(hy_mux_add(sys, app));
  hy_receiver_t *ar = sub(sys, "app/events", 8, 0, 0);
  ev = i64_event(3, HY_FOREVER);
  ASSERT_EQ(hy_send_to(app, "app/events", ev, HY_FOREVER), 1);
  hy_event_unref(ev);
  ASSERT_EQ(drain(ar), 1);
  hy_unsubscribe(ar);
  ASSERT_OK(hy_mux_remove(sys, app));
  ASSERT_OK(hy_broker_free(app));
  /* Shutdown phases, in order, read after the runtime stopped. */
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(20)));
  int expect = HY_PHASE_QUIESCE;
  while (hy_receiver_try_read(phases, &ev) == 0) {
    const hy_phase_event_t *pe = hy_event_data(ev, NULL);
    ASSERT_EQ(pe->phase, expect);
    expect++;
    hy_event_unref(ev);
  }
  ASSERT_EQ(expect, HY_PHASE_DONE + 1);
  ASSERT_GE(queued(all), 2 + 1 + 1 + 5);
  hy_unsubscribe(phases);
  hy_unsubscribe(tasks);
  hy_unsubscribe(logs);
  hy_unsubscribe(all);
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

/* The runtime never blocks on its own channels: a full "block" receiver
 * loses the phase events (counted), and shutdown completes. */
TEST_IMPL(event_sys_never_blocks) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_receiver_t *r = sub(hy_sys_broker(rt), "sys/shutdown", 1, 0, 0);
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(10)));
  ASSERT_EQ(queued(r), 1);
  ASSERT_EQ(dropped(r), HY_PHASE_DONE - 1);
  hy_unsubscribe(r);
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

/* ---------------------------------------------------- request / reply */

typedef struct srv_arg {
  hy_runtime_t *rt;
  hy_broker_t *b;
  hy_receiver_t *r;
  int served;
} srv_arg;

static void *server(void *p) {
  srv_arg *a = p;
  hy_event_t *req;
  while (hy_receiver_read(a->r, &req, HY_FOREVER) == 0) {
    /* Chaining: the reply derives from the request. */
    int64_t v = i64_of(req) * 2;
    hy_event_t *rep;
    ASSERT_OK(hy_event_derive(req, &hy_event_i64, &v, sizeof v, &rep));
    ASSERT_EQ(hy_reply(a->b, req, rep, HY_FOREVER), 1);
    hy_event_unref(rep);
    hy_event_unref(req);
    a->served++;
  }
  return NULL;
}

TEST_IMPL(event_request_reply) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "svc", 1));
  srv_arg a = {rt, b, sub(b, "svc", 8, 0, 0), 0};
  hy_task_t t;
  ASSERT_OK(hy_task_spawn(rt, server, &a, NULL, &t));
  for (int i = 0; i < 50; i++) {
    hy_event_t *req = i64_event(i, hy_now() + HY_SEC(30)), *rep;
    ASSERT_OK(hy_request(b, "svc", req, hy_deadline_in(HY_SEC(10)), &rep));
    ASSERT_EQ(i64_of(rep), 2 * i);
    ASSERT_EQ(hy_event_expiry(rep), hy_event_expiry(req));
    hy_event_t *again;
    ASSERT_ERR(hy_request(b, "svc", req, HY_FOREVER, &again), HY_EPERM);
    hy_event_unref(req);
    hy_event_unref(rep);
  }
  /* Reply channels are gone afterwards. */
  nlisted = 0;
  hy_broker_list(b, list_cb, NULL);
  ASSERT_LE(nlisted, 2); /* svc, reply */
  /* Nobody answering: time-out, never early. */
  ASSERT_OK(hy_channel_create(b, "void", 0));
  hy_event_t *req = i64_event(1, HY_FOREVER), *rep;
  hy_time_t dl = hy_deadline_in(HY_MS(30));
  ASSERT_ERR(hy_request(b, "void", req, dl, &rep), HY_ETIMEDOUT);
  ASSERT_GE(hy_now(), dl);
  hy_event_unref(req);
  req = i64_event(1, HY_FOREVER);
  ASSERT_ERR(hy_request(b, "missing", req, dl, &rep), HY_ENOENT);
  hy_event_unref(req);
  req = i64_event(1, HY_FOREVER);
  ASSERT_ERR(hy_reply(b, req, req, HY_FOREVER), HY_EINVAL); /* names none */
  hy_event_unref(req);
  ASSERT_OK(hy_channel_delete(b, "svc"));
  ASSERT_OK(hy_task_join(rt, t, NULL));
  ASSERT_EQ(a.served, 50);
  hy_unsubscribe(a.r);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}

/* ------------------------------------------------------------ batching */

TEST_IMPL(event_batcher) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "batches", 0));
  hy_receiver_t *r = sub(b, "batches", 64, 0, 0);
  hy_sender_t *s;
  ASSERT_OK(hy_publish(b, "batches", &s));
  hy_batcher_t *bt;
  ASSERT_ERR(hy_batcher_new(rt, s, 0, HY_MS(50), &bt), HY_EINVAL);
  ASSERT_OK(hy_batcher_new(rt, s, 10, HY_MS(50), &bt));
  /* By count: 25 events give two batches of 10 at once... */
  hy_time_t t0 = hy_now();
  for (int i = 0; i < 25; i++) {
    hy_event_t *ev = i64_event(i, HY_FOREVER);
    ASSERT_OK(hy_batcher_feed(bt, ev, HY_FOREVER));
    hy_event_unref(ev);
  }
  int next = 0;
  for (int k = 0; k < 3; k++) {
    hy_event_t *batch;
    ASSERT_OK(hy_receiver_read(r, &batch, hy_deadline_in(HY_SEC(10))));
    size_t n;
    hy_event_t *const *v = hy_event_batch_items(batch, &n);
    ASSERT_EQ(n, k < 2 ? 10 : 5);
    for (size_t i = 0; i < n; i++)
      ASSERT_EQ(i64_of(v[i]), next++);
    /* ...and the rest by time: not before max_wait after its first. */
    if (k == 2)
      ASSERT_GE(hy_now() - t0, HY_MS(50));
    hy_event_unref(batch);
  }
  ASSERT_EQ(queued(r), 0);
  /* Explicit flush. */
  hy_event_t *ev = i64_event(100, HY_FOREVER);
  ASSERT_OK(hy_batcher_feed(bt, ev, HY_FOREVER));
  hy_event_unref(ev);
  ASSERT_EQ(hy_batcher_flush(bt, HY_FOREVER), 1);
  ASSERT_EQ(hy_batcher_flush(bt, HY_FOREVER), 0);
  ASSERT_EQ(drain(r), 1);
  hy_batcher_free(bt);
  /* A long max_wait: shutdown flushes what is held. */
  ASSERT_OK(hy_batcher_new(rt, s, 100, HY_SEC(100), &bt));
  for (int i = 0; i < 3; i++) {
    ev = i64_event(i, HY_FOREVER);
    ASSERT_OK(hy_batcher_feed(bt, ev, HY_FOREVER));
    hy_event_unref(ev);
  }
  hy_sleep(rt, HY_MS(10));
  ASSERT_EQ(queued(r), 0);
  ASSERT_OK(hy_runtime_shutdown(rt, HY_MS(20)));
  ASSERT_OK(hy_receiver_try_read(r, &ev));
  size_t n;
  hy_event_batch_items(ev, &n);
  ASSERT_EQ(n, 3);
  hy_event_unref(ev);
  hy_batcher_free(bt);
  hy_sender_free(s);
  hy_unsubscribe(r);
  ASSERT_OK(hy_broker_free(b));
  ASSERT_OK(hy_runtime_close(rt));
  return 0;
}

#endif /* _WIN32 */

#ifndef _WIN32
/* A pick run of 1 alternates at every send; the default keeps runs. */
TEST_IMPL(event_pick_run) {
  hy_runtime_t *rt = test_rt_new(1);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "one", 1));
  ASSERT_ERR(hy_channel_set_pick_run(b, "one", 0), HY_EINVAL);
  ASSERT_ERR(hy_channel_set_pick_run(b, "nope", 1), HY_ENOENT);
  ASSERT_ERR(hy_channel_set_pick_run(NULL, "one", 1), HY_EINVAL);
  ASSERT_OK(hy_channel_set_pick_run(b, "one", 1));
  hy_receiver_t *r[3];
  for (int i = 0; i < 3; i++)
    r[i] = sub(b, "one", 64, HY_OVERFLOW_BLOCK, 0);
  for (int i = 0; i < 6; i++) {
    hy_event_t *ev = i64_event(i, HY_FOREVER);
    ASSERT_EQ(hy_send_to(b, "one", ev, HY_FOREVER), 1);
    hy_event_unref(ev);
  }
  for (int i = 0; i < 3; i++)
    ASSERT_EQ(drain(r[i]), 2);
  /* Runs of 4: 12 sends, 4 in a row each. */
  ASSERT_OK(hy_channel_set_pick_run(b, "one", 4));
  for (int i = 0; i < 12; i++) {
    hy_event_t *ev = i64_event(i, HY_FOREVER);
    ASSERT_EQ(hy_send_to(b, "one", ev, HY_FOREVER), 1);
    hy_event_unref(ev);
  }
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(drain(r[i]), 4);
    hy_unsubscribe(r[i]);
  }
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}
#endif

#ifndef _WIN32
/* A sender's owner sends without topo while the topology version stays
 * the same (channels/event_send.c): subscribes, unsubscribes and priority
 * changes race its sends, and a second task sends through the same sender
 * the ordinary way.  Every send hands its event to at most one receiver
 * (its pick count says which), none twice; the channel counts every send
 * exactly (the owner's counts live in the sender until it is freed); and
 * once the churn is over the owner's next sends see the final topology at
 * once: all delivered, shared among the two steady receivers within one
 * round-robin run each. */
enum { FP_N = 6000, FP_TAIL = 4 * HY_PICK_RUN };

typedef struct fparg {
  hy_runtime_t *rt;
  hy_broker_t *b;
  hy_sender_t *s;
  uint8_t *seen;   /* by value: receivers that had it */
  atomic_long delivered, sends;
  atomic_int churning;
  int base;        /* this task's values: base + i */
  int n;
} fparg;

static void *fp_sender(void *p) {
  fparg *a = p;
  for (int i = 0; i < a->n; i++) {
    hy_event_t *ev = i64_event(a->base + i, HY_FOREVER);
    int rc = hy_send(a->s, ev, HY_FOREVER);
    ASSERT_GE(rc, 0);
    ASSERT_LE(rc, 1);
    ASSERT_EQ(hy_event_picks(ev), (unsigned)rc);
    hy_event_unref(ev);
    atomic_fetch_add(&a->delivered, rc);
    atomic_fetch_add(&a->sends, 1);
    if (test_rand() % 32 == 0)
      hy_yield(a->rt);
  }
  return NULL;
}

static void fp_take(fparg *a, hy_receiver_t *r) {
  hy_event_t *ev;
  while (hy_receiver_try_read(r, &ev) == 0) {
    a->seen[i64_of(ev)]++;
    hy_event_unref(ev);
  }
}

static void *fp_churn(void *p) {
  fparg *a = p;
  while (atomic_load(&a->churning)) {
    hy_receiver_t *r = sub(a->b, "jobs", 4 * FP_N, HY_OVERFLOW_BLOCK,
                           (int64_t)(test_rand() % 3) - 1);
    for (int k = (int)(test_rand() % 4); k > 0; k--) {
      hy_yield(a->rt);
      ASSERT_OK(hy_receiver_set_priority(r, (int64_t)(test_rand() % 3) - 1));
    }
    fp_take(a, r);
    hy_unsubscribe(r); /* drops what came after the take: not seen */
  }
  return NULL;
}

TEST_IMPL(event_sender_fast_path_races_topology) {
  hy_runtime_t *rt = test_rt_new(2);
  hy_broker_t *b;
  ASSERT_OK(hy_broker_new(rt, "b", &b));
  ASSERT_OK(hy_channel_create(b, "jobs", 1));
  hy_receiver_t *steady[2];
  for (int i = 0; i < 2; i++)
    steady[i] = sub(b, "jobs", 4 * FP_N + FP_TAIL, HY_OVERFLOW_BLOCK, 0);
  hy_sender_t *s;
  ASSERT_OK(hy_publish(b, "jobs", &s));
  fparg a[2];
  uint8_t *seen = calloc(2 * FP_N + FP_TAIL, 1);
  ASSERT_NE(seen, NULL);
  memset(a, 0, sizeof a);
  for (int i = 0; i < 2; i++) {
    a[i].rt = rt;
    a[i].b = b;
    a[i].s = s;
    a[i].seen = seen;
    a[i].base = i * FP_N;
    a[i].n = FP_N;
  }
  fparg churn = a[0];
  atomic_store(&churn.churning, 1);
  hy_task_t t[3];
  ASSERT_OK(hy_task_spawn(rt, fp_churn, &churn, NULL, &t[2]));
  for (int i = 0; i < 2; i++)
    ASSERT_OK(hy_task_spawn(rt, fp_sender, &a[i], NULL, &t[i]));
  for (int i = 0; i < 2; i++)
    ASSERT_OK(hy_task_join(rt, t[i], NULL));
  atomic_store(&churn.churning, 0);
  ASSERT_OK(hy_task_join(rt, t[2], NULL));
  long delivered = atomic_load(&a[0].delivered) + atomic_load(&a[1].delivered);
  hy_channel_info_t i0 = info(b, "jobs");
  ASSERT_EQ(i0.sent, 2 * FP_N);
  ASSERT_EQ(i0.delivered, (uint64_t)delivered);
  /* The tail: the steady receivers alone, every event delivered. */
  a[0].base = 2 * FP_N;
  a[0].n = FP_TAIL;
  atomic_store(&a[0].delivered, 0);
  ASSERT_OK(hy_task_spawn(rt, fp_sender, &a[0], NULL, &t[0]));
  ASSERT_OK(hy_task_join(rt, t[0], NULL));
  ASSERT_EQ(atomic_load(&a[0].delivered), FP_TAIL);
  long steady_got[2];
  for (int i = 0; i < 2; i++) {
    long before = 0;
    for (int v = 2 * FP_N; v < 2 * FP_N + FP_TAIL; v++)
      before += seen[v];
    fp_take(&a[0], steady[i]);
    long after = 0;
    for (int v = 2 * FP_N; v < 2 * FP_N + FP_TAIL; v++)
      after += seen[v];
    steady_got[i] = after - before;
  }
  for (int i = 0; i < 2; i++) {
    ASSERT_GE(steady_got[i], FP_TAIL / 2 - HY_PICK_RUN);
    ASSERT_LE(steady_got[i], FP_TAIL / 2 + HY_PICK_RUN);
  }
  for (int v = 0; v < 2 * FP_N + FP_TAIL; v++)
    ASSERT_LE(seen[v], 1);
  for (int v = 2 * FP_N; v < 2 * FP_N + FP_TAIL; v++)
    ASSERT_EQ(seen[v], 1);
  hy_sender_free(s);
  /* Freed, the sender's counts stay with the channel. */
  hy_channel_info_t i1 = info(b, "jobs");
  ASSERT_EQ(i1.sent, 2 * FP_N + FP_TAIL);
  ASSERT_EQ(i1.delivered, (uint64_t)delivered + FP_TAIL);
  for (int i = 0; i < 2; i++)
    hy_unsubscribe(steady[i]);
  free(seen);
  ASSERT_OK(hy_broker_free(b));
  test_rt_close(rt, HY_MS(50));
  return 0;
}
#endif
