/* Leaks one spec builder on purpose. scripts/test-c.sh runs it under LeakSanitizer and requires
 * the leak to be reported, so a C test run that reports no leak has really been checked. */
#include <string.h>

#include <egress.h>

__attribute__((noinline)) static int leak(void) {
  egress_spec_builder *b = NULL;
  egress_result r = egress_spec_builder_new("leaked", &b);
  /* Forget the only pointer to it. */
  memset(&b, 0, sizeof b);
  return r == EGRESS_RESULT_OK ? 0 : 3;
}

int main(void) { return leak(); }
