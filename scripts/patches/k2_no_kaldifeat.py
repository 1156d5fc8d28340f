"""k2 a741ae8 without k2/torch.

k2/CMakeLists.txt adds k2/torch (C++ decoding binaries and their API) and downloads kaldifeat for
it whenever torch >= 1.8; the Python package and its losses do not use it. The condition becomes
false, so nothing is downloaded and the subdirectory is not built.

Usage: python k2_no_kaldifeat.py SOURCE_DIR
"""

import sys

path = f"{sys.argv[1]}/k2/CMakeLists.txt"
text = open(path).read()
old = "  if(K2_TORCH_VERSION VERSION_GREATER_EQUAL 1.8 OR NOT K2_WITH_CUDA)\n"
new = "  if(FALSE)  # setup.sh: k2/torch and its kaldifeat download are not needed by the Python package\n"
if text.count(old) != 1:
    sys.exit(f"{path}: expected '{old.strip()}' once")
open(path, "w").write(text.replace(old, new))
