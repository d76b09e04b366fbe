// The C# layer over the SWIG-generated Dsinfer.Internal: IDisposable objects with
// finalizers as a safety net, DsinferException, UTF-8 text, int[] / float[] arrays.
using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;
using Dsinfer.Internal;

namespace Dsinfer
{
    /// <summary>The DSI_ERR_* codes of include/dsinfer.h.</summary>
    public static class Status
    {
        public const int Ok = 0, InvalidArgument = 1, IO = 2, Format = 3, Config = 4, Checkpoint = 5,
            Unsupported = 6, NoMemory = 7, ContextFull = 8, InvalidToken = 9, Cancelled = 10, Busy = 11,
            BufferTooSmall = 12, Parse = 13, Backend = 14, Internal = 15;
    }

    /// <summary>A failed dsinfer call: the library's status and its message (dsi_last_error()).</summary>
    public class DsinferException : Exception
    {
        public int Status { get; }
        public string StatusName => DsinferNative.dsi_status_name(Status);

        public DsinferException(int status, string message)
            : base(DsinferNative.dsi_status_name(status) + ": " + message)
        {
            Status = status;
        }
    }

    public delegate bool ProgressHandler(float fraction);
    public delegate void LogHandler(LogLevel level, string message);
    public delegate bool AbortHandler();
    /// <summary>A generated token and the text it completed (possibly ""); return false to stop.</summary>
    public delegate bool TokenHandler(int id, string text);

    public enum LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3, None = 4 }

    /// <summary>Library-wide functions.</summary>
    public static class Library
    {
        static readonly List<Callbacks> sinks = new List<Callbacks>();

        public static string Version => DsinferNative.dsi_version();

        /// <summary>
        /// Sets the process-wide log sink (null turns it off). Sinks set before stay alive: the
        /// library may still deliver to a replaced one for a moment.
        /// </summary>
        public static void SetLogger(LogHandler log, LogLevel minLevel)
        {
            lock (sinks)
            {
                Callbacks cb = null;
                if (log != null)
                {
                    cb = new Callbacks { Log = log };
                    sinks.Add(cb);
                }
                using (var call = new Call())
                {
                    DsinferNative.dsib_log_set(cb, (int)minLevel, call.Ptr);
                    call.Check();
                }
            }
        }
    }

    /// <summary>
    /// A native handle freed exactly once: by Dispose() or, as a safety net, by the finalizer.
    /// Handles may be freed in any order (the library counts references).
    /// </summary>
    public abstract class NativeObject<T> : IDisposable where T : class
    {
        T ptr;
        readonly string what;

        internal NativeObject(string what) { this.what = what; }

        internal void Own(T p) { ptr = p; }

        internal T Ptr => ptr ?? throw new ObjectDisposedException("dsinfer " + what);

        internal bool IsDisposed => ptr == null;

        /// <summary>Frees p (also from the finalizer thread: touch no other managed finalizable object).</summary>
        internal abstract void Free(T p);

        ~NativeObject() { Release(); }

        public void Dispose()
        {
            Release();
            GC.SuppressFinalize(this);
        }

        void Release()
        {
            var p = Interlocked.Exchange(ref ptr, null);
            if (p != null) Free(p);
        }
    }

    /// <summary>One native call's record: status, message and bytes captured together.</summary>
    sealed class Call : IDisposable
    {
        internal readonly SWIGTYPE_p_dsib_call Ptr = DsinferNative.dsib_call_new();

        internal int StatusCode => DsinferNative.dsib_call_status(Ptr);

        internal void Check()
        {
            int st = StatusCode;
            if (st != 0) throw new DsinferException(st, Encoding.UTF8.GetString(Raw(0)));
        }

        internal byte[] Raw(int which)
        {
            var b = new byte[(int)DsinferNative.dsib_call_size(Ptr, which)];
            if (b.Length > 0) DsinferNative.dsib_call_copy(Ptr, which, b, (ulong)b.Length);
            return b;
        }

        internal byte[] Bytes() { Check(); return Raw(1); }
        internal string Text() => Encoding.UTF8.GetString(Bytes());

        public void Dispose() => DsinferNative.dsib_call_free(Ptr);

        internal static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);

        /// <summary>A NUL-terminated UTF-8 path.</summary>
        internal static byte[] Path(string s)
        {
            if (s == null) return null;
            var b = Encoding.UTF8.GetBytes(s);
            Array.Resize(ref b, b.Length + 1);
            return b;
        }

        internal static string FromUtf8(IntPtr p)
        {
            int n = 0;
            while (Marshal.ReadByte(p, n) != 0) n++;
            var b = new byte[n];
            Marshal.Copy(p, b, 0, n);
            return Encoding.UTF8.GetString(b);
        }
    }

    /// <summary>
    /// The director whose address C holds as user_data. Reference-counted (the session and each
    /// of its contexts hold one: the session's log sink is called while any lives natively); its
    /// own finalizer is suppressed so that it is deleted only with the last reference. No
    /// exception crosses into C: a failing handler cancels (progress, abort) or is ignored (log).
    /// </summary>
    sealed class Callbacks : dsib_callbacks
    {
        internal ProgressHandler Progress;
        internal LogHandler Log;
        internal AbortHandler Abort;
        int refs = 1;

        internal Callbacks() { GC.SuppressFinalize(this); }

        internal Callbacks Retain() { Interlocked.Increment(ref refs); return this; }

        internal void Release()
        {
            if (Interlocked.Decrement(ref refs) == 0) Dispose();
        }

        public override int progress(float fraction)
        {
            try { return Progress == null || Progress(fraction) ? 1 : 0; }
            catch (Exception) { return 0; }
        }

        public override void log(int level, IntPtr utf8_line)
        {
            try { Log?.Invoke((LogLevel)level, Call.FromUtf8(utf8_line)); }
            catch (Exception) { }
        }

        public override int abort_requested()
        {
            try { return Abort != null && Abort() ? 1 : 0; }
            catch (Exception) { return 1; }
        }
    }
}
