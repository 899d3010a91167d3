"""Pattern data and shared scanning helpers of the content detectors (secrets, PII, injection)."""
