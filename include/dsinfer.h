/*
** dsinfer.h -- the public C API of dsinfer, an embeddable inference library for
** DeepSeek-V3.2 (DeepSeek Sparse Attention) and dense DeepSeek-V3/V3.1 models.
**
** This header is the only ABI of the library. It is C99 and self-contained, and SWIG
** parses it as it is (DSI_API is empty when SWIG is defined).
**
** Objects (all opaque):
**   dsi_session      a loaded model on a backend (weights, tokenizer). Immutable
**                    once opened; shared by any number of contexts and threads.
**   dsi_context      one sequence: its token history, KV and indexer caches and
**                    the logits of the last evaluation. One thread at a time.
**   dsi_sampler      a sampling chain with its own random state. One thread at a time.
**   dsi_tokenizer    a Hugging Face tokenizer.json (BPE). Immutable, thread-safe.
**   dsi_detokenizer  streaming ids -> UTF-8 text. One thread at a time.
**   dsi_chat_parser  incremental parser of model output (reasoning, text, tool calls).
**
** Conventions (tests/test_header_rules.cpp holds each of them):
**   - Functions that can fail return a dsi_status; DSI_OK is 0. On failure the calling
**     thread's message, dsi_last_error(), names the problem (file, tensor, position,
**     value). The exceptions return a value instead, and each says which value means
**     failure: dsi_context_logits() returns NULL and sets the message; lookups such as
**     dsi_tokenizer_token_id() return -1 ("not found" is not an error there).
**   - Results written through out-pointers are only valid on DSI_OK; a function that
**     creates an object sets *out to NULL when it fails.
**   - Passing NULL where a handle is required returns DSI_ERR_INVALID_ARGUMENT; the
**     accessors that return a value document what they return for NULL.
**   - Every *_free() function accepts NULL as a harmless no-op.
**   - Handles may be freed in any order. A session lives on, invisibly, while a context
**     created from it does; a detokenizer keeps its tokenizer's data alive. Memory goes
**     when the last user goes (as SQLite's sqlite3_close_v2 does). Using a handle after
**     freeing it is still an error of the caller.
**   - Params structs begin with `struct_size`; always initialise them with the
**     matching dsi_*_default_params() so that fields added in later versions get
**     their defaults. Fields are only ever appended.
**   - Strings are UTF-8. Strings returned as `char **` are owned by the caller and
**     must be freed with dsi_free().
**   - No C++ exception ever leaves the library.
*/
#ifndef DSINFER_H
#define DSINFER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SWIG)
#  define DSI_API
#elif defined(_WIN32) && !defined(__GNUC__)
#  ifdef DSINFER_BUILD
#    define DSI_API __declspec(dllexport)
#  else
#    define DSI_API __declspec(dllimport)
#  endif
#else
#  define DSI_API __attribute__((visibility("default")))
#endif

/* ==================================================================================
** Version
** ================================================================================*/

#define DSI_VERSION_MAJOR 0
#define DSI_VERSION_MINOR 1
#define DSI_VERSION_PATCH 0
#define DSI_VERSION "0.1.0"
/* MAJOR*1000000 + MINOR*1000 + PATCH */
#define DSI_VERSION_NUMBER 1000

/*
** The version of the library actually linked, as "MAJOR.MINOR.PATCH": a static string,
** never NULL. Thread-safe; never fails.
*/
DSI_API const char *dsi_version(void);

/*
** The version of the library actually linked as MAJOR*1000000 + MINOR*1000 + PATCH. An
** application may assert dsi_version_number() == DSI_VERSION_NUMBER to detect a
** header/library mismatch. Thread-safe; never fails.
*/
DSI_API int dsi_version_number(void);

/*
** The source revision the library was built from: `git describe --always --dirty` at
** configure time, or "unknown" outside a git checkout. A static string, never NULL.
** Thread-safe; never fails.
*/
DSI_API const char *dsi_source_revision(void);

/* ==================================================================================
** Result codes and errors
** ================================================================================*/

typedef int dsi_status;

#define DSI_OK                    0  /* Success */
#define DSI_ERR_INVALID_ARGUMENT  1  /* NULL handle, out-of-range parameter */
#define DSI_ERR_IO                2  /* A file is missing or cannot be read */
#define DSI_ERR_FORMAT            3  /* A file is malformed: safetensors, JSON, tokenizer.json */
#define DSI_ERR_CONFIG            4  /* config.json: unknown architecture or key, bad value */
#define DSI_ERR_CHECKPOINT        5  /* A tensor is missing, or its dtype or shape is wrong */
#define DSI_ERR_UNSUPPORTED       6  /* Backend not built or not present; feature not supported */
#define DSI_ERR_NO_MEMORY         7  /* Host or device allocation failed */
#define DSI_ERR_CONTEXT_FULL      8  /* Evaluating would exceed the context's n_ctx */
#define DSI_ERR_INVALID_TOKEN     9  /* A token id is outside [0, n_vocab) */
#define DSI_ERR_CANCELLED        10  /* A callback asked to stop */
#define DSI_ERR_BUSY             11  /* The handle is in use by another thread */
#define DSI_ERR_BUFFER_TOO_SMALL 12  /* Caller buffer too small; the size needed is reported */
#define DSI_ERR_PARSE            13  /* Invalid text input: bad UTF-8, malformed chat JSON or DSML */
#define DSI_ERR_BACKEND          14  /* The GPU runtime reported an error */
#define DSI_ERR_INTERNAL         15  /* A bug in dsinfer; please report it */

/*
** The message of the last failed call made on this thread, or "" if there is none.
** The string is owned by the library and valid until the next dsinfer call on this
** thread. A successful call does not clear it. Thread-safe (per-thread storage).
*/
DSI_API const char *dsi_last_error(void);

