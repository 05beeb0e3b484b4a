/* A real router through the C API, under AddressSanitizer + UBSan + LeakSanitizer: apply, check,
 * the live plan, ensure, inspect, stats, drift and repair, teardown by handle and by name, a stale
 * handle (refused by teardown, stats and diagnosis alike), in a throwaway namespace that
 * scripts/test-c.sh makes (veth int0 on 192.0.2.2/24 with a default route, veth ext0 down to
 * adopt) and compares before and after.
 *
 * Usage: router_test NETNS_NAME (as root) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static char netns_path[256];
static const char *netns_name;

static egress_spec *router_spec(void) {
  egress_spec *spec = NULL;
  egress_spec_builder *b = test_router_builder("c-api", netns_path);
  CHECK_RESULT(egress_spec_builder_add_redirect(b, EGRESS_PROTOCOL_TCP, 80, "198.51.100.25", 8080),
               EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_add_fallback(b, "198.51.100.9"), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_add_kept_route(b, "10.128.0.0/14", "192.0.2.1"),
               EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_build(b, &spec), EGRESS_RESULT_OK);
  return spec;
}

/* egress_spec_check: `expected` result, and `needle` in the drift JSON. */
static void check_drift(const egress_spec *spec, egress_result expected, const char *needle) {
  char *drift = NULL;
  CHECK_RESULT(egress_spec_check(spec, &drift), expected);
  CHECK(drift != NULL && strstr(drift, needle) != NULL);
  if (drift != NULL && strstr(drift, needle) == NULL)
    fprintf(stderr, "drift: %s\n", drift);
  egress_string_free(drift);
}

static void check_inspect(egress_result expected, const char *needle) {
  char *json = NULL;
  CHECK_RESULT(egress_router_inspect_json_by_name(netns_path, "c-api", &json), expected);
  CHECK(expected == EGRESS_RESULT_OK ? json != NULL && strstr(json, needle) != NULL
                                     : json == NULL);
  egress_string_free(json);
}

/* egress_spec_plan_live: what the namespace still needs. `expected` NULL: the whole plan, as
 * egress_spec_plan gives it; "": nothing; otherwise the first lines of a plan that is not the
 * whole plan (only what is missing or wrong). */
static void check_plan_live(const egress_spec *spec, const char *expected) {
  char *live = NULL, *whole = NULL;
  CHECK_RESULT(egress_spec_plan_live(spec, &live), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_plan(spec, &whole), EGRESS_RESULT_OK);
  int ok = live != NULL && whole != NULL;
  if (ok && expected == NULL)
    ok = strcmp(live, whole) == 0;
  else if (ok && expected[0] == '\0')
    ok = live[0] == '\0';
  else if (ok)
    ok = strncmp(live, expected, strlen(expected)) == 0 && strcmp(live, whole) != 0;
  CHECK(ok);
  if (!ok)
    fprintf(stderr, "live plan:\n%s\nwhole plan:\n%s\n", live ? live : "(NULL)",
            whole ? whole : "(NULL)");
  egress_string_free(live);
  egress_string_free(whole);
}

