// The CPU inner loops of every op family compiled for the "baseline" ISA (x86-64: SSE2; flags in
// CMakeLists.txt); a statistics register tile is four 128-bit registers (64 bytes).
#define NRX_ISA_NAME baseline
#define NRX_STATS_TILE_BYTES 64
#include "../isa_table_impl.h"
