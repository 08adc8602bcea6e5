/* Appended to CatBoost's C++ export (codegen/catboost_export.py): the photoscore C ABI, shared
   with the generated C export, over CatBoost's ApplyCatboostModel. */
#include <cmath>
extern "C" long score_n_features(void) { return (long)CatboostModelStatic.FloatFeatureCount; }

extern "C" void score_batch(const float *x, long n, long d, double *out) {
    std::vector<float> row((size_t)d);
    for (long r = 0; r < n; r++) {
        if ((unsigned long)d != CatboostModelStatic.FloatFeatureCount) { out[r] = NAN; continue; }
        row.assign(x + r * d, x + (r + 1) * d);
        double raw = ApplyCatboostModel(row);
        out[r] = raw < 0.0 ? std::exp(raw) / (1.0 + std::exp(raw)) : 1.0 / (1.0 + std::exp(-raw));
    }
}