/*
** A short static name for a status code, e.g. "DSI_ERR_IO"; "DSI_ERR_UNKNOWN" for a code
** that is not one of the above. Never NULL. Thread-safe.
*/
DSI_API const char *dsi_status_name(dsi_status status);

/*
** Frees memory the library handed to the caller as `char **` (rendered prompts, JSON).
** NULL is a no-op. Thread-safe.
*/
DSI_API void dsi_free(void *ptr);

/* ==================================================================================
** Logging
** ================================================================================*/

typedef enum dsi_log_level {
    DSI_LOG_DEBUG = 0,
    DSI_LOG_INFO  = 1,
    DSI_LOG_WARN  = 2,
    DSI_LOG_ERROR = 3,
    DSI_LOG_NONE  = 4
} dsi_log_level;

/*
** A log sink. `message` is one line without a trailing newline, valid only during
** the call. It may be called from any thread that calls into the library, including
** several at once: the callback must be thread-safe.
**
** What is logged: DSI_LOG_INFO what was loaded (dims, dtype, parameters, weight bytes,
** backend, threads), the cache pool, each context created (n_ctx, cache bytes), a
** tokenizer with fewer ids than the model; DSI_LOG_WARN fallbacks and oddities
** (DSI_BACKEND_AUTO falling back to the CPU, a model without eos_token_id);
** DSI_LOG_ERROR every failed call's message (process-wide sink only); DSI_LOG_DEBUG
** per-call detail (each eval and its time, tokenizer loads, chat rendering).
*/
typedef void (*dsi_log_fn)(dsi_log_level level, const char *message, void *user_data);

/*
** Sets the process-wide log sink: it receives the messages of calls that have no
** session (tokenizer, chat, failed calls) and those of sessions opened without their
** own `log`. `fn` NULL turns it off (the initial state). `min_level` is the least severe
** level delivered; a value outside [DSI_LOG_DEBUG, DSI_LOG_NONE] is
** DSI_ERR_INVALID_ARGUMENT. Thread-safe: may be called at any time from any thread;
** calls already delivering a message may still use the previous sink.
*/
DSI_API dsi_status dsi_log_set(dsi_log_fn fn, void *user_data, dsi_log_level min_level);

/* ==================================================================================
** Session: a model loaded on a backend
** ================================================================================*/

typedef struct dsi_session dsi_session;

typedef enum dsi_backend {
    DSI_BACKEND_AUTO = 0,  /* CUDA when built in and a GPU is present, else CPU */
    DSI_BACKEND_CPU  = 1,  /* float32 reference engine, multithreaded with OpenMP */
    DSI_BACKEND_CUDA = 2   /* NVIDIA GPU; DSI_ERR_UNSUPPORTED when not available */
} dsi_backend;

/*
** 1 if `backend` is compiled into this library and usable now (for CUDA: a device is
** present), else 0. DSI_BACKEND_AUTO and DSI_BACKEND_CPU are always available; an
** unknown value gives 0. Needs no model. Thread-safe.
*/
DSI_API int dsi_backend_available(dsi_backend backend);

/*
** Load progress: `fraction` in [0, 1], non-decreasing, 1 exactly once at the end.
** Return non-zero to continue, 0 to cancel: dsi_session_open() then fails with
** DSI_ERR_CANCELLED. Called on the thread that calls dsi_session_open().
*/
typedef int (*dsi_progress_fn)(float fraction, void *user_data);

/* Arithmetic of the CUDA backend: one code path, two precisions. Ignored on CPU, but a
** value outside the enum is DSI_ERR_INVALID_ARGUMENT on every backend. */
typedef enum dsi_gpu_precision {
    DSI_GPU_PRECISION_FAST = 0, /* FP8 e4m3 block-scaled GEMMs (cuBLASLt), bf16 latent
                                   cache, FP8 indexer keys: the fast default */
    DSI_GPU_PRECISION_F32  = 1  /* float32 throughout: matches the CPU engine to its
                                   tolerance (same indexer selections, experts, ids) */
} dsi_gpu_precision;

typedef struct dsi_session_params {
    size_t          struct_size;    /* sizeof(dsi_session_params); set by the default */
    dsi_backend     backend;        /* default DSI_BACKEND_AUTO */
    int32_t         n_threads;      /* CPU threads for compute; 0 = all hardware threads */
    int32_t         gpu_device;     /* CUDA device ordinal; default 0 */
    const char     *tokenizer_path; /* NULL = <model_dir>/tokenizer.json when present.
                                       Copied during dsi_session_open(). */
    dsi_progress_fn progress;       /* NULL = no progress reports */
    void           *progress_user_data;
    dsi_log_fn      log;            /* NULL = the process-wide sink (dsi_log_set) */
    void           *log_user_data;
    dsi_log_level   log_level;      /* least severe level delivered; default DSI_LOG_WARN */
    /* -- appended in 0.2 -- */
    size_t          cache_budget;   /* bytes for the KV + indexer cache pages of all this
                                       session's contexts; 0 (default) = a quarter of the
                                       available memory on CPU, half
                                       of the free GPU memory on CUDA. Contexts take 64-token pages
                                       from it as they grow: see "Serving". */
    dsi_gpu_precision gpu_precision; /* CUDA backend arithmetic; default
                                        DSI_GPU_PRECISION_FAST */
} dsi_session_params;

/* Defaults for dsi_session_open(), with struct_size set. Thread-safe; never fails. */
DSI_API dsi_session_params dsi_session_default_params(void);

