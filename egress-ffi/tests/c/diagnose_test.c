/* Diagnoses through the C API, under AddressSanitizer + UBSan + LeakSanitizer, with real frames
 * and a real TCP handshake: a healthy router (from the spec and by name: every check ok), its
 * gateway's address removed (EGRESS_RESULT_DIAGNOSIS_FAILED, the gateway check failing with a
 * hint), a router that is not there, and bad input. Each JSON answer is parsed by a real JSON
 * parser (check_diagnosis.py, in Python) that checks its documented shape and the statuses.
 *
 * scripts/test-c.sh makes the namespaces: the router's (veth int0 on 192.0.2.2/24 with a
 * default route; veth ext0 down, to adopt, whose peer ext1 is in the gateway's namespace) and
 * the gateway's (ext1 on 203.0.113.1/24, with a listener on TCP port 8080).
 *
 * Usage: diagnose_test ROUTER_NETNS_NAME GATEWAY_NETNS_NAME PATH/TO/check_diagnosis.py (root) */
#define _POSIX_C_SOURCE 200809L /* popen, pclose (the tests build with -std=c11) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static char netns_path[256];
static const char *gateway_netns;
static const char *checker;

static egress_spec *router_spec(void) {
  egress_spec *spec = NULL;
  egress_spec_builder *b = test_router_builder("c-diag", netns_path);
  /* A TCP destination that accepts (the gateway's listener), a UDP one (route check only). */
  CHECK_RESULT(egress_spec_builder_add_redirect(b, EGRESS_PROTOCOL_TCP, 80, "203.0.113.1", 8080),
               EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_add_redirect(b, EGRESS_PROTOCOL_UDP, 53, "198.51.100.53", 53),
               EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_add_fallback(b, "198.51.100.9"), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_builder_build(b, &spec), EGRESS_RESULT_OK);
  return spec;
}

/* Feeds `json` to check_diagnosis.py with `expect` (NAME=STATUS ...); it must hold. */
static void check_json(const char *json, const char *router, const char *expect) {
  CHECK(json != NULL);
  if (json == NULL)
    return;
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "python3 %s %s %s", checker, router, expect);
  FILE *p = popen(cmd, "w");
  CHECK(p != NULL);
  if (p == NULL)
    return;
  fputs(json, p);
  int status = pclose(p);
  CHECK(status == 0);
  if (status != 0)
    fprintf(stderr, "(%s)\n", cmd);
}

static void gateway_ip(const char *args) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "ip -n %s %s", gateway_netns, args);
  CHECK(system(cmd) == 0);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr,
            "usage: %s ROUTER_NETNS GATEWAY_NETNS check_diagnosis.py (as root; see "
            "scripts/test-c.sh)\n",
            argv[0]);
    return 2;
  }
  snprintf(netns_path, sizeof netns_path, "/run/netns/%s", argv[1]);
  gateway_netns = argv[2];
  checker = argv[3];
  egress_spec *spec = router_spec();
  egress_router *router = NULL;
  char *json = NULL;

  /* Healthy: every check ok, from the spec and by name, with the default timeout and 100 ms. */
  CHECK_RESULT(egress_spec_apply(spec, &router), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_diagnose_json(spec, 0, &json), EGRESS_RESULT_OK);
  check_json(json, "c-diag", "*=ok");
  CHECK(json != NULL && strstr(json, "\"result\":\"connected\"") != NULL);
  CHECK(json != NULL && strstr(json, "\"timeout_ms\":300") != NULL);
  egress_string_free(json);
  json = NULL;
  CHECK_RESULT(egress_router_diagnose_json_by_name(netns_path, "c-diag", 100, &json),
               EGRESS_RESULT_OK);
  check_json(json, "c-diag", "*=ok");
  CHECK(json != NULL && strstr(json, "\"timeout_ms\":100") != NULL);
  egress_string_free(json);
  json = NULL;

  /* The gateway's address removed: the gateway check fails with a hint, and the call says so;
   * the JSON is there all the same. */
  gateway_ip("addr del 203.0.113.1/24 dev ext1");
  CHECK_RESULT(egress_router_diagnose_json_by_name(netns_path, "c-diag", 100, &json),
               EGRESS_RESULT_DIAGNOSIS_FAILED);
  CHECK_MESSAGE("egress_router_diagnose_json_by_name: router `c-diag`: ");
  CHECK_MESSAGE("gateway: 203.0.113.1 did not answer");
  CHECK_MESSAGE(" -- hint: ");
  check_json(json, "c-diag", "state=ok link=ok gateway=fail");
  CHECK(json != NULL && strstr(json, "\"result\":\"no_answer\"") != NULL);
  egress_string_free(json);
  json = NULL;
  CHECK_RESULT(egress_spec_diagnose_json(spec, 100, &json), EGRESS_RESULT_DIAGNOSIS_FAILED);
  check_json(json, "c-diag", "gateway=fail");
  egress_string_free(json);
  json = NULL;
  gateway_ip("addr add 203.0.113.1/24 dev ext1");
  CHECK_RESULT(egress_router_teardown(router), EGRESS_RESULT_OK);

  /* A router that is not there: a diagnosis whose state check fails; nothing else is run. */
  CHECK_RESULT(egress_router_diagnose_json_by_name(netns_path, "c-diag", 0, &json),
               EGRESS_RESULT_DIAGNOSIS_FAILED);
  CHECK_MESSAGE("state: ");
  check_json(json, "c-diag",
             "state=fail link=skipped sysctl=skipped gateway=skipped l2_filter=skipped "
             "duplicate_address=skipped destination=skipped traffic=skipped");
  egress_string_free(json);

  /* Bad input: the field and the value, no output. */
  json = (char *)"not touched";
  CHECK_RESULT(egress_router_diagnose_json_by_name(netns_path, "c-diag", 10001, &json),
               EGRESS_RESULT_INVALID_SPEC);
  CHECK(json == NULL);
  CHECK_MESSAGE("invalid timeout_ms `10001`: a timeout from 1 to 10000 ms");
  CHECK_RESULT(egress_router_diagnose_json_by_name(netns_path, "Bad_Name", 0, &json),
               EGRESS_RESULT_INVALID_SPEC);
  CHECK_MESSAGE("invalid name `Bad_Name`");
  CHECK_RESULT(egress_spec_diagnose_json(spec, 0, NULL), EGRESS_RESULT_NULL_PARAMETER);
  CHECK_MESSAGE("egress_spec_diagnose_json: argument `json_out` is NULL");

  egress_spec_free(spec);
  return report("diagnose_test");
}
