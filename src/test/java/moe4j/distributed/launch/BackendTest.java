package moe4j.distributed.launch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import moe4j.distributed.ProcessGroup;
import org.junit.jupiter.api.Test;

class BackendTest {
    @Test
    void mpiIsDetectedFromTheLaunchersEnvironment() {
        assertEquals(Backend.MPI, Backend.detect(Map.of("OMPI_COMM_WORLD_SIZE", "4")));
        assertEquals(Backend.MPI, Backend.detect(Map.of("PMI_SIZE", "2")));
        assertEquals(Backend.MPI, Backend.detect(Map.of("PMIX_RANK", "0")));
        assertEquals(Backend.MPI, Backend.detect(Map.of("SLURM_PROCID", "0", "SLURM_STEP_ID", "3")));
        // a batch script's own shell has SLURM_NTASKS but is no rank
        assertEquals(Backend.LOCAL, Backend.detect(Map.of("SLURM_NTASKS", "4", "SLURM_PROCID", "0")));
        assertEquals(Backend.LOCAL, Backend.detect(Map.of()));
    }

    @Test
    void parseAcceptsTheFourNamesInAnyCase() {
        assertEquals(Backend.MPI, Backend.parse("MPI"));
        assertEquals(Backend.LOCAL, Backend.parse(" local "));
        assertEquals(Backend.NCCL, Backend.parse("Nccl"));
        assertEquals(Backend.detect(), Backend.parse("auto"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Backend.parse("gloo"));
        assertTrue(e.getMessage().contains("'gloo'") && e.getMessage().contains("local, mpi, nccl or auto"), e.getMessage());
    }

    @Test
    void autoChoosesNcclWhenTheRanksComputeOnGpus() {
        assertEquals(Backend.NCCL, Backend.parse("auto", true));
        assertEquals(Backend.detect(), Backend.parse("auto", false));
        assertEquals(Backend.MPI, Backend.parse("mpi", true)); // an explicit choice stands
    }

    @Test
    void theNodeLocalRankComesFromTheLaunchersVariables() {
        assertEquals(1, Backend.localRank(Map.of("OMPI_COMM_WORLD_LOCAL_RANK", "1")));
        assertEquals(3, Backend.localRank(Map.of("SLURM_LOCALID", " 3 ")));
        assertEquals(-1, Backend.localRank(Map.of("OMPI_COMM_WORLD_RANK", "5")));
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> Backend.localRank(Map.of("MPI_LOCALRANKID", "x")));
        assertTrue(e.getMessage().contains("MPI_LOCALRANKID='x'"), e.getMessage());
    }

    @Test
    void localRunsEveryRankInThisJvm() {
        List<Integer> ranks = Backend.LOCAL.run(3, Duration.ofSeconds(20), ProcessGroup::rank);
        assertEquals(List.of(0, 1, 2), ranks);
    }
}
