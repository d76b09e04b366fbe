package org.dsinfer;

import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicInteger;
import org.dsinfer.internal.dsib_callbacks;

/**
 * The director object whose address C holds as user_data. Reference-counted: the session and
 * every context of it hold one reference, because the session's log sink is called for as
 * long as any of them lives natively; the C++ director is deleted with the last reference.
 * A Java exception never crosses into C: a failing progress or abort listener cancels.
 */
final class Callbacks extends dsib_callbacks {
    volatile Listeners.Progress progress;
    volatile Listeners.Log log;
    volatile Listeners.Abort abort;
    private final AtomicInteger refs = new AtomicInteger(1);

    Callbacks retain() {
        refs.incrementAndGet();
        return this;
    }

    void release() {
        if (refs.decrementAndGet() == 0) delete();
    }

    @Override
    public int progress(float fraction) {
        Listeners.Progress p = progress;
        try {
            return p == null || p.onProgress(fraction) ? 1 : 0;
        } catch (Throwable t) {
            return 0;
        }
    }

    @Override
    public void log(int level, byte[] text) {
        Listeners.Log l = log;
        if (l == null) return;
        try {
            l.onLog(level, new String(text, StandardCharsets.UTF_8));
        } catch (Throwable ignored) {
            // a logger's failure must not reach C
        }
    }

    @Override
    public int abort_requested() {
        Listeners.Abort a = abort;
        try {
            return a != null && a.shouldAbort() ? 1 : 0;
        } catch (Throwable t) {
            return 1;
        }
    }
}
