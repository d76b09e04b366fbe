/*
** dsinfer.i -- the one SWIG interface behind the Java, C# and Go bindings.
**
** It wraps include/dsinfer.h unchanged and adds a thin C layer (dsib_*) that each
** language's idiomatic classes (bindings/java, bindings/csharp, bindings/go) call:
**   - dsib_call: what one call left behind, captured in the same native call: the status,
**     a copy of dsi_last_error() and any bytes it returned (UTF-8 text, saved state).
**     Go needs this: a goroutine may change OS threads between two cgo calls, and the
**     message is per thread.
**   - out-pointers become return values; text crosses as bytes with a length (Java's JNI
**     strings are "modified UTF-8" and C# marshals the platform code page: neither is
**     UTF-8 for every character), token ids and logits as int32/float arrays.
**   - callbacks (load progress, log, abort) reach the language through one object per
**     session or context: a SWIG director (Java, C#) or a runtime/cgo.Handle (Go) passed
**     as the C user_data. The language keeps it alive while C may call it.
** Nothing here reaches the library's internals: only the public header.
*/
#if defined(SWIGJAVA)
%module(directors="1") dsinfer_native
#elif defined(SWIGCSHARP)
%module(directors="1") DsinferNative
#else
%module native
#endif

%{
#include <dsinfer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
%}

%include <stdint.i>

/* ---- the public header, as it is ------------------------------------------------ */
/* Wrapped by the dsib_* functions below (out-pointers, callbacks, pointers to C memory);
   the idiomatic layers use those. */
%ignore dsi_session_open;
%ignore dsi_context_create;
%ignore dsi_sampler_create;
%ignore dsi_sampler_sample;
%ignore dsi_sampler_sample_logits;
%ignore dsi_sampler_set_logit_bias;
%ignore dsi_context_fork;
%ignore dsi_context_logits;
%ignore dsi_context_tokens;
%ignore dsi_context_eval;
%ignore dsi_context_set_abort_callback;
%ignore dsi_context_save_state;
%ignore dsi_context_load_state;
%ignore dsi_context_save_state_file;
%ignore dsi_context_load_state_file;
%ignore dsi_session_eval_batch;
%ignore dsi_session_eog_tokens;
%ignore dsi_session_tokenizer;
%ignore dsi_session_cache_stats;
%ignore dsi_tokenizer_load;
%ignore dsi_tokenizer_token_id;
%ignore dsi_tokenizer_token_to_piece;
%ignore dsi_tokenize;
%ignore dsi_detokenize;
%ignore dsi_detokenizer_create;
%ignore dsi_detokenizer_push;
%ignore dsi_detokenizer_flush;
%ignore dsi_chat_render;
%ignore dsi_chat_parse;
%ignore dsi_chat_parser_create;
%ignore dsi_chat_parser_push;
%ignore dsi_chat_parser_finish;
%ignore dsi_log_set;
%ignore dsi_context_clear;
%ignore dsi_context_truncate;
%ignore dsi_sampler_reset;
%ignore dsi_free;
%ignore dsi_last_error;
%ignore dsi_batch_item;
%ignore dsi_logit_bias;
/* Set by dsib_session_open / dsib_context_create from the arguments they take. */
%ignore dsi_session_params::struct_size;
%ignore dsi_session_params::tokenizer_path;
%ignore dsi_session_params::progress;
%ignore dsi_session_params::progress_user_data;
%ignore dsi_session_params::log;
%ignore dsi_session_params::log_user_data;
%ignore dsi_context_params::struct_size;
%ignore dsi_context_params::abort_callback;
%ignore dsi_context_params::abort_user_data;
%ignore dsi_sampler_params::struct_size;

#if defined(SWIGJAVA) || defined(SWIGCSHARP)
%rename(SessionParams) dsi_session_params;
%rename(ContextParams) dsi_context_params;
%rename(SamplerParams) dsi_sampler_params;
%rename(ContextPerf) dsi_context_perf;
%rename(SamplerPerf) dsi_sampler_perf;
%rename(CacheStats) dsi_cache_stats;
#endif

