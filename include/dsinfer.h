/*
** dsinfer.h -- the public C API of dsinfer, an embeddable inference library for
** DeepSeek-V3.2 (DeepSeek Sparse Attention) and dense DeepSeek-V3/V3.1 models.
**
** This header is the only ABI of the library. It is C99 and self-contained.
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
** Conventions:
**   - Every function that can fail returns a dsi_status; DSI_OK is 0. On failure the
**     calling thread's message, dsi_last_error(), names the problem (file, tensor,
**     position, value). Results written through out-pointers are only valid on DSI_OK.
**   - Passing NULL where a handle is required returns DSI_ERR_INVALID_ARGUMENT.
**     Every *_free() function accepts NULL as a harmless no-op.
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

#if defined(_WIN32) && !defined(__GNUC__)
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
** The version of the library actually linked. An application may assert
** dsi_version_number() == DSI_VERSION_NUMBER to detect a header/library mismatch.
** Both are thread-safe and never fail; dsi_version() returns a static string.
*/
DSI_API const char *dsi_version(void);
DSI_API int dsi_version_number(void);

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

/* A short static name for a status code, e.g. "DSI_ERR_IO". Never NULL. */
DSI_API const char *dsi_status_name(dsi_status status);

/* Frees memory the library handed to the caller as `char **`. NULL is a no-op. */
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
*/
typedef void (*dsi_log_fn)(dsi_log_level level, const char *message, void *user_data);

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
** Load progress: `fraction` in [0, 1], non-decreasing, 1 exactly once at the end.
** Return non-zero to continue, 0 to cancel: dsi_session_open() then fails with
** DSI_ERR_CANCELLED. Called on the thread that calls dsi_session_open().
*/
typedef int (*dsi_progress_fn)(float fraction, void *user_data);

/* Arithmetic of the CUDA backend (ignored on CPU). One code path, two precisions. */
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
    dsi_log_fn      log;            /* NULL = no logging */
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

/* Defaults for dsi_session_open(). Thread-safe. */
DSI_API dsi_session_params dsi_session_default_params(void);

/*
** Opens the checkpoint directory `model_dir` (config.json,
** model.safetensors.index.json or model.safetensors, the shards, optionally
** tokenizer.json) and prepares it on the chosen backend. Weights are memory-mapped;
** FP8 block-scaled weights stay FP8 in memory and are dequantised on use.
** `params` may be NULL for the defaults. On success *out owns the session, which must
** be freed with dsi_session_free() after every context created from it.
** On failure *out is set to NULL.
** Memory mapping: like SQLite's mmap mode, the shards must not change while the session
** lives. A shard truncated or rewritten on disk after opening makes the next evaluation
** that reads the lost pages fault with SIGBUS, which no status can report: replace model
** files by writing new ones and renaming them into place.
** Thread-safe: sessions may be opened concurrently from several threads.
*/
DSI_API dsi_status dsi_session_open(const char *model_dir, const dsi_session_params *params,
                                    dsi_session **out);

/* Frees a session. All its contexts must be freed first. NULL is a no-op. */
DSI_API void dsi_session_free(dsi_session *session);

/* Model facts. Thread-safe. They return 0 (or DSI_BACKEND_AUTO) for a NULL session. */
DSI_API int32_t     dsi_session_n_vocab(const dsi_session *session);
DSI_API int32_t     dsi_session_n_ctx_train(const dsi_session *session); /* max_position_embeddings */
DSI_API int32_t     dsi_session_n_layers(const dsi_session *session);
DSI_API int32_t     dsi_session_bos_token(const dsi_session *session);   /* -1 if none */
DSI_API int32_t     dsi_session_eos_token(const dsi_session *session);   /* -1 if none */
DSI_API int         dsi_session_is_sparse(const dsi_session *session);   /* 1 if DSA indexer */
DSI_API dsi_backend dsi_session_backend(const dsi_session *session);     /* the one chosen */

/*
** A one-line description of the loaded model (architecture, dims, dtype, backend).
** Owned by the session; valid until dsi_session_free(). NULL for a NULL session.
*/
DSI_API const char *dsi_session_describe(const dsi_session *session);

/* ==================================================================================
** Context: one sequence and its caches
** ================================================================================*/

typedef struct dsi_context dsi_context;

/*
** Called between layers during dsi_context_eval(); return non-zero to abort it, in
** which case eval returns DSI_ERR_CANCELLED and the context is left as it was before
** the call. Called on the evaluating thread.
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

/* Defaults for dsi_context_create(). Thread-safe. */
DSI_API dsi_context_params dsi_context_default_params(void);

