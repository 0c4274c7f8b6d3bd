// GNU libmicrohttpd, for the agent's loopback proxy. MHD_start_daemon is variadic (Swift cannot call
// it), so the daemon is started here; the request handling itself is in Swift (PluginProxy).
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/// The proxy's callbacks: the access handler and the end of each request (libmicrohttpd's own types),
/// and where its error messages go.
typedef void (*sy_mhd_error_sink)(void *cls, const char *message);

struct sy_mhd_server {
    MHD_AccessHandlerCallback access;
    MHD_RequestCompletedCallback completed;
    void *(*uri)(void *cls, const char *uri, struct MHD_Connection *connection);
    sy_mhd_error_sink error;
    void *cls;
};

static inline void sy_mhd_log(void *cls, const char *format, va_list arguments) {
    struct sy_mhd_server *server = cls;
    char message[512];
    vsnprintf(message, sizeof message, format, arguments);
    size_t length = strlen(message);
    while (length > 0 && (message[length - 1] == '\n' || message[length - 1] == '\r')) message[--length] = 0;
    server->error(server->cls, message);
}

/// A daemon on 127.0.0.1:`port` (0: any free port), a thread per connection, waiting with poll():
/// select() refuses every socket numbered 1024 or more, which a busy process reaches.
static inline struct MHD_Daemon *sy_mhd_start(uint16_t port, struct sy_mhd_server *server) {
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG,
                            port, NULL, NULL, server->access, server->cls,
                            MHD_OPTION_EXTERNAL_LOGGER, sy_mhd_log, server,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&address,
                            MHD_OPTION_URI_LOG_CALLBACK, server->uri, server->cls,
                            MHD_OPTION_NOTIFY_COMPLETED, server->completed, server->cls,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
                            MHD_OPTION_END);
}

static inline uint16_t sy_mhd_port(struct MHD_Daemon *daemon) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}

/// Queues a response with a copy of `body`.
static inline enum MHD_Result sy_mhd_respond(struct MHD_Connection *connection, unsigned int status,
                                             const char *const *names, const char *const *values, size_t count,
                                             const unsigned char *body, size_t length) {
    struct MHD_Response *response = MHD_create_response_from_buffer(length, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!response) return MHD_NO;
    for (size_t i = 0; i < count; i++) MHD_add_response_header(response, names[i], values[i]);
    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

/// Queues a response whose body `reader` produces (blocking is fine: a thread per connection);
/// `length` is MHD_SIZE_UNKNOWN (sy_mhd_size_unknown) to send it chunked. `release` is called once
/// the response is done with, sent or not.
static inline enum MHD_Result sy_mhd_respond_streaming(struct MHD_Connection *connection, unsigned int status,
                                                       const char *const *names, const char *const *values, size_t count,
                                                       uint64_t length, MHD_ContentReaderCallback reader, void *cls,
                                                       MHD_ContentReaderFreeCallback release) {
    struct MHD_Response *response = MHD_create_response_from_callback(length, 64 * 1024, reader, cls, release);
    if (!response) {
        release(cls);
        return MHD_NO;
    }
    for (size_t i = 0; i < count; i++) MHD_add_response_header(response, names[i], values[i]);
    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

static const enum MHD_Result sy_mhd_yes = MHD_YES;
static const enum MHD_Result sy_mhd_no = MHD_NO;
static const uint64_t sy_mhd_size_unknown = MHD_SIZE_UNKNOWN;
static const ssize_t sy_mhd_end_of_stream = MHD_CONTENT_READER_END_OF_STREAM;
static const ssize_t sy_mhd_end_with_error = MHD_CONTENT_READER_END_WITH_ERROR;

/// A request header's value, or NULL.
static inline const char *sy_mhd_header(struct MHD_Connection *connection, const char *name) {
    return MHD_lookup_connection_value(connection, MHD_HEADER_KIND, name);
}


