package moe4j.distributed;

import java.nio.charset.StandardCharsets;
import moe4j.tensor.Tensor;

/**
 * A failure that every rank of a group raised together, with the same message, after agreeing on it
 * ({@link #agree}): no rank is left waiting in a collective for another, so an MPI job can end cleanly
 * (every process exits, rank 0 alone says why) instead of being aborted.
 */
public final class AgreedFailure extends RuntimeException {
    private final boolean userError;

    public AgreedFailure(String message, boolean userError) {
        super(message);
        this.userError = userError;
    }

    /**
     * Whether it came from the user's input (an {@link IllegalArgumentException} on the failing rank:
     * options, files, folders), as opposed to a failure of the run itself.
     */
    public boolean userError() {
        return userError;
    }

    /**
     * Runs {@code action} on every rank of {@code group} (a collective: every rank must call it); if it
     * threw on any rank, every rank throws an {@link AgreedFailure} with the message of the lowest rank that
     * failed, so that what the user reads does not depend on which rank happened to report first.
     * {@code group} may be null for a single rank.
     */
    public static void agree(ProcessGroup group, Runnable action) {
        RuntimeException failure = null;
        try {
            action.run();
        } catch (RuntimeException e) {
            failure = e;
        }
        if (group == null || group.size() == 1) {
            if (failure != null) throw new AgreedFailure(messageOf(failure), failure instanceof IllegalArgumentException, failure);
            return;
        }
        int size = group.size();
        // the lowest failing rank r reports size - r, the largest such value
        Tensor who = Tensor.ofInts(new int[] {failure == null ? 0 : size - group.rank()}, 1);
        group.allReduce(who, ReduceOp.MAX);
        int max = who.getInt(0);
        if (max == 0) return;
        int root = size - max;
        byte[] text = root == group.rank() ? messageOf(failure).getBytes(StandardCharsets.UTF_8) : new byte[0];
        Tensor head = Tensor.ofInts(new int[] {text.length, root == group.rank() && failure instanceof IllegalArgumentException ? 1 : 0}, 2);
        group.broadcast(head, root);
        int[] bytes = new int[Math.max(1, head.getInt(0))]; // a collective needs at least one element
        for (int i = 0; i < text.length; i++) bytes[i] = text[i];
        Tensor body = Tensor.ofInts(bytes, bytes.length);
        group.broadcast(body, root);
        byte[] received = new byte[head.getInt(0)];
        for (int i = 0; i < received.length; i++) received[i] = (byte) body.getInt(i);
        String message = new String(received, StandardCharsets.UTF_8);
        throw new AgreedFailure(message, head.getInt(1) == 1, group.rank() == root ? failure : null);
    }

    private AgreedFailure(String message, boolean userError, Throwable cause) {
        super(message, cause);
        this.userError = userError;
    }

    /** The message and its causes' where they add to it: what the user needs, on one line. */
    public static String messageOf(Throwable t) {
        StringBuilder what = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            String m = c.getMessage();
            if (m == null || what.toString().contains(m)) continue;
            if (!what.isEmpty()) what.append(": ");
            what.append(m);
        }
        return what.isEmpty() ? t.toString() : what.toString();
    }
}
