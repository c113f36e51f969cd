// The CPU inner loops of every op family compiled for the "avx2" ISA (AVX2 + FMA + F16C; flags in
// CMakeLists.txt); a statistics register tile is four 256-bit registers (128 bytes).
#define NRX_ISA_NAME avx2
#define NRX_STATS_TILE_BYTES 128
#include "../isa_table_impl.h"
