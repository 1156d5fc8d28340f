"""moderngpu (2b39855 for optimized_transducer, 8ec9ac0 for k2) under CUDA 13.

src/moderngpu/context.hxx reads cudaDeviceProp::clockRate and memoryClockRate, which CUDA 13
removed; they only feed a device-info string, so they are read through cudaDeviceGetAttribute.

Usage: python moderngpu_cuda13.py MODERNGPU_DIR
"""

import sys

path = f"{sys.argv[1]}/src/moderngpu/context.hxx"
text = open(path).read()
old = "  double memBandwidth = (prop.memoryClockRate * 1000.0) *"
new = ("  int clockRate = 0, memoryClockRate = 0;  // cudaDeviceProp lost both fields in CUDA 13\n"
       "  cudaDeviceGetAttribute(&clockRate, cudaDevAttrClockRate, ordinal);\n"
       "  cudaDeviceGetAttribute(&memoryClockRate, cudaDevAttrMemoryClockRate, ordinal);\n"
       "  double memBandwidth = (memoryClockRate * 1000.0) *")
if "prop.clockRate" in text:
    if old not in text:
        sys.exit(f"{path}: unexpected content (no '{old.strip()}')")
    text = text.replace(old, new).replace("prop.clockRate / 1000.0", "clockRate / 1000.0")
    text = text.replace("prop.memoryClockRate / 1000.0", "memoryClockRate / 1000.0")
    if "prop.clockRate" in text or "prop.memoryClockRate" in text:
        sys.exit(f"{path}: clockRate / memoryClockRate still read from cudaDeviceProp")
    open(path, "w").write(text)
