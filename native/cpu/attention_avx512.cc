// attention kernels, avx512 (issue 8; being written)
