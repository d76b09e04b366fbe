/*
** bench_engine: prefill and decode speed of a model on one backend, through the
** public API only. Prints one Markdown table row (see docs/PERF.md).
**
**   bench_engine MODEL_DIR [threads=2] [prompt_tokens=200] [decode_tokens=64] [backend=cpu]
**                [gpu_precision=fast] [sequences=1]
**
** Each of `sequences` contexts gets its own fixed pseudo-random prompt of prompt_tokens
** ids (the speed does not depend on which ids). One sequence: dsi_context_eval, a
** prefill then greedy decode, one KV-cached token per step. Several: every prompt in one
** dsi_session_eval_batch (sequences x prompt_tokens tokens), then each decode step one
** eval_batch advancing every sequence by its greedy token. The workload runs twice and the
** second run is timed, so one-time costs (GPU pools, cuBLASLt plans) stay out; its prompts
** are other ids, so the session's prefix cache cannot serve them.
** Columns: model, backend, threads, sequences, prompt tokens in all, prefill tok/s, decode
** steps, decode tok/s (tokens of all sequences), session load s, peak RSS MiB.
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

static int32_t argmax(const float *l, int32_t n) {
    int32_t best = 0;
    for (int32_t v = 1; v < n; ++v)
        if (l[v] > l[best]) best = v;
    return best;
}

/* One prefill + decode of n_seq sequences with prompts drawn from `seed`; their times in
** *prefill_s / *decode_s. */
static int run(dsi_session *s, uint32_t seed, int n_seq, int n_prompt, int n_decode, double *prefill_s, double *decode_s) {
    const int32_t vocab = dsi_session_n_vocab(s);
    dsi_context_params cp = dsi_context_default_params();
    cp.n_ctx = n_prompt + n_decode;
    dsi_context **ctx = calloc((size_t)n_seq, sizeof(*ctx));
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n_seq * (size_t)n_prompt);
    int32_t *next = malloc(sizeof(int32_t) * (size_t)n_seq);
    dsi_batch_item *items = malloc(sizeof(dsi_batch_item) * (size_t)n_seq);
    int rc = 1;
    uint32_t x = seed;
    for (int i = 0; i < n_seq * n_prompt; ++i) {
        x = x * 1664525u + 1013904223u;
        ids[i] = (int32_t)((x >> 8) % (uint32_t)vocab);
    }
    for (int q = 0; q < n_seq; ++q)
        if (dsi_context_create(s, &cp, &ctx[q]) != DSI_OK) {
            rc = fail("context");
            goto done;
        }
    double t0 = now_s();
    if (n_seq == 1) {
        if (dsi_context_eval(ctx[0], ids, (size_t)n_prompt, DSI_EVAL_LOGITS_LAST) != DSI_OK) {
            rc = fail("prefill");
            goto done;
        }
    } else {
        for (int q = 0; q < n_seq; ++q) {
            dsi_batch_item it = {ctx[q], ids + (size_t)q * (size_t)n_prompt, (size_t)n_prompt, DSI_EVAL_LOGITS_LAST};
            items[q] = it;
        }
        if (dsi_session_eval_batch(s, items, (size_t)n_seq) != DSI_OK) {
            rc = fail("batched prefill");
            goto done;
        }
    }
    *prefill_s = now_s() - t0;
    t0 = now_s();
    for (int step = 0; step < n_decode; ++step) {
        for (int q = 0; q < n_seq; ++q) {
            next[q] = argmax(dsi_context_logits(ctx[q], -1), vocab);
            dsi_batch_item it = {ctx[q], &next[q], 1, DSI_EVAL_LOGITS_LAST};
            items[q] = it;
        }
        const dsi_status st = n_seq == 1 ? dsi_context_eval(ctx[0], &next[0], 1, DSI_EVAL_LOGITS_LAST)
                                         : dsi_session_eval_batch(s, items, (size_t)n_seq);
        if (st != DSI_OK) {
            rc = fail("decode");
            goto done;
        }
    }
    *decode_s = now_s() - t0;
    rc = 0;
done:
    for (int q = 0; q < n_seq; ++q) dsi_context_free(ctx[q]);
    free(ctx);
    free(ids);
    free(next);
    free(items);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [threads] [prompt_tokens] [decode_tokens] [cpu|cuda] [fast|f32] [sequences]\n",
                argv[0]);
        return 2;
    }
    const int threads = argc > 2 ? atoi(argv[2]) : 2;
    const int n_prompt = argc > 3 ? atoi(argv[3]) : 200;
    const int n_decode = argc > 4 ? atoi(argv[4]) : 64;
    const int cuda = argc > 5 && strcmp(argv[5], "cuda") == 0;
    const int f32 = argc > 6 && strcmp(argv[6], "f32") == 0;
    const int n_seq = argc > 7 ? atoi(argv[7]) : 1;
    if (n_seq < 1 || n_prompt < 1 || n_decode < 0) {
        fprintf(stderr, "bench_engine: sequences and prompt_tokens must be >= 1, decode_tokens >= 0\n");
        return 2;
    }

    dsi_session_params sp = dsi_session_default_params();
    sp.backend = cuda ? DSI_BACKEND_CUDA : DSI_BACKEND_CPU;
    sp.n_threads = threads;
    sp.gpu_precision = f32 ? DSI_GPU_PRECISION_F32 : DSI_GPU_PRECISION_FAST;
    dsi_session *s = NULL;
    const double t0 = now_s();
    if (dsi_session_open(argv[1], &sp, &s) != DSI_OK) return fail("open");
    const double load_s = now_s() - t0;

    double prefill_s = 0, decode_s = 0;
    for (int pass = 0; pass < 2; ++pass)
        if (run(s, 12345u + 7919u * (uint32_t)pass, n_seq, n_prompt, n_decode, &prefill_s, &decode_s) != 0) return 1;

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double total_prompt = (double)n_seq * n_prompt;
    printf("| %s | %s | %d | %d | %.0f | %.1f | %d | %.1f | %.2f | %.1f |\n", argv[1],
           cuda ? (f32 ? "cuda f32" : "cuda fast") : "cpu", threads, n_seq, total_prompt, total_prompt / prefill_s,
           n_decode, decode_s > 0 ? n_seq * n_decode / decode_s : 0.0, load_s, ru.ru_maxrss / 1024.0);
    dsi_session_free(s);
    return 0;
}
