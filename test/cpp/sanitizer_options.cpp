// Linked into every test binary of the sanitizer build: the runtime options,
// compiled in so that they hold however the binary is started (CTest's
// ENVIRONMENT property cannot carry two variables through
// gtest_discover_tests: its list separator splits them apart).

extern "C" const char* __asan_default_options() {
  return "detect_leaks=1:abort_on_error=1";
}

extern "C" const char* __ubsan_default_options() {
  return "print_stacktrace=1:halt_on_error=1";
}
