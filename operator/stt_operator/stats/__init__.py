"""Pure statistics for comparing STT models (numpy / scipy / statsmodels; no I/O).

- `ratio`: ratio-of-sums metrics (WER, CER, RTF) with delta-method variances, paired and unpaired
- `sequential`: always-valid p-values and asymptotic confidence sequences for looking every interval
- `counts`: sequential multinomial test (Lindon & Malek 2022), sample-ratio mismatch, event rates
- `histogram`: latency from Prometheus histogram buckets
- `bootstrap`, `classic`: reported intervals and the ASR field's classic paired tests
- `multiple`, `power`, `selection`: Holm, sample sizes, model comparison and selection
"""
