#include "server.h"

#include "metrics.h"
#include "openai.h"
#include "scheduler.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <dirent.h>
#include <memory>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <thread>

namespace server {

// The chat page (samples/server/chat.html), compiled in by CMake.
extern const char kChatPage[];

namespace {

using httplib::Request;
using httplib::Response;

std::string new_id() {
    static std::atomic<uint64_t> counter{0};
    char buf[40];
    std::snprintf(buf, sizeof buf, "%llx%06llx", static_cast<unsigned long long>(std::time(nullptr)),
                  static_cast<unsigned long long>(counter++ & 0xffffff));
    return buf;
}

void send_json(Response &res, int status, const Json &body) {
    res.status = status;
    res.set_content(body.dump(-1, ' ', false, Json::error_handler_t::replace), "application/json");
}

void send_error(Response &res, const ApiError &e) {
    send_json(res, e.status, error_body(e.status, e.what(), e.param, e.code));
}

std::string sse(const Json &chunk) {
    return "data: " + chunk.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n\n";
}

// Compares in time independent of where the strings differ, so that a key cannot be
// guessed byte by byte from response times.
bool same_secret(const std::string &a, const std::string &b) {
    if (a.size() != b.size()) return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    return diff == 0;
}

// The port and printable address of a socket's end, or false.
bool socket_end(int fd, bool peer, std::string &addr, int &port) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr *>(&ss), &len)
                        : getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len);
    if (rc != 0) return false;
    char buf[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET) {
        const auto *a = reinterpret_cast<const sockaddr_in *>(&ss);
        inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
        port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const auto *a = reinterpret_cast<const sockaddr_in6 *>(&ss);
        inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
        port = ntohs(a->sin6_port);
    } else {
        return false;
    }
    addr = buf;
    return true;
}

// The connection socket of `req`, or -1. httplib 0.11 neither hands handlers the socket
// nor says when the peer has gone (its DataSink::is_writable only polls for write
// space), so the socket is found by its two ends among this process's descriptors. It
// stays this connection's while the handler runs: httplib closes it only afterwards.
int client_socket(const Request &req) {
    DIR *dir = opendir("/proc/self/fd");
    if (!dir) return -1;
    int found = -1;
    while (const dirent *e = readdir(dir)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        const int fd = std::atoi(e->d_name);
        std::string local, remote;
        int local_port = -1, remote_port = -1;
        if (fd == dirfd(dir) || !socket_end(fd, false, local, local_port) || !socket_end(fd, true, remote, remote_port))
            continue;
        if (remote_port == req.remote_port && remote == req.remote_addr && local_port == req.local_port) {
            found = fd;
            break;
        }
    }
    closedir(dir);
    return found;
}