static void ip(const char *args) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "ip -n %s %s", netns_name, args);
  CHECK(system(cmd) == 0);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s NETNS_NAME (as root; see scripts/test-c.sh)\n", argv[0]);
    return 2;
  }
  netns_name = argv[1];
  snprintf(netns_path, sizeof netns_path, "/run/netns/%s", netns_name);
  egress_spec *spec = router_spec();
  egress_router *router = NULL;
  egress_ensure_action action = 0;

  /* By handle: apply, read back, refuse a second apply, tear down. */
  check_inspect(EGRESS_RESULT_NOT_FOUND, NULL);
  CHECK_MESSAGE("egress_router_inspect_json_by_name: no router `c-api` is configured in namespace");
  check_drift(spec, EGRESS_RESULT_DRIFT_FOUND, "\"kind\":\"router_missing\"");
  CHECK_MESSAGE("egress_spec_check: drift found: router not configured");
  check_plan_live(spec, NULL);
  CHECK_RESULT(egress_spec_apply(spec, &router), EGRESS_RESULT_OK);
  CHECK(router != NULL);
  check_drift(spec, EGRESS_RESULT_OK, "[]");
  check_plan_live(spec, "");
  CHECK_RESULT(egress_spec_ensure(spec, &action), EGRESS_RESULT_OK);
  CHECK(action == EGRESS_ENSURE_ACTION_UNCHANGED);
  check_inspect(EGRESS_RESULT_OK, "\"addresses\":[\"203.0.113.99/24\"]");
  /* Its traffic, by handle and by name: none yet, one entry per redirect, fallback and
   * source. */
  char *stats = NULL, *by_name = NULL;
  CHECK_RESULT(egress_router_stats_json(router, &stats), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_router_stats_json_by_name(netns_path, "c-api", &by_name), EGRESS_RESULT_OK);
  CHECK(stats != NULL && by_name != NULL && strcmp(stats, by_name) == 0);
  const char *parts[] = {
      "{\"name\":\"c-api\",\"redirects\":[{\"protocol\":\"tcp\",\"port\":80,"
      "\"to\":\"198.51.100.25\",\"to_port\":8080,\"connections\":0,\"packets\":0,\"bytes\":0}],"
      "\"fallback\":[{\"to\":\"198.51.100.9\",\"connections\":0,\"packets\":0,\"bytes\":0}],"
      "\"snat\":[{\"source\":\"203.0.113.99\",",
      "\"conntrack_entries\":"};
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
    CHECK(stats != NULL && strstr(stats, parts[i]) != NULL);
    if (stats != NULL && strstr(stats, parts[i]) == NULL)
      fprintf(stderr, "stats: %s\nmissing: %s\n", stats, parts[i]);
  }
  egress_string_free(stats);
  egress_string_free(by_name);
  egress_router *second = NULL;
  CHECK_RESULT(egress_spec_apply(spec, &second), EGRESS_RESULT_ALREADY_EXISTS);
  CHECK(second == NULL);
  CHECK_MESSAGE("egress_spec_apply: ");
  CHECK_RESULT(egress_router_teardown(router), EGRESS_RESULT_OK);
  check_inspect(EGRESS_RESULT_NOT_FOUND, NULL);
  static char unset;
  stats = &unset; /* set to NULL by the failed call */
  CHECK_RESULT(egress_router_stats_json_by_name(netns_path, "c-api", &stats),
               EGRESS_RESULT_NOT_FOUND);
  CHECK(stats == NULL);
  CHECK_MESSAGE("egress_router_stats_json_by_name: no router `c-api` is configured in namespace");

  /* Without a handle: ensure creates, drift is found, planned and repaired, teardown by name. */
  CHECK_RESULT(egress_spec_ensure(spec, &action), EGRESS_RESULT_OK);
  CHECK(action == EGRESS_ENSURE_ACTION_CREATED);
  check_drift(spec, EGRESS_RESULT_OK, "[]");
  ip("link set ext0 down");
  check_drift(spec, EGRESS_RESULT_DRIFT_FOUND, "\"kind\":\"link_down\"");
  CHECK_MESSAGE("egress_spec_check: drift found: link ext0 is down");
  check_plan_live(spec, " 1. ip link set dev ext0 up\n"
                        " 2. ip route add 203.0.113.1/32 dev ext0 proto 158\n");
  CHECK_RESULT(egress_spec_ensure(spec, &action), EGRESS_RESULT_OK);
  CHECK(action == EGRESS_ENSURE_ACTION_REPAIRED);
  check_drift(spec, EGRESS_RESULT_OK, "[]");
  check_plan_live(spec, "");
  CHECK_RESULT(egress_router_teardown_by_name(netns_path, "c-api"), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_router_teardown_by_name(netns_path, "c-api"), EGRESS_RESULT_OK);
  check_inspect(EGRESS_RESULT_NOT_FOUND, NULL);

  /* A handle whose router was torn down and applied again by someone else is stale: its
   * teardown changes nothing; the new router's handle tears it down. */
  egress_router *stale = NULL;
  CHECK_RESULT(egress_spec_apply(spec, &stale), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_router_teardown_by_name(netns_path, "c-api"), EGRESS_RESULT_OK);
  router = NULL;
  CHECK_RESULT(egress_spec_apply(spec, &router), EGRESS_RESULT_OK);
  /* Its reads are refused too: the counters there are not its router's. */
  static char sentinel;
  char *out = &sentinel;
  CHECK_RESULT(egress_router_stats_json(stale, &out), EGRESS_RESULT_STALE_HANDLE);
  CHECK(out == NULL);
  CHECK_MESSAGE("egress_router_stats_json: router `c-api` in namespace");
  out = &sentinel;
  CHECK_RESULT(egress_router_diagnose_json(stale, 1, &out), EGRESS_RESULT_STALE_HANDLE);
  CHECK(out == NULL);
  /* The new handle reads its router, and its diagnosis is the JSON form. */
  CHECK_RESULT(egress_router_stats_json(router, &out), EGRESS_RESULT_OK);
  CHECK(out != NULL && strstr(out, "{\"name\":\"c-api\"") == out);
  egress_string_free(out);
  out = NULL;
  egress_result diagnosed = egress_router_diagnose_json(router, 1, &out);
  CHECK(diagnosed == EGRESS_RESULT_OK || diagnosed == EGRESS_RESULT_DIAGNOSIS_FAILED);
  CHECK(out != NULL && strstr(out, "{\"router\":\"c-api\",\"checks\":[{\"name\":\"state\","
                                   "\"status\":\"ok\"") == out);
  if (out != NULL && strstr(out, "\"status\":\"ok\"") == NULL)
    fprintf(stderr, "diagnosis: %s\n", out);
  egress_string_free(out);
  CHECK_RESULT(egress_router_teardown(stale), EGRESS_RESULT_STALE_HANDLE);
  CHECK_MESSAGE("egress_router_teardown: router `c-api` in namespace");
  CHECK_MESSAGE("is not the one this handle applied");
  CHECK_MESSAGE("nothing was changed");
  check_drift(spec, EGRESS_RESULT_OK, "[]");
  CHECK_RESULT(egress_router_teardown(router), EGRESS_RESULT_OK);
  check_inspect(EGRESS_RESULT_NOT_FOUND, NULL);

  /* High availability: a standby holds no egress address until promoted; by handle and by
   * name (an election agent), idempotent. */
  router = NULL;
  CHECK_RESULT(egress_spec_apply_standby(spec, &router), EGRESS_RESULT_OK);
  check_inspect(EGRESS_RESULT_OK, "\"role\":\"standby\"");
  check_inspect(EGRESS_RESULT_OK, "\"addresses\":[]");
  check_drift(spec, EGRESS_RESULT_OK, "[]");
  CHECK_RESULT(egress_router_promote(router), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_router_promote(router), EGRESS_RESULT_OK);
  check_inspect(EGRESS_RESULT_OK, "\"addresses\":[\"203.0.113.99/24\"]");
  CHECK_RESULT(egress_router_demote_by_name(netns_path, "c-api"), EGRESS_RESULT_OK);
  check_inspect(EGRESS_RESULT_OK, "\"role\":\"standby\"");
  CHECK_RESULT(egress_router_promote_by_name(netns_path, "c-api"), EGRESS_RESULT_OK);
  check_inspect(EGRESS_RESULT_OK, "\"role\":\"active\"");
  CHECK_RESULT(egress_router_demote(router), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_router_promote(NULL), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("egress_router_promote: argument `router` is NULL");
  CHECK_RESULT(egress_router_promote_by_name(netns_path, "nope"), EGRESS_RESULT_NOT_FOUND);
  CHECK_RESULT(egress_router_teardown(router), EGRESS_RESULT_OK);
  check_inspect(EGRESS_RESULT_NOT_FOUND, NULL);

  /* Freeing the handle leaves the router in place, for teardown by name later. */
  router = NULL;
  CHECK_RESULT(egress_spec_apply(spec, &router), EGRESS_RESULT_OK);
  egress_router_free(router);
  check_inspect(EGRESS_RESULT_OK, "\"name\":\"c-api\"");
  check_drift(spec, EGRESS_RESULT_OK, "[]");
  CHECK_RESULT(egress_spec_ensure(spec, &action), EGRESS_RESULT_OK);
  CHECK(action == EGRESS_ENSURE_ACTION_UNCHANGED);
  CHECK_RESULT(egress_router_teardown_by_name(netns_path, "c-api"), EGRESS_RESULT_OK);
  check_inspect(EGRESS_RESULT_NOT_FOUND, NULL);

  egress_spec_free(spec);
  return report("router_test");
}
