// avx2 machine-limit probes
