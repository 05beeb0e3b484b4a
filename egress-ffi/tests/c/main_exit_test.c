/* The main thread exits (pthread_exit in main) and another thread goes on calling the library, as
 * some agents do, under AddressSanitizer + UBSan + LeakSanitizer. Its first call comes after main
 * is gone (its /proc/self/ns/net with it): the library's threads must still find their way back
 * between jobs, and a call that did its work must say so, not fail after it. Apply, check,
 * stats, teardown; scripts/test-c.sh checks the exit code and that the namespace is as before.
 *
 * Usage: main_exit_test NETNS_NAME (as root; see scripts/test-c.sh) */
#define _DEFAULT_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static char netns_path[256];

static void *agent(void *arg) {
  (void)arg;
  /* Wait until the main thread is gone: its namespace link goes with it. */
  for (int i = 0; i < 500; i++) {
    int fd = open("/proc/self/ns/net", O_RDONLY);
    if (fd < 0)
      break;
    close(fd);
    struct timespec t = {0, 10000000L};
    nanosleep(&t, NULL);
  }
  int fd = open("/proc/self/ns/net", O_RDONLY);
  CHECK(fd < 0); /* the test means what it says */
  if (fd >= 0)
    close(fd);

  egress_spec *spec = NULL;
  egress_router *router = NULL;
  CHECK_RESULT(egress_spec_builder_build(test_router_builder("c-main-exit", netns_path), &spec),
               EGRESS_RESULT_OK);
  for (int round = 0; round < 3; round++) {
    CHECK_RESULT(egress_spec_apply(spec, &router), EGRESS_RESULT_OK);
    char *drift = NULL;
    CHECK_RESULT(egress_spec_check(spec, &drift), EGRESS_RESULT_OK);
    egress_string_free(drift);
    char *stats = NULL;
    CHECK_RESULT(egress_router_stats_json(router, &stats), EGRESS_RESULT_OK);
    egress_string_free(stats);
    CHECK_RESULT(egress_router_teardown(router), EGRESS_RESULT_OK);
    router = NULL;
    char *json = NULL;
    CHECK_RESULT(egress_router_inspect_json_by_name(netns_path, "c-main-exit", &json),
                 EGRESS_RESULT_NOT_FOUND);
  }
  egress_spec_free(spec);
  exit(report("main_exit_test"));
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s NETNS_NAME (as root; see scripts/test-c.sh)\n", argv[0]);
    return 2;
  }
  snprintf(netns_path, sizeof netns_path, "/run/netns/%s", argv[1]);
  pthread_t t;
  if (pthread_create(&t, NULL, agent, NULL) != 0)
    return 1;
  pthread_exit(NULL);
}
