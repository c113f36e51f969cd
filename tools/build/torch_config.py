"""Print what CMakeLists.txt needs to know about the torch that will import the extension.

Output is KEY=VALUE lines (paths use forward slashes and ';' between list items, as CMake wants).
"""

import os

import torch

root = os.path.dirname(torch.__file__)
include = os.path.join(root, "include")
print(f"TORCH_VERSION={torch.__version__}")
print(f"TORCH_CUDA_VERSION={torch.version.cuda or ''}")
print(f"TORCH_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}")
print(f"TORCH_INCLUDE_DIRS={include};{os.path.join(include, 'torch', 'csrc', 'api', 'include')}")
print(f"TORCH_LIB_DIR={os.path.join(root, 'lib')}")
# at::parallel_for is header code: with torch's OpenMP backend our translation units need -fopenmp, or
# every parallel_for silently runs on one thread.
print(f"TORCH_HAS_OPENMP={int(torch._C.has_openmp)}")