/* ---- language typemaps: bytes, arrays ------------------------------------------- */
#if defined(SWIGJAVA)
%include <arrays_java.i>
/* Seeds as Java long (two's complement of the uint64). */
%apply int64_t { uint64_t };
/* Text as byte[] (java.swg's (const char *STRING, size_t LENGTH)); writable buffers too. */
%apply (const char *STRING, size_t LENGTH) { (const char *bytes, size_t n_bytes) };
%apply (char *STRING, size_t LENGTH) { (char *buf, size_t cap) };
%apply (const char *STRING, size_t LENGTH) { (const char *text, size_t length) };
/* Paths: NUL-terminated UTF-8 bytes (the Java layer appends the NUL); null is NULL. */
%typemap(jni) const char *path, const char *tokenizer_path "jbyteArray"
%typemap(jtype) const char *path, const char *tokenizer_path "byte[]"
%typemap(jstype) const char *path, const char *tokenizer_path "byte[]"
%typemap(javain) const char *path, const char *tokenizer_path "$javainput"
%typemap(in) const char *path, const char *tokenizer_path
%{ $1 = $input ? (char *)jenv->GetByteArrayElements($input, 0) : NULL; %}
%typemap(freearg) const char *path, const char *tokenizer_path
%{ if ($input) jenv->ReleaseByteArrayElements($input, (jbyte *)$1, JNI_ABORT); %}
%apply int[] { int32_t *ids_out };
%apply int[] { const int32_t *ids };
%apply float[] { float *logits_out };
%apply float[] { const float *logits };
%apply float[] { const float *biases };
%typemap(javafinalize) dsib_callbacks ""
#elif defined(SWIGCSHARP)
%include <arrays_csharp.i>
/* size_t as 64 bits (SWIG's C# default is uint): cache budgets and buffers above 4 GiB. */
%apply unsigned long long { size_t };
/* UTF-8 bytes in and out as byte[]: pinned by the marshaller, never converted through
   the platform code page. */
%typemap(ctype)  const char *bytes "const char *"
%typemap(imtype, inattributes="[global::System.Runtime.InteropServices.In, global::System.Runtime.InteropServices.MarshalAs(global::System.Runtime.InteropServices.UnmanagedType.LPArray)]") const char *bytes "byte[]"
%typemap(cstype) const char *bytes "byte[]"
%typemap(csin)   const char *bytes "$csinput"
%typemap(in)     const char *bytes "$1 = ($1_ltype)$input;"
%apply const char *bytes { const char *path, const char *tokenizer_path };
%typemap(ctype)  char *buf "char *"
%typemap(imtype, inattributes="[global::System.Runtime.InteropServices.Out, global::System.Runtime.InteropServices.MarshalAs(global::System.Runtime.InteropServices.UnmanagedType.LPArray)]") char *buf "byte[]"
%typemap(cstype) char *buf "byte[]"
%typemap(csin)   char *buf "$csinput"
%typemap(in)     char *buf "$1 = ($1_ltype)$input;"
/* A log line handed to a director: its address, decoded as UTF-8 by the C# layer. */
%typemap(ctype)  const char *utf8_line "const char *"
%typemap(imtype) const char *utf8_line "global::System.IntPtr"
%typemap(cstype) const char *utf8_line "global::System.IntPtr"
%typemap(directorin) const char *utf8_line "$input = $1;"
%typemap(csdirectorin) const char *utf8_line "$iminput"
%apply int INPUT[] { const int32_t *ids };
%apply int OUTPUT[] { int32_t *ids_out };
%apply float OUTPUT[] { float *logits_out };
%apply float INPUT[] { const float *logits };
%apply float INPUT[] { const float *biases };
#elif defined(SWIGGO)
/* Go strings are bytes: text in as string, bytes out as string (copied). Slices for
   ids and logits are passed as they are for the duration of the call. */