/*
** Opens the checkpoint directory `model_dir` (config.json,
** model.safetensors.index.json or model.safetensors, the shards, optionally
** tokenizer.json) and prepares it on the chosen backend. Weights are memory-mapped;
** FP8 block-scaled weights stay FP8 in memory and are dequantised on use.
** `params` may be NULL for the defaults. On success *out owns the session; free it
** with dsi_session_free(). On failure *out is set to NULL.
** Memory mapping: like SQLite's mmap mode, the shards must not change while the session
** lives. A shard truncated or rewritten on disk after opening makes the next evaluation
** that reads the lost pages fault with SIGBUS, which no status can report: replace model
** files by writing new ones and renaming them into place.
** Thread-safe: sessions may be opened concurrently from several threads.
*/
DSI_API dsi_status dsi_session_open(const char *model_dir, const dsi_session_params *params,
                                    dsi_session **out);

/*
** Releases the application's handle. Contexts created from the session keep working;
** the model's memory is freed when the last of them is freed too. NULL is a no-op.
** Not concurrently with other calls that pass this same handle.
*/
DSI_API void dsi_session_free(dsi_session *session);

/* The model's vocabulary size (config.json vocab_size); 0 for NULL. Thread-safe. */
DSI_API int32_t dsi_session_n_vocab(const dsi_session *session);

/* The model's max_position_embeddings; 0 for NULL. Thread-safe. */
DSI_API int32_t dsi_session_n_ctx_train(const dsi_session *session);

/* Number of transformer layers run (the MTP layer is not); 0 for NULL. Thread-safe. */
DSI_API int32_t dsi_session_n_layers(const dsi_session *session);

/* config.json bos_token_id; -1 if the model has none or session is NULL. Thread-safe. */
DSI_API int32_t dsi_session_bos_token(const dsi_session *session);

/*
** config.json eos_token_id (the first, if it lists several); -1 if the model has none
** or session is NULL. Thread-safe.
*/
DSI_API int32_t dsi_session_eos_token(const dsi_session *session);

/* 1 if the model has the DSA lightning indexer (V3.2), else 0 (also for NULL). */
DSI_API int dsi_session_is_sparse(const dsi_session *session);

/* The backend chosen when opening (never AUTO); DSI_BACKEND_AUTO for NULL. Thread-safe. */
DSI_API dsi_backend dsi_session_backend(const dsi_session *session);

/*
** A one-line description of the loaded model (architecture, dims, dtype, backend).
** Owned by the session; valid while the session lives. NULL for a NULL session.
*/
DSI_API const char *dsi_session_describe(const dsi_session *session);

/* Configuration values for dsi_session_config_value(), named after config.json keys. */
typedef enum dsi_config_key {
    DSI_CONFIG_VOCAB_SIZE = 0,
    DSI_CONFIG_HIDDEN_SIZE = 1,
    DSI_CONFIG_NUM_HIDDEN_LAYERS = 2,
    DSI_CONFIG_FIRST_K_DENSE_REPLACE = 3,  /* leading dense (non-MoE) layers */
    DSI_CONFIG_NUM_ATTENTION_HEADS = 4,
    DSI_CONFIG_Q_LORA_RANK = 5,            /* 0 = no q compression */
    DSI_CONFIG_KV_LORA_RANK = 6,
    DSI_CONFIG_QK_NOPE_HEAD_DIM = 7,
    DSI_CONFIG_QK_ROPE_HEAD_DIM = 8,
    DSI_CONFIG_V_HEAD_DIM = 9,
    DSI_CONFIG_INTERMEDIATE_SIZE = 10,     /* dense MLP */
    DSI_CONFIG_MOE_INTERMEDIATE_SIZE = 11,
    DSI_CONFIG_N_ROUTED_EXPERTS = 12,
    DSI_CONFIG_N_SHARED_EXPERTS = 13,
    DSI_CONFIG_NUM_EXPERTS_PER_TOK = 14,
    DSI_CONFIG_INDEX_N_HEADS = 15,         /* 0 for dense models */
    DSI_CONFIG_INDEX_HEAD_DIM = 16,        /* 0 for dense models */
    DSI_CONFIG_INDEX_TOPK = 17,            /* 0 for dense models */
    DSI_CONFIG_MAX_POSITION_EMBEDDINGS = 18
} dsi_config_key;

/*
** The model's value of `key` as validated from config.json; -1 for a NULL session or an
** unknown key. Thread-safe.
*/
DSI_API int64_t dsi_session_config_value(const dsi_session *session, dsi_config_key key);

/*
** Number of parameters (weight elements, FP8 scales not counted) of the tensors the
** forward pass uses, each counted once (a tied lm_head is the embedding); 0 for NULL.
** Thread-safe.
*/
DSI_API int64_t dsi_session_n_params(const dsi_session *session);

/*
** Bytes of those tensors as they sit in memory: FP8 weights stay FP8 (their scales
** counted), other dtypes as stored; 0 for NULL. Thread-safe.
*/
DSI_API int64_t dsi_session_weight_bytes(const dsi_session *session);

/*
** Bytes of cache a context holding `n_ctx` tokens takes from the session's pool: its
** ceil(n_ctx / 64) pages (see "Serving") of dsi_cache_stats.page_bytes each (MLA latent,
** rope key and DSA indexer key of every layer). Per token: dsi_session_cache_bytes(s, 64)
** / 64. -1 for a NULL session or n_ctx outside [1, max_position_embeddings]. Thread-safe.
*/
DSI_API int64_t dsi_session_cache_bytes(const dsi_session *session, int32_t n_ctx);

/*
** The end-of-generation ids: config.json eos_token_id (all of them when it is a list),
** then generation_config.json's eos_token_id when the model directory has one, without
** repeats. Copies up to `cap` ids into `ids` (NULL with cap 0 to query) and returns how
** many there are; 0 for NULL. Thread-safe.
*/
DSI_API int32_t dsi_session_eog_tokens(const dsi_session *session, int32_t *ids, size_t cap);

/* ==================================================================================
** Context: one sequence and its caches
** ================================================================================*/

typedef struct dsi_context dsi_context;

