package moe4j.distributed;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import moe4j.tensor.Tensor;
import org.junit.jupiter.api.Test;

class DeviceMeshTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(20);

    // ---------------------------------------------------------------- layout and validation

    private static void assertDims(MeshShape s, List<String> names, int... sizes) {
        assertEquals(names, s.dimNames());
        for (int i = 0; i < sizes.length; i++) assertEquals(sizes[i], s.size(names.get(i)), names.get(i));
    }

    @Test
    void keepsDimensionsLargerThanOneInTheFixedOrder() {
        assertDims(MeshShape.of(4, MeshSizes.defaults().ep(2)), List.of("dp_shard", "ep"), 2, 2);
        assertDims(MeshShape.of(8, MeshSizes.defaults().tp(2).ep(2)), List.of("dp_shard", "ep", "tp"), 2, 2, 2);
        assertDims(MeshShape.of(8, MeshSizes.defaults().pp(2).dpReplicate(2).dpShard(2)), List.of("pp", "dp_replicate", "dp_shard"), 2, 2, 2);
        assertDims(MeshShape.of(4, MeshSizes.defaults()), List.of("dp_shard"), 4);
        assertDims(MeshShape.of(1, MeshSizes.defaults()), List.of());
        // dp_shard of size 1 is kept in front of ep or tp
        assertDims(MeshShape.of(2, MeshSizes.defaults().ep(2)), List.of("dp_shard", "ep"), 1, 2);
        assertDims(MeshShape.of(2, MeshSizes.defaults().tp(2)), List.of("dp_shard", "tp"), 1, 2);
        assertDims(MeshShape.of(4, MeshSizes.defaults().dpReplicate(2).ep(2)), List.of("dp_replicate", "dp_shard", "ep"), 2, 1, 2);
        assertDims(MeshShape.of(4, MeshSizes.defaults().dpReplicate(2).dpShard(2)), List.of("dp_replicate", "dp_shard"), 2, 2);
        assertDims(MeshShape.of(2, MeshSizes.defaults().dpReplicate(2)), List.of("dp_replicate"), 2);
    }

    @Test
    void laysRanksOutRowMajor() {
        MeshShape s = MeshShape.of(8, MeshSizes.defaults().tp(2).ep(2)); // (dp_shard S=2, ep P=2, tp TP=2)
        for (int sh = 0; sh < 2; sh++) {
            for (int e = 0; e < 2; e++) {
                for (int t = 0; t < 2; t++) {
                    int rank = (sh * 2 + e) * 2 + t;
                    assertArrayEquals(new int[] {sh, e, t}, s.coordinates(rank));
                    assertEquals(rank, s.rank(sh, e, t));
                }
            }
        }
    }

    @Test
    void rejectsSizesThatDoNotFitTheWorldWithTheReferenceTexts() {
        assertMessage("ep must be >= 1", () -> MeshShape.of(4, MeshSizes.defaults().ep(0)));
        assertMessage("tp must be >= 1", () -> MeshShape.of(4, MeshSizes.defaults().tp(-2)));
        assertMessage("pp must be >= 1", () -> MeshShape.of(4, MeshSizes.defaults().pp(0)));
        assertMessage("cp must be >= 1", () -> MeshShape.of(4, MeshSizes.defaults().cp(0)));
        assertMessage("dp_replicate must be >= 1", () -> MeshShape.of(4, MeshSizes.defaults().dpReplicate(0)));
        assertMessage("dp_shard must be -1 (auto) or positive", () -> MeshShape.of(4, MeshSizes.defaults().dpShard(0)));
        assertMessage("world_size (6) not divisible by dp_replicate*tp*pp*cp*ep (4)", () -> MeshShape.of(6, MeshSizes.defaults().tp(2).ep(2)));
        assertMessage("Parallelism dimensions (1 × 2 × 1 × 1 × 1 × 4 = 8) do not match world_size (4)",
                () -> MeshShape.of(4, MeshSizes.defaults().dpShard(2).ep(4)));
        assertMessage("Parallelism dimensions (2 × 3 × 1 × 1 × 1 × 1 = 6) do not match world_size (8)",
                () -> MeshShape.of(8, MeshSizes.defaults().dpReplicate(2).dpShard(3)));
    }

    private static void assertMessage(String expected, Runnable r) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, r::run);
        assertEquals(expected, e.getMessage());
    }

    // ---------------------------------------------------------------- sub-groups

    record Membership(int[] epRanks, int[] shardRanks, int epCoord, int shardCoord, String epName, int[] coordinates) {}

    @Test
    void subGroupsOfATwoByTwoMesh() {
        List<Membership> got = Distributed.run(4, TIMEOUT, g -> {
            DeviceMesh mesh = DeviceMesh.create(g, MeshSizes.defaults().ep(2));
            assertEquals(List.of("dp_shard", "ep"), mesh.dimNames());
            assertTrue(mesh.hasDim("ep"));
            assertFalse(mesh.hasDim("tp"));
            assertEquals(2, mesh.size("ep"));
            assertSame(mesh.get("ep"), mesh.get("ep"));
            assertSame(mesh.get("ep").group(), mesh.get("ep").group());
            DeviceMesh ep = mesh.get("ep");
            DeviceMesh shard = mesh.get("dp_shard");
            return new Membership(ep.group().globalRanks(), shard.group().globalRanks(), ep.localRank(), shard.localRank(),
                    ep.group().name(), mesh.coordinates());
        });
        int[][] epGroups = {{0, 1}, {0, 1}, {2, 3}, {2, 3}};
        int[][] shardGroups = {{0, 2}, {1, 3}, {0, 2}, {1, 3}};
        for (int r = 0; r < 4; r++) {
            Membership m = got.get(r);
            assertArrayEquals(epGroups[r], m.epRanks(), "ep group of rank " + r);
            assertArrayEquals(shardGroups[r], m.shardRanks(), "dp_shard group of rank " + r);
            assertEquals(r % 2, m.epCoord());
            assertEquals(r / 2, m.shardCoord());
            assertArrayEquals(new int[] {r / 2, r % 2}, m.coordinates());
            assertEquals(r < 2 ? "ep[0,1]" : "ep[2,3]", m.epName());
        }
    }

    @Test
    void subGroupsOfATwoByTwoByTwoMeshWithTensorParallel() {
        List<int[][]> got = Distributed.run(8, TIMEOUT, g -> {
            DeviceMesh mesh = DeviceMesh.create(g, MeshSizes.defaults().tp(2).ep(2));
            assertEquals(List.of("dp_shard", "ep", "tp"), mesh.dimNames());
            return new int[][] {mesh.get("dp_shard").group().globalRanks(), mesh.get("ep").group().globalRanks(),
                    mesh.get("tp").group().globalRanks(), mesh.flatten("dp", "dp_replicate", "dp_shard", "ep").group().globalRanks(),
                    {mesh.coordinate("dp_shard"), mesh.coordinate("ep"), mesh.coordinate("tp"), mesh.flatten("dp").localRank()}};
        });
        for (int r = 0; r < 8; r++) {
            int s = r / 4, e = r / 2 % 2, t = r % 2;
            int[][] m = got.get(r);
            assertArrayEquals(new int[] {e * 2 + t, (2 + e) * 2 + t}, m[0], "dp_shard group of rank " + r);
            assertArrayEquals(new int[] {s * 4 + t, s * 4 + 2 + t}, m[1], "ep group of rank " + r);
            assertArrayEquals(new int[] {s * 4 + e * 2, s * 4 + e * 2 + 1}, m[2], "tp group of rank " + r);
            assertArrayEquals(new int[] {t, 2 + t, 4 + t, 6 + t}, m[3], "dp group of rank " + r);
            assertArrayEquals(new int[] {s, e, t, s * 2 + e}, m[4], "coordinates of rank " + r);
        }
    }

    @Test
    void subGroupsRunIndependentCollectivesConcurrently() {
        List<float[]> got = Distributed.run(8, TIMEOUT, g -> {
            DeviceMesh mesh = DeviceMesh.create(g, MeshSizes.defaults().tp(2).ep(2));
            ProcessGroup ep = mesh.get("ep").group();
            ProcessGroup tp = mesh.get("tp").group();
            ProcessGroup shard = mesh.get("dp_shard").group();
            float[] result = new float[3];
            for (int round = 0; round < 20; round++) {
                Tensor a = Tensor.full(g.rank() + round, 16);
                Tensor b = Tensor.full(10 * g.rank(), 16);
                // two groups in flight at once on every rank, in a different order on odd ranks
                Work wa;
                Work wb;
                if (g.rank() % 2 == 0) {
                    wa = ep.allReduceAsync(a, ReduceOp.SUM);
                    wb = shard.allReduceAsync(b, ReduceOp.MAX);
                } else {
                    wb = shard.allReduceAsync(b, ReduceOp.MAX);
                    wa = ep.allReduceAsync(a, ReduceOp.SUM);
                }
                Tensor c = Tensor.full(g.rank(), 4);
                tp.allReduce(c, ReduceOp.SUM);
                wa.await();
                wb.await();
                result = new float[] {a.get(15) - 2 * round, b.get(0), c.get(3)};
            }
            return result;
        });
        for (int r = 0; r < 8; r++) {
            int s = r / 4, e = r / 2 % 2, t = r % 2;
            float epSum = (s * 4 + t) + (s * 4 + 2 + t);
            float shardMax = 10f * ((2 + e) * 2 + t);
            float tpSum = (s * 4 + e * 2) + (s * 4 + e * 2 + 1);
            assertArrayEquals(new float[] {epSum, shardMax, tpSum}, got.get(r), 0f, "rank " + r);
        }
    }

    @Test
    void meshOfTheWrongSizeIsRejected() {
        Distributed.run(2, TIMEOUT, g -> {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> DeviceMesh.create(g, MeshShape.of(4, MeshSizes.defaults().ep(2))));
            assertEquals("mesh MeshShape(dp_shard=2, ep=2) is for 4 ranks but group 'world' has 2", e.getMessage());
            return null;
        });
    }

    @Test
    void flattenRefusesRepeatedDimensionsAndANameReusedForOtherDimensions() {
        Distributed.run(4, TIMEOUT, g -> {
            DeviceMesh mesh = DeviceMesh.create(g, MeshSizes.defaults().ep(2));
            var twice = assertThrows(IllegalArgumentException.class, () -> mesh.flatten("x", "ep", "ep"));
            assertTrue(twice.getMessage().contains("listed twice"), twice.getMessage());
            DeviceMesh data = mesh.flatten("data", "dp_shard", "ep");
            assertSame(data, mesh.flatten("data", "ep", "dp_shard"), "the same dimensions give the same mesh");
            var other = assertThrows(IllegalArgumentException.class, () -> mesh.flatten("data", "ep"));
            assertTrue(other.getMessage().contains("was made of dimensions"), other.getMessage());
            return null;
        });
    }
}