%apply (char *STRING, size_t LENGTH) { (const char *bytes, size_t n_bytes) };
%typemap(gotype) (int32_t *ids_out, size_t cap) "[]int32"
%typemap(in) (int32_t *ids_out, size_t cap) %{ $1 = (int32_t *)$input.array; $2 = (size_t)$input.len; %}
%typemap(gotype) (const int32_t *ids, size_t n_ids) "[]int32"
%typemap(in) (const int32_t *ids, size_t n_ids) %{ $1 = (int32_t *)$input.array; $2 = (size_t)$input.len; %}
%typemap(gotype) (float *logits_out, size_t cap) "[]float32"
%typemap(in) (float *logits_out, size_t cap) %{ $1 = (float *)$input.array; $2 = (size_t)$input.len; %}
%typemap(gotype) (const float *logits, size_t n_logits) "[]float32"
%typemap(in) (const float *logits, size_t n_logits) %{ $1 = (float *)$input.array; $2 = (size_t)$input.len; %}
%typemap(gotype) (const float *biases, size_t n_biases) "[]float32"
%typemap(in) (const float *biases, size_t n_biases) %{ $1 = (float *)$input.array; $2 = (size_t)$input.len; %}
%typemap(gotype) dsib_bytes "string"
%typemap(out, fragment="AllocateString") dsib_bytes %{ $result = Swig_AllocateString($1.data, $1.size); %}
%typemap(goout, fragment="CopyString") dsib_bytes %{ $result = swigCopyString($1) %}
#endif

/* The "typedef int dsi_status" of the header: a plain int in every language. */
%include "dsinfer.h"

/* ---- the binding layer ---------------------------------------------------------- */
%{
/* What one call left: status, message and bytes, captured in the same native call. */
typedef struct dsib_call {
    dsi_status status;
    char *message;   /* copy of dsi_last_error() when status != DSI_OK */
    char *bytes;     /* a text or buffer result, owned by the call */
    size_t n_bytes;
} dsib_call;

/* A view of bytes owned by a dsib_call (Go copies it into a string). */
typedef struct dsib_bytes {
    const char *data;
    size_t size;
} dsib_bytes;

/* A batch being built: items with copies of their ids. */
typedef struct dsib_batch {
    dsi_batch_item *items;
    size_t n, cap;
} dsib_batch;
%}
/* Opaque to the languages. */
typedef struct dsib_call dsib_call;
typedef struct dsib_bytes dsib_bytes;
typedef struct dsib_batch dsib_batch;

%{
static char *dsib_copy(const char *p, size_t n) {
    char *c = (char *)malloc(n + 1);
    if (c) {
        if (n) memcpy(c, p, n);
        c[n] = '\0';
    }
    return c;
}

static void dsib_reset(dsib_call *call) {
    free(call->message);
    free(call->bytes);
    call->message = NULL;
    call->bytes = NULL;
    call->n_bytes = 0;
    call->status = DSI_OK;
}

/* Records status (and, on failure, this thread's message) in call; returns status. */
static dsi_status dsib_done(dsib_call *call, dsi_status status) {
    if (!call) return status;
    call->status = status;
    if (status != DSI_OK) {
        const char *m = dsi_last_error();
        call->message = dsib_copy(m, strlen(m));
    }
    return status;
}

/* Moves a library-owned (dsi_free) result into call. */
static void dsib_take(dsib_call *call, char *owned, size_t n) {
    call->bytes = dsib_copy(owned ? owned : "", owned ? n : 0);
    call->n_bytes = owned ? n : 0;
    dsi_free(owned);
}
%}

%inline %{
dsib_call *dsib_call_new(void) { return (dsib_call *)calloc(1, sizeof(dsib_call)); }
void dsib_call_free(dsib_call *call) {
    if (!call) return;
    dsib_reset(call);
    free(call);
}
int dsib_call_status(const dsib_call *call) { return call ? call->status : DSI_ERR_INVALID_ARGUMENT; }
/* which: 0 = the message, 1 = the bytes. */
size_t dsib_call_size(const dsib_call *call, int which) {
    if (!call) return 0;
    if (which == 0) return call->message ? strlen(call->message) : 0;
    return call->n_bytes;
}
%}

