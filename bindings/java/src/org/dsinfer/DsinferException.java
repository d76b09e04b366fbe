package org.dsinfer;

/** A failed dsinfer call: the library's status code and its message (dsi_last_error()). */
public class DsinferException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final int status;

    public DsinferException(int status, String message) {
        super(Native.statusName(status) + ": " + message);
        this.status = status;
    }

    /** The DSI_ERR_* code (see include/dsinfer.h), e.g. {@link Status#IO}. */
    public int status() { return status; }

    /** The status' name, e.g. "DSI_ERR_IO". */
    public String statusName() { return Native.statusName(status); }
}
