// Stand-in for the CUDA toolkit's <cuda_bf16.h> under the SIMT harness: the types and functions a
// kernel needs from it are defined by simt.h, which is force-included before every kernel.
#pragma once