#if defined(SWIGGO)
%inline %{
dsib_bytes dsib_call_get(const dsib_call *call, int which) {
    dsib_bytes b = {"", 0};
    if (!call) return b;
    if (which == 0 && call->message) { b.data = call->message; b.size = strlen(call->message); }
    if (which == 1 && call->bytes) { b.data = call->bytes; b.size = call->n_bytes; }
    return b;
}
%}
#else
%inline %{
/* Copies min(cap, size) bytes of the message (0) or the bytes (1) into buf. */
void dsib_call_copy(const dsib_call *call, int which, char *buf, size_t cap) {
    const char *src = NULL;
    size_t n = dsib_call_size(call, which);
    if (!call || !buf) return;
    src = which == 0 ? call->message : call->bytes;
    if (n > cap) n = cap;
    if (src && n) memcpy(buf, src, n);
}
%}
#endif

/* ---- callbacks ------------------------------------------------------------------ */
#if defined(SWIGGO)
%{
/* Exported by bindings/go/internal/native/callbacks.go; handle is a runtime/cgo.Handle. */
extern int dsibGoProgress(float fraction, uintptr_t handle);
extern void dsibGoLog(int level, char *message, size_t length, uintptr_t handle);
extern int dsibGoAbort(uintptr_t handle);
static int dsib_progress_tramp(float f, void *u) { return dsibGoProgress(f, (uintptr_t)u); }
static void dsib_log_tramp(dsi_log_level l, const char *m, void *u) {
    dsibGoLog((int)l, (char *)m, strlen(m), (uintptr_t)u);
}
static int dsib_abort_tramp(void *u) { return dsibGoAbort((uintptr_t)u); }
typedef uintptr_t dsib_cb;
#define DSIB_CB_PTR(cb) ((void *)(cb))
%}
typedef uintptr_t dsib_cb;
#else
%feature("director") dsib_callbacks;
%inline %{
/* Subclassed in the language; one object per session, context or process-wide sink. */
class dsib_callbacks {
public:
    virtual ~dsib_callbacks() {}
    /* Non-zero to go on, 0 to cancel the load. */
    virtual int progress(float fraction) { (void)fraction; return 1; }
#if defined(SWIGJAVA)
    virtual void log(int level, const char *text, size_t length) { (void)level; (void)text; (void)length; }
#else
    virtual void log(int level, const char *utf8_line) { (void)level; (void)utf8_line; }
#endif
    /* Non-zero to abort the evaluation. */
    virtual int abort_requested() { return 0; }
};
%}
%{
static int dsib_progress_tramp(float f, void *u) { return ((dsib_callbacks *)u)->progress(f); }
static void dsib_log_tramp(dsi_log_level l, const char *m, void *u) {
#if defined(SWIGJAVA)
    ((dsib_callbacks *)u)->log((int)l, m, strlen(m));
#else
    ((dsib_callbacks *)u)->log((int)l, m);
#endif
}
static int dsib_abort_tramp(void *u) { return ((dsib_callbacks *)u)->abort_requested(); }
typedef dsib_callbacks *dsib_cb;
#define DSIB_CB_PTR(cb) ((void *)(cb))
%}
typedef dsib_callbacks *dsib_cb;
#endif

