// The CPU inner loops compiled for the "avx512" ISA (flags set in CMakeLists.txt).
#define NRX_ISA_NAME avx512
#include "../step_loops_impl.h"
