// portable machine-limit probes