/*
** Called between layers during dsi_context_eval(); return non-zero to abort it, in
** which case eval returns DSI_ERR_CANCELLED and the context is left as it was before
** the call. Called on the evaluating thread. It may call
** dsi_context_set_abort_callback() but no other function on the same context.
*/
typedef int (*dsi_abort_fn)(void *user_data);

typedef struct dsi_context_params {
    size_t       struct_size;     /* sizeof(dsi_context_params); set by the default */
    int32_t      n_ctx;           /* max tokens (prompt + generated), at most the model's
                                     max_position_embeddings; 0 (default) = that maximum.
                                     A limit only: cache pages come from the session's
                                     pool as the context grows. */
    int32_t      n_threads;       /* 0 = the session's n_threads */
    dsi_abort_fn abort_callback;  /* NULL = never abort */
    void        *abort_user_data;
} dsi_context_params;

/* Defaults for dsi_context_create(), with struct_size set. Thread-safe; never fails. */
DSI_API dsi_context_params dsi_context_default_params(void);

/*
** Creates an empty context on `session`. `params` may be NULL for the defaults.
** On success *out must be freed with dsi_context_free(); it holds a reference to the
** session, so the two may be freed in either order. On failure *out is set to NULL.
** Thread-safe: any number of contexts may be created from, and used on, one session
** concurrently, each from its own thread.
*/
DSI_API dsi_status dsi_context_create(dsi_session *session, const dsi_context_params *params,
                                      dsi_context **out);

/*
** Frees a context (and the session too, if the application already freed it and this
** was its last context). NULL is a no-op. Not while another call uses ctx.
*/
DSI_API void dsi_context_free(dsi_context *ctx);

/*
** Replaces the abort callback (see dsi_context_params); `fn` NULL clears it. Thread-safe:
** may be called from any thread, also while ctx is being evaluated; the evaluation polls
** the new callback from its next check on. DSI_ERR_INVALID_ARGUMENT for a NULL ctx.
*/
DSI_API dsi_status dsi_context_set_abort_callback(dsi_context *ctx, dsi_abort_fn fn, void *user_data);

/* Flags for dsi_context_eval(). */
#define DSI_EVAL_LOGITS_LAST 0u  /* keep the logits of the last token only (default) */
#define DSI_EVAL_LOGITS_ALL  1u  /* keep the logits of every token of this call */

/*
** Appends `n_tokens` tokens to the sequence and runs the model over them: a prefill
** for n_tokens > 1, a decode step for n_tokens == 1. Earlier tokens are read from the
** caches, so a decode step costs O(length) work. Afterwards dsi_context_logits()
** returns the logits of this call's last token (or of each token with
** DSI_EVAL_LOGITS_ALL).
** Errors leave the context unchanged: DSI_ERR_INVALID_TOKEN (an id out of range;
** the message names its position), DSI_ERR_CONTEXT_FULL (length + n_tokens > n_ctx),
** DSI_ERR_NO_MEMORY (the session's cache pool has no free page left; the message
** names the budget and its users), DSI_ERR_CANCELLED (abort callback),
** DSI_ERR_BUSY (another thread is using ctx).
** n_tokens == 0 is DSI_ERR_INVALID_ARGUMENT.
** Threading: one thread at a time per context. A call that finds ctx in use by
** dsi_context_eval, _logits, _clear, _truncate or dsi_sampler_sample on another
** thread returns DSI_ERR_BUSY (the same holds for each of those functions).
*/
DSI_API dsi_status dsi_context_eval(dsi_context *ctx, const int32_t *tokens, size_t n_tokens,
                                    unsigned flags);

/*
** The logits (n_vocab floats) of token `index` of the last dsi_context_eval() call:
** index -1 = the last token; 0..n-1 with DSI_EVAL_LOGITS_ALL. Owned by the context,
** valid until the next eval, clear, truncate or free of ctx. Returns NULL with the
** thread's message set (the function's only failure value): NULL ctx, no such logits,
** or ctx in use by another thread (the message says so, as for DSI_ERR_BUSY).
*/
DSI_API const float *dsi_context_logits(dsi_context *ctx, int32_t index);

/*
** Number of tokens in the sequence; 0 for NULL. Reads without taking ctx: call it from
** the thread that uses ctx, not during another thread's eval, clear or truncate.
*/
DSI_API int32_t dsi_context_length(const dsi_context *ctx);

/* The context's capacity in tokens; 0 for NULL. Fixed at creation: thread-safe. */
DSI_API int32_t dsi_context_n_ctx(const dsi_context *ctx);

/*
** The token history: copies up to `cap` ids into `tokens` and returns the length (0 for
** a NULL ctx). tokens may be NULL with cap 0 to query the length. Threading as for
** dsi_context_length().
*/
DSI_API int32_t dsi_context_tokens(const dsi_context *ctx, int32_t *tokens, size_t cap);

/*
** Forgets every token and the logits and gives the context's cache pages back to the
** session's pool. DSI_ERR_BUSY if another thread uses ctx; DSI_ERR_INVALID_ARGUMENT for
** NULL.
*/
DSI_API dsi_status dsi_context_clear(dsi_context *ctx);

/*
** Keeps the first `length` tokens and drops the rest, so that generation can resume
** from there (e.g. to reuse a shared prefix). length < 0 or > the current length is
** DSI_ERR_INVALID_ARGUMENT. Logits are dropped. DSI_ERR_BUSY as for dsi_context_clear().
*/
DSI_API dsi_status dsi_context_truncate(dsi_context *ctx, int32_t length);

/*
** Bytes of the cache pages this context holds now (pages it shares with other contexts
** count in full); dsi_session_cache_bytes() of its length. 0 for NULL. Not during
** another thread's eval, clear or truncate of ctx.
*/
DSI_API int64_t dsi_context_cache_bytes(const dsi_context *ctx);

