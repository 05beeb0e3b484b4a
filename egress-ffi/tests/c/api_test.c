/* The C API's contract, under AddressSanitizer + UBSan + LeakSanitizer: every function with NULL
 * for each pointer argument, invalid UTF-8 in each string argument, enum and integer values out
 * of range (integers as wide as a C caller's: an int 65616 is refused as a port, never taken as
 * 80), result numbers and names, the last error message; the pure calls (builder, JSON, plan)
 * end to end; the kernel calls failing cleanly on a namespace that does not exist. (Every
 * output after every failure: outputs_test, generated from the header.)
 *
 * Needs root (the kernel calls check CAP_NET_ADMIN first) and creates nothing.
 * Usage: api_test EXPECTED_VERSION */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static char sentinel;
#define NOT_NULL(type) ((type *)(void *)&sentinel)

static const char *const BAD_UTF8 = "ok\xff";
static char missing_netns[128];

/* A builder that builds: adopt mode, one source and gateway. */
static egress_spec_builder *valid_builder(void) {
  egress_spec_builder *b = NULL;
  CHECK_RESULT(egress_spec_builder_new("c-test", &b), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_adopt(b, "macvlan0"), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_add_source(b, "203.0.113.99/24"), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_add_gateway(b, "203.0.113.1"), EGRESS_RESULT_OK);
  return b;
}

static egress_spec *valid_spec(void) {
  egress_spec *spec = NULL;
  CHECK_RESULT(egress_spec_builder_build(valid_builder(), &spec), EGRESS_RESULT_OK);
  return spec;
}

/* Builds `b`, expecting EGRESS_RESULT_INVALID_SPEC with `needle` in the message. */
static void check_build_fails(egress_spec_builder *b, const char *needle) {
  egress_spec *spec = NOT_NULL(egress_spec);
  CHECK_RESULT(egress_spec_builder_build(b, &spec), EGRESS_RESULT_INVALID_SPEC);
  CHECK(spec == NULL);
  CHECK_MESSAGE(needle);
}

static void test_names_and_version(const char *expected_version) {
  CHECK(strcmp(egress_version(), expected_version) == 0);
  /* The numbers are the ABI: a compiled program holds them. */
  static const struct {
    egress_result code;
    uint32_t number;
    const char *name;
  } names[] = {
      {EGRESS_RESULT_OK, 0, "EGRESS_RESULT_OK"},
      {EGRESS_RESULT_NULL_PARAMETER, 1000, "EGRESS_RESULT_NULL_PARAMETER"},
      {EGRESS_RESULT_INVALID_UTF8, 1001, "EGRESS_RESULT_INVALID_UTF8"},
      {EGRESS_RESULT_OUT_OF_RANGE, 1002, "EGRESS_RESULT_OUT_OF_RANGE"},
      {EGRESS_RESULT_INSUFFICIENT_SIZE, 1003, "EGRESS_RESULT_INSUFFICIENT_SIZE"},
      {EGRESS_RESULT_MACVLAN_NOT_SET, 1004, "EGRESS_RESULT_MACVLAN_NOT_SET"},
      {EGRESS_RESULT_PANIC, 1100, "EGRESS_RESULT_PANIC"},
      {EGRESS_RESULT_UNKNOWN_ERROR, 1101, "EGRESS_RESULT_UNKNOWN_ERROR"},
      {EGRESS_RESULT_INVALID_SPEC, 2000, "EGRESS_RESULT_INVALID_SPEC"},
      {EGRESS_RESULT_PERMISSION_DENIED, 3000, "EGRESS_RESULT_PERMISSION_DENIED"},
      {EGRESS_RESULT_NOT_FOUND, 3001, "EGRESS_RESULT_NOT_FOUND"},
      {EGRESS_RESULT_ALREADY_EXISTS, 3002, "EGRESS_RESULT_ALREADY_EXISTS"},
      {EGRESS_RESULT_CONFLICT, 3003, "EGRESS_RESULT_CONFLICT"},
      {EGRESS_RESULT_STALE_HANDLE, 3004, "EGRESS_RESULT_STALE_HANDLE"},
      {EGRESS_RESULT_DRIFT_FOUND, 3100, "EGRESS_RESULT_DRIFT_FOUND"},
      {EGRESS_RESULT_VERIFY_FAILED, 3101, "EGRESS_RESULT_VERIFY_FAILED"},
      {EGRESS_RESULT_DIAGNOSIS_FAILED, 3102, "EGRESS_RESULT_DIAGNOSIS_FAILED"},
      {EGRESS_RESULT_NETLINK_FAILURE, 4000, "EGRESS_RESULT_NETLINK_FAILURE"},
      {EGRESS_RESULT_ROLLBACK_INCOMPLETE, 4001, "EGRESS_RESULT_ROLLBACK_INCOMPLETE"},
      {EGRESS_RESULT_TEARDOWN_INCOMPLETE, 4002, "EGRESS_RESULT_TEARDOWN_INCOMPLETE"},
      {EGRESS_RESULT_UNDO_SKIPPED, 4003, "EGRESS_RESULT_UNDO_SKIPPED"},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    CHECK(names[i].code == names[i].number);
    CHECK(strcmp(egress_result_name(names[i].code), names[i].name) == 0);
  }
  CHECK(strcmp(egress_result_name(1), "unknown egress_result") == 0);
  /* The codes of errors removed before 0.1.0 stay reserved. */
  CHECK(strcmp(egress_result_name(1102), "unknown egress_result") == 0);
  CHECK(strcmp(egress_result_name(1103), "unknown egress_result") == 0);
  CHECK(strcmp(egress_result_name(1104), "unknown egress_result") == 0);
  CHECK(strcmp(egress_result_name(4004), "unknown egress_result") == 0);
  CHECK(strcmp(egress_result_name(UINT32_MAX), "unknown egress_result") == 0);
}

