#!/usr/bin/env python3
"""Writes outputs_test.c, the C test of the header's promise that a failed call leaves every
output NULL (an action EGRESS_ENSURE_ACTION_NONE, a length 0), from the header itself: every
function that has an output is called on each of its failure paths that C can reach, so that a
function added later is tested as soon as it is in the header.

Outputs are the parameters named `*_out` or `out_n`. Each call starts with its output holding a
sentinel. The failure paths, for each function: each required pointer argument NULL; each string
argument not UTF-8; the values that are invalid for it (a builder that does not build, JSON that
does not parse, a name that is not one, a timeout out of range); a namespace that does not exist;
a router handle gone stale (its router torn down and applied again); the output pointer itself
NULL. A call that fails must leave its output cleared, except the failures the header names as
carrying one (a drift found, a failed diagnosis, a truncated message), where it must be set; one
that succeeds must set it, and the test frees it.

The generator knows the values of each argument by its type and name; an argument it does not
know stops it, naming the function: add its values below.

Usage: gen_outputs_test.py EGRESS_H > outputs_test.c; the program runs as
outputs_test NETNS_NAME (as root), in scripts/test-c.sh's router_test namespace."""

import json
import re
import sys

# The values of an input, by (C type, name) or by C type: the valid one, then the other values
# a caller may pass, each with the result it must give ("fail": any failure).
NULL = ("NULL", "EGRESS_RESULT_NULL_PARAMETER")
BAD_UTF8 = ("BAD_UTF8", "EGRESS_RESULT_INVALID_UTF8")
INPUTS = {
    ("struct egress_spec_builder *", "builder"): (
        "valid_builder()",
        [NULL, ("invalid_builder()", "EGRESS_RESULT_INVALID_SPEC")],
    ),
    ("const struct egress_spec *", "spec"): (
        "spec",
        # Pure calls (the plan, the JSON form) succeed on it, the others fail.
        [NULL, ("missing_spec", "ANY")],
    ),
    ("const struct egress_router *", "router"): ("router", [NULL]),
    ("const char *", "name"): ('"c-api"', [NULL, BAD_UTF8]),
    ("const char *", "netns_path"): (
        "netns_path",
        [NULL, BAD_UTF8, ("missing_path", "EGRESS_RESULT_NOT_FOUND")],
    ),
    ("const char *", "json"): (
        "spec_json",
        [NULL, BAD_UTF8, ('"{"', "EGRESS_RESULT_INVALID_SPEC")],
    ),
    ("int64_t", "timeout_ms"): (
        "1",
        [("-1", "EGRESS_RESULT_OUT_OF_RANGE"), ("10001", "EGRESS_RESULT_INVALID_SPEC")],
    ),
    ("char *", "buf"): ("buf", [NULL]),
    ("size_t", "len"): ("sizeof buf", []),
}
# A name that is not a router's name fails where the name is checked: in the calls by name.
BY_NAME_INVALID = ('"Not_A_Name"', "EGRESS_RESULT_INVALID_SPEC")

# Outputs, by C type: the sentinel, the value after a failure, how a success is released, and
# whether a success always sets a value other than the cleared one (a length may be 0).
OUTPUTS = {
    "char **": ("(char *)SENTINEL", "NULL", "egress_string_free", True),
    "struct egress_spec **": ("(egress_spec *)SENTINEL", "NULL", "egress_spec_free", True),
    "struct egress_spec_builder **": (
        "(egress_spec_builder *)SENTINEL",
        "NULL",
        "egress_spec_builder_free",
        True,
    ),
    "struct egress_router **": (
        "(egress_router *)SENTINEL",
        "NULL",
        "egress_router_free",
        True,
    ),
    "egress_ensure_action *": ("12345", "EGRESS_ENSURE_ACTION_NONE", None, True),
    "size_t *": ("12345", "0", None, False),
}
# The failures that carry their output (the header says so).
CARRY = {
    "EGRESS_RESULT_DRIFT_FOUND",
    "EGRESS_RESULT_DIAGNOSIS_FAILED",
    "EGRESS_RESULT_INSUFFICIENT_SIZE",
}
# The function that answers about the calling thread itself has no namespace to fail on.
NO_KERNEL = {"egress_last_error_message"}


