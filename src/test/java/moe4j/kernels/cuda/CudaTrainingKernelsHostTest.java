package moe4j.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import moe4j.kernels.AttentionKernels;
import moe4j.kernels.Kernels;
import moe4j.tensor.DType;
import moe4j.tensor.Device;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

/**
 * The host side of the cuda reductions, attention, AdamW and capacity-drop kernels, run without a GPU:
 * launch geometry and the argument checks made before any launch (the kernels themselves are compiled
 * by nvcc in {@code CudaHostTest} and compared with the CPU's in {@code CudaDeviceKernelsTest}).
 */
class CudaTrainingKernelsHostTest {
    @Test
    void sumPartialsCoverTheTensorAndStayBounded() {
        assertEquals(1, CudaReductions.partialBlocks(0));
        assertEquals(1, CudaReductions.partialBlocks(1));
        assertEquals(1, CudaReductions.partialBlocks(CudaReductions.THREADS));
        assertEquals(2, CudaReductions.partialBlocks(CudaReductions.THREADS + 1));
        assertEquals(CudaReductions.MAX_PARTIALS, CudaReductions.partialBlocks(1L << 40));
        assertEquals(0, CudaReductions.THREADS % 32, "the block trees go warp by warp");
    }

    @Test
    void rowsRunAlongTheLastDimension() {
        assertEquals(21, CudaReductions.rows(Tensor.zeros(3, 7, 5), 5));
        assertEquals(0, CudaReductions.rows(Tensor.zeros(3, 0), 0));
    }

