// softmax kernels, avx2 (issue 8; being written)
