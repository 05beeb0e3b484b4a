/* fork and daemon(), under UBSan: a child calls the library whatever its parent was doing when it
 * forked, and may use its parent's router handle. (Not under AddressSanitizer: GCC 12's ASan
 * allocator keeps a lock that another thread held at fork time locked in the child, whose next
 * malloc then waits forever; glibc's malloc, which programs use, takes its locks around fork.)
 *
 * 1. A call, then fork(): the child calls at once (the parent's library threads, which ran the
 *    call and wait for the next one, do not exist in the child). The child has a deadline
 *    (alarm) and the parent waits for it with one: a hang fails, it does not stall.
 * 2. The same while two other threads of the parent are inside calls.
 * 3. An agent's start: it configures its router, then daemon(). The daemon (the child) uses the
 *    handle its parent made: stats, a role change, teardown; it writes its report to
 *    RESULT_FILE, and scripts/test-c.sh reads it (the parent half of daemon() exits at once).
 *
 * Usage: fork_test NETNS_NAME RESULT_FILE (as root; see scripts/test-c.sh) */
#define _DEFAULT_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static char netns_path[256];
static const char *const NAME = "c-fork";
static atomic_int stop;

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

/* 0 when the router is there, found by name (a call that runs on the library's threads). */
static int inspect_code(void) {
  char *json = NULL;
  egress_result r = egress_router_inspect_json_by_name(netns_path, NAME, &json);
  egress_string_free(json);
  if (r != EGRESS_RESULT_OK && r != EGRESS_RESULT_NOT_FOUND)
    fprintf(stderr, "fork_test (pid %d): inspect returned %s: %s\n", (int)getpid(),
            egress_result_name(r), last_message());
  return r == EGRESS_RESULT_OK ? 0 : 1;
}

/* Forks; the child runs inspect_code() and exits with it, or dies of SIGALRM after 10 s.
 * Returns the child's exit code, or -1 when it did not exit (it hung, or crashed). */
static int child_inspects(void) {
  pid_t pid = fork();
  if (pid == 0) {
    alarm(10);
    _exit(inspect_code());
  }
  CHECK(pid > 0);
  for (int i = 0; i < 1500; i++) {
    int status = 0;
    pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid && WIFEXITED(status))
      return WEXITSTATUS(status);
    if (done == pid) {
      fprintf(stderr, "fork_test: the child ended by signal %d\n", WTERMSIG(status));
      return -1;
    }
    sleep_ms(10);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  fprintf(stderr, "fork_test: the child hung\n");
  return -1;
}

static void *keep_calling(void *arg) {
  (void)arg;
  while (!atomic_load(&stop))
    CHECK(inspect_code() == 0);
  return NULL;
}

static egress_spec *router_spec(void) {
  egress_spec *spec = NULL;
  egress_spec_builder *b = test_router_builder(NAME, netns_path);
  CHECK_RESULT(egress_spec_builder_build(b, &spec), EGRESS_RESULT_OK);
  return spec;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s NETNS_NAME RESULT_FILE (as root; see scripts/test-c.sh)\n",
            argv[0]);
    return 2;
  }
  snprintf(netns_path, sizeof netns_path, "/run/netns/%s", argv[1]);
  egress_spec *spec = router_spec();
  egress_router *router = NULL;
  CHECK_RESULT(egress_spec_apply(spec, &router), EGRESS_RESULT_OK);

  /* 1. Right after a call, three times. */
  for (int i = 0; i < 3; i++) {
    CHECK(inspect_code() == 0);
    CHECK(child_inspects() == 0);
  }
  /* 2. While other threads are inside calls. */
  pthread_t callers[2];
  for (int i = 0; i < 2; i++)
    CHECK(pthread_create(&callers[i], NULL, keep_calling, NULL) == 0);
  for (int i = 0; i < 10; i++) {
    CHECK(child_inspects() == 0);
    sleep_ms(3);
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < 2; i++)
    pthread_join(callers[i], NULL);

  /* 3. daemon() after configuring: the parent half exits here with what it found so far. */
  if (checks_failed > 0)
    return report("fork_test");
  printf("fork_test: %d passed before daemon()\n", checks_passed);
  fflush(stdout);
  if (daemon(1, 1) != 0) {
    perror("daemon");
    return 1;
  }
  alarm(20);
  char *stats = NULL;
  CHECK_RESULT(egress_router_stats_json(router, &stats), EGRESS_RESULT_OK);
  CHECK(stats != NULL && strstr(stats, "{\"name\":\"c-fork\"") == stats);
  egress_string_free(stats);
  CHECK_RESULT(egress_router_demote(router), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_router_promote(router), EGRESS_RESULT_OK);
  CHECK_RESULT(egress_router_teardown(router), EGRESS_RESULT_OK);
  CHECK(inspect_code() == 1);
  egress_spec_free(spec);
  FILE *result = fopen(argv[2], "w");
  if (result == NULL)
    return 1;
  fprintf(result, "%d\nfork_test daemon: %d passed, %d failed\n", (int)getpid(), checks_passed,
          checks_failed);
  fclose(result);
  return checks_failed == 0 ? 0 : 1;
}