%inline %{
#define DSIB_WANT_PROGRESS 1
#define DSIB_WANT_LOG 2
#define DSIB_WANT_ABORT 4

/* The process-wide log sink (dsi_log_set); cb 0/NULL turns it off. */
int dsib_log_set(dsib_cb cb, int min_level, dsib_call *call) {
    dsib_reset(call);
    if (!cb) return dsib_done(call, dsi_log_set(NULL, NULL, (dsi_log_level)min_level));
    return dsib_done(call, dsi_log_set(dsib_log_tramp, DSIB_CB_PTR(cb), (dsi_log_level)min_level));
}

/* ---- session ---- */
dsi_session *dsib_session_open(const char *bytes, size_t n_bytes, const dsi_session_params *params,
                               const char *tokenizer_path, dsib_cb cb, int want, dsib_call *call) {
    dsi_session_params p = dsi_session_default_params();
    dsi_session *s = NULL;
    char *dir = dsib_copy(bytes, n_bytes);
    dsib_reset(call);
    if (params) {
        p.backend = params->backend;
        p.n_threads = params->n_threads;
        p.gpu_device = params->gpu_device;
        p.log_level = params->log_level;
        p.cache_budget = params->cache_budget;
        p.gpu_precision = params->gpu_precision;
    }
    if (tokenizer_path && *tokenizer_path) p.tokenizer_path = tokenizer_path;
    if (cb && (want & DSIB_WANT_PROGRESS)) { p.progress = dsib_progress_tramp; p.progress_user_data = DSIB_CB_PTR(cb); }
    if (cb && (want & DSIB_WANT_LOG)) { p.log = dsib_log_tramp; p.log_user_data = DSIB_CB_PTR(cb); }
    dsib_done(call, dir ? dsi_session_open(dir, &p, &s) : DSI_ERR_NO_MEMORY);
    free(dir);
    return s;
}

/* The session's end-of-generation ids into ids_out (cap of them); returns how many. */
int32_t dsib_session_eog_tokens(const dsi_session *session, int32_t *ids_out, size_t cap) {
    return dsi_session_eog_tokens(session, ids_out, cap);
}

int dsib_session_cache_stats(const dsi_session *session, dsi_cache_stats *out, dsib_call *call) {
    dsib_reset(call);
    return dsib_done(call, dsi_session_cache_stats(session, out));
}

/* The session's tokenizer (owned by the session) or NULL. */
const dsi_tokenizer *dsib_session_tokenizer(const dsi_session *session) { return dsi_session_tokenizer(session); }

/* ---- batched evaluation ---- */
dsib_batch *dsib_batch_new(void) { return (dsib_batch *)calloc(1, sizeof(dsib_batch)); }
void dsib_batch_free(dsib_batch *b) {
    size_t i;
    if (!b) return;
    for (i = 0; i < b->n; ++i) free((void *)b->items[i].tokens);
    free(b->items);
    free(b);
}
/* Appends an item with a copy of the ids; 0 on success, DSI_ERR_NO_MEMORY otherwise. */
int dsib_batch_add(dsib_batch *b, dsi_context *ctx, const int32_t *ids, size_t n_ids, unsigned flags) {
    int32_t *copy;
    if (!b) return DSI_ERR_INVALID_ARGUMENT;
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 8;
        dsi_batch_item *items = (dsi_batch_item *)realloc(b->items, cap * sizeof(dsi_batch_item));
        if (!items) return DSI_ERR_NO_MEMORY;
        b->items = items;
        b->cap = cap;
    }
    copy = (int32_t *)malloc((n_ids ? n_ids : 1) * sizeof(int32_t));
    if (!copy) return DSI_ERR_NO_MEMORY;
    if (n_ids) memcpy(copy, ids, n_ids * sizeof(int32_t));
    b->items[b->n].ctx = ctx;
    b->items[b->n].tokens = copy;
    b->items[b->n].n_tokens = n_ids;
    b->items[b->n].flags = flags;
    b->n++;
    return DSI_OK;
}
int dsib_session_eval_batch(dsi_session *session, const dsib_batch *b, dsib_call *call) {
    dsib_reset(call);
    if (!b) return dsib_done(call, dsi_session_eval_batch(session, NULL, 0));
    return dsib_done(call, dsi_session_eval_batch(session, b->items, b->n));
}

/* ---- context ---- */
dsi_context *dsib_context_create(dsi_session *session, int32_t n_ctx, int32_t n_threads, dsib_cb cb,
                                 dsib_call *call) {
    dsi_context_params p = dsi_context_default_params();
    dsi_context *c = NULL;
    dsib_reset(call);
    p.n_ctx = n_ctx;
    p.n_threads = n_threads;
    if (cb) { p.abort_callback = dsib_abort_tramp; p.abort_user_data = DSIB_CB_PTR(cb); }
    dsib_done(call, dsi_context_create(session, &p, &c));
    return c;
}

dsi_context *dsib_context_fork(dsi_context *ctx, dsib_call *call) {
    dsi_context *c = NULL;
    dsib_reset(call);
    dsib_done(call, dsi_context_fork(ctx, &c));
    return c;
}

int dsib_context_set_abort(dsi_context *ctx, dsib_cb cb, dsib_call *call) {
    dsib_reset(call);
    if (!cb) return dsib_done(call, dsi_context_set_abort_callback(ctx, NULL, NULL));
    return dsib_done(call, dsi_context_set_abort_callback(ctx, dsib_abort_tramp, DSIB_CB_PTR(cb)));
}

