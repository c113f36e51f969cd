// The feature-statistics inner loops compiled for the "avx512" ISA (flags set in CMakeLists.txt);
// one register tile of accumulators is four 512-bit registers (256 bytes).
#define NRX_ISA_NAME avx512
#define NRX_STATS_TILE_BYTES 256
#include "../stats_loops_impl.h"