def functions(header):
    text = re.sub(r"/\*.*?\*/", "", open(header).read(), flags=re.S)
    for m in re.finditer(r"\n(egress_result|void|const char \*)\s*(egress_\w+)\(([^)]*)\);", text):
        params = []
        for p in " ".join(m.group(3).split()).split(","):
            p = p.strip()
            if p in ("", "void"):
                continue
            t, name = re.match(r"(.*?)(\w+)$", p).groups()
            params.append((t.strip().replace(" *", " *"), name))
        yield m.group(2), params


def cstr(text):
    """`text` as a C string literal (JSON's escapes are C's for ASCII)."""
    return json.dumps(text)


def is_output(name):
    return name.endswith("_out") or name == "out_n"


def c_type(t):
    return t if t.endswith("*") else t + " "


def main():
    header = sys.argv[1]
    tested = []
    out = []
    for func, params in functions(header):
        outputs = [(t, n) for t, n in params if is_output(n)]
        if not outputs:
            continue
        if len(outputs) != 1:
            sys.exit(f"{func}: more than one output; teach gen_outputs_test.py to clear each")
        out_type, out_name = outputs[0]
        if out_type not in OUTPUTS:
            sys.exit(f"{func}: output `{out_type} {out_name}`: add its sentinel to OUTPUTS")
        inputs = []
        for t, n in params:
            if is_output(n):
                continue
            values = INPUTS.get((t, n))
            if values is None:
                sys.exit(f"{func}: argument `{t} {n}`: add its values to INPUTS")
            valid, others = values
            others = list(others)
            if n == "name" and func.endswith("_by_name"):
                others.append(BY_NAME_INVALID)
            inputs.append((n, valid, others))
        cases = []  # (label, argument list, expected result or None for any failure)
        for i, (n, _, others) in enumerate(inputs):
            for value, expected in others:
                args = [v if j != i else value for j, (_, v, _) in enumerate(inputs)]
                cases.append((f"{n} = {value}", args, expected))
        valid = [v for _, v, _ in inputs]
        cases.append(("valid arguments", valid, "ANY"))
        tested.append(func)
        sentinel, cleared, release, set_on_success = OUTPUTS[out_type]
        var = f"{func}_{out_name}"
        out.append(f"static void test_{func}(void) {{")
        out.append(f"  {c_type(out_type[:-1].strip())}{var};")
        for label, args, expected in cases:
            call = f"{func}({', '.join(args + ['&' + var])})"
            out.append(f"  {var} = {sentinel};")
            out.append("  {")
            out.append(f"    egress_result r = {call};")
            if expected == "ANY":
                out.append("    if (r == EGRESS_RESULT_OK) {")
                if set_on_success:
                    out.append(f"      CHECK_CASE({var} != {cleared} && {var} != {sentinel}, "
                               f"{cstr(func)}, {cstr(label + ': output')}, r);")
                if release:
                    out.append(f"      {release}({var});")
                out.append("    }")
            else:
                out.append(f"    CHECK_CASE(r == {expected}, {cstr(func)}, {cstr(label)}, r);")
            out.append("    if (r != EGRESS_RESULT_OK) {")
            out.append(f"      failures++;")
            out.append(f"      int carries = {' || '.join(f'r == {c}' for c in sorted(CARRY))};")
            out.append(
                f"      CHECK_CASE(carries ? {var} != {cleared} && {var} != {sentinel} : "
                f"{var} == {cleared}, {cstr(func)}, {cstr(label + ': output')}, r);"
            )
            if release:
                out.append(f"      if (carries) {release}({var});")
            out.append("    }")
            out.append("  }")
        # The output pointer itself NULL.
        call = f"{func}({', '.join(valid + ['NULL'])})"
        out.append("  {")
        out.append(f"    egress_result r = {call};")
        out.append(f"    CHECK_CASE(r == EGRESS_RESULT_NULL_PARAMETER, \"{func}\", "
                   f"\"{out_name} = NULL\", r);")
        out.append("  }")
        # A handle whose router was torn down and applied again by someone else.
        if "router" in [n for n, _, _ in inputs]:
            args = ["stale" if v == "router" else v for v in valid]
            out.append(f"  {var} = {sentinel};")
            out.append("  {")
            out.append(f"    egress_result r = {func}({', '.join(args + ['&' + var])});")
            out.append(f"    CHECK_CASE(r == EGRESS_RESULT_STALE_HANDLE && {var} == {cleared}, "
                       f"\"{func}\", \"router stale\", r);")
            out.append("    failures++;")
            out.append("  }")
        out.append("}")
        out.append("")
    print(PRELUDE)
    print("\n".join(out))
    print("static void test_all(void) {")
    for f in tested:
        print(f"  test_{f}();")
    print("}")
    print(f"static const int functions_tested = {len(tested)};")
    print(MAIN)
    print(f"gen_outputs_test: {len(tested)} functions with an output: {' '.join(tested)}",
          file=sys.stderr)


