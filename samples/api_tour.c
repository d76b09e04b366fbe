/* The newer calls of dsinfer.h in 20 lines (built by tests/install_test.sh). Usage: api_tour MODEL_DIR */
#include <dsinfer.h>
#include <math.h>
#include <stdio.h>
static void sink(dsi_log_level level, const char *msg, void *user) { (void)user; printf("[log %d] %s\n", (int)level, msg); }
int main(int argc, char **argv) {
    dsi_session *s; dsi_context *c; dsi_sampler *smp; int32_t tok = 3, i;
    printf("dsinfer %s, revision %s, CUDA usable: %d\n", dsi_version(), dsi_source_revision(), dsi_backend_available(DSI_BACKEND_CUDA));
    dsi_log_set(sink, NULL, DSI_LOG_INFO);                  /* process-wide log sink */
    if (argc < 2 || dsi_session_open(argv[1], NULL, &s) != DSI_OK) return 1;
    printf("%lld params, %lld weight bytes, %lld cache bytes/token, index_topk %lld\n", (long long)dsi_session_n_params(s),
           (long long)dsi_session_weight_bytes(s), (long long)dsi_session_cache_bytes(s, 64) / 64, (long long)dsi_session_config_value(s, DSI_CONFIG_INDEX_TOPK));
    if (dsi_context_create(s, NULL, &c) != DSI_OK || dsi_sampler_create(NULL, &smp) != DSI_OK) return 1;
    dsi_logit_bias never_eos = {dsi_session_eos_token(s), -INFINITY};
    dsi_sampler_set_logit_bias(smp, &never_eos, 1);         /* what --ignore-eos does */
    dsi_session_free(s);                                    /* safe: the context keeps the model */
    for (i = 0; i < 8; ++i) if (dsi_context_eval(c, &tok, 1, 0) || dsi_sampler_sample(smp, c, &tok)) return 1;
    dsi_context_perf p = dsi_context_perf_get(c);
    printf("%lld decode steps in %.2f ms; context caches %lld bytes\n", (long long)p.decode_tokens, p.decode_ms, (long long)dsi_context_cache_bytes(c));
    dsi_sampler_free(smp); dsi_context_free(c); return 0;
}
