/* One router handle used by three threads at once, under AddressSanitizer + UBSan +
 * LeakSanitizer, as the header allows: two threads change its role back and forth (role changes
 * through one handle run one at a time, each a whole transaction), a third reads its stats and
 * diagnoses it meanwhile. Every call succeeds; the router matches its spec afterwards and is
 * torn down.
 *
 * Usage: threads_test NETNS_NAME (as root; see scripts/test-c.sh) */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

enum { ROUNDS = 15 };

static egress_router *router;
static atomic_int changers_left = 2;
static atomic_int failures, reads;

static void *change(void *promote_first) {
  for (int i = 0; i < ROUNDS; i++) {
    egress_result a = promote_first ? egress_router_promote(router) : egress_router_demote(router);
    egress_result b = promote_first ? egress_router_demote(router) : egress_router_promote(router);
    if (a != EGRESS_RESULT_OK || b != EGRESS_RESULT_OK) {
      fprintf(stderr, "role change: %s, %s\n", egress_result_name(a), egress_result_name(b));
      atomic_fetch_add(&failures, 1);
    }
  }
  atomic_fetch_sub(&changers_left, 1);
  return NULL;
}

static void *read_meanwhile(void *arg) {
  (void)arg;
  while (atomic_load(&changers_left) > 0) {
    char *json = NULL;
    egress_result r = egress_router_stats_json(router, &json);
    if (r != EGRESS_RESULT_OK || json == NULL || strstr(json, "{\"name\":\"c-threads\"") != json) {
      fprintf(stderr, "stats: %s\n", egress_result_name(r));
      atomic_fetch_add(&failures, 1);
    }
    egress_string_free(json);
    json = NULL;
    r = egress_router_diagnose_json(router, 1, &json);
    if ((r != EGRESS_RESULT_OK && r != EGRESS_RESULT_DIAGNOSIS_FAILED) || json == NULL) {
      fprintf(stderr, "diagnose: %s\n", egress_result_name(r));
      atomic_fetch_add(&failures, 1);
    }
    egress_string_free(json);
    atomic_fetch_add(&reads, 1);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s NETNS_NAME (as root; see scripts/test-c.sh)\n", argv[0]);
    return 2;
  }
  char netns_path[256];
  snprintf(netns_path, sizeof netns_path, "/run/netns/%s", argv[1]);
  egress_spec *spec = NULL;
  egress_spec_builder *b = test_router_builder("c-threads", netns_path);
  CHECK_RESULT(egress_spec_builder_build(b, &spec), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_spec_apply_standby(spec, &router), EGRESS_RESULT_OK);

  pthread_t threads[3];
  CHECK(pthread_create(&threads[0], NULL, change, (void *)1) == 0);
  CHECK(pthread_create(&threads[1], NULL, change, NULL) == 0);
  CHECK(pthread_create(&threads[2], NULL, read_meanwhile, NULL) == 0);
  for (int i = 0; i < 3; i++)
    pthread_join(threads[i], NULL);
  CHECK(atomic_load(&failures) == 0);
  CHECK(atomic_load(&reads) > 0);
  printf("threads_test: %d role changes, %d reads beside them\n", 4 * ROUNDS,
         atomic_load(&reads));

  /* Whatever role the last change left, the router is whole. */
  char *drift = NULL;
  CHECK_RESULT(egress_spec_check(spec, &drift), EGRESS_RESULT_OK);
  egress_string_free(drift);
  CHECK_RESULT(egress_router_teardown(router), EGRESS_RESULT_OK);
  egress_spec_free(spec);
  return report("threads_test");
}
