#include "common/file.h"

#include "common/error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace dsi {

int open_regular_file(const std::string &path, const char *what, size_t *size) {
    const char *sep = what ? " " : "";
    if (!what) what = "";
    const char *p = path.c_str();
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    const int fd = ::open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) fail(DSI_ERR_IO, "cannot open %s%s%s: %s", what, sep, p, std::strerror(errno));
    struct stat st;
    const char *problem = nullptr;
    if (::fstat(fd, &st) != 0)
        problem = "cannot be examined";
    else if (S_ISDIR(st.st_mode))
        problem = "is a directory";
    else if (!S_ISREG(st.st_mode))
        problem = "is not a regular file (a FIFO, socket or device)";
    if (problem) {
        ::close(fd);
        fail(DSI_ERR_IO, "%s%s%s %s", what, sep, p, problem);
    }
    *size = static_cast<size_t>(st.st_size);
    return fd;
}

std::string read_text_file(const std::string &path, const char *what, size_t max_bytes) {
    size_t size = 0;
    const int fd = open_regular_file(path, what, &size);
    const char *sep = what ? " " : "";
    if (!what) what = "";
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    if (size > max_bytes)
        fail(DSI_ERR_IO, "%s%s%s is %zu bytes, more than the limit of %zu", what, sep, path.c_str(), size, max_bytes);
    std::string text(size, '\0');
    size_t done = 0;
    while (done < size) {
        const ssize_t n = ::read(fd, &text[done], size - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail(DSI_ERR_IO, "cannot read %s%s%s: %s", what, sep, path.c_str(), std::strerror(errno));
        if (n == 0) break;  // shrank while being read: use what is there
        done += static_cast<size_t>(n);
    }
    text.resize(done);
    return text;
}

bool is_regular_file(const std::string &path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace dsi
