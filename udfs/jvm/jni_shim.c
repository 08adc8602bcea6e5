/* JNI entry point over the C ABI `score_batch` of a bundle's generated code. One source for C and
   C++ (CatBoost's export): compiled in the generated code's language, with -DPS_JNI_SYMBOL=<the
   mangled name of the kernel class's native scoreBatch> (udfs/formats/code_c.py). */
#include <jni.h>
#ifdef __cplusplus
extern "C" {
#define PS_ENV(f) env->f(
#else
#define PS_ENV(f) (*env)->f(env,
#endif
void score_batch(const float *x, long n, long d, double *out);

JNIEXPORT void JNICALL PS_JNI_SYMBOL(JNIEnv *env, jclass cls, jfloatArray x, jint n, jint d, jdoubleArray out) {
    (void)cls;
    /* Critical sections pin the arrays without copying; score_batch neither blocks nor calls back. */
    float *xp = (float *)PS_ENV(GetPrimitiveArrayCritical) x, NULL);
    double *op = (double *)PS_ENV(GetPrimitiveArrayCritical) out, NULL);
    if (xp != NULL && op != NULL) score_batch(xp, (long)n, (long)d, op);
    if (op != NULL) PS_ENV(ReleasePrimitiveArrayCritical) out, op, 0);
    if (xp != NULL) PS_ENV(ReleasePrimitiveArrayCritical) x, xp, JNI_ABORT);
}
#ifdef __cplusplus
}
#endif
