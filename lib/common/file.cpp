#include "common/file.h"

#include "common/error.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

namespace dsi {

std::string read_text_file(const std::string &path, const char *what) {
    const char *sep = what ? " " : "";
    if (!what) what = "";
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(DSI_ERR_IO, "cannot open %s%s%s: %s", what, sep, path.c_str(), std::strerror(errno));
    std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (in.bad()) fail(DSI_ERR_IO, "cannot read %s%s%s", what, sep, path.c_str());
    return text;
}

bool is_regular_file(const std::string &path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace dsi
