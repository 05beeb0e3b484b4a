/* A node agent that embeds the egress router through the C API (libegress).
 *
 * It reads a router's JSON config (the spec's JSON form, as in the README), prints the plan,
 * applies it, prints the result, then waits for SIGTERM or SIGINT and tears the router down,
 * leaving the namespace exactly as it was. Exit status: 0 after a clean teardown, 1 on any
 * egress error (the message names the field, value, step and errno), 2 on a usage error.
 *
 * Build:  make -C egress-ffi install PREFIX=/usr/local
 *         cc -o agent agent.c $(pkg-config --cflags --libs egress)
 * Run:    ./agent router.json     (as root: CAP_NET_ADMIN, CAP_SYS_ADMIN) */
#include <egress.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints what failed, the result's name and this thread's detailed message. */
static int fail(const char *what, egress_result result) {
  char message[2048];
  size_t n = 0;
  egress_last_error_message(message, sizeof message, &n);
  fprintf(stderr, "agent: %s failed: %s: %s\n", what, egress_result_name(result), message);
  return 1;
}

/* The whole file as a NUL-terminated string, or NULL (errno says why). */
static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  while (buf != NULL) {
    len += fread(buf + len, 1, cap - len - 1, f);
    if (ferror(f) || feof(f))
      break;
    char *bigger = realloc(buf, cap *= 2);
    if (bigger == NULL)
      free(buf);
    buf = bigger;
  }
  int failed = buf == NULL || ferror(f);
  fclose(f);
  if (failed) {
    free(buf);
    errno = EIO;
    return NULL;
  }
  buf[len] = '\0';
  return buf;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s ROUTER.json\n"
                    "Applies the egress router ROUTER.json describes, tears it down on SIGTERM or\n"
                    "SIGINT. Needs root (CAP_NET_ADMIN, and CAP_SYS_ADMIN for other namespaces).\n",
            argv[0]);
    return 2;
  }
  /* Block the signals we wait for before the first egress call: the library's threads
   * inherit this mask, so the signals reach sigwait below instead of killing the process. */
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, NULL);

  char *json = read_file(argv[1]);
  if (json == NULL) {
    fprintf(stderr, "agent: cannot read %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  egress_spec *spec = NULL;
  egress_result r = egress_spec_from_json(json, &spec);
  free(json);
  if (r != EGRESS_RESULT_OK)
    return fail("reading the config", r);

  char *plan = NULL;
  if ((r = egress_spec_plan(spec, &plan)) != EGRESS_RESULT_OK) {
    egress_spec_free(spec);
    return fail("planning", r);
  }
  printf("plan:\n%s", plan);
  egress_string_free(plan);

  egress_router *router = NULL;
  if ((r = egress_spec_apply(spec, &router)) != EGRESS_RESULT_OK) {
    egress_spec_free(spec);
    return fail("apply", r);
  }
  char *drift = NULL;
  r = egress_spec_check(spec, &drift);
  printf("applied: %s, drift %s\n", egress_result_name(r), drift != NULL ? drift : "unknown");
  egress_string_free(drift);
  egress_spec_free(spec);
  printf("running; waiting for SIGTERM\n");
  fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  printf("got %s, tearing down\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  if ((r = egress_router_teardown(router)) != EGRESS_RESULT_OK)
    return fail("teardown", r);
  printf("torn down\n");
  return 0;
}
