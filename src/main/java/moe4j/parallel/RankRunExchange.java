package moe4j.parallel;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import moe4j.distributed.ProcessGroup;
import moe4j.parallel.EpVerifier.RankRun;
import moe4j.parallel.EpVerifier.Values;
import moe4j.tensor.DType;
import moe4j.tensor.Tensor;

/**
 * Gathers every rank's {@link RankRun} onto every rank of a process group, so that the oracles can run
 * where the ranks are separate processes (an MPI job) exactly as they run on in-JVM ranks.
 *
 * <p>A run travels as bytes packed into int32 rows: the ranks first gather each other's lengths, then
 * the runs themselves. Values go as float32: they were copied out of float32 tensors, so nothing is
 * lost on the way.
 */
final class RankRunExchange {
    private RankRunExchange() {}

    /** Every rank's run, in rank order; a collective over {@code group} (every rank calls it). */
    static List<RankRun> allGather(ProcessGroup group, RankRun mine) {
        byte[] bytes = encode(mine);
        int words = (bytes.length + 3) / 4;
        Tensor lengths = Tensor.zeros(DType.I32, group.size(), 1);
        group.allGather(lengths, Tensor.ofInts(new int[] {bytes.length}, 1, 1));
        int[] byteLengths = lengths.toIntArray();
        int totalWords = 0;
        for (int n : byteLengths) totalWords += (n + 3) / 4;
        int[] packed = new int[words];
        ByteBuffer.wrap(Arrays.copyOf(bytes, 4 * words)).asIntBuffer().get(packed);
        Tensor all = Tensor.zeros(DType.I32, totalWords, 1);
        group.allGather(all, Tensor.ofInts(packed, words, 1));
        ByteBuffer allBytes = ByteBuffer.allocate(4 * totalWords);
        allBytes.asIntBuffer().put(all.toIntArray());
        List<RankRun> runs = new ArrayList<>();
        int at = 0;
        for (int n : byteLengths) {
            runs.add(decode(allBytes.array(), at, n));
            at += 4 * ((n + 3) / 4);
        }
        return runs;
    }

    static byte[] encode(RankRun run) {
        ByteArrayOutputStream buffer = new ByteArrayOutputStream();
        try (DataOutputStream out = new DataOutputStream(buffer)) {
            out.writeInt(run.rank());
            out.writeInt(run.localExpertStart());
            out.writeInt(run.numLocalExperts());
            out.writeLong(run.forwardRowBytes());
            out.writeLong(run.backwardRowBytes());
            out.writeLong(run.countBytes());
            writeValues(out, run.out());
            writeValues(out, run.gradX());
            out.writeInt(run.grads().size());
            for (var e : run.grads().entrySet()) {
                out.writeUTF(e.getKey());
                writeValues(out, e.getValue());
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e); // a byte array does not fail
        }
        return buffer.toByteArray();
    }

    static RankRun decode(byte[] bytes, int offset, int length) {
        try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes, offset, length))) {
            int rank = in.readInt();
            int localExpertStart = in.readInt();
            int numLocalExperts = in.readInt();
            long forward = in.readLong();
            long backward = in.readLong();
            long counts = in.readLong();
            Values out = readValues(in);
            Values gradX = readValues(in);
            int n = in.readInt();
            Map<String, Values> grads = new LinkedHashMap<>();
            for (int i = 0; i < n; i++) grads.put(in.readUTF(), readValues(in));
            return new RankRun(rank, localExpertStart, numLocalExperts, out, gradX, grads, forward, backward, counts);
        } catch (IOException e) {
            throw new IllegalStateException("verify: a gathered rank run is truncated or corrupt (" + length + " bytes)", e);
        }
    }

    private static void writeValues(DataOutputStream out, Values v) throws IOException {
        out.writeInt(v.shape().length);
        for (int d : v.shape()) out.writeInt(d);
        out.writeInt(v.data().length);
        for (double x : v.data()) out.writeFloat((float) x);
    }

    private static Values readValues(DataInputStream in) throws IOException {
        int[] shape = new int[in.readInt()];
        for (int i = 0; i < shape.length; i++) shape[i] = in.readInt();
        double[] data = new double[in.readInt()];
        for (int i = 0; i < data.length; i++) data[i] = in.readFloat();
        return new Values(shape, data);
    }
}
