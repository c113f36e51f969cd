// The CPU inner loops of every op family, one table per vector ISA, and the one selector that picks the
// table for the running CPU.
//
// Each ISA translation unit (isa/baseline.cpp, isa/avx2.cpp, isa/avx512.cpp) compiles the attack-step
// loops (step_loops_impl.h) and the feature-statistics loops (stats_loops_impl.h) with its own -m
// flags (CMakeLists.txt) and defines one IsaTable. The kernels (attack_steps.cpp, feature_stats.cpp)
// call cpu_isa() and never compare ISA names. Like the loop headers, this header has no ATen
// dependency (see step_loops.h for why the ISA translation units must not include one).
#pragma once

#include "stats_loops.h"
#include "step_loops.h"

#include <string>
#include <vector>

namespace nonrobust_ext::cpu {

struct IsaTable {
  const char* name;  // "baseline", "avx2" or "avx512"
  StepLoops step;
  StatsLoops stats;
};

// One per ISA translation unit; avx2/avx512 exist only on x86-64 builds (NRX_HAVE_X86_ISAS). Call one
// only on a CPU that supports its ISA: even the table's initialisation runs code compiled for it.
const IsaTable& isa_table_baseline();
#if defined(NRX_HAVE_X86_ISAS)
const IsaTable& isa_table_avx2();
const IsaTable& isa_table_avx512();
#endif

// The table for the running CPU: the widest ISA it supports, decided on the first call.
// NONROBUST_EXT_CPU_ISA=baseline|avx2|avx512 forces one (benchmarks, tests); an ISA the CPU lacks or
// this build does not have is an error (ValueError in Python).
const IsaTable& cpu_isa();

// The ISAs compiled into this build, narrowest first (build_info()["cpu_isas_compiled"]).
std::vector<std::string> compiled_isas();

}  // namespace nonrobust_ext::cpu