/*
** Creates an empty context on `session`. `params` may be NULL for the defaults.
** On success *out must be freed with dsi_context_free() before the session.
** Thread-safe: any number of contexts may be created from, and used on, one session
** concurrently, each from its own thread.
*/
DSI_API dsi_status dsi_context_create(dsi_session *session, const dsi_context_params *params,
                                      dsi_context **out);

/* Frees a context. NULL is a no-op. */
DSI_API void dsi_context_free(dsi_context *ctx);

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
** Threading: one thread at a time per context; a concurrent call returns DSI_ERR_BUSY.
*/
DSI_API dsi_status dsi_context_eval(dsi_context *ctx, const int32_t *tokens, size_t n_tokens,
                                    unsigned flags);

/*
** The logits (n_vocab floats) of token `index` of the last dsi_context_eval() call:
** index -1 = the last token; 0..n-1 with DSI_EVAL_LOGITS_ALL. Owned by the context,
** valid until the next eval, clear, truncate or free of ctx. Returns NULL (with the
** message set) if there are no such logits.
*/
DSI_API const float *dsi_context_logits(dsi_context *ctx, int32_t index);

/* Number of tokens in the sequence (0 for NULL). */
DSI_API int32_t dsi_context_length(const dsi_context *ctx);

/* The context's capacity in tokens (0 for NULL). */
DSI_API int32_t dsi_context_n_ctx(const dsi_context *ctx);

/*
** The token history: copies up to `cap` ids into `tokens` and returns the length.
** tokens may be NULL with cap 0 to query the length.
*/
DSI_API int32_t dsi_context_tokens(const dsi_context *ctx, int32_t *tokens, size_t cap);

/* Forgets every token and gives its cache pages back to the session's pool. */
DSI_API dsi_status dsi_context_clear(dsi_context *ctx);

/*
** Keeps the first `length` tokens and drops the rest, so that generation can resume
** from there (e.g. to reuse a shared prefix). length > current length is
** DSI_ERR_INVALID_ARGUMENT. Logits are dropped.
*/
DSI_API dsi_status dsi_context_truncate(dsi_context *ctx, int32_t length);

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
**   1. repetition / frequency / presence penalties over the last `penalty_last_n`
**      tokens of the history (repeat: logit/p if positive, logit*p if negative;
**      frequency: - count*f; presence: - p if seen at all);
**   2. greedy: if temperature <= 0, the argmax (lowest id on ties) and stop;
**   3. top-k, 4. softmax with temperature, 5. top-p (nucleus), 6. min-p
**      (relative to the most likely token), 7. a draw from what remains.
** The same seed, logits and history always give the same token on every platform.
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

/* Defaults for dsi_sampler_create(). Thread-safe. */
DSI_API dsi_sampler_params dsi_sampler_default_params(void);

/* Creates a sampler. `params` may be NULL for the defaults. Free with dsi_sampler_free(). */
DSI_API dsi_status dsi_sampler_create(const dsi_sampler_params *params, dsi_sampler **out);

/* Frees a sampler. NULL is a no-op. */
DSI_API void dsi_sampler_free(dsi_sampler *sampler);

/* Restores the random state to the one right after creation with `seed`. */
DSI_API dsi_status dsi_sampler_reset(dsi_sampler *sampler, uint64_t seed);

/*
** Picks the next token from the logits of ctx's last evaluated token, using ctx's
** token history for penalties. Does not append the token: evaluate it next.
** Threading: one thread at a time per sampler; ctx must not be evaluated concurrently.
*/
DSI_API dsi_status dsi_sampler_sample(dsi_sampler *sampler, dsi_context *ctx, int32_t *token_out);

/*
** The same chain over caller-provided logits (n_vocab floats, not modified) and history
** (may be NULL when n_history is 0).
*/
DSI_API dsi_status dsi_sampler_sample_logits(dsi_sampler *sampler, const float *logits,
                                             int32_t n_vocab, const int32_t *history,
                                             size_t n_history, int32_t *token_out);

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
** Loads a tokenizer.json. On success *out must be freed with dsi_tokenizer_free().
** Errors: DSI_ERR_IO, DSI_ERR_FORMAT (malformed JSON, missing model, bad merges,
** an unsupported component; the message names it). Thread-safe.
*/
DSI_API dsi_status dsi_tokenizer_load(const char *path, dsi_tokenizer **out);

/* Frees a tokenizer. NULL is a no-op. */
DSI_API void dsi_tokenizer_free(dsi_tokenizer *tok);

/*
** The session's tokenizer (from params.tokenizer_path or the model directory), or
** NULL if it has none. Owned by the session; valid until dsi_session_free().
*/
DSI_API const dsi_tokenizer *dsi_session_tokenizer(const dsi_session *session);

/* Number of ids including added tokens (highest id + 1); 0 for NULL. */
DSI_API int32_t dsi_tokenizer_n_vocab(const dsi_tokenizer *tok);