    @Test
    void attentionGridHasOneWarpPerRow() {
        assertArrayEquals(new int[] {1, 8}, CudaAttention.grid(1, 8));
        assertArrayEquals(new int[] {1, 8}, CudaAttention.grid(CudaAttention.WARPS, 8));
        assertArrayEquals(new int[] {10, 6}, CudaAttention.grid(37, 6));
        assertArrayEquals(new int[] {1, 1}, CudaAttention.grid(0, 1));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CudaAttention.grid(128, 70_000));
        assertTrue(e.getMessage().contains("70000"), e.getMessage());
    }

    @Test
    void tensorCoreGridHasOneBlockPerSixtyFourRowsOfEverySlice() {
        assertEquals(64, CudaAttention.FLASH_ROWS, "attention.cu's FLASH_ROWS and FLASH_TILE");
        assertEquals(4 * 32, CudaAttention.FLASH_THREADS, "four warps of 16 rows each");
        assertArrayEquals(new int[] {64, 32}, CudaAttention.flashGrid(2048, 4 * 16), "the measured training shape");
        assertArrayEquals(new int[] {8, 1}, CudaAttention.flashGrid(1, 8));
        assertArrayEquals(new int[] {8, 1}, CudaAttention.flashGrid(64, 8));
        assertArrayEquals(new int[] {8, 2}, CudaAttention.flashGrid(65, 8));
        assertArrayEquals(new int[] {3, 3}, CudaAttention.flashGrid(130, 3));
        assertArrayEquals(new int[] {1, 1}, CudaAttention.flashGrid(0, 0));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CudaAttention.flashGrid(64 * 65535 + 1, 1));
        assertTrue(e.getMessage().contains(String.valueOf(64 * 65535 + 1)), e.getMessage());
    }

    @Test
    void tensorCoresOnlyForBf16ProductsAtTheirHeadDimensionsOnAlignedRows() {
        assertTrue(CudaAttention.tensorCores(DType.BF16, 64, 256, 512));
        assertTrue(CudaAttention.tensorCores(DType.BF16, 128, 1 << 20));
        assertTrue(!CudaAttention.tensorCores(DType.F32, 128, 256), "f32 products stay exact");
        assertTrue(!CudaAttention.tensorCores(DType.BF16, 96, 256), "no kernel compiled for head dimension 96");
        assertTrue(!CudaAttention.tensorCores(DType.BF16, 256, 256));
        assertTrue(!CudaAttention.tensorCores(DType.BF16, 128, 256, 264), "rows are read as 16-byte vectors");
    }

    @Test
    void everyTensorCorePassIsCompiledForEveryHeadDimension() {
        var defined = KernelSource.ATTENTION.kernelNames();
        for (int hd : CudaAttention.TENSOR_CORE_HEAD_DIMS) {
            for (String pass : CudaAttention.FLASH_PASSES) {
                assertTrue(defined.contains(CudaAttention.flashKernel(pass, hd)), CudaAttention.flashKernel(pass, hd) + " in " + defined);
            }
        }
        assertTrue(defined.contains("attention_row_dots"), defined.toString());
    }

    @Test
    void headDimensionLimit() {
        CudaAttention.checkHeadDim(1);
        CudaAttention.checkHeadDim(CudaAttention.MAX_HEAD_DIM);
        UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class, () -> CudaAttention.checkHeadDim(257));
        assertTrue(e.getMessage().contains("257") && e.getMessage().contains("256"), e.getMessage());
        assertEquals(8 * 32, CudaAttention.MAX_HEAD_DIM, "attention.cu holds 8 elements per lane");
    }

    @Test
    void attentionScaleIsTheCpusRounding() {
        assertEquals((float) (1 / Math.sqrt(64)), CudaAttention.scale(64));
        assertEquals((float) (1 / Math.sqrt(24)), CudaAttention.scale(24));
    }

    @Test
    void theCudaDeviceKeepsTheLogSumExpNotTheProbabilities() {
        assertArrayEquals(new int[] {2, 4, 37}, new CudaAttention(null).savedShape(2, 4, 37));
        AttentionKernels cpu = Kernels.of(Device.CPU).attention();
        assertArrayEquals(new int[] {2, 4, 37, 37}, cpu.savedShape(2, 4, 37));
    }

    @Test
    void theSavedTensorMustHoldOneValuePerQueryRow() {
        CudaAttention.checkSaved(Tensor.zeros(2, 4, 37), 2, 4, 37);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> CudaAttention.checkSaved(Tensor.zeros(2, 4, 37, 37), 2, 4, 37));
        assertTrue(e.getMessage().contains("[2, 4, 37, 37]") && e.getMessage().contains("savedShape"), e.getMessage());
    }

    @Test
    void nonFloatTensorsAreRejectedByName() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> CudaReductions.requireF32("softmax", Tensor.zeros(2), Tensor.zeros(DType.I32, 2)));
        assertTrue(e.getMessage().contains("softmax") && e.getMessage().contains("I32"), e.getMessage());
    }

    @Test
    void crossEntropyArgumentChecks() {
        CudaReductions.checkCrossEntropy("crossEntropy", Tensor.zeros(4, 10), Tensor.zeros(DType.I32, 4));
        IllegalArgumentException rank = assertThrows(IllegalArgumentException.class,
                () -> CudaReductions.checkCrossEntropy("crossEntropy", Tensor.zeros(4, 10, 2), Tensor.zeros(DType.I32, 4)));
        assertTrue(rank.getMessage().contains("(N, V)"), rank.getMessage());
        IllegalArgumentException count = assertThrows(IllegalArgumentException.class,
                () -> CudaReductions.checkCrossEntropy("crossEntropy", Tensor.zeros(4, 10), Tensor.zeros(DType.I32, 5)));
        assertTrue(count.getMessage().contains("4 int32"), count.getMessage());
        assertThrows(IllegalArgumentException.class,
                () -> CudaReductions.checkCrossEntropy("crossEntropy", Tensor.zeros(4, 10), Tensor.zeros(4)));
    }

    @Test
    void adamWArgumentChecks() {
        Tensor a = Tensor.zeros(3, 4);
        CudaKernels.checkAdamW(a, Tensor.zeros(12), Tensor.zeros(3, 4), Tensor.zeros(4, 3));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> CudaKernels.checkAdamW(a, Tensor.zeros(11), a, a));
        assertTrue(e.getMessage().contains("gradient [11]"), e.getMessage());
    }

    @Test
    void dropOverCapacityArgumentChecks() {
        Tensor ids = Tensor.zeros(DType.I32, 6, 2);
        CudaKernels.checkDropOverCapacity(ids, 4, 0, Tensor.zeros(DType.I32, 6, 2));
        IllegalArgumentException cap = assertThrows(IllegalArgumentException.class,
                () -> CudaKernels.checkDropOverCapacity(ids, 4, -1, Tensor.zeros(DType.I32, 6, 2)));
        assertTrue(cap.getMessage().contains("capacity -1"), cap.getMessage());
        IllegalArgumentException experts = assertThrows(IllegalArgumentException.class,
                () -> CudaKernels.checkDropOverCapacity(ids, 0, 3, Tensor.zeros(DType.I32, 6, 2)));
        assertTrue(experts.getMessage().contains("0 experts"), experts.getMessage());
        assertThrows(IllegalArgumentException.class, () -> CudaKernels.checkDropOverCapacity(ids, 4, 3, Tensor.zeros(DType.I32, 6, 3)));
        assertThrows(IllegalArgumentException.class, () -> CudaKernels.checkDropOverCapacity(ids, 4, 3, Tensor.zeros(6, 2)));
    }
}
