// The feature-statistics inner loops compiled for the "avx2" ISA (flags set in CMakeLists.txt);
// one register tile of accumulators is four 256-bit registers (128 bytes).
#define NRX_ISA_NAME avx2
#define NRX_STATS_TILE_BYTES 128
#include "../stats_loops_impl.h"