// Whether the peer has closed the connection (or reset it): what is readable ends at
// EOF. A request pipelined behind this one counts as a peer still there.
bool peer_gone(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return true;
    char byte;
    const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

// One request being answered: the parsed request, its job and how its output is shaped.
struct Exchange {
    ParsedRequest request;
    std::shared_ptr<Job> job;
    std::string id;
    std::string model;
    int64_t created = 0;
    std::unique_ptr<ChatStream> chat;  // streamed chat replies only
    bool started = false;
    std::string reply;  // non-streamed: the whole raw reply

    Json chunk(const Json &choice) const {
        return {{"id", id},
                {"object", request.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", Json::array({choice})}};
    }

    const char *finish_reason(Finish f, bool tool_calls) const {
        if (f == Finish::Stop && tool_calls) return "tool_calls";
        return server::finish_reason(f);
    }

    // The SSE text for one update of the job.
    std::string stream_text(const Job::Update &u) {
        std::string out;
        if (!started) {
            started = true;
            if (request.chat) out += sse(chunk({{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                                                {"logprobs", nullptr}, {"finish_reason", nullptr}}));
        }
        auto add_text = [&](const std::string &text) {
            if (request.chat) {
                for (const Json &d : chat->push(text))
                    out += sse(chunk({{"index", 0}, {"delta", d}, {"logprobs", nullptr}, {"finish_reason", nullptr}}));
            } else if (!text.empty()) {
                out += sse(chunk({{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", nullptr}}));
            }
        };
        add_text(u.text);
        if (!u.done) return out;
        if (u.finish == Finish::Error) {
            out += sse(error_body(u.error_status, u.error));
        } else {
            std::string reason;
            if (request.chat) {
                for (const Json &d : chat->finish())
                    out += sse(chunk({{"index", 0}, {"delta", d}, {"logprobs", nullptr}, {"finish_reason", nullptr}}));
                reason = finish_reason(u.finish, chat->saw_tool_calls());
                out += sse(chunk({{"index", 0}, {"delta", Json::object()}, {"logprobs", nullptr}, {"finish_reason", reason}}));
            } else {
                reason = finish_reason(u.finish, false);
                out += sse(chunk({{"index", 0}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", reason}}));
            }
            if (request.include_usage) {
                Json last = chunk(Json());
                last["choices"] = Json::array();
                last["usage"] = usage_json(u.usage);
                out += sse(last);
            }
        }
        return out + "data: [DONE]\n\n";
    }

    Json whole_response(const Job::Update &u) const {
        Json choice = {{"index", 0}};
        if (request.chat) {
            bool tool_calls = false;
            choice["message"] = chat_message(reply, request.chat_flags, "call_" + id + "_", &tool_calls);
            choice["logprobs"] = nullptr;
            choice["finish_reason"] = finish_reason(u.finish, tool_calls);
        } else {
            choice["text"] = reply;
            choice["logprobs"] = nullptr;
            choice["finish_reason"] = finish_reason(u.finish, false);
        }
        Json body = {{"id", id},
                     {"object", request.chat ? "chat.completion" : "text_completion"},
                     {"created", created},
                     {"model", model},
                     {"choices", Json::array({choice})},
                     {"usage", usage_json(u.usage)}};
        return body;
    }
};

class Routes {
public:
    Routes(dsi_session *session, const ServerOptions &o, Scheduler &scheduler, Metrics &metrics)
        : options_(o), scheduler_(scheduler), metrics_(metrics), started_(std::time(nullptr)) {
        model_.id = o.model_id;
        model_.tokenizer = dsi_session_tokenizer(session);
        model_.n_vocab = std::min(dsi_session_n_vocab(session), dsi_tokenizer_n_vocab(model_.tokenizer));
        model_.n_ctx = scheduler.n_ctx();
        model_.bos = dsi_session_bos_token(session);
        model_.test_hooks = o.test_hooks;
    }

    void install(httplib::Server &svr) {
        svr.set_pre_routing_handler([this](const Request &req, Response &res) { return authorize(req, res); });
        svr.Get("/", [](const Request &, Response &res) { res.set_content(kChatPage, "text/html; charset=utf-8"); });
        svr.Get("/health", [](const Request &, Response &res) { send_json(res, 200, {{"status", "ok"}}); });
        svr.Get("/metrics", [this](const Request &, Response &res) {
            res.set_content(metrics_.prometheus(), "text/plain; version=0.0.4");
        });
        svr.Get("/v1/models", [this](const Request &, Response &res) {
            send_json(res, 200,
                      {{"object", "list"},
                       {"data", Json::array({{{"id", model_.id},
                                              {"object", "model"},
                                              {"created", started_},
                                              {"owned_by", "dsinfer"},
                                              {"max_model_len", model_.n_ctx}}})}});
        });
        svr.Post("/v1/chat/completions", [this](const Request &req, Response &res) { generate(req, res, true); });
        svr.Post("/v1/completions", [this](const Request &req, Response &res) { generate(req, res, false); });

        // Errors that httplib answers itself (no route, body too large, bad request line)
        // get an OpenAI-style body too; handlers' own error bodies are kept.
        svr.set_error_handler(httplib::Server::HandlerWithResponse([this](const Request &req, Response &res) {
            if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
            std::string message = "HTTP " + std::to_string(res.status);
            if (res.status == 404) message = "no such route";
            if (res.status == 405) message = "method not allowed on this route";
            if (res.status == 413) {
                // httplib caps form-encoded bodies at its own, smaller limit.
                const bool form = req.get_header_value("Content-Type").rfind("application/x-www-form-urlencoded", 0) == 0;
                message = form ? "the request body is too large for Content-Type application/x-www-form-urlencoded "
                                 "(8192 bytes); send application/json"
                               : "the request body is larger than " + std::to_string(options_.max_body_bytes) + " bytes";
            }
            if (res.status == 400) message = "malformed HTTP request (or a header line over 8192 bytes)";
            send_json(res, res.status, error_body(res.status, message));
            return httplib::Server::HandlerResponse::Handled;
        }));
        svr.set_exception_handler([](const Request &, Response &res, std::exception_ptr ep) {
            std::string what = "unknown exception";
            try {
                std::rethrow_exception(ep);
            } catch (const std::exception &e) {
                what = e.what();
            } catch (...) {
            }
            send_json(res, 500, error_body(500, "internal error: " + what));
        });
        svr.set_logger([this](const Request &req, const Response &res) {
            if (req.path.rfind("/v1/", 0) == 0) metrics_.request(res.status);
        });
    }

private:
    httplib::Server::HandlerResponse authorize(const Request &req, Response &res) {
        const bool protected_path = req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics";
        if (options_.api_key.empty() || !protected_path) return httplib::Server::HandlerResponse::Unhandled;
        const std::string header = req.get_header_value("Authorization");
        const std::string prefix = "Bearer ";
        if (header.rfind(prefix, 0) == 0 && same_secret(header.substr(prefix.size()), options_.api_key))
            return httplib::Server::HandlerResponse::Unhandled;
        res.set_header("WWW-Authenticate", "Bearer");
        send_json(res, 401,
                  error_body(401, header.empty() ? "missing Authorization: Bearer header" : "invalid API key", "",
                             "invalid_api_key"));
        return httplib::Server::HandlerResponse::Handled;
    }

    void generate(const Request &req, Response &res, bool chat) {
        auto ex = std::make_shared<Exchange>();
        try {
            ex->request = chat ? parse_chat_request(req.body, model_) : parse_completion_request(req.body, model_);
        } catch (const ApiError &e) {
            return send_error(res, e);
        }
        ex->id = (chat ? "chatcmpl-" : "cmpl-") + new_id();
        ex->model = model_.id;
        ex->created = std::time(nullptr);
        ex->job = std::make_shared<Job>(ex->request.generation);
        if (!scheduler_.submit(ex->job)) {
            res.set_header("Retry-After", "1");
            return send_error(res, ApiError(429, "the server is busy: " + std::to_string(options_.max_queue) +
                                                     " requests are already waiting; retry later"));
        }
        if (ex->request.stream) {
            if (chat) ex->chat = std::make_unique<ChatStream>(ex->request.chat_flags, "call_" + ex->id + "_");
            res.set_header("Cache-Control", "no-cache");
            res.set_chunked_content_provider(
                "text/event-stream",
                [ex](size_t, httplib::DataSink &sink) {
                    const Job::Update u = ex->job->take(std::chrono::milliseconds(ex->started ? 250 : 0));
                    const std::string text = ex->stream_text(u);
                    if (!text.empty() && !sink.write(text.data(), text.size())) {
                        ex->job->cancel();  // the client went away
                        return false;
                    }
                    if (u.done) sink.done();
                    return true;
                },
                [ex](bool success) {
                    if (!success) ex->job->cancel();
                });
            return;
        }
        // A client that hangs up before the reply is done cancels the generation, as a
        // stream's does; the reply itself is sent as before, with a Content-Length.
        const int fd = client_socket(req);
        Job::Update u;
        for (;;) {
            Job::Update part = ex->job->take(std::chrono::milliseconds(100));
            if (fd >= 0 && !part.done && !ex->job->cancelled() && peer_gone(fd)) ex->job->cancel();
            ex->reply += part.text;
            if (part.done) {
                u = std::move(part);
                break;
            }
        }
        if (u.finish == Finish::Error) return send_json(res, u.error_status, error_body(u.error_status, u.error));
        // Cancelled: the client went away (nobody reads this) or the server is stopping.
        if (u.finish == Finish::Cancelled) return send_json(res, 503, error_body(503, "the server is shutting down"));
        Json body = ex->whole_response(u);
        if (options_.test_hooks) body["test_prompt"] = ex->request.prompt_text;
        send_json(res, 200, body);
    }

    const ServerOptions &options_;
    Scheduler &scheduler_;
    Metrics &metrics_;
    ModelInfo model_;
    int64_t started_;
};

}  // namespace

int serve(dsi_session *session, const ServerOptions &o) {
    if (!dsi_session_tokenizer(session)) {
        std::fprintf(stderr, "dsinfer serve: the model has no tokenizer.json\n");
        return 1;
    }
    // A client that goes away makes writes fail with EPIPE; without this, SIGPIPE would
    // end the server. SIGINT and SIGTERM are taken by one thread that stops the server.
    std::signal(SIGPIPE, SIG_IGN);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    Metrics metrics;
    SchedulerOptions so;
    so.parallel = o.parallel;
    so.max_queue = o.max_queue;
    so.n_ctx = o.n_ctx;
    Scheduler scheduler(session, so, metrics);

    httplib::Server svr;
    // Every waiting or streaming request holds a thread: enough for all that may queue.
    const size_t threads = static_cast<size_t>(o.parallel + o.max_queue + 8);
    svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    svr.set_payload_max_length(o.max_body_bytes);
    svr.set_read_timeout(o.idle_timeout_s, 0);
    svr.set_write_timeout(o.idle_timeout_s, 0);
    // An idle keep-alive connection holds a thread, and stopping waits for it: at most 5 s.
    svr.set_keep_alive_timeout(std::min(o.idle_timeout_s, 5));
    Routes routes(session, o, scheduler, metrics);
    routes.install(svr);

    int port = o.port;
    if (port == 0) {
        port = svr.bind_to_any_port(o.host);
        if (port <= 0) {
            std::fprintf(stderr, "dsinfer serve: cannot listen on %s\n", o.host.c_str());
            return 1;
        }
    } else if (!svr.bind_to_port(o.host, port)) {
        std::fprintf(stderr, "dsinfer serve: cannot listen on %s:%d\n", o.host.c_str(), port);
        return 1;
    }
    std::thread([&svr, stop_signals] {
        int sig = 0;
        sigwait(&stop_signals, &sig);
        svr.stop();
    }).detach();
    std::fprintf(stderr, "dsinfer serve: listening on http://%s:%d (model %s, %d slots of %d tokens)\n", o.host.c_str(),
                 port, o.model_id.c_str(), o.parallel, scheduler.n_ctx());
    std::fflush(stderr);
    svr.listen_after_bind();
    std::fprintf(stderr, "dsinfer serve: stopped\n");
    return 0;
}

}  // namespace server
