/*
** bench_engine: prefill and decode speed of a model on one backend, through the
** public API only. Prints one Markdown table row (see docs/PERF.md).
**
**   bench_engine MODEL_DIR [threads=2] [prompt_tokens=200] [decode_tokens=64] [backend=cpu]
**                [gpu_precision=fast]
**
** The prompt is a fixed pseudo-random sequence of ids (the speed does not depend on
** which ids); decode is greedy, one KV-cached token per step.
*/
#include <dsinfer.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const char *what) {
    fprintf(stderr, "bench_engine: %s: %s\n", what, dsi_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [threads] [prompt_tokens] [decode_tokens] [cpu|cuda] [fast|f32]\n",
                argv[0]);
        return 2;
    }
    const int threads = argc > 2 ? atoi(argv[2]) : 2;
    const int n_prompt = argc > 3 ? atoi(argv[3]) : 200;
    const int n_decode = argc > 4 ? atoi(argv[4]) : 64;
    const int cuda = argc > 5 && strcmp(argv[5], "cuda") == 0;
    const int f32 = argc > 6 && strcmp(argv[6], "f32") == 0;

    dsi_session_params sp = dsi_session_default_params();
    sp.backend = cuda ? DSI_BACKEND_CUDA : DSI_BACKEND_CPU;
    sp.n_threads = threads;
    sp.gpu_precision = f32 ? DSI_GPU_PRECISION_F32 : DSI_GPU_PRECISION_FAST;
    dsi_session *s = NULL;
    double t0 = now_s();
    if (dsi_session_open(argv[1], &sp, &s) != DSI_OK) return fail("open");
    const double load_s = now_s() - t0;

    const int32_t vocab = dsi_session_n_vocab(s);
    dsi_context_params cp = dsi_context_default_params();
    cp.n_ctx = n_prompt + n_decode;
    dsi_context *ctx = NULL;
    if (dsi_context_create(s, &cp, &ctx) != DSI_OK) return fail("context");

    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n_prompt);
    uint32_t x = 12345u;
    for (int i = 0; i < n_prompt; ++i) {
        x = x * 1664525u + 1013904223u;
        ids[i] = (int32_t)((x >> 8) % (uint32_t)vocab);
    }
    t0 = now_s();
    if (dsi_context_eval(ctx, ids, (size_t)n_prompt, DSI_EVAL_LOGITS_LAST) != DSI_OK) return fail("prefill");
    const double prefill_s = now_s() - t0;

    t0 = now_s();
    for (int i = 0; i < n_decode; ++i) {
        const float *l = dsi_context_logits(ctx, -1);
        int32_t best = 0;
        for (int32_t v = 1; v < vocab; ++v)
            if (l[v] > l[best]) best = v;
        if (dsi_context_eval(ctx, &best, 1, DSI_EVAL_LOGITS_LAST) != DSI_OK) return fail("decode");
    }
    const double decode_s = now_s() - t0;

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("| %s | %d | %d | %.1f | %d | %.1f | %.2f | %.1f |\n", argv[1], threads, n_prompt,
           n_prompt / prefill_s, n_decode, n_decode / decode_s, load_s, ru.ru_maxrss / 1024.0);
    free(ids);
    dsi_context_free(ctx);
    dsi_session_free(s);
    return 0;
}