/* Performance counters of a context, as llama_perf_context_data gives them. */
typedef struct dsi_context_perf {
    double  load_ms;        /* the session's dsi_session_open() wall time */
    double  prompt_ms;      /* wall time in successful evals of more than one token (a
                               batch's time counts for each of its contexts) */
    int64_t prompt_tokens;  /* tokens in those evals */
    double  decode_ms;      /* wall time in successful evals of one token */
    int64_t decode_tokens;  /* number of those evals */
} dsi_context_perf;

/*
** The counters since creation or the last dsi_context_perf_reset(); all zero for NULL.
** Thread-safe (may be read during an eval; that eval is counted when it ends).
*/
DSI_API dsi_context_perf dsi_context_perf_get(const dsi_context *ctx);

/* Sets the prompt and decode counters to zero (not load_ms). NULL is a no-op. Thread-safe. */
DSI_API void dsi_context_perf_reset(dsi_context *ctx);

/* ==================================================================================
** Serving: many contexts on one session
**
** A session keeps the caches of all its contexts in one pool of 64-token pages
** (dsi_session_params.cache_budget). A context takes pages as it grows and gives them
** back when cleared, truncated or freed. Full pages are content-addressed: a context
** whose tokens begin with the same tokens as a page of another context (live, or freed
** and still cached within the budget) reuses that page instead of computing it again,
** and dsi_context_fork() shares every page. A shared page is copied before it is
** written, so contexts never see each other's tokens. Results never depend on reuse or
** on what else is in a batch: on CPU, logits are bit-identical to evaluating each
** context alone from scratch.
** ================================================================================*/

/* One context's part of a batched evaluation: what dsi_context_eval() takes. */
typedef struct dsi_batch_item {
    dsi_context   *ctx;       /* a context of the session; at most once per batch */
    const int32_t *tokens;    /* ids to append */
    size_t         n_tokens;  /* >= 1: a prefill chunk or one decode token */
    unsigned       flags;     /* DSI_EVAL_LOGITS_* */
} dsi_batch_item;

/*
** Advances every item's context in shared forward passes (continuous batching: any mix
** of prefills and decode tokens; the set of contexts may change from call to call).
** Each item behaves exactly as dsi_context_eval(item.ctx, item.tokens, item.n_tokens,
** item.flags): afterwards dsi_context_logits(item.ctx, ...) holds its logits.
** All or nothing: on any error no context changes, and the message names the item
** ("item 3: ..."): NULL or foreign ctx, the same ctx twice, an id out of range
** (DSI_ERR_INVALID_TOKEN), a full context (DSI_ERR_CONTEXT_FULL), a context busy in
** another thread (DSI_ERR_BUSY), the pool out of pages (DSI_ERR_NO_MEMORY). Every
** item's abort callback is polled between layers and chunks; if one asks to stop the
** whole call fails with DSI_ERR_CANCELLED.
** Threading: any thread; the contexts are locked for the call (other calls on them get
** DSI_ERR_BUSY). Several threads may run batches on one session at once.
*/
DSI_API dsi_status dsi_session_eval_batch(dsi_session *session, const dsi_batch_item *items,
                                          size_t n_items);

/*
** A new context with ctx's tokens, logits and parameters that shares all of ctx's cache
** pages (nothing is copied until one of them writes into a shared page). Free it with
** dsi_context_free(); it stays valid after ctx is freed. DSI_ERR_BUSY if ctx is in use.
*/
DSI_API dsi_status dsi_context_fork(dsi_context *ctx, dsi_context **out);

/*
** How many of the context's tokens were taken from cached pages instead of being
** computed (whole 64-token pages of a shared prefix). 0 for NULL.
*/
DSI_API int32_t dsi_context_reused_tokens(const dsi_context *ctx);

/* The state of a session's cache pool (dsi_session_cache_stats). */
typedef struct dsi_cache_stats {
    size_t  budget_bytes;   /* the pool's budget */
    size_t  page_bytes;     /* one page, all layers, in the backend's layout */
    int32_t page_tokens;    /* tokens per page (64) */
    int64_t n_pages;        /* pages in the pool */
    int64_t pages_in_use;   /* held by at least one context */
    int64_t pages_shared;   /* held by more than one context */
    int64_t pages_cached;   /* held by none, kept for prefix reuse (evicted first) */
    int64_t pages_free;
    int64_t n_contexts;     /* live contexts of the session */
} dsi_cache_stats;

/* Fills *out with the pool's current state. Thread-safe. */
DSI_API dsi_status dsi_session_cache_stats(const dsi_session *session, dsi_cache_stats *out);

/* ==================================================================================
** Sampling
** ================================================================================*/

typedef struct dsi_sampler dsi_sampler;

/*
** The chain, applied in this order to a copy of the logits:
**   0. logit bias (dsi_sampler_set_logit_bias): each listed token's bias is added;
**   1. repetition / frequency / presence penalties over the last `penalty_last_n`
**      tokens of the history (repeat: logit/p if positive, logit*p if negative;
**      frequency: - count*f; presence: - p if seen at all);
**   2. greedy: if temperature <= 0, the argmax (lowest id on ties) and stop;
**   3. top-k, 4. softmax with temperature, 5. top-p (nucleus), 6. min-p
**      (relative to the most likely token), 7. a draw from what remains.
** The same seed, logits, bias and history give the same token on every platform whose
** C `double` is IEEE-754 binary64 evaluated without excess precision (FLT_EVAL_METHOD 0:
** x86-64, AArch64): the random generator, the exponential and the sorting are the
** library's own and the file is built without floating-point contraction.
*/
typedef struct dsi_sampler_params {
    size_t   struct_size;       /* sizeof(dsi_sampler_params); set by the default */
    float    temperature;       /* <= 0: greedy. Default 0.8 */
    int32_t  top_k;             /* 0 = off. Default 40 */
    float    top_p;             /* 1 = off. Default 0.95 */
    float    min_p;             /* 0 = off. Default 0.05 */
    float    repeat_penalty;    /* 1 = off. Default 1 */
    float    frequency_penalty; /* 0 = off. Default 0 */
    float    presence_penalty;  /* 0 = off. Default 0 */
    int32_t  penalty_last_n;    /* window of history for penalties; -1 = all. Default 64 */
    uint64_t seed;              /* random seed. Default 0x5EED */
} dsi_sampler_params;

