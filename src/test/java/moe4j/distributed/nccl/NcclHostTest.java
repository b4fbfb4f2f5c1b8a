package moe4j.distributed.nccl;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.ValueLayout;
import java.util.List;
import moe4j.distributed.ReduceOp;
import moe4j.kernels.DeviceUnavailableException;
import moe4j.distributed.nccl.ExchangePlan.Transfer;
import moe4j.tensor.DType;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/** What the NCCL backend decides on the host, checked without a GPU or NCCL. */
class NcclHostTest {
    @Test
    void theUniqueIdIsA128ByteStructPassedByValue() {
        assertEquals(128, NcclLibrary.UNIQUE_ID.byteSize());
        assertEquals(1, NcclLibrary.UNIQUE_ID.byteAlignment()); // char internal[128]
        // the linker accepts the struct as a by-value argument (a pointer would be ADDRESS, 8 bytes)
        FunctionDescriptor initRank = FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT,
                NcclLibrary.UNIQUE_ID, ValueLayout.JAVA_INT);
        assertEquals(NcclLibrary.UNIQUE_ID, initRank.argumentLayouts().get(2));
        Linker.nativeLinker().downcallHandle(initRank); // throws when the layout cannot be passed
        assertTrue(NcclLibrary.UNIQUE_ID.memberLayouts().getFirst() instanceof java.lang.foreign.SequenceLayout s
                && s.elementCount() == 128 && s.elementLayout().byteSize() == 1);
    }

    @Test
    void allToAllTransfersSkipZeroCountsAndKeepOffsetsInElements() {
        // rank sends 2 rows to 0, none to 1, 3 to 2; receives 0 from 0, 4 from 1, 1 from 2; rows of 5 elements
        ExchangePlan.Plan p = ExchangePlan.allToAll(new int[] {0, 4, 1}, new int[] {2, 0, 3}, 5);
        assertEquals(List.of(new Transfer(0, 0, 10), new Transfer(2, 10, 15)), p.sends());
        assertEquals(List.of(new Transfer(1, 0, 20), new Transfer(2, 20, 5)), p.receives());
        ExchangePlan.Plan empty = ExchangePlan.allToAll(new int[] {0, 0}, new int[] {0, 0}, 7);
        assertTrue(empty.sends().isEmpty() && empty.receives().isEmpty(), "an empty rank makes no call at all");
    }

    @Test
    void allToAllPlansOfAllRanksPairUp() {
        // a random-ish 4-rank split matrix: sends[i][j] = rows i sends to j; every send i->j must meet a receive
        // j<-i of the same count, at the offset the reference layout gives
        int[][] m = {{1, 0, 3, 2}, {0, 0, 0, 0}, {5, 1, 0, 0}, {2, 2, 2, 2}};
        int width = 3;
        for (int src = 0; src < 4; src++) {
            int i = src;
            int[] out = new int[4];
            for (int j = 0; j < 4; j++) out[j] = m[j][i];
            ExchangePlan.Plan pi = ExchangePlan.allToAll(out, m[i], width);
            for (Transfer s : pi.sends()) {
                int j = s.peer();
                int[] outJ = new int[4];
                for (int k = 0; k < 4; k++) outJ[k] = m[k][j];
                Transfer r = ExchangePlan.allToAll(outJ, m[j], width).receives().stream().filter(t -> t.peer() == i).findFirst().orElseThrow();
                assertEquals(s.count(), r.count());
                long expectedOffset = 0;
                for (int k = 0; k < i; k++) expectedOffset += (long) m[k][j] * width;
                assertEquals(expectedOffset, r.offset());
            }
        }
    }

    @Test
    void unevenAllGatherSendsOwnRowsToEveryRankAndReceivesInRankOrder() {
        ExchangePlan.Plan p = ExchangePlan.allGather(new int[] {2, 0, 3}, 2, 4);
        assertEquals(List.of(new Transfer(0, 0, 12), new Transfer(1, 0, 12), new Transfer(2, 0, 12)), p.sends());
        assertEquals(List.of(new Transfer(0, 0, 8), new Transfer(2, 8, 12)), p.receives());
        ExchangePlan.Plan empty = ExchangePlan.allGather(new int[] {2, 0, 3}, 1, 4);
        assertTrue(empty.sends().isEmpty(), "a rank without rows sends nothing");
        assertEquals(2, empty.receives().size());
    }

    @Test
    void typesAndReductionsMapToNcclsEnumerators() {
        assertEquals(7, ExchangePlan.dataType(DType.F32));
        assertEquals(9, ExchangePlan.dataType(DType.BF16));
        assertEquals(2, ExchangePlan.dataType(DType.I32));
        assertEquals(6, ExchangePlan.dataType(DType.F16));
        assertEquals(4, ExchangePlan.dataType(DType.I64));
        assertEquals(0, ExchangePlan.reduction(ReduceOp.SUM, DType.I32));
        assertEquals(2, ExchangePlan.reduction(ReduceOp.MAX, DType.F32));
        assertEquals(4, ExchangePlan.reduction(ReduceOp.AVG, DType.BF16));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ExchangePlan.reduction(ReduceOp.AVG, DType.I32));
        assertTrue(e.getMessage().contains("AVG") && e.getMessage().contains("I32"), e.getMessage());
    }

    @Test
    void errorsNameTheCallTheResultAndNcclsOwnMessage() {
        assertEquals("ncclSuccess", NcclLibrary.resultName(0));
        assertEquals("ncclRemoteError", NcclLibrary.resultName(6));
        assertEquals("ncclInProgress", NcclLibrary.resultName(7));
        assertEquals("ncclResult 42", NcclLibrary.resultName(42));
        NcclException e = new NcclException("ncclSend", 4, "invalid argument", "peer 5 is out of range");
        assertEquals("nccl: ncclSend failed with ncclInvalidArgument (invalid argument): peer 5 is out of range", e.getMessage());
        assertEquals(4, e.result());
        assertEquals("nccl: ncclGroupEnd failed with ncclSystemError", new NcclException("ncclGroupEnd", 2, "", null).getMessage());
        assertEquals("2.28.3", NcclLibrary.versionString(22803));
    }

    @Test
    void aTimeoutNamesCollectiveGroupRanksAndDeadline() {
        String m = NcclWatchdog.timedOut("allToAllSingle", 3, "ep", 1, 2, new int[] {2, 3}, 2.0);
        assertTrue(m.contains("allToAllSingle #3") && m.contains("group 'ep'") && m.contains("2.0 s") && m.contains("rank 1 of 2")
                && m.contains("[2, 3]") && m.contains("aborted"), m);
    }

    @Test
    void deviceArgumentChecksUseTheSharedWording() {
        assertTrue(DeviceArguments.overlap(100, 50, 120, 10));
        assertTrue(DeviceArguments.overlap(120, 10, 100, 50));
        assertFalse(DeviceArguments.overlap(100, 20, 120, 10), "touching blocks do not overlap");
        assertFalse(DeviceArguments.overlap(100, 0, 100, 10), "an empty block overlaps nothing");
        Tensor a = Tensor.zeros(4, 3);
        assertNull(DeviceArguments.sameLayout(Tensor.zeros(2, 3), a));
        assertTrue(DeviceArguments.sameLayout(Tensor.zeros(2, 4), a).contains("row widths differ"));
        assertTrue(DeviceArguments.sameLayout(Tensor.zeros(DType.I32, 2, 3), a).contains("I32"));
        assertNull(DeviceArguments.gatheredRows(new int[] {1, 3}, a));
        assertTrue(DeviceArguments.gatheredRows(new int[] {1, 2}, a).contains("[1, 2] = 3"));
        assertTrue(DeviceArguments.gatheredRows(new int[] {-1, 4}, a).contains("rank 0 rejected"));
    }

    @Test
    void withoutTheLibraryOpeningItSaysWhatIsMissingInOneSentence() {
        DeviceUnavailableException e = assertThrows(DeviceUnavailableException.class,
                () -> NcclLibrary.open("/nonexistent/libnccl.so.2"));
        assertTrue(e.getMessage().contains("/nonexistent/libnccl.so.2") && e.getMessage().contains("MOE4J_NCCL_LIBRARY"), e.getMessage());
    }
}