/* The id of a token given by its exact text (e.g. "<｜end▁of▁sentence｜>"), or -1. */
DSI_API int32_t dsi_tokenizer_token_id(const dsi_tokenizer *tok, const char *token_text);

/*
** Encodes `text_len` bytes of UTF-8. With parse_special != 0, added/special tokens
** written in the text become their ids; otherwise they are encoded as plain text.
** Writes up to `cap` ids; *n_ids receives the number of ids the text needs.
** If cap is too small returns DSI_ERR_BUFFER_TOO_SMALL (query with ids NULL, cap 0).
** Invalid UTF-8 is DSI_ERR_PARSE with the byte offset. Thread-safe.
*/
DSI_API dsi_status dsi_tokenize(const dsi_tokenizer *tok, const char *text, size_t text_len,
                                int parse_special, int32_t *ids, size_t cap, size_t *n_ids);

/*
** Decodes ids to UTF-8 (bytes that do not form valid UTF-8 become U+FFFD, as Hugging
** Face does). Writes up to `cap` bytes plus a terminating NUL if room remains;
** *text_len receives the length needed (without NUL); DSI_ERR_BUFFER_TOO_SMALL as
** for dsi_tokenize. An id out of range is DSI_ERR_INVALID_TOKEN. Thread-safe.
*/
DSI_API dsi_status dsi_detokenize(const dsi_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                  char *text, size_t cap, size_t *text_len);

typedef struct dsi_detokenizer dsi_detokenizer;

/* A streaming decoder over `tok`, which must outlive it. Free with dsi_detokenizer_free(). */
DSI_API dsi_status dsi_detokenizer_create(const dsi_tokenizer *tok, dsi_detokenizer **out);
DSI_API void dsi_detokenizer_free(dsi_detokenizer *detok);

/*
** Feeds one id. *text and *text_len receive the newly completed text: only whole UTF-8
** characters, so a character split across tokens appears once, whole, when its last
** byte arrives. The pointer is owned by the decoder and valid until its next call.
*/
DSI_API dsi_status dsi_detokenizer_push(dsi_detokenizer *detok, int32_t id, const char **text,
                                        size_t *text_len);

/* Ends the stream: pending incomplete bytes come out as U+FFFD. Then it starts anew. */
DSI_API dsi_status dsi_detokenizer_flush(dsi_detokenizer *detok, const char **text,
                                         size_t *text_len);

/* ==================================================================================
** Chat (DeepSeek-V3.2 encoding, DSML tool calls)
** ================================================================================*/

#define DSI_CHAT_THINKING 1u  /* thinking mode: the prompt opens <think> for the reply */

/*
** Renders a conversation into the DeepSeek-V3.2 prompt text, byte-exact with
** DeepSeek's encoder. `conversation_json` is {"tools": [...], "messages": [...]}
** (messages: system, user, assistant with optional reasoning_content and tool_calls,
** tool). Reasoning of assistant turns before the last user message is dropped.
** On success *prompt is NUL-terminated, must be freed with dsi_free(); *prompt_len
** may be NULL. Malformed input is DSI_ERR_PARSE naming the message index and field.
** Thread-safe.
*/
DSI_API dsi_status dsi_chat_render(const char *conversation_json, size_t json_len,
                                   unsigned flags, char **prompt, size_t *prompt_len);

/*
** Parses a complete model reply (the text after the prompt) into JSON:
** {"reasoning_content": "...", "content": "...",
**  "tool_calls": [{"name": "...", "arguments": {...}}]}.
** Malformed DSML is DSI_ERR_PARSE with the byte position. *json must be freed with
** dsi_free(). Thread-safe.
*/
DSI_API dsi_status dsi_chat_parse(const char *output, size_t output_len, unsigned flags,
                                  char **json, size_t *json_len);

typedef struct dsi_chat_parser dsi_chat_parser;

/* An incremental parser of a reply being streamed; flags as for dsi_chat_parse(). */
DSI_API dsi_status dsi_chat_parser_create(unsigned flags, dsi_chat_parser **out);
DSI_API void dsi_chat_parser_free(dsi_chat_parser *parser);

/*
** Feeds the next piece of the reply. *events receives a JSON array of what became
** certain, in order: {"type":"reasoning","text":...}, {"type":"content","text":...},
** {"type":"tool_call","name":...,"arguments":{...}}. Free it with dsi_free().
*/
DSI_API dsi_status dsi_chat_parser_push(dsi_chat_parser *parser, const char *text, size_t len,
                                        char **events);

/* Ends the reply: the remaining events, then the complete result as dsi_chat_parse(). */
DSI_API dsi_status dsi_chat_parser_finish(dsi_chat_parser *parser, char **events, char **result);

#ifdef __cplusplus
}
#endif

#endif /* DSINFER_H */
