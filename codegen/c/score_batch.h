/* The C ABI of a generated score.c: score_n_features and score_batch (inlined by
   codegen/c_backend.py after the model's ps_rest, ps_link and, with trees, the forest kernel). */
long score_n_features(void) { return PS_N_FEATURES; }

/* n x d row-major float32 -> n positive-class probabilities. */
void score_batch(const float *x, long n, long d, double *out) {
    double acc[PS_BLOCK];
    double row64[PS_N_FEATURES];
    if (d != PS_N_FEATURES) {
        for (long r = 0; r < n; r++) out[r] = NAN;
        return;
    }
    for (long start = 0; start < n; start += PS_BLOCK) {
        long m = n - start < PS_BLOCK ? n - start : PS_BLOCK;
        const float *xb = x + start * d;
#if PS_N_TREES > 0
        ps_trees_block(xb, m, d, acc);
#else
        for (long r = 0; r < m; r++) acc[r] = 0.0;
#endif
        for (long r = 0; r < m; r++) {
            const float *row = xb + r * d;
            int has_nan = 0;
            for (long j = 0; j < d; j++) {
                row64[j] = (double)row[j];
                has_nan |= isnan(row[j]);
            }
#if PS_N_TREES > 0
            if (has_nan) acc[r] = ps_trees_row_nan(row);
#endif
            double margin = acc[r] + ps_rest(row64);
            out[start + r] = ps_link(&margin);
        }
    }
}
