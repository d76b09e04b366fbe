using System;
using Dsinfer.Internal;

namespace Dsinfer
{
    /// <summary>
    /// A Hugging Face tokenizer.json (dsi_tokenizer): loaded from a file, or a session's (usable
    /// while that session is not disposed). Thread-safe.
    /// </summary>
    /// <summary>Token attribute bits (DSI_TOKEN_ATTR_*); None = no token has the id.</summary>
    [Flags]
    public enum TokenAttr : uint { None = 0, Normal = 1, Control = 2, UserDefined = 4, Eog = 8 }

    public sealed class Tokenizer : NativeObject<SWIGTYPE_p_dsi_tokenizer>
    {
        public const uint ParseSpecial = 1, AddSpecial = 2;
        readonly Session session; // the owner of a session's tokenizer

        internal Tokenizer(SWIGTYPE_p_dsi_tokenizer p, Session owner) : base("tokenizer")
        {
            Own(p);
            session = owner;
        }

        public static Tokenizer Load(string path)
        {
            using (var call = new Call())
            {
                var t = DsinferNative.dsib_tokenizer_load(Call.Path(path), call.Ptr);
                call.Check();
                return new Tokenizer(t, null);
            }
        }

        /// <summary>The handle; a session's tokenizer also checks that its session is not disposed.</summary>
        SWIGTYPE_p_dsi_tokenizer Handle
        {
            get
            {
                var p = Ptr;
                if (session != null && session.IsDisposed) throw new ObjectDisposedException("dsinfer session");
                return p;
            }
        }

        internal override void Free(SWIGTYPE_p_dsi_tokenizer p)
        {
            if (session == null) DsinferNative.dsi_tokenizer_free(p);
        }

        public int NVocab => DsinferNative.dsi_tokenizer_n_vocab(Handle);
        /// <summary>The token's attribute: Normal, Control, UserDefined or None.</summary>
        public TokenAttr TokenAttributes(int id) => (TokenAttr)DsinferNative.dsi_tokenizer_token_attr(Handle, id);

        public int TokenId(string text)
        {
            var b = Call.Utf8(text);
            return DsinferNative.dsib_tokenizer_token_id(Handle, b, (ulong)b.Length);
        }

        public int[] Tokenize(string text, uint flags = 0)
        {
            var b = Call.Utf8(text);
            using (var call = new Call())
            {
                var ids = new int[b.Length + 2];
                long n = DsinferNative.dsib_tokenize(Handle, b, (ulong)b.Length, flags, ids, (ulong)ids.Length, call.Ptr);
                call.Check();
                if (n > ids.Length)
                {
                    ids = new int[n];
                    n = DsinferNative.dsib_tokenize(Handle, b, (ulong)b.Length, flags, ids, (ulong)ids.Length, call.Ptr);
                    call.Check();
                }
                Array.Resize(ref ids, (int)n);
                return ids;
            }
        }

        public string Detokenize(int[] ids, bool skipSpecial = false)
        {
            using (var call = new Call())
            {
                DsinferNative.dsib_detokenize(Handle, ids, (ulong)ids.Length, skipSpecial ? 1u : 0u, call.Ptr);
                return call.Text();
            }
        }

        /// <summary>The raw bytes of one token.</summary>
        public byte[] Piece(int id)
        {
            using (var call = new Call())
            {
                DsinferNative.dsib_tokenizer_token_to_piece(Handle, id, call.Ptr);
                return call.Bytes();
            }
        }

        /// <summary>A streaming decoder; it outlives this tokenizer.</summary>
        public Detokenizer Detokenizer(bool skipSpecial = false)
        {
            using (var call = new Call())
            {
                var d = DsinferNative.dsib_detokenizer_create(Handle, skipSpecial ? 1u : 0u, call.Ptr);
                call.Check();
                return new Detokenizer(d);
            }
        }
    }

    /// <summary>Streaming ids to text: only whole UTF-8 characters come out. One thread at a time.</summary>
    public sealed class Detokenizer : NativeObject<SWIGTYPE_p_dsi_detokenizer>
    {
        internal Detokenizer(SWIGTYPE_p_dsi_detokenizer p) : base("detokenizer") { Own(p); }

        internal override void Free(SWIGTYPE_p_dsi_detokenizer p) => DsinferNative.dsi_detokenizer_free(p);

        string Next(int id)
        {
            var p = Ptr;
            using (var call = new Call())
            {
                DsinferNative.dsib_detokenizer_next(p, id, call.Ptr);
                return call.Text();
            }
        }

        /// <summary>Feeds one id; returns the text it completed (possibly "").</summary>
        public string Push(int id)
        {
            if (id < 0) throw new DsinferException(Status.InvalidToken, "token id " + id + " is negative");
            return Next(id);
        }

        /// <summary>Ends the stream: pending bytes come out as U+FFFD.</summary>
        public string Flush() => Next(-1);
    }

    /// <summary>DeepSeek-V3.2 chat encoding and DSML reply parsing. Thread-safe.</summary>
    public static class Chat
    {
        /// <summary>Renders a conversation (JSON: {"messages": [...], "tools": [...]}) into the prompt text.</summary>
        public static string Render(string conversationJson, bool thinking = false)
        {
            var b = Call.Utf8(conversationJson);
            using (var call = new Call())
            {
                DsinferNative.dsib_chat_render(b, (ulong)b.Length, thinking ? 1u : 0u, call.Ptr);
                return call.Text();
            }
        }

        /// <summary>Parses a whole reply into {"reasoning_content", "content", "tool_calls"} (JSON).</summary>
        public static string Parse(string reply, bool thinking = false)
        {
            var b = Call.Utf8(reply);
            using (var call = new Call())
            {
                DsinferNative.dsib_chat_parse(b, (ulong)b.Length, thinking ? 1u : 0u, call.Ptr);
                return call.Text();
            }
        }
    }

    /// <summary>Incremental parser of a streamed reply. One thread at a time.</summary>
    public sealed class ChatParser : NativeObject<SWIGTYPE_p_dsi_chat_parser>
    {
        public ChatParser(bool thinking = false) : base("chat parser")
        {
            using (var call = new Call())
            {
                var p = DsinferNative.dsib_chat_parser_create(thinking ? 1u : 0u, call.Ptr);
                call.Check();
                Own(p);
            }
        }

        internal override void Free(SWIGTYPE_p_dsi_chat_parser p) => DsinferNative.dsi_chat_parser_free(p);

        /// <summary>Feeds more of the reply; returns the events that became certain (a JSON array).</summary>
        public string Push(string text)
        {
            var b = Call.Utf8(text);
            using (var call = new Call())
            {
                DsinferNative.dsib_chat_parser_push(Ptr, b, (ulong)b.Length, call.Ptr);
                return call.Text();
            }
        }

        /// <summary>Ends the reply: {"events": [...], "result": {...}} (JSON).</summary>
        public string Finish()
        {
            using (var call = new Call())
            {
                DsinferNative.dsib_chat_parser_finish(Ptr, call.Ptr);
                return call.Text();
            }
        }
    }
}