static void test_last_error_message(void) {
  char buf[64];
  size_t n = 12345;
  egress_spec_builder *none = NOT_NULL(egress_spec_builder);
  CHECK_RESULT(egress_spec_builder_new(NULL, &none), EGRESS_RESULT_NULL_PARAMETER);
  CHECK(none == NULL);
  const char *full = "egress_spec_builder_new: argument `name` is NULL";
  CHECK_RESULT(egress_last_error_message(buf, sizeof buf, &n), EGRESS_RESULT_OK);
  CHECK(n == strlen(full));
  CHECK(strcmp(buf, full) == 0);
  /* Truncated, NUL-terminated, full length reported. */
  CHECK_RESULT(egress_last_error_message(buf, 7, &n), EGRESS_RESULT_INSUFFICIENT_SIZE);
  CHECK(n == strlen(full));
  CHECK(strcmp(buf, "egress") == 0);
  /* len 0 writes nothing. */
  buf[0] = 'x';
  CHECK_RESULT(egress_last_error_message(buf, 0, &n), EGRESS_RESULT_INSUFFICIENT_SIZE);
  CHECK(buf[0] == 'x');
  CHECK_RESULT(egress_last_error_message(NULL, sizeof buf, &n), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_last_error_message(buf, sizeof buf, NULL), EGRESS_RESULT_NULL_PARAMETER);
  /* Reading never changes the message; a successful call clears it. */
  CHECK_MESSAGE(full);
  egress_spec_builder *b = NULL;
  CHECK_RESULT(egress_spec_builder_new("r", &b), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_last_error_message(buf, sizeof buf, &n), EGRESS_RESULT_OK);
  CHECK(n == 0 && buf[0] == '\0');
  egress_spec_builder_free(b);
}

typedef egress_result (*string_setter)(egress_spec_builder *, const char *);

