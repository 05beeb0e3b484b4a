/*
 * The C leg of scripts/bench-bindings.sh: applies and tears down one router N times through
 * libegress (egress_spec_from_json, egress_spec_apply, egress_router_teardown) and prints how long
 * each call took, like examples/apply_loop.rs does through egress_core::blocking.
 *
 *   cc -O2 -Wall -Wextra -Werror apply_loop.c $(pkg-config --cflags --libs egress)
 *   ./a.out SPEC.json N     # as root
 *
 * prints one JSON line, {"apply": [us, ...], "teardown": [...], "apply_cpu": [...],
 * "teardown_cpu": [...]}, with N values each: the wall-clock time of each call, then the CPU
 * time the process (every thread) spent in it. Only the two calls are timed: not reading or
 * parsing the spec, and not one untimed warm-up round (the calling thread's netlink runtime is
 * made on first use).
 */
#define _POSIX_C_SOURCE 200809L
#include <egress.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Wall-clock and CPU time (of the whole process, every thread), in microseconds. */
typedef struct {
    double wall, cpu;
} stamp;

static double us(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static stamp now(void) {
    return (stamp){us(CLOCK_MONOTONIC), us(CLOCK_PROCESS_CPUTIME_ID)};
}

static int fail(const char *what, egress_result r) {
    char msg[1024];
    size_t n;
    egress_last_error_message(msg, sizeof msg, &n);
    fprintf(stderr, "apply_loop: %s: %s: %s\n", what, egress_result_name(r), msg);
    return 1;
}

/* The whole file as a NUL-terminated string, or NULL. */
static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    long len = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (len >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len + 1))) {
        if (fread(buf, 1, (size_t)len, f) == (size_t)len) {
            buf[len] = '\0';
        } else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

/* "key": [...]: call 0 (apply) or 1 (teardown) of rounds 1..n, wall-clock or CPU time. */
static void print_list(const char *key, stamp (*t)[3], long n, int call, int cpu) {
    printf("\"%s\": [", key);
    for (long i = 1; i <= n; i++) {
        stamp a = t[i][call], b = t[i][call + 1];
        printf("%s%.3f", i > 1 ? ", " : "", cpu ? b.cpu - a.cpu : b.wall - a.wall);
    }
    printf("]");
}

int main(int argc, char **argv) {
    char *end;
    long n = argc == 3 ? strtol(argv[2], &end, 10) : -1;
    if (argc != 3 || *end != '\0' || n < 0) {
        fprintf(stderr, "usage: apply_loop SPEC.json N\n");
        return 2;
    }
    char *json = read_file(argv[1]);
    if (!json) {
        fprintf(stderr, "apply_loop: cannot read %s\n", argv[1]);
        return 1;
    }
    egress_spec *spec = NULL;
    egress_result r = egress_spec_from_json(json, &spec);
    free(json);
    if (r != EGRESS_RESULT_OK) return fail(argv[1], r);
    /* Per round: before apply, after apply (= before teardown), after teardown. */
    stamp (*t)[3] = calloc((size_t)n + 1, sizeof *t);
    if (!t) {
        perror("apply_loop");
        egress_spec_free(spec);
        return 1;
    }
    int status = 0;
    /* Round 0 is the untimed warm-up. */
    for (long round = 0; status == 0 && round <= n; round++) {
        egress_router *router = NULL;
        t[round][0] = now();
        r = egress_spec_apply(spec, &router);
        t[round][1] = now();
        if (r != EGRESS_RESULT_OK) {
            status = fail("apply", r);
            break;
        }
        r = egress_router_teardown(router);
        t[round][2] = now();
        if (r != EGRESS_RESULT_OK) status = fail("teardown", r);
    }
    if (status == 0) {
        printf("{");
        print_list("apply", t, n, 0, 0);
        printf(", ");
        print_list("teardown", t, n, 1, 0);
        printf(", ");
        print_list("apply_cpu", t, n, 0, 1);
        printf(", ");
        print_list("teardown_cpu", t, n, 1, 1);
        printf("}\n");
    }
    free(t);
    egress_spec_free(spec);
    return status;
}
