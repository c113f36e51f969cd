// The CPU inner loops compiled for the "baseline" ISA (flags set in CMakeLists.txt).
#define NRX_ISA_NAME baseline
#include "../step_loops_impl.h"
