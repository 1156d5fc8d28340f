"""CUDA architectures: PREFIX_COMPUTE_ARCH_CANDIDATES := the requested ones.

fast_rnnt (FT), optimized_transducer (OT) and k2 (K2) hard-code candidates (35 50 60 61 70 75,
appended 80 86 / 90) and fall back to all of them when the GPU's is not among them; nvcc 13
refuses compute_35 and compute_50, so the candidates become the target architectures.

Usage: python arch_candidates.py SOURCE_DIR PREFIX "90 80"
"""

import re
import sys

source, prefix, archs = sys.argv[1:]
path = f"{source}/CMakeLists.txt"
text = open(path).read()
new, count = re.subn(rf"^( *set\({prefix}_COMPUTE_ARCH_CANDIDATES) [0-9 ]+\)", rf"\g<1> {archs})", text, flags=re.M)
if count != 1:
    sys.exit(f"{path}: expected one set({prefix}_COMPUTE_ARCH_CANDIDATES ...) line, found {count}")
new = re.sub(rf"^ *list\(APPEND {prefix}_COMPUTE_ARCH_CANDIDATES [^)]*\)\n", "", new, flags=re.M)
open(path, "w").write(new)
