/* The flat-forest walk of a generated score.c (codegen/c_backend.py inlines this file after the
   model's arrays and PS_* macros, so score.c stays one self-contained file). */
#define PS_NI ((1 << PS_DEPTH) - 1)
#if PS_LESS_EQUAL
#define PS_LEFT(v, t) ((v) <= (t))
#else
#define PS_LEFT(v, t) ((v) < (t))
#endif

/* Add the sum of all trees to acc[r] for rows [r0, m) of a block; rows must be NaN-free.
   PS_LANES rows walk each tree together: their index chains are independent, so the CPU overlaps
   the load -> compare -> index latencies that a one-row-at-a-time walk would serialise. */
#define PS_LANES 8
static void ps_trees_scalar(const float *x, long r0, long m, long d, double *acc) {
    for (int t = 0; t < PS_N_TREES; t++) {
        const int *f = ps_feat[t];
        const float *th = ps_thr[t];
        const PS_LEAF_T *lv = ps_leaf[t];
        long r = r0;
        for (; r + PS_LANES <= m; r += PS_LANES) {
            const float *xb = x + r * d;
            unsigned i[PS_LANES] = {0};
            for (int k = 0; k < PS_DEPTH; k++)
                for (int j = 0; j < PS_LANES; j++)
                    i[j] = 2 * i[j] + 2 - (unsigned)PS_LEFT(xb[j * d + f[i[j]]], th[i[j]]);
            for (int j = 0; j < PS_LANES; j++) acc[r + j] += lv[i[j] - PS_NI];
        }
        for (; r < m; r++) {
            const float *row = x + r * d;
            unsigned i = 0;
            for (int k = 0; k < PS_DEPTH; k++) i = 2 * i + 2 - (unsigned)PS_LEFT(row[f[i]], th[i]);
            acc[r] += lv[i - PS_NI];
        }
    }
}

/* Sum of all trees for rows [0, m) of a block; rows must be NaN-free. */
static void ps_trees_block(const float *x, long m, long d, double *acc) {
    for (long r = 0; r < m; r++) acc[r] = 0.0;
    ps_trees_scalar(x, 0, m, d, acc);
}

/* Sum of all trees for one row that may hold NaN: each split sends NaN its own way. */
static double ps_trees_row_nan(const float *row) {
    double s = 0.0;
    for (int t = 0; t < PS_N_TREES; t++) {
        unsigned i = 0;
        for (int k = 0; k < PS_DEPTH; k++) {
            float v = row[ps_feat[t][i]];
            int left = isnan(v) ? ((ps_nan_left[t][i >> 3] >> (i & 7)) & 1) : PS_LEFT(v, ps_thr[t][i]);
            i = 2 * i + 2 - (unsigned)left;
        }
        s += ps_leaf[t][i - PS_NI];
    }
    return s;
}
