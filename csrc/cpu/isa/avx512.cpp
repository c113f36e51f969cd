// The CPU inner loops of every op family compiled for the "avx512" ISA (AVX-512 F/BW/VL/DQ; flags in
// CMakeLists.txt); a statistics register tile is four 512-bit registers (256 bytes).
#define NRX_ISA_NAME avx512
#define NRX_STATS_TILE_BYTES 256
#include "../isa_table_impl.h"