static void test_string_setters(void) {
  static const struct {
    const char *name;
    string_setter fn;
    const char *arg;
    int needs_macvlan;
  } setters[] = {
      {"egress_spec_builder_netns_path", egress_spec_builder_netns_path, "path", 0},
      {"egress_spec_builder_netns_name", egress_spec_builder_netns_name, "netns", 0},
      {"egress_spec_builder_adopt", egress_spec_builder_adopt, "link", 0},
      {"egress_spec_builder_internal", egress_spec_builder_internal, "link", 0},
      {"egress_spec_builder_add_source", egress_spec_builder_add_source, "cidr", 0},
      {"egress_spec_builder_add_gateway", egress_spec_builder_add_gateway, "ip", 0},
      {"egress_spec_builder_add_fallback", egress_spec_builder_add_fallback, "ip", 0},
      {"egress_spec_builder_parent_netns_path", egress_spec_builder_parent_netns_path, "path", 1},
      {"egress_spec_builder_parent_netns_name", egress_spec_builder_parent_netns_name, "netns", 1},
      {"egress_spec_builder_mac", egress_spec_builder_mac, "mac", 1},
      {"egress_spec_builder_link_name", egress_spec_builder_link_name, "name", 1},
  };
  char expected[256];
  for (size_t i = 0; i < sizeof setters / sizeof setters[0]; i++) {
    egress_spec_builder *b = NULL;
    CHECK_RESULT(egress_spec_builder_new("r", &b), EGRESS_RESULT_OK);
    if (setters[i].needs_macvlan) {
      CHECK_RESULT(setters[i].fn(b, "x"), EGRESS_RESULT_MACVLAN_NOT_SET);
      CHECK_MESSAGE(setters[i].name);
      CHECK_RESULT(egress_spec_builder_macvlan(b, "eth1", EGRESS_MACVLAN_MODE_BRIDGE),
                   EGRESS_RESULT_OK);
    }
    CHECK_RESULT(setters[i].fn(NULL, "x"), EGRESS_RESULT_NULL_PARAMETER);
    snprintf(expected, sizeof expected, "%s: argument `builder` is NULL", setters[i].name);
    CHECK_MESSAGE(expected);
    CHECK_RESULT(setters[i].fn(b, NULL), EGRESS_RESULT_NULL_PARAMETER);
    snprintf(expected, sizeof expected, "%s: argument `%s` is NULL", setters[i].name,
             setters[i].arg);
    CHECK_MESSAGE(expected);
    CHECK_RESULT(setters[i].fn(b, BAD_UTF8), EGRESS_RESULT_INVALID_UTF8);
    snprintf(expected, sizeof expected,
             "%s: argument `%s` is not valid UTF-8 (bad byte at offset 2)", setters[i].name,
             setters[i].arg);
    CHECK_MESSAGE(expected);
    egress_spec_builder_free(b);
  }
}