int dsib_context_eval(dsi_context *ctx, const int32_t *ids, size_t n_ids, unsigned flags, dsib_call *call) {
    dsib_reset(call);
    return dsib_done(call, dsi_context_eval(ctx, ids, n_ids, flags));
}

/* Copies the logits of token `index` of the last eval into logits_out. cap must be the
   session's vocabulary size (the length of the library's array): the language layers
   size logits_out from dsi_session_n_vocab() of the context's session. */
int dsib_context_logits(dsi_context *ctx, int32_t index, float *logits_out, size_t cap, dsib_call *call) {
    const float *l;
    dsib_reset(call);
    l = dsi_context_logits(ctx, index);
    if (!l) return dsib_done(call, DSI_ERR_INVALID_ARGUMENT);
    memcpy(logits_out, l, cap * sizeof(float));
    return dsib_done(call, DSI_OK);
}

int dsib_context_clear(dsi_context *ctx, dsib_call *call) {
    dsib_reset(call);
    return dsib_done(call, dsi_context_clear(ctx));
}
int dsib_context_truncate(dsi_context *ctx, int32_t length, dsib_call *call) {
    dsib_reset(call);
    return dsib_done(call, dsi_context_truncate(ctx, length));
}
int dsib_sampler_reset(dsi_sampler *sampler, uint64_t seed, dsib_call *call) {
    dsib_reset(call);
    return dsib_done(call, dsi_sampler_reset(sampler, seed));
}

/* The token history into ids_out; returns the context's length. */
int32_t dsib_context_tokens(const dsi_context *ctx, int32_t *ids_out, size_t cap) {
    return dsi_context_tokens(ctx, ids_out, cap);
}

/* Saved state into call's bytes. */
int dsib_context_save_state(dsi_context *ctx, const dsi_sampler *sampler, dsib_call *call) {
    void *data = NULL;
    size_t size = 0;
    dsib_reset(call);
    if (dsib_done(call, dsi_context_save_state(ctx, sampler, &data, &size)) == DSI_OK)
        dsib_take(call, (char *)data, size);
    return call->status;
}
int dsib_context_load_state(dsi_context *ctx, const char *bytes, size_t n_bytes, dsi_sampler *sampler,
                            dsib_call *call) {
    dsib_reset(call);
    return dsib_done(call, dsi_context_load_state(ctx, bytes, n_bytes, sampler));
}
int dsib_context_save_state_file(dsi_context *ctx, const dsi_sampler *sampler, const char *path, dsib_call *call) {
    dsib_reset(call);
    return dsib_done(call, dsi_context_save_state_file(ctx, sampler, path));
}
int dsib_context_load_state_file(dsi_context *ctx, const char *path, dsi_sampler *sampler, dsib_call *call) {
    dsib_reset(call);
    return dsib_done(call, dsi_context_load_state_file(ctx, path, sampler));
}

/* ---- sampler ---- */
dsi_sampler *dsib_sampler_create(const dsi_sampler_params *params, dsib_call *call) {
    dsi_sampler_params p = dsi_sampler_default_params();
    dsi_sampler *s = NULL;
    dsib_reset(call);
    if (params) {
        size_t keep = p.struct_size;
        p = *params;
        p.struct_size = keep;
    }
    dsib_done(call, dsi_sampler_create(&p, &s));
    return s;
}

/* The next token, or -1 with call's status set. */
int32_t dsib_sampler_sample(dsi_sampler *sampler, dsi_context *ctx, dsib_call *call) {
    int32_t tok = -1;
    dsib_reset(call);
    if (dsib_done(call, dsi_sampler_sample(sampler, ctx, &tok)) != DSI_OK) return -1;
    return tok;
}

int32_t dsib_sampler_sample_logits(dsi_sampler *sampler, const float *logits, size_t n_logits,
                                   const int32_t *ids, size_t n_ids, dsib_call *call) {
    int32_t tok = -1;
    dsib_reset(call);
    if (dsib_done(call, dsi_sampler_sample_logits(sampler, logits, (int32_t)n_logits, n_ids ? ids : NULL,
                                                  n_ids, &tok)) != DSI_OK)
        return -1;
    return tok;
}

