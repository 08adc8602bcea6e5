package photoscore.spark;

import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import org.apache.spark.api.java.function.FlatMapFunction;
import org.apache.spark.rdd.RDD;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Scores a Dataset's rows in blocks with a kernel class's static scoreBlock(float[], int, double[]).
 *  Output: the input's non-feature columns, then `score` (null where a feature is null or the kernel
 *  failed on that row alone). Works on Spark's internal rows: no conversion of the columns to Java
 *  objects and back (through a Row encoder that conversion cost as much as the C scoring). */
public final class BlockScorer implements FlatMapFunction<Iterator<InternalRow>, InternalRow> {
    private static final long serialVersionUID = 1L;
    private static final Logger LOG = LoggerFactory.getLogger(BlockScorer.class);
    private final String kernelClass;
    private final int[] features;
    private final int[] kept;
    private final DataType[] keptTypes;
    private final int blockRows;

    private BlockScorer(String kernelClass, int[] features, int[] kept, DataType[] keptTypes, int blockRows) {
        this.kernelClass = kernelClass;
        this.features = features;
        this.kept = kept;
        this.keptTypes = keptTypes;
        this.blockRows = blockRows;
    }

    /** `df` with float `featureNames` (in the model's order) -> its other columns plus `score`. */
    public static Dataset<Row> score(Dataset<Row> df, List<String> featureNames, String kernelClass, int blockRows) {
        org.apache.spark.sql.classic.Dataset<Row> classic = (org.apache.spark.sql.classic.Dataset<Row>) df;
        StructType in = df.schema();
        int[] features = new int[featureNames.size()];
        for (int j = 0; j < features.length; j++) {
            features[j] = in.fieldIndex(featureNames.get(j));
            if (!in.fields()[features[j]].dataType().equals(DataTypes.FloatType)) {
                throw new IllegalArgumentException("feature column " + featureNames.get(j) + " must be float");
            }
        }
        List<Integer> keptList = new ArrayList<>();
        List<StructField> outFields = new ArrayList<>();
        for (int i = 0; i < in.fields().length; i++) {
            if (!featureNames.contains(in.fields()[i].name())) {
                keptList.add(i);
                outFields.add(in.fields()[i]);
            }
        }
        outFields.add(DataTypes.createStructField("score", DataTypes.DoubleType, true));
        int[] kept = keptList.stream().mapToInt(Integer::intValue).toArray();
        DataType[] keptTypes = new DataType[kept.length];
        for (int k = 0; k < kept.length; k++) keptTypes[k] = in.fields()[kept[k]].dataType();
        RDD<InternalRow> scored = classic.queryExecution().toRdd().toJavaRDD()
            .mapPartitions(new BlockScorer(kernelClass, features, kept, keptTypes, blockRows)).rdd();
        return classic.sparkSession().internalCreateDataFrame(scored, DataTypes.createStructType(outFields), false);
    }

    @Override
    public Iterator<InternalRow> call(Iterator<InternalRow> input) throws Exception {
        ClassLoader loader = Thread.currentThread().getContextClassLoader();
        MethodHandle kernel = MethodHandles.publicLookup().findStatic(
            Class.forName(kernelClass, true, loader), "scoreBlock",
            MethodType.methodType(void.class, float[].class, int.class, double[].class));
        return new Blocks(input, kernel);
    }

    private final class Blocks implements Iterator<InternalRow> {
        private final Iterator<InternalRow> input;
        private final MethodHandle kernel;
        private final int d = features.length;
        private final Object[][] keptValues = new Object[blockRows][];
        private final boolean[] missing = new boolean[blockRows];
        private final float[] x = new float[blockRows * d];
        private final double[] out = new double[blockRows];
        private final float[] one = new float[d];
        private final double[] oneOut = new double[1];
        private int size;
        private int next;

        Blocks(Iterator<InternalRow> input, MethodHandle kernel) {
            this.input = input;
            this.kernel = kernel;
        }

        @Override
        public boolean hasNext() {
            return next < size || fill();
        }

        @Override
        public InternalRow next() {
            if (!hasNext()) throw new NoSuchElementException();
            Object[] values = keptValues[next];
            values[kept.length] = missing[next] ? null : out[next];
            keptValues[next++] = null;
            return new GenericInternalRow(values);
        }

        private boolean fill() {
            size = 0;
            next = 0;
            while (size < blockRows && input.hasNext()) {
                // The scan reuses its row object: copy what outlives this call (the kept columns).
                InternalRow row = input.next();
                Object[] values = new Object[kept.length + 1];
                for (int k = 0; k < kept.length; k++) {
                    values[k] = row.isNullAt(kept[k]) ? null : InternalRow.copyValue(row.get(kept[k], keptTypes[k]));
                }
                boolean isNull = false;
                for (int j = 0; j < d; j++) {
                    int c = features[j];
                    if (row.isNullAt(c)) {
                        isNull = true;
                        x[size * d + j] = 0f;
                    } else {
                        x[size * d + j] = row.getFloat(c);
                    }
                }
                keptValues[size] = values;
                missing[size++] = isNull;
            }
            if (size == 0) return false;
            try {
                kernel.invokeExact(x, size, out);
            } catch (Throwable blockError) {
                // One bad row must not fail the task: score the block's rows one by one, and leave a
                // null score (quarantined as score_failed by the job) where the kernel still fails.
                for (int r = 0; r < size; r++) {
                    System.arraycopy(x, r * d, one, 0, d);
                    try {
                        kernel.invokeExact(one, 1, oneOut);
                        out[r] = oneOut[0];
                    } catch (Throwable rowError) {
                        LOG.warn("{} failed on a row: {}", kernelClass, rowError.toString());
                        missing[r] = true;
                    }
                }
            }
            return true;
        }
    }
}
