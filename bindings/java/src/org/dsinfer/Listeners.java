package org.dsinfer;

/** The callbacks an application can give. Each is kept alive while the library may call it. */
public final class Listeners {
    private Listeners() {}

    /** Load progress in [0, 1]; return false to cancel the load (DsinferException CANCELLED). */
    @FunctionalInterface
    public interface Progress { boolean onProgress(float fraction); }

    /** A log line (level: Dsinfer.LOG_*). May be called from any thread that calls into dsinfer. */
    @FunctionalInterface
    public interface Log { void onLog(int level, String message); }

    /** Polled between layers during an evaluation; return true to abort it (CANCELLED). */
    @FunctionalInterface
    public interface Abort { boolean shouldAbort(); }

    /** A generated token and the text it completed (possibly ""); return false to stop. */
    @FunctionalInterface
    public interface Token { boolean onToken(int id, String text); }
}
