/* A few checking macros for the C tests of libegress: every check counts, a failing one prints
 * where it failed, the last egress result name and message, and the run goes on. main() ends
 * with `return report("NAME");`, which prints "NAME: N passed, N failed". And the builder of
 * the router the tests apply. */
#ifndef EGRESS_TEST_CHECK_H
#define EGRESS_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

#include <egress.h>

static int checks_passed, checks_failed;

/* This thread's last egress error message (a static buffer, overwritten by the next call). */
static const char *last_message(void) {
  static char buf[4096];
  size_t n = 0;
  if (egress_last_error_message(buf, sizeof buf, &n) != EGRESS_RESULT_OK &&
      n >= sizeof buf)
    fprintf(stderr, "(message truncated from %zu bytes)\n", n);
  return buf;
}

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (cond) {                                                           \
      checks_passed++;                                                    \
    } else {                                                              \
      checks_failed++;                                                    \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
              #cond);                                                     \
    }                                                                     \
  } while (0)

/* Checks that `call` returns `expected`; prints what it returned and the message if not. */
#define CHECK_RESULT(call, expected)                                        \
  do {                                                                      \
    egress_result got_ = (call);                                            \
    if (got_ == (egress_result)(expected)) {                                \
      checks_passed++;                                                      \
    } else {                                                                \
      checks_failed++;                                                      \
      fprintf(stderr, "%s:%d: %s returned %s, expected %s: %s\n", __FILE__, \
              __LINE__, #call, egress_result_name(got_),                    \
              egress_result_name(expected), last_message());                \
    }                                                                       \
  } while (0)

/* Checks that the last error message contains `needle`. */
#define CHECK_MESSAGE(needle)                                               \
  do {                                                                      \
    const char *msg_ = last_message();                                      \
    if (strstr(msg_, (needle)) != NULL) {                                   \
      checks_passed++;                                                      \
    } else {                                                                \
      checks_failed++;                                                      \
      fprintf(stderr, "%s:%d: message lacks \"%s\": \"%s\"\n", __FILE__,   \
              __LINE__, (needle), msg_);                                    \
    }                                                                       \
  } while (0)

/* A builder of the router the tests apply in scripts/test-c.sh's namespace at `netns_path`: it
 * adopts ext0, its internal link is int0, source 203.0.113.99/24, gateway 203.0.113.1. */
static inline egress_spec_builder *test_router_builder(const char *name, const char *netns_path) {
  egress_spec_builder *b = NULL;
  CHECK_RESULT(egress_spec_builder_new(name, &b), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_netns_path(b, netns_path), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_adopt(b, "ext0"), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_internal(b, "int0"), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_add_source(b, "203.0.113.99/24"), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_add_gateway(b, "203.0.113.1"), EGRESS_RESULT_OK);
  return b;
}

static int report(const char *name) {
  printf("%s: %d passed, %d failed\n", name, checks_passed, checks_failed);
  return checks_failed == 0 && checks_passed > 0 ? 0 : 1;
}

#endif
