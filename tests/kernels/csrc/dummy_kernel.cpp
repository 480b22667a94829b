// A tiny kernel for the JIT build/caching tests: one op, cheap to compile.
// torch.ops.langfield_test_dummy.plus_forty_two(a) == a + 42
#include <torch/library.h>

#include <cstdint>

namespace {
int64_t plus_forty_two(int64_t a) { return a + 42; }
}  // namespace

TORCH_LIBRARY(langfield_test_dummy, m) { m.def("plus_forty_two", &plus_forty_two); }
