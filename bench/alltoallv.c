/*
 * The reference for moe4j's MPI all-to-all: the same exchange as
 * moe4j.distributed.mpi.MpiAllToAllBenchmark, written directly in C.
 * Every rank sends S MiB split evenly over all ranks (itself included) with one MPI_Alltoallv of
 * MPI_FLOAT; each timed iteration starts after a barrier and lasts until the slowest rank is done.
 *
 *   mpirun -np P ./alltoallv ITERS MIB [MIB ...]
 *
 * Prints, on rank 0, one line per size:  c <P> <MiB> <best ms> <median ms> <GB/s per rank at best>
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, p;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &p);
    if (argc < 3) {
        if (rank == 0) fprintf(stderr, "usage: alltoallv ITERS MIB [MIB ...]\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    int iters = atoi(argv[1]);
    const int row = 1024; /* floats per row, as in the Java benchmark */
    for (int a = 2; a < argc; a++) {
        long mib = atol(argv[a]);
        long rows = (mib << 20) / (row * 4L);
        long elems = rows * row;
        float *in = malloc(elems * sizeof(float));
        float *out = malloc(elems * sizeof(float));
        memset(in, 1, elems * sizeof(float));
        memset(out, 0, elems * sizeof(float));
        int *sc = malloc(4 * p * sizeof(int));
        int *sd = sc + p, *rc = sc + 2 * p, *rd = sc + 3 * p;
        long off = 0;
        for (int j = 0; j < p; j++) {
            long r = rows / p + (j < rows % p ? 1 : 0);
            sc[j] = rc[j] = (int)(r * row);
            sd[j] = rd[j] = (int)off;
            off += r * row;
        }
        double *times = malloc(iters * sizeof(double));
        for (int w = 0; w < 2; w++) MPI_Alltoallv(in, sc, sd, MPI_FLOAT, out, rc, rd, MPI_FLOAT, MPI_COMM_WORLD);
        for (int it = 0; it < iters; it++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            MPI_Alltoallv(in, sc, sd, MPI_FLOAT, out, rc, rd, MPI_FLOAT, MPI_COMM_WORLD);
            double t = MPI_Wtime() - t0;
            MPI_Allreduce(&t, &times[it], 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        }
        qsort(times, iters, sizeof(double), cmp_double);
        if (rank == 0) {
            printf("c %d %ld %.4f %.4f %.3f\n", p, mib, times[0] * 1e3, times[iters / 2] * 1e3,
                   elems * 4.0 / times[0] / 1e9);
            fflush(stdout);
        }
        free(times);
        free(sc);
        free(in);
        free(out);
    }
    MPI_Finalize();
    return 0;
}