static void test_other_setters(void) {
  egress_spec_builder *b = NULL;
  CHECK_RESULT(egress_spec_builder_new("r", &b), EGRESS_RESULT_OK);

  CHECK_RESULT(egress_spec_builder_new(NULL, NULL), EGRESS_RESULT_NULL_PARAMETER);
  egress_spec_builder *out = NOT_NULL(egress_spec_builder);
  CHECK_RESULT(egress_spec_builder_new(NULL, &out), EGRESS_RESULT_NULL_PARAMETER);
  CHECK(out == NULL);
  CHECK_MESSAGE("argument `name` is NULL");
  CHECK_RESULT(egress_spec_builder_new("r", NULL), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("argument `builder_out` is NULL");
  out = NOT_NULL(egress_spec_builder);
  CHECK_RESULT(egress_spec_builder_new(BAD_UTF8, &out), EGRESS_RESULT_INVALID_UTF8);
  CHECK(out == NULL);

  CHECK_RESULT(egress_spec_builder_netns_pid(NULL, 1), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_spec_builder_parent_netns_pid(NULL, 1), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_spec_builder_mtu(NULL, 1500), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_spec_builder_announce(NULL, 1), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_spec_builder_parent_netns_pid(b, 1), EGRESS_RESULT_MACVLAN_NOT_SET);
  CHECK_RESULT(egress_spec_builder_mtu(b, 1500), EGRESS_RESULT_MACVLAN_NOT_SET);
  CHECK_MESSAGE("egress_spec_builder_mtu: this macvlan option needs egress_spec_builder_macvlan");

  CHECK_RESULT(egress_spec_builder_macvlan(NULL, "eth1", EGRESS_MACVLAN_MODE_PRIVATE),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_spec_builder_macvlan(b, NULL, EGRESS_MACVLAN_MODE_PRIVATE),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("argument `parent` is NULL");
  CHECK_RESULT(egress_spec_builder_macvlan(b, BAD_UTF8, EGRESS_MACVLAN_MODE_PRIVATE),
               EGRESS_RESULT_INVALID_UTF8);
  const uint32_t bad_modes[] = {0, 3, 5, 16, UINT32_MAX};
  for (size_t i = 0; i < sizeof bad_modes / sizeof bad_modes[0]; i++) {
    CHECK_RESULT(egress_spec_builder_macvlan(b, "eth1", bad_modes[i]), EGRESS_RESULT_OUT_OF_RANGE);
    CHECK_MESSAGE("argument `mode` is");
  }
  const uint32_t good_modes[] = {EGRESS_MACVLAN_MODE_PRIVATE, EGRESS_MACVLAN_MODE_VEPA,
                                 EGRESS_MACVLAN_MODE_BRIDGE, EGRESS_MACVLAN_MODE_PASSTHRU};
  for (size_t i = 0; i < sizeof good_modes / sizeof good_modes[0]; i++)
    CHECK_RESULT(egress_spec_builder_macvlan(b, "eth1", good_modes[i]), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_parent_netns_pid(b, 1), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_mtu(b, 1500), EGRESS_RESULT_OK);

  CHECK_RESULT(egress_spec_builder_add_redirect(NULL, EGRESS_PROTOCOL_TCP, 80, "198.51.100.1", 0),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_spec_builder_add_redirect(b, EGRESS_PROTOCOL_TCP, 80, NULL, 0),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("argument `to` is NULL");
  CHECK_RESULT(egress_spec_builder_add_redirect(b, EGRESS_PROTOCOL_TCP, 80, BAD_UTF8, 0),
               EGRESS_RESULT_INVALID_UTF8);
  const uint32_t bad_protocols[] = {0, 1, 7, 255, UINT32_MAX};
  for (size_t i = 0; i < sizeof bad_protocols / sizeof bad_protocols[0]; i++) {
    CHECK_RESULT(egress_spec_builder_add_redirect(b, bad_protocols[i], 80, "198.51.100.1", 0),
                 EGRESS_RESULT_OUT_OF_RANGE);
    CHECK_MESSAGE("argument `protocol` is");
  }

  CHECK_RESULT(egress_spec_builder_add_kept_route(NULL, "10.0.0.0/8", NULL),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_spec_builder_add_kept_route(b, NULL, "10.0.0.1"),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("argument `cidr` is NULL");
  CHECK_RESULT(egress_spec_builder_add_kept_route(b, BAD_UTF8, NULL), EGRESS_RESULT_INVALID_UTF8);
  CHECK_RESULT(egress_spec_builder_add_kept_route(b, "10.0.0.0/8", BAD_UTF8),
               EGRESS_RESULT_INVALID_UTF8);
  CHECK_MESSAGE("argument `via` is not valid UTF-8");
  /* `via` is optional: NULL is a directly connected network. */
  CHECK_RESULT(egress_spec_builder_add_kept_route(b, "10.0.0.0/8", NULL), EGRESS_RESULT_OK);

  /* build: NULL builder (the output is NULL after it, whatever it held, so that it can be
   * freed); NULL spec_out still consumes the builder (LeakSanitizer checks). */
  egress_spec *spec = (void *)1;
  CHECK_RESULT(egress_spec_builder_build(NULL, &spec), EGRESS_RESULT_NULL_PARAMETER);
  CHECK(spec == NULL);
  egress_spec_free(spec);
  CHECK_MESSAGE("argument `builder` is NULL");
  CHECK_RESULT(egress_spec_builder_build(b, NULL), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("argument `spec_out` is NULL");

  egress_spec_builder_free(NULL);
}

/* Integers are int64_t: what a C caller holds reaches the library as it is, and a value the
 * field cannot hold is refused by name and value, never truncated. */
static void test_integers_as_wide_as_the_caller_s(void) {
  egress_spec_builder *b = valid_builder();
  int port = 65616, to_port = 70000, count = 256;
  long pid = -1;
  CHECK_RESULT(egress_spec_builder_add_redirect(b, EGRESS_PROTOCOL_TCP, port, "198.51.100.1", 0),
               EGRESS_RESULT_OUT_OF_RANGE);
  CHECK_MESSAGE("egress_spec_builder_add_redirect: argument `port` is 65616, expected a port "
                "from 1 to 65535");
  CHECK_RESULT(egress_spec_builder_add_redirect(b, EGRESS_PROTOCOL_TCP, -80, "198.51.100.1", 0),
               EGRESS_RESULT_OUT_OF_RANGE);
  CHECK_MESSAGE("argument `port` is -80");
  CHECK_RESULT(egress_spec_builder_add_redirect(b, EGRESS_PROTOCOL_TCP, 80, "198.51.100.1", to_port),
               EGRESS_RESULT_OUT_OF_RANGE);
  CHECK_MESSAGE("argument `to_port` is 70000");
  CHECK_RESULT(egress_spec_builder_announce(b, count), EGRESS_RESULT_OUT_OF_RANGE);
  CHECK_MESSAGE("egress_spec_builder_announce: argument `count` is 256, expected a count from 0 "
                "to 16");
  CHECK_RESULT(egress_spec_builder_announce(b, -1), EGRESS_RESULT_OUT_OF_RANGE);
  CHECK_RESULT(egress_spec_builder_netns_pid(b, pid), EGRESS_RESULT_OUT_OF_RANGE);
  CHECK_MESSAGE("argument `pid` is -1");
  CHECK_RESULT(egress_spec_builder_netns_pid(b, INT64_C(1) << 32), EGRESS_RESULT_OUT_OF_RANGE);
  CHECK_MESSAGE("argument `pid` is 4294967296");
  CHECK_RESULT(egress_spec_builder_netns_pid(NULL, -1), EGRESS_RESULT_NULL_PARAMETER);
  /* The extremes the fields hold are taken as they are. */
  CHECK_RESULT(egress_spec_builder_add_redirect(b, EGRESS_PROTOCOL_TCP, 65535, "198.51.100.1",
                                                65535),
               EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_announce(b, 16), EGRESS_RESULT_OK);
  egress_spec *spec = NULL;
  CHECK_RESULT(egress_spec_builder_build(b, &spec), EGRESS_RESULT_OK);
  char *json = NULL;
  CHECK_RESULT(egress_spec_to_json(spec, &json), EGRESS_RESULT_OK);
  CHECK(json != NULL && strstr(json, "\"port\": 65535") != NULL);
  CHECK(json != NULL && strstr(json, "\"announce\": 16") != NULL);
  egress_string_free(json);
  egress_spec_free(spec);
  /* A negative timeout is out of range; one above the longest is an invalid field. */
  char *out = NOT_NULL(char);
  CHECK_RESULT(egress_router_diagnose_json_by_name(missing_netns, "c-test", -1, &out),
               EGRESS_RESULT_OUT_OF_RANGE);
  CHECK(out == NULL);
  CHECK_MESSAGE("argument `timeout_ms` is -1");
}

static void test_values_checked_at_build(void) {
  egress_spec_builder *b = valid_builder();
  CHECK_RESULT(egress_spec_builder_add_redirect(b, EGRESS_PROTOCOL_TCP, 0, "198.51.100.1", 0),
               EGRESS_RESULT_OK);
  check_build_fails(b, "invalid redirects[0].port `0`: a port from 1 to 65535");

  b = valid_builder();
  CHECK_RESULT(egress_spec_builder_announce(b, 17), EGRESS_RESULT_OK);
  check_build_fails(b, "invalid announce `17`");

  b = valid_builder();
  CHECK_RESULT(egress_spec_builder_netns_pid(b, 0), EGRESS_RESULT_OK);
  check_build_fails(b, "invalid netns.pid `0`");

  b = valid_builder();
  CHECK_RESULT(egress_spec_builder_macvlan(b, "eth1", EGRESS_MACVLAN_MODE_PRIVATE),
               EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_mtu(b, 67), EGRESS_RESULT_OK);
  check_build_fails(b, "invalid external.macvlan.mtu `67`");

  b = valid_builder();
  CHECK_RESULT(egress_spec_builder_macvlan(b, "eth1", EGRESS_MACVLAN_MODE_PRIVATE),
               EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_mac(b, "01:00:5e:00:00:01"), EGRESS_RESULT_OK);
  check_build_fails(b, "invalid external.macvlan.mac `01:00:5e:00:00:01`");

  b = valid_builder();
  CHECK_RESULT(egress_spec_builder_add_source(b, "203.0.113.300/24"), EGRESS_RESULT_OK);
  check_build_fails(b, "invalid sources[1] `203.0.113.300/24`");

  b = NULL;
  CHECK_RESULT(egress_spec_builder_new("Not_A_Name", &b), EGRESS_RESULT_OK);
  check_build_fails(b, "invalid name `Not_A_Name`");

  /* Every invalid field is in the one message, the first one first. */
  b = NULL;
  CHECK_RESULT(egress_spec_builder_new("Not_A_Name", &b), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_adopt(b, "macvlan0"), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_add_source(b, "203.0.113.300/24"), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_add_gateway(b, "203.0.113.1"), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_announce(b, 17), EGRESS_RESULT_OK);
  check_build_fails(b, "egress_spec_builder_build: invalid name `Not_A_Name`");
  CHECK_MESSAGE("; and 2 more: ");
  CHECK_MESSAGE("invalid sources[0] `203.0.113.300/24`");
  CHECK_MESSAGE("invalid announce `17`");
}

static void test_spec_calls(void) {
  egress_spec *spec = valid_spec();
  char *text = NOT_NULL(char);

  CHECK_RESULT(egress_spec_plan(NULL, &text), EGRESS_RESULT_NULL_PARAMETER);
  CHECK(text == NULL);
  CHECK_RESULT(egress_spec_plan(spec, NULL), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("egress_spec_plan: argument `plan_out` is NULL");
  CHECK_RESULT(egress_spec_plan(spec, &text), EGRESS_RESULT_OK);
  /* The crash record is written first, then the table. */
  CHECK(text != NULL && strstr(text, " 1. ip -6 route add blackhole 6567:") == text);
  CHECK(text != NULL && strstr(text, "\n 2. nft add table inet egress_c_test") != NULL);
  egress_string_free(text);

  CHECK_RESULT(egress_spec_to_json(NULL, &text), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_spec_to_json(spec, NULL), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_spec_to_json(spec, &text), EGRESS_RESULT_OK);

  /* The JSON form reads back to the same spec. */
  egress_spec *again = NOT_NULL(egress_spec);
  CHECK_RESULT(egress_spec_from_json(NULL, &again), EGRESS_RESULT_NULL_PARAMETER);
  CHECK(again == NULL);
  CHECK_RESULT(egress_spec_from_json(text, NULL), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_spec_from_json(BAD_UTF8, &again), EGRESS_RESULT_INVALID_UTF8);
  CHECK_MESSAGE("argument `json` is not valid UTF-8");
  CHECK_RESULT(egress_spec_from_json(text, &again), EGRESS_RESULT_OK);
  char *text2 = NULL;
  CHECK_RESULT(egress_spec_to_json(again, &text2), EGRESS_RESULT_OK);
  CHECK(text2 != NULL && strcmp(text, text2) == 0);
  egress_string_free(text);
  egress_string_free(text2);
  egress_spec_free(again);

  again = NOT_NULL(egress_spec);
  CHECK_RESULT(egress_spec_from_json("{\"name\": \"r\", \"fallbackIP\": \"198.51.100.9\"}", &again),
               EGRESS_RESULT_INVALID_SPEC);
  CHECK(again == NULL);
  CHECK_MESSAGE("unknown field `fallbackIP`");
  CHECK_RESULT(egress_spec_from_json("{\"name\": \"r\", \"external\": {\"adopt\": \"m\"}, "
                                     "\"sources\": [\"203.0.113.9\"], \"gateways\": [\"203.0.113.1\"], "
                                     "\"redirects\": [{\"protocol\": \"tcp\", \"port\": 70000, "
                                     "\"to\": \"198.51.100.1\"}]}",
                                     &again),
               EGRESS_RESULT_INVALID_SPEC);
  CHECK_MESSAGE("invalid redirects[0].port `70000`: a port from 1 to 65535");
  CHECK_RESULT(egress_spec_from_json("", &again), EGRESS_RESULT_INVALID_SPEC);

  egress_spec_free(spec);
  egress_spec_free(NULL);
  egress_string_free(NULL);
}

/* Kernel calls fail cleanly, with the documented code, on a namespace that does not exist. */
static void test_kernel_calls_on_a_missing_namespace(void) {
  egress_spec_builder *b = valid_builder();
  CHECK_RESULT(egress_spec_builder_netns_path(b, missing_netns), EGRESS_RESULT_OK);
  egress_spec *spec = NULL;
  CHECK_RESULT(egress_spec_builder_build(b, &spec), EGRESS_RESULT_OK);

  egress_router *router = NOT_NULL(egress_router);
  CHECK_RESULT(egress_spec_apply(NULL, &router), EGRESS_RESULT_NULL_PARAMETER);
  CHECK(router == NULL);
  CHECK_RESULT(egress_spec_apply(spec, NULL), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("egress_spec_apply: argument `router_out` is NULL");
  router = NOT_NULL(egress_router);
  CHECK_RESULT(egress_spec_apply(spec, &router), EGRESS_RESULT_NOT_FOUND);
  CHECK(router == NULL);
  CHECK_MESSAGE("egress_spec_apply: netns: network namespace");
  CHECK_MESSAGE(missing_netns);

  egress_ensure_action action = EGRESS_ENSURE_ACTION_UNCHANGED;
  CHECK_RESULT(egress_spec_ensure(NULL, &action), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_spec_ensure(spec, NULL), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("egress_spec_ensure: argument `action_out` is NULL");
  CHECK_RESULT(egress_spec_ensure(spec, &action), EGRESS_RESULT_NOT_FOUND);

  char *text = NOT_NULL(char);
  CHECK_RESULT(egress_spec_check(NULL, &text), EGRESS_RESULT_NULL_PARAMETER);
  CHECK(text == NULL);
  CHECK_RESULT(egress_spec_check(spec, NULL), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("egress_spec_check: argument `drift_out` is NULL");
  CHECK_RESULT(egress_spec_check(spec, &text), EGRESS_RESULT_NOT_FOUND);
  CHECK(text == NULL);

  text = NOT_NULL(char);
  CHECK_RESULT(egress_spec_plan_live(NULL, &text), EGRESS_RESULT_NULL_PARAMETER);
  CHECK(text == NULL);
  CHECK_MESSAGE("egress_spec_plan_live: argument `spec` is NULL");
  CHECK_RESULT(egress_spec_plan_live(spec, NULL), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("egress_spec_plan_live: argument `plan_out` is NULL");
  text = NOT_NULL(char);
  CHECK_RESULT(egress_spec_plan_live(spec, &text), EGRESS_RESULT_NOT_FOUND);
  CHECK(text == NULL);
  CHECK_MESSAGE("egress_spec_plan_live: netns: network namespace");
  CHECK_MESSAGE(missing_netns);

  CHECK_RESULT(egress_router_teardown(NULL), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("egress_router_teardown: argument `router` is NULL");
  egress_router_free(NULL);

  CHECK_RESULT(egress_router_teardown_by_name(NULL, "c-test"), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("egress_router_teardown_by_name: argument `netns_path` is NULL");
  CHECK_RESULT(egress_router_teardown_by_name(missing_netns, NULL), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("argument `name` is NULL");
  CHECK_RESULT(egress_router_teardown_by_name(BAD_UTF8, "c-test"), EGRESS_RESULT_INVALID_UTF8);
  CHECK_MESSAGE("argument `netns_path` is not valid UTF-8 (bad byte at offset 2)");
  CHECK_RESULT(egress_router_teardown_by_name(missing_netns, BAD_UTF8),
               EGRESS_RESULT_INVALID_UTF8);
  CHECK_MESSAGE("argument `name` is not valid UTF-8 (bad byte at offset 2)");
  CHECK_RESULT(egress_router_teardown_by_name(missing_netns, "c-test"), EGRESS_RESULT_NOT_FOUND);

  text = NOT_NULL(char);
  CHECK_RESULT(egress_router_inspect_json_by_name(NULL, "c-test", &text),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK(text == NULL);
  CHECK_MESSAGE("egress_router_inspect_json_by_name: argument `netns_path` is NULL");
  CHECK_RESULT(egress_router_inspect_json_by_name(missing_netns, NULL, &text),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_router_inspect_json_by_name(missing_netns, "c-test", NULL),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("argument `json_out` is NULL");
  CHECK_RESULT(egress_router_inspect_json_by_name(BAD_UTF8, "c-test", &text),
               EGRESS_RESULT_INVALID_UTF8);
  CHECK_RESULT(egress_router_inspect_json_by_name(missing_netns, BAD_UTF8, &text),
               EGRESS_RESULT_INVALID_UTF8);
  CHECK_RESULT(egress_router_inspect_json_by_name(missing_netns, "c-test", &text),
               EGRESS_RESULT_NOT_FOUND);
  CHECK(text == NULL);

  text = NOT_NULL(char);
  CHECK_RESULT(egress_router_stats_json(NULL, &text), EGRESS_RESULT_NULL_PARAMETER);
  CHECK(text == NULL);
  CHECK_MESSAGE("egress_router_stats_json: argument `router` is NULL");
  CHECK_RESULT(egress_router_stats_json(NOT_NULL(egress_router), NULL),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("argument `json_out` is NULL");
  CHECK_RESULT(egress_router_stats_json_by_name(NULL, "c-test", &text),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("egress_router_stats_json_by_name: argument `netns_path` is NULL");
  CHECK_RESULT(egress_router_stats_json_by_name(missing_netns, NULL, &text),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_router_stats_json_by_name(missing_netns, "c-test", NULL),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK_RESULT(egress_router_stats_json_by_name(missing_netns, BAD_UTF8, &text),
               EGRESS_RESULT_INVALID_UTF8);
  CHECK_RESULT(egress_router_stats_json_by_name(missing_netns, "c-test", &text),
               EGRESS_RESULT_NOT_FOUND);
  CHECK(text == NULL);

  text = NOT_NULL(char);
  CHECK_RESULT(egress_router_diagnose_json(NULL, 0, &text), EGRESS_RESULT_NULL_PARAMETER);
  CHECK(text == NULL);
  CHECK_MESSAGE("egress_router_diagnose_json: argument `router` is NULL");
  CHECK_RESULT(egress_router_diagnose_json(NOT_NULL(egress_router), 0, NULL),
               EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("argument `json_out` is NULL");

  egress_spec_free(spec);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s EXPECTED_VERSION (as root)\n", argv[0]);
    return 2;
  }
  snprintf(missing_netns, sizeof missing_netns, "/run/netns/egt-%d-missing", (int)getpid());
  test_names_and_version(argv[1]);
  test_last_error_message();
  test_string_setters();
  test_other_setters();
  test_integers_as_wide_as_the_caller_s();
  test_values_checked_at_build();
  test_spec_calls();
  test_kernel_calls_on_a_missing_namespace();
  return report("api_test");
}
