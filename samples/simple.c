/*
** simple.c -- the smallest complete use of dsinfer in C99: open a model, evaluate a
** few token ids, and greedy-decode a continuation.
**
**   usage: dsinfer_simple MODEL_DIR [N_TOKENS]
**
** Prints the generated ids on one line. Every failure prints the library's message.
*/
#include "dsinfer.h"

#include <stdio.h>
#include <stdlib.h>

static int report(const char *what, dsi_status status) {
    fprintf(stderr, "dsinfer_simple: %s failed: %s: %s\n", what, dsi_status_name(status), dsi_last_error());
    return 1;
}

int main(int argc, char **argv) {
    dsi_session *session = NULL;
    dsi_context *ctx = NULL;
    dsi_sampler *sampler = NULL;
    dsi_status status;
    int rc = 1;
    int n_tokens = 8;
    int32_t prompt[4];
    int i;

    /* A header from one version with a library from another would misread structs. */
    if (dsi_version_number() != DSI_VERSION_NUMBER) {
        fprintf(stderr, "dsinfer_simple: built for dsinfer %s but running with %s\n", DSI_VERSION, dsi_version());
        return 1;
    }
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s MODEL_DIR [N_TOKENS]\n", argv[0]);
        return 2;
    }
    if (argc == 3) {
        char *end = NULL;
        long n = strtol(argv[2], &end, 10);
        if (*argv[2] == '\0' || *end != '\0' || n < 1 || n > 100000) {
            fprintf(stderr, "dsinfer_simple: N_TOKENS must be an integer in [1, 100000]\n");
            return 2;
        }
        n_tokens = (int)n;
    }

    status = dsi_session_open(argv[1], NULL, &session);
    if (status != DSI_OK) return report("dsi_session_open", status);

    /* The BOS token (or 0) and three ids that exist in any vocabulary of 4 or more. */
    prompt[0] = dsi_session_bos_token(session) >= 0 ? dsi_session_bos_token(session) : 0;
    prompt[1] = 1;
    prompt[2] = 2;
    prompt[3] = 3;

    {
        dsi_context_params cp = dsi_context_default_params();
        dsi_sampler_params sp = dsi_sampler_default_params();
        cp.n_ctx = 4 + n_tokens;
        sp.temperature = 0.0f; /* greedy */
        status = dsi_context_create(session, &cp, &ctx);
        if (status != DSI_OK) {
            report("dsi_context_create", status);
            goto done;
        }
        status = dsi_sampler_create(&sp, &sampler);
        if (status != DSI_OK) {
            report("dsi_sampler_create", status);
            goto done;
        }
    }

    status = dsi_context_eval(ctx, prompt, 4, DSI_EVAL_LOGITS_LAST);
    if (status != DSI_OK) {
        report("dsi_context_eval", status);
        goto done;
    }
    for (i = 0; i < n_tokens; ++i) {
        int32_t token;
        status = dsi_sampler_sample(sampler, ctx, &token);
        if (status != DSI_OK) {
            report("dsi_sampler_sample", status);
            goto done;
        }
        printf(i ? " %d" : "%d", (int)token);
        status = dsi_context_eval(ctx, &token, 1, DSI_EVAL_LOGITS_LAST);
        if (status != DSI_OK) {
            report("dsi_context_eval", status);
            goto done;
        }
    }
    printf("\n");
    rc = 0;

done:
    dsi_sampler_free(sampler);
    dsi_context_free(ctx);
    dsi_session_free(session);
    return rc;
}
