package org.dsinfer;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Arrays;
import org.dsinfer.internal.SWIGTYPE_p_dsib_call;
import org.dsinfer.internal.dsinfer_native;

/**
 * Loads the native libraries and turns a dsib_call (status, message, bytes captured in one
 * native call) into results and DsinferExceptions.
 */
final class Native {
    private Native() {}

    /** Native libraries inside the jar, loaded in this order (libdsinfer first: the JNI library needs it). */
    private static final String[] BUNDLED = {"libdsinfer.so", "libdsinfer_java.so"};

    static {
        load();
    }

    /**
     * java.library.path first (-Djava.library.path=DIR with libdsinfer_java.so and libdsinfer.so);
     * else the copies inside the jar, extracted to a temporary directory.
     */
    private static void load() {
        try {
            System.loadLibrary("dsinfer_java");
            return;
        } catch (UnsatisfiedLinkError notOnPath) {
            // fall through to the jar's copies
        }
        try {
            Path dir = Files.createTempDirectory("dsinfer-native");
            dir.toFile().deleteOnExit();
            String platform = "linux-" + System.getProperty("os.arch");
            for (String name : BUNDLED) {
                try (InputStream in = Native.class.getResourceAsStream("/native/" + platform + "/" + name)) {
                    if (in == null)
                        throw new UnsatisfiedLinkError("dsinfer: the jar has no /native/" + platform + "/" + name
                                                       + " and dsinfer_java is not on java.library.path");
                    Path file = dir.resolve(name);
                    Files.copy(in, file, StandardCopyOption.REPLACE_EXISTING);
                    file.toFile().deleteOnExit();
                    System.load(file.toAbsolutePath().toString());
                }
            }
        } catch (IOException e) {
            throw new UnsatisfiedLinkError("dsinfer: cannot extract the native libraries: " + e);
        }
    }

    static void ensureLoaded() {}

    static String statusName(int status) {
        return dsinfer_native.dsi_status_name(status);
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /** A NUL-terminated UTF-8 path. */
    static byte[] path(String s) {
        byte[] b = utf8(s);
        return Arrays.copyOf(b, b.length + 1);
    }

    /** One native call's record; use in try-with-resources. */
    static final class Call implements AutoCloseable {
        final SWIGTYPE_p_dsib_call ptr = dsinfer_native.dsib_call_new();

        Call() {
            if (ptr == null) throw new OutOfMemoryError("dsinfer: dsib_call");
        }

        int status() { return dsinfer_native.dsib_call_status(ptr); }

        /** Throws the call's failure, if any. */
        void check() {
            int st = status();
            if (st != 0) throw new DsinferException(st, new String(raw(0), StandardCharsets.UTF_8));
        }

        byte[] raw(int which) {
            byte[] b = new byte[(int) dsinfer_native.dsib_call_size(ptr, which)];
            if (b.length > 0) dsinfer_native.dsib_call_copy(ptr, which, b);
            return b;
        }

        byte[] bytes() { check(); return raw(1); }

        String text() { return new String(bytes(), StandardCharsets.UTF_8); }

        @Override
        public void close() { dsinfer_native.dsib_call_free(ptr); }
    }
}
