package org.dsinfer;

import org.dsinfer.internal.dsinfer_native;

/** DeepSeek-V3.2 chat encoding and DSML reply parsing. Thread-safe. */
public final class Chat {
    private Chat() {}

    static {
        Native.ensureLoaded();
    }

    /** Renders a conversation ({"messages": [...], "tools": [...]}, JSON) into the prompt text. */
    public static String render(String conversationJson, boolean thinking) {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_chat_render(Native.utf8(conversationJson), thinking ? 1 : 0, call.ptr);
            return call.text();
        }
    }

    /** Parses a whole reply into {"reasoning_content", "content", "tool_calls": [{"name", "arguments"}]} (JSON). */
    public static String parse(String reply, boolean thinking) {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_chat_parse(Native.utf8(reply), thinking ? 1 : 0, call.ptr);
            return call.text();
        }
    }
}