PRELUDE = r'''/* Generated by egress-ffi/tests/c/gen_outputs_test.py from egress.h: do not edit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static char sentinel_byte;
#define SENTINEL ((void *)&sentinel_byte)
static const char *const BAD_UTF8 = "ok\xff";
static char netns_path[256], missing_path[256], spec_json[1024];
static egress_spec *spec, *missing_spec;
static egress_router *router, *stale;
static char buf[64];
static int failures;

#define CHECK_CASE(cond, func, label, r)                                            \
  do {                                                                              \
    if (cond) {                                                                     \
      checks_passed++;                                                              \
    } else {                                                                        \
      checks_failed++;                                                              \
      fprintf(stderr, "%s (%s): returned %s: %s\n", (func), (label),               \
              egress_result_name(r), last_message());                                \
    }                                                                               \
  } while (0)

static egress_spec_builder *valid_builder(void) {
  return test_router_builder("c-api", netns_path);
}
static egress_spec_builder *invalid_builder(void) {
  return test_router_builder("Not_A_Name", netns_path);
}
'''

MAIN = r'''
int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s NETNS_NAME (as root; see scripts/test-c.sh)\n", argv[0]);
    return 2;
  }
  snprintf(netns_path, sizeof netns_path, "/run/netns/%s", argv[1]);
  snprintf(missing_path, sizeof missing_path, "/run/netns/%s-missing", argv[1]);
  CHECK(egress_spec_builder_build(valid_builder(), &spec) == EGRESS_RESULT_OK);
  CHECK(egress_spec_builder_build(test_router_builder("c-api", missing_path), &missing_spec) ==
        EGRESS_RESULT_OK);
  char *json = NULL;
  CHECK(egress_spec_to_json(spec, &json) == EGRESS_RESULT_OK);
  snprintf(spec_json, sizeof spec_json, "%s", json ? json : "");
  egress_string_free(json);
  /* A live router, and a stale handle: the same router torn down and applied again. */
  CHECK(egress_spec_apply(spec, &stale) == EGRESS_RESULT_OK);
  CHECK(egress_router_teardown_by_name(netns_path, "c-api") == EGRESS_RESULT_OK);
  CHECK(egress_spec_apply(spec, &router) == EGRESS_RESULT_OK);
  test_all();
  CHECK(failures >= 3 * functions_tested);
  printf("outputs_test: %d functions, %d failed calls\n", functions_tested, failures);
  egress_router_free(stale);
  CHECK(egress_router_teardown(router) == EGRESS_RESULT_OK);
  egress_spec_free(spec);
  egress_spec_free(missing_spec);
  return report("outputs_test");
}
'''

if __name__ == "__main__":
    main()
