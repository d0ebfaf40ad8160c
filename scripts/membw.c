// Memory read bandwidth probe for scripts/bench: the decode-speed ceiling of a language model is
// (bytes of weights read per token) / (bandwidth), and this measures the bandwidth on this
// machine the way decode uses it: several threads each streaming through their share of a
// buffer far larger than the caches.
//
//   gcc -O3 -march=x86-64-v3 -pthread -o target/membw scripts/membw.c
//   target/membw [MiB=1024] [threads=1] [passes=5]
//
// Prints one JSON object: {"mib":..,"threads":..,"passes":..,"best_gbs":..,"median_gbs":..}
// (GB = 1e9 bytes). Each pass: all threads start together (barrier), each sums its slice with
// wide vector loads, the pass time is the slowest thread's. The buffer is written once before
// timing, so every page is mapped.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const uint64_t *p;
    size_t n;          // uint64 elements
    uint64_t sum;      // keeps the loads alive
    int passes;
    double *secs;      // per pass
    pthread_barrier_t *start, *end;
} job_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t sum_slice(const uint64_t *p, size_t n) {
    // Eight independent accumulators: the compiler turns this into 256-bit loads and adds.
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        a0 += p[i + 0]; a1 += p[i + 1]; a2 += p[i + 2]; a3 += p[i + 3];
        a4 += p[i + 4]; a5 += p[i + 5]; a6 += p[i + 6]; a7 += p[i + 7];
    }
    for (; i < n; i++) a0 += p[i];
    return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}

static void *worker(void *arg) {
    job_t *j = arg;
    for (int k = 0; k < j->passes; k++) {
        pthread_barrier_wait(j->start);
        double t0 = now();
        j->sum += sum_slice(j->p, j->n);
        j->secs[k] = now() - t0;
        pthread_barrier_wait(j->end);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 1024;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    int passes = argc > 3 ? atoi(argv[3]) : 5;
    if (mib < 1 || threads < 1 || threads > 1024 || passes < 1 || passes > 1000) {
        fprintf(stderr, "usage: %s [MiB>=1] [threads 1..1024] [passes 1..1000]\n", argv[0]);
        return 2;
    }
    size_t bytes = mib << 20;
    uint64_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, bytes) != 0) {
        fprintf(stderr, "membw: cannot allocate %zu MiB\n", mib);
        return 1;
    }
    size_t n = bytes / sizeof(uint64_t);
    for (size_t i = 0; i < n; i++) buf[i] = i * 0x9E3779B97F4A7C15ull;

    pthread_barrier_t start, end;
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&end, NULL, (unsigned)threads + 1);
    job_t *jobs = calloc((size_t)threads, sizeof(job_t));
    pthread_t *tids = calloc((size_t)threads, sizeof(pthread_t));
    double *all = calloc((size_t)threads * (size_t)passes, sizeof(double));
    size_t per = n / (size_t)threads;
    for (int t = 0; t < threads; t++) {
        jobs[t].p = buf + per * (size_t)t;
        jobs[t].n = t == threads - 1 ? n - per * (size_t)t : per;
        jobs[t].passes = passes;
        jobs[t].secs = all + (size_t)t * (size_t)passes;
        jobs[t].start = &start;
        jobs[t].end = &end;
        pthread_create(&tids[t], NULL, worker, &jobs[t]);
    }
    double *pass_secs = calloc((size_t)passes, sizeof(double));
    for (int k = 0; k < passes; k++) {
        pthread_barrier_wait(&start);
        double t0 = now();
        pthread_barrier_wait(&end);
        pass_secs[k] = now() - t0;  // start to the last thread done
    }
    uint64_t sum = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(tids[t], NULL);
        sum += jobs[t].sum;
    }
    qsort(pass_secs, (size_t)passes, sizeof(double), cmp_double);
    double best = (double)bytes / pass_secs[0] / 1e9;
    double median = (double)bytes / pass_secs[passes / 2] / 1e9;
    printf("{\"mib\": %zu, \"threads\": %d, \"passes\": %d, \"best_gbs\": %.3f, \"median_gbs\": %.3f, "
           "\"checksum\": %llu}\n",
           mib, threads, passes, best, median, (unsigned long long)(sum & 0xffff));
    free(pass_secs);
    free(all);
    free(tids);
    free(jobs);
    free(buf);
    return 0;
}
