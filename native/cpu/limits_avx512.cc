// avx512 machine-limit probes
