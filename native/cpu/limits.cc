// machine-limit probes (filled in by the bench work)
