"""k2 a741ae8 under CUDA 13 (CCCL 3).

CCCL 3 removed cub::Sum(); k2/csrc/utils_inl.h passes it to cub::DeviceScan twice. It becomes
::cuda::std::plus<>() (from <cuda/std/functional>, included where cub is: with K2_WITH_CUDA), the
functor CCCL recommends instead.

Usage: python k2_cuda13.py SOURCE_DIR
"""

import sys

path = f"{sys.argv[1]}/k2/csrc/utils_inl.h"
text = open(path).read()
if text.count("cub::Sum()") != 2:
    sys.exit(f"{path}: expected cub::Sum() twice, found {text.count('cub::Sum()')}")
anchor = '#include "k2/csrc/cub.h"\n'
if text.count(anchor) != 1:
    sys.exit(f"{path}: expected '{anchor.strip()}' once")
text = text.replace("cub::Sum()", "::cuda::std::plus<>()")
text = text.replace(anchor, anchor + "#ifdef K2_WITH_CUDA\n#include <cuda/std/functional>\n#endif\n")
open(path, "w").write(text)
