/* STREAM-style triad in C with OpenMP: the yardstick solbench's host triad is held
 * against (scripts/stream-compare.sh). Same rules as STREAM: a[j] = b[j] + s*c[j] over
 * three arrays of N doubles, first touch in parallel, each iteration timed, the first
 * dropped, bytes counted as 3*N*8 (read + written, no write-allocate). Prints the best
 * and the median rate in GB/s (1e9 B/s). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1L << 25;
    int iters = argc > 2 ? atoi(argv[2]) : 50;
    double *a = malloc(n * sizeof(double)), *b = malloc(n * sizeof(double)), *c = malloc(n * sizeof(double));
    double *t = malloc(iters * sizeof(double));
    const double s = 0.4;
    if (!a || !b || !c || !t) { fprintf(stderr, "allocation failed\n"); return 2; }
#pragma omp parallel for schedule(static)
    for (long j = 0; j < n; j++) { a[j] = 0.0; b[j] = 1.0 + j % 7; c[j] = 2.0 + j % 5; }
    for (int k = 0; k < iters; k++) {
        double t0 = omp_get_wtime();
#pragma omp parallel for schedule(static)
        for (long j = 0; j < n; j++) a[j] = b[j] + s * c[j];
        t[k] = omp_get_wtime() - t0;
    }
    for (long j = 0; j < n; j += n / 97 + 1)
        if (a[j] != b[j] + s * c[j]) { fprintf(stderr, "wrong result at %ld\n", j); return 1; }
    qsort(t + 1, iters - 1, sizeof(double), cmp);
    double bytes = 3.0 * n * sizeof(double);
    printf("threads %d n %ld best_gbs %.3f median_gbs %.3f\n", omp_get_max_threads(), n, bytes / t[1] / 1e9, bytes / t[1 + (iters - 1) / 2] / 1e9);
    return 0;
}