/* Defaults for dsi_sampler_create(), with struct_size set. Thread-safe; never fails. */
DSI_API dsi_sampler_params dsi_sampler_default_params(void);

/*
** Creates a sampler. `params` may be NULL for the defaults; a field out of range is
** DSI_ERR_INVALID_ARGUMENT naming it. On success *out must be freed with
** dsi_sampler_free(); on failure *out is set to NULL. A sampler refers to no session or
** context. Thread-safe.
*/
DSI_API dsi_status dsi_sampler_create(const dsi_sampler_params *params, dsi_sampler **out);

/* Frees a sampler. NULL is a no-op. Not while another call uses it. */
DSI_API void dsi_sampler_free(dsi_sampler *sampler);

/*
** Restores the random state to the one right after creation with `seed` (the bias and
** counters stay). DSI_ERR_INVALID_ARGUMENT for NULL; DSI_ERR_BUSY as for sampling.
*/
DSI_API dsi_status dsi_sampler_reset(dsi_sampler *sampler, uint64_t seed);

/* One entry of a logit bias: `bias` is added to the logit of `token`. */
typedef struct dsi_logit_bias {
    int32_t token;
    float   bias;   /* finite, or -INFINITY to ban the token (e.g. EOS for --ignore-eos) */
} dsi_logit_bias;

/*
** Replaces the sampler's logit bias with a copy of `n` entries (NULL with n 0 clears it;
** a token listed twice gets both biases added). A token < 0 or a NaN or +inf bias is
** DSI_ERR_INVALID_ARGUMENT and leaves the bias as it was; a token >= the vocabulary size
** fails the next sample with DSI_ERR_INVALID_TOKEN. DSI_ERR_BUSY as for sampling.
*/
DSI_API dsi_status dsi_sampler_set_logit_bias(dsi_sampler *sampler, const dsi_logit_bias *entries,
                                              size_t n);

/*
** Picks the next token from the logits of ctx's last evaluated token, using ctx's
** token history for penalties. Does not append the token: evaluate it next.
** Threading: one thread at a time per sampler: a concurrent call on the same sampler
** returns DSI_ERR_BUSY, and so does a call whose ctx another thread is using.
*/
DSI_API dsi_status dsi_sampler_sample(dsi_sampler *sampler, dsi_context *ctx, int32_t *token_out);

/*
** The same chain over caller-provided logits (n_vocab floats, not modified) and history
** (may be NULL when n_history is 0). Threading as for dsi_sampler_sample().
*/
DSI_API dsi_status dsi_sampler_sample_logits(dsi_sampler *sampler, const float *logits,
                                             int32_t n_vocab, const int32_t *history,
                                             size_t n_history, int32_t *token_out);

/* Sampling time of a sampler, as llama_perf_sampler_data gives it. */
typedef struct dsi_sampler_perf {
    double  sample_ms;  /* wall time in successful dsi_sampler_sample*() calls */
    int64_t samples;    /* number of those calls */
} dsi_sampler_perf;

/* The counters since creation or the last reset; zero for NULL. Thread-safe. */
DSI_API dsi_sampler_perf dsi_sampler_perf_get(const dsi_sampler *sampler);

/* Sets the counters to zero. NULL is a no-op. Thread-safe. */
DSI_API void dsi_sampler_perf_reset(dsi_sampler *sampler);

/* ==================================================================================
** Saved state (see "Serving")
** ================================================================================*/

/*
** Saved state: a context's tokens, caches and last logits, and optionally a sampler's
** parameters and random state, as a Flatbuffers buffer (schema lib/state/state.fbs)
** tagged with the model's identity (a hash of config.json and every tensor's name,
** dtype and shape). Loading it into a context of any session of the same model, in
** any process, continues exactly where the saved one stopped.
**
** dsi_context_save_state: *data (free with dsi_free()) and *size receive the buffer.
** `sampler` may be NULL. A state above 2 GiB (Flatbuffers' limit; about 12K tokens of
** the released model in float32) is DSI_ERR_UNSUPPORTED.
** dsi_context_load_state: replaces ctx's tokens, caches and logits. Everything is
** checked before anything changes: not a state, truncated or corrupted (the
** Flatbuffers verifier, then every size and value) or from a newer dsinfer is
** DSI_ERR_FORMAT; another model is DSI_ERR_CONFIG; more tokens than ctx's n_ctx is
** DSI_ERR_CONTEXT_FULL; no free pages is DSI_ERR_NO_MEMORY. With a non-NULL `sampler`
** its parameters and random state are restored too (DSI_ERR_INVALID_ARGUMENT if the
** state was saved without one).
** The _file variants write / read the same bytes to / from `path` (DSI_ERR_IO).
** Threading: ctx (and sampler) must not be used by another thread meanwhile
** (DSI_ERR_BUSY for ctx).
*/
DSI_API dsi_status dsi_context_save_state(dsi_context *ctx, const dsi_sampler *sampler,
                                          void **data, size_t *size);
DSI_API dsi_status dsi_context_load_state(dsi_context *ctx, const void *data, size_t size,
                                          dsi_sampler *sampler);