/* Replaces the logit bias: token ids[i] gets biases[i] (n_ids == n_biases). */
int dsib_sampler_set_logit_bias(dsi_sampler *sampler, const int32_t *ids, size_t n_ids, const float *biases,
                                size_t n_biases, dsib_call *call) {
    dsi_logit_bias *e = NULL;
    size_t i;
    int st;
    dsib_reset(call);
    if (n_ids != n_biases) return dsib_done(call, DSI_ERR_INVALID_ARGUMENT);
    if (n_ids) {
        e = (dsi_logit_bias *)malloc(n_ids * sizeof(dsi_logit_bias));
        if (!e) return dsib_done(call, DSI_ERR_NO_MEMORY);
        for (i = 0; i < n_ids; ++i) { e[i].token = ids[i]; e[i].bias = biases[i]; }
    }
    st = dsib_done(call, dsi_sampler_set_logit_bias(sampler, e, n_ids));
    free(e);
    return st;
}

/* ---- tokenizer ---- */
dsi_tokenizer *dsib_tokenizer_load(const char *path, dsib_call *call) {
    dsi_tokenizer *t = NULL;
    dsib_reset(call);
    dsib_done(call, dsi_tokenizer_load(path, &t));
    return t;
}

int32_t dsib_tokenizer_token_id(const dsi_tokenizer *tok, const char *bytes, size_t n_bytes) {
    char *s = dsib_copy(bytes, n_bytes);
    int32_t id = s ? dsi_tokenizer_token_id(tok, s) : -1;
    free(s);
    return id;
}

