"""warp_rnnt 0.7.0 built without a visible GPU.

Its setup.py refuses to run unless torch.cuda.is_available(): the check is dropped, so that
TORCH_CUDA_ARCH_LIST alone decides what it is built for; its __init__ reads its version with
importlib.metadata instead of the deprecated pkg_resources.

Usage: python warp_rnnt_no_gpu_check.py SOURCE_DIR
"""

import sys

source = sys.argv[1]
edits = [
    (f"{source}/setup.py", "\nif not torch.cuda.is_available():", "\nif False:  # setup.sh: TORCH_CUDA_ARCH_LIST decides"),
    (f"{source}/warp_rnnt/__init__.py", "\nfrom pkg_resources import get_distribution\n",
     "\nfrom importlib.metadata import version as get_version\n"),
    (f"{source}/warp_rnnt/__init__.py", "\n__version__ = get_distribution('warp_rnnt').version\n",
     "\n__version__ = get_version('warp_rnnt')\n"),
]
for path, old, new in edits:
    text = open(path).read()
    if text.count(old) != 1:
        sys.exit(f"{path}: expected '{old.strip()}' once")
    open(path, "w").write(text.replace(old, new))