DSI_API dsi_status dsi_context_save_state_file(dsi_context *ctx, const dsi_sampler *sampler,
                                               const char *path);
DSI_API dsi_status dsi_context_load_state_file(dsi_context *ctx, const char *path,
                                               dsi_sampler *sampler);

/* ==================================================================================
** Tokenizer (Hugging Face tokenizer.json, byte-level BPE)
** ================================================================================*/

typedef struct dsi_tokenizer dsi_tokenizer;

/*
** Loads a tokenizer.json. On success *out must be freed with dsi_tokenizer_free(); on
** failure *out is set to NULL. Errors: DSI_ERR_IO, DSI_ERR_FORMAT (malformed JSON,
** missing model, bad merges, an unsupported component; the message names it).
** Thread-safe.
*/
DSI_API dsi_status dsi_tokenizer_load(const char *path, dsi_tokenizer **out);

/*
** Frees a tokenizer loaded with dsi_tokenizer_load() (never the session's). Detokenizers
** created from it keep working. NULL is a no-op.
*/
DSI_API void dsi_tokenizer_free(dsi_tokenizer *tok);

/*
** The session's tokenizer (from params.tokenizer_path or the model directory), or
** NULL if it has none (or session is NULL). Owned by the session: valid while the
** session lives (until dsi_session_free() and the free of its last context).
*/
DSI_API const dsi_tokenizer *dsi_session_tokenizer(const dsi_session *session);

/* Number of ids including added tokens (highest id + 1); 0 for NULL. Thread-safe. */
DSI_API int32_t dsi_tokenizer_n_vocab(const dsi_tokenizer *tok);

/*
** The id of a token given by its exact text (e.g. "<｜end▁of▁sentence｜>"); -1 when no
** token has that text or an argument is NULL. Thread-safe.
*/
DSI_API int32_t dsi_tokenizer_token_id(const dsi_tokenizer *tok, const char *token_text);

/* Token attributes: bit flags, as llama_token_attr. */
#define DSI_TOKEN_ATTR_NONE         0u  /* no token has this id */
#define DSI_TOKEN_ATTR_NORMAL       1u  /* a vocabulary entry (text) */
#define DSI_TOKEN_ATTR_CONTROL      2u  /* an added token marked special, e.g. BOS, EOS */
#define DSI_TOKEN_ATTR_USER_DEFINED 4u  /* an added token not marked special */
#define DSI_TOKEN_ATTR_EOG          8u  /* ends generation (dsi_session_token_attr only) */

/*
** The attributes of `id` in the tokenizer: one of NORMAL, CONTROL, USER_DEFINED, or
** DSI_TOKEN_ATTR_NONE for an id outside [0, n_vocab), a gap, or a NULL tok. Thread-safe.
*/
DSI_API uint32_t dsi_tokenizer_token_attr(const dsi_tokenizer *tok, int32_t id);

/*
** The session tokenizer's attributes of `id` (none without a tokenizer), plus
** DSI_TOKEN_ATTR_EOG when id is one of dsi_session_eog_tokens(). 0 for NULL. Thread-safe.
*/
DSI_API uint32_t dsi_session_token_attr(const dsi_session *session, int32_t id);

/*
** The raw bytes of one token, as they enter a decode (a byte-level token may hold part
** of a UTF-8 character; special tokens give their text). Writes up to `cap` bytes plus a
** NUL if room remains; *piece_len receives the length. DSI_ERR_BUFFER_TOO_SMALL as for
** dsi_tokenize; DSI_ERR_INVALID_TOKEN for an id outside [0, n_vocab). Thread-safe.
*/
DSI_API dsi_status dsi_tokenizer_token_to_piece(const dsi_tokenizer *tok, int32_t id, char *piece,
                                                size_t cap, size_t *piece_len);

/* Flags for dsi_tokenize(). */
#define DSI_TOKENIZE_PARSE_SPECIAL 1u  /* added tokens written in the text become their ids */
#define DSI_TOKENIZE_ADD_SPECIAL   2u  /* BOS/EOS around the text as Hugging Face's
                                          add_special_tokens=True: from add_bos_token /
                                          add_eos_token of a tokenizer_config.json next to
                                          the tokenizer.json when it sets them (DeepSeek's
                                          does: BOS), else from tokenizer.json's
                                          TemplateProcessing "single" template */

/*
** Encodes `text_len` bytes of UTF-8. Without DSI_TOKENIZE_PARSE_SPECIAL added/special
** tokens written in the text are encoded as plain text. Writes up to `cap` ids; *n_ids
** receives the number of ids the text needs. If cap is too small returns
** DSI_ERR_BUFFER_TOO_SMALL (query with ids NULL, cap 0). Invalid UTF-8 is
** DSI_ERR_PARSE with the byte offset; an unknown flag DSI_ERR_INVALID_ARGUMENT;
** ADD_SPECIAL with a post_processor type other than TemplateProcessing, ByteLevel or a
** Sequence of them DSI_ERR_UNSUPPORTED. Thread-safe.
*/
DSI_API dsi_status dsi_tokenize(const dsi_tokenizer *tok, const char *text, size_t text_len,
                                unsigned flags, int32_t *ids, size_t cap, size_t *n_ids);

/* Flags for dsi_detokenize() and dsi_detokenizer_create(). */
#define DSI_DETOKENIZE_SKIP_SPECIAL 1u  /* tokens with DSI_TOKEN_ATTR_CONTROL give no text */

/*
** Decodes ids to UTF-8 (bytes that do not form valid UTF-8 become U+FFFD, as Hugging
** Face does). Writes up to `cap` bytes plus a terminating NUL if room remains;
** *text_len receives the length needed (without NUL); DSI_ERR_BUFFER_TOO_SMALL as
** for dsi_tokenize. An id out of range is DSI_ERR_INVALID_TOKEN; an unknown flag
** DSI_ERR_INVALID_ARGUMENT. Thread-safe.
*/
DSI_API dsi_status dsi_detokenize(const dsi_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                  unsigned flags, char *text, size_t cap, size_t *text_len);

