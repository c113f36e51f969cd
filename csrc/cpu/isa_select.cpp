// The one CPU ISA selector (declared in isa_table.h): which IsaTable the kernels of every op family use.
#include "isa_table.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace nonrobust_ext::cpu {

const IsaTable& cpu_isa() {
  static const IsaTable& chosen = []() -> const IsaTable& {
    const char* forced = std::getenv("NONROBUST_EXT_CPU_ISA");
    const std::string want = forced ? forced : "";
#if defined(NRX_HAVE_X86_ISAS)
    __builtin_cpu_init();
    const bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    const bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (want == "avx512") {
      TORCH_CHECK_VALUE(has512, "NONROBUST_EXT_CPU_ISA=avx512 but this CPU lacks AVX-512");
      return isa_table_avx512();
    }
    if (want == "avx2") {
      TORCH_CHECK_VALUE(has2, "NONROBUST_EXT_CPU_ISA=avx2 but this CPU lacks AVX2/FMA");
      return isa_table_avx2();
    }
    if (want.empty()) {
      if (has512) return isa_table_avx512();
      if (has2) return isa_table_avx2();
    }
#endif
    TORCH_CHECK_VALUE(want.empty() || want == "baseline", "NONROBUST_EXT_CPU_ISA=", want,
                      " is not one of the ISAs this build has (baseline, avx2, avx512 on x86-64)");
    return isa_table_baseline();
  }();
  return chosen;
}

// Names only: calling isa_table_avx512() would run code compiled for AVX-512 (the table's static
// initialisation), which a CPU without it cannot execute.
std::vector<std::string> compiled_isas() {
#if defined(NRX_HAVE_X86_ISAS)
  return {"baseline", "avx2", "avx512"};
#else
  return {"baseline"};
#endif
}

}  // namespace nonrobust_ext::cpu
