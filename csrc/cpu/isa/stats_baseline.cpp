// The feature-statistics inner loops compiled for the "baseline" ISA (flags set in CMakeLists.txt);
// one register tile of accumulators is four 128-bit registers (64 bytes).
#define NRX_ISA_NAME baseline
#define NRX_STATS_TILE_BYTES 64
#include "../stats_loops_impl.h"
