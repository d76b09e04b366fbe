package org.dsinfer;

import java.lang.ref.Cleaner;
import java.util.function.Consumer;

/**
 * A native handle and how to free it, registered with a Cleaner: freed exactly once, by
 * close() or, as a safety net, when its owner becomes unreachable. `free` must not refer
 * to the owner (it would never become unreachable).
 */
final class Owned<T> {
    private static final Cleaner CLEANER = Cleaner.create();

    private static final class Action<T> implements Runnable {
        T ptr;
        final Consumer<T> free;

        Action(T ptr, Consumer<T> free) {
            this.ptr = ptr;
            this.free = free;
        }

        @Override
        public synchronized void run() {
            T p = ptr;
            ptr = null;
            if (p != null) free.accept(p);
        }
    }

    private final Action<T> action;
    private final Cleaner.Cleanable cleanable;
    private final String what;

    Owned(Object owner, T ptr, Consumer<T> free, String what) {
        this.action = new Action<>(ptr, free);
        this.cleanable = CLEANER.register(owner, action);
        this.what = what;
    }

    /** The handle; IllegalStateException once closed. */
    T get() {
        T p;
        synchronized (action) { p = action.ptr; }
        if (p == null) throw new IllegalStateException("dsinfer: the " + what + " is closed");
        return p;
    }

    void close() { cleanable.clean(); }
}