typedef struct dsi_detokenizer dsi_detokenizer;

/*
** A streaming decoder over `tok` with DSI_DETOKENIZE_* flags. It shares the tokenizer's
** data, so tok (or the session it came from) may be freed first. On success free *out
** with dsi_detokenizer_free(); on failure *out is set to NULL. Thread-safe.
*/
DSI_API dsi_status dsi_detokenizer_create(const dsi_tokenizer *tok, unsigned flags,
                                          dsi_detokenizer **out);

/* Frees a detokenizer. NULL is a no-op. */
DSI_API void dsi_detokenizer_free(dsi_detokenizer *detok);

/*
** Feeds one id. *text and *text_len receive the newly completed text: only whole UTF-8
** characters, so a character split across tokens appears once, whole, when its last
** byte arrives. The pointer is owned by the decoder and valid until its next call.
** An id out of range is DSI_ERR_INVALID_TOKEN and changes nothing. One thread at a
** time per detokenizer (not checked).
*/
DSI_API dsi_status dsi_detokenizer_push(dsi_detokenizer *detok, int32_t id, const char **text,
                                        size_t *text_len);

/*
** Ends the stream: pending incomplete bytes come out as U+FFFD; then it starts anew.
** Output as for dsi_detokenizer_push().
*/
DSI_API dsi_status dsi_detokenizer_flush(dsi_detokenizer *detok, const char **text,
                                         size_t *text_len);

/* ==================================================================================
** Chat (DeepSeek-V3.2 encoding, DSML tool calls)
** ================================================================================*/

#define DSI_CHAT_THINKING 1u  /* thinking mode: the prompt opens <think> for the reply */

/*
** Renders a conversation into the DeepSeek-V3.2 prompt text, byte-exact with
** DeepSeek's encoder. `conversation_json` (json_len bytes) is an object:
**   "tools"     optional array of {"type": "function", "function": {...}}; each
**               "function" object (name, description, parameters) is rendered as is;
**   "messages"  array of objects, each with "role":
**     "system"     "content" (string, may be absent), optional "tools" and
**                  "response_format" (object);
**     "developer"  "content" (non-empty string), optional "tools", "response_format";
**     "user"       "content" (string);
**     "assistant"  optional "content", "reasoning_content" (strings) and "tool_calls":
**                  array of {"function": {"name": string, "arguments": object or a
**                  string holding a JSON object}};
**     "tool"       "content" (string): a tool's result.
** Reasoning of assistant turns before the last user message is dropped. flags: 0 or
** DSI_CHAT_THINKING (another bit is DSI_ERR_INVALID_ARGUMENT). On success *prompt is
** NUL-terminated and must be freed with dsi_free(); *prompt_len receives its length
** unless prompt_len is NULL. On failure *prompt is NULL. Malformed input is
** DSI_ERR_PARSE naming the message index and field. Thread-safe.
*/
DSI_API dsi_status dsi_chat_render(const char *conversation_json, size_t json_len,
                                   unsigned flags, char **prompt, size_t *prompt_len);

/*
** Parses a complete model reply (the text after the prompt) into a JSON object with
** exactly these keys, in this order:
**   "reasoning_content"  the text inside <think>...</think>: a string with
**                        DSI_CHAT_THINKING, null without;
**   "content"            the visible text (string, "" if none);
**   "tool_calls"         array (possibly empty) of {"name": string, "arguments": object}
**                        in the order the model wrote them; string="true" parameters
**                        are strings, the others the JSON values written.
** Text after the end-of-sentence token is ignored. Malformed DSML is DSI_ERR_PARSE with
** the byte position. On success *json (NUL-terminated) must be freed with dsi_free();
** *json_len receives its length unless NULL. On failure *json is NULL. Thread-safe.
*/
DSI_API dsi_status dsi_chat_parse(const char *output, size_t output_len, unsigned flags,
                                  char **json, size_t *json_len);

typedef struct dsi_chat_parser dsi_chat_parser;

/*
** An incremental parser of a reply being streamed; flags as for dsi_chat_parse(). On
** success free *out with dsi_chat_parser_free(); on failure *out is NULL. Thread-safe;
** each parser is used by one thread at a time (not checked).
*/
DSI_API dsi_status dsi_chat_parser_create(unsigned flags, dsi_chat_parser **out);

/* Frees a chat parser. NULL is a no-op. */
DSI_API void dsi_chat_parser_free(dsi_chat_parser *parser);

/*
** Feeds the next `len` bytes of the reply. *events receives a JSON array (free it with
** dsi_free()) of what became certain, in order; each element is one of
**   {"type": "reasoning", "text": string}  more reasoning (thinking mode only);
**   {"type": "content",   "text": string}  more visible text;
**   {"type": "tool_call", "name": string, "arguments": object}  one whole tool call.
** Consecutive text of the same type within one call is one event. The texts of all events
** put together equal the result's fields. After an error the parser keeps failing with
** the same error; after dsi_chat_parser_finish() it fails with DSI_ERR_INVALID_ARGUMENT.
*/
DSI_API dsi_status dsi_chat_parser_push(dsi_chat_parser *parser, const char *text, size_t len,
                                        char **events);

/*
** Ends the reply: *events receives the remaining events (as for push), *result the
** complete result, exactly as dsi_chat_parse() of the whole reply gives it. Both must
** be freed with dsi_free(); on failure both are NULL.
*/
DSI_API dsi_status dsi_chat_parser_finish(dsi_chat_parser *parser, char **events, char **result);

#ifdef __cplusplus
}
#endif

#endif /* DSINFER_H */
