package photoscore.generated;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Paths;

/** Batch scorer for parity checks: little-endian row-major n x d matrix in, n float64 out. */
public final class ScoreHarness {
    private ScoreHarness() {}

    public static void main(String[] args) throws IOException {
        if (args.length != 5) {
            System.err.println("usage: ScoreHarness <in.bin> <n> <d> <float32|float64> <out.bin>");
            System.exit(2);
        }
        int n = Integer.parseInt(args[1]);
        int d = Integer.parseInt(args[2]);
        boolean f32 = args[3].equals("float32");
        if (d != Score.N_FEATURES) {
            System.err.println("matrix has " + d + " columns, the model expects " + Score.N_FEATURES);
            System.exit(2);
        }
        ByteBuffer in = ByteBuffer.wrap(Files.readAllBytes(Paths.get(args[0]))).order(ByteOrder.LITTLE_ENDIAN);
        ByteBuffer out = ByteBuffer.allocate(8 * n).order(ByteOrder.LITTLE_ENDIAN);
        if (f32) {
            float[] x = new float[n * d];
            in.asFloatBuffer().get(x);
            double[] scores = new double[n];
            Score.scoreBlock(x, n, scores);
            out.asDoubleBuffer().put(scores);
        } else {
            double[] row = new double[d];
            for (int r = 0; r < n; r++) {
                for (int j = 0; j < d; j++) {
                    row[j] = in.getDouble();
                }
                out.putDouble(Score.score(row));
            }
        }
        Files.write(Paths.get(args[4]), out.array());
    }
}