/* The value of a config.json key (by its name, as dsi_config_key names it); -1 for a
** name that is not one of those keys or a NULL session. */
int64_t dsib_session_config_value(const dsi_session *session, const char *bytes, size_t n_bytes) {
    static const char *const names[] = {
        "vocab_size", "hidden_size", "num_hidden_layers", "first_k_dense_replace",
        "num_attention_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
        "qk_rope_head_dim", "v_head_dim", "intermediate_size", "moe_intermediate_size",
        "n_routed_experts", "n_shared_experts", "num_experts_per_tok", "index_n_heads",
        "index_head_dim", "index_topk", "max_position_embeddings"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if (bytes && strlen(names[k]) == n_bytes && memcmp(names[k], bytes, n_bytes) == 0)
            return dsi_session_config_value(session, (dsi_config_key)k);
    return -1;
}

/* A token's raw bytes into call's bytes. */
int dsib_tokenizer_token_to_piece(const dsi_tokenizer *tok, int32_t id, dsib_call *call) {
    size_t n = 0;
    dsi_status st;
    dsib_reset(call);
    st = dsi_tokenizer_token_to_piece(tok, id, NULL, 0, &n);
    if (st != DSI_OK && st != DSI_ERR_BUFFER_TOO_SMALL) return dsib_done(call, st);
    call->bytes = (char *)malloc(n + 1);
    if (!call->bytes) return dsib_done(call, DSI_ERR_NO_MEMORY);
    call->n_bytes = n;
    return dsib_done(call, dsi_tokenizer_token_to_piece(tok, id, call->bytes, n + 1, &n));
}

/* Encodes UTF-8 bytes: writes up to cap ids and returns the number the text needs (call
   the second time with a large enough array), or -1 with call's status set. */
int64_t dsib_tokenize(const dsi_tokenizer *tok, const char *bytes, size_t n_bytes, unsigned flags,
                      int32_t *ids_out, size_t cap, dsib_call *call) {
    size_t n = 0;
    dsi_status st;
    dsib_reset(call);
    st = dsi_tokenize(tok, bytes, n_bytes, flags, cap ? ids_out : NULL, cap, &n);
    if (st == DSI_ERR_BUFFER_TOO_SMALL) return (int64_t)n;
    if (dsib_done(call, st) != DSI_OK) return -1;
    return (int64_t)n;
}

/* Decodes ids into call's bytes (UTF-8). */
int dsib_detokenize(const dsi_tokenizer *tok, const int32_t *ids, size_t n_ids, unsigned flags, dsib_call *call) {
    size_t n = 0;
    dsi_status st;
    dsib_reset(call);
    st = dsi_detokenize(tok, n_ids ? ids : NULL, n_ids, flags, NULL, 0, &n);
    if (st != DSI_OK && st != DSI_ERR_BUFFER_TOO_SMALL) return dsib_done(call, st);
    call->bytes = (char *)malloc(n + 1);
    if (!call->bytes) return dsib_done(call, DSI_ERR_NO_MEMORY);
    call->n_bytes = n;
    return dsib_done(call, dsi_detokenize(tok, n_ids ? ids : NULL, n_ids, flags, call->bytes, n + 1, &n));
}

dsi_detokenizer *dsib_detokenizer_create(const dsi_tokenizer *tok, unsigned flags, dsib_call *call) {
    dsi_detokenizer *d = NULL;
    dsib_reset(call);
    dsib_done(call, dsi_detokenizer_create(tok, flags, &d));
    return d;
}

/* push (id >= 0) or flush (id < 0): the completed text into call's bytes. */
int dsib_detokenizer_next(dsi_detokenizer *detok, int32_t id, dsib_call *call) {
    const char *text = NULL;
    size_t n = 0;
    dsi_status st;
    dsib_reset(call);
    st = id >= 0 ? dsi_detokenizer_push(detok, id, &text, &n) : dsi_detokenizer_flush(detok, &text, &n);
    if (dsib_done(call, st) == DSI_OK) {
        call->bytes = dsib_copy(text ? text : "", text ? n : 0);
        call->n_bytes = text ? n : 0;
    }
    return call->status;
}

/* ---- chat ---- */
int dsib_chat_render(const char *bytes, size_t n_bytes, unsigned flags, dsib_call *call) {
    char *out = NULL;
    size_t n = 0;
    dsib_reset(call);
    if (dsib_done(call, dsi_chat_render(bytes, n_bytes, flags, &out, &n)) == DSI_OK) dsib_take(call, out, n);
    return call->status;
}
int dsib_chat_parse(const char *bytes, size_t n_bytes, unsigned flags, dsib_call *call) {
    char *out = NULL;
    size_t n = 0;
    dsib_reset(call);
    if (dsib_done(call, dsi_chat_parse(bytes, n_bytes, flags, &out, &n)) == DSI_OK) dsib_take(call, out, n);
    return call->status;
}
dsi_chat_parser *dsib_chat_parser_create(unsigned flags, dsib_call *call) {
    dsi_chat_parser *p = NULL;
    dsib_reset(call);
    dsib_done(call, dsi_chat_parser_create(flags, &p));
    return p;
}
/* The events JSON array into call's bytes. */
int dsib_chat_parser_push(dsi_chat_parser *parser, const char *bytes, size_t n_bytes, dsib_call *call) {
    char *events = NULL;
    dsib_reset(call);
    if (dsib_done(call, dsi_chat_parser_push(parser, bytes, n_bytes, &events)) == DSI_OK)
        dsib_take(call, events, strlen(events));
    return call->status;
}
/* Ends the reply: call's bytes hold {"events": [...], "result": {...}}. */
int dsib_chat_parser_finish(dsi_chat_parser *parser, dsib_call *call) {
    char *events = NULL, *result = NULL;
    dsib_reset(call);
    if (dsib_done(call, dsi_chat_parser_finish(parser, &events, &result)) == DSI_OK) {
        size_t ne = strlen(events), nr = strlen(result);
        char *both = (char *)malloc(ne + nr + 32);
        if (!both) {
            dsi_free(events);
            dsi_free(result);
            return dsib_done(call, DSI_ERR_NO_MEMORY);
        }
        strcpy(both, "{\"events\": ");
        strcat(both, events);
        strcat(both, ", \"result\": ");
        strcat(both, result);
        strcat(both, "}");
        dsi_free(events);
        dsi_free(result);
        call->bytes = both;
        call->n_bytes = strlen(both);
    }
    return call->status;
}
%}
