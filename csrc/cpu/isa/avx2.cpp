// The CPU inner loops compiled for the "avx2" ISA (flags set in CMakeLists.txt).
#define NRX_ISA_NAME avx2
#include "../step_loops_impl.h"
