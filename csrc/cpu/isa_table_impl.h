// One ISA's IsaTable: the attack-step and feature-statistics loops compiled for it. Included by exactly
// one translation unit per ISA (isa/*.cpp), which defines
//   NRX_ISA_NAME          the ISA's name: the namespace of its loops and the suffix of isa_table_<name>()
//   NRX_STATS_TILE_BYTES  bytes of compute-type accumulators in one register tile of the statistics loops
// and is compiled with that ISA's -m flags (CMakeLists.txt). No c10/ATen header may be included here:
// see step_loops.h (ODR).
#include "isa_table.h"
#include "stats_loops_impl.h"
#include "step_loops_impl.h"

#ifndef NRX_ISA_NAME
#error "NRX_ISA_NAME must be defined by the ISA translation unit"
#endif

#define NRX_ISA_CONCAT_(a, b) a##b
#define NRX_ISA_CONCAT(a, b) NRX_ISA_CONCAT_(a, b)
#define NRX_ISA_STR_(a) #a
#define NRX_ISA_STR(a) NRX_ISA_STR_(a)

namespace nonrobust_ext::cpu {

const IsaTable& NRX_ISA_CONCAT(isa_table_, NRX_ISA_NAME)() {
  static const IsaTable table{
      NRX_ISA_STR(NRX_ISA_NAME),
      StepLoops{
          NRX_ISA_NAME::make_loops<float>(),
          NRX_ISA_NAME::make_loops<double>(),
          NRX_ISA_NAME::make_loops<uint16_t>(),
      },
      StatsLoops{
          NRX_ISA_NAME::stats::make_stats_loops<float>(),
          NRX_ISA_NAME::stats::make_stats_loops<double>(),
          NRX_ISA_NAME::stats::make_stats_loops<Bf16Bits>(),
          NRX_ISA_NAME::stats::make_stats_loops<F16Bits>(),
      },
  };
  return table;
}

}  // namespace nonrobust_ext::cpu
